// The protocol codec: both encodings of every message, and every way a frame can be bad.
//
// Three kinds of test:
// - hand-written frames: each op's request written out by hand, in JSON and in the
//   binary grammar of protocol_binary.cc (little-endian bytes spelled out here, not
//   produced by cereal), so that the tests pin the wire format itself; leaving one
//   field out of them checks the required-field table (kRequired below, an independent
//   reading of PROTOCOL.md) in both encodings alike;
// - golden JSON text for replies and events, as other programs will read them;
// - rapidcheck properties: random messages survive encode -> decode in both encodings,
//   and random bytes or mutated frames never crash a decoder and, when they do decode,
//   mean the same after another encode and decode.
//
// Replaying a property failure: rapidcheck prints the shrunk counterexample and a line
// "seed: S"; rerun it with
//   RC_PARAMS="seed=S" build/codec/tests/client_protocol_test --gtest_filter='*.<Name>'
#include "lockgraph/protocol.h"

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/string.hpp>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <sstream>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace lockgraph::protocol {
namespace {

using graph::CycleEdge;
using graph::DeadlockReport;
using graph::RevokeReason;
using graph::VictimStep;

// ---------------------------------------------------------------- rendering as text

void Put(std::string& out, std::string_view key, std::string_view value) {
  out += key;
  out += '=';
  graph::AppendJsonString(out, value);
  out += ' ';
}
void Put(std::string& out, std::string_view key, std::int64_t value) {
  out += std::string(key) + "=" + std::to_string(value) + " ";
}
void PutU(std::string& out, std::string_view key, std::uint64_t value) {
  out += std::string(key) + "=" + std::to_string(value) + " ";
}
template <typename T>
void PutOpt(std::string& out, std::string_view key, const std::optional<T>& value) {
  if (!value) {
    out += std::string(key) + "=none ";
  } else if constexpr (std::is_same_v<T, std::string>) {
    Put(out, key, *value);
  } else if constexpr (std::is_unsigned_v<T>) {
    PutU(out, key, *value);
  } else {
    Put(out, key, static_cast<std::int64_t>(*value));
  }
}

std::string Describe(const DeadlockReport& r) {
  std::string out = "{";
  PutU(out, "id", r.id);
  for (const CycleEdge& e : r.cycle) {
    out += "edge{";
    Put(out, "owner", e.owner);
    Put(out, "waits_for", e.waits_for);
    Put(out, "mode", graph::ModeName(e.mode));
    Put(out, "held_by", e.held_by);
    Put(out, "site", e.site);
    Put(out, "soft", e.soft);
    out += "} ";
  }
  Put(out, "victim", r.victim);
  Put(out, "step", graph::VictimStepName(r.step));
  Put(out, "why", r.why);
  Put(out, "detected_at_us", r.detected_at_us);
  Put(out, "report_mode", r.report_mode);
  Put(out, "attempt", r.attempt);
  for (const std::string& u : r.unresponsive) Put(out, "unresponsive", u);
  return out + "}";
}

std::string Describe(const std::shared_ptr<const DeadlockReport>& r) {
  return r ? Describe(*r) : "none";
}

std::string Describe(const Request& r) {
  std::string out = "{";
  PutU(out, "id", r.id);
  Put(out, "op", OpName(r.op));
  PutOpt(out, "acked_seq", r.acked_seq);
  Put(out, "session", r.session);
  Put(out, "secret", r.secret);
  Put(out, "client", r.client);
  Put(out, "priority", r.priority);
  for (const auto& [k, v] : r.labels) Put(out, "label:" + k, v);
  PutOpt(out, "ttl_ms", r.ttl_ms);
  Put(out, "owner", r.owner);
  Put(out, "resource", r.resource);
  Put(out, "mode", graph::ModeName(r.mode));
  Put(out, "wait_ms", r.wait_ms);
  Put(out, "site", r.site);
  PutOpt(out, "started", r.started);
  PutOpt(out, "lease", r.lease);
  for (const ReclaimItem& h : r.holds) {
    out += "hold{";
    Put(out, "owner", h.owner);
    Put(out, "resource", h.resource);
    Put(out, "mode", graph::ModeName(h.mode));
    PutU(out, "token", h.token);
    out += "} ";
  }
  for (const Request& item : r.items) out += "item" + Describe(item) + " ";
  Put(out, "admin_token", r.admin_token);
  Put(out, "format", r.format);
  Put(out, "filter_owner", r.filter_owner);
  Put(out, "filter_resource", r.filter_resource);
  Put(out, "filter_session", r.filter_session);
  return out + "}";
}

std::string Describe(const Reply& r) {
  std::string out = "{";
  PutU(out, "id", r.id);
  Put(out, "code", graph::CodeName(r.code));
  Put(out, "message", r.message);
  Put(out, "leader", r.leader);
  PutOpt(out, "session", r.session);
  PutOpt(out, "secret", r.secret);
  PutOpt(out, "heartbeat_ms", r.heartbeat_ms);
  PutOpt(out, "epoch", r.epoch);
  PutOpt(out, "server", r.server);
  Put(out, "granted", r.granted);
  Put(out, "queued", r.queued);
  Put(out, "cancelled", r.cancelled);
  PutOpt(out, "lease", r.lease);
  PutOpt(out, "token", r.token);
  PutOpt(out, "started", r.started);
  PutOpt(out, "expires_in_ms", r.expires_in_ms);
  for (const Reply& result : r.results) out += "result" + Describe(result) + " ";
  if (r.revoked) {
    out += "revoked=[";
    for (auto lease : *r.revoked) out += std::to_string(lease) + ",";
    out += "] ";
  }
  PutOpt(out, "graph_dot", r.graph_dot);
  Put(out, "listing_key", r.listing_key);
  Put(out, "listing_json", r.listing_json);
  out += "deadlock=" + Describe(r.deadlock);
  return out + "}";
}

std::string Describe(const Event& e) {
  std::string out = "{";
  Put(out, "kind", EventName(e.kind));
  PutU(out, "seq", e.seq);
  PutU(out, "id", e.id);
  Put(out, "owner", e.owner);
  Put(out, "resource", e.resource);
  Put(out, "mode", graph::ModeName(e.mode));
  PutU(out, "lease", e.lease);
  PutU(out, "token", e.token);
  Put(out, "code", graph::CodeName(e.code));
  Put(out, "reason", graph::RevokeReasonName(e.reason));
  Put(out, "handover_in_ms", e.handover_in_ms);
  out += "deadlock=" + Describe(e.deadlock) + " ";
  Put(out, "report_json", e.report_json);
  return out + "}";
}

std::string Describe(const ServerMessage& m) {
  if (const Reply* r = std::get_if<Reply>(&m)) return "reply" + Describe(*r);
  return "event" + Describe(std::get<Event>(m));
}

std::string Describe(const DecodeError& e) {
  return std::string(graph::CodeName(e.code)) + " id=" + std::to_string(e.id) + " " + e.message;
}

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 0xF];
  }
  return out;
}

// ---------------------------------------------------------------- decoding helpers

constexpr Encoding kEncodings[] = {Encoding::kJson, Encoding::kBinary};

std::string EncodingName(Encoding e) { return e == Encoding::kJson ? "json" : "binary"; }

// The request, or a test failure naming the error (and a default Request).
Request MustDecode(std::string_view frame, const Limits& limits = {}) {
  auto result = DecodeRequest(frame, limits);
  if (const DecodeError* e = std::get_if<DecodeError>(&result)) {
    ADD_FAILURE() << "decode failed: " << Describe(*e) << "\nframe: " << frame
                  << "\nhex: " << Hex(frame);
    return Request{};
  }
  return std::get<Request>(result);
}

// The error, or a test failure naming what was decoded instead.
DecodeError MustFail(std::string_view frame, const Limits& limits = {}) {
  auto result = DecodeRequest(frame, limits);
  if (const Request* r = std::get_if<Request>(&result)) {
    ADD_FAILURE() << "decoded, expected an error: " << Describe(*r) << "\nhex: " << Hex(frame);
    return DecodeError{Code::kOk, "decoded", 0};
  }
  return std::get<DecodeError>(result);
}

ServerMessage MustDecodeServer(std::string_view frame) {
  auto result = DecodeServerMessage(frame);
  if (const DecodeError* e = std::get_if<DecodeError>(&result)) {
    ADD_FAILURE() << "decode failed: " << Describe(*e) << "\nframe: " << frame;
    return Reply{};
  }
  return std::get<ServerMessage>(result);
}

DecodeError MustFailServer(std::string_view frame) {
  auto result = DecodeServerMessage(frame);
  if (const ServerMessage* m = std::get_if<ServerMessage>(&result)) {
    ADD_FAILURE() << "decoded, expected an error: " << Describe(*m) << "\nhex: " << Hex(frame);
    return DecodeError{Code::kOk, "decoded", 0};
  }
  return std::get<DecodeError>(result);
}

Reply AsReply(const ServerMessage& m) {
  if (const Reply* r = std::get_if<Reply>(&m)) return *r;
  ADD_FAILURE() << "expected a reply: " << Describe(m);
  return Reply{};
}

Event AsEvent(const ServerMessage& m) {
  if (const Event* e = std::get_if<Event>(&m)) return *e;
  ADD_FAILURE() << "expected an event: " << Describe(m);
  return Event{};
}

// ---------------------------------------------------------------- hand-written frames

// Little-endian bytes, as a little-endian writer's cereal archive lays them out.
template <typename T>
std::string Le(T value) {
  std::string out;
  auto u = static_cast<std::make_unsigned_t<T>>(value);
  for (std::size_t i = 0; i < sizeof(T); ++i) out += static_cast<char>((u >> (8 * i)) & 0xFF);
  return out;
}
std::string BinString(std::string_view s) { return Le<std::uint64_t>(s.size()) + std::string(s); }

// Field bit numbers of the binary grammar.
enum Bit : int {
  kSessionBit = 0, kSecretBit, kAckedSeqBit, kClientBit, kPriorityBit, kLabelsBit,
  kTtlMsBit, kOwnerBit, kResourceBit, kModeBit, kWaitMsBit, kSiteBit, kStartedBit,
  kLeaseBit, kHoldsBit, kItemsBit, kAdminTokenBit, kFormatBit, kFilterOwnerBit,
  kFilterResourceBit, kFilterSessionBit,
};

// One field of a hand-written request: its JSON key and value text, its bit and bytes.
struct WireField {
  std::string name;
  int bit;
  std::string json;
  std::string binary;
};

WireField Str(std::string name, int bit, std::string value) {
  // Test values need no JSON escaping.
  return {name, bit, "\"" + value + "\"", BinString(value)};
}
WireField I64(std::string name, int bit, std::int64_t v) {
  return {name, bit, std::to_string(v), Le<std::int64_t>(v)};
}
WireField U64(std::string name, int bit, std::uint64_t v) {
  return {name, bit, std::to_string(v), Le<std::uint64_t>(v)};
}
WireField Decimal(std::string name, int bit, std::uint64_t v) {
  return {name, bit, "\"" + std::to_string(v) + "\"", Le<std::uint64_t>(v)};
}
WireField ModeField(char mode) {
  return {"mode", kModeBit, std::string("\"") + mode + "\"", std::string(1, mode == 'X' ? 1 : 0)};
}

std::string BinaryHeader(std::uint8_t kind) { return std::string("\x01\x01", 2) + static_cast<char>(kind); }

std::string JsonFrame(std::uint64_t id, std::string_view op, const std::vector<WireField>& fields) {
  std::string out = "{\"v\":1,\"id\":" + std::to_string(id) + ",\"op\":\"" + std::string(op) + "\"";
  for (const WireField& f : fields) out += ",\"" + f.name + "\":" + f.json;
  return out + "}";
}

