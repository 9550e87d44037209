// WaitForGraph: a directed graph over dense node ids that refuses any edge that
// would close a cycle, and says why (the path that the edge would close).
//
// Contract (in the manner of abseil's GraphCycles):
//   InsertEdge(x, y) returns true and inserts x->y when the graph stays acyclic;
//   otherwise it returns false and changes nothing. FindPath(y, x) then gives the
//   evidence. RemoveEdge never fails. Nodes are created on first use; a node id
//   can be recycled by RemoveNode once it has no edges.
//
// Thread safety: none; one thread owns an instance (the coordinator's).
//
// Performance: the graph keeps a topological order of its nodes (Pearce and
// Kelly's dynamic topological sort). Inserting x->y where x already comes before y,
// or where either end has no edges yet (it is moved to the end that fits), costs
// O(1) plus the adjacency insert. Otherwise the search visits only nodes whose order
// lies between y and x (the "affected region"), not the whole graph, so the cost of
// an edge does not grow with the number of unrelated owners. Removal is
// O(out-degree + in-degree) of the two ends. Memory: 56 bytes and a mark byte a
// node, plus 4 bytes a direction per edge in the nodes' vectors.
#ifndef LOCKGRAPH_GRAPH_WAIT_FOR_GRAPH_H_
#define LOCKGRAPH_GRAPH_WAIT_FOR_GRAPH_H_

#include <cstdint>
#include <vector>

namespace lockgraph::graph {
namespace internal {
class ImageWriter;
class ImageReader;
}  // namespace internal

class WaitForGraph {
 public:
  using Node = std::uint32_t;

  WaitForGraph() = default;

  // Makes sure ids [0, n) exist. Cheap to call with a smaller n.
  void Reserve(Node n);
  // Number of node slots (the largest id used + 1).
  Node NodeCount() const { return static_cast<Node>(nodes_.size()); }

  // Inserts x->y and returns true if that keeps the graph acyclic, or if the edge is
  // already there. Returns false, changing nothing, when y already reaches x
  // (including x == y).
  bool InsertEdge(Node x, Node y);
  // Removes x->y if present. Returns whether it was present.
  bool RemoveEdge(Node x, Node y);
  bool HasEdge(Node x, Node y) const;

  // REQUIRES: node has no edges. Lets a later node reuse the slot's order value.
  void RemoveNode(Node n);

  // A path from x to y (both included) along edges, or empty if y is unreachable
  // from x. The path is a shortest one only by accident; it is deterministic.
  std::vector<Node> FindPath(Node x, Node y) const;
  bool IsReachable(Node x, Node y) const;

  const std::vector<Node>& OutEdges(Node n) const { return nodes_[n].out; }
  const std::vector<Node>& InEdges(Node n) const { return nodes_[n].in; }
  std::size_t EdgeCount() const { return edges_; }

  // Invariant check for tests: every edge goes forward in the kept order.
  bool CheckInvariants() const;

  // The exact state (ranks, adjacency lists in their order), for Coordinator images:
  // a graph loaded from an image takes the same decisions as the one saved. Load
  // replaces the contents; bad input is reported through the reader (and checked:
  // ids in range, each edge in both lists, every edge forward in the order).
  void SaveImage(internal::ImageWriter& w) const;
  void LoadImage(internal::ImageReader& r);

 private:
  struct NodeInfo {
    std::int64_t rank = 0;  // position in the topological order (sparse values)
    std::vector<Node> out;  // successors
    std::vector<Node> in;   // predecessors
  };

  bool ForwardSearch(Node n, std::int64_t upper);  // false when it reaches upper's node
  void BackwardSearch(Node n, std::int64_t lower);
  void Reorder();
  void ClearMarks();

  std::vector<NodeInfo> nodes_;
  std::vector<std::uint8_t> visited_;  // search marks, cleared after each search
  std::vector<Node> delta_f_, delta_b_, stack_, marked_;
  std::vector<std::int64_t> merged_ranks_;
  std::int64_t next_rank_ = 0;  // above every rank in use
  std::int64_t min_rank_ = 0;   // at or below every rank in use
  std::size_t edges_ = 0;
};

}  // namespace lockgraph::graph

#endif  // LOCKGRAPH_GRAPH_WAIT_FOR_GRAPH_H_
