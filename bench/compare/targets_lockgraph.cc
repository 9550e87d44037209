// lockgraph's workloads for lockgraph_compare, spoken on the wire (binary encoding)
// without lockgraph::Client, so that the figures are the daemon's and not the client
// library's background thread.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.h"
#include "zmq_conn.h"

namespace lockgraph::bench {
namespace {

using graph::Code;
using graph::Mode;
using protocol::Event;
using protocol::EventKind;
using protocol::Op;
using protocol::Reply;
using protocol::Request;

// Session TTL of the measuring clients: far above any run, so a session never expires
// while its client is busy measuring.
constexpr std::int64_t kSessionTtlMs = 600'000;

std::string CodeKind(const Reply& r) { return std::string(graph::CodeName(r.code)); }

Request Acquire(const std::string& owner, std::string resource, std::int64_t ttl_ms, std::int64_t wait_ms) {
  Request r;
  r.op = Op::kAcquire;
  r.owner = owner;
  r.resource = std::move(resource);
  r.mode = Mode::kExclusive;
  r.ttl_ms = ttl_ms;
  r.wait_ms = wait_ms;
  return r;
}

Request Release(graph::LeaseId lease) {
  Request r;
  r.op = Op::kRelease;
  r.lease = lease;
  return r;
}

std::string Key(std::uint64_t n) { return Numbered("k:", n); }

// Workload 1: acquire X (wait_ms 0) of a random key, release it; one request in flight.
// An acquire answered TIMEOUT (held by another client) is an op counted as "busy".
int Lock(const Options& o) {
  zmq::context_t ctx(1);
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    LockgraphConn conn(ctx, o);
    conn.Hello("compare-lock-" + std::to_string(index), kSessionTtlMs);
    std::mt19937_64 rng(ClientSeed(o, index));
    std::uniform_int_distribution<std::uint64_t> pick(0, o.keys - 1);
    Request acquire = Acquire("w", {}, o.ttl_ms, 0);
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      acquire.resource = Key(pick(rng));
      const auto a0 = Clock::now();
      if (w.Over(a0)) break;
      Reply r = conn.Call(acquire);
      const auto a1 = Clock::now();
      const bool counted = w.Counts(a0);
      const bool granted = r.ok() && r.granted && r.lease;
      if (counted) {
        ++res.ops;
        res.Latency(a0, a1);
        if (granted) ++res.counters["granted"];
        else if (r.code == Code::kTimeout) ++res.counters["busy"];
        else res.Error(r.ok() ? "ok without lease" : CodeKind(r));
      }
      if (!granted) continue;
      Request release = Release(*r.lease);
      const auto r0 = Clock::now();
      Reply rr = conn.Call(release);
      if (w.Counts(r0)) {
        ++res.ops;
        res.Latency(r0, Clock::now());
        if (!rr.ok()) res.Error(CodeKind(rr));
      }
    }
    conn.Bye();
  });
  return PrintResult(o, merged);
}

