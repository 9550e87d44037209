// The binary encoding: kBinaryFormat, then the message in cereal's portable binary
// archive layout (numbers in the writer's byte order, which the archive's first byte
// names; the reader swaps when it differs; strings as cereal's std::string), read and
// written in place by lockgraph/portable_binary.h, the codec the journal uses too.
// protocol_test reads our frames with cereal's own archive to keep the two the same.
//
//   frame    = 0x01 endian:u8 kind:u8 (request | reply | event)   -- kind 1, 2, 3
//   endian   = 1 when the writer was little-endian, else 0 (cereal's)
//   string   = size:u64 byte[size]                                -- valid UTF-8 in requests
//   count    = u32
//   opt<T>   = 0 | 1 T
//   bool     = 0 | 1
//   request  = id:u64 op:u8 present:u32 value*
//              op is Op's value (0 hello ... 15 deadlocks, 16 order); `present` has bit b set
//              for each field carried, and the values follow in increasing b:
//                0 session string     7 owner string        14 holds count hold*
//                1 secret string      8 resource string     15 items count request*
//                2 acked_seq u64      9 mode u8 (0 S, 1 X)  16 admin_token string
//                3 client string     10 wait_ms i64         17 format string
//                4 priority i32      11 site string         18 owner (query filter)
//                5 labels count      12 started i64         19 resource (query filter)
//                  (string string)*  13 lease u64           20 session (query filter)
//                6 ttl_ms i64
//              A request reads the fields its op uses (protocol_json.cc has the table)
//              and ignores the others; items carry no session or secret.
//   hold     = owner:string resource:string mode:u8 token:u64
//   reply    = id:u64 code:u8 message:string leader:string session:opt<string>
//              secret:opt<string> heartbeat_ms:opt<i64> epoch:opt<u32>
//              server:opt<string> granted:bool queued:bool cancelled:bool
//              lease:opt<u64> token:opt<u64> started:opt<i64> expires_in_ms:opt<i64>
//              results:count reply* revoked:opt<count u64*> graph_dot:opt<string>
//              listing_key:string listing_json:string deadlock:opt<report>
//              order_json:string
//   event    = kind:u8 seq:u64 id:u64 owner:string resource:string mode:u8 lease:u64
//              token:u64 code:u8 reason:u8 handover_in_ms:i64 deadlock:opt<report>
//              report_json:string
//   report   = id:u64 count edge* victim:string step:u8 why:string detected_at_us:i64
//              report_mode:bool attempt:i32 count string*(unresponsive)
//   edge     = owner:string waits_for:string mode:u8 held_by:string site:string soft:bool
//
// Codes, reasons, steps and event kinds are their enum values. Requests go through
// the same checks as JSON ones (CheckRequest), UTF-8 included. Replies and events are
// only checked for shape: their strings come from requests the daemon checked. A frame
// with bytes after its message is refused, so every proper prefix of a valid frame is
// refused too.
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "lockgraph/portable_binary.h"
#include "lockgraph/protocol.h"
#include "protocol_internal.h"

