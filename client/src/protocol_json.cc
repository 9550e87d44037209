// The JSON encoding: exactly the shape of shared/PROTOCOL.md, written and read with
// RapidJSON (its DOM for reading, its Writer for writing; never cereal's JSON, whose
// `value0` and `nullopt` wrappers are not the contract).
//
// Requests: which op reads which field. R required, O optional (default in brackets);
// a field not listed for an op is not read (ignored like any unknown field). The data
// is FieldsOf() in protocol.cc, shared with the binary encoding; keep this table in
// step with it. A missing R field is BAD_REQUEST `missing field "<name>"`.
//
//   every request     v R (must be 1; batch items have none), id R (uint64), op R,
//                     acked_seq O (uint64)
//   session-scoped    session R, secret R — every op but hello, revoke and the queries;
//                     batch items inherit them and do not carry their own
//   hello             client R, ttl_ms R, priority O [0] (int32), labels O [{}]
//                     (object of string values)
//   heartbeat, bye    —
//   acquire           owner R, resource R, mode R ("S"/"X"), ttl_ms R, wait_ms R,
//                     site O [""], started O [absent]
//   renew             lease R, ttl_ms O [absent: the lease's own]
//   release           lease O, owner O, resource O — lease, or both owner and resource
//   hold              owner R, resource R, mode R, ttl_ms R, site O [""]
//   wait              owner R, resource R, mode R, site O [""]
//   unwait            owner R, resource R
//   reclaim           holds R: [{owner R, resource R, mode R, token R}]
//   batch             items R: [{id R, op R, acked_seq O, the op's fields}]; no batch
//                     inside; at most Limits::max_batch_items (else LIMIT)
//   revoke            admin_token R, lease O, resource O — lease or resource (or both)
//   graph             format O ["json"]: "json" or "dot"
//   stats, leases,    owner O [""], resource O [""], session O [""]: filters, not a
//   deadlocks         session of the caller (the queries are not session-scoped)
//   order             — (a query: the learned lock order, reports, exported rules)
//
// Types: ids, seq, acked_seq are JSON integers in uint64; ttl_ms, wait_ms, started,
// heartbeat_ms, expires_in_ms, handover_in_ms int64; priority int32; epoch uint32.
// lease and token are JSON strings of 1 to 20 decimal digits (value < 2^64), because
// many JSON readers lose integers past 2^53. A number outside its type's range, or one
// with a fraction or exponent, is BAD_REQUEST naming the field and the range.
//
// Limits: a frame over max_frame_bytes is LIMIT before parsing (id 0). session,
// client, owner, resource, site, the query filters, label keys and values, and the
// owner and resource of reclaim holds are names: over max_name_bytes is LIMIT.
// Every string must be valid UTF-8 (else BAD_REQUEST). Nesting deeper than
// kMaxJsonDepth (64) is BAD_REQUEST, so that no reader of ours recurses without bound.
// A JSON frame starts with '{' (no whitespace before it: the first byte chooses the
// encoding) and has nothing but whitespace after its object.
//
// Replies: {"v":1,"id":N,"ok":true, <fields that are set>} or
// {"v":1,"id":N,"ok":false,"error":{"code":C,"message":M[,"leader":L][,"deadlock":{}]
//  [,"order":{}]},
//  <fields that are set>} (a TIMEOUT of acquire carries "started"). The fields, in this
// order: session, secret, heartbeat_ms, epoch, server, granted, queued, cancelled (only
// when true), lease, token, started, expires_in_ms, results (reply objects without "v",
// when not empty), revoked, graph (the DOT text, a string), then Reply::listing_key
// with Reply::listing_json spliced in as is ("stats":{...}, or "graph":{...} for the
// JSON graph). On success message, leader and deadlock are not sent.
//
// Events: {"v":1,"event":E,"seq":N, ...}:
//   granted        id, owner, resource, mode, lease, token           (all required)
//   denied         id O [0, written when not 0], owner, resource, code, deadlock O
//   revoked        lease, owner, resource, token, reason, handover_in_ms O [0], deadlock O
//   order_warning  report: Event::report_json spliced in as is
// Deadlock reports are graph::RenderJson's text, read back by ParseDeadlockJson.
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "lockgraph/protocol.h"
#include "protocol_internal.h"