// Workload 2: the same with o.pipeline requests in flight: o.pipeline acquires of
// distinct random keys, then the releases of those granted. A request's latency runs
// from the send of its group to its reply.
int Pipeline(const Options& o) {
  zmq::context_t ctx(1);
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    LockgraphConn conn(ctx, o);
    conn.Hello("compare-pipeline-" + std::to_string(index), kSessionTtlMs);
    std::mt19937_64 rng(ClientSeed(o, index));
    std::uniform_int_distribution<std::uint64_t> pick(0, o.keys - 1);
    const auto n = static_cast<std::size_t>(o.pipeline);
    std::vector<Request> acquires(n, Acquire("w", {}, o.ttl_ms, 0));
    std::vector<std::uint64_t> ids(n);
    std::vector<graph::LeaseId> leases;
    leases.reserve(n);
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      const auto t0 = Clock::now();
      if (w.Over(t0)) break;
      const bool counted = w.Counts(t0);
      for (std::size_t i = 0; i < n; ++i) {
        // Distinct keys within a group: a second acquire of a key the owner holds would
        // return the same lease, and its second release would fail.
        bool fresh;
        do {
          acquires[i].resource = Key(pick(rng));
          fresh = std::none_of(acquires.begin(), acquires.begin() + static_cast<std::ptrdiff_t>(i),
                               [&](const Request& a) { return a.resource == acquires[i].resource; });
        } while (!fresh && o.keys > n);
        ids[i] = conn.Send(acquires[i]);
      }
      leases.clear();
      for (std::size_t i = 0; i < n; ++i) {
        Reply r = conn.ReplyTo(ids[i]);
        const bool granted = r.ok() && r.granted && r.lease;
        if (granted) leases.push_back(*r.lease);
        if (!counted) continue;
        ++res.ops;
        res.Latency(t0, Clock::now());
        if (granted) ++res.counters["granted"];
        else if (r.code == Code::kTimeout) ++res.counters["busy"];
        else res.Error(r.ok() ? "ok without lease" : CodeKind(r));
      }
      if (leases.empty()) continue;
      const auto t1 = Clock::now();
      const bool counted_release = w.Counts(t1);
      std::vector<std::uint64_t> release_ids;
      release_ids.reserve(leases.size());
      for (graph::LeaseId l : leases) {
        Request rel = Release(l);
        release_ids.push_back(conn.Send(rel));
      }
      for (std::uint64_t id : release_ids) {
        Reply r = conn.ReplyTo(id);
        if (!counted_release) continue;
        ++res.ops;
        res.Latency(t1, Clock::now());
        if (!r.ok()) res.Error(CodeKind(r));
      }
    }
    conn.Bye();
  });
  return PrintResult(o, merged);
}

// Waits for the grant of the queued acquire `id`.
graph::LeaseId AwaitGrant(LockgraphConn& conn, std::uint64_t id) {
  for (;;) {
    Event e = conn.NextEvent();
    if (e.id != id) continue;
    if (e.kind == EventKind::kGranted) return e.lease;
    if (e.kind == EventKind::kDenied) {
      throw std::runtime_error("queued acquire denied: " + std::string(graph::CodeName(e.code)));
    }
  }
}

// Workload 3: every client on one lock. A client acquires it (queueing behind the
// others), releases it as soon as it has it, and asks again. An op is a hand-over;
// its latency runs from the release's send to the next holder's grant.
int Handover(const Options& o) {
  zmq::context_t ctx(1);
  HandoverClock clock;
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    LockgraphConn conn(ctx, o);
    conn.Hello("compare-handover-" + std::to_string(index), kSessionTtlMs);
    gate.Ready();
    const Window w = gate.Wait();
    while (!w.Over(Clock::now())) {
      Request acquire = Acquire("w", "h", o.ttl_ms, -1);
      const std::uint64_t id = conn.Send(acquire);
      Reply r = conn.ReplyTo(id);
      graph::LeaseId lease = 0;
      if (r.ok() && r.granted && r.lease) lease = *r.lease;
      else if (r.ok() && r.queued) lease = AwaitGrant(conn, id);
      else throw std::runtime_error("acquire refused: " + CodeKind(r) + " " + r.message);
      clock.Granted(index, Clock::now(), w, res);
      Request release = Release(lease);
      clock.Releasing(index);
      Reply rr = conn.Call(release);
      if (!rr.ok()) res.Error(CodeKind(rr));
    }
    conn.Bye();
  });
  return PrintResult(o, merged);
}