// The request body (no header): id, op, presence mask, the fields in bit order.
std::string BinaryBody(std::uint64_t id, Op op, const std::vector<WireField>& fields) {
  std::uint32_t mask = 0;
  std::map<int, std::string> by_bit;
  for (const WireField& f : fields) {
    mask |= std::uint32_t{1} << f.bit;
    by_bit[f.bit] = f.binary;
  }
  std::string out = Le<std::uint64_t>(id) + static_cast<char>(op) + Le<std::uint32_t>(mask);
  for (const auto& [bit, bytes] : by_bit) out += bytes;
  return out;
}

std::string BinaryFrame(std::uint64_t id, Op op, const std::vector<WireField>& fields) {
  return BinaryHeader(1) + BinaryBody(id, op, fields);
}

// One example per op, every field it reads given a value that is not its default, in
// the order the JSON encoder writes them (session, secret, the op's fields, acked_seq).
struct Example {
  Op op;
  std::vector<WireField> fields;
};

constexpr std::uint64_t kExampleId = 5;
constexpr std::uint64_t kLease = (std::uint64_t{1} << 40) | 1;  // epoch 1, seq 1

std::vector<WireField> Auth() {
  return {Str("session", kSessionBit, "s-1"), Str("secret", kSecretBit, "k3y")};
}
std::vector<WireField> With(std::vector<WireField> a, const std::vector<WireField>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<Example> Examples() {
  const WireField holds{
      "holds", kHoldsBit,
      R"([{"owner":"tx","resource":"r:1","mode":"S","token":"9"}])",
      Le<std::uint32_t>(1) + BinString("tx") + BinString("r:1") + std::string(1, '\0') +
          Le<std::uint64_t>(9)};
  const WireField items{
      "items", kItemsBit,
      R"([{"id":6,"op":"heartbeat"},{"id":7,"op":"unwait","owner":"o","resource":"r"}])",
      Le<std::uint32_t>(2) + BinaryBody(6, Op::kHeartbeat, {}) +
          BinaryBody(7, Op::kUnwait, {Str("owner", kOwnerBit, "o"), Str("resource", kResourceBit, "r")})};
  const WireField labels{"labels", kLabelsBit, R"({"env":"prod"})",
                         Le<std::uint32_t>(1) + BinString("env") + BinString("prod")};
  return {
      {Op::kHello,
       {Str("client", kClientBit, "app/1.0"), I64("ttl_ms", kTtlMsBit, 10000),
        {"priority", kPriorityBit, "-3", Le<std::int32_t>(-3)}, labels}},
      {Op::kHeartbeat, With(Auth(), {U64("acked_seq", kAckedSeqBit, 12)})},
      {Op::kBye, Auth()},
      {Op::kAcquire,
       With(Auth(), {Str("owner", kOwnerBit, "tx-17"), Str("resource", kResourceBit, "account:7"),
                     ModeField('X'), I64("ttl_ms", kTtlMsBit, 30000),
                     I64("wait_ms", kWaitMsBit, -1), Str("site", kSiteBit, "transfer.cc:42"),
                     I64("started", kStartedBit, 1700000000000000)})},
      {Op::kRenew,
       With(Auth(), {Decimal("lease", kLeaseBit, kLease), I64("ttl_ms", kTtlMsBit, 5000)})},
      {Op::kRelease,
       With(Auth(), {Decimal("lease", kLeaseBit, kLease), Str("owner", kOwnerBit, "tx"),
                     Str("resource", kResourceBit, "r:1")})},
      {Op::kHold,
       With(Auth(), {Str("owner", kOwnerBit, "tx"), Str("resource", kResourceBit, "r:1"),
                     ModeField('S'), I64("ttl_ms", kTtlMsBit, 1000), Str("site", kSiteBit, "a.py:3")})},
      {Op::kWait,
       With(Auth(), {Str("owner", kOwnerBit, "tx"), Str("resource", kResourceBit, "r:2"),
                     ModeField('S'), Str("site", kSiteBit, "a.py:4")})},
      {Op::kUnwait, With(Auth(), {Str("owner", kOwnerBit, "tx"), Str("resource", kResourceBit, "r:2")})},
      {Op::kReclaim, With(Auth(), {holds})},
      {Op::kBatch, With(Auth(), {items})},
      {Op::kRevoke,
       {Str("admin_token", kAdminTokenBit, "t0ken"), Decimal("lease", kLeaseBit, 99),
        Str("resource", kResourceBit, "r:1")}},
      {Op::kGraph, {Str("format", kFormatBit, "dot")}},
      {Op::kStats,
       {Str("owner", kFilterOwnerBit, "tx"), Str("resource", kFilterResourceBit, "r:1"),
        Str("session", kFilterSessionBit, "s-1")}},
      {Op::kLeases, {Str("session", kFilterSessionBit, "s-1")}},
      {Op::kDeadlocks, {}},
  };
}

// PROTOCOL.md's request table, read independently of FieldsOf() in protocol.cc: the
// fields a request of each op cannot do without.
const std::map<Op, std::vector<std::string>>& RequiredFields() {
  static const std::map<Op, std::vector<std::string>> kRequired = {
      {Op::kHello, {"client", "ttl_ms"}},
      {Op::kHeartbeat, {"session", "secret"}},
      {Op::kBye, {"session", "secret"}},
      {Op::kAcquire, {"session", "secret", "owner", "resource", "mode", "ttl_ms", "wait_ms"}},
      {Op::kRenew, {"session", "secret", "lease"}},
      {Op::kRelease, {"session", "secret"}},  // and lease, or owner + resource
      {Op::kHold, {"session", "secret", "owner", "resource", "mode", "ttl_ms"}},
      {Op::kWait, {"session", "secret", "owner", "resource", "mode"}},
      {Op::kUnwait, {"session", "secret", "owner", "resource"}},
      {Op::kReclaim, {"session", "secret", "holds"}},
      {Op::kBatch, {"session", "secret", "items"}},
      {Op::kRevoke, {"admin_token"}},  // and lease or resource
      {Op::kGraph, {}},
      {Op::kStats, {}},
      {Op::kLeases, {}},
      {Op::kDeadlocks, {}},
  };
  return kRequired;
}

std::vector<WireField> Without(const std::vector<WireField>& fields, std::string_view name) {
  std::vector<WireField> out;
  for (const WireField& f : fields) {
    if (f.name != name) out.push_back(f);
  }
  return out;
}

const std::string kHeartbeatJson = R"({"v":1,"id":42,"op":"heartbeat","session":"s","secret":"k"})";

// ---------------------------------------------------------------- names

TEST(ProtocolNames, OpsRoundTripThroughTheirNames) {
  for (int i = 0; i <= static_cast<int>(Op::kDeadlocks); ++i) {
    auto op = static_cast<Op>(i);
    EXPECT_EQ(ParseOp(OpName(op)), op) << OpName(op);
  }
  EXPECT_EQ(OpName(Op::kAcquire), "acquire");
  EXPECT_EQ(OpName(Op::kDeadlocks), "deadlocks");
  EXPECT_EQ(ParseOp("Acquire"), std::nullopt);
  EXPECT_EQ(ParseOp(""), std::nullopt);
}

TEST(ProtocolNames, SessionScopedOps) {
  std::string scoped;
  for (int i = 0; i <= static_cast<int>(Op::kDeadlocks); ++i) {
    if (IsSessionScoped(static_cast<Op>(i))) scoped += std::string(OpName(static_cast<Op>(i))) + " ";
  }
  EXPECT_EQ(scoped, "heartbeat bye acquire renew release hold wait unwait reclaim batch ");
}

TEST(ProtocolNames, EventNames) {
  EXPECT_EQ(EventName(EventKind::kGranted), "granted");
  EXPECT_EQ(EventName(EventKind::kDenied), "denied");
  EXPECT_EQ(EventName(EventKind::kRevoked), "revoked");
  EXPECT_EQ(EventName(EventKind::kOrderWarning), "order_warning");
}

TEST(ProtocolNames, EncodingIsChosenByTheFirstByte) {
  EXPECT_EQ(EncodingOf(""), Encoding::kJson);
  EXPECT_EQ(EncodingOf("{}"), Encoding::kJson);
  EXPECT_EQ(EncodingOf(" {}"), Encoding::kBinary);
  EXPECT_EQ(EncodingOf("\x01"), Encoding::kBinary);
  EXPECT_NE(kBinaryFormat, '{');
  Request r;
  EXPECT_EQ(EncodingOf(EncodeRequest(r, Encoding::kJson)), Encoding::kJson);
  EXPECT_EQ(EncodingOf(EncodeRequest(r, Encoding::kBinary)), Encoding::kBinary);
  EXPECT_EQ(EncodeRequest(r, Encoding::kBinary)[0], static_cast<char>(kBinaryFormat));
}

// ---------------------------------------------------------------- hand-written requests

TEST(ProtocolRequests, HandWrittenFramesDecodeAlikeInBothEncodings) {
  for (const Example& ex : Examples()) {
    SCOPED_TRACE(OpName(ex.op));
    Request from_json = MustDecode(JsonFrame(kExampleId, OpName(ex.op), ex.fields));
    Request from_binary = MustDecode(BinaryFrame(kExampleId, ex.op, ex.fields));
    EXPECT_EQ(from_json.op, ex.op);
    EXPECT_EQ(from_json.id, kExampleId);
    EXPECT_EQ(Describe(from_json), Describe(from_binary));
  }
}

TEST(ProtocolRequests, EncodersWriteExactlyTheHandWrittenFrames) {
  for (const Example& ex : Examples()) {
    SCOPED_TRACE(OpName(ex.op));
    const std::string json = JsonFrame(kExampleId, OpName(ex.op), ex.fields);
    const std::string binary = BinaryFrame(kExampleId, ex.op, ex.fields);
    Request r = MustDecode(json);
    EXPECT_EQ(EncodeRequest(r, Encoding::kJson), json);
    EXPECT_EQ(Hex(EncodeRequest(r, Encoding::kBinary)), Hex(binary));
  }
}

TEST(ProtocolRequests, HandWrittenFramesDecodeToTheirFields) {
  Request acquire = MustDecode(JsonFrame(kExampleId, "acquire", Examples()[3].fields));
  EXPECT_EQ(acquire.session, "s-1");
  EXPECT_EQ(acquire.secret, "k3y");
  EXPECT_EQ(acquire.owner, "tx-17");
  EXPECT_EQ(acquire.resource, "account:7");
  EXPECT_EQ(acquire.mode, Mode::kExclusive);
  EXPECT_EQ(acquire.ttl_ms, 30000);
  EXPECT_EQ(acquire.wait_ms, -1);
  EXPECT_EQ(acquire.site, "transfer.cc:42");
  EXPECT_EQ(acquire.started, 1700000000000000);

  Request hello = MustDecode(JsonFrame(1, "hello", Examples()[0].fields));
  EXPECT_EQ(hello.client, "app/1.0");
  EXPECT_EQ(hello.ttl_ms, 10000);
  EXPECT_EQ(hello.priority, -3);
  ASSERT_EQ(hello.labels.size(), 1u);
  EXPECT_EQ(hello.labels[0], (std::pair<std::string, std::string>{"env", "prod"}));

  Request batch = MustDecode(BinaryFrame(2, Op::kBatch, Examples()[10].fields));
  ASSERT_EQ(batch.items.size(), 2u);
  EXPECT_EQ(batch.items[0].op, Op::kHeartbeat);
  EXPECT_EQ(batch.items[0].id, 6u);
  EXPECT_EQ(batch.items[1].owner, "o");
  // Items inherit the batch's session; they carry none of their own.
  EXPECT_EQ(batch.items[1].session, "");

  Request stats = MustDecode(JsonFrame(3, "stats", Examples()[13].fields));
  EXPECT_EQ(stats.filter_owner, "tx");
  EXPECT_EQ(stats.filter_resource, "r:1");
  EXPECT_EQ(stats.filter_session, "s-1");
  EXPECT_EQ(stats.owner, "");
  EXPECT_EQ(stats.session, "");

  Request renew = MustDecode(JsonFrame(4, "renew", Examples()[4].fields));
  EXPECT_EQ(renew.lease, kLease);
}

TEST(ProtocolRequests, MissingRequiredFieldIsBadRequestInBothEncodings) {
  for (const Example& ex : Examples()) {
    for (const std::string& name : RequiredFields().at(ex.op)) {
      SCOPED_TRACE(std::string(OpName(ex.op)) + " without " + name);
      auto fields = Without(ex.fields, name);
      ASSERT_NE(fields.size(), ex.fields.size()) << "the example lacks " << name;
      for (const std::string& frame : {JsonFrame(kExampleId, OpName(ex.op), fields),
                                       BinaryFrame(kExampleId, ex.op, fields)}) {
        DecodeError e = MustFail(frame);
        EXPECT_EQ(e.code, Code::kBadRequest);
        EXPECT_EQ(e.message, "missing field \"" + name + "\"");
        EXPECT_EQ(e.id, kExampleId);
      }
    }
  }
}

TEST(ProtocolRequests, OptionalFieldsMayBeLeftOut) {
  const Request defaults;
  for (const Example& ex : Examples()) {
    const auto& required = RequiredFields().at(ex.op);
    for (const WireField& f : ex.fields) {
      if (std::find(required.begin(), required.end(), f.name) != required.end()) continue;
      SCOPED_TRACE(std::string(OpName(ex.op)) + " without " + f.name);
      auto fields = Without(ex.fields, f.name);
      Request from_json = MustDecode(JsonFrame(kExampleId, OpName(ex.op), fields));
      Request from_binary = MustDecode(BinaryFrame(kExampleId, ex.op, fields));
      EXPECT_EQ(Describe(from_json), Describe(from_binary));
    }
  }
  // The defaults of the optional fields.
  Request hello = MustDecode(R"({"v":1,"id":1,"op":"hello","client":"c","ttl_ms":1})");
  EXPECT_EQ(hello.priority, 0);
  EXPECT_TRUE(hello.labels.empty());
  Request graph = MustDecode(R"({"v":1,"id":1,"op":"graph"})");
  EXPECT_EQ(graph.format, "json");
  Request renew = MustDecode(R"({"v":1,"id":1,"op":"renew","session":"s","secret":"k","lease":"1"})");
  EXPECT_EQ(renew.ttl_ms, std::nullopt);
  EXPECT_EQ(renew.acked_seq, std::nullopt);
  Request acquire = MustDecode(
      R"({"v":1,"id":1,"op":"acquire","session":"s","secret":"k","owner":"o","resource":"r","mode":"S","ttl_ms":1,"wait_ms":0})");
  EXPECT_EQ(acquire.site, "");
  EXPECT_EQ(acquire.started, std::nullopt);
  EXPECT_EQ(acquire.mode, Mode::kShared);
}

TEST(ProtocolRequests, ReleaseNeedsLeaseOrOwnerAndResource) {
  for (auto fields : {Auth(), With(Auth(), {Str("owner", kOwnerBit, "tx")}),
                      With(Auth(), {Str("resource", kResourceBit, "r")}),
                      With(Auth(), {Str("owner", kOwnerBit, ""), Str("resource", kResourceBit, "r")})}) {
    for (const std::string& frame :
         {JsonFrame(8, "release", fields), BinaryFrame(8, Op::kRelease, fields)}) {
      DecodeError e = MustFail(frame);
      EXPECT_EQ(Describe(e), "BAD_REQUEST id=8 release needs \"lease\", or \"owner\" and \"resource\"");
    }
  }
  Request by_name = MustDecode(JsonFrame(
      8, "release", With(Auth(), {Str("owner", kOwnerBit, "tx"), Str("resource", kResourceBit, "r")})));
  EXPECT_EQ(by_name.lease, std::nullopt);
  EXPECT_EQ(by_name.owner, "tx");
}

TEST(ProtocolRequests, RevokeNeedsLeaseOrResource) {
  const std::vector<WireField> fields = {Str("admin_token", kAdminTokenBit, "t")};
  for (const std::string& frame : {JsonFrame(8, "revoke", fields), BinaryFrame(8, Op::kRevoke, fields)}) {
    EXPECT_EQ(Describe(MustFail(frame)), "BAD_REQUEST id=8 revoke needs \"lease\" or \"resource\"");
  }
}

TEST(ProtocolRequests, UnknownFieldsAreIgnoredAndWhitespaceAllowed) {
  Request r = MustDecode(
      "{\n \"op\" : \"unwait\", \"resource\":\"r\", \"future\": {\"x\":[1,2,{\"y\":null}]},\n"
      " \"secret\":\"k3y\",\"id\":3, \"v\":1, \"owner\":\"o\", \"session\":\"s-1\", \"ttl_ms\":\"ignored\"}\n ");
  EXPECT_EQ(Describe(r), Describe(MustDecode(JsonFrame(
                             3, "unwait", With(Auth(), {Str("owner", kOwnerBit, "o"),
                                                       Str("resource", kResourceBit, "r")})))));
  EXPECT_EQ(r.session, "s-1");
  EXPECT_EQ(r.owner, "o");
  EXPECT_EQ(r.ttl_ms, std::nullopt);  // not a field of unwait: ignored, whatever its type
  // The first byte chooses the encoding, so JSON cannot start with whitespace.
  EXPECT_EQ(MustFail(" " + kHeartbeatJson).code, Code::kBadRequest);
  // A binary frame may carry fields its op does not read: they are ignored too.
  Request b = MustDecode(BinaryFrame(
      3, Op::kHeartbeat, With(Auth(), {Str("owner", kOwnerBit, "o"), I64("ttl_ms", kTtlMsBit, 5)})));
  EXPECT_EQ(b.owner, "");
  EXPECT_EQ(b.ttl_ms, std::nullopt);
}

TEST(ProtocolRequests, BigEndianBinaryFramesDecodeTheSame) {
  // A big-endian writer's archive: flag 0, every number byte-swapped.
  auto be64 = [](std::uint64_t v) {
    std::string le = Le<std::uint64_t>(v);
    return std::string(le.rbegin(), le.rend());
  };
  std::string frame = std::string("\x01\x00\x01", 3) + be64(77) + static_cast<char>(Op::kRenew) +
                      std::string("\x00\x00\x20\x03", 4) +  // bits 0, 1, 13
                      be64(1) + "s" + be64(1) + "k" + be64(kLease);
  Request r = MustDecode(frame);
  EXPECT_EQ(r.id, 77u);
  EXPECT_EQ(r.op, Op::kRenew);
  EXPECT_EQ(r.session, "s");
  EXPECT_EQ(r.lease, kLease);
}

// The codec writes cereal's portable binary layout by hand (no stream, no archive):
// cereal's own archives must read our frames and write the same bytes.
TEST(ProtocolBinaryLayout, CerealReadsOurFramesAndWritesTheSameBytes) {
  Request r;
  r.id = 0x0102030405060708;
  r.op = Op::kAcquire;
  r.session = "s1";
  r.secret = std::string(40, 'k');  // longer than the small-string buffer
  r.owner = "tx-17";
  r.resource = "account:7";
  r.mode = Mode::kShared;
  r.ttl_ms = -30000;
  r.wait_ms = 2000;
  const std::string frame = EncodeRequest(r, Encoding::kBinary);
  ASSERT_EQ(static_cast<std::uint8_t>(frame[0]), kBinaryFormat);

  // Read with cereal: the archive takes the byte-order flag, then the grammar's fields
  // (present fields follow in increasing bit order: session 0, secret 1, ttl_ms 6,
  // owner 7, resource 8, mode 9, wait_ms 10).
  std::istringstream in(frame.substr(1));
  cereal::PortableBinaryInputArchive ia(in);
  std::uint8_t kind = 0, op = 0, mode = 9;
  std::uint64_t id = 0;
  std::uint32_t present = 0;
  std::string session, secret, owner, resource;
  std::int64_t ttl = 0, wait = 0;
  ia(kind, id, op, present, session, secret, ttl, owner, resource, mode, wait);
  EXPECT_EQ(kind, 1);
  EXPECT_EQ(id, r.id);
  EXPECT_EQ(op, static_cast<std::uint8_t>(Op::kAcquire));
  EXPECT_EQ(present, (1u << 0) | (1u << 1) | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 9) | (1u << 10));
  EXPECT_EQ(session, "s1");
  EXPECT_EQ(secret, r.secret);
  EXPECT_EQ(ttl, -30000);
  EXPECT_EQ(owner, "tx-17");
  EXPECT_EQ(resource, "account:7");
  EXPECT_EQ(mode, static_cast<std::uint8_t>(Mode::kShared));
  EXPECT_EQ(wait, 2000);
  EXPECT_EQ(in.peek(), std::char_traits<char>::eof());

  std::ostringstream out;
  {
    cereal::PortableBinaryOutputArchive oa(out);
    oa(kind, id, op, present, session, secret, ttl, owner, resource, mode, wait);
  }
  EXPECT_EQ(std::string(1, static_cast<char>(kBinaryFormat)) + out.str(), frame);

  // A reply too: id, code, message, leader, then the optional session.
  Reply reply;
  reply.id = 99;
  reply.code = Code::kTimeout;
  reply.message = "busy";
  reply.session = "abc";
  const std::string rframe = EncodeReply(reply, Encoding::kBinary);
  std::istringstream rin(rframe.substr(1));
  cereal::PortableBinaryInputArchive ra(rin);
  std::uint64_t rid = 0;
  std::uint8_t rkind = 0, code = 0, has_session = 0;
  std::string message, leader, rsession;
  ra(rkind, rid, code, message, leader, has_session, rsession);
  EXPECT_EQ(rkind, 2);
  EXPECT_EQ(rid, 99u);
  EXPECT_EQ(code, static_cast<std::uint8_t>(Code::kTimeout));
  EXPECT_EQ(message, "busy");
  EXPECT_EQ(leader, "");
  EXPECT_EQ(has_session, 1);
  EXPECT_EQ(rsession, "abc");
}

