// The shared part of lockgraph_compare: options, the measured window, per-client
// results and their merge into one JSON line. Each target (lockgraph, the ZeroMQ echo
// floor, Redis, etcd) implements its workloads as client bodies run by RunClients.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace lockgraph::bench {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string target;    // lockgraph | echo | redis | etcd
  std::string workload;  // lock | pipeline | handover | deadlock | ingest | fill
  std::string endpoint;  // tcp://127.0.0.1:7801, 127.0.0.1:6391, 127.0.0.1:2391
  int clients = 1;
  double seconds = 2;
  int warmup_ms = 300;
  std::uint64_t keys = 1'000'000;
  int pipeline = 16;  // requests in flight per client (pipeline workload)
  int batch = 256;    // items per batch (ingest, fill)
  std::int64_t ttl_ms = 30'000;
  int reply_timeout_ms = 5'000;
  std::uint64_t seed = 0;  // 0: random
  std::uint64_t leases = 1'000'000;  // fill
  std::uint64_t owners = 100'000;    // fill
};

// The measured interval, the same for every client: it opens warmup_ms after the last
// client is ready and lasts `seconds`.
struct Window {
  Clock::time_point from, to;
  bool Counts(Clock::time_point t) const { return t >= from && t < to; }
  bool Over(Clock::time_point t) const { return t >= to; }
};

// What one client saw inside the window.
struct ClientResult {
  std::uint64_t ops = 0;  // counted operations (requests, hand-overs, cycles, events)
  std::uint64_t errors = 0;
  std::map<std::string, std::uint64_t> error_kinds;
  std::map<std::string, std::uint64_t> counters;  // workload-specific (granted, busy, ...)
  std::vector<std::uint32_t> latency_ns;          // one per latency sample, saturating
  std::string fatal;                              // set when the client had to stop

  void Latency(Clock::time_point start, Clock::time_point end);
  void Error(const std::string& kind) {
    ++errors;
    ++error_kinds[kind];
  }
};

// Start line for client threads: each calls Ready() once set up (connected, logged in),
// then Wait(), which returns the window once every client is ready. A client that fails
// before it is ready still calls Ready() (RunClients does it for a body that throws).
class Gate {
 public:
  virtual ~Gate() = default;
  virtual void Ready() = 0;
  virtual Window Wait() = 0;
};

// The hand-over workloads' clock, shared by their clients: the holder stamps its
// release just before sending it, and the next holder measures from that stamp when
// it is granted. Only the holder stamps, so the next holder reads its predecessor's.
class HandoverClock {
 public:
  // Client `index` was granted the lock at `at`: one hand-over, with its latency, when
  // a release came before and `at` is inside the window ("same_client" counts the
  // releaser getting the lock straight back).
  void Granted(int index, Clock::time_point at, const Window& w, ClientResult& res) const;
  // Client `index` is about to send its release.
  void Releasing(int index);

 private:
  std::atomic<std::int64_t> released_at_{0};  // steady_clock ticks of the last release sent
  std::atomic<int> released_by_{-1};
};

using ClientBody = std::function<void(int index, Gate& gate, ClientResult& result)>;

struct Merged {
  ClientResult total;  // sums; latency samples sorted
  int failed_clients = 0;
  std::string first_failure;
};

// Runs `body` on o.clients threads and merges what they saw.
Merged RunClients(const Options& o, const ClientBody& body);

// Prints the merged result as one JSON object on stdout: target, workload, clients,
// seconds, ops, ops_per_s, p50_us, p99_us, p999_us, max_us, mean_us, errors,
// error_kinds, counters, failed_clients, first_failure. Returns the exit status: 0 when
// no client failed, 1 otherwise.
// `extra` is added to the object as is (e.g. "\"pairs\":8"), when not empty.
int PrintResult(const Options& o, const Merged& merged, const std::string& extra = {});

// A per-client random generator: seeded from o.seed and the index, or at random.
std::uint64_t ClientSeed(const Options& o, int index);

std::string JsonEscape(const std::string& s);

// prefix + n in decimal ("k:" and 42: "k:42"), the keys and names of the workloads.
std::string Numbered(std::string_view prefix, std::uint64_t n);

// Each target: runs o.workload, prints its result line, and returns the exit status;
// an unsupported workload prints a message on stderr and returns 2.
int RunLockgraph(const Options& o);
int RunEcho(const Options& o);
int RunRedis(const Options& o);
int RunEtcd(const Options& o);

}  // namespace lockgraph::bench
