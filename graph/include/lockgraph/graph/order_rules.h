// Ordering rules in TOML: the [ordering] table, the same in lockgraphd's config and
// in a standalone rules file (lockgraphctl check-order --rules, and what
// `lockgraphctl order export` writes):
//
//   [ordering]
//   mode = "warn"            # off | warn | enforce: every class without its own
//   separator = ":"          # the class of `account:7` is `account`
//   max_learned_edges = 100000  # the learned class graph stops growing here
//   [ordering.rank]          # acquire classes in increasing rank
//   account = 10
//   order = 20
//   [ordering.within]        # nesting resources of one class: ascending | descending keys
//   account = "ascending"
//   [ordering.class_mode]    # per class, over `mode`
//   order = "enforce"
//
// Parsing is text in, rules out: the caller reads the file.
#ifndef LOCKGRAPH_GRAPH_ORDER_RULES_H_
#define LOCKGRAPH_GRAPH_ORDER_RULES_H_

#include <string>
#include <string_view>

#include "lockgraph/graph/order.h"

namespace lockgraph::graph {

// Reads the [ordering] table of `toml_text` over `rules` (a document without one
// leaves `rules` as it was). Returns an error naming `source`, the line or key and
// the problem, or an empty string; on error `rules` is unchanged.
// With `require_table` (a standalone rules file), a document without [ordering] is
// an error too.
std::string ParseOrderRules(std::string_view toml_text, std::string_view source, OrderRules& rules,
                            bool require_table = false);

}  // namespace lockgraph::graph

#endif  // LOCKGRAPH_GRAPH_ORDER_RULES_H_
