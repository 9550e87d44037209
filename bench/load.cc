// lockgraph_load: a closed-loop load generator against a running lockgraphd.
//
//   lockgraph_load --endpoint tcp://127.0.0.1:7790 --clients 16 --seconds 5
//                  [--keys 1000000] [--encoding binary|json] [--ttl-ms 30000] [--json]
//
// N client threads, each with its own DEALER socket and its own session (hello).
// Each loops: acquire X of a random key "k:<0..K-1>" with wait_ms 0, then release
// the lease it got; one request in flight per client. It speaks the wire protocol
// directly (protocol::EncodeRequest / DecodeServerMessage), not through
// lockgraph::Client, so that the figures are the daemon's and not the client
// library's background thread and retry machinery.
//
// Counting: an op is one request (an acquire or a release). An acquire answered
// TIMEOUT (the key is held by another client) is an op, reported as "busy", and is
// not followed by a release. Anything else that is not OK — another error code, a
// queued acquire (impossible with wait_ms 0), an unreadable frame, no reply within
// --reply-timeout-ms — is an error. Latency is per request on steady_clock, from
// before its encoding to after its reply is decoded. The first --warmup-ms (500)
// are not counted; a request counts when it was started inside the measured window.
// At the end each client releases what it holds and says bye.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <latch>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "lockgraph/protocol.h"

namespace {

using Clock = std::chrono::steady_clock;
using lockgraph::graph::Code;
using lockgraph::protocol::DecodeError;
using lockgraph::protocol::Encoding;
using lockgraph::protocol::Op;
using lockgraph::protocol::Reply;
using lockgraph::protocol::Request;
using lockgraph::protocol::ServerMessage;

struct Options {
  std::string endpoint = "tcp://127.0.0.1:7790";
  int clients = 1;
  double seconds = 5;
  std::uint64_t keys = 1'000'000;
  std::string encoding = "binary";
  std::int64_t ttl_ms = 30'000;
  bool json = false;
  int warmup_ms = 500;
  int reply_timeout_ms = 5'000;
  int io_threads = 1;
  std::uint64_t seed = 0;  // 0: random
};

// What one client thread saw in the measured window.
struct ClientStats {
  std::uint64_t acquires = 0;
  std::uint64_t granted = 0;
  std::uint64_t busy = 0;  // acquire answered TIMEOUT
  std::uint64_t releases = 0;
  std::uint64_t errors = 0;
  std::uint64_t events = 0;  // events received (none expected in this workload)
  std::map<std::string, std::uint64_t> error_kinds;
  std::vector<std::uint32_t> latency_ns;  // one per counted request, saturating
  std::string fatal;                      // set when the client could not run at all
  bool started = false;
};

// One session on one DEALER socket, one request at a time.
class Conn {
 public:
  Conn(zmq::context_t& ctx, const Options& o, Encoding enc)
      : sock_(ctx, zmq::socket_type::dealer), enc_(enc), timeout_(o.reply_timeout_ms) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.set(zmq::sockopt::rcvtimeo, o.reply_timeout_ms);
    sock_.connect(o.endpoint);
  }