// ---------------------------------------------------------------- golden JSON

TEST(ProtocolGolden, AcquireRequest) {
  Request r;
  r.id = 7;
  r.op = Op::kAcquire;
  r.session = "s1";
  r.secret = "k";
  r.owner = "tx-17";
  r.resource = "account:7";
  r.mode = Mode::kExclusive;
  r.ttl_ms = 30000;
  r.wait_ms = 2000;
  r.site = "transfer.cc:42";
  EXPECT_EQ(EncodeRequest(r, Encoding::kJson),
            R"({"v":1,"id":7,"op":"acquire","session":"s1","secret":"k","owner":"tx-17",)"
            R"("resource":"account:7","mode":"X","ttl_ms":30000,"wait_ms":2000,"site":"transfer.cc:42"})");
}

TEST(ProtocolGolden, BatchRequest) {
  Request item;
  item.id = 11;
  item.op = Op::kRelease;
  item.lease = 42;
  Request r;
  r.id = 10;
  r.op = Op::kBatch;
  r.session = "s";
  r.secret = "k";
  r.acked_seq = 4;
  r.items = {item};
  EXPECT_EQ(EncodeRequest(r, Encoding::kJson),
            R"({"v":1,"id":10,"op":"batch","session":"s","secret":"k",)"
            R"("items":[{"id":11,"op":"release","lease":"42"}],"acked_seq":4})");
}

