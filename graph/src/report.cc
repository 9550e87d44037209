#include "lockgraph/graph/report.h"

#include <cstdio>

namespace lockgraph::graph {

std::string_view VictimStepName(VictimStep s) {
  switch (s) {
    case VictimStep::kLowestPriority: return "lowest_priority";
    case VictimStep::kYoungest: return "youngest";
    case VictimStep::kFewestLeases: return "fewest_leases";
    case VictimStep::kLowestId: return "lowest_id";
  }
  return "unknown";
}

void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

namespace {

void Field(std::string& out, std::string_view key, std::string_view value) {
  AppendJsonString(out, key);
  out.push_back(':');
  AppendJsonString(out, value);
}

std::string Pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

}  // namespace

std::string RenderJson(const DeadlockReport& r) {
  std::string out = "{\"cycle\":[";
  for (std::size_t i = 0; i < r.cycle.size(); ++i) {
    const CycleEdge& e = r.cycle[i];
    if (i) out.push_back(',');
    out.push_back('{');
    Field(out, "owner", e.owner);
    out.push_back(',');
    Field(out, "waits_for", e.waits_for);
    out.push_back(',');
    Field(out, "mode", ModeName(e.mode));
    out.push_back(',');
    Field(out, "held_by", e.held_by);
    out.push_back(',');
    Field(out, "site", e.site);
    if (e.soft) out += ",\"soft\":true";
    out.push_back('}');
  }
  out += "],";
  Field(out, "victim", r.victim);
  out.push_back(',');
  Field(out, "why", r.why);
  out += ",\"detected_at_us\":" + std::to_string(r.detected_at_us);
  out += ",\"id\":" + std::to_string(r.id);
  out.push_back(',');
  Field(out, "step", VictimStepName(r.step));
  out += ",\"report_mode\":";
  out += r.report_mode ? "true" : "false";
  out += ",\"attempt\":" + std::to_string(r.attempt);
  out += ",\"unresponsive\":[";
  for (std::size_t i = 0; i < r.unresponsive.size(); ++i) {
    if (i) out.push_back(',');
    AppendJsonString(out, r.unresponsive[i]);
  }
  out += "]}";
  return out;
}

std::string RenderText(const DeadlockReport& r) {
  std::string out;
  out += "======================================================\n";
  out += "WARNING: deadlock detected (#" + std::to_string(r.id) + ", " +
         std::to_string(r.cycle.size()) + " owners" +
         (r.report_mode ? ", confirmed from reports" : "") + ")\n";
  out += "------------------------------------------------------\n";
  if (!r.cycle.empty()) {
    // The last edge is the one whose wait closed the cycle.
    const CycleEdge& closing = r.cycle.back();
    out += closing.owner + " is trying to acquire:\n";
    out += "  " + closing.waits_for + " (" + std::string(ModeName(closing.mode)) + ")";
    if (!closing.site.empty()) out += " at " + closing.site;
    out += "\n\nbut it is held by " + closing.held_by +
           (closing.soft ? " (queued ahead)" : "") + ".\n";
  }
  out += "\nthe existing dependency chain is:\n";
  for (std::size_t i = 0; i < r.cycle.size(); ++i) {
    const CycleEdge& e = r.cycle[i];
    out += "-> #" + std::to_string(i) + " " + e.owner + " waits for " + e.waits_for +
           " (" + std::string(ModeName(e.mode)) + ")" + (e.soft ? " queued behind " : " held by ") +
           e.held_by;
    if (!e.site.empty()) out += "\n       at " + e.site;
    out += "\n";
  }
  if (r.cycle.size() == 2) {
    const CycleEdge& a = r.cycle[0];
    const CycleEdge& b = r.cycle[1];
    const std::size_t w = 32;
    out += "\npossible unsafe scenario:\n\n";
    out += "       " + Pad(a.owner, w) + b.owner + "\n";
    out += "       " + Pad("----", w) + "----\n";
    out += "  hold " + Pad(b.waits_for, w) + "\n";
    out += "       " + Pad("", w) + "hold " + a.waits_for + "\n";
    out += "  wait " + Pad(a.waits_for, w) + "\n";
    out += "       " + Pad("", w) + "wait " + b.waits_for + "\n";
    out += "\n *** DEADLOCK ***\n";
  }
  if (!r.unresponsive.empty()) {
    out += "\nearlier victims that did not release:";
    for (const auto& u : r.unresponsive) out += " " + u;
    out += "\n";
  }
  out += "\nvictim: " + r.victim + "\n";
  out += "why: " + r.why + " (" + std::string(VictimStepName(r.step)) + ")\n";
  return out;
}

}  // namespace lockgraph::graph