  // Sends `req` (with the next id) and waits for its reply. Events and replies with
  // other ids are skipped (events counted). Returns false with `why` on failure.
  bool Call(Request& req, Reply& reply, std::uint64_t& events, std::string& why) {
    req.id = ++next_id_;
    const std::string frame = lockgraph::protocol::EncodeRequest(req, enc_);
    try {
      sock_.send(zmq::buffer(frame), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      why = std::string("send: ") + e.what();
      return false;
    }
    const auto deadline = Clock::now() + timeout_;
    zmq::message_t msg;
    for (;;) {
      try {
        // Blocking receive, bounded by ZMQ_RCVTIMEO (= the reply timeout).
        if (!sock_.recv(msg, zmq::recv_flags::none)) {
          if (Clock::now() >= deadline) {
            why = "no reply within " + std::to_string(timeout_.count()) + " ms";
            return false;
          }
          continue;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        why = std::string("recv: ") + e.what();
        return false;
      }
      auto decoded = lockgraph::protocol::DecodeServerMessage(msg.to_string_view());
      if (auto* err = std::get_if<DecodeError>(&decoded)) {
        why = "undecodable frame: " + err->message;
        return false;
      }
      auto& m = std::get<ServerMessage>(decoded);
      if (auto* r = std::get_if<Reply>(&m)) {
        if (r->id != req.id) continue;  // a stale reply: cannot happen with one in flight
        reply = std::move(*r);
        return true;
      }
      ++events;
    }
  }

 private:
  zmq::socket_t sock_;
  Encoding enc_;
  std::chrono::milliseconds timeout_;
  std::uint64_t next_id_ = 0;
};

std::string ErrorKind(const Reply& r) { return std::string(lockgraph::graph::CodeName(r.code)); }

void RunClient(int index, zmq::context_t& ctx, const Options& o, Encoding enc, std::latch& ready,
               std::latch& go, const std::atomic<std::int64_t>& t0_ns, ClientStats& st) {
  bool counted_ready = false;
  auto mark_ready = [&] {
    if (!counted_ready) ready.count_down();
    counted_ready = true;
  };
  std::uint64_t ignored_events = 0;
  std::string why;
  try {
    Conn conn(ctx, o, enc);

    Request hello;
    hello.op = Op::kHello;
    hello.client = "lockgraph_load-" + std::to_string(index);
    hello.ttl_ms = std::max<std::int64_t>(30'000, 6 * o.reply_timeout_ms);
    Reply r;
    if (!conn.Call(hello, r, ignored_events, why)) {
      st.fatal = "hello: " + why;
      mark_ready();
      return;
    }
    if (!r.ok() || !r.session || !r.secret) {
      st.fatal = "hello refused: " + ErrorKind(r) + " " + r.message;
      mark_ready();
      return;
    }
    const std::string session = *r.session, secret = *r.secret;
    st.started = true;
    mark_ready();
    go.wait();

    const auto t0 = Clock::time_point(Clock::duration(t0_ns.load()));
    const auto measure_from = t0 + std::chrono::milliseconds(o.warmup_ms);
    const auto measure_to = measure_from + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(o.seconds));

    std::mt19937_64 rng(o.seed != 0 ? o.seed * 1'000'003 + static_cast<std::uint64_t>(index)
                                    : std::random_device{}() ^ (static_cast<std::uint64_t>(index) << 32));
    std::uniform_int_distribution<std::uint64_t> pick(0, o.keys - 1);

    Request acquire;
    acquire.op = Op::kAcquire;
    acquire.session = session;
    acquire.secret = secret;
    acquire.owner = "w";
    acquire.mode = lockgraph::graph::Mode::kExclusive;
    acquire.ttl_ms = o.ttl_ms;
    acquire.wait_ms = 0;
    acquire.resource.reserve(32);
    Request release;
    release.op = Op::kRelease;
    release.session = session;
    release.secret = secret;

    st.latency_ns.reserve(1 << 16);
    auto record = [&](Clock::time_point start, Clock::time_point end) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count();
      st.latency_ns.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(ns, UINT32_MAX)));
    };
    auto fail = [&](const std::string& kind) {
      ++st.errors;
      ++st.error_kinds[kind];
    };

    Reply reply;
    for (;;) {
      // ---- acquire
      const auto a_start = Clock::now();
      if (a_start >= measure_to) break;
      const bool a_counted = a_start >= measure_from;
      acquire.resource.assign("k:");
      acquire.resource.append(std::to_string(pick(rng)));
      std::uint64_t& ev = a_counted ? st.events : ignored_events;
      if (!conn.Call(acquire, reply, ev, why)) {
        if (a_counted) fail("transport: " + why);
        st.fatal = "acquire: " + why;
        break;  // the socket's state is unknown: stop this client
      }
      const auto a_end = Clock::now();
      std::optional<std::uint64_t> lease;
      if (reply.ok() && reply.granted && reply.lease) lease = reply.lease;
      if (a_counted) {
        ++st.acquires;
        record(a_start, a_end);
        if (lease) ++st.granted;
        else if (reply.code == Code::kTimeout) ++st.busy;
        else if (reply.ok()) fail(reply.queued ? "queued" : "ok without lease");
        else fail(ErrorKind(reply));
      }
      if (!lease) continue;

      // ---- release (always, even past the window, so that nothing stays held)
      const auto r_start = Clock::now();
      const bool r_counted = r_start >= measure_from && r_start < measure_to;
      release.lease = lease;
      std::uint64_t& ev2 = r_counted ? st.events : ignored_events;
      if (!conn.Call(release, reply, ev2, why)) {
        if (r_counted) fail("transport: " + why);
        st.fatal = "release: " + why;
        break;
      }
      const auto r_end = Clock::now();
      if (r_counted) {
        ++st.releases;
        record(r_start, r_end);
        if (!reply.ok()) fail(ErrorKind(reply));
      }
    }