// Workload 5: pairs of sessions forming AB-BA cycles. One thread drives a pair: s1
// takes A, s2 takes B, s1 queues for B, then s2 asks for A, which closes the cycle. The
// latency runs from that closing request's send to the victim's DEADLOCK (the reply,
// when s2 is the victim; a `denied` event, when s1 is). Then both let go of everything
// and the pair starts over. An op is one cycle resolved.
int Deadlock(const Options& o) {
  Options pairs = o;
  pairs.clients = std::max(1, o.clients / 2);
  zmq::context_t ctx(1);
  auto merged = RunClients(pairs, [&](int index, Gate& gate, ClientResult& res) {
    LockgraphConn s1(ctx, o), s2(ctx, o);
    s1.Hello("compare-deadlock-a" + std::to_string(index), kSessionTtlMs);
    s2.Hello("compare-deadlock-b" + std::to_string(index), kSessionTtlMs);
    const std::string a = Numbered("d:", static_cast<std::uint64_t>(index)) + ":a";
    const std::string b = Numbered("d:", static_cast<std::uint64_t>(index)) + ":b";
    auto take = [&](LockgraphConn& c, const std::string& resource) {
      Request req = Acquire("w", resource, o.ttl_ms, 0);
      Reply r = c.Call(req);
      if (!r.ok() || !r.granted || !r.lease) throw std::runtime_error("could not take " + resource + ": " + CodeKind(r));
      return *r.lease;
    };
    auto let_go = [&](LockgraphConn& c, graph::LeaseId lease) {
      Request rel = Release(lease);
      Reply r = c.Call(rel);
      // A victim's revoked lease may already have passed on: that is not an error.
      if (!r.ok() && r.code != Code::kNotOwner) res.Error("release " + CodeKind(r));
    };
    gate.Ready();
    const Window w = gate.Wait();
    while (!w.Over(Clock::now())) {
      const graph::LeaseId la = take(s1, a);
      const graph::LeaseId lb = take(s2, b);
      Request wait_b = Acquire("w", b, o.ttl_ms, -1);
      const std::uint64_t id_b = s1.Send(wait_b);
      Reply qb = s1.ReplyTo(id_b);
      if (!qb.ok() || !qb.queued) throw std::runtime_error("s1's wait for B was not queued: " + CodeKind(qb));
      Request wait_a = Acquire("w", a, o.ttl_ms, -1);
      const auto t0 = Clock::now();
      const std::uint64_t id_a = s2.Send(wait_a);
      Reply qa = s2.ReplyTo(id_a);
      auto resolved = [&](const char* victim) {
        const auto t1 = Clock::now();
        if (!w.Counts(t0)) return;
        ++res.ops;
        ++res.counters[victim];
        res.Latency(t0, t1);
      };
      if (qa.code == Code::kDeadlock) {  // s2 is the victim
        resolved("victim_closer");
        let_go(s2, lb);
        const graph::LeaseId b_for_s1 = AwaitGrant(s1, id_b);
        let_go(s1, b_for_s1);
        let_go(s1, la);
      } else if (qa.ok() && qa.queued) {  // s1 must be the victim: its wait for B is denied
        for (;;) {
          Event e = s1.NextEvent();
          if (e.kind == EventKind::kDenied && e.id == id_b) {
            if (e.code != Code::kDeadlock) throw std::runtime_error("s1 denied, not for deadlock");
            break;
          }
        }
        resolved("victim_other");
        let_go(s1, la);
        const graph::LeaseId a_for_s2 = AwaitGrant(s2, id_a);
        let_go(s2, a_for_s2);
        let_go(s2, lb);
      } else {
        throw std::runtime_error("closing wait answered " + CodeKind(qa) + " " + qa.message);
      }
    }
    s1.Bye();
    s2.Bye();
  });
  return PrintResult(o, merged, "\"pairs\":" + std::to_string(pairs.clients));
}

