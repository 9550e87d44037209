// ImageWriter / ImageReader: the byte layout of a Coordinator image (snapshot).
//
// Little-endian fixed-width integers and u32-length-prefixed byte strings, nothing
// else. The reader never reads past its input: every read checks the bytes left,
// and a count is refused unless that many elements of at least `min_bytes` each can
// still follow, so garbage cannot make it allocate more than the input's size. The
// first failure is kept (later reads return zeros) and named by error().
#ifndef LOCKGRAPH_GRAPH_SRC_IMAGE_CODEC_H_
#define LOCKGRAPH_GRAPH_SRC_IMAGE_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace lockgraph::graph::internal {

class ImageWriter {
 public:
  explicit ImageWriter(std::string& out) : out_(out) {}
  void U8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void Bool(bool v) { U8(v ? 1 : 0); }
  void U32(std::uint32_t v) { Fixed(v, 4); }
  void U64(std::uint64_t v) { Fixed(v, 8); }
  void I64(std::int64_t v) { Fixed(static_cast<std::uint64_t>(v), 8); }
  void I32(std::int32_t v) { Fixed(static_cast<std::uint32_t>(v), 4); }
  void Str(std::string_view s) {
    U32(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }

 private:
  void Fixed(std::uint64_t v, int bytes) {
    char b[8];
    for (int i = 0; i < bytes; ++i) b[i] = static_cast<char>(v >> (8 * i));
    out_.append(b, static_cast<std::size_t>(bytes));
  }
  std::string& out_;
};

class ImageReader {
 public:
  explicit ImageReader(std::string_view in) : in_(in) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  std::size_t left() const { return in_.size() - pos_; }
  bool done() const { return pos_ == in_.size(); }
  // Records the first problem; reads after it return zeros.
  void Fail(std::string what) {
    if (error_.empty()) error_ = std::move(what) + " (at byte " + std::to_string(pos_) + ")";
  }

  std::uint8_t U8() { return static_cast<std::uint8_t>(Fixed(1, "u8")); }
  bool Bool() {
    const std::uint8_t v = U8();
    if (v > 1) Fail("a flag is " + std::to_string(v) + ", not 0 or 1");
    return v == 1;
  }
  std::uint32_t U32() { return static_cast<std::uint32_t>(Fixed(4, "u32")); }
  std::int32_t I32() { return static_cast<std::int32_t>(U32()); }
  std::uint64_t U64() { return Fixed(8, "u64"); }
  std::int64_t I64() { return static_cast<std::int64_t>(U64()); }
  std::string Str() {
    const std::uint32_t n = U32();
    if (!ok()) return {};
    if (n > left()) {
      Fail("a string of " + std::to_string(n) + " bytes with " + std::to_string(left()) + " left");
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  // A count of elements that take at least `min_bytes` each in what follows.
  std::uint32_t Count(std::size_t min_bytes, std::string_view what) {
    const std::uint32_t n = U32();
    if (ok() && std::uint64_t{n} * (min_bytes == 0 ? 1 : min_bytes) > left()) {
      Fail(std::string(what) + ": " + std::to_string(n) + " entries cannot fit in the " +
           std::to_string(left()) + " bytes left");
      return 0;
    }
    return ok() ? n : 0;
  }

 private:
  std::uint64_t Fixed(std::size_t bytes, const char* what) {
    if (!ok()) return 0;
    if (left() < bytes) {
      Fail(std::string("truncated: a ") + what + " with " + std::to_string(left()) + " bytes left");
      return 0;
    }
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < bytes; ++i) {
      v |= std::uint64_t{static_cast<unsigned char>(in_[pos_ + i])} << (8 * i);
    }
    pos_ += bytes;
    return v;
  }
  std::string_view in_;
  std::size_t pos_ = 0;
  std::string error_;
};

}  // namespace lockgraph::graph::internal

#endif  // LOCKGRAPH_GRAPH_SRC_IMAGE_CODEC_H_
