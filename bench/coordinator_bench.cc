// Benchmarks of the core: Coordinator::Apply on its hot paths, with many live leases
// held in the background.
//
//   BM_AcquireRelease/live       one Acquire (X, wait_ms 0) + Release of a fresh resource
//   BM_AcquireReleaseSameTtl     the same with the new lease's TTL equal to the background's
//   BM_WaitEdge/live             one owner->owner wait edge created (a queued acquire)
//                                and removed (Unwait)
//   BM_WaitEdgeChains/live       the same, but each new edge runs against the kept
//                                topological order through wait chains, so the
//                                Pearce-Kelly search and reorder run every time
//   BM_MemoryPerLease/o/l        heap bytes per live lease (glibc mallinfo2)
//   BM_DeadlockResolution        an AB-BA cycle formed, a victim chosen, all released
//
// The background (live leases held by a few thousand sessions with many owners each)
// is built once per benchmark and kept across the library's runs of that benchmark
// (the runs that size the iteration count), since building a million leases takes
// seconds. What the timed loops do leaves that state as it found it. Commands are
// built once and reused, so the loops measure the core rather than string building;
// every Apply advances the clock by 1 us. Every reply is checked, so a benchmark
// cannot silently measure an error path: a wrong reply stops it with an error.
#include <malloc.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lockgraph/graph/coordinator.h"

namespace lockgraph::graph {
namespace {

constexpr std::int64_t kDayMs = 24LL * 3600 * 1000;  // Config::max_ttl_ms
constexpr const char* kSecret = "secret";

// A coordinator and its clock: every Apply is 1 us after the previous one.
struct World {
  World() : coordinator(DefaultConfig(), /*epoch=*/1) {}
  // A named Config rather than a temporary: GCC 12 at -O3 warns, wrongly, that the
  // temporary's maps may be used uninitialized.
  static Config DefaultConfig() {
    Config c;
    return c;
  }
  Effects Apply(const Command& command) { return coordinator.Apply(command, ++now); }

