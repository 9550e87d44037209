// Lock traces: JSON lines, one protocol request per line, as the C++ client records
// them (LOCKGRAPH_RECORD=PATH) and as `lockgraphctl check-order` reads them.
//
//   {"v":1,"op":"hold","session":"S","owner":"O","resource":"R","mode":"X","site":"a.cc:12"}
//
//   op        R  hold | wait | acquire | release | unwait; the other protocol ops
//                (hello, heartbeat, bye, renew, ...) are read as nothing to check
//   session   O  [""]: string
//   owner     R  non-empty string
//   resource  R  non-empty string
//   mode      O  ["X"]: "X" or "S"
//   site      O  [""]: string
//   wait_ms   O  [-1]: integer; 0 marks a try (it adds no learned order)
//   other fields (v, id, ttl_ms, ...) are ignored. Blank lines and lines starting
//   with '#' are skipped.
#ifndef LOCKGRAPH_TRACE_H_
#define LOCKGRAPH_TRACE_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "lockgraph/graph/order.h"

namespace lockgraph::protocol {

inline constexpr std::size_t kMaxTraceLineBytes = 1 << 20;

// A line that names nothing to check (blank, comment, another op).
struct TraceSkip {};

// Parses one line. An error says what is wrong (the caller adds file:line).
std::variant<graph::TraceOp, TraceSkip, std::string> ParseTraceLine(std::string_view line);

}  // namespace lockgraph::protocol

#endif  // LOCKGRAPH_TRACE_H_
