// What one wait-for edge costs: WaitForGraph (Pearce–Kelly, keeps a topological
// order) against PlainDfs (the same adjacency lists, no order: each insert searches
// from y for x, bounded only by what y reaches).
//
// Every iteration inserts edges and removes them again, so the graph is the same
// before and after and the numbers do not drift. "edges/s" counts inserted (or
// refused) edges; "per_edge" is its inverse, the cost of one edge with its removal.
//
// Shapes:
//   ShortChains       `owners` owners in chains of kChainLength (owners waiting on each
//                     other in small groups). Edges join random chains among the first
//                     `active` owners. With active == owners nearly every edge lands in
//                     cold memory at 1M; with 1,000 active among many owners, what is
//                     left is what the algorithm pays for the unrelated owners.
//     InOrder         the new edge agrees with PK's order (an old chain waits for a
//                     newer one): O(1) for PK, a walk of y's chain for the DFS.
//     AgainstOrder    the edge goes against the order, so PK searches and reorders both
//                     chains; a second edge puts them back.
//     Closing         the edge closes a cycle within one chain and is refused.
//   LongChain         kLongChain owners in one chain, plus one owner off the chain:
//     OldWaiter       the off-chain owner comes first in PK's order: O(1) for PK, the
//                     whole chain for the DFS.
//     NewWaiter       the off-chain owner comes last: both walk the chain, and PK
//                     reorders it (twice, to restore the order).
//     Closing         tail -> head, refused: both walk the chain.
//   TwoChains         PK's worst case: an edge from one long chain's tail to another's
//                     head against the order moves both chains (and back again).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "lockgraph/graph/wait_for_graph.h"

namespace lockgraph::graph {
namespace {

using Node = WaitForGraph::Node;
using PearceKelly = WaitForGraph;

constexpr Node kChainLength = 4;
constexpr Node kLongChain = 10'000;
constexpr std::size_t kPairs = 1 << 16;

class PlainDfs {
 public:
  void Reserve(Node n) {
    if (nodes_.size() < n) {
      nodes_.resize(n);
      stamp_.resize(n, 0);
    }
  }

  bool InsertEdge(Node x, Node y) {
    if (x == y) return false;
    Reserve(std::max(x, y) + 1);
    if (Contains(nodes_[x].out, y)) return true;
    if (Reaches(y, x)) return false;
    nodes_[x].out.push_back(y);
    nodes_[y].in.push_back(x);
    return true;
  }

  bool RemoveEdge(Node x, Node y) {
    if (x >= nodes_.size() || !Contains(nodes_[x].out, y)) return false;
    Erase(nodes_[x].out, y);
    Erase(nodes_[y].in, x);
    return true;
  }

 private:
  struct NodeInfo {
    std::vector<Node> out;
    std::vector<Node> in;  // kept so that memory and removal match PearceKelly
  };

  static bool Contains(const std::vector<Node>& v, Node n) {
    return std::find(v.begin(), v.end(), n) != v.end();
  }

  static void Erase(std::vector<Node>& v, Node n) {
    auto it = std::find(v.begin(), v.end(), n);
    *it = v.back();
    v.pop_back();
  }

  // Marks are generation stamps, so a search never has to clear them.
  bool Reaches(Node from, Node to) {
    if (++generation_ == 0) {
      std::fill(stamp_.begin(), stamp_.end(), 0);
      generation_ = 1;
    }
    stack_.clear();
    stack_.push_back(from);
    stamp_[from] = generation_;
    while (!stack_.empty()) {
      const Node n = stack_.back();
      stack_.pop_back();
      for (Node w : nodes_[n].out) {
        if (w == to) return true;
        if (stamp_[w] != generation_) {
          stamp_[w] = generation_;
          stack_.push_back(w);
        }
      }
    }
    return false;
  }

