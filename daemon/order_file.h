// The learned lock order, saved in DATA_DIR/order.json so that it survives a
// restart (the declared rules live in the config; this is what the daemon saw).
//
//   {"version":1,"edges":[{"from","to","site","session","owner","from_resource",
//     "from_site","to_resource","first_seen_us","count"}...]}
//
// Edges are in the order first seen. "inversion" (whether the edge closed a cycle)
// is written for people reading the file; on loading it is decided again
// (OrderChecker::Restore), so an edited file cannot hide a cycle.
#ifndef LOCKGRAPH_DAEMON_ORDER_FILE_H_
#define LOCKGRAPH_DAEMON_ORDER_FILE_H_

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "lockgraph/graph/order.h"

namespace lockgraph::daemon {

inline constexpr const char* kOrderFileName = "order.json";

std::string EncodeLearnedOrder(const std::vector<graph::OrderEdge>& edges);
// Parses EncodeLearnedOrder's text; an error names what is wrong.
std::variant<std::vector<graph::OrderEdge>, std::string> DecodeLearnedOrder(std::string_view text);

// Reads DATA_DIR/order.json: no file is an empty order. A file that cannot be
// parsed is an error naming it.
std::variant<std::vector<graph::OrderEdge>, std::string> LoadLearnedOrder(const std::string& data_dir);
// Durably replaces DATA_DIR/order.json.
std::string SaveLearnedOrder(const std::string& data_dir, const std::vector<graph::OrderEdge>& edges);

}  // namespace lockgraph::daemon

#endif  // LOCKGRAPH_DAEMON_ORDER_FILE_H_
