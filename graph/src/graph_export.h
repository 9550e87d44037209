// Boost.Graph at the edges of the core: the audit (strong components) and the DOT
// export. Kept in one translation unit so that BGL's templates are compiled once.
#ifndef LOCKGRAPH_GRAPH_SRC_GRAPH_EXPORT_H_
#define LOCKGRAPH_GRAPH_SRC_GRAPH_EXPORT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lockgraph::graph::internal {

// The strongly connected components of the directed graph on [0, n) with `edges`,
// keeping those that contain a cycle (more than one node, or a self-loop). Each
// component's nodes are sorted; components are in order of their smallest node.
std::vector<std::vector<std::uint32_t>> CyclicComponents(
    std::uint32_t n, const std::vector<std::pair<std::uint32_t, std::uint32_t>>& edges);

struct DotVertex {
  std::string label;
  bool resource = false;  // drawn as a box; owners are ellipses
};
struct DotEdge {
  std::uint32_t from = 0;
  std::uint32_t to = 0;
  std::string label;
  std::string style;  // "solid", "dashed", "dotted", "bold"
};
std::string WriteDot(const std::vector<DotVertex>& vertices,
                     const std::vector<DotEdge>& edges);

}  // namespace lockgraph::graph::internal

#endif  // LOCKGRAPH_GRAPH_SRC_GRAPH_EXPORT_H_