namespace lockgraph::protocol {
namespace internal {
namespace {

enum class Kind : std::uint8_t { kRequest = 1, kReply = 2, kEvent = 3 };

constexpr std::uint8_t kMaxOp = static_cast<std::uint8_t>(Op::kOrder);
constexpr std::uint8_t kMaxCode = static_cast<std::uint8_t>(Code::kInternal);
constexpr std::uint8_t kMaxReason = static_cast<std::uint8_t>(graph::RevokeReason::kOperator);
constexpr std::uint8_t kMaxStep = static_cast<std::uint8_t>(graph::VictimStep::kLowestId);
constexpr std::uint8_t kMaxEventKind = static_cast<std::uint8_t>(EventKind::kOrderWarning);
// As in JSON: results nest twice at most (a reclaim in a batch).
constexpr int kMaxReplyDepth = 4;

// The smallest encodings of repeated elements: a count larger than the bytes left
// could hold is refused before anything is read or allocated for it.
constexpr std::size_t kMinStringBytes = 8;
constexpr std::size_t kMinLabelBytes = 2 * kMinStringBytes;
constexpr std::size_t kMinHoldBytes = 2 * kMinStringBytes + 1 + 8;
constexpr std::size_t kMinRequestBytes = 8 + 1 + 4;
constexpr std::size_t kMinReplyBytes = 8 + 1 + 3 * kMinStringBytes;
constexpr std::size_t kMinEdgeBytes = 4 * kMinStringBytes + 2;

// Thrown inside this file only, caught by the Decode* entry points: a decoder that
// reads forty fields reads better without forty early returns.
struct BinaryError {
  Code code = Code::kBadRequest;
  std::string message;
};

[[noreturn]] void Bad(std::string message) { throw BinaryError{Code::kBadRequest, std::move(message)}; }

// The protocol's view of the shared codec (lockgraph/portable_binary.h): its flags and
// enums checked with the protocol's messages. Running out of input throws
// portable::ShortInput, which the Decode* entry points report as a truncated frame.
class Reader {
 public:
  // `bytes` starts at the byte-order flag, which CheckPrefix has checked is there.
  explicit Reader(std::string_view bytes) : in_(bytes.substr(1), static_cast<std::uint8_t>(bytes[0])) {}

  std::uint8_t U8() { return in_.U8(); }
  std::uint32_t U32() { return in_.U32(); }
  std::uint64_t U64() { return in_.U64(); }
  std::int32_t I32() { return in_.I32(); }
  std::int64_t I64() { return in_.I64(); }

  bool Bool(std::string_view what) {
    std::uint8_t b = U8();
    if (b > 1) Bad(std::string(what) + ": expected 0 or 1, got " + std::to_string(b));
    return b == 1;
  }
  // An enum stored as its value, at most `max`.
  template <typename E>
  E Enum(std::string_view what, std::uint8_t max) {
    std::uint8_t v = U8();
    if (v > max) Bad("unknown " + std::string(what) + " " + std::to_string(v));
    return static_cast<E>(v);
  }
  Mode ReadMode() { return Enum<Mode>("mode", static_cast<std::uint8_t>(Mode::kExclusive)); }

  std::string String() { return in_.Str(); }
  template <typename T>
  std::optional<T> Optional(T (Reader::*read)()) {
    if (!Bool("presence flag")) return std::nullopt;
    return (this->*read)();
  }
  std::size_t Count(std::size_t min_element_bytes) { return in_.Count(min_element_bytes); }

  std::size_t remaining() const { return in_.left(); }
  [[noreturn]] void Truncated() { Bad("truncated binary frame"); }

