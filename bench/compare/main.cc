// lockgraph_compare: one workload against one target, one JSON line of results.
//
//   lockgraph_compare --target lockgraph|echo|redis|etcd --workload lock|pipeline|handover|
//                     deadlock|ingest|fill --endpoint E [--clients N] [--seconds S] ...
//
// scripts/bench runs it many times, against servers it starts, pinned, and interleaved
// so that machine drift hits every target alike; see docs/performance.md.
#include <CLI/CLI.hpp>

#include "harness.h"

int main(int argc, char** argv) {
  lockgraph::bench::Options o;
  CLI::App app{
      "lockgraph_compare: runs one workload against one lock service (or the bare ZeroMQ echo\n"
      "floor) and prints one JSON line: ops/s, latency percentiles, errors. Workloads:\n"
      "  lock      acquire X of a random key then release it, one request in flight per client\n"
      "  pipeline  the same with --pipeline requests in flight per client\n"
      "  handover  every client on one lock: hand-overs/s, latency = release sent -> next grant\n"
      "  deadlock  (lockgraph) client pairs forming AB-BA cycles: latency = closing wait -> victim told\n"
      "  ingest    (lockgraph) report-mode hold/wait/release events in batches: events/s\n"
      "  fill      (lockgraph) grant --leases leases to --owners owners and leave them held\n"
      "Targets: lockgraph (tcp:// endpoint), echo (lockgraph_echo's tcp:// endpoint),\n"
      "redis (host:port), etcd (host:port of its client URL).",
      "lockgraph_compare"};
  app.add_option("--target", o.target, "lockgraph, echo, redis or etcd")
      ->required()
      ->check(CLI::IsMember({"lockgraph", "echo", "redis", "etcd"}));
  app.add_option("--workload", o.workload, "lock, pipeline, handover, deadlock, ingest or fill")
      ->required()
      ->check(CLI::IsMember({"lock", "pipeline", "handover", "deadlock", "ingest", "fill"}));
  app.add_option("--endpoint", o.endpoint, "the target's address")->required();
  app.add_option("--clients", o.clients, "client threads, one connection each (deadlock: pairs x 2)")
      ->check(CLI::Range(1, 10'000))
      ->capture_default_str();
  app.add_option("--seconds", o.seconds, "measured duration, after the warm-up")
      ->check(CLI::Range(0.01, 86'400.0))
      ->capture_default_str();
  app.add_option("--warmup-ms", o.warmup_ms, "warm-up before measuring")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  app.add_option("--keys", o.keys, "key space of the lock workloads")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 62))
      ->capture_default_str();
  app.add_option("--pipeline", o.pipeline, "requests in flight per client (pipeline workload)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "items per batch (ingest, fill)")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--ttl-ms", o.ttl_ms, "lease TTL")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86'400'000}))
      ->capture_default_str();
  app.add_option("--reply-timeout-ms", o.reply_timeout_ms, "a client without a reply after this stops")
      ->check(CLI::Range(1, 3'600'000))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed (0: random)")->capture_default_str();
  app.add_option("--leases", o.leases, "fill: leases to grant")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}))
      ->capture_default_str();
  app.add_option("--owners", o.owners, "fill: owners holding them")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    if (o.target == "lockgraph") return lockgraph::bench::RunLockgraph(o);
    if (o.target == "echo") return lockgraph::bench::RunEcho(o);
    if (o.target == "redis") return lockgraph::bench::RunRedis(o);
    return lockgraph::bench::RunEtcd(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockgraph_compare: %s\n", e.what());
    return 1;
  }
}
