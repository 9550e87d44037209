// Test helpers shared by the order checker's tests: counters as one comparable line.
#ifndef LOCKGRAPH_TESTS_GRAPH_ORDER_TEXT_H_
#define LOCKGRAPH_TESTS_GRAPH_ORDER_TEXT_H_

#include <string>

#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/order.h"

namespace lockgraph::graph::testing {

inline std::string StatsText(const OrderStats& s) {
  return "checks=" + std::to_string(s.checks) + " warnings=" + std::to_string(s.warnings) +
         " denied=" + std::to_string(s.denied) + " reports=" + std::to_string(s.reports) +
         " repeats=" + std::to_string(s.repeats) + " inversions=" + std::to_string(s.inversions) +
         " learned=" + std::to_string(s.learned_edges);
}

// The protocol request a trace op stands for, in session `op.session` whose secret
// is "<session>-secret"; leases and holds get `ttl_ms`.
inline Command CommandOf(const TraceOp& op, std::int64_t ttl_ms) {
  const Auth auth{op.session, op.session + "-secret"};
  switch (op.kind) {
    case TraceOp::Kind::kAcquire: {
      Acquire a;
      a.auth = auth;
      a.owner = op.owner;
      a.resource = op.resource;
      a.mode = op.mode;
      a.ttl_ms = ttl_ms;
      a.wait_ms = op.wait_ms;
      a.site = op.site;
      return a;
    }
    case TraceOp::Kind::kHold: return Hold{auth, op.owner, op.resource, op.mode, ttl_ms, op.site};
    case TraceOp::Kind::kWait: return Wait{auth, op.owner, op.resource, op.mode, op.site};
    case TraceOp::Kind::kRelease: return Release{auth, std::nullopt, op.owner, op.resource};
    case TraceOp::Kind::kUnwait: return Unwait{auth, op.owner, op.resource};
  }
  return Tick{};
}

}  // namespace lockgraph::graph::testing

#endif  // LOCKGRAPH_TESTS_GRAPH_ORDER_TEXT_H_