TEST(ProtocolGolden, AcquireGrantedReply) {
  Reply r;
  r.id = 7;
  r.granted = true;
  r.lease = kLease;
  r.token = kLease;
  r.started = 1700000000000000;
  EXPECT_EQ(EncodeReply(r, Encoding::kJson),
            R"({"v":1,"id":7,"ok":true,"granted":true,"lease":"1099511627777",)"
            R"("token":"1099511627777","started":1700000000000000})");
}

TEST(ProtocolGolden, HelloReply) {
  Reply r;
  r.id = 1;
  r.session = "9f2c";
  r.secret = "e1a0";
  r.heartbeat_ms = 3333;
  r.epoch = 1;
  r.server = "lockgraphd 0.1.0";
  EXPECT_EQ(EncodeReply(r, Encoding::kJson),
            R"({"v":1,"id":1,"ok":true,"session":"9f2c","secret":"e1a0","heartbeat_ms":3333,)"
            R"("epoch":1,"server":"lockgraphd 0.1.0"})");
}

TEST(ProtocolGolden, ErrorReplies) {
  Reply bad;
  bad.id = 9;
  bad.code = Code::kBadRequest;
  bad.message = "missing field \"owner\"";
  EXPECT_EQ(EncodeReply(bad, Encoding::kJson),
            R"({"v":1,"id":9,"ok":false,"error":{"code":"BAD_REQUEST","message":"missing field \"owner\""}})");

  Reply leader;
  leader.id = 10;
  leader.code = Code::kNotLeader;
  leader.message = "not the leader";
  leader.leader = "tcp://10.0.0.2:7790";
  EXPECT_EQ(EncodeReply(leader, Encoding::kJson),
            R"({"v":1,"id":10,"ok":false,"error":{"code":"NOT_LEADER","message":"not the leader",)"
            R"("leader":"tcp://10.0.0.2:7790"}})");

  // An acquire that found the resource busy with wait_ms 0 still says when its owner started.
  Reply timeout;
  timeout.id = 11;
  timeout.code = Code::kTimeout;
  timeout.message = "busy";
  timeout.started = 123;
  EXPECT_EQ(EncodeReply(timeout, Encoding::kJson),
            R"({"v":1,"id":11,"ok":false,"error":{"code":"TIMEOUT","message":"busy"},"started":123})");
}

std::shared_ptr<const DeadlockReport> SampleReport() {
  auto r = std::make_shared<DeadlockReport>();
  r->id = 1;
  r->cycle = {{"s1/a", "r:2", Mode::kExclusive, "s2/b", "x.cc:1", false},
              {"s2/b", "r:1", Mode::kShared, "s1/a", "", true}};
  r->victim = "s2/b";
  r->step = VictimStep::kYoungest;
  r->why = "youngest";
  r->detected_at_us = 5000;
  return r;
}

constexpr std::string_view kSampleReportJson =
    R"({"cycle":[{"owner":"s1/a","waits_for":"r:2","mode":"X","held_by":"s2/b","site":"x.cc:1"},)"
    R"({"owner":"s2/b","waits_for":"r:1","mode":"S","held_by":"s1/a","site":"","soft":true}],)"
    R"("victim":"s2/b","why":"youngest","detected_at_us":5000,"id":1,"step":"youngest",)"
    R"("report_mode":false,"attempt":1,"unresponsive":[]})";

TEST(ProtocolGolden, DeadlockReply) {
  Reply r;
  r.id = 12;
  r.code = Code::kDeadlock;
  r.message = "deadlock: you are the victim";
  r.deadlock = SampleReport();
  EXPECT_EQ(EncodeReply(r, Encoding::kJson),
            R"({"v":1,"id":12,"ok":false,"error":{"code":"DEADLOCK","message":"deadlock: you are the victim",)"
            R"("deadlock":)" + std::string(kSampleReportJson) + "}}");
}

TEST(ProtocolGolden, RevokedEventWithDeadlock) {
  Event e;
  e.kind = EventKind::kRevoked;
  e.seq = 3;
  e.lease = kLease;
  e.owner = "b";
  e.resource = "r:1";
  e.token = kLease + 1;
  e.reason = RevokeReason::kDeadlock;
  e.handover_in_ms = 1000;
  e.deadlock = SampleReport();
  EXPECT_EQ(EncodeEvent(e, Encoding::kJson),
            R"({"v":1,"event":"revoked","seq":3,"lease":"1099511627777","owner":"b","resource":"r:1",)"
            R"("token":"1099511627778","reason":"deadlock","handover_in_ms":1000,"deadlock":)" +
                std::string(kSampleReportJson) + "}");
  Event back = AsEvent(MustDecodeServer(EncodeEvent(e, Encoding::kJson)));
  EXPECT_EQ(Describe(back), Describe(e));
}

TEST(ProtocolGolden, GrantedAndDeniedEvents) {
  Event g;
  g.kind = EventKind::kGranted;
  g.seq = 1;
  g.id = 7;
  g.owner = "tx";
  g.resource = "r:1";
  g.mode = Mode::kShared;
  g.lease = 5;
  g.token = 6;
  EXPECT_EQ(EncodeEvent(g, Encoding::kJson),
            R"({"v":1,"event":"granted","seq":1,"id":7,"owner":"tx","resource":"r:1","mode":"S",)"
            R"("lease":"5","token":"6"})");

  Event d;
  d.kind = EventKind::kDenied;
  d.seq = 2;
  d.owner = "tx";
  d.resource = "r:1";
  d.code = Code::kCancelled;
  // A report-mode denial has no request id: none is written.
  EXPECT_EQ(EncodeEvent(d, Encoding::kJson),
            R"({"v":1,"event":"denied","seq":2,"owner":"tx","resource":"r:1","code":"CANCELLED"})");
  d.id = 8;
  d.code = Code::kDeadlock;
  d.deadlock = SampleReport();
  EXPECT_EQ(EncodeEvent(d, Encoding::kJson),
            R"({"v":1,"event":"denied","seq":2,"id":8,"owner":"tx","resource":"r:1","code":"DEADLOCK",)"
            R"("deadlock":)" + std::string(kSampleReportJson) + "}");
}

TEST(ProtocolGolden, OrderWarningSplicesTheReport) {
  Event e;
  e.kind = EventKind::kOrderWarning;
  e.seq = 4;
  e.report_json = R"({"from":"a","to":"b","site":"x.cc:9","chain":[]})";
  const std::string json = EncodeEvent(e, Encoding::kJson);
  EXPECT_EQ(json, R"({"v":1,"event":"order_warning","seq":4,"report":{"from":"a","to":"b","site":"x.cc:9","chain":[]}})");
  EXPECT_EQ(AsEvent(MustDecodeServer(json)).report_json, e.report_json);
}

TEST(ProtocolGolden, QueryRepliesSpliceTheirListing) {
  Reply stats;
  stats.id = 3;
  stats.listing_key = "stats";
  stats.listing_json = R"({"commands":12,"victims_by_step":[0,1,0,0]})";
  EXPECT_EQ(EncodeReply(stats, Encoding::kJson),
            R"({"v":1,"id":3,"ok":true,"stats":{"commands":12,"victims_by_step":[0,1,0,0]}})");

  Reply dot;
  dot.id = 4;
  dot.graph_dot = "digraph G {\n\"s/a\" -> \"r\";\n}\n";
  const std::string dot_json = EncodeReply(dot, Encoding::kJson);
  EXPECT_EQ(dot_json, R"({"v":1,"id":4,"ok":true,"graph":"digraph G {\n\"s/a\" -> \"r\";\n}\n"})");
  EXPECT_EQ(AsReply(MustDecodeServer(dot_json)).graph_dot, dot.graph_dot);

  Reply graph;
  graph.id = 5;
  graph.listing_key = "graph";
  graph.listing_json = R"({"owners":["s/a"],"edges":[]})";
  Reply back = AsReply(MustDecodeServer(EncodeReply(graph, Encoding::kJson)));
  EXPECT_EQ(back.graph_dot, std::nullopt);
  EXPECT_EQ(back.listing_key, "graph");
  EXPECT_EQ(back.listing_json, graph.listing_json);
}

TEST(ProtocolGolden, BatchAndRevokeReplies) {
  Reply ok_item;
  ok_item.id = 11;
  Reply bad_item;
  bad_item.id = 12;
  bad_item.code = Code::kNotOwner;
  bad_item.message = "not yours";
  Reply batch;
  batch.id = 10;
  batch.results = {ok_item, bad_item};
  EXPECT_EQ(EncodeReply(batch, Encoding::kJson),
            R"({"v":1,"id":10,"ok":true,"results":[{"id":11,"ok":true},)"
            R"({"id":12,"ok":false,"error":{"code":"NOT_OWNER","message":"not yours"}}]})");

  Reply revoke;
  revoke.id = 13;
  revoke.revoked = std::vector<graph::LeaseId>{kLease, 3};
  EXPECT_EQ(EncodeReply(revoke, Encoding::kJson),
            R"({"v":1,"id":13,"ok":true,"revoked":["1099511627777","3"]})");
}

TEST(ProtocolGolden, StringsAreEscapedAndMadeValidUtf8) {
  Reply r;
  r.id = 1;
  r.code = Code::kBadRequest;
  r.message = "q\"b\\n\n\x01 \xc3\xa9 bad:\xff end";
  const std::string json = EncodeReply(r, Encoding::kJson);
  EXPECT_EQ(json,
            "{\"v\":1,\"id\":1,\"ok\":false,\"error\":{\"code\":\"BAD_REQUEST\",\"message\":"
            "\"q\\\"b\\\\n\\n\\u0001 \xc3\xa9 bad:\xef\xbf\xbd end\"}}");
  EXPECT_EQ(AsReply(MustDecodeServer(json)).message, "q\"b\\n\n\x01 \xc3\xa9 bad:\xef\xbf\xbd end");
}

TEST(ProtocolGolden, ServerMessagesFromOtherWriters) {
  // Key order, whitespace and unknown fields are the writer's business.
  Reply r = AsReply(MustDecodeServer(
      R"({ "ok": true, "token": "18446744073709551615", "new_field": [1], "id": 8, "v": 1, "queued": true })"));
  EXPECT_EQ(r.id, 8u);
  EXPECT_TRUE(r.queued);
  EXPECT_EQ(r.token, std::numeric_limits<std::uint64_t>::max());
  Event e = AsEvent(MustDecodeServer(
      R"({"v":1,"event":"denied","seq":9,"owner":"o","resource":"r","code":"TIMEOUT","extra":{}})"));
  EXPECT_EQ(e.kind, EventKind::kDenied);
  EXPECT_EQ(e.id, 0u);
  EXPECT_EQ(e.code, Code::kTimeout);
  Event v = AsEvent(MustDecodeServer(
      R"({"v":1,"event":"revoked","seq":9,"lease":"1","owner":"o","resource":"r","token":"2","reason":"operator"})"));
  EXPECT_EQ(v.handover_in_ms, 0);
  EXPECT_EQ(v.reason, RevokeReason::kOperator);
  EXPECT_EQ(v.deadlock, nullptr);
}

TEST(ProtocolGolden, DeadlockReportsParseBack) {
  auto parsed = ParseDeadlockJson(graph::RenderJson(*SampleReport()));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(Describe(*parsed), Describe(*SampleReport()));
  // The minimum PROTOCOL.md promises.
  auto minimal = ParseDeadlockJson(
      R"({"cycle":[{"owner":"a","waits_for":"r","mode":"X","held_by":"b","site":""}],"victim":"a","why":"w","detected_at_us":1})");
  ASSERT_TRUE(minimal.has_value());
  EXPECT_EQ(minimal->cycle.size(), 1u);
  EXPECT_EQ(minimal->attempt, 1);
  EXPECT_EQ(ParseDeadlockJson(""), std::nullopt);
  EXPECT_EQ(ParseDeadlockJson("[]"), std::nullopt);
  EXPECT_EQ(ParseDeadlockJson(R"({"cycle":[],"victim":"a","why":"w"})"), std::nullopt);
  EXPECT_EQ(ParseDeadlockJson(R"({"cycle":[{"owner":"a"}],"victim":"a","why":"w","detected_at_us":1})"),
            std::nullopt);
  EXPECT_EQ(ParseDeadlockJson(R"({"cycle":[],"victim":"a","why":"w","detected_at_us":1,"step":"coin"})"),
            std::nullopt);
}