  std::vector<NodeInfo> nodes_;
  std::vector<std::uint32_t> stamp_;
  std::vector<Node> stack_;
  std::uint32_t generation_ = 0;
};

Node Head(Node chain) { return chain * kChainLength; }
Node Tail(Node chain) { return chain * kChainLength + kChainLength - 1; }

// Nodes are created in id order and every edge goes up in id, so PK's order is the
// id order when the measurement starts.
template <class Graph>
bool BuildChain(Graph& g, Node first, Node length) {
  for (Node n = first; n + 1 < first + length; ++n) {
    if (!g.InsertEdge(n, n + 1)) return false;
  }
  return true;
}

template <class Graph>
bool BuildShortChains(Graph& g, Node nodes) {
  g.Reserve(nodes);
  for (Node chain = 0; chain < nodes / kChainLength; ++chain) {
    if (!BuildChain(g, Head(chain), kChainLength)) return false;
  }
  return true;
}

// Random pairs of distinct chains (lower, higher) among the first `active` owners,
// the same in every run.
std::vector<std::pair<Node, Node>> ChainPairs(Node active) {
  const Node chains = active / kChainLength;
  std::mt19937_64 rng(0x10c6'9a9f);
  std::vector<std::pair<Node, Node>> pairs;
  pairs.reserve(kPairs);
  while (pairs.size() < kPairs) {
    const Node a = static_cast<Node>(rng() % chains);
    const Node b = static_cast<Node>(rng() % chains);
    if (a != b) pairs.emplace_back(std::min(a, b), std::max(a, b));
  }
  return pairs;
}

void SetEdgeRate(benchmark::State& state, std::int64_t edges_per_iteration,
                 std::int64_t surprises) {
  if (surprises != 0) state.SkipWithError("an insert did not return what the shape implies");
  const auto edges = static_cast<double>(state.iterations() * edges_per_iteration);
  state.counters["edges/s"] = benchmark::Counter(edges, benchmark::Counter::kIsRate);
  // Seconds per edge: "65n" reads 65 ns.
  state.counters["per_edge"] =
      benchmark::Counter(edges, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

template <class Graph>
void ShortChainsInOrder(benchmark::State& state) {
  const Node nodes = static_cast<Node>(state.range(0));
  Graph g;
  if (!BuildShortChains(g, nodes)) state.SkipWithError("setup refused an edge");
  const auto pairs = ChainPairs(static_cast<Node>(state.range(1)));
  std::int64_t surprises = 0;
  std::size_t i = 0;
  for (auto _ : state) {
    const auto [low, high] = pairs[i++ % kPairs];
    surprises += !g.InsertEdge(Tail(low), Head(high));
    g.RemoveEdge(Tail(low), Head(high));
  }
  SetEdgeRate(state, 1, surprises);
}

template <class Graph>
void ShortChainsAgainstOrder(benchmark::State& state) {
  const Node nodes = static_cast<Node>(state.range(0));
  Graph g;
  if (!BuildShortChains(g, nodes)) state.SkipWithError("setup refused an edge");
  const auto pairs = ChainPairs(static_cast<Node>(state.range(1)));
  std::int64_t surprises = 0;
  std::size_t i = 0;
  for (auto _ : state) {
    // The later chain waits for the earlier one: PK moves the later chain ahead. The
    // second edge is then against the new order and moves it back.
    const auto [low, high] = pairs[i++ % kPairs];
    surprises += !g.InsertEdge(Tail(high), Head(low));
    g.RemoveEdge(Tail(high), Head(low));
    surprises += !g.InsertEdge(Tail(low), Head(high));
    g.RemoveEdge(Tail(low), Head(high));
  }
  SetEdgeRate(state, 2, surprises);
}

template <class Graph>
void ShortChainsClosing(benchmark::State& state) {
  const Node nodes = static_cast<Node>(state.range(0));
  Graph g;
  if (!BuildShortChains(g, nodes)) state.SkipWithError("setup refused an edge");
  const auto pairs = ChainPairs(static_cast<Node>(state.range(1)));
  std::int64_t surprises = 0;
  std::size_t i = 0;
  for (auto _ : state) {
    const Node chain = pairs[i++ % kPairs].first;
    surprises += g.InsertEdge(Tail(chain), Head(chain));
  }
  SetEdgeRate(state, 1, surprises);
}

// The chain is 1 .. kLongChain; node 0 was created before it.
template <class Graph>
void LongChainOldWaiter(benchmark::State& state) {
  Graph g;
  if (!BuildChain(g, 1, kLongChain)) state.SkipWithError("setup refused an edge");
  std::int64_t surprises = 0;
  for (auto _ : state) {
    surprises += !g.InsertEdge(0, 1);
    g.RemoveEdge(0, 1);
  }
  SetEdgeRate(state, 1, surprises);
}

// The chain is 0 .. kLongChain - 1; node kLongChain was created after it.
template <class Graph>
void LongChainNewWaiter(benchmark::State& state) {
  Graph g;
  if (!BuildChain(g, 0, kLongChain)) state.SkipWithError("setup refused an edge");
  g.Reserve(kLongChain + 1);
  const Node waiter = kLongChain;
  const Node tail = kLongChain - 1;
  std::int64_t surprises = 0;
  for (auto _ : state) {
    surprises += !g.InsertEdge(waiter, 0);
    g.RemoveEdge(waiter, 0);
    surprises += !g.InsertEdge(tail, waiter);
    g.RemoveEdge(tail, waiter);
  }
  SetEdgeRate(state, 2, surprises);
}

template <class Graph>
void LongChainClosing(benchmark::State& state) {
  Graph g;
  if (!BuildChain(g, 0, kLongChain)) state.SkipWithError("setup refused an edge");
  std::int64_t surprises = 0;
  for (auto _ : state) {
    surprises += g.InsertEdge(kLongChain - 1, 0);
  }
  SetEdgeRate(state, 1, surprises);
}

// Chains 0 .. K-1 and K .. 2K-1, K = kLongChain.
template <class Graph>
void TwoChains(benchmark::State& state) {
  Graph g;
  if (!BuildChain(g, 0, kLongChain) || !BuildChain(g, kLongChain, kLongChain)) {
    state.SkipWithError("setup refused an edge");
  }
  const Node first_head = 0;
  const Node first_tail = kLongChain - 1;
  const Node second_head = kLongChain;
  const Node second_tail = 2 * kLongChain - 1;
  std::int64_t surprises = 0;
  for (auto _ : state) {
    surprises += !g.InsertEdge(second_tail, first_head);
    g.RemoveEdge(second_tail, first_head);
    surprises += !g.InsertEdge(first_tail, second_head);
    g.RemoveEdge(first_tail, second_head);
  }
  SetEdgeRate(state, 2, surprises);
}

void Sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"owners", "active"});
  for (std::int64_t owners : {1'000, 100'000, 1'000'000}) {
    if (owners > 1'000) b->Args({owners, 1'000});
    b->Args({owners, owners});
  }
}

BENCHMARK_TEMPLATE(ShortChainsInOrder, PearceKelly)->Apply(Sizes);
BENCHMARK_TEMPLATE(ShortChainsInOrder, PlainDfs)->Apply(Sizes);
BENCHMARK_TEMPLATE(ShortChainsAgainstOrder, PearceKelly)->Apply(Sizes);
BENCHMARK_TEMPLATE(ShortChainsAgainstOrder, PlainDfs)->Apply(Sizes);
BENCHMARK_TEMPLATE(ShortChainsClosing, PearceKelly)->Apply(Sizes);
BENCHMARK_TEMPLATE(ShortChainsClosing, PlainDfs)->Apply(Sizes);
BENCHMARK_TEMPLATE(LongChainOldWaiter, PearceKelly);
BENCHMARK_TEMPLATE(LongChainOldWaiter, PlainDfs);
BENCHMARK_TEMPLATE(LongChainNewWaiter, PearceKelly);
BENCHMARK_TEMPLATE(LongChainNewWaiter, PlainDfs);
BENCHMARK_TEMPLATE(LongChainClosing, PearceKelly);
BENCHMARK_TEMPLATE(LongChainClosing, PlainDfs);
BENCHMARK_TEMPLATE(TwoChains, PearceKelly);
BENCHMARK_TEMPLATE(TwoChains, PlainDfs);

}  // namespace
}  // namespace lockgraph::graph

BENCHMARK_MAIN();
