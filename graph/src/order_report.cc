// Ordering reports: JSON in the shape of PROTOCOL.md, text in the shape of Linux
// lockdep's ("possible circular locking dependency detected").
#include <algorithm>
#include <string>

#include "lockgraph/graph/order.h"
#include "lockgraph/graph/report.h"

namespace lockgraph::graph {
namespace {

void Field(std::string& out, std::string_view key, std::string_view value) {
  AppendJsonString(out, key);
  out.push_back(':');
  AppendJsonString(out, value);
}


std::string At(std::string_view site) { return site.empty() ? std::string() : " at " + std::string(site); }

std::string Pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

}  // namespace

void AppendOrderEdgeJson(std::string& out, const OrderEdge& e) {
  out += "{";
  Field(out, "from", e.from);
  out += ",";
  Field(out, "to", e.to);
  out += ",";
  Field(out, "site", e.site);
  out += ",";
  Field(out, "session", e.session);
  out += ",";
  Field(out, "owner", e.owner);
  out += ",";
  Field(out, "from_resource", e.from_resource);
  out += ",";
  Field(out, "from_site", e.from_site);
  out += ",";
  Field(out, "to_resource", e.to_resource);
  out += ",\"first_seen_us\":" + std::to_string(e.first_seen_us) + ",\"count\":" + std::to_string(e.count) +
         ",\"inversion\":" + (e.inversion ? "true" : "false") + "}";
}

std::string RenderOrderJson(const OrderReport& r) {
  std::string out = "{";
  Field(out, "kind", OrderKindName(r.kind));
  out += ",";
  Field(out, "from", r.from);
  out += ",";
  Field(out, "to", r.to);
  out += ",";
  Field(out, "site", r.site);
  out += ",";
  Field(out, "resource", r.resource);
  out += ",";
  Field(out, "held_resource", r.held_resource);
  out += ",";
  Field(out, "held_site", r.held_site);
  out += ",";
  Field(out, "session", r.session);
  out += ",";
  Field(out, "owner", r.owner);
  if (!r.rule.empty()) {
    out += ",";
    Field(out, "rule", r.rule);
  }
  out += std::string(",\"denied\":") + (r.denied ? "true" : "false");
  out += ",\"chain\":[";
  for (std::size_t i = 0; i < r.chain.size(); ++i) {
    if (i) out += ",";
    AppendOrderEdgeJson(out, r.chain[i]);
  }
  out += "],\"held\":[";
  for (std::size_t i = 0; i < r.held.size(); ++i) {
    if (i) out += ",";
    out += "{";
    Field(out, "resource", r.held[i].resource);
    out += ",";
    Field(out, "site", r.held[i].site);
    out += "}";
  }
  out += "],\"id\":" + std::to_string(r.id) + ",\"detected_at_us\":" + std::to_string(r.detected_at_us) + "}";
  return out;
}

std::string RenderOrderText(const OrderReport& r) {
  const std::string who = r.session + "/" + r.owner;
  std::string headline;
  switch (r.kind) {
    case OrderKind::kInversion:
      headline = r.from == r.to ? "WARNING: possible recursive locking detected"
                                : "WARNING: possible circular locking dependency detected";
      break;
    case OrderKind::kRank: headline = "WARNING: lock order rule violated (rank)"; break;
    case OrderKind::kWithin: headline = "WARNING: lock order rule violated (within class)"; break;
  }
  const std::string rule(std::max<std::size_t>(headline.size(), 54), '-');
  std::string out = std::string(rule.size(), '=') + "\n" + headline + "\n" + rule + "\n";
  out += who + " is trying to acquire:\n  " + r.resource + " (class " + r.to + ")" + At(r.site) + "\n\n";
  out += "but already holds:\n  " + r.held_resource + " (class " + r.from + ")" + At(r.held_site) + "\n";
  if (r.kind != OrderKind::kInversion || r.from != r.to) out += "\n";
  if (r.kind == OrderKind::kInversion && r.from != r.to) {
    out += "which lock already depends on the new lock.\n\n";
    out += "the existing dependency chain (in reverse order) is:\n";
    for (std::size_t i = r.chain.size(); i-- > 0;) {
      const OrderEdge& e = r.chain[i];
      out += "\n-> #" + std::to_string(i + 1) + " (" + e.from + " -> " + e.to + "):\n";
      out += "       " + e.from_resource + " held" + At(e.from_site) + " while asking for " + e.to_resource +
             At(e.site) + "\n";
      // Offline traces have no clock: their edges carry time 0 and no time is shown.
      out += "       first seen: " + e.session + "/" + e.owner +
             (e.first_seen_us != 0 ? " at " + std::to_string(e.first_seen_us) + " us" : std::string()) + "\n";
    }
    out += "\n-> #0 (" + r.from + " -> " + r.to + "): this request\n";
  } else if (!r.rule.empty()) {
    out += "which breaks the declared rule:\n  " + r.rule + "\n";
  }
  out += "\nother info that might help us debug this:\n\n";
  // As lockdep: arrows in the direction of the dependencies, from the lock asked for
  // along the existing chain to the lock held.
  if (r.kind == OrderKind::kInversion && r.chain.size() > 1) {
    out += "Chain exists of:\n  " + r.to;
    for (const OrderEdge& e : r.chain) out += " --> " + e.to;
    out += "\n\n";
  }
  if (r.from == r.to && r.kind != OrderKind::kRank) {
    out += " Possible unsafe locking scenario:\n\n       OWNER0\n       ------\n";
    out += "  lock(" + r.held_resource + ");\n  lock(" + r.resource + ");\n\n";
    out += "       and another owner taking them the other way round\n\n *** DEADLOCK ***\n\n";
    if (r.kind == OrderKind::kInversion) {
      out += " May be due to a missing within-class rule: declare [ordering.within] " + r.to +
             " = \"ascending\" if keys of this class are always taken in order.\n\n";
    }
  } else {
    // OWNER1 takes the last edge of the chain (lockdep's "parent" -> target): a pair
    // that was really seen, rather than `to`, which may only reach `from` through others.
    const std::string& parent =
        r.kind == OrderKind::kInversion && !r.chain.empty() ? r.chain.back().from : r.to;
    constexpr std::size_t kCol = 31;
    out += " Possible unsafe locking scenario:\n\n";
    out += Pad("       OWNER0", kCol) + "OWNER1\n" + Pad("       ------", kCol) + "------\n";
    out += "  lock(" + r.from + ");\n";
    out += std::string(kCol, ' ') + "lock(" + parent + ");\n";
    out += std::string(kCol, ' ') + "lock(" + r.from + ");\n";
    out += "  lock(" + r.to + ");\n\n *** DEADLOCK ***\n\n";
  }
  out += who + " holds " + std::to_string(r.held.size()) + (r.held.size() == 1 ? " lock:\n" : " locks:\n");
  for (std::size_t i = 0; i < r.held.size(); ++i) {
    out += " #" + std::to_string(i) + ": " + r.held[i].resource + At(r.held[i].site) + "\n";
  }
  out += r.denied ? "\nthe request was denied (ORDER_VIOLATION); nothing changed\n"
                  : "\nthe request was allowed (warn)\n";
  return out;
}

}  // namespace lockgraph::graph
