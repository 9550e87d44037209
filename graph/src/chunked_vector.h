// ChunkedVector: a growable array in fixed chunks of 2^kShift elements. Elements
// never move, growth never copies, and indexing is a shift and a mask: the layout
// for tables of a million records where std::vector's doubling would leave up to
// half its memory unused and std::deque indexes with a division.
#ifndef LOCKGRAPH_GRAPH_SRC_CHUNKED_VECTOR_H_
#define LOCKGRAPH_GRAPH_SRC_CHUNKED_VECTOR_H_

#include <cstddef>
#include <memory>
#include <vector>

namespace lockgraph::graph::internal {

template <typename T, unsigned kShift = 8>
class ChunkedVector {
 public:
  static constexpr std::size_t kChunk = std::size_t{1} << kShift;

  T& operator[](std::size_t i) { return chunks_[i >> kShift][i & (kChunk - 1)]; }
  const T& operator[](std::size_t i) const { return chunks_[i >> kShift][i & (kChunk - 1)]; }
  std::size_t size() const { return size_; }

  // Appends a default-constructed element and returns it.
  T& emplace_back() {
    if ((size_ >> kShift) == chunks_.size()) chunks_.push_back(std::make_unique<T[]>(kChunk));
    return (*this)[size_++];
  }

 private:
  std::vector<std::unique_ptr<T[]>> chunks_;
  std::size_t size_ = 0;
};

}  // namespace lockgraph::graph::internal

#endif  // LOCKGRAPH_GRAPH_SRC_CHUNKED_VECTOR_H_
