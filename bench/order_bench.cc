// Benchmarks of lock ordering: what the order checker adds to the core's hot path,
// and how fast check-order reads a trace.
//
//   BM_NestedAcquire/held/mode  an owner holding `held` leases of distinct classes
//                               acquires one more (X, wait_ms -1, granted at once)
//                               and releases it; mode 0 off, 1 warn. Every edge is
//                               known after the first iteration, as in production.
//   BM_TraceCheck/owners        TraceChecker over a synthetic trace: each owner
//                               nests three classes in a consistent order (ops/s)
//
// Every reply is checked, so a benchmark cannot silently measure an error path.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/order.h"

namespace lockgraph::graph {
namespace {

constexpr const char* kSecret = "secret";

void BM_NestedAcquire(benchmark::State& state) {
  const int held = static_cast<int>(state.range(0));
  Config config;
  config.order.mode = state.range(1) ? OrderMode::kWarn : OrderMode::kOff;
  Coordinator c(config, 1);
  TimeUs now = 0;
  Hello h;
  h.session = "s";
  h.secret = kSecret;
  h.client = "bench";
  h.ttl_ms = 24LL * 3600 * 1000;
  if (!c.Apply(h, ++now).reply.ok()) return state.SkipWithError("hello failed");
  auto acquire = [&](const std::string& resource) {
    Acquire a;
    a.auth = {"s", kSecret};
    a.owner = "t";
    a.resource = resource;
    a.ttl_ms = 3'600'000;
    a.wait_ms = -1;
    a.site = "bench.cc:1";
    return a;
  };
  for (int i = 0; i < held; ++i) {
    if (!c.Apply(acquire("class" + std::to_string(i) + ":1"), ++now).reply.granted) {
      return state.SkipWithError("set-up acquire failed");
    }
  }
  const Command take = acquire("last:1");
  Release release;
  release.auth = {"s", kSecret};
  for (auto _ : state) {
    Effects fx = c.Apply(take, ++now);
    if (!fx.reply.granted) return state.SkipWithError("acquire was not granted");
    release.lease = fx.reply.lease;
    if (!c.Apply(release, ++now).reply.ok()) return state.SkipWithError("release failed");
  }
  if (c.order().stats().reports != 0) state.SkipWithError("a consistent order was reported");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NestedAcquire)->ArgsProduct({{1, 4, 16}, {0, 1}})->ArgNames({"held", "mode"});

void BM_TraceCheck(benchmark::State& state) {
  const int owners = static_cast<int>(state.range(0));
  std::vector<TraceOp> trace;
  for (int o = 0; o < owners; ++o) {
    const std::string owner = "t" + std::to_string(o);
    const std::string key = std::to_string(o);
    for (const char* cls : {"account:", "order:", "item:"}) {
      trace.push_back({TraceOp::Kind::kHold, "s", owner, cls + key, Mode::kExclusive, "app.cc:1", -1});
    }
    for (const char* cls : {"item:", "order:", "account:"}) {
      trace.push_back({TraceOp::Kind::kRelease, "s", owner, cls + key, Mode::kExclusive, "", -1});
    }
  }
  std::size_t reports = 0;
  for (auto _ : state) {
    TraceChecker checker;
    for (const TraceOp& op : trace) reports += checker.Apply(op).size();
  }
  if (reports != 0) state.SkipWithError("a consistent trace was reported");
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(trace.size()));
}
BENCHMARK(BM_TraceCheck)->Arg(10'000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lockgraph::graph

BENCHMARK_MAIN();