    Request bye;
    bye.op = Op::kBye;
    bye.session = session;
    bye.secret = secret;
    if (!conn.Call(bye, reply, ignored_events, why)) {
      if (st.fatal.empty()) st.fatal = "bye: " + why;
    } else if (!reply.ok() && st.fatal.empty()) {
      st.fatal = "bye refused: " + ErrorKind(reply) + " " + reply.message;
    }
  } catch (const std::exception& e) {
    st.fatal = e.what();
    mark_ready();
  }
}

double Percentile(const std::vector<std::uint32_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  // Nearest rank.
  auto rank = static_cast<std::size_t>(q * static_cast<double>(sorted.size()));
  if (rank >= sorted.size()) rank = sorted.size() - 1;
  return sorted[rank] / 1000.0;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "lockgraph_load: closed-loop load against a running lockgraphd. N client threads, each\n"
      "with its own DEALER socket and session, loop acquire X (wait_ms 0) of a random key\n"
      "k:<0..K-1> then release, one request in flight per client. Reports requests per second\n"
      "and per-request latency percentiles after a warm-up.",
      "lockgraph_load"};
  app.add_option("--endpoint", o.endpoint, "daemon endpoint")->capture_default_str();
  app.add_option("--clients", o.clients, "client threads, one session and socket each")
      ->check(CLI::Range(1, 10'000))
      ->capture_default_str();
  app.add_option("--seconds", o.seconds, "measured duration, after the warm-up")
      ->check(CLI::Range(0.01, 86'400.0))
      ->capture_default_str();
  app.add_option("--keys", o.keys, "number of distinct keys k:0..K-1")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 62))
      ->capture_default_str();
  app.add_option("--encoding", o.encoding, "wire encoding")
      ->check(CLI::IsMember({"binary", "json"}))
      ->capture_default_str();
  app.add_option("--ttl-ms", o.ttl_ms, "lease TTL of each acquire")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86'400'000}))
      ->capture_default_str();
  app.add_flag("--json", o.json, "print one JSON object instead of a table");
  app.add_option("--warmup-ms", o.warmup_ms, "warm-up before measuring")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  app.add_option("--reply-timeout-ms", o.reply_timeout_ms, "a request without a reply after this stops its client")
      ->check(CLI::Range(1, 3'600'000))
      ->capture_default_str();
  app.add_option("--io-threads", o.io_threads, "ZeroMQ I/O threads of the generator")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed for key choice (0: random)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const Encoding enc = o.encoding == "json" ? Encoding::kJson : Encoding::kBinary;
  zmq::context_t ctx(o.io_threads);
  ctx.set(zmq::ctxopt::max_sockets, std::max(1024, o.clients + 16));

  std::vector<ClientStats> stats(static_cast<std::size_t>(o.clients));
  std::latch ready(o.clients);
  std::latch go(1);
  std::atomic<std::int64_t> t0_ns{0};
  std::vector<std::thread> threads;
  threads.reserve(stats.size());
  for (int i = 0; i < o.clients; ++i) {
    threads.emplace_back(RunClient, i, std::ref(ctx), std::cref(o), enc, std::ref(ready), std::ref(go),
                         std::cref(t0_ns), std::ref(stats[static_cast<std::size_t>(i)]));
  }
  ready.wait();
  t0_ns.store(Clock::now().time_since_epoch().count());
  go.count_down();
  for (auto& t : threads) t.join();

  // ---- merge
  ClientStats total;
  std::size_t n_latency = 0;
  int failed_clients = 0;
  std::string first_fatal;
  for (const ClientStats& s : stats) n_latency += s.latency_ns.size();
  total.latency_ns.reserve(n_latency);
  for (ClientStats& s : stats) {
    total.acquires += s.acquires;
    total.granted += s.granted;
    total.busy += s.busy;
    total.releases += s.releases;
    total.errors += s.errors;
    total.events += s.events;
    for (const auto& [k, v] : s.error_kinds) total.error_kinds[k] += v;
    total.latency_ns.insert(total.latency_ns.end(), s.latency_ns.begin(), s.latency_ns.end());
    std::vector<std::uint32_t>().swap(s.latency_ns);
    if (!s.fatal.empty()) {
      ++failed_clients;
      if (first_fatal.empty()) first_fatal = s.fatal;
    }
  }
  std::sort(total.latency_ns.begin(), total.latency_ns.end());
  const std::uint64_t ops = total.acquires + total.releases;
  const double ops_per_s = static_cast<double>(ops) / o.seconds;
  double mean_us = 0;
  for (std::uint32_t v : total.latency_ns) mean_us += v;
  if (!total.latency_ns.empty()) mean_us /= 1000.0 * static_cast<double>(total.latency_ns.size());
  const double p50 = Percentile(total.latency_ns, 0.50);
  const double p99 = Percentile(total.latency_ns, 0.99);
  const double p999 = Percentile(total.latency_ns, 0.999);
  const double max_us = total.latency_ns.empty() ? 0 : total.latency_ns.back() / 1000.0;

  if (o.json) {
    std::printf(
        "{\"endpoint\":\"%s\",\"clients\":%d,\"seconds\":%g,\"warmup_ms\":%d,\"keys\":%" PRIu64
        ",\"encoding\":\"%s\",\"ttl_ms\":%" PRId64 ",\"ops\":%" PRIu64 ",\"ops_per_s\":%.1f,\"acquires\":%" PRIu64
        ",\"granted\":%" PRIu64 ",\"busy\":%" PRIu64 ",\"releases\":%" PRIu64 ",\"errors\":%" PRIu64
        ",\"error_kinds\":{",
        JsonEscape(o.endpoint).c_str(), o.clients, o.seconds, o.warmup_ms, o.keys, o.encoding.c_str(), o.ttl_ms,
        ops, ops_per_s, total.acquires, total.granted, total.busy, total.releases, total.errors);
    bool first = true;
    for (const auto& [k, v] : total.error_kinds) {
      std::printf("%s\"%s\":%" PRIu64, first ? "" : ",", JsonEscape(k).c_str(), v);
      first = false;
    }
    std::printf("},\"events\":%" PRIu64
                ",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f"
                ",\"failed_clients\":%d",
                total.events, p50, p99, p999, max_us, mean_us, failed_clients);
    if (!first_fatal.empty()) std::printf(",\"first_failure\":\"%s\"", JsonEscape(first_fatal).c_str());
    std::printf("}\n");
  } else {
    std::printf("lockgraph_load: %s, %d client(s), %s encoding, %" PRIu64 " keys, lease ttl %" PRId64
                " ms, %d ms warm-up, %g s measured\n",
                o.endpoint.c_str(), o.clients, o.encoding.c_str(), o.keys, o.ttl_ms, o.warmup_ms, o.seconds);
    std::printf("%12s %12s %10s %10s %10s %8s %9s %9s %9s %9s %9s\n", "ops", "ops/s", "acquires", "releases",
                "busy", "errors", "p50 us", "p99 us", "p99.9 us", "max us", "mean us");
    std::printf("%12" PRIu64 " %12.0f %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64
                " %9.1f %9.1f %9.1f %9.1f %9.1f\n",
                ops, ops_per_s, total.acquires, total.releases, total.busy, total.errors, p50, p99, p999, max_us,
                mean_us);
    for (const auto& [k, v] : total.error_kinds) std::printf("  error %s: %" PRIu64 "\n", k.c_str(), v);
    if (total.events != 0) std::printf("  events received: %" PRIu64 "\n", total.events);
    if (failed_clients != 0)
      std::printf("  %d client(s) failed; first: %s\n", failed_clients, first_fatal.c_str());
  }
  return failed_clients == 0 ? 0 : 1;
}
