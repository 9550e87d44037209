// Vocabulary shared by every part of the core: modes, error codes, time.
//
// Time in the core is always an argument (microseconds on a clock chosen by the
// caller, which must not go backwards); nothing here reads a clock.
#ifndef LOCKGRAPH_GRAPH_TYPES_H_
#define LOCKGRAPH_GRAPH_TYPES_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace lockgraph::graph {

using TimeUs = std::int64_t;   // microseconds on the caller's monotonic clock
using LeaseId = std::uint64_t; // the token of a lease's first grant; never reused
using Token = std::uint64_t;   // fencing token: epoch << 40 | seq

inline constexpr int kSeqBits = 40;
inline constexpr std::uint64_t kSeqLimit = std::uint64_t{1} << kSeqBits;
inline constexpr std::uint32_t kEpochLimit = (std::uint32_t{1} << 24) - 1;
inline constexpr TimeUs kNever = INT64_MAX;

// Lock modes. Two shared holds are compatible; anything with an exclusive is not.
enum class Mode : std::uint8_t { kShared, kExclusive };

inline constexpr bool Compatible(Mode a, Mode b) {
  return a == Mode::kShared && b == Mode::kShared;
}
// True when holding `held` already satisfies a request for `want`.
inline constexpr bool Covers(Mode held, Mode want) {
  return held == Mode::kExclusive || want == Mode::kShared;
}
std::string_view ModeName(Mode m);                  // "S" or "X"
std::optional<Mode> ParseMode(std::string_view s);  // "S"/"X", else nullopt

// The error codes of the wire protocol (PROTOCOL.md). kOk is success.
enum class Code : std::uint8_t {
  kOk,
  kBadRequest,
  kUnknownSession,
  kAuth,
  kNotOwner,
  kDeadlock,
  kOrderViolation,
  kTimeout,
  kCancelled,
  kGrace,
  kNotLeader,
  kLimit,
  kInternal,
};
std::string_view CodeName(Code c);  // "BAD_REQUEST", ...; "OK" for kOk
std::optional<Code> ParseCode(std::string_view s);

}  // namespace lockgraph::graph

#endif  // LOCKGRAPH_GRAPH_TYPES_H_
