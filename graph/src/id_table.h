// IdTable: an open-addressing hash index from keys that live elsewhere to dense
// uint32 ids. It stores 8 bytes a slot (a 32-bit hash tag and the id) and asks the
// caller to compare keys, so a name is stored once, in its record, and an insert or
// erase allocates only when the table grows.
//
// Linear probing with backward-shift deletion (no tombstones); capacity is a power
// of two kept at most 7/10 full.
#ifndef LOCKGRAPH_GRAPH_SRC_ID_TABLE_H_
#define LOCKGRAPH_GRAPH_SRC_ID_TABLE_H_

#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

namespace lockgraph::graph::internal {

inline std::uint32_t HashTag(std::uint64_t x) {
  // splitmix64's finaliser: every input bit reaches every output bit.
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return static_cast<std::uint32_t>(x);
}

inline std::uint32_t HashTag(std::string_view s) {
  // Eight bytes a step, each folded in with a multiply; the tail likewise; then mixed.
  std::uint64_t h = 0x9e3779b97f4a7c15ULL ^ s.size();
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  if (i < s.size()) {
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
  }
  return HashTag(h);
}

class IdTable {
 public:
  static constexpr std::uint32_t kNone = UINT32_MAX;

  // The id whose key `eq(id)` accepts, among those with this tag, or kNone.
  template <typename Eq>
  std::uint32_t Find(std::uint32_t tag, Eq eq) const {
    if (slots_.empty()) return kNone;
    for (std::size_t i = tag & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id == kNone) return kNone;
      if (s.tag == tag && eq(s.id)) return s.id;
    }
  }

  // REQUIRES: no id with an equal key is present.
  void Insert(std::uint32_t tag, std::uint32_t id) {
    if ((size_ + 1) * 10 > slots_.size() * 7) Grow();
    Place(tag, id);
    ++size_;
  }

  // Removes the id whose key `eq` accepts; returns whether it was there.
  template <typename Eq>
  bool Erase(std::uint32_t tag, Eq eq) {
    if (slots_.empty()) return false;
    std::size_t i = tag & mask_;
    for (;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id == kNone) return false;
      if (s.tag == tag && eq(s.id)) break;
    }
    // Backward shift: pull later entries of the run into the hole when their home
    // position does not lie strictly between the hole and themselves.
    for (std::size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      Slot& s = slots_[j];
      if (s.id == kNone) break;
      const std::size_t home = s.tag & mask_;
      const bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
      if (stays) continue;
      slots_[i] = s;
      i = j;
    }
    slots_[i] = Slot{};
    --size_;
    return true;
  }

  std::size_t size() const { return size_; }
  std::size_t bytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  struct Slot {
    std::uint32_t tag = 0;
    std::uint32_t id = kNone;
  };

  void Place(std::uint32_t tag, std::uint32_t id) {
    std::size_t i = tag & mask_;
    while (slots_[i].id != kNone) i = (i + 1) & mask_;
    slots_[i] = Slot{tag, id};
  }

  void Grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.id != kNone) Place(s.tag, s.id);
    }
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace lockgraph::graph::internal

#endif  // LOCKGRAPH_GRAPH_SRC_ID_TABLE_H_