 private:
  portable::Reader in_;
};

// The format byte, the byte-order flag (little-endian) and the kind, then the message.
class Writer {
 public:
  explicit Writer(Kind kind) : w_(out_) {
    out_.reserve(128);
    out_.push_back(static_cast<char>(kBinaryFormat));
    out_.push_back(static_cast<char>(portable::kLittleEndian));
    U8(static_cast<std::uint8_t>(kind));
  }
  void U8(std::uint8_t v) { w_.U8(v); }
  void U32(std::uint32_t v) { w_.U32(v); }
  void U64(std::uint64_t v) { w_.U64(v); }
  void I32(std::int32_t v) { w_.I32(v); }
  void I64(std::int64_t v) { w_.I64(v); }
  void Bool(bool b) { w_.Bool(b); }
  template <typename E>
  void Enum(E e) {
    U8(static_cast<std::uint8_t>(e));
  }
  void String(std::string_view s) { w_.Str(s); }
  template <typename T, typename Write>
  void Optional(const std::optional<T>& v, Write write) {
    Bool(v.has_value());
    if (v) write(*v);
  }
  void Count(std::size_t n) { U32(static_cast<std::uint32_t>(n)); }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
  portable::Writer w_;
};

// ---------------------------------------------------------------- deadlock reports

void WriteReport(Writer& w, const graph::DeadlockReport& r) {
  w.U64(r.id);
  w.Count(r.cycle.size());
  for (const graph::CycleEdge& e : r.cycle) {
    w.String(e.owner);
    w.String(e.waits_for);
    w.Enum(e.mode);
    w.String(e.held_by);
    w.String(e.site);
    w.Bool(e.soft);
  }
  w.String(r.victim);
  w.Enum(r.step);
  w.String(r.why);
  w.I64(r.detected_at_us);
  w.Bool(r.report_mode);
  w.I32(r.attempt);
  w.Count(r.unresponsive.size());
  for (const std::string& u : r.unresponsive) w.String(u);
}

std::shared_ptr<const graph::DeadlockReport> ReadReport(Reader& in) {
  auto r = std::make_shared<graph::DeadlockReport>();
  r->id = in.U64();
  for (std::size_t n = in.Count(kMinEdgeBytes); n > 0; --n) {
    graph::CycleEdge e;
    e.owner = in.String();
    e.waits_for = in.String();
    e.mode = in.ReadMode();
    e.held_by = in.String();
    e.site = in.String();
    e.soft = in.Bool("soft");
    r->cycle.push_back(std::move(e));
  }
  r->victim = in.String();
  r->step = in.Enum<graph::VictimStep>("victim step", kMaxStep);
  r->why = in.String();
  r->detected_at_us = in.I64();
  r->report_mode = in.Bool("report_mode");
  r->attempt = in.I32();
  for (std::size_t n = in.Count(kMinStringBytes); n > 0; --n) r->unresponsive.push_back(in.String());
  return r;
}

void WriteOptionalReport(Writer& w, const std::shared_ptr<const graph::DeadlockReport>& r) {
  w.Bool(r != nullptr);
  if (r) WriteReport(w, *r);
}

std::shared_ptr<const graph::DeadlockReport> ReadOptionalReport(Reader& in) {
  return in.Bool("presence flag") ? ReadReport(in) : nullptr;
}

// ---------------------------------------------------------------- requests

void WriteRequest(Writer& w, const Request& r, bool is_item);

void WriteField(Writer& w, const Request& r, Field f) {
  switch (f) {
    case Field::kSession: w.String(r.session); break;
    case Field::kSecret: w.String(r.secret); break;
    case Field::kAckedSeq: w.U64(r.acked_seq.value_or(0)); break;
    case Field::kClient: w.String(r.client); break;
    case Field::kPriority: w.I32(r.priority); break;
    case Field::kLabels:
      w.Count(r.labels.size());
      for (const auto& [key, value] : r.labels) {
        w.String(key);
        w.String(value);
      }
      break;
    case Field::kTtlMs: w.I64(r.ttl_ms.value_or(0)); break;
    case Field::kOwner: w.String(r.owner); break;
    case Field::kResource: w.String(r.resource); break;
    case Field::kMode: w.Enum(r.mode); break;
    case Field::kWaitMs: w.I64(r.wait_ms); break;
    case Field::kSite: w.String(r.site); break;
    case Field::kStarted: w.I64(r.started.value_or(0)); break;
    case Field::kLease: w.U64(r.lease.value_or(0)); break;
    case Field::kHolds:
      w.Count(r.holds.size());
      for (const ReclaimItem& h : r.holds) {
        w.String(h.owner);
        w.String(h.resource);
        w.Enum(h.mode);
        w.U64(h.token);
      }
      break;
    case Field::kItems:
      w.Count(r.items.size());
      for (const Request& item : r.items) WriteRequest(w, item, /*is_item=*/true);
      break;
    case Field::kAdminToken: w.String(r.admin_token); break;
    case Field::kFormat: w.String(r.format); break;
    case Field::kFilterOwner: w.String(r.filter_owner); break;
    case Field::kFilterResource: w.String(r.filter_resource); break;
    case Field::kFilterSession: w.String(r.filter_session); break;
  }
}

void WriteRequest(Writer& w, const Request& r, bool is_item) {
  w.U64(r.id);
  w.Enum(r.op);
  const FieldMask mask = FieldsToWrite(r, is_item);
  w.U32(mask);
  for (int i = 0; i < kFieldCount; ++i) {
    auto f = static_cast<Field>(i);
    if (mask & Bit(f)) WriteField(w, r, f);
  }
}

void ReadRequestInto(Reader& in, const Limits& limits, bool is_item, std::uint64_t* id_out, Request& r);

void ReadField(Reader& in, Field f, Request& r, const Limits& limits) {
  switch (f) {
    case Field::kSession: r.session = in.String(); break;
    case Field::kSecret: r.secret = in.String(); break;
    case Field::kAckedSeq: r.acked_seq = in.U64(); break;
    case Field::kClient: r.client = in.String(); break;
    case Field::kPriority: r.priority = in.I32(); break;
    case Field::kLabels:
      for (std::size_t n = in.Count(kMinLabelBytes); n > 0; --n) {
        std::string key = in.String();
        r.labels.emplace_back(std::move(key), in.String());
      }
      break;
    case Field::kTtlMs: r.ttl_ms = in.I64(); break;
    case Field::kOwner: r.owner = in.String(); break;
    case Field::kResource: r.resource = in.String(); break;
    case Field::kMode: r.mode = in.ReadMode(); break;
    case Field::kWaitMs: r.wait_ms = in.I64(); break;
    case Field::kSite: r.site = in.String(); break;
    case Field::kStarted: r.started = in.I64(); break;
    case Field::kLease: r.lease = in.U64(); break;
    case Field::kHolds:
      for (std::size_t n = in.Count(kMinHoldBytes); n > 0; --n) {
        ReclaimItem h;
        h.owner = in.String();
        h.resource = in.String();
        h.mode = in.ReadMode();
        h.token = in.U64();
        r.holds.push_back(std::move(h));
      }
      break;
    case Field::kItems: {
      std::uint32_t n = in.U32();
      if (n > limits.max_batch_items) {
        throw BinaryError{Code::kLimit, "batch of " + std::to_string(n) +
                                            " items is over the limit of " +
                                            std::to_string(limits.max_batch_items)};
      }
      if (n > in.remaining() / kMinRequestBytes) in.Truncated();
      r.items.reserve(n);
      for (std::uint32_t i = 0; i < n; ++i) {
        try {
          ReadRequestInto(in, limits, /*is_item=*/true, nullptr, r.items.emplace_back());
        } catch (BinaryError& e) {
          e.message = "items[" + std::to_string(i) + "]: " + e.message;
          throw;
        }
      }
      break;
    }
    case Field::kAdminToken: r.admin_token = in.String(); break;
    case Field::kFormat: r.format = in.String(); break;
    case Field::kFilterOwner: r.filter_owner = in.String(); break;
    case Field::kFilterResource: r.filter_resource = in.String(); break;
    case Field::kFilterSession: r.filter_session = in.String(); break;
  }
}

// Reads a request; for the top-level one, `id_out` gets its id as soon as it is read.
// Reads into `r`, a default Request (a batch reads its items in place).
void ReadRequestInto(Reader& in, const Limits& limits, bool is_item, std::uint64_t* id_out, Request& r) {
  r.id = in.U64();
  if (id_out) *id_out = r.id;
  r.op = in.Enum<Op>("op", kMaxOp);
  if (is_item && r.op == Op::kBatch) Bad("nested batch: an item cannot be a batch");
  FieldMask present = in.U32();
  if (present & ~kAllFields) Bad("unknown fields in presence mask " + std::to_string(present));
  for (int i = 0; i < kFieldCount; ++i) {
    auto f = static_cast<Field>(i);
    if (present & Bit(f)) ReadField(in, f, r, limits);
  }
  ClearUnusedFields(r, is_item, present);  // the others still hold their defaults
  if (auto e = CheckRequest(r, present, limits, is_item)) {
    throw BinaryError{e->code, std::move(e->message)};
  }
}

Request ReadRequest(Reader& in, const Limits& limits, bool is_item, std::uint64_t* id_out) {
  Request r;
  ReadRequestInto(in, limits, is_item, id_out, r);
  return r;
}

// ---------------------------------------------------------------- replies and events

void WriteReply(Writer& w, const Reply& r) {
  w.U64(r.id);
  w.Enum(r.code);
  w.String(r.message);
  w.String(r.leader);
  auto string = [&](const std::string& s) { w.String(s); };
  auto i64 = [&](std::int64_t v) { w.I64(v); };
  auto u64 = [&](std::uint64_t v) { w.U64(v); };
  w.Optional(r.session, string);
  w.Optional(r.secret, string);
  w.Optional(r.heartbeat_ms, i64);
  w.Optional(r.epoch, [&](std::uint32_t v) { w.U32(v); });
  w.Optional(r.server, string);
  w.Bool(r.granted);
  w.Bool(r.queued);
  w.Bool(r.cancelled);
  w.Optional(r.lease, u64);
  w.Optional(r.token, u64);
  w.Optional(r.started, i64);
  w.Optional(r.expires_in_ms, i64);
  w.Count(r.results.size());
  for (const Reply& result : r.results) WriteReply(w, result);
  w.Optional(r.revoked, [&](const std::vector<graph::LeaseId>& leases) {
    w.Count(leases.size());
    for (graph::LeaseId lease : leases) w.U64(lease);
  });
  w.Optional(r.graph_dot, string);
  w.String(r.listing_key);
  w.String(r.listing_json);
  WriteOptionalReport(w, r.deadlock);
  w.String(r.order_json);
}

Reply ReadReply(Reader& in, int depth, std::uint64_t* id_out) {
  Reply r;
  r.id = in.U64();
  if (id_out) *id_out = r.id;
  r.code = in.Enum<Code>("code", kMaxCode);
  r.message = in.String();
  r.leader = in.String();
  r.session = in.Optional(&Reader::String);
  r.secret = in.Optional(&Reader::String);
  r.heartbeat_ms = in.Optional(&Reader::I64);
  r.epoch = in.Optional(&Reader::U32);
  r.server = in.Optional(&Reader::String);
  r.granted = in.Bool("granted");
  r.queued = in.Bool("queued");
  r.cancelled = in.Bool("cancelled");
  r.lease = in.Optional(&Reader::U64);
  r.token = in.Optional(&Reader::U64);
  r.started = in.Optional(&Reader::I64);
  r.expires_in_ms = in.Optional(&Reader::I64);
  std::size_t results = in.Count(kMinReplyBytes);
  if (results > 0 && depth >= kMaxReplyDepth) Bad("results nested too deeply");
  for (std::size_t i = 0; i < results; ++i) r.results.push_back(ReadReply(in, depth + 1, nullptr));
  if (in.Bool("presence flag")) {
    r.revoked.emplace();
    for (std::size_t n = in.Count(8); n > 0; --n) r.revoked->push_back(in.U64());
  }
  r.graph_dot = in.Optional(&Reader::String);
  r.listing_key = in.String();
  r.listing_json = in.String();
  r.deadlock = ReadOptionalReport(in);
  r.order_json = in.String();
  return r;
}

void WriteEvent(Writer& w, const Event& e) {
  w.Enum(e.kind);
  w.U64(e.seq);
  w.U64(e.id);
  w.String(e.owner);
  w.String(e.resource);
  w.Enum(e.mode);
  w.U64(e.lease);
  w.U64(e.token);
  w.Enum(e.code);
  w.Enum(e.reason);
  w.I64(e.handover_in_ms);
  WriteOptionalReport(w, e.deadlock);
  w.String(e.report_json);
}

Event ReadEvent(Reader& in) {
  Event e;
  e.kind = in.Enum<EventKind>("event kind", kMaxEventKind);
  e.seq = in.U64();
  e.id = in.U64();
  e.owner = in.String();
  e.resource = in.String();
  e.mode = in.ReadMode();
  e.lease = in.U64();
  e.token = in.U64();
  e.code = in.Enum<Code>("code", kMaxCode);
  e.reason = in.Enum<graph::RevokeReason>("revoke reason", kMaxReason);
  e.handover_in_ms = in.I64();
  e.deadlock = ReadOptionalReport(in);
  e.report_json = in.String();
  return e;
}

// ---------------------------------------------------------------- framing

std::string FormatByte(std::uint8_t b) {
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("0x") + kHex[b >> 4] + kHex[b & 0xF];
}

// Checks the bytes before the message and returns its kind. The byte-order flag was
// checked by CheckPrefix (0 or 1, as cereal writes it).
Kind ReadHeader(Reader& in) {
  auto kind = in.U8();
  if (kind < static_cast<std::uint8_t>(Kind::kRequest) ||
      kind > static_cast<std::uint8_t>(Kind::kEvent)) {
    Bad("unknown message kind " + std::to_string(kind));
  }
  return static_cast<Kind>(kind);
}

// The checks a Reader cannot make: format byte and byte-order flag. nullopt: fine.
std::optional<std::string> CheckPrefix(std::string_view frame) {
  if (frame.empty()) return "empty frame";
  auto format = static_cast<std::uint8_t>(frame[0]);
  if (format != kBinaryFormat) {
    return "unknown frame format " + FormatByte(format) + " (expected '{' for JSON or " +
           FormatByte(kBinaryFormat) + " for binary)";
  }
  if (frame.size() < 2) return "truncated binary frame";
  auto endian = static_cast<std::uint8_t>(frame[1]);
  if (endian > 1) return "bad byte-order flag " + FormatByte(endian);
  return std::nullopt;
}

void CheckEnd(const Reader& in) {
  if (in.remaining() != 0) {
    Bad(std::to_string(in.remaining()) + " bytes after the end of the message");
  }
}

std::string KindName(Kind kind) {
  switch (kind) {
    case Kind::kRequest: return "a request";
    case Kind::kReply: return "a reply";
    case Kind::kEvent: return "an event";
  }
  return "unknown";
}

// Runs `decode`, turning whatever it throws into a DecodeError that carries `id`.
template <typename Result, typename Decode>
std::variant<Result, DecodeError> Guarded(const std::uint64_t& id, Decode decode) {
  try {
    return decode();
  } catch (const BinaryError& e) {
    return DecodeError{e.code, e.message, id};
  } catch (const portable::ShortInput&) {
    return DecodeError{Code::kBadRequest, "truncated binary frame", id};
  } catch (const std::exception& e) {
    return DecodeError{Code::kBadRequest, std::string("undecodable binary frame: ") + e.what(),
                       id};
  }
}

}  // namespace

std::string EncodeRequestBinary(const Request& request) {
  Writer w(Kind::kRequest);
  WriteRequest(w, request, /*is_item=*/false);
  return w.Take();
}

std::string EncodeReplyBinary(const Reply& reply) {
  Writer w(Kind::kReply);
  WriteReply(w, reply);
  return w.Take();
}

std::string EncodeEventBinary(const Event& event) {
  Writer w(Kind::kEvent);
  WriteEvent(w, event);
  return w.Take();
}

std::variant<Request, DecodeError> DecodeRequestBinary(std::string_view frame,
                                                       const Limits& limits) {
  if (auto problem = CheckPrefix(frame)) return BadRequest(*problem);
  std::uint64_t id = 0;
  return Guarded<Request>(id, [&] {
    Reader in(frame.substr(1));
    Kind kind = ReadHeader(in);
    if (kind != Kind::kRequest) Bad("expected a request, got " + KindName(kind));
    Request request = ReadRequest(in, limits, /*is_item=*/false, &id);
    CheckEnd(in);
    return request;
  });
}

std::variant<ServerMessage, DecodeError> DecodeServerMessageBinary(std::string_view frame) {
  if (auto problem = CheckPrefix(frame)) return BadRequest(*problem);
  std::uint64_t id = 0;
  return Guarded<ServerMessage>(id, [&]() -> ServerMessage {
    Reader in(frame.substr(1));
    Kind kind = ReadHeader(in);
    if (kind == Kind::kRequest) Bad("expected a reply or an event, got a request");
    if (kind == Kind::kReply) {
      Reply reply = ReadReply(in, 0, &id);
      CheckEnd(in);
      return reply;
    }
    Event event = ReadEvent(in);
    CheckEnd(in);
    return event;
  });
}

}  // namespace internal
}  // namespace lockgraph::protocol