// ---------------------------------------------------------------- bad requests

std::string ValidBinaryHeartbeat() {
  Request r;
  r.id = 42;
  r.op = Op::kHeartbeat;
  r.session = "s";
  r.secret = "k";
  return EncodeRequest(r, Encoding::kBinary);
}

TEST(ProtocolBadInput, EmptyFrame) {
  DecodeError e = MustFail("");
  EXPECT_EQ(e.code, Code::kBadRequest);
  EXPECT_EQ(e.id, 0u);
  EXPECT_EQ(MustFailServer("").code, Code::kBadRequest);
}

TEST(ProtocolBadInput, GarbageBytes) {
  const std::string garbage[] = {
      "hello",
      std::string("\x00\x00\x00", 3),
      "\x02\x01\x01",
      "\xff\xfe\xfd\xfc",
      "\x01",
      std::string("\x01\x07\x01", 3),  // byte-order flag neither 0 nor 1
      std::string("\x01\x01\x09", 3),  // unknown message kind
      std::string("\x01\x01", 2),
      "[1,2]",
      "{",
      "{}}",
      "null",
  };
  for (const std::string& g : garbage) {
    SCOPED_TRACE(Hex(g));
    DecodeError e = MustFail(g);
    EXPECT_EQ(e.code, Code::kBadRequest);
    EXPECT_EQ(e.id, 0u);
    EXPECT_FALSE(e.message.empty());
    EXPECT_EQ(MustFailServer(g).code, Code::kBadRequest);
  }
  EXPECT_EQ(MustFail("\x02junk").message,
            "unknown frame format 0x02 (expected '{' for JSON or 0x01 for binary)");
}

TEST(ProtocolBadInput, EveryPrefixOfAValidFrameIsRefused) {
  for (const Example& ex : Examples()) {
    for (Encoding enc : kEncodings) {
      SCOPED_TRACE(std::string(OpName(ex.op)) + " " + EncodingName(enc));
      const std::string frame = EncodeRequest(MustDecode(JsonFrame(kExampleId, OpName(ex.op), ex.fields)), enc);
      for (std::size_t n = 0; n < frame.size(); ++n) {
        auto result = DecodeRequest(frame.substr(0, n), Limits{});
        ASSERT_TRUE(std::holds_alternative<DecodeError>(result)) << "prefix of " << n << " bytes";
        const DecodeError& e = std::get<DecodeError>(result);
        EXPECT_EQ(e.code, Code::kBadRequest);
        // A binary prefix that holds the whole id echoes it; JSON is parsed whole or not at all.
        const bool id_read = enc == Encoding::kBinary && n >= 3 + 8;
        EXPECT_EQ(e.id, id_read ? kExampleId : 0u) << "prefix of " << n << " bytes: " << e.message;
      }
    }
  }
}

TEST(ProtocolBadInput, EveryPrefixOfAValidServerMessageIsRefused) {
  Reply reply;
  reply.id = 3;
  reply.code = Code::kDeadlock;
  reply.message = "m";
  reply.deadlock = SampleReport();
  reply.results = {Reply{}};
  reply.revoked = std::vector<graph::LeaseId>{1};
  Event event;
  event.kind = EventKind::kRevoked;
  event.deadlock = SampleReport();
  for (Encoding enc : kEncodings) {
    for (const std::string& frame : {EncodeReply(reply, enc), EncodeEvent(event, enc)}) {
      for (std::size_t n = 0; n < frame.size(); ++n) {
        auto result = DecodeServerMessage(frame.substr(0, n));
        ASSERT_TRUE(std::holds_alternative<DecodeError>(result))
            << EncodingName(enc) << " prefix of " << n << " bytes";
      }
      EXPECT_TRUE(std::holds_alternative<ServerMessage>(DecodeServerMessage(frame)));
    }
  }
}

TEST(ProtocolBadInput, InvalidJson) {
  const std::string bad[] = {
      R"({"v":1,"id":42,)",
      R"({v:1,"id":42})",
      R"({"v":1,"id":42,"op":"heartbeat"} x)",
      std::string(R"({"v":1,"id":42,"op":"heartbeat","session":"s","secret":"k"})") + '\0' + "junk",
      R"({"v":1,"id":42,"op":"heartbeat",})",
      R"({"v":1,"id":42,"op":'heartbeat'})",
      R"({"v":1,"id":NaN})",
      R"({"v":1,"id":42,"op":"heart\qbeat"})",
      R"({"v":1,"id":42,"op":"\ud800"})",  // a lone surrogate
  };
  for (const std::string& frame : bad) {
    SCOPED_TRACE(frame);
    DecodeError e = MustFail(frame);
    EXPECT_EQ(e.code, Code::kBadRequest);
    EXPECT_EQ(e.id, 0u);
    EXPECT_NE(e.message.find("invalid JSON"), std::string::npos) << e.message;
  }
}

TEST(ProtocolBadInput, NestingTooDeep) {
  std::string deep = R"({"v":1,"id":42,"op":"heartbeat","session":"s","secret":"k","x":)";
  deep += std::string(100, '[') + std::string(100, ']') + "}";
  DecodeError e = MustFail(deep);
  EXPECT_EQ(e.code, Code::kBadRequest);
  EXPECT_NE(e.message.find("nested deeper"), std::string::npos) << e.message;
  // A frame of nothing but brackets does not overflow anyone's stack either.
  const std::string brackets = "{\"a\":" + std::string((1 << 20) - 16, '[');
  EXPECT_EQ(MustFail(brackets).code, Code::kBadRequest);
  EXPECT_EQ(MustFailServer(brackets + std::string((1 << 20) - 16, ']') + "}").code, Code::kBadRequest);
}

TEST(ProtocolBadInput, InvalidUtf8) {
  // Raw bytes in a JSON string.
  const std::string json = "{\"v\":1,\"id\":42,\"op\":\"unwait\",\"session\":\"s\",\"secret\":\"k\","
                           "\"owner\":\"\xc3\x28\",\"resource\":\"r\"}";
  DecodeError e = MustFail(json);
  EXPECT_EQ(e.code, Code::kBadRequest);
  EXPECT_EQ(e.id, 0u);  // the parser refuses the whole frame
  // Binary strings are bytes: the decoder checks them.
  for (std::string owner : {std::string("\xc3\x28"), std::string("\xed\xa0\x80"),  // surrogate
                            std::string("\xc0\xaf"), std::string("\xf4\x90\x80\x80"), std::string("\xff")}) {
    const std::string frame = BinaryFrame(
        42, Op::kUnwait, With(Auth(), {Str("owner", kOwnerBit, owner), Str("resource", kResourceBit, "r")}));
    EXPECT_EQ(Describe(MustFail(frame)), "BAD_REQUEST id=42 field \"owner\": invalid UTF-8") << Hex(owner);
  }
  // Valid multi-byte text passes in both encodings.
  auto fields = With(Auth(), {Str("owner", kOwnerBit, "\xe6\xbc\xa2\xf0\x9f\x98\x80"),
                              Str("resource", kResourceBit, "\xc3\xa9")});
  EXPECT_EQ(MustDecode(JsonFrame(1, "unwait", fields)).owner, "\xe6\xbc\xa2\xf0\x9f\x98\x80");
  EXPECT_EQ(MustDecode(BinaryFrame(1, Op::kUnwait, fields)).resource, "\xc3\xa9");
}

TEST(ProtocolBadInput, WrongFieldTypes) {
  struct Case {
    std::string field;
    std::string value;
    std::string message;
  };
  const Case cases[] = {
      {"owner", "5", "field \"owner\": expected a string"},
      {"resource", "null", "field \"resource\": expected a string"},
      {"mode", "1", "field \"mode\": expected \"S\" or \"X\""},
      {"mode", "\"x\"", "field \"mode\": expected \"S\" or \"X\""},
      {"mode", "\"SX\"", "field \"mode\": expected \"S\" or \"X\""},
      {"ttl_ms", "\"30000\"", "field \"ttl_ms\": expected an integer from -9223372036854775808 to 9223372036854775807"},
      {"ttl_ms", "1.5", "field \"ttl_ms\": expected an integer from -9223372036854775808 to 9223372036854775807"},
      {"ttl_ms", "1e3", "field \"ttl_ms\": expected an integer from -9223372036854775808 to 9223372036854775807"},
      {"ttl_ms", "9223372036854775808", "field \"ttl_ms\": expected an integer from -9223372036854775808 to 9223372036854775807"},
      {"wait_ms", "true", "field \"wait_ms\": expected an integer from -9223372036854775808 to 9223372036854775807"},
      {"site", "[]", "field \"site\": expected a string"},
      {"started", "{}", "field \"started\": expected an integer from -9223372036854775808 to 9223372036854775807"},
      {"session", "1", "field \"session\": expected a string"},
      {"acked_seq", "-1", "field \"acked_seq\": expected an integer from 0 to 18446744073709551615"},
  };
  const std::string base = R"({"v":1,"id":42,"op":"acquire","session":"s","secret":"k","owner":"o",)"
                           R"("resource":"r","mode":"X","ttl_ms":1,"wait_ms":0})";
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field + "=" + c.value);
    // Put the bad value first: the decoder reads the first of duplicate keys.
    std::string frame = base;
    frame.insert(1, "\"" + c.field + "\":" + c.value + ",");
    EXPECT_EQ(Describe(MustFail(frame)), "BAD_REQUEST id=42 " + c.message);
  }
  // Fields of other ops, and their containers.
  const std::pair<std::string, std::string> more[] = {
      {R"({"v":1,"id":42,"op":"hello","client":"c","ttl_ms":1,"priority":3000000000})",
       "field \"priority\": expected an integer from -2147483648 to 2147483647"},
      {R"({"v":1,"id":42,"op":"hello","client":"c","ttl_ms":1,"labels":["a"]})",
       "field \"labels\": expected an object of strings"},
      {R"({"v":1,"id":42,"op":"hello","client":"c","ttl_ms":1,"labels":{"a":1}})",
       "field \"labels.a\": expected a string"},
      {R"({"v":1,"id":42,"op":"reclaim","session":"s","secret":"k","holds":{}})",
       "field \"holds\": expected an array"},
      {R"({"v":1,"id":42,"op":"reclaim","session":"s","secret":"k","holds":[{"owner":"o","resource":"r","mode":"S"}]})",
       "holds[0]: missing field \"token\""},
      {R"({"v":1,"id":42,"op":"reclaim","session":"s","secret":"k","holds":[{"owner":"o","resource":"r","mode":"S","token":9}]})",
       "holds[0]: field \"token\": expected a string of decimal digits below 2^64"},
      {R"({"v":1,"id":42,"op":"reclaim","session":"s","secret":"k","holds":[7]})",
       "holds[0]: expected an object"},
      {R"({"v":1,"id":42,"op":"batch","session":"s","secret":"k","items":{}})",
       "field \"items\": expected an array"},
      {R"({"v":1,"id":42,"op":"batch","session":"s","secret":"k","items":[{"op":"heartbeat"}]})",
       "items[0]: missing field \"id\""},
      {R"({"v":1,"id":42,"op":"batch","session":"s","secret":"k","items":[{"id":1,"op":"unwait","owner":"o"}]})",
       "items[0]: missing field \"resource\""},
      {R"({"v":1,"id":42,"op":"graph","format":"png"})", "field \"format\": expected \"json\" or \"dot\""},
      {R"({"v":1,"id":42,"op":5})", "field \"op\": expected a string"},
  };
  for (const auto& [frame, message] : more) {
    SCOPED_TRACE(frame);
    EXPECT_EQ(Describe(MustFail(frame)), "BAD_REQUEST id=42 " + message);
  }
}

