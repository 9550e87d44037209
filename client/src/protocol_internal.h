// What the two encodings of the protocol share: the fields of a request, which op
// needs which (the table is FieldsOf() in protocol.cc, documented at the top of
// protocol_json.cc), and the checks every decoded request goes through. Keeping one
// table and one validator is what makes a JSON frame and a binary frame of the same
// request succeed or fail alike.
#ifndef LOCKGRAPH_CLIENT_SRC_PROTOCOL_INTERNAL_H_
#define LOCKGRAPH_CLIENT_SRC_PROTOCOL_INTERNAL_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "lockgraph/protocol.h"

namespace lockgraph::protocol::internal {

// The fields a request can carry. The numeric values are the bit numbers of the
// binary encoding's presence mask: append, never renumber.
enum class Field : std::uint8_t {
  kSession,         // "session": session-scoped ops (not batch items)
  kSecret,          // "secret": session-scoped ops (not batch items)
  kAckedSeq,        // "acked_seq": any op, optional
  kClient,          // "client"
  kPriority,        // "priority"
  kLabels,          // "labels"
  kTtlMs,           // "ttl_ms"
  kOwner,           // "owner"
  kResource,        // "resource"
  kMode,            // "mode"
  kWaitMs,          // "wait_ms"
  kSite,            // "site"
  kStarted,         // "started"
  kLease,           // "lease"
  kHolds,           // "holds"
  kItems,           // "items"
  kAdminToken,      // "admin_token"
  kFormat,          // "format"
  kFilterOwner,     // "owner" of the queries
  kFilterResource,  // "resource" of the queries
  kFilterSession,   // "session" of the queries
};
inline constexpr int kFieldCount = 21;
using FieldMask = std::uint32_t;
inline constexpr FieldMask kAllFields = (FieldMask{1} << kFieldCount) - 1;
inline constexpr FieldMask Bit(Field f) { return FieldMask{1} << static_cast<int>(f); }

enum class Need : std::uint8_t { kRequired, kOptional };
struct FieldUse {
  Field field;
  Need need;
};

// The op's own fields, in the order JSON writes them. Session, secret and
// acked_seq are not listed: they depend on IsSessionScoped and on batch nesting.
std::span<const FieldUse> FieldsOf(Op op);
std::string_view WireName(Field field);

// The fields an encoder writes for `request`: required ones always (an unset
// std::optional excepted: there is nothing to write), optional ones when they differ
// from their default. `is_item`: a batch item, which carries no session or secret.
FieldMask FieldsToWrite(const Request& request, bool is_item);

// Resets the fields `op` does not read to their defaults, so that a binary frame
// that carries extra fields decodes to the same Request as JSON, which ignores them.
// Only the fields in `set` are looked at: the others must hold their defaults.
void ClearUnusedFields(Request& request, bool is_item, FieldMask set);

// The checks every decoded request goes through whatever its encoding: required
// fields present (`present`), either-or rules (release, revoke), the graph format,
// UTF-8 and Limits on names, batch size and nesting. Does not look into `items`
// (each item is checked as it is decoded). Returns the first problem found.
std::optional<DecodeError> CheckRequest(const Request& request, FieldMask present,
                                        const Limits& limits, bool is_item);

bool IsValidUtf8(std::string_view s);
// `s` with every invalid UTF-8 sequence replaced by U+FFFD, so that an encoder
// never writes JSON its own decoder would refuse.
std::string SanitizeUtf8(std::string_view s);

// A lease or token on the JSON wire: 1 to 20 decimal digits, at most 2^64 - 1.
std::optional<std::uint64_t> ParseDecimal(std::string_view s);

std::optional<graph::RevokeReason> ParseRevokeReason(std::string_view s);
std::optional<graph::VictimStep> ParseVictimStep(std::string_view s);
std::optional<EventKind> ParseEventKind(std::string_view s);

DecodeError BadRequest(std::string message, std::uint64_t id = 0);

// Per encoding. Frame-size limits are applied by the caller (protocol.cc).
std::string EncodeRequestJson(const Request& request);
std::string EncodeReplyJson(const Reply& reply);
std::string EncodeEventJson(const Event& event);
std::variant<Request, DecodeError> DecodeRequestJson(std::string_view frame,
                                                     const Limits& limits);
std::variant<ServerMessage, DecodeError> DecodeServerMessageJson(std::string_view frame);

std::string EncodeRequestBinary(const Request& request);
std::string EncodeReplyBinary(const Reply& reply);
std::string EncodeEventBinary(const Event& event);
std::variant<Request, DecodeError> DecodeRequestBinary(std::string_view frame,
                                                       const Limits& limits);
std::variant<ServerMessage, DecodeError> DecodeServerMessageBinary(std::string_view frame);

}  // namespace lockgraph::protocol::internal

#endif  // LOCKGRAPH_CLIENT_SRC_PROTOCOL_INTERNAL_H_