namespace lockgraph::protocol {
namespace internal {
namespace {

using rapidjson::Document;
using rapidjson::SizeType;
using rapidjson::Value;

// Deeper than any message of ours (a batch of reclaims is 4); the limit exists so that
// re-serialising a spliced listing, which recurses, cannot exhaust the stack.
constexpr int kMaxJsonDepth = 64;
// Replies nest through `results` (a reclaim inside a batch): 2 is the most a daemon
// sends; a little more leaves room without letting garbage recurse deeply.
constexpr int kMaxReplyDepth = 4;

// nullopt: fine. The id is filled in by the top-level decoder once it is known.
using Problem = std::optional<DecodeError>;

Problem Fail(std::string message) { return BadRequest(std::move(message)); }

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// At most the first 64 bytes of `s`, for quoting input in an error message.
std::string Excerpt(std::string_view s) {
  constexpr std::size_t kMax = 64;
  if (s.size() <= kMax) return SanitizeUtf8(s);
  return SanitizeUtf8(s.substr(0, kMax)) + "...";
}

Problem Expected(std::string_view name, std::string_view what) {
  return Fail("field " + Quoted(name) + ": expected " + std::string(what));
}

Problem Missing(std::string_view name) { return Fail("missing field " + Quoted(name)); }

// Prefixes a problem found inside an element, e.g. "items[3]: ".
Problem Within(Problem problem, const std::string& where) {
  if (problem) problem->message = where + ": " + problem->message;
  return problem;
}

// ---------------------------------------------------------------- parsing

// Forwards RapidJSON's parse events to a Document, refusing nesting deeper than
// kMaxJsonDepth. Parsing itself is iterative (kParseIterativeFlag); this bounds what
// comes after.
class DepthLimiter {
 public:
  explicit DepthLimiter(Document& doc) : doc_(doc) {}
  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned u) { return doc_.Uint(u); }
  bool Int64(std::int64_t i) { return doc_.Int64(i); }
  bool Uint64(std::uint64_t u) { return doc_.Uint64(u); }
  bool Double(double d) { return doc_.Double(d); }
  bool RawNumber(const char* s, SizeType n, bool copy) { return doc_.RawNumber(s, n, copy); }
  bool String(const char* s, SizeType n, bool copy) { return doc_.String(s, n, copy); }
  bool Key(const char* s, SizeType n, bool copy) { return doc_.Key(s, n, copy); }
  bool StartObject() { return Enter() && doc_.StartObject(); }
  bool EndObject(SizeType n) {
    --depth_;
    return doc_.EndObject(n);
  }
  bool StartArray() { return Enter() && doc_.StartArray(); }
  bool EndArray(SizeType n) {
    --depth_;
    return doc_.EndArray(n);
  }
  bool too_deep() const { return too_deep_; }

