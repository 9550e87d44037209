// cereal's portable binary layout, written and read in place: the one codec under the
// binary wire encoding (protocol_binary.cc) and the journal's records (daemon/journal.cc).
//
// Numbers are fixed-width in the writer's byte order, which a one-byte flag before them
// names (1: little-endian; the caller writes and checks that flag, since it leads
// different headers); strings are a u64 size and their bytes. That is what cereal's
// PortableBinaryOutputArchive writes with its default options, and protocol_test and
// journal_test check it against cereal itself. It is done here rather than by cereal's
// archives because their streams cost more per message than serving the message, and
// because cereal sizes a string from a garbage length before noticing the input is short.
//
// The reader never reads past its input: a read that would throws ShortInput, and a
// string or a count that cannot fit in the bytes left is refused before anything is
// allocated. Each caller words those failures in its own terms.
#ifndef LOCKGRAPH_PORTABLE_BINARY_H_
#define LOCKGRAPH_PORTABLE_BINARY_H_

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace lockgraph::portable {

// The byte-order flag of what Writer writes.
inline constexpr std::uint8_t kLittleEndian = 1;

// Appends to `out`, which may already hold other bytes (a header, earlier records).
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void U8(std::uint8_t v) { Put(v); }
  void U32(std::uint32_t v) { Put(v); }
  void U64(std::uint64_t v) { Put(v); }
  void I32(std::int32_t v) { Put(v); }
  void I64(std::int64_t v) { Put(v); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  void Str(std::string_view s) {
    U64(s.size());
    out_.append(s);
  }

 private:
  template <typename T>
  void Put(T v) {
    char bytes[sizeof(T)];
    std::memcpy(bytes, &v, sizeof(T));
    if constexpr (std::endian::native != std::endian::little) std::reverse(bytes, bytes + sizeof(T));
    out_.append(bytes, sizeof(T));
  }
  std::string& out_;
};

// What a Reader refuses. `size` is the claimed string size or element count (kShort:
// the bytes a read wanted).
struct ShortInput {
  enum class Kind { kShort, kString, kCount } kind = Kind::kShort;
  std::uint64_t size = 0;
};

class Reader {
 public:
  // `bytes` follows the byte-order flag; `flag` is that flag (0 or 1, checked by the caller).
  Reader(std::string_view bytes, std::uint8_t flag)
      : data_(bytes), swap_((flag == kLittleEndian) != (std::endian::native == std::endian::little)) {}

  std::uint8_t U8() { return Get<std::uint8_t>(); }
  std::uint32_t U32() { return Get<std::uint32_t>(); }
  std::uint64_t U64() { return Get<std::uint64_t>(); }
  std::int32_t I32() { return Get<std::int32_t>(); }
  std::int64_t I64() { return Get<std::int64_t>(); }
  std::string Str() {
    const std::uint64_t size = U64();
    if (size > left()) throw ShortInput{ShortInput::Kind::kString, size};
    std::string s(data_.substr(at_, static_cast<std::size_t>(size)));
    at_ += static_cast<std::size_t>(size);
    return s;
  }
  // A u32 count of elements that take at least `min_bytes` (> 0) each in what follows.
  std::uint32_t Count(std::size_t min_bytes) {
    const std::uint32_t n = U32();
    if (n > left() / min_bytes) throw ShortInput{ShortInput::Kind::kCount, n};
    return n;
  }
  std::size_t left() const { return data_.size() - at_; }

 private:
  template <typename T>
  T Get() {
    if (left() < sizeof(T)) throw ShortInput{ShortInput::Kind::kShort, sizeof(T)};
    char bytes[sizeof(T)];
    std::memcpy(bytes, data_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    if (swap_) std::reverse(bytes, bytes + sizeof(T));
    T v;
    std::memcpy(&v, bytes, sizeof(T));
    return v;
  }
  std::string_view data_;
  std::size_t at_ = 0;
  bool swap_;
};

}  // namespace lockgraph::portable

#endif  // LOCKGRAPH_PORTABLE_BINARY_H_