TEST(ProtocolBadInput, BadIds) {
  for (std::string id : {"-1", "\"42\"", "1.0", "18446744073709551616", "null"}) {
    DecodeError e = MustFail(R"({"v":1,"id":)" + id + R"(,"op":"heartbeat","session":"s","secret":"k"})");
    EXPECT_EQ(e.code, Code::kBadRequest);
    EXPECT_EQ(e.id, 0u);
    EXPECT_NE(e.message.find("\"id\""), std::string::npos) << e.message;
  }
  EXPECT_EQ(Describe(MustFail(R"({"v":1,"op":"heartbeat","session":"s","secret":"k"})")),
            "BAD_REQUEST id=0 missing field \"id\"");
  // The largest id is fine.
  EXPECT_EQ(MustDecode(R"({"v":1,"id":18446744073709551615,"op":"bye","session":"s","secret":"k"})").id,
            std::numeric_limits<std::uint64_t>::max());
}

TEST(ProtocolBadInput, UnknownOp) {
  EXPECT_EQ(Describe(MustFail(R"({"v":1,"id":42,"op":"lock","session":"s","secret":"k"})")),
            "BAD_REQUEST id=42 unknown op \"lock\"");
  EXPECT_EQ(Describe(MustFail(R"({"v":1,"id":42,"session":"s"})")), "BAD_REQUEST id=42 missing field \"op\"");
  std::string frame = ValidBinaryHeartbeat();
  frame[3 + 8] = 17;  // the op byte, one past order
  EXPECT_EQ(Describe(MustFail(frame)), "BAD_REQUEST id=42 unknown op 17");
}

// The order query, and the ordering report that ORDER_VIOLATION errors carry, in
// both encodings; a report that is not an object is refused.
TEST(ProtocolOrdering, OrderQueryAndViolationReportRoundTrip) {
  for (Encoding e : {Encoding::kJson, Encoding::kBinary}) {
    SCOPED_TRACE(e == Encoding::kJson ? "json" : "binary");
    Request q;
    q.id = 9;
    q.op = Op::kOrder;
    Request back = MustDecode(EncodeRequest(q, e));
    EXPECT_EQ(back.op, Op::kOrder);
    EXPECT_FALSE(IsSessionScoped(Op::kOrder));

    Reply r;
    r.id = 9;
    r.code = Code::kOrderViolation;
    r.message = "ORDER_VIOLATION: class 'account' (rank 10) must be taken before class 'order' (rank 20)";
    r.order_json = R"({"kind":"rank","from":"order","to":"account","chain":[],"denied":true})";
    auto decoded = DecodeServerMessage(EncodeReply(r, e));
    ASSERT_TRUE(std::holds_alternative<ServerMessage>(decoded));
    const Reply& got = std::get<Reply>(std::get<ServerMessage>(decoded));
    EXPECT_EQ(got.code, Code::kOrderViolation);
    EXPECT_EQ(got.message, r.message);
    EXPECT_EQ(got.order_json, r.order_json);

    Reply listing;
    listing.id = 10;
    listing.listing_key = "order";
    listing.listing_json = R"({"mode":"warn","edges":[],"reports":[],"rules":""})";
    auto l = DecodeServerMessage(EncodeReply(listing, e));
    ASSERT_TRUE(std::holds_alternative<ServerMessage>(l));
    EXPECT_EQ(std::get<Reply>(std::get<ServerMessage>(l)).listing_json, listing.listing_json);
  }
  auto bad = DecodeServerMessage(
      R"({"v":1,"id":3,"ok":false,"error":{"code":"ORDER_VIOLATION","message":"m","order":"not an object"}})");
  ASSERT_TRUE(std::holds_alternative<DecodeError>(bad));
  EXPECT_NE(std::get<DecodeError>(bad).message.find("order"), std::string::npos);
}

TEST(ProtocolBadInput, UnknownMode) {
  Request r = MustDecode(JsonFrame(kExampleId, "wait", Examples()[7].fields));
  r.mode = Mode::kShared;
  const std::string shared = EncodeRequest(r, Encoding::kBinary);
  r.mode = Mode::kExclusive;
  std::string frame = EncodeRequest(r, Encoding::kBinary);
  ASSERT_EQ(shared.size(), frame.size());
  std::size_t at = 0;
  while (shared[at] == frame[at]) ++at;  // the mode byte is the one that differs
  frame[at] = 7;
  EXPECT_EQ(Describe(MustFail(frame)), "BAD_REQUEST id=5 unknown mode 7");
}

TEST(ProtocolBadInput, VersionOtherThanOne) {
  for (std::string v : {"2", "0", "\"1\"", "1.0", "-1"}) {
    DecodeError e = MustFail(R"({"v":)" + v + R"(,"id":42,"op":"heartbeat","session":"s","secret":"k"})");
    EXPECT_EQ(e.code, Code::kBadRequest) << v;
    EXPECT_EQ(e.id, 42u) << v;
    EXPECT_NE(e.message.find("unsupported protocol version"), std::string::npos) << e.message;
  }
  EXPECT_EQ(Describe(MustFail(R"({"id":42,"op":"heartbeat","session":"s","secret":"k"})")),
            "BAD_REQUEST id=42 missing field \"v\"");
  EXPECT_EQ(Describe(MustFailServer(R"({"v":2,"id":7,"ok":true})")),
            "BAD_REQUEST id=7 unsupported protocol version 2 (this side speaks 1)");
}

TEST(ProtocolBadInput, LeaseNotDigits) {
  for (std::string lease : {"\"12a\"", "\"\"", "\"-1\"", "\"+1\"", "\" 1\"", "\"1 \"", "\"0x10\"",
                            "\"18446744073709551616\"", "\"000000000000000000001\"", "12", "null"}) {
    DecodeError e = MustFail(R"({"v":1,"id":42,"op":"renew","session":"s","secret":"k","lease":)" + lease + "}");
    EXPECT_EQ(Describe(e), "BAD_REQUEST id=42 field \"lease\": expected a string of decimal digits below 2^64")
        << lease;
  }
  EXPECT_EQ(MustDecode(R"({"v":1,"id":1,"op":"renew","session":"s","secret":"k","lease":"18446744073709551615"})").lease,
            std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(MustDecode(R"({"v":1,"id":1,"op":"renew","session":"s","secret":"k","lease":"007"})").lease, 7u);
}

TEST(ProtocolBadInput, OversizeFrame) {
  Limits limits;
  limits.max_frame_bytes = kHeartbeatJson.size();
  MustDecode(kHeartbeatJson, limits);  // exactly at the limit
  const std::string padded = kHeartbeatJson.substr(0, kHeartbeatJson.size() - 1) + ",\"pad\":0}";
  DecodeError e = MustFail(padded, limits);
  EXPECT_EQ(e.code, Code::kLimit);
  EXPECT_EQ(e.id, 0u);  // not parsed, so the id is unknown
  const std::string binary = ValidBinaryHeartbeat();
  limits.max_frame_bytes = binary.size() - 1;
  EXPECT_EQ(MustFail(binary, limits).code, Code::kLimit);
  // The default limit is 1 MiB.
  std::string big = R"({"v":1,"id":1,"op":"bye","session":"s","secret":"k","pad":")";
  big += std::string((1 << 20) - big.size(), 'x') + "\"}";
  EXPECT_EQ(MustFail(big).code, Code::kLimit);
}

TEST(ProtocolBadInput, NamesOverTheLimit) {
  const std::string at_limit(1024, 'n');
  const std::string over(1025, 'n');
  auto unwait = [](const std::string& owner) {
    return With(Auth(), {Str("owner", kOwnerBit, owner), Str("resource", kResourceBit, "r")});
  };
  for (const std::string& frame : {JsonFrame(42, "unwait", unwait(at_limit)), BinaryFrame(42, Op::kUnwait, unwait(at_limit))}) {
    EXPECT_EQ(MustDecode(frame).owner, at_limit);
  }
  for (const std::string& frame : {JsonFrame(42, "unwait", unwait(over)), BinaryFrame(42, Op::kUnwait, unwait(over))}) {
    EXPECT_EQ(Describe(MustFail(frame)),
              "LIMIT id=42 field \"owner\": 1025 bytes is over the limit of 1024 bytes");
  }
  // Every kind of name, with a small limit.
  Limits limits;
  limits.max_name_bytes = 3;
  const std::pair<std::string, std::string> cases[] = {
      {R"({"v":1,"id":42,"op":"hello","client":"long","ttl_ms":1})", "client"},
      {R"({"v":1,"id":42,"op":"hello","client":"c","ttl_ms":1,"labels":{"long":"v"}})", "labels"},
      {R"({"v":1,"id":42,"op":"hello","client":"c","ttl_ms":1,"labels":{"k":"long"}})", "labels.k"},
      {R"({"v":1,"id":42,"op":"bye","session":"long","secret":"a secret may be long"})", "session"},
      {R"({"v":1,"id":42,"op":"unwait","session":"s","secret":"k","owner":"o","resource":"long"})", "resource"},
      {R"({"v":1,"id":42,"op":"wait","session":"s","secret":"k","owner":"o","resource":"r","mode":"S","site":"long"})", "site"},
      {R"({"v":1,"id":42,"op":"stats","owner":"long"})", "owner"},
      {R"({"v":1,"id":42,"op":"leases","session":"long"})", "session"},
      {R"({"v":1,"id":42,"op":"reclaim","session":"s","secret":"k","holds":[{"owner":"long","resource":"r","mode":"S","token":"1"}]})",
       "holds[0].owner"},
      {R"({"v":1,"id":42,"op":"batch","session":"s","secret":"k","items":[{"id":1,"op":"unwait","owner":"long","resource":"r"}]})",
       "owner"},
  };
  for (const auto& [frame, field] : cases) {
    SCOPED_TRACE(frame);
    DecodeError e = MustFail(frame, limits);
    EXPECT_EQ(e.code, Code::kLimit);
    EXPECT_EQ(e.id, 42u);
    EXPECT_NE(e.message.find("field \"" + field + "\""), std::string::npos) << e.message;
    // The same request in binary fails the same way.
    DecodeError b = MustFail(EncodeRequest(MustDecode(frame), Encoding::kBinary), limits);
    EXPECT_EQ(Describe(b), Describe(e));
  }
}

TEST(ProtocolBadInput, NestedBatch) {
  const std::string json =
      R"({"v":1,"id":42,"op":"batch","session":"s","secret":"k","items":[{"id":1,"op":"batch","items":[]}]})";
  EXPECT_EQ(Describe(MustFail(json)), "BAD_REQUEST id=42 items[0]: nested batch: an item cannot be a batch");
  Request inner;
  inner.id = 1;
  inner.op = Op::kBatch;
  Request outer;
  outer.id = 42;
  outer.op = Op::kBatch;
  outer.session = "s";
  outer.secret = "k";
  outer.items = {inner};
  EXPECT_EQ(Describe(MustFail(EncodeRequest(outer, Encoding::kBinary))),
            "BAD_REQUEST id=42 items[0]: nested batch: an item cannot be a batch");
}

