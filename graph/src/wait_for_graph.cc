// Pearce and Kelly, "A Dynamic Topological Sort Algorithm for Directed Acyclic
// Graphs", JEA 2007; the same scheme as abseil's GraphCycles.
//
// Every node has a rank; every edge goes from a lower rank to a higher one. An edge
// x->y with rank(x) < rank(y) keeps that true and is simply added. Otherwise the
// nodes that could be out of order lie between rank(y) and rank(x): a forward search
// from y bounded by rank(x) finds those reachable from y (meeting x means a cycle),
// a backward search from x bounded by rank(y) finds those reaching x, and their
// ranks are redistributed so that all of the second set precede all of the first.
#include "lockgraph/graph/wait_for_graph.h"

#include <algorithm>
#include <cassert>
#include <unordered_map>

#include "image_codec.h"

namespace lockgraph::graph {
namespace {

bool Contains(const std::vector<WaitForGraph::Node>& v, WaitForGraph::Node n) {
  return std::find(v.begin(), v.end(), n) != v.end();
}

void Erase(std::vector<WaitForGraph::Node>& v, WaitForGraph::Node n) {
  auto it = std::find(v.begin(), v.end(), n);
  assert(it != v.end());
  *it = v.back();
  v.pop_back();
}

}  // namespace

void WaitForGraph::Reserve(Node n) {
  while (nodes_.size() < n) {
    nodes_.emplace_back();
    nodes_.back().rank = next_rank_++;
    visited_.push_back(0);
  }
}

bool WaitForGraph::HasEdge(Node x, Node y) const {
  if (x >= nodes_.size() || y >= nodes_.size()) return false;
  return Contains(nodes_[x].out, y);
}

bool WaitForGraph::InsertEdge(Node x, Node y) {
  if (x == y) return false;
  Reserve(std::max(x, y) + 1);
  NodeInfo& nx = nodes_[x];
  if (Contains(nx.out, y)) return true;
  NodeInfo& ny = nodes_[y];
  if (nx.rank > ny.rank) {
    // A node without edges may take any rank: move it to the end that fits. This is
    // the common case of an owner seen for the first time waiting on an older holder.
    if (nx.out.empty() && nx.in.empty()) {
      nx.rank = --min_rank_;
    } else if (ny.out.empty() && ny.in.empty()) {
      ny.rank = next_rank_++;
    }
  }
  if (nx.rank < ny.rank) {
    nx.out.push_back(y);
    nodes_[y].in.push_back(x);
    ++edges_;
    return true;
  }
  // x comes after y: is x reachable from y?
  if (!ForwardSearch(y, nx.rank)) {
    ClearMarks();
    return false;
  }
  BackwardSearch(x, nodes_[y].rank);
  Reorder();
  nodes_[x].out.push_back(y);
  nodes_[y].in.push_back(x);
  ++edges_;
  return true;
}

bool WaitForGraph::RemoveEdge(Node x, Node y) {
  if (!HasEdge(x, y)) return false;
  Erase(nodes_[x].out, y);
  Erase(nodes_[y].in, x);
  --edges_;
  return true;
}

void WaitForGraph::RemoveNode(Node n) {
  assert(n < nodes_.size());
  assert(nodes_[n].out.empty() && nodes_[n].in.empty());
  // The rank stays: any rank is a valid position for a node without edges.
  nodes_[n].out.shrink_to_fit();
  nodes_[n].in.shrink_to_fit();
}

bool WaitForGraph::ForwardSearch(Node n, std::int64_t upper) {
  delta_f_.clear();
  stack_.clear();
  stack_.push_back(n);
  while (!stack_.empty()) {
    Node m = stack_.back();
    stack_.pop_back();
    if (visited_[m]) continue;
    visited_[m] = 1;
    marked_.push_back(m);
    delta_f_.push_back(m);
    for (Node w : nodes_[m].out) {
      std::int64_t r = nodes_[w].rank;
      if (r == upper) return false;  // reached x: cycle
      if (!visited_[w] && r < upper) stack_.push_back(w);
    }
  }
  return true;
}

void WaitForGraph::BackwardSearch(Node n, std::int64_t lower) {
  delta_b_.clear();
  stack_.clear();
  stack_.push_back(n);
  while (!stack_.empty()) {
    Node m = stack_.back();
    stack_.pop_back();
    if (visited_[m]) continue;
    visited_[m] = 1;
    marked_.push_back(m);
    delta_b_.push_back(m);
    for (Node w : nodes_[m].in) {
      if (!visited_[w] && nodes_[w].rank > lower) stack_.push_back(w);
    }
  }
}

void WaitForGraph::Reorder() {
  auto by_rank = [this](Node a, Node b) { return nodes_[a].rank < nodes_[b].rank; };
  std::sort(delta_b_.begin(), delta_b_.end(), by_rank);
  std::sort(delta_f_.begin(), delta_f_.end(), by_rank);
  merged_ranks_.clear();
  for (Node n : delta_b_) merged_ranks_.push_back(nodes_[n].rank);
  for (Node n : delta_f_) merged_ranks_.push_back(nodes_[n].rank);
  // Two sorted runs: merging is linear (a full sort hits a bad case on this shape).
  std::inplace_merge(merged_ranks_.begin(),
                     merged_ranks_.begin() + static_cast<std::ptrdiff_t>(delta_b_.size()),
                     merged_ranks_.end());
  std::size_t i = 0;
  for (Node n : delta_b_) nodes_[n].rank = merged_ranks_[i++];
  for (Node n : delta_f_) nodes_[n].rank = merged_ranks_[i++];
  ClearMarks();
}

void WaitForGraph::ClearMarks() {
  for (Node n : marked_) visited_[n] = 0;
  marked_.clear();
}

std::vector<WaitForGraph::Node> WaitForGraph::FindPath(Node x, Node y) const {
  std::vector<Node> path;
  if (x == y) return {x};
  if (x >= nodes_.size() || y >= nodes_.size()) return path;
  // Every edge goes up in rank, so only nodes ranked between x and y can be on a path.
  const std::int64_t upper = nodes_[y].rank;
  if (nodes_[x].rank > upper) return path;
  std::unordered_map<Node, Node> parent;  // visited node -> predecessor
  parent.emplace(x, x);
  std::vector<Node> stack{x};
  bool found = false;
  while (!stack.empty() && !found) {
    Node m = stack.back();
    stack.pop_back();
    for (Node w : nodes_[m].out) {
      if (nodes_[w].rank > upper || parent.count(w)) continue;
      parent.emplace(w, m);
      if (w == y) {
        found = true;
        break;
      }
      stack.push_back(w);
    }
  }
  if (!found) return path;
  for (Node n = y; n != x; n = parent[n]) path.push_back(n);
  path.push_back(x);
  std::reverse(path.begin(), path.end());
  return path;
}

bool WaitForGraph::IsReachable(Node x, Node y) const { return !FindPath(x, y).empty(); }

bool WaitForGraph::CheckInvariants() const {
  std::size_t count = 0;
  for (Node n = 0; n < nodes_.size(); ++n) {
    for (Node w : nodes_[n].out) {
      if (nodes_[n].rank >= nodes_[w].rank) return false;
      if (!Contains(nodes_[w].in, n)) return false;
      ++count;
    }
    for (Node w : nodes_[n].in) {
      if (!Contains(nodes_[w].out, n)) return false;
    }
  }
  for (std::uint8_t v : visited_) {
    if (v) return false;
  }
  return count == edges_;
}

void WaitForGraph::SaveImage(internal::ImageWriter& w) const {
  w.U32(static_cast<std::uint32_t>(nodes_.size()));
  for (const NodeInfo& n : nodes_) {
    w.I64(n.rank);
    w.U32(static_cast<std::uint32_t>(n.out.size()));
    for (Node x : n.out) w.U32(x);
    w.U32(static_cast<std::uint32_t>(n.in.size()));
    for (Node x : n.in) w.U32(x);
  }
  w.I64(next_rank_);
  w.I64(min_rank_);
}

void WaitForGraph::LoadImage(internal::ImageReader& r) {
  *this = WaitForGraph();
  const std::uint32_t n = r.Count(16, "wait-for graph nodes");
  nodes_.resize(n);
  visited_.assign(n, 0);
  std::size_t out_edges = 0, in_edges = 0;
  for (NodeInfo& node : nodes_) {
    node.rank = r.I64();
    for (std::vector<Node>* list : {&node.out, &node.in}) {
      const std::uint32_t d = r.Count(4, "wait-for graph adjacency");
      list->reserve(d);
      for (std::uint32_t i = 0; i < d && r.ok(); ++i) {
        const Node x = r.U32();
        if (x >= n || Contains(*list, x)) r.Fail("wait-for graph: edge to node " + std::to_string(x) + " out of range or repeated");
        list->push_back(x);
      }
    }
    out_edges += node.out.size();
    in_edges += node.in.size();
  }
  next_rank_ = r.I64();
  min_rank_ = r.I64();
  if (!r.ok()) return;
  std::vector<std::int64_t> ranks;
  ranks.reserve(n);
  for (const NodeInfo& node : nodes_) {
    if (node.rank >= next_rank_ || node.rank < min_rank_) return r.Fail("wait-for graph: a rank outside the range in use");
    ranks.push_back(node.rank);
  }
  std::sort(ranks.begin(), ranks.end());
  if (std::adjacent_find(ranks.begin(), ranks.end()) != ranks.end()) return r.Fail("wait-for graph: two nodes share a rank");
  if (out_edges != in_edges) return r.Fail("wait-for graph: in- and out-lists disagree");
  edges_ = out_edges;
  if (!CheckInvariants()) r.Fail("wait-for graph: an edge goes against the order");
}

}  // namespace lockgraph::graph