// Workload 6: report mode. Each client sends batches of o.batch events, cycling
// through hold(a, r), wait(b, r), release(a, r), hold(b, r), release(b, r) over its
// own resources — what an instrumented lock library reports as two owners take turns.
// An op is one event; a batch's latency is one sample.
int Ingest(const Options& o) {
  zmq::context_t ctx(1);
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    LockgraphConn conn(ctx, o);
    conn.Hello("compare-ingest-" + std::to_string(index), kSessionTtlMs);
    const std::string prefix = Numbered("r", static_cast<std::uint64_t>(index)) + ":";
    Request batch;
    batch.op = Op::kBatch;
    batch.items.resize(static_cast<std::size_t>(o.batch));
    std::uint64_t step = 0;
    auto fill = [&] {
      for (Request& item : batch.items) {
        const std::uint64_t cycle = step / 5;
        const std::string resource = prefix + std::to_string(cycle % 1024);
        const std::string a = Numbered("a", cycle % 64), b = Numbered("b", cycle % 64);
        item = Request{};
        item.resource = resource;
        item.mode = Mode::kExclusive;
        switch (step % 5) {
          case 0: item.op = Op::kHold, item.owner = a, item.ttl_ms = o.ttl_ms; break;
          case 1: item.op = Op::kWait, item.owner = b; break;
          case 2: item.op = Op::kRelease, item.owner = a; break;
          case 3: item.op = Op::kHold, item.owner = b, item.ttl_ms = o.ttl_ms; break;
          default: item.op = Op::kRelease, item.owner = b; break;
        }
        ++step;
      }
    };
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      fill();
      const auto t0 = Clock::now();
      if (w.Over(t0)) break;
      Reply r = conn.Call(batch);
      const auto t1 = Clock::now();
      if (!w.Counts(t0)) continue;
      if (!r.ok()) {
        res.Error("batch " + CodeKind(r));
        continue;
      }
      res.ops += r.results.size();
      res.Latency(t0, t1);
      for (const Reply& item : r.results) {
        if (!item.ok()) res.Error(CodeKind(item));
      }
    }
    conn.Bye();
  });
  return PrintResult(o, merged, "\"batch\":" + std::to_string(o.batch));
}

// Workload 7's set-up: o.leases leases on resources f:<i>, held by o.owners owners
// ("o<i mod owners>"), granted in batches by o.clients sessions that then leave without
// a bye, so the leases stay (until o.ttl_ms and a session TTL of the same length).
int Fill(const Options& o) {
  zmq::context_t ctx(1);
  Options f = o;
  f.warmup_ms = 0;
  f.seconds = 86'400;  // not a timed run: each client fills its share
  const auto started = Clock::now();
  auto merged = RunClients(f, [&](int index, Gate& gate, ClientResult& res) {
    LockgraphConn conn(ctx, o);
    conn.Hello("compare-fill-" + std::to_string(index), std::max<std::int64_t>(o.ttl_ms, kSessionTtlMs));
    gate.Ready();
    gate.Wait();
    const auto clients = static_cast<std::uint64_t>(o.clients);
    Request batch;
    batch.op = Op::kBatch;
    std::uint64_t i = static_cast<std::uint64_t>(index);
    while (i < o.leases) {
      batch.items.clear();
      while (i < o.leases && batch.items.size() < static_cast<std::size_t>(o.batch)) {
        batch.items.push_back(Acquire(Numbered("o", i % o.owners), Numbered("f:", i), o.ttl_ms, 0));
        i += clients;
      }
      const auto t0 = Clock::now();
      Reply r = conn.Call(batch);
      res.Latency(t0, Clock::now());
      if (!r.ok()) throw std::runtime_error("fill batch refused: " + CodeKind(r) + " " + r.message);
      for (const Reply& item : r.results) {
        if (item.ok() && item.granted) ++res.ops;
        else res.Error(CodeKind(item));
      }
    }
  });
  // ops_per_s over the time the fill took.
  f.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return PrintResult(f, merged);
}

}  // namespace

int RunLockgraph(const Options& o) {
  if (o.workload == "lock") return Lock(o);
  if (o.workload == "pipeline") return Pipeline(o);
  if (o.workload == "handover") return Handover(o);
  if (o.workload == "deadlock") return Deadlock(o);
  if (o.workload == "ingest") return Ingest(o);
  if (o.workload == "fill") return Fill(o);
  std::fprintf(stderr, "lockgraph_compare: lockgraph: unknown workload %s\n", o.workload.c_str());
  return 2;
}

}  // namespace lockgraph::bench
