// The encoding-neutral half of the protocol: names of ops and events, the table of
// which op reads which field, the checks every decoded request goes through, and the
// dispatch to the JSON (protocol_json.cc) and binary (protocol_binary.cc) encodings.
#include "lockgraph/protocol.h"

#include <array>
#include <string>

#include "protocol_internal.h"

namespace lockgraph::protocol {
namespace {

constexpr std::array<std::string_view, 17> kOpNames = {
    "hello",  "heartbeat", "bye",    "acquire", "renew", "release", "hold",   "wait",      "unwait",
    "reclaim", "batch",    "revoke", "graph",   "stats", "leases",  "deadlocks", "order",
};

constexpr std::array<std::string_view, 4> kEventNames = {"granted", "denied", "revoked",
                                                        "order_warning"};

}  // namespace

std::string_view OpName(Op op) {
  auto i = static_cast<std::size_t>(op);
  return i < kOpNames.size() ? kOpNames[i] : "unknown";
}

std::optional<Op> ParseOp(std::string_view name) {
  for (std::size_t i = 0; i < kOpNames.size(); ++i) {
    if (kOpNames[i] == name) return static_cast<Op>(i);
  }
  return std::nullopt;
}

bool IsSessionScoped(Op op) {
  switch (op) {
    // hello opens the session it would have to name; revoke is an operator's
    // action, authorised by admin_token; the queries read shared state.
    case Op::kHello:
    case Op::kRevoke:
    case Op::kGraph:
    case Op::kStats:
    case Op::kLeases:
    case Op::kDeadlocks:
    case Op::kOrder:
      return false;
    default:
      return true;
  }
}

std::string_view EventName(EventKind kind) {
  auto i = static_cast<std::size_t>(kind);
  return i < kEventNames.size() ? kEventNames[i] : "unknown";
}

Encoding EncodingOf(std::string_view frame) {
  return frame.empty() || frame.front() == '{' ? Encoding::kJson : Encoding::kBinary;
}

std::string EncodeRequest(const Request& request, Encoding encoding) {
  return encoding == Encoding::kJson ? internal::EncodeRequestJson(request)
                                     : internal::EncodeRequestBinary(request);
}

std::variant<Request, DecodeError> DecodeRequest(std::string_view frame, const Limits& limits) {
  // Checked before parsing: an oversize frame costs nothing to refuse. Its id is
  // not read, so the error carries id 0.
  if (frame.size() > limits.max_frame_bytes) {
    return DecodeError{Code::kLimit,
                       "frame of " + std::to_string(frame.size()) +
                           " bytes is over the limit of " +
                           std::to_string(limits.max_frame_bytes) + " bytes",
                       0};
  }
  return EncodingOf(frame) == Encoding::kJson ? internal::DecodeRequestJson(frame, limits)
                                              : internal::DecodeRequestBinary(frame, limits);
}

std::string EncodeReply(const Reply& reply, Encoding encoding) {
  return encoding == Encoding::kJson ? internal::EncodeReplyJson(reply)
                                     : internal::EncodeReplyBinary(reply);
}

std::string EncodeEvent(const Event& event, Encoding encoding) {
  return encoding == Encoding::kJson ? internal::EncodeEventJson(event)
                                     : internal::EncodeEventBinary(event);
}

std::variant<ServerMessage, DecodeError> DecodeServerMessage(std::string_view frame) {
  return EncodingOf(frame) == Encoding::kJson ? internal::DecodeServerMessageJson(frame)
                                              : internal::DecodeServerMessageBinary(frame);
}

namespace internal {
namespace {

constexpr FieldUse R(Field f) { return {f, Need::kRequired}; }
constexpr FieldUse O(Field f) { return {f, Need::kOptional}; }

// Which op reads which field: PROTOCOL.md's request table, where a field not marked
// optional and without a stated default is required. The top of protocol_json.cc
// has the same table with the rules that are not a matter of one field.
constexpr FieldUse kHelloFields[] = {R(Field::kClient), R(Field::kTtlMs),
                                     O(Field::kPriority), O(Field::kLabels)};
constexpr FieldUse kAcquireFields[] = {
    R(Field::kOwner),  R(Field::kResource), R(Field::kMode),   R(Field::kTtlMs),
    R(Field::kWaitMs), O(Field::kSite),     O(Field::kStarted)};
constexpr FieldUse kRenewFields[] = {R(Field::kLease), O(Field::kTtlMs)};
// Either the lease, or owner and resource (report mode): checked in CheckRequest.
constexpr FieldUse kReleaseFields[] = {O(Field::kLease), O(Field::kOwner),
                                       O(Field::kResource)};
constexpr FieldUse kHoldFields[] = {R(Field::kOwner), R(Field::kResource), R(Field::kMode),
                                    R(Field::kTtlMs), O(Field::kSite)};
constexpr FieldUse kWaitFields[] = {R(Field::kOwner), R(Field::kResource), R(Field::kMode),
                                    O(Field::kSite)};
constexpr FieldUse kUnwaitFields[] = {R(Field::kOwner), R(Field::kResource)};
constexpr FieldUse kReclaimFields[] = {R(Field::kHolds)};
constexpr FieldUse kBatchFields[] = {R(Field::kItems)};
// Either the lease or the resource: checked in CheckRequest.
constexpr FieldUse kRevokeFields[] = {R(Field::kAdminToken), O(Field::kLease),
                                      O(Field::kResource)};
constexpr FieldUse kGraphFields[] = {O(Field::kFormat)};
constexpr FieldUse kQueryFields[] = {O(Field::kFilterOwner), O(Field::kFilterResource),
                                     O(Field::kFilterSession)};

constexpr std::array<std::string_view, kFieldCount> kWireNames = {
    "session", "secret", "acked_seq", "client",  "priority", "labels",      "ttl_ms",
    "owner",   "resource", "mode",    "wait_ms", "site",     "started",     "lease",
    "holds",   "items",  "admin_token", "format", "owner",   "resource",    "session",
};

// Names are what Limits::max_name_bytes bounds; the other strings are bounded by
// the frame size alone.
bool IsName(Field f) {
  switch (f) {
    case Field::kSession:
    case Field::kClient:
    case Field::kOwner:
    case Field::kResource:
    case Field::kSite:
    case Field::kFilterOwner:
    case Field::kFilterResource:
    case Field::kFilterSession:
      return true;
    default:
      return false;
  }
}

const std::string* StringField(const Request& r, Field f) {
  switch (f) {
    case Field::kSession: return &r.session;
    case Field::kSecret: return &r.secret;
    case Field::kClient: return &r.client;
    case Field::kOwner: return &r.owner;
    case Field::kResource: return &r.resource;
    case Field::kSite: return &r.site;
    case Field::kAdminToken: return &r.admin_token;
    case Field::kFormat: return &r.format;
    case Field::kFilterOwner: return &r.filter_owner;
    case Field::kFilterResource: return &r.filter_resource;
    case Field::kFilterSession: return &r.filter_session;
    default: return nullptr;
  }
}

// Whether the field holds something to write at all (an unset optional does not).
bool HasValue(const Request& r, Field f) {
  switch (f) {
    case Field::kAckedSeq: return r.acked_seq.has_value();
    case Field::kTtlMs: return r.ttl_ms.has_value();
    case Field::kStarted: return r.started.has_value();
    case Field::kLease: return r.lease.has_value();
    default: return true;
  }
}

// Whether the field differs from the default a decoder gives when it is missing.
bool IsNonDefault(const Request& r, Field f) {
  static const Request kDefaults;
  switch (f) {
    case Field::kPriority: return r.priority != kDefaults.priority;
    case Field::kLabels: return !r.labels.empty();
    case Field::kMode: return r.mode != kDefaults.mode;
    case Field::kWaitMs: return r.wait_ms != kDefaults.wait_ms;
    case Field::kHolds: return !r.holds.empty();
    case Field::kItems: return !r.items.empty();
    case Field::kFormat: return r.format != kDefaults.format;
    default:
      if (const std::string* s = StringField(r, f)) return !s->empty();
      return HasValue(r, f);
  }
}

void ResetField(Request& r, Field f) {
  static const Request kDefaults;
  switch (f) {
    case Field::kSession: r.session.clear(); break;
    case Field::kSecret: r.secret.clear(); break;
    case Field::kAckedSeq: r.acked_seq.reset(); break;
    case Field::kClient: r.client.clear(); break;
    case Field::kPriority: r.priority = kDefaults.priority; break;
    case Field::kLabels: r.labels.clear(); break;
    case Field::kTtlMs: r.ttl_ms.reset(); break;
    case Field::kOwner: r.owner.clear(); break;
    case Field::kResource: r.resource.clear(); break;
    case Field::kMode: r.mode = kDefaults.mode; break;
    case Field::kWaitMs: r.wait_ms = kDefaults.wait_ms; break;
    case Field::kSite: r.site.clear(); break;
    case Field::kStarted: r.started.reset(); break;
    case Field::kLease: r.lease.reset(); break;
    case Field::kHolds: r.holds.clear(); break;
    case Field::kItems: r.items.clear(); break;
    case Field::kAdminToken: r.admin_token.clear(); break;
    case Field::kFormat: r.format = kDefaults.format; break;
    case Field::kFilterOwner: r.filter_owner.clear(); break;
    case Field::kFilterResource: r.filter_resource.clear(); break;
    case Field::kFilterSession: r.filter_session.clear(); break;
  }
}

// Every field `request` may carry, whether required or optional.
FieldMask UsedFields(Op op, bool is_item) {
  FieldMask used = Bit(Field::kAckedSeq);
  if (!is_item && IsSessionScoped(op)) used |= Bit(Field::kSession) | Bit(Field::kSecret);
  for (const FieldUse& use : FieldsOf(op)) used |= Bit(use.field);
  return used;
}

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

DecodeError Missing(Field f, std::uint64_t id) {
  return BadRequest("missing field " + Quoted(WireName(f)), id);
}

// UTF-8 and, for names, the length limit.
std::optional<DecodeError> CheckString(std::string_view what, std::string_view value,
                                       bool is_name, const Limits& limits,
                                       std::uint64_t id) {
  if (!IsValidUtf8(value)) return BadRequest("field " + Quoted(what) + ": invalid UTF-8", id);
  if (is_name && value.size() > limits.max_name_bytes) {
    return DecodeError{Code::kLimit,
                       "field " + Quoted(what) + ": " + std::to_string(value.size()) +
                           " bytes is over the limit of " +
                           std::to_string(limits.max_name_bytes) + " bytes",
                       id};
  }
  return std::nullopt;
}

// The length of the valid UTF-8 sequence at the start of `s`, or 0 if there is
// none. Refuses overlong forms, surrogates and code points past U+10FFFF (RFC 3629).
std::size_t Utf8SequenceLength(std::string_view s) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = byte(0);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  if (byte(1) < lo || byte(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

std::span<const FieldUse> FieldsOf(Op op) {
  switch (op) {
    case Op::kHello: return kHelloFields;
    case Op::kHeartbeat: return {};
    case Op::kBye: return {};
    case Op::kAcquire: return kAcquireFields;
    case Op::kRenew: return kRenewFields;
    case Op::kRelease: return kReleaseFields;
    case Op::kHold: return kHoldFields;
    case Op::kWait: return kWaitFields;
    case Op::kUnwait: return kUnwaitFields;
    case Op::kReclaim: return kReclaimFields;
    case Op::kBatch: return kBatchFields;
    case Op::kRevoke: return kRevokeFields;
    case Op::kGraph: return kGraphFields;
    case Op::kStats:
    case Op::kLeases:
    case Op::kDeadlocks:
      return kQueryFields;
    case Op::kOrder: return {};
  }
  return {};
}

std::string_view WireName(Field field) {
  auto i = static_cast<std::size_t>(field);
  return i < kWireNames.size() ? kWireNames[i] : "unknown";
}

FieldMask FieldsToWrite(const Request& request, bool is_item) {
  FieldMask mask = 0;
  if (request.acked_seq) mask |= Bit(Field::kAckedSeq);
  if (!is_item && IsSessionScoped(request.op)) {
    mask |= Bit(Field::kSession) | Bit(Field::kSecret);
  }
  for (const FieldUse& use : FieldsOf(request.op)) {
    bool write = use.need == Need::kRequired ? HasValue(request, use.field)
                                             : IsNonDefault(request, use.field);
    if (write) mask |= Bit(use.field);
  }
  return mask;
}

void ClearUnusedFields(Request& request, bool is_item, FieldMask set) {
  const FieldMask clear = set & ~UsedFields(request.op, is_item);
  if (clear == 0) return;
  for (int i = 0; i < kFieldCount; ++i) {
    auto f = static_cast<Field>(i);
    if (clear & Bit(f)) ResetField(request, f);
  }
}

std::optional<DecodeError> CheckRequest(const Request& request, FieldMask present,
                                        const Limits& limits, bool is_item) {
  const std::uint64_t id = request.id;
  const Op op = request.op;
  if (is_item && op == Op::kBatch) return BadRequest("nested batch: an item cannot be a batch", id);

  if (!is_item && IsSessionScoped(op)) {
    if (!(present & Bit(Field::kSession))) return Missing(Field::kSession, id);
    if (!(present & Bit(Field::kSecret))) return Missing(Field::kSecret, id);
  }
  for (const FieldUse& use : FieldsOf(op)) {
    if (use.need == Need::kRequired && !(present & Bit(use.field))) return Missing(use.field, id);
  }
  // An empty name counts as none here: the encoders leave out an empty optional
  // name, and a frame must mean the same after a decode and an encode.
  const bool has_lease = (present & Bit(Field::kLease)) != 0;
  const bool has_owner = (present & Bit(Field::kOwner)) && !request.owner.empty();
  const bool has_resource = (present & Bit(Field::kResource)) && !request.resource.empty();
  if (op == Op::kRelease && !has_lease && !(has_owner && has_resource)) {
    return BadRequest("release needs \"lease\", or \"owner\" and \"resource\"", id);
  }
  if (op == Op::kRevoke && !has_lease && !has_resource) {
    return BadRequest("revoke needs \"lease\" or \"resource\"", id);
  }
  if (op == Op::kGraph && request.format != "json" && request.format != "dot") {
    return BadRequest("field \"format\": expected \"json\" or \"dot\"", id);
  }
  if (op == Op::kBatch && request.items.size() > limits.max_batch_items) {
    return DecodeError{Code::kLimit,
                       "batch of " + std::to_string(request.items.size()) +
                           " items is over the limit of " +
                           std::to_string(limits.max_batch_items),
                       id};
  }

  // Binary frames carry raw bytes; JSON ones were checked by the parser already, but
  // one check for both keeps the encodings from drifting apart.
  FieldMask used = UsedFields(op, is_item);
  for (int i = 0; i < kFieldCount; ++i) {
    auto f = static_cast<Field>(i);
    const std::string* s = StringField(request, f);
    if (!s || !(used & Bit(f))) continue;
    if (auto e = CheckString(WireName(f), *s, IsName(f), limits, id)) return e;
  }
  if (used & Bit(Field::kLabels)) {
    for (const auto& [key, value] : request.labels) {
      if (auto e = CheckString("labels", key, true, limits, id)) return e;
      if (auto e = CheckString("labels." + key, value, true, limits, id)) return e;
    }
  }
  if (used & Bit(Field::kHolds)) {
    for (std::size_t i = 0; i < request.holds.size(); ++i) {
      const std::string at = "holds[" + std::to_string(i) + "].";
      if (auto e = CheckString(at + "owner", request.holds[i].owner, true, limits, id)) return e;
      if (auto e = CheckString(at + "resource", request.holds[i].resource, true, limits, id)) {
        return e;
      }
    }
  }
  return std::nullopt;
}

bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    std::size_t n = Utf8SequenceLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    std::size_t n = Utf8SequenceLength(s);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      n = 1;
    } else {
      out.append(s.substr(0, n));
    }
    s.remove_prefix(n);
  }
  return out;
}

std::optional<std::uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

std::optional<graph::RevokeReason> ParseRevokeReason(std::string_view s) {
  for (auto r : {graph::RevokeReason::kDeadlock, graph::RevokeReason::kExpired,
                 graph::RevokeReason::kOperator}) {
    if (graph::RevokeReasonName(r) == s) return r;
  }
  return std::nullopt;
}

std::optional<graph::VictimStep> ParseVictimStep(std::string_view s) {
  for (auto step : {graph::VictimStep::kLowestPriority, graph::VictimStep::kYoungest,
                    graph::VictimStep::kFewestLeases, graph::VictimStep::kLowestId}) {
    if (graph::VictimStepName(step) == s) return step;
  }
  return std::nullopt;
}

std::optional<EventKind> ParseEventKind(std::string_view s) {
  for (std::size_t i = 0; i < kEventNames.size(); ++i) {
    if (kEventNames[i] == s) return static_cast<EventKind>(i);
  }
  return std::nullopt;
}

DecodeError BadRequest(std::string message, std::uint64_t id) {
  return DecodeError{Code::kBadRequest, std::move(message), id};
}

}  // namespace internal
}  // namespace lockgraph::protocol
