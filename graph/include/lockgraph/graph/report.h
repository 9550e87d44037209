// Deadlock reports as data, and their two renderings: JSON in the shape of
// PROTOCOL.md, and text in the order of Linux lockdep's reports.
#ifndef LOCKGRAPH_GRAPH_REPORT_H_
#define LOCKGRAPH_GRAPH_REPORT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lockgraph/graph/types.h"

namespace lockgraph::graph {

// The steps of the victim policy, applied in a configured order; the first step
// that leaves one candidate decides.
enum class VictimStep : std::uint8_t {
  kLowestPriority,  // the session's hello priority; lower loses
  kYoungest,        // the latest `started`; the owner that has done least loses
  kFewestLeases,    // the owner holding fewest leases loses
  kLowestId,        // the bytewise-smallest owner name ("session/owner") loses
};
std::string_view VictimStepName(VictimStep s);  // "lowest_priority", ...

// One edge of a cycle: `owner` waits for `waits_for` (in `mode`), held by `held_by`
// (or, for a soft edge, queued ahead of `owner` by `held_by`).
struct CycleEdge {
  std::string owner;      // "session/owner"
  std::string waits_for;  // resource name
  Mode mode = Mode::kExclusive;
  std::string held_by;  // "session/owner"
  std::string site;     // where `owner` asked to wait, if the client said
  bool soft = false;    // queue order, not a hold
};

struct DeadlockReport {
  std::uint64_t id = 0;          // 1, 2, ... per coordinator
  std::vector<CycleEdge> cycle;  // cycle[i].held_by == cycle[i+1].owner (cyclically)
  std::string victim;            // "session/owner"
  VictimStep step = VictimStep::kLowestId;
  std::string why;               // the policy step that chose the victim, in words
  TimeUs detected_at_us = 0;
  bool report_mode = false;      // any edge came from reports (confirmed before acting)
  int attempt = 1;               // 2, 3, ... after earlier victims were unresponsive
  std::vector<std::string> unresponsive;  // earlier victims that never released
};

// {"cycle":[{"owner",...,"site"}...],"victim":...,"why":...,"detected_at_us":...}
// plus "id", "step", "attempt" and "unresponsive" (ignored by older readers).
std::string RenderJson(const DeadlockReport& r);
// Multi-line text: headline, the request that closed the cycle, the holds, the
// chain with sites, a two-column scenario for a two-owner cycle, the victim and why.
std::string RenderText(const DeadlockReport& r);

// Appends `s` as a JSON string literal (quoted, escaped) to `out`.
void AppendJsonString(std::string& out, std::string_view s);

}  // namespace lockgraph::graph

#endif  // LOCKGRAPH_GRAPH_REPORT_H_
