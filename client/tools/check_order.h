// lockgraphctl check-order: the lock-order checker over recorded traces (JSON lines)
// and lockgraphd journal segments (recognised by their magic), no daemon.
#ifndef LOCKGRAPH_TOOLS_CHECK_ORDER_H_
#define LOCKGRAPH_TOOLS_CHECK_ORDER_H_

#include <optional>
#include <string>
#include <vector>

#include "lockgraph/graph/order.h"

namespace lockgraph::tools {

struct CheckOrderOptions {
  std::vector<std::string> traces;      // trace files or journal segments
  std::string rules_file;               // empty: no declared rules
  std::optional<graph::OrderMode> mode;  // overrides the rules' global mode
  std::string junit;                    // write a JUnit XML report here
  bool quiet = false;                   // only the summary line
};

// Exit codes: 0 no report, 1 a violation or an inversion, 2 unreadable input
// (the message names the file and line, or the segment's problem). Reports name
// "FILE:LINE" in a trace and "FILE: record N" in a journal segment. A segment's
// damaged tail is a warning on stderr: its good records are checked.
int CheckOrder(const CheckOrderOptions& options);

}  // namespace lockgraph::tools

#endif  // LOCKGRAPH_TOOLS_CHECK_ORDER_H_