TEST(ProtocolBadInput, BatchTooLarge) {
  Limits limits;
  limits.max_batch_items = 2;
  Request r;
  r.id = 42;
  r.op = Op::kBatch;
  r.session = "s";
  r.secret = "k";
  Request item;
  item.op = Op::kDeadlocks;
  r.items = {item, item};
  for (Encoding enc : kEncodings) MustDecode(EncodeRequest(r, enc), limits);
  r.items.push_back(item);
  for (Encoding enc : kEncodings) {
    EXPECT_EQ(Describe(MustFail(EncodeRequest(r, enc), limits)),
              "LIMIT id=42 batch of 3 items is over the limit of 2")
        << EncodingName(enc);
  }
  // A binary count is refused before anything is read for it.
  std::string frame = BinaryHeader(1) + Le<std::uint64_t>(42) + static_cast<char>(Op::kBatch) +
                      Le<std::uint32_t>(1u << kItemsBit) + Le<std::uint32_t>(0xFFFFFFFF);
  EXPECT_EQ(MustFail(frame).code, Code::kLimit);
}

TEST(ProtocolBadInput, BinarySizesLargerThanTheFrame) {
  // A string claiming 2^60 bytes, and counts claiming billions of elements: refused
  // without allocating for them (the sanitizer build would report the attempt).
  auto with_owner_size = [](std::uint64_t size) {
    return BinaryHeader(1) + Le<std::uint64_t>(42) + static_cast<char>(Op::kUnwait) +
           Le<std::uint32_t>(1u << kOwnerBit) + Le<std::uint64_t>(size) + "abc";
  };
  for (std::uint64_t size : {std::uint64_t{1} << 60, ~std::uint64_t{0}, std::uint64_t{4}}) {
    EXPECT_EQ(Describe(MustFail(with_owner_size(size))), "BAD_REQUEST id=42 truncated binary frame");
  }
  for (int bit : {kLabelsBit, kHoldsBit}) {
    std::string frame = BinaryHeader(1) + Le<std::uint64_t>(42) + static_cast<char>(Op::kHello) +
                        Le<std::uint32_t>(1u << bit) + Le<std::uint32_t>(0xFFFFFFF0);
    EXPECT_EQ(Describe(MustFail(frame)), "BAD_REQUEST id=42 truncated binary frame");
  }
  Reply reply;
  std::string frame = EncodeReply(reply, Encoding::kBinary);
  // The message string's size follows id and code; claim an absurd size.
  std::string huge = frame.substr(0, 3 + 8 + 1) + Le<std::uint64_t>(std::uint64_t{1} << 62) + frame.substr(3 + 8 + 1 + 8);
  EXPECT_EQ(MustFailServer(huge).message, "truncated binary frame");
}

TEST(ProtocolBadInput, BinaryOddities) {
  std::string frame = ValidBinaryHeartbeat();
  EXPECT_EQ(Describe(MustFail(frame + "x")), "BAD_REQUEST id=42 1 bytes after the end of the message");
  std::string unknown_bits = frame;
  unknown_bits[3 + 8 + 1 + 3] = '\x80';  // bit 31 of the presence mask
  EXPECT_EQ(MustFail(unknown_bits).code, Code::kBadRequest);
  // Kinds must match the decoder.
  EXPECT_EQ(MustFail(EncodeReply(Reply{}, Encoding::kBinary)).message, "expected a request, got a reply");
  EXPECT_EQ(MustFail(EncodeEvent(Event{}, Encoding::kBinary)).message, "expected a request, got an event");
  EXPECT_EQ(MustFailServer(frame).message, "expected a reply or an event, got a request");
  EXPECT_EQ(MustFailServer(kHeartbeatJson).code, Code::kBadRequest);
}

TEST(ProtocolBadInput, IdIsEchoedOnlyWhenItWasRead) {
  // Too broken to carry an id.
  EXPECT_EQ(MustFail("{\"id\":42").id, 0u);
  EXPECT_EQ(MustFail("\x01\x01\x01\x2a\x00").id, 0u);
  EXPECT_EQ(MustFail("[42]").id, 0u);
  // The id was read, then something else was wrong.
  EXPECT_EQ(MustFail(R"({"v":1,"id":42,"op":"acquire","session":"s","secret":"k"})").id, 42u);
  EXPECT_EQ(MustFail(R"({"v":1,"id":42})").id, 42u);
  EXPECT_EQ(MustFail(R"({"id":42,"v":"one"})").id, 42u);
  std::string truncated = ValidBinaryHeartbeat();
  truncated.pop_back();
  EXPECT_EQ(MustFail(truncated).id, 42u);
  EXPECT_EQ(MustFailServer(R"({"v":1,"id":7})").id, 7u);
  EXPECT_EQ(MustFailServer(R"({"v":1,"id":7,"ok":false})").message, "missing field \"error\"");
}

TEST(ProtocolBadInput, BadServerMessages) {
  const std::pair<std::string, std::string> cases[] = {
      {R"({"v":1,"id":7})", "missing field \"ok\""},
      {R"({"v":1,"id":7,"ok":"yes"})", "field \"ok\": expected true or false"},
      {R"({"v":1,"id":7,"ok":false,"error":{"message":"m"}})", "field \"error\": missing field \"code\""},
      {R"({"v":1,"id":7,"ok":false,"error":{"code":"NOPE"}})", "field \"error\": field \"code\": expected an error code"},
      {R"({"v":1,"id":7,"ok":false,"error":{"code":"OK"}})", "field \"error\": field \"code\": expected an error code"},
      {R"({"v":1,"id":7,"ok":true,"lease":"x"})", "field \"lease\": expected a string of decimal digits below 2^64"},
      {R"({"v":1,"id":7,"ok":true,"results":[{"ok":true}]})", "results[0]: missing field \"id\""},
      {R"({"v":1,"id":7,"ok":true,"epoch":4294967296})", "field \"epoch\": expected an integer from 0 to 4294967295"},
      {R"({"v":1,"event":"exploded","seq":1})", "unknown event \"exploded\""},
      {R"({"v":1,"event":"granted","seq":1,"id":2,"owner":"o","resource":"r","mode":"X","lease":"1"})",
       "missing field \"token\""},
      {R"({"v":1,"event":"revoked","seq":1,"lease":"1","owner":"o","resource":"r","token":"2","reason":"boredom"})",
       "field \"reason\": expected \"deadlock\", \"expired\" or \"operator\""},
      {R"({"v":1,"event":"denied","seq":1,"owner":"o","resource":"r","code":"DEADLOCK","deadlock":{"cycle":[]}})",
       "field \"deadlock\": missing field \"victim\""},
      {R"({"v":1,"event":"order_warning","seq":1,"report":"text"})", "field \"report\": expected an object"},
      {R"({"event":"granted"})", "missing field \"v\""},
  };
  for (const auto& [frame, message] : cases) {
    SCOPED_TRACE(frame);
    DecodeError e = MustFailServer(frame);
    EXPECT_EQ(e.code, Code::kBadRequest);
    EXPECT_EQ(e.message, message);
  }
  std::string event = EncodeEvent(Event{}, Encoding::kBinary);
  event[3] = 9;  // the event kind
  EXPECT_EQ(MustFailServer(event).message, "unknown event kind 9");
}

// ---------------------------------------------------------------- random messages

const std::vector<std::string>& TextPieces() {
  // ASCII, JSON's special characters, controls, NUL, and multi-byte UTF-8.
  static const std::vector<std::string> kPieces = {
      "a", "b", "z", "Q", "0", "9", ":", "/", " ", "-", "_", "{", "}", "[", "\"", "\\",
      "\n", "\t", "\r", std::string(1, '\0'), "\x01", "\x1f", "\x7f", "\xc3\xa9",
      "\xe6\xbc\xa2", "\xf0\x9f\x98\x80", "\xe2\x80\xa8",
  };
  return kPieces;
}

std::string GenText(int max_pieces = 6) {
  const int n = *rc::gen::inRange(0, max_pieces + 1);
  std::string out;
  for (int i = 0; i < n; ++i) out += *rc::gen::elementOf(TextPieces());
  return out;
}

template <typename T>
T GenInt() {
  return *rc::gen::oneOf(rc::gen::arbitrary<T>(),
                         rc::gen::element<T>(std::numeric_limits<T>::min(),
                                             std::numeric_limits<T>::max(), T{0}, T{1}));
}

template <typename T>
std::optional<T> Maybe(T value) {
  return *rc::gen::arbitrary<bool>() ? std::optional<T>(value) : std::nullopt;
}

Mode GenMode() { return *rc::gen::element(Mode::kShared, Mode::kExclusive); }

Code GenErrorCode() {
  return static_cast<Code>(*rc::gen::inRange<int>(1, static_cast<int>(Code::kInternal) + 1));
}

// Listings as a RapidJSON writer re-serialises them: compact, keys in order.
std::string GenListing() {
  return *rc::gen::element<std::string>(
      "{}", "[]", R"({"commands":12,"grants":3})", R"([{"lease":"1","owner":"s/a"}])",
      R"({"owners":["s/a","s/b"],"edges":[{"from":"s/a","to":"s/b","hard":true}]})",
      R"({"k":"a\"b\\c\n","n":-1,"z":null,"t":false})", "{\"t\":\"\xc3\xa9\"}");
}

std::shared_ptr<const DeadlockReport> GenReport() {
  auto r = std::make_shared<DeadlockReport>();
  r->id = GenInt<std::uint64_t>();
  const int edges = *rc::gen::inRange(0, 4);
  for (int i = 0; i < edges; ++i) {
    r->cycle.push_back({GenText(), GenText(), GenMode(), GenText(), GenText(), *rc::gen::arbitrary<bool>()});
  }
  r->victim = GenText();
  r->step = *rc::gen::element(VictimStep::kLowestPriority, VictimStep::kYoungest,
                              VictimStep::kFewestLeases, VictimStep::kLowestId);
  r->why = GenText();
  r->detected_at_us = GenInt<std::int64_t>();
  r->report_mode = *rc::gen::arbitrary<bool>();
  r->attempt = GenInt<int>();
  const int unresponsive = *rc::gen::inRange(0, 3);
  for (int i = 0; i < unresponsive; ++i) r->unresponsive.push_back(GenText());
  return r;
}

// A valid request: the fields its op reads, and nothing else.
Request GenRequest(bool is_item) {
  Request r;
  r.id = GenInt<std::uint64_t>();
  const int last_op = static_cast<int>(Op::kDeadlocks);
  do {
    r.op = static_cast<Op>(*rc::gen::inRange(0, last_op + 1));
  } while (is_item && r.op == Op::kBatch);
  if (!is_item && IsSessionScoped(r.op)) {
    r.session = GenText();
    r.secret = GenText();
  }
  r.acked_seq = Maybe(GenInt<std::uint64_t>());
  switch (r.op) {
    case Op::kHello: {
      r.client = GenText();
      r.ttl_ms = GenInt<std::int64_t>();
      r.priority = GenInt<std::int32_t>();
      const int labels = *rc::gen::inRange(0, 3);
      for (int i = 0; i < labels; ++i) r.labels.emplace_back(GenText(), GenText());
      break;
    }
    case Op::kHeartbeat:
    case Op::kBye:
      break;
    case Op::kAcquire:
      r.owner = GenText();
      r.resource = GenText();
      r.mode = GenMode();
      r.ttl_ms = GenInt<std::int64_t>();
      r.wait_ms = GenInt<std::int64_t>();
      r.site = GenText();
      r.started = Maybe(GenInt<std::int64_t>());
      break;
    case Op::kRenew:
      r.lease = GenInt<std::uint64_t>();
      r.ttl_ms = Maybe(GenInt<std::int64_t>());
      break;
    case Op::kRelease:
      r.lease = Maybe(GenInt<std::uint64_t>());
      if (!r.lease || *rc::gen::arbitrary<bool>()) {
        r.owner = "o" + GenText();
        r.resource = "r" + GenText();
      }
      break;
    case Op::kHold:
      r.owner = GenText();
      r.resource = GenText();
      r.mode = GenMode();
      r.ttl_ms = GenInt<std::int64_t>();
      r.site = GenText();
      break;
    case Op::kWait:
      r.owner = GenText();
      r.resource = GenText();
      r.mode = GenMode();
      r.site = GenText();
      break;
    case Op::kUnwait:
      r.owner = GenText();
      r.resource = GenText();
      break;
    case Op::kReclaim: {
      const int holds = *rc::gen::inRange(0, 4);
      for (int i = 0; i < holds; ++i) {
        r.holds.push_back({GenText(), GenText(), GenMode(), GenInt<std::uint64_t>()});
      }
      break;
    }
    case Op::kBatch: {
      const int items = *rc::gen::inRange(0, 4);
      for (int i = 0; i < items; ++i) r.items.push_back(GenRequest(/*is_item=*/true));
      break;
    }
    case Op::kRevoke:
      r.admin_token = GenText();
      r.lease = Maybe(GenInt<std::uint64_t>());
      if (!r.lease || *rc::gen::arbitrary<bool>()) r.resource = "r" + GenText();
      break;
    case Op::kGraph:
      r.format = *rc::gen::element<std::string>("json", "dot");
      break;
    case Op::kStats:
    case Op::kLeases:
    case Op::kDeadlocks:
      r.filter_owner = GenText(2);
      r.filter_resource = GenText(2);
      r.filter_session = GenText(2);
      break;
    case Op::kOrder:  // a query without fields
      break;
  }
  return r;
}

