// Test helpers shared by the order checker's tests: counters as one comparable line.
#ifndef LOCKGRAPH_TESTS_GRAPH_ORDER_TEXT_H_
#define LOCKGRAPH_TESTS_GRAPH_ORDER_TEXT_H_

#include <string>

#include "lockgraph/graph/order.h"

namespace lockgraph::graph::testing {

inline std::string StatsText(const OrderStats& s) {
  return "checks=" + std::to_string(s.checks) + " warnings=" + std::to_string(s.warnings) +
         " denied=" + std::to_string(s.denied) + " reports=" + std::to_string(s.reports) +
         " repeats=" + std::to_string(s.repeats) + " inversions=" + std::to_string(s.inversions) +
         " learned=" + std::to_string(s.learned_edges);
}

}  // namespace lockgraph::graph::testing

#endif  // LOCKGRAPH_TESTS_GRAPH_ORDER_TEXT_H_
