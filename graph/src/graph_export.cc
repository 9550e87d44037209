#include "graph_export.h"

#include <algorithm>
#include <boost/graph/adjacency_list.hpp>
// graphviz.hpp trips GCC 12's -Wmaybe-uninitialized on an iterator inside Boost.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/graph/graphviz.hpp>
#pragma GCC diagnostic pop
#include <boost/graph/strong_components.hpp>
#include <sstream>

#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/report.h"

namespace lockgraph::graph::internal {

std::vector<std::vector<std::uint32_t>> CyclicComponents(
    std::uint32_t n, const std::vector<std::pair<std::uint32_t, std::uint32_t>>& edges) {
  using G = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS>;
  G g(n);
  std::vector<bool> self_loop(n, false);
  for (const auto& [a, b] : edges) {
    boost::add_edge(a, b, g);
    if (a == b) self_loop[a] = true;
  }
  std::vector<int> component(n);
  const int count = boost::strong_components(
      g, boost::make_iterator_property_map(component.begin(), boost::get(boost::vertex_index, g)));
  std::vector<std::vector<std::uint32_t>> groups(static_cast<std::size_t>(count));
  for (std::uint32_t v = 0; v < n; ++v) groups[static_cast<std::size_t>(component[v])].push_back(v);
  std::vector<std::vector<std::uint32_t>> cyclic;
  for (auto& group : groups) {
    if (group.size() > 1 || (group.size() == 1 && self_loop[group[0]])) {
      std::sort(group.begin(), group.end());
      cyclic.push_back(std::move(group));
    }
  }
  std::sort(cyclic.begin(), cyclic.end());
  return cyclic;
}

namespace {

std::string Quoted(const std::string& s) {
  std::string out;
  AppendJsonString(out, s);  // JSON escaping is valid DOT string escaping for our labels
  return out;
}

}  // namespace

std::string WriteDot(const std::vector<DotVertex>& vertices, const std::vector<DotEdge>& edges) {
  using G = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS>;
  G g(vertices.size());
  for (const DotEdge& e : edges) boost::add_edge(e.from, e.to, g);
  // add_edge on vecS keeps insertion order per source; look labels up by position.
  std::vector<std::vector<const DotEdge*>> by_source(vertices.size());
  for (const DotEdge& e : edges) by_source[e.from].push_back(&e);

  std::ostringstream os;
  auto vertex_writer = [&](std::ostream& out, G::vertex_descriptor v) {
    const DotVertex& dv = vertices[v];
    out << "[label=" << Quoted(dv.label) << ",shape=" << (dv.resource ? "box" : "ellipse") << "]";
  };
  auto edge_writer = [&](std::ostream& out, G::edge_descriptor e) {
    const auto src = boost::source(e, g);
    // Position of this edge among the source's out-edges.
    std::size_t i = 0;
    for (auto [it, end] = boost::out_edges(src, g); it != end && *it != e; ++it) ++i;
    const DotEdge& de = *by_source[src][i];
    out << "[label=" << Quoted(de.label) << ",style=" << de.style << "]";
  };
  auto graph_writer = [](std::ostream& out) { out << "rankdir=LR;\n"; };
  boost::write_graphviz(os, g, vertex_writer, edge_writer, graph_writer);
  return os.str();
}

}  // namespace lockgraph::graph::internal

namespace lockgraph::graph {

std::string GraphJson(const Coordinator& c, TimeUs now) {
  std::string out = "{\"holds\":[";
  auto field = [&](const char* key, std::string_view value) {
    AppendJsonString(out, key);
    out += ':';
    AppendJsonString(out, value);
  };
  bool first = true;
  for (const LeaseInfo& l : c.Leases()) {
    out += first ? "{" : ",{";
    first = false;
    field("owner", l.session + "/" + l.owner);
    out += ',';
    field("resource", l.resource);
    out += ',';
    field("mode", ModeName(l.mode));
    out += ',';
    field("lease", std::to_string(l.lease));
    out += std::string(",\"revoked\":") + (l.revoked ? "true" : "false") + "}";
  }
  out += "],\"waits\":[";
  first = true;
  for (const WaitInfo& w : c.Waits()) {
    out += first ? "{" : ",{";
    first = false;
    field("owner", w.session + "/" + w.owner);
    out += ',';
    field("resource", w.resource);
    out += ',';
    field("mode", ModeName(w.mode));
    out += std::string(",\"reported\":") + (w.reported ? "true" : "false");
    out += ",\"waiting_ms\":" + std::to_string(std::max<TimeUs>(0, now - w.since_us) / 1000) + ",";
    field("site", w.site);
    out += '}';
  }
  out += "],\"edges\":[";
  first = true;
  for (const OwnerEdge& e : c.WaitForEdges()) {
    out += first ? "{" : ",{";
    first = false;
    field("from", e.from);
    out += ',';
    field("to", e.to);
    out += ',';
    field("kind", e.hard ? "hard" : "soft");
    out += '}';
  }
  out += "]}";
  return out;
}

}  // namespace lockgraph::graph