// A reply as the daemon makes them: error text, leader and report only on errors.
Reply GenReply(int depth) {
  Reply r;
  r.id = GenInt<std::uint64_t>();
  if (*rc::gen::arbitrary<bool>()) {
    r.code = GenErrorCode();
    r.message = GenText();
    if (*rc::gen::arbitrary<bool>()) r.leader = "l" + GenText();
    if (*rc::gen::arbitrary<bool>()) r.deadlock = GenReport();
  }
  if (*rc::gen::arbitrary<bool>()) {
    r.session = GenText();
    r.secret = GenText();
    r.heartbeat_ms = GenInt<std::int64_t>();
    r.epoch = GenInt<std::uint32_t>();
    r.server = Maybe(GenText());
  }
  r.granted = *rc::gen::arbitrary<bool>();
  r.queued = *rc::gen::arbitrary<bool>();
  r.cancelled = *rc::gen::arbitrary<bool>();
  r.lease = Maybe(GenInt<std::uint64_t>());
  r.token = Maybe(GenInt<std::uint64_t>());
  r.started = Maybe(GenInt<std::int64_t>());
  r.expires_in_ms = Maybe(GenInt<std::int64_t>());
  if (depth < 2) {
    const int results = *rc::gen::inRange(0, 3);
    for (int i = 0; i < results; ++i) r.results.push_back(GenReply(depth + 1));
  }
  if (*rc::gen::arbitrary<bool>()) {
    r.revoked.emplace();
    const int n = *rc::gen::inRange(0, 3);
    for (int i = 0; i < n; ++i) r.revoked->push_back(GenInt<std::uint64_t>());
  }
  switch (*rc::gen::inRange(0, 3)) {
    case 0: break;
    case 1: r.graph_dot = GenText(); break;
    case 2:
      r.listing_key = *rc::gen::element<std::string>("graph", "stats", "leases", "deadlocks");
      r.listing_json = GenListing();
      break;
  }
  return r;
}

// An event with the fields of its kind, and nothing else.
Event GenEvent() {
  Event e;
  e.kind = *rc::gen::element(EventKind::kGranted, EventKind::kDenied, EventKind::kRevoked,
                             EventKind::kOrderWarning);
  e.seq = GenInt<std::uint64_t>();
  switch (e.kind) {
    case EventKind::kGranted:
      e.id = GenInt<std::uint64_t>();
      e.owner = GenText();
      e.resource = GenText();
      e.mode = GenMode();
      e.lease = GenInt<std::uint64_t>();
      e.token = GenInt<std::uint64_t>();
      break;
    case EventKind::kDenied:
      e.id = *rc::gen::arbitrary<bool>() ? 0 : GenInt<std::uint64_t>();
      e.owner = GenText();
      e.resource = GenText();
      e.code = *rc::gen::element(Code::kTimeout, Code::kDeadlock, Code::kCancelled, Code::kOrderViolation);
      if (e.code == Code::kDeadlock) e.deadlock = GenReport();
      break;
    case EventKind::kRevoked:
      e.lease = GenInt<std::uint64_t>();
      e.owner = GenText();
      e.resource = GenText();
      e.token = GenInt<std::uint64_t>();
      e.reason = *rc::gen::element(RevokeReason::kDeadlock, RevokeReason::kExpired, RevokeReason::kOperator);
      e.handover_in_ms = GenInt<std::int64_t>();
      if (e.reason == RevokeReason::kDeadlock) e.deadlock = GenReport();
      break;
    case EventKind::kOrderWarning:
      e.report_json = *rc::gen::element<std::string>(
          "{}", R"({"from":"a","to":"b","site":"x.cc:1","chain":[{"from":"b","to":"a","site":"y.cc:2","session":"s"}]})");
      break;
  }
  return e;
}

Encoding GenEncoding() { return *rc::gen::element(Encoding::kJson, Encoding::kBinary); }

RC_GTEST_PROP(ProtocolProperty, RequestsRoundTrip, ()) {
  const Request r = GenRequest(/*is_item=*/false);
  const Encoding enc = GenEncoding();
  const std::string frame = EncodeRequest(r, enc);
  RC_TAG(EncodingName(enc), std::string(OpName(r.op)));
  auto decoded = DecodeRequest(frame, Limits{});
  if (const DecodeError* e = std::get_if<DecodeError>(&decoded)) {
    RC_FAIL("decode failed: " + Describe(*e) + "\nframe: " + Hex(frame));
  }
  RC_ASSERT(Describe(std::get<Request>(decoded)) == Describe(r));
}

RC_GTEST_PROP(ProtocolProperty, RepliesRoundTrip, ()) {
  const Reply r = GenReply(0);
  const Encoding enc = GenEncoding();
  const std::string frame = EncodeReply(r, enc);
  auto decoded = DecodeServerMessage(frame);
  if (const DecodeError* e = std::get_if<DecodeError>(&decoded)) {
    RC_FAIL("decode failed: " + Describe(*e) + "\nframe: " + Hex(frame));
  }
  RC_ASSERT(Describe(std::get<ServerMessage>(decoded)) == Describe(ServerMessage(r)));
}

RC_GTEST_PROP(ProtocolProperty, EventsRoundTrip, ()) {
  const Event e = GenEvent();
  const Encoding enc = GenEncoding();
  RC_TAG(EncodingName(enc), std::string(EventName(e.kind)));
  const std::string frame = EncodeEvent(e, enc);
  auto decoded = DecodeServerMessage(frame);
  if (const DecodeError* err = std::get_if<DecodeError>(&decoded)) {
    RC_FAIL("decode failed: " + Describe(*err) + "\nframe: " + Hex(frame));
  }
  RC_ASSERT(Describe(std::get<ServerMessage>(decoded)) == Describe(ServerMessage(e)));
}

RC_GTEST_PROP(ProtocolProperty, DeadlockReportsRoundTripThroughRenderJson, ()) {
  auto report = GenReport();
  auto parsed = ParseDeadlockJson(graph::RenderJson(*report));
  RC_ASSERT(parsed.has_value());
  RC_ASSERT(Describe(*parsed) == Describe(*report));
}

// Whatever a decoder accepts must mean the same after an encode and a decode.
void CheckStableRequest(std::string_view frame, const Limits& limits) {
  auto decoded = DecodeRequest(frame, limits);
  if (const DecodeError* e = std::get_if<DecodeError>(&decoded)) {
    RC_ASSERT(e->code != Code::kOk);
    RC_ASSERT(!e->message.empty());
    return;
  }
  const Request& r = std::get<Request>(decoded);
  const std::string again = EncodeRequest(r, EncodingOf(frame));
  auto redecoded = DecodeRequest(again, limits);
  RC_ASSERT(std::holds_alternative<Request>(redecoded));
  RC_ASSERT(Describe(std::get<Request>(redecoded)) == Describe(r));
}

void CheckStableServerMessage(std::string_view frame) {
  auto decoded = DecodeServerMessage(frame);
  if (std::holds_alternative<DecodeError>(decoded)) return;
  const ServerMessage& m = std::get<ServerMessage>(decoded);
  const Encoding enc = EncodingOf(frame);
  const std::string again = std::holds_alternative<Reply>(m) ? EncodeReply(std::get<Reply>(m), enc)
                                                             : EncodeEvent(std::get<Event>(m), enc);
  auto redecoded = DecodeServerMessage(again);
  RC_ASSERT(std::holds_alternative<ServerMessage>(redecoded));
  RC_ASSERT(Describe(std::get<ServerMessage>(redecoded)) == Describe(m));
}

RC_GTEST_PROP(ProtocolProperty, RandomBytesNeverCrash, ()) {
  std::string bytes = *rc::gen::container<std::string>(rc::gen::arbitrary<char>());
  // Aim some frames at each decoder's front door.
  switch (*rc::gen::inRange(0, 4)) {
    case 0: break;
    case 1: bytes.insert(0, "{"); break;
    case 2: bytes.insert(0, "\x01\x01"); break;
    case 3: bytes.insert(0, std::string("\x01\x01") + static_cast<char>(*rc::gen::inRange(1, 4))); break;
  }
  CheckStableRequest(bytes, Limits{});
  CheckStableServerMessage(bytes);
}

// Flips, inserts, erases, truncates or duplicates bytes of `frame`.
std::string Mutate(std::string frame) {
  const int mutations = *rc::gen::inRange(1, 5);
  for (int i = 0; i < mutations; ++i) {
    const std::size_t size = frame.size();
    const auto at = static_cast<std::size_t>(*rc::gen::inRange<std::size_t>(0, size + 1));
    switch (*rc::gen::inRange(0, 6)) {
      case 0:
        if (at < size) frame[at] = *rc::gen::arbitrary<char>();
        break;
      case 1:
        if (at < size) frame[at] = static_cast<char>(frame[at] ^ (1 << *rc::gen::inRange(0, 8)));
        break;
      case 2: frame.insert(at, 1, *rc::gen::arbitrary<char>()); break;
      case 3: frame.erase(at, *rc::gen::inRange<std::size_t>(1, 9)); break;
      case 4: frame.resize(at); break;
      case 5: frame.insert(at, frame.substr(at / 2, *rc::gen::inRange<std::size_t>(1, 17))); break;
    }
  }
  return frame;
}

RC_GTEST_PROP(ProtocolProperty, MutatedRequestsNeverCrash, ()) {
  const Request r = GenRequest(/*is_item=*/false);
  const std::string frame = EncodeRequest(r, GenEncoding());
  Limits limits;
  // Small limits now and then, so that the limit paths see garbage too.
  if (*rc::gen::arbitrary<bool>()) limits = Limits{256, 4, 2};
  // Several mutants per frame: about one in ten still decodes, and is checked further.
  for (int i = 0; i < 10; ++i) CheckStableRequest(Mutate(frame), limits);
}

RC_GTEST_PROP(ProtocolProperty, MutatedServerMessagesNeverCrash, ()) {
  const Encoding enc = GenEncoding();
  const std::string frame = *rc::gen::arbitrary<bool>() ? EncodeReply(GenReply(0), enc)
                                                        : EncodeEvent(GenEvent(), enc);
  for (int i = 0; i < 10; ++i) CheckStableServerMessage(Mutate(frame));
}

}  // namespace
}  // namespace lockgraph::protocol