  Coordinator coordinator;
  TimeUs now = 0;
};

std::string Describe(const Reply& r) {
  std::string s(CodeName(r.code));
  if (!r.message.empty()) s += ": " + r.message;
  return s;
}

// Slow-path helpers for set-up (not timed). They return "" on success.
std::string Open(World& w, const std::string& session, std::int32_t priority = 0) {
  Hello h;
  h.session = session;
  h.secret = kSecret;
  h.client = "bench";
  h.ttl_ms = kDayMs;
  h.priority = priority;
  Effects e = w.Apply(Command{std::move(h)});
  return e.reply.ok() ? "" : "hello " + session + ": " + Describe(e.reply);
}

Command MakeAcquire(const std::string& session, const std::string& owner,
                    const std::string& resource, std::int64_t wait_ms,
                    std::int64_t ttl_ms = 30'000) {
  Acquire a;
  a.auth = {session, kSecret};
  a.request_id = 1;
  a.owner = owner;
  a.resource = resource;
  a.mode = Mode::kExclusive;
  a.ttl_ms = ttl_ms;
  a.wait_ms = wait_ms;
  return Command{std::move(a)};
}

Command MakeRelease(const std::string& session) {
  Release r;
  r.auth = {session, kSecret};
  r.lease = 0;
  return Command{std::move(r)};
}

Command MakeUnwait(const std::string& session, const std::string& owner,
                   const std::string& resource) {
  Unwait u;
  u.auth = {session, kSecret};
  u.owner = owner;
  u.resource = resource;
  return Command{std::move(u)};
}

// Owner `owner` of `session` takes `resource` (granted at once) or queues for it.
std::string Take(World& w, const std::string& session, const std::string& owner,
                 const std::string& resource) {
  Effects e = w.Apply(MakeAcquire(session, owner, resource, 0, kDayMs));
  if (e.reply.ok() && e.reply.granted) return "";
  return "acquire " + session + "/" + owner + " " + resource + ": " + Describe(e.reply);
}
std::string Queue(World& w, const std::string& session, const std::string& owner,
                  const std::string& resource) {
  Effects e = w.Apply(MakeAcquire(session, owner, resource, -1, kDayMs));
  if (e.reply.ok() && e.reply.queued) return "";
  return "queue " + session + "/" + owner + " " + resource + ": " + Describe(e.reply);
}

// Bytes in use on glibc's heap (arenas and mmapped blocks).
std::size_t HeapInUse() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// `live` leases (X, one resource each), `per_owner` per owner, owners spread over up
// to 2000 sessions ("bg<n>", owners "o<n>"). Returns "" on success. With
// `heap_after_sessions`, stores HeapInUse() once the sessions are open.
std::string BuildBackground(World& w, std::int64_t live, std::int64_t per_owner = 10,
                            std::size_t* heap_after_sessions = nullptr) {
  const std::int64_t owners = (live + per_owner - 1) / per_owner;
  const std::int64_t sessions = std::clamp<std::int64_t>(owners / 10, 1, 2000);
  std::vector<std::string> session_names;
  session_names.reserve(sessions);
  for (std::int64_t s = 0; s < sessions; ++s) {
    session_names.push_back("bg" + std::to_string(s));
    if (std::string err = Open(w, session_names.back()); !err.empty()) return err;
  }
  if (heap_after_sessions != nullptr) *heap_after_sessions = HeapInUse();
  const std::uint64_t before = w.coordinator.stats().live_leases;
  Command cmd = MakeAcquire("", "", "", 0, kDayMs);
  Acquire& a = std::get<Acquire>(cmd);
  for (std::int64_t i = 0; i < live; ++i) {
    const std::int64_t owner = i / per_owner;
    a.auth.session = session_names[owner % sessions];
    a.owner = "o" + std::to_string(owner);
    a.resource = "bg:" + std::to_string(i);
    Effects e = w.Apply(cmd);
    if (!e.reply.ok() || !e.reply.granted) {
      return "background acquire " + a.resource + ": " + Describe(e.reply);
    }
  }
  const std::uint64_t after = w.coordinator.stats().live_leases;
  if (after - before != static_cast<std::uint64_t>(live)) {
    return "background: live_leases grew by " + std::to_string(after - before) +
           ", expected " + std::to_string(live);
  }
  return "";
}

std::vector<std::string> Names(const std::string& prefix, std::size_t n) {
  std::vector<std::string> v;
  v.reserve(n);
  for (std::size_t i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

// One fixture at a time is kept between the runs of a benchmark; a different key
// drops the old one (and its memory) before the new one is built.
struct Fixture {
  virtual ~Fixture() = default;
  World w;
  std::string error;  // set-up failed: the benchmark is skipped with this
};

std::string g_key;
std::unique_ptr<Fixture> g_fixture;

template <class F, class... Args>
F& Shared(const std::string& key, Args&&... args) {
  if (g_key != key || g_fixture == nullptr) {
    g_fixture.reset();
    g_key.clear();
    g_fixture = std::make_unique<F>(std::forward<Args>(args)...);
    g_key = key;
  }
  return static_cast<F&>(*g_fixture);
}

// Stops the benchmark with `msg` and drops the fixture, whose state is now unknown.
void Fail(benchmark::State& state, const std::string& msg) {
  static std::string last;
  last = msg;
  state.SkipWithError(last.c_str());
  g_key.clear();
}

// ---------------------------------------------------------------- acquire + release

struct AcquireReleaseFixture : Fixture {
  explicit AcquireReleaseFixture(std::int64_t live) {
    error = BuildBackground(w, live);
    if (error.empty()) error = Open(w, "bench");
    base_leases = w.coordinator.stats().live_leases;
  }
  std::vector<std::string> resources = Names("fresh:", 4096);  // power of two
  Command acquire = MakeAcquire("bench", "w", "", 0);
  Command release = MakeRelease("bench");
  std::uint64_t base_leases = 0;
};

// `ttl_ms` is the new lease's TTL: 30 s, the default, is shorter than the background's
// (24 h), so every new lease is the earliest to expire (the worst case for a timer
// heap); with 24 h it is the latest, as when every client uses the same TTL.
void RunAcquireRelease(benchmark::State& state, std::int64_t ttl_ms) {
  const std::int64_t live = state.range(0);
  auto& f = Shared<AcquireReleaseFixture>("acquire_release/" + std::to_string(live), live);
  if (!f.error.empty()) return Fail(state, f.error);
  Acquire& acquire = std::get<Acquire>(f.acquire);
  acquire.ttl_ms = ttl_ms;
  Release& release = std::get<Release>(f.release);
  const std::size_t mask = f.resources.size() - 1;
  std::size_t i = 0;
  for (auto _ : state) {
    acquire.resource = f.resources[i++ & mask];
    Effects granted = f.w.Apply(f.acquire);
    if (!granted.reply.ok() || !granted.reply.granted) [[unlikely]] {
      Fail(state, "acquire: " + Describe(granted.reply));
      break;
    }
    release.lease = granted.reply.lease;
    benchmark::DoNotOptimize(granted);
    Effects released = f.w.Apply(f.release);
    if (!released.reply.ok()) [[unlikely]] {
      Fail(state, "release: " + Describe(released.reply));
      break;
    }
    benchmark::DoNotOptimize(released);
  }
  if (f.w.coordinator.stats().live_leases != f.base_leases) {
    return Fail(state, "live_leases changed across the loop");
  }
  state.SetItemsProcessed(state.iterations());  // pairs
  state.counters["live"] = static_cast<double>(live);
}
void BM_AcquireRelease(benchmark::State& state) { RunAcquireRelease(state, 30'000); }
void BM_AcquireReleaseSameTtl(benchmark::State& state) { RunAcquireRelease(state, kDayMs); }
BENCHMARK(BM_AcquireRelease)->ArgName("live")->Arg(1'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_AcquireReleaseSameTtl)->ArgName("live")->Arg(1'000)->Arg(100'000)->Arg(1'000'000);

// ---------------------------------------------------------------- wait edges

// Owner "a" of session "ea" holds "edge:a"; owner "b" of session "eb" holds nothing.
// In the loop b queues for edge:a (one hard edge b->a) and unwaits (edge gone).
struct WaitEdgeFixture : Fixture {
  explicit WaitEdgeFixture(std::int64_t live) {
    error = BuildBackground(w, live);
    if (error.empty()) error = Open(w, "ea");
    if (error.empty()) error = Open(w, "eb");
    if (error.empty()) error = Take(w, "ea", "a", "edge:a");
    if (error.empty()) error = Probe();
  }
  // One edge, checked outside the timed loop: the acquire adds exactly one wait edge
  // and the unwait removes it.
  std::string Probe() {
    const std::uint64_t edges = w.coordinator.stats().wait_edges;
    Effects q = w.Apply(acquire);
    if (!q.reply.ok() || !q.reply.queued) return "probe acquire: " + Describe(q.reply);
    if (w.coordinator.stats().wait_edges != edges + 1) {
      return "probe: wait_edges went from " + std::to_string(edges) + " to " +
             std::to_string(w.coordinator.stats().wait_edges) + ", expected +1";
    }
    Effects u = w.Apply(unwait);
    if (!u.reply.ok() || !u.reply.cancelled) return "probe unwait: " + Describe(u.reply);
    if (w.coordinator.stats().wait_edges != edges) return "probe: edge not removed";
    return "";
  }
  Command acquire = MakeAcquire("eb", "b", "edge:a", -1);
  Command unwait = MakeUnwait("eb", "b", "edge:a");
};

void BM_WaitEdge(benchmark::State& state) {
  const std::int64_t live = state.range(0);
  auto& f = Shared<WaitEdgeFixture>("wait_edge/" + std::to_string(live), live);
  if (!f.error.empty()) return Fail(state, f.error);
  for (auto _ : state) {
    Effects queued = f.w.Apply(f.acquire);
    if (!queued.reply.ok() || !queued.reply.queued) [[unlikely]] {
      Fail(state, "acquire: " + Describe(queued.reply));
      break;
    }
    benchmark::DoNotOptimize(queued);
    Effects cancelled = f.w.Apply(f.unwait);
    if (!cancelled.reply.ok() || !cancelled.reply.cancelled) [[unlikely]] {
      Fail(state, "unwait: " + Describe(cancelled.reply));
      break;
    }
    benchmark::DoNotOptimize(cancelled);
  }
  state.SetItemsProcessed(state.iterations());  // edges created and removed
  state.counters["live"] = static_cast<double>(live);
}
BENCHMARK(BM_WaitEdge)->ArgName("live")->Arg(1'000)->Arg(100'000)->Arg(1'000'000);

// Owners "a" and "b" (session "ch") each sit in the middle of a wait chain:
//   ua2 -> ua1 -> ua0 -> a -> da0 -> da1 -> da2      (x -> y: x waits for y)
//   ub2 -> ub1 -> ub0 -> b -> db0 -> db1 -> db2
// a holds "ch:a" and b holds "ch:b" (the resources the other queues for), plus
// "ch:a_up" / "ch:b_up" that ua0 / ub0 wait for. Even iterations add b -> a (b queues
// for ch:a), odd ones a -> b. Each new edge goes against the order the previous one
// left, so every insertion searches both chains (forward from its target, backward
// from its source) and reorders them. 300 more chains of 4 owners wait in the
// background, created between the two so that their ranks lie in the searched range.
struct WaitEdgeChainsFixture : Fixture {
  static constexpr int kChains = 300;
  static constexpr int kChainLength = 4;

  explicit WaitEdgeChainsFixture(std::int64_t live) { error = Build(live); }

  // A chain hanging below `x` (x waits for d0, d0 for d1, ...) and one above it
  // (u0 waits for x's "_up" resource, u1 for u0, ...). x holds "ch:<x>".
  std::string Around(const std::string& x) {
    const std::string s = "ch";
    if (auto err = Take(w, s, x, "ch:" + x); !err.empty()) return err;
    if (auto err = Take(w, s, x, "ch:" + x + "_up"); !err.empty()) return err;
    for (int j = 0; j < 3; ++j) {  // d<j> holds ch:d<j>; its predecessor waits for it
      const std::string d = "d" + x + std::to_string(j);
      if (auto err = Take(w, s, d, "ch:" + d); !err.empty()) return err;
      const std::string waiter = j == 0 ? x : "d" + x + std::to_string(j - 1);
      if (auto err = Queue(w, s, waiter, "ch:" + d); !err.empty()) return err;
    }
    for (int j = 0; j < 3; ++j) {  // u<j> holds ch:u<j> and waits for its successor
      const std::string u = "u" + x + std::to_string(j);
      if (auto err = Take(w, s, u, "ch:" + u); !err.empty()) return err;
      const std::string target = j == 0 ? "ch:" + x + "_up" : "ch:u" + x + std::to_string(j - 1);
      if (auto err = Queue(w, s, u, target); !err.empty()) return err;
    }
    return "";
  }

  std::string Build(std::int64_t live) {
    if (auto err = BuildBackground(w, live); !err.empty()) return err;
    if (auto err = Open(w, "ch"); !err.empty()) return err;
    if (auto err = Open(w, "bgchain"); !err.empty()) return err;
    if (auto err = Around("a"); !err.empty()) return err;
    for (int c = 0; c < kChains; ++c) {
      for (int j = 0; j < kChainLength; ++j) {
        const std::string o = "c" + std::to_string(c) + "_" + std::to_string(j);
        if (auto err = Take(w, "bgchain", o, "chain:" + o); !err.empty()) return err;
        if (j > 0) {
          const std::string prev = "chain:c" + std::to_string(c) + "_" + std::to_string(j - 1);
          if (auto err = Queue(w, "bgchain", o, prev); !err.empty()) return err;
        }
      }
    }
    if (auto err = Around("b"); !err.empty()) return err;
    // Probe both directions: each adds exactly one edge and its unwait removes it.
    for (int k = 0; k < 2; ++k) {
      const std::uint64_t edges = w.coordinator.stats().wait_edges;
      Effects q = w.Apply(acquire[k]);
      if (!q.reply.ok() || !q.reply.queued) return "probe acquire: " + Describe(q.reply);
      if (w.coordinator.stats().wait_edges != edges + 1) {
        return "probe: wait_edges went from " + std::to_string(edges) + " to " +
               std::to_string(w.coordinator.stats().wait_edges) + ", expected +1";
      }
      Effects u = w.Apply(unwait[k]);
      if (!u.reply.ok() || !u.reply.cancelled) return "probe unwait: " + Describe(u.reply);
      if (w.coordinator.stats().wait_edges != edges) return "probe: edge not removed";
    }
    return "";
  }

  Command acquire[2] = {MakeAcquire("ch", "b", "ch:a", -1), MakeAcquire("ch", "a", "ch:b", -1)};
  Command unwait[2] = {MakeUnwait("ch", "b", "ch:a"), MakeUnwait("ch", "a", "ch:b")};
};

void BM_WaitEdgeChains(benchmark::State& state) {
  const std::int64_t live = state.range(0);
  auto& f = Shared<WaitEdgeChainsFixture>("wait_edge_chains/" + std::to_string(live), live);
  if (!f.error.empty()) return Fail(state, f.error);
  std::size_t k = 0;
  for (auto _ : state) {
    Effects queued = f.w.Apply(f.acquire[k]);
    if (!queued.reply.ok() || !queued.reply.queued) [[unlikely]] {
      Fail(state, "acquire: " + Describe(queued.reply));
      break;
    }
    benchmark::DoNotOptimize(queued);
    Effects cancelled = f.w.Apply(f.unwait[k]);
    if (!cancelled.reply.ok() || !cancelled.reply.cancelled) [[unlikely]] {
      Fail(state, "unwait: " + Describe(cancelled.reply));
      break;
    }
    benchmark::DoNotOptimize(cancelled);
    k ^= 1;
  }
  state.SetItemsProcessed(state.iterations());  // edges created and removed
  state.counters["live"] = static_cast<double>(live);
}
BENCHMARK(BM_WaitEdgeChains)->ArgName("live")->Arg(1'000)->Arg(100'000)->Arg(1'000'000);

// ---------------------------------------------------------------- memory

// Builds owners x per_owner leases in a new coordinator, sets the counters, returns
// "" on success.
std::string MeasureLeases(benchmark::State& state, std::int64_t owners,
                          std::int64_t per_owner) {
  const std::int64_t live = owners * per_owner;
  malloc_trim(0);
  const std::size_t before = HeapInUse();
  auto w = std::make_unique<World>();
  std::size_t after_sessions = 0;
  if (auto err = BuildBackground(*w, live, per_owner, &after_sessions); !err.empty()) return err;
  const std::size_t after = HeapInUse();
  state.counters["bytes_per_lease"] = static_cast<double>(after - before) / live;
  state.counters["lease_bytes_after_sessions"] =
      static_cast<double>(after - after_sessions) / live;
  state.counters["heap_MiB"] = static_cast<double>(after - before) / (1 << 20);
  state.PauseTiming();  // the teardown is not part of the creation rate
  w.reset();
  state.ResumeTiming();
  return "";
}

// Heap growth from before the coordinator exists to `owners` x `per_owner` live leases,
// divided by the number of leases. `bytes_per_lease` counts everything the core
// keeps (coordinator, sessions, owners, resources, leases, timers, graph nodes);
// `lease_bytes_after_sessions` starts counting once the sessions exist.
void BM_MemoryPerLease(benchmark::State& state) {
  const std::int64_t owners = state.range(0);
  const std::int64_t per_owner = state.range(1);
  g_fixture.reset();  // nothing else on the heap that could be freed meanwhile
  g_key.clear();
  for (auto _ : state) {
    if (std::string err = MeasureLeases(state, owners, per_owner); !err.empty()) {
      Fail(state, err);
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * owners * per_owner);  // leases created
}
BENCHMARK(BM_MemoryPerLease)
    ->ArgNames({"owners", "leases_per_owner"})
    ->Args({10'000, 100})
    ->Args({1'000'000, 1})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- deadlock

// Per iteration, with 1k leases in the background: p (session "dp") takes A, q
// (session "dq") takes B, p queues for B, q queues for A and closes the cycle. q is
// the younger owner, so the default policy makes it the victim: its acquire gets
// DEADLOCK and its lease on B is revoked. q releases B (which passes to p), then p
// releases both. 7 Applies; the owners and resources come from a pool of 1024 pairs.
struct DeadlockFixture : Fixture {
  static constexpr std::size_t kPairs = 1024;  // power of two
  DeadlockFixture() {
    error = BuildBackground(w, 1'000);
    if (error.empty()) error = Open(w, "dp");
    if (error.empty()) error = Open(w, "dq");
    base_leases = w.coordinator.stats().live_leases;
  }
  std::vector<std::string> p = Names("p", kPairs), q = Names("q", kPairs);
  std::vector<std::string> ra = Names("dl:a", kPairs), rb = Names("dl:b", kPairs);
  std::vector<std::string> victim = Names("dq/q", kPairs);
  Command p_take = MakeAcquire("dp", "", "", 0), q_take = MakeAcquire("dq", "", "", 0);
  Command p_wait = MakeAcquire("dp", "", "", -1), q_wait = MakeAcquire("dq", "", "", -1);
  Command p_release = MakeRelease("dp"), q_release = MakeRelease("dq");
  std::uint64_t base_leases = 0;
};

void BM_DeadlockResolution(benchmark::State& state) {
  auto& f = Shared<DeadlockFixture>("deadlock");
  if (!f.error.empty()) return Fail(state, f.error);
  Acquire& p_take = std::get<Acquire>(f.p_take);
  Acquire& q_take = std::get<Acquire>(f.q_take);
  Acquire& p_wait = std::get<Acquire>(f.p_wait);
  Acquire& q_wait = std::get<Acquire>(f.q_wait);
  Release& p_release = std::get<Release>(f.p_release);
  Release& q_release = std::get<Release>(f.q_release);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t k = i++ & (DeadlockFixture::kPairs - 1);
    p_take.owner = p_wait.owner = f.p[k];
    q_take.owner = q_wait.owner = f.q[k];
    p_take.resource = q_wait.resource = f.ra[k];
    q_take.resource = p_wait.resource = f.rb[k];

    Effects e1 = f.w.Apply(f.p_take);
    if (!e1.reply.ok() || !e1.reply.granted) [[unlikely]] {
      Fail(state, "p takes A: " + Describe(e1.reply));
      break;
    }
    const LeaseId p_a = e1.reply.lease;
    benchmark::DoNotOptimize(e1);
    Effects e2 = f.w.Apply(f.q_take);
    if (!e2.reply.ok() || !e2.reply.granted) [[unlikely]] {
      Fail(state, "q takes B: " + Describe(e2.reply));
      break;
    }
    const LeaseId q_b = e2.reply.lease;
    benchmark::DoNotOptimize(e2);
    Effects e3 = f.w.Apply(f.p_wait);
    if (!e3.reply.ok() || !e3.reply.queued) [[unlikely]] {
      Fail(state, "p queues for B: " + Describe(e3.reply));
      break;
    }
    benchmark::DoNotOptimize(e3);
    Effects e4 = f.w.Apply(f.q_wait);  // closes the cycle
    if (e4.reply.code != Code::kDeadlock || e4.reply.deadlock == nullptr ||
        e4.reply.deadlock->victim != f.victim[k]) [[unlikely]] {
      Fail(state, "q queues for A: expected DEADLOCK with victim " + f.victim[k] + ", got " +
                      Describe(e4.reply) +
                      (e4.reply.deadlock ? " victim " + e4.reply.deadlock->victim : ""));
      break;
    }
    benchmark::DoNotOptimize(e4);
    q_release.lease = q_b;
    Effects e5 = f.w.Apply(f.q_release);  // B passes to p
    LeaseId p_b = 0;
    for (const Event& ev : e5.events) {
      if (const auto* g = std::get_if<GrantedEvent>(&ev)) p_b = g->lease;
    }
    if (!e5.reply.ok() || p_b == 0) [[unlikely]] {
      Fail(state, "q releases B: " + Describe(e5.reply) + (p_b ? "" : ", no grant to p"));
      break;
    }
    benchmark::DoNotOptimize(e5);
    p_release.lease = p_a;
    Effects e6 = f.w.Apply(f.p_release);
    p_release.lease = p_b;
    Effects e7 = f.w.Apply(f.p_release);
    if (!e6.reply.ok() || !e7.reply.ok()) [[unlikely]] {
      Fail(state, "p releases: " + Describe(e6.reply) + " / " + Describe(e7.reply));
      break;
    }
    benchmark::DoNotOptimize(e6);
    benchmark::DoNotOptimize(e7);
  }
  if (f.w.coordinator.stats().live_leases != f.base_leases) {
    return Fail(state, "live_leases changed across the loop");
  }
  state.SetItemsProcessed(state.iterations());  // cycles resolved
  state.counters["applies_per_cycle"] = 7;
}
BENCHMARK(BM_DeadlockResolution);

}  // namespace
}  // namespace lockgraph::graph

BENCHMARK_MAIN();
