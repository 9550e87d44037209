#include "lockgraph/graph/types.h"

#include <array>

namespace lockgraph::graph {
namespace {

constexpr std::array<std::string_view, 13> kCodeNames = {
    "OK",        "BAD_REQUEST",     "UNKNOWN_SESSION", "AUTH",  "NOT_OWNER",
    "DEADLOCK",  "ORDER_VIOLATION", "TIMEOUT",         "CANCELLED", "GRACE",
    "NOT_LEADER", "LIMIT",          "INTERNAL",
};

}  // namespace

std::string_view ModeName(Mode m) { return m == Mode::kShared ? "S" : "X"; }

std::optional<Mode> ParseMode(std::string_view s) {
  if (s == "S") return Mode::kShared;
  if (s == "X") return Mode::kExclusive;
  return std::nullopt;
}

std::string_view CodeName(Code c) {
  auto i = static_cast<std::size_t>(c);
  return i < kCodeNames.size() ? kCodeNames[i] : "INTERNAL";
}

std::optional<Code> ParseCode(std::string_view s) {
  for (std::size_t i = 0; i < kCodeNames.size(); ++i) {
    if (kCodeNames[i] == s) return static_cast<Code>(i);
  }
  return std::nullopt;
}

}  // namespace lockgraph::graph