 private:
  bool Enter() {
    if (++depth_ > kMaxJsonDepth) too_deep_ = true;
    return !too_deep_;
  }
  Document& doc_;
  int depth_ = 0;
  bool too_deep_ = false;
};

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Parses all of `text` into `doc`: one JSON value, optional whitespace around it.
Problem ParseJson(std::string_view text, Document& doc) {
  constexpr unsigned kFlags = rapidjson::kParseValidateEncodingFlag |
                              rapidjson::kParseIterativeFlag |
                              rapidjson::kParseStopWhenDoneFlag;
  rapidjson::MemoryStream stream(text.data(), text.size());
  rapidjson::Reader reader;
  rapidjson::ParseResult result;
  bool too_deep = false;
  auto generate = [&](Document& d) {
    DepthLimiter limiter(d);
    result = reader.Parse<kFlags>(stream, limiter);
    too_deep = limiter.too_deep();
    return !result.IsError();
  };
  doc.Populate(generate);
  if (too_deep) {
    return Fail("invalid JSON: nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  if (result.IsError()) {
    return Fail("invalid JSON at byte " + std::to_string(result.Offset()) + ": " +
                rapidjson::GetParseError_En(result.Code()));
  }
  // kParseStopWhenDoneFlag stops after the value; the rest must be whitespace (the
  // flag is there so that bytes after a NUL, which RapidJSON takes for the end, are
  // not silently accepted).
  for (std::size_t i = stream.Tell(); i < text.size(); ++i) {
    if (!IsJsonSpace(text[i])) {
      return Fail("invalid JSON at byte " + std::to_string(i) + ": bytes after the value");
    }
  }
  return std::nullopt;
}

const Value* Find(const Value& object, std::string_view name) {
  Value key(rapidjson::StringRef(name.data(), name.size()));
  auto it = object.FindMember(key);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

// ---------------------------------------------------------------- typed readers

// A lease or a token: a JSON string of decimal digits.
struct AsDecimal {
  std::uint64_t& value;
};
struct AsOptionalDecimal {
  std::optional<std::uint64_t>& value;
};

Problem As(const Value& v, std::string_view name, std::string& out) {
  if (!v.IsString()) return Expected(name, "a string");
  out.assign(v.GetString(), v.GetStringLength());
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, bool& out) {
  if (!v.IsBool()) return Expected(name, "true or false");
  out = v.GetBool();
  return std::nullopt;
}

template <typename T>
Problem RangeError(std::string_view name) {
  return Expected(name, "an integer from " + std::to_string(std::numeric_limits<T>::min()) +
                            " to " + std::to_string(std::numeric_limits<T>::max()));
}

Problem As(const Value& v, std::string_view name, std::uint64_t& out) {
  if (!v.IsUint64()) return RangeError<std::uint64_t>(name);
  out = v.GetUint64();
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, std::int64_t& out) {
  if (!v.IsInt64()) return RangeError<std::int64_t>(name);
  out = v.GetInt64();
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, std::int32_t& out) {
  if (!v.IsInt()) return RangeError<std::int32_t>(name);
  out = v.GetInt();
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, std::uint32_t& out) {
  if (!v.IsUint()) return RangeError<std::uint32_t>(name);
  out = v.GetUint();
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, AsDecimal out) {
  std::optional<std::uint64_t> parsed;
  if (v.IsString()) parsed = ParseDecimal({v.GetString(), v.GetStringLength()});
  if (!parsed) return Expected(name, "a string of decimal digits below 2^64");
  out.value = *parsed;
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, AsOptionalDecimal out) {
  std::uint64_t value = 0;
  if (auto e = As(v, name, AsDecimal{value})) return e;
  out.value = value;
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, Mode& out) {
  std::optional<Mode> mode;
  if (v.IsString()) mode = graph::ParseMode({v.GetString(), v.GetStringLength()});
  if (!mode) return Expected(name, "\"S\" or \"X\"");
  out = *mode;
  return std::nullopt;
}

// An error code other than OK.
Problem As(const Value& v, std::string_view name, Code& out) {
  std::optional<Code> code;
  if (v.IsString()) code = graph::ParseCode({v.GetString(), v.GetStringLength()});
  if (!code || *code == Code::kOk) return Expected(name, "an error code");
  out = *code;
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, graph::RevokeReason& out) {
  std::optional<graph::RevokeReason> reason;
  if (v.IsString()) reason = ParseRevokeReason({v.GetString(), v.GetStringLength()});
  if (!reason) return Expected(name, "\"deadlock\", \"expired\" or \"operator\"");
  out = *reason;
  return std::nullopt;
}

Problem As(const Value& v, std::string_view name, graph::VictimStep& out) {
  std::optional<graph::VictimStep> step;
  if (v.IsString()) step = ParseVictimStep({v.GetString(), v.GetStringLength()});
  if (!step) return Expected(name, "a victim policy step");
  out = *step;
  return std::nullopt;
}

template <typename T>
Problem As(const Value& v, std::string_view name, std::optional<T>& out) {
  T value{};
  if (auto e = As(v, name, value)) return e;
  out = std::move(value);
  return std::nullopt;
}

template <typename T>
Problem Required(const Value& object, std::string_view name, T&& out) {
  const Value* v = Find(object, name);
  return v ? As(*v, name, std::forward<T>(out)) : Missing(name);
}

template <typename T>
Problem Optional(const Value& object, std::string_view name, T&& out) {
  const Value* v = Find(object, name);
  return v ? As(*v, name, std::forward<T>(out)) : std::nullopt;
}

// A JSON value as compact text, for listings and reports that are passed on as is.
std::string Serialize(const Value& v) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  v.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

// ---------------------------------------------------------------- deadlock reports

Problem ReadDeadlock(const Value& v, graph::DeadlockReport& out) {
  if (!v.IsObject()) return Fail("expected an object");
  const Value* cycle = Find(v, "cycle");
  if (!cycle) return Missing("cycle");
  if (!cycle->IsArray()) return Expected("cycle", "an array");
  for (SizeType i = 0; i < cycle->Size(); ++i) {
    const Value& e = (*cycle)[i];
    graph::CycleEdge edge;
    Problem p = e.IsObject() ? std::nullopt : Fail("expected an object");
    if (!p) p = Required(e, "owner", edge.owner);
    if (!p) p = Required(e, "waits_for", edge.waits_for);
    if (!p) p = Required(e, "mode", edge.mode);
    if (!p) p = Required(e, "held_by", edge.held_by);
    if (!p) p = Optional(e, "site", edge.site);
    if (!p) p = Optional(e, "soft", edge.soft);
    if (p) return Within(std::move(p), "cycle[" + std::to_string(i) + "]");
    out.cycle.push_back(std::move(edge));
  }
  if (auto e = Required(v, "victim", out.victim)) return e;
  if (auto e = Required(v, "why", out.why)) return e;
  if (auto e = Required(v, "detected_at_us", out.detected_at_us)) return e;
  if (auto e = Optional(v, "id", out.id)) return e;
  if (auto e = Optional(v, "step", out.step)) return e;
  if (auto e = Optional(v, "report_mode", out.report_mode)) return e;
  if (auto e = Optional(v, "attempt", out.attempt)) return e;
  if (const Value* u = Find(v, "unresponsive")) {
    if (!u->IsArray()) return Expected("unresponsive", "an array");
    for (SizeType i = 0; i < u->Size(); ++i) {
      std::string victim;
      if (auto e = As((*u)[i], "unresponsive", victim)) return e;
      out.unresponsive.push_back(std::move(victim));
    }
  }
  return std::nullopt;
}

Problem OptionalDeadlock(const Value& object,
                         std::shared_ptr<const graph::DeadlockReport>& out) {
  const Value* v = Find(object, "deadlock");
  if (!v) return std::nullopt;
  auto report = std::make_shared<graph::DeadlockReport>();
  if (auto e = ReadDeadlock(*v, *report)) return Within(std::move(e), "field \"deadlock\"");
  out = std::move(report);
  return std::nullopt;
}

// ---------------------------------------------------------------- writing

// RapidJSON's Writer with the conveniences the protocol needs. Strings are made valid
// UTF-8 first: a reply that quotes bad input must still be JSON our decoder accepts.
class Out {
 public:
  Out() : writer_(buffer_) {}
  void StartObject() { writer_.StartObject(); }
  void EndObject() { writer_.EndObject(); }
  void StartArray() { writer_.StartArray(); }
  void EndArray() { writer_.EndArray(); }
  void Key(std::string_view key) {
    if (IsValidUtf8(key)) {
      writer_.Key(key.data(), static_cast<SizeType>(key.size()));
    } else {
      std::string clean = SanitizeUtf8(key);
      writer_.Key(clean.data(), static_cast<SizeType>(clean.size()));
    }
  }
  void String(std::string_view s) {
    if (IsValidUtf8(s)) {
      writer_.String(s.data(), static_cast<SizeType>(s.size()));
    } else {
      std::string clean = SanitizeUtf8(s);
      writer_.String(clean.data(), static_cast<SizeType>(clean.size()));
    }
  }
  void Decimal(std::uint64_t v) { String(std::to_string(v)); }
  void Uint64(std::uint64_t v) { writer_.Uint64(v); }
  void Int64(std::int64_t v) { writer_.Int64(v); }
  void Int(int v) { writer_.Int(v); }
  void Bool(bool b) { writer_.Bool(b); }
  // `json` is written as it is; an empty one as `empty` so the output stays JSON.
  void Raw(std::string_view json, std::string_view empty) {
    if (json.empty()) json = empty;
    writer_.RawValue(json.data(), json.size(), rapidjson::kObjectType);
  }
  std::string Take() { return std::string(buffer_.GetString(), buffer_.GetSize()); }

 private:
  rapidjson::StringBuffer buffer_;
  rapidjson::Writer<rapidjson::StringBuffer> writer_;
};

// ---------------------------------------------------------------- requests

Problem DecodeBody(const Value& object, Request& r, const Limits& limits, bool is_item);

Problem ReadLabels(const Value& v, Request& r) {
  if (!v.IsObject()) return Expected("labels", "an object of strings");
  for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
    std::string key(it->name.GetString(), it->name.GetStringLength());
    std::string value;
    if (auto e = As(it->value, "labels." + Excerpt(key), value)) return e;
    r.labels.emplace_back(std::move(key), std::move(value));
  }
  return std::nullopt;
}

Problem ReadHolds(const Value& v, Request& r) {
  if (!v.IsArray()) return Expected("holds", "an array");
  for (SizeType i = 0; i < v.Size(); ++i) {
    const Value& h = v[i];
    ReclaimItem item;
    Problem p = h.IsObject() ? std::nullopt : Fail("expected an object");
    if (!p) p = Required(h, "owner", item.owner);
    if (!p) p = Required(h, "resource", item.resource);
    if (!p) p = Required(h, "mode", item.mode);
    if (!p) p = Required(h, "token", AsDecimal{item.token});
    if (p) return Within(std::move(p), "holds[" + std::to_string(i) + "]");
    r.holds.push_back(std::move(item));
  }
  return std::nullopt;
}

Problem ReadItems(const Value& v, Request& r, const Limits& limits) {
  if (!v.IsArray()) return Expected("items", "an array");
  if (v.Size() > limits.max_batch_items) {
    return DecodeError{Code::kLimit,
                       "batch of " + std::to_string(v.Size()) + " items is over the limit of " +
                           std::to_string(limits.max_batch_items),
                       0};
  }
  r.items.reserve(v.Size());
  for (SizeType i = 0; i < v.Size(); ++i) {
    const Value& item = v[i];
    Request request;
    Problem p = item.IsObject() ? std::nullopt : Fail("expected an object");
    if (!p) p = Required(item, "id", request.id);
    if (!p) p = DecodeBody(item, request, limits, /*is_item=*/true);
    if (p) return Within(std::move(p), "items[" + std::to_string(i) + "]");
    r.items.push_back(std::move(request));
  }
  return std::nullopt;
}

Problem ReadField(const Value& v, Field f, Request& r, const Limits& limits) {
  const std::string_view name = WireName(f);
  switch (f) {
    case Field::kSession: return As(v, name, r.session);
    case Field::kSecret: return As(v, name, r.secret);
    case Field::kAckedSeq: return As(v, name, r.acked_seq);
    case Field::kClient: return As(v, name, r.client);
    case Field::kPriority: return As(v, name, r.priority);
    case Field::kLabels: return ReadLabels(v, r);
    case Field::kTtlMs: return As(v, name, r.ttl_ms);
    case Field::kOwner: return As(v, name, r.owner);
    case Field::kResource: return As(v, name, r.resource);
    case Field::kMode: return As(v, name, r.mode);
    case Field::kWaitMs: return As(v, name, r.wait_ms);
    case Field::kSite: return As(v, name, r.site);
    case Field::kStarted: return As(v, name, r.started);
    case Field::kLease: return As(v, name, AsOptionalDecimal{r.lease});
    case Field::kHolds: return ReadHolds(v, r);
    case Field::kItems: return ReadItems(v, r, limits);
    case Field::kAdminToken: return As(v, name, r.admin_token);
    case Field::kFormat: return As(v, name, r.format);
    case Field::kFilterOwner: return As(v, name, r.filter_owner);
    case Field::kFilterResource: return As(v, name, r.filter_resource);
    case Field::kFilterSession: return As(v, name, r.filter_session);
  }
  return Fail("unknown field");
}

// Everything of a request but `v` and `id`, which the caller has read.
Problem DecodeBody(const Value& object, Request& r, const Limits& limits, bool is_item) {
  std::string op_name;
  if (auto e = Required(object, "op", op_name)) return e;
  std::optional<Op> op = ParseOp(op_name);
  if (!op) return Fail("unknown op " + Quoted(Excerpt(op_name)));
  r.op = *op;
  if (is_item && r.op == Op::kBatch) return Fail("nested batch: an item cannot be a batch");

  FieldMask present = 0;
  auto read = [&](Field f) -> Problem {
    const Value* v = Find(object, WireName(f));
    if (!v) return std::nullopt;
    present |= Bit(f);
    return ReadField(*v, f, r, limits);
  };
  if (!is_item && IsSessionScoped(r.op)) {
    if (auto e = read(Field::kSession)) return e;
    if (auto e = read(Field::kSecret)) return e;
  }
  if (auto e = read(Field::kAckedSeq)) return e;
  for (const FieldUse& use : FieldsOf(r.op)) {
    if (auto e = read(use.field)) return e;
  }
  return CheckRequest(r, present, limits, is_item);
}

void WriteRequest(Out& out, const Request& r, bool is_item);

void WriteField(Out& out, const Request& r, Field f) {
  out.Key(WireName(f));
  switch (f) {
    case Field::kSession: out.String(r.session); break;
    case Field::kSecret: out.String(r.secret); break;
    case Field::kAckedSeq: out.Uint64(r.acked_seq.value_or(0)); break;
    case Field::kClient: out.String(r.client); break;
    case Field::kPriority: out.Int(r.priority); break;
    case Field::kLabels:
      out.StartObject();
      for (const auto& [key, value] : r.labels) {
        out.Key(key);
        out.String(value);
      }
      out.EndObject();
      break;
    case Field::kTtlMs: out.Int64(r.ttl_ms.value_or(0)); break;
    case Field::kOwner: out.String(r.owner); break;
    case Field::kResource: out.String(r.resource); break;
    case Field::kMode: out.String(graph::ModeName(r.mode)); break;
    case Field::kWaitMs: out.Int64(r.wait_ms); break;
    case Field::kSite: out.String(r.site); break;
    case Field::kStarted: out.Int64(r.started.value_or(0)); break;
    case Field::kLease: out.Decimal(r.lease.value_or(0)); break;
    case Field::kHolds:
      out.StartArray();
      for (const ReclaimItem& h : r.holds) {
        out.StartObject();
        out.Key("owner");
        out.String(h.owner);
        out.Key("resource");
        out.String(h.resource);
        out.Key("mode");
        out.String(graph::ModeName(h.mode));
        out.Key("token");
        out.Decimal(h.token);
        out.EndObject();
      }
      out.EndArray();
      break;
    case Field::kItems:
      out.StartArray();
      for (const Request& item : r.items) WriteRequest(out, item, /*is_item=*/true);
      out.EndArray();
      break;
    case Field::kAdminToken: out.String(r.admin_token); break;
    case Field::kFormat: out.String(r.format); break;
    case Field::kFilterOwner: out.String(r.filter_owner); break;
    case Field::kFilterResource: out.String(r.filter_resource); break;
    case Field::kFilterSession: out.String(r.filter_session); break;
  }
}

void WriteRequest(Out& out, const Request& r, bool is_item) {
  out.StartObject();
  if (!is_item) {
    out.Key("v");
    out.Int(kVersion);
  }
  out.Key("id");
  out.Uint64(r.id);
  out.Key("op");
  out.String(OpName(r.op));
  const FieldMask mask = FieldsToWrite(r, is_item);
  auto write = [&](Field f) {
    if (mask & Bit(f)) WriteField(out, r, f);
  };
  write(Field::kSession);
  write(Field::kSecret);
  for (const FieldUse& use : FieldsOf(r.op)) write(use.field);
  write(Field::kAckedSeq);
  out.EndObject();
}

// ---------------------------------------------------------------- replies

void WriteReply(Out& out, const Reply& r, bool top) {
  out.StartObject();
  if (top) {
    out.Key("v");
    out.Int(kVersion);
  }
  out.Key("id");
  out.Uint64(r.id);
  out.Key("ok");
  out.Bool(r.ok());
  if (!r.ok()) {
    out.Key("error");
    out.StartObject();
    out.Key("code");
    out.String(graph::CodeName(r.code));
    out.Key("message");
    out.String(r.message);
    if (!r.leader.empty()) {
      out.Key("leader");
      out.String(r.leader);
    }
    if (r.deadlock) {
      out.Key("deadlock");
      out.Raw(graph::RenderJson(*r.deadlock), "{}");
    }
    if (!r.order_json.empty()) {
      out.Key("order");
      out.Raw(r.order_json, "{}");
    }
    out.EndObject();
  }
  auto string = [&](std::string_view key, const std::optional<std::string>& v) {
    if (!v) return;
    out.Key(key);
    out.String(*v);
  };
  auto int64 = [&](std::string_view key, const std::optional<std::int64_t>& v) {
    if (!v) return;
    out.Key(key);
    out.Int64(*v);
  };
  auto flag = [&](std::string_view key, bool v) {
    if (!v) return;
    out.Key(key);
    out.Bool(true);
  };
  auto decimal = [&](std::string_view key, const std::optional<std::uint64_t>& v) {
    if (!v) return;
    out.Key(key);
    out.Decimal(*v);
  };
  string("session", r.session);
  string("secret", r.secret);
  int64("heartbeat_ms", r.heartbeat_ms);
  if (r.epoch) {
    out.Key("epoch");
    out.Uint64(*r.epoch);
  }
  string("server", r.server);
  flag("granted", r.granted);
  flag("queued", r.queued);
  flag("cancelled", r.cancelled);
  decimal("lease", r.lease);
  decimal("token", r.token);
  int64("started", r.started);
  int64("expires_in_ms", r.expires_in_ms);
  if (!r.results.empty()) {
    out.Key("results");
    out.StartArray();
    for (const Reply& result : r.results) WriteReply(out, result, /*top=*/false);
    out.EndArray();
  }
  if (r.revoked) {
    out.Key("revoked");
    out.StartArray();
    for (graph::LeaseId lease : *r.revoked) out.Decimal(lease);
    out.EndArray();
  }
  string("graph", r.graph_dot);
  if (!r.listing_key.empty()) {
    out.Key(r.listing_key);
    out.Raw(r.listing_json, "null");
  }
  out.EndObject();
}

constexpr std::string_view kListingKeys[] = {"graph", "stats", "leases", "deadlocks", "order"};

Problem DecodeReply(const Value& object, Reply& r, int depth) {
  if (!object.IsObject()) return Fail("expected an object");
  if (auto e = Required(object, "id", r.id)) return e;
  bool ok = false;
  if (auto e = Required(object, "ok", ok)) return e;
  if (!ok) {
    const Value* error = Find(object, "error");
    if (!error) return Missing("error");
    if (!error->IsObject()) return Expected("error", "an object");
    Problem p = Required(*error, "code", r.code);
    if (!p) p = Optional(*error, "message", r.message);
    if (!p) p = Optional(*error, "leader", r.leader);
    if (!p) p = OptionalDeadlock(*error, r.deadlock);
    if (!p) {
      if (const Value* order = Find(*error, "order")) {
        if (!order->IsObject()) p = Expected("order", "an object");
        else r.order_json = Serialize(*order);
      }
    }
    if (p) return Within(std::move(p), "field \"error\"");
  }
  if (auto e = Optional(object, "session", r.session)) return e;
  if (auto e = Optional(object, "secret", r.secret)) return e;
  if (auto e = Optional(object, "heartbeat_ms", r.heartbeat_ms)) return e;
  if (auto e = Optional(object, "epoch", r.epoch)) return e;
  if (auto e = Optional(object, "server", r.server)) return e;
  if (auto e = Optional(object, "granted", r.granted)) return e;
  if (auto e = Optional(object, "queued", r.queued)) return e;
  if (auto e = Optional(object, "cancelled", r.cancelled)) return e;
  if (auto e = Optional(object, "lease", AsOptionalDecimal{r.lease})) return e;
  if (auto e = Optional(object, "token", AsOptionalDecimal{r.token})) return e;
  if (auto e = Optional(object, "started", r.started)) return e;
  if (auto e = Optional(object, "expires_in_ms", r.expires_in_ms)) return e;
  if (const Value* results = Find(object, "results")) {
    if (!results->IsArray()) return Expected("results", "an array");
    if (depth >= kMaxReplyDepth) return Fail("results nested too deeply");
    for (SizeType i = 0; i < results->Size(); ++i) {
      Reply result;
      if (auto e = DecodeReply((*results)[i], result, depth + 1)) {
        return Within(std::move(e), "results[" + std::to_string(i) + "]");
      }
      r.results.push_back(std::move(result));
    }
  }
  if (const Value* revoked = Find(object, "revoked")) {
    if (!revoked->IsArray()) return Expected("revoked", "an array");
    r.revoked.emplace();
    for (SizeType i = 0; i < revoked->Size(); ++i) {
      graph::LeaseId lease = 0;
      if (auto e = As((*revoked)[i], "revoked", AsDecimal{lease})) return e;
      r.revoked->push_back(lease);
    }
  }
  for (std::string_view key : kListingKeys) {
    const Value* v = Find(object, key);
    if (!v) continue;
    if (key == "graph" && v->IsString()) {
      r.graph_dot.emplace(v->GetString(), v->GetStringLength());
      continue;
    }
    if (!r.listing_key.empty()) continue;  // one listing per reply; the first wins
    r.listing_key = key;
    r.listing_json = Serialize(*v);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- events

void WriteEvent(Out& out, const Event& e) {
  out.StartObject();
  out.Key("v");
  out.Int(kVersion);
  out.Key("event");
  out.String(EventName(e.kind));
  out.Key("seq");
  out.Uint64(e.seq);
  auto key_string = [&](std::string_view key, std::string_view value) {
    out.Key(key);
    out.String(value);
  };
  auto deadlock = [&] {
    if (!e.deadlock) return;
    out.Key("deadlock");
    out.Raw(graph::RenderJson(*e.deadlock), "{}");
  };
  switch (e.kind) {
    case EventKind::kGranted:
      out.Key("id");
      out.Uint64(e.id);
      key_string("owner", e.owner);
      key_string("resource", e.resource);
      key_string("mode", graph::ModeName(e.mode));
      out.Key("lease");
      out.Decimal(e.lease);
      out.Key("token");
      out.Decimal(e.token);
      break;
    case EventKind::kDenied:
      if (e.id != 0) {
        out.Key("id");
        out.Uint64(e.id);
      }
      key_string("owner", e.owner);
      key_string("resource", e.resource);
      key_string("code", graph::CodeName(e.code));
      deadlock();
      break;
    case EventKind::kRevoked:
      out.Key("lease");
      out.Decimal(e.lease);
      key_string("owner", e.owner);
      key_string("resource", e.resource);
      out.Key("token");
      out.Decimal(e.token);
      key_string("reason", graph::RevokeReasonName(e.reason));
      out.Key("handover_in_ms");
      out.Int64(e.handover_in_ms);
      deadlock();
      break;
    case EventKind::kOrderWarning:
      out.Key("report");
      out.Raw(e.report_json, "{}");
      break;
  }
  out.EndObject();
}

Problem DecodeEvent(const Value& object, const std::string& name, Event& e) {
  std::optional<EventKind> kind = ParseEventKind(name);
  if (!kind) return Fail("unknown event " + Quoted(Excerpt(name)));
  e.kind = *kind;
  if (auto p = Required(object, "seq", e.seq)) return p;
  Problem p;
  switch (e.kind) {
    case EventKind::kGranted:
      p = Required(object, "id", e.id);
      if (!p) p = Required(object, "owner", e.owner);
      if (!p) p = Required(object, "resource", e.resource);
      if (!p) p = Required(object, "mode", e.mode);
      if (!p) p = Required(object, "lease", AsDecimal{e.lease});
      if (!p) p = Required(object, "token", AsDecimal{e.token});
      break;
    case EventKind::kDenied:
      p = Optional(object, "id", e.id);
      if (!p) p = Required(object, "owner", e.owner);
      if (!p) p = Required(object, "resource", e.resource);
      if (!p) p = Required(object, "code", e.code);
      if (!p) p = OptionalDeadlock(object, e.deadlock);
      break;
    case EventKind::kRevoked:
      p = Required(object, "lease", AsDecimal{e.lease});
      if (!p) p = Required(object, "owner", e.owner);
      if (!p) p = Required(object, "resource", e.resource);
      if (!p) p = Required(object, "token", AsDecimal{e.token});
      if (!p) p = Required(object, "reason", e.reason);
      if (!p) p = Optional(object, "handover_in_ms", e.handover_in_ms);
      if (!p) p = OptionalDeadlock(object, e.deadlock);
      break;
    case EventKind::kOrderWarning: {
      const Value* report = Find(object, "report");
      if (!report) return Missing("report");
      if (!report->IsObject()) return Expected("report", "an object");
      e.report_json = Serialize(*report);
      break;
    }
  }
  return p;
}

// `v` must be present and 1: a frame of another version must not be half understood.
Problem CheckVersion(const Value& object) {
  const Value* v = Find(object, "v");
  if (!v) return Missing("v");
  if (!v->IsInt() || v->GetInt() != kVersion) {
    std::string got = v->IsInt64() ? std::to_string(v->GetInt64()) : "of another type";
    return Fail("unsupported protocol version " + got + " (this side speaks " +
                std::to_string(kVersion) + ")");
  }
  return std::nullopt;
}

}  // namespace

std::string EncodeRequestJson(const Request& request) {
  Out out;
  WriteRequest(out, request, /*is_item=*/false);
  return out.Take();
}

std::string EncodeReplyJson(const Reply& reply) {
  Out out;
  WriteReply(out, reply, /*top=*/true);
  return out.Take();
}

std::string EncodeEventJson(const Event& event) {
  Out out;
  WriteEvent(out, event);
  return out.Take();
}

std::variant<Request, DecodeError> DecodeRequestJson(std::string_view frame,
                                                     const Limits& limits) {
  Document doc;
  if (Problem p = ParseJson(frame, doc)) return *p;
  if (!doc.IsObject()) return BadRequest("a request must be a JSON object");
  Request request;
  // The id first, so that every later error can carry it.
  if (Problem p = Required(doc, "id", request.id)) return *p;
  Problem p = CheckVersion(doc);
  if (!p) p = DecodeBody(doc, request, limits, /*is_item=*/false);
  if (p) {
    p->id = request.id;
    return *p;
  }
  return request;
}

std::variant<ServerMessage, DecodeError> DecodeServerMessageJson(std::string_view frame) {
  Document doc;
  if (Problem p = ParseJson(frame, doc)) return *p;
  if (!doc.IsObject()) return BadRequest("a message must be a JSON object");
  if (const Value* name = Find(doc, "event")) {
    Event event;
    std::string kind;
    Problem p = CheckVersion(doc);
    if (!p) p = As(*name, "event", kind);
    if (!p) p = DecodeEvent(doc, kind, event);
    if (p) return *p;
    return ServerMessage(std::move(event));
  }
  Reply reply;
  // Best effort: an error names the reply's id when it can be read.
  if (const Value* id = Find(doc, "id"); id && id->IsUint64()) reply.id = id->GetUint64();
  Problem p = CheckVersion(doc);
  if (!p) p = DecodeReply(doc, reply, 0);
  if (p) {
    p->id = reply.id;
    return *p;
  }
  return ServerMessage(std::move(reply));
}

}  // namespace internal

std::optional<graph::DeadlockReport> ParseDeadlockJson(std::string_view json) {
  rapidjson::Document doc;
  if (internal::ParseJson(json, doc)) return std::nullopt;
  graph::DeadlockReport report;
  if (internal::ReadDeadlock(doc, report)) return std::nullopt;
  return report;
}

}  // namespace lockgraph::protocol
