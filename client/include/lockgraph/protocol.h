// The lockgraph wire protocol v1: messages as data, and their two encodings.
//
// One ZeroMQ message is one frame is one encoded message. A frame whose first byte
// is '{' is JSON in exactly the shape of shared/PROTOCOL.md (docs/protocol.md has the
// grammar); any other first byte is a binary frame: kBinaryFormat, then the message
// in cereal's portable binary archive. The daemon answers in the encoding of the
// request; events use the encoding of the session's hello.
//
// Decoding never throws and never trusts its input: a frame that is not a valid
// message gives a DecodeError with the protocol error code, a message naming the
// problem, and the request id when the frame got far enough to carry one (0 if not).
//
// Thread safety: the functions are pure; the structs are plain values.
#ifndef LOCKGRAPH_PROTOCOL_H_
#define LOCKGRAPH_PROTOCOL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/report.h"
#include "lockgraph/graph/types.h"

namespace lockgraph::protocol {

using graph::Code;
using graph::Mode;

inline constexpr int kVersion = 1;
// First byte of a binary frame; never '{' (0x7B).
inline constexpr std::uint8_t kBinaryFormat = 0x01;

enum class Encoding : std::uint8_t { kJson, kBinary };

enum class Op : std::uint8_t {
  kHello,
  kHeartbeat,
  kBye,
  kAcquire,
  kRenew,
  kRelease,
  kHold,
  kWait,
  kUnwait,
  kReclaim,
  kBatch,
  kRevoke,
  kGraph,
  kStats,
  kLeases,
  kDeadlocks,
  kOrder,  // the learned lock order, ordering reports and the rules they export
};
std::string_view OpName(Op op);
std::optional<Op> ParseOp(std::string_view name);
// Session-scoped ops carry session and secret; the queries and revoke do not.
bool IsSessionScoped(Op op);

struct ReclaimItem {
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  graph::Token token = 0;
};

// A request. Which fields an op reads is in docs/protocol.md; the decoder fills the
// defaults of optional fields and refuses a frame that lacks a required one.
struct Request {
  std::uint64_t id = 0;
  Op op = Op::kHeartbeat;
  std::optional<std::uint64_t> acked_seq;
  std::string session;
  std::string secret;
  // hello
  std::string client;
  std::int32_t priority = 0;
  std::vector<std::pair<std::string, std::string>> labels;
  // hello (session TTL), acquire, hold (lease TTL), renew (optional)
  std::optional<std::int64_t> ttl_ms;
  // acquire, hold, wait, unwait, release (report mode)
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  std::int64_t wait_ms = 0;
  std::string site;
  std::optional<std::int64_t> started;
  // renew, release, revoke
  std::optional<graph::LeaseId> lease;
  // reclaim
  std::vector<ReclaimItem> holds;
  // batch: items carry no session/secret of their own
  std::vector<Request> items;
  // revoke
  std::string admin_token;
  // graph: "json" or "dot"
  std::string format = "json";
  // stats / leases / deadlocks filters
  std::string filter_owner;
  std::string filter_resource;
  std::string filter_session;
};

struct Reply {
  std::uint64_t id = 0;
  Code code = Code::kOk;  // kOk: "ok":true
  std::string message;    // error text
  std::string leader;     // with NOT_LEADER
  // hello
  std::optional<std::string> session;
  std::optional<std::string> secret;
  std::optional<std::int64_t> heartbeat_ms;
  std::optional<std::uint32_t> epoch;
  std::optional<std::string> server;
  // acquire / hold / unwait / renew
  bool granted = false;
  bool queued = false;
  bool cancelled = false;
  std::optional<graph::LeaseId> lease;
  std::optional<graph::Token> token;
  std::optional<std::int64_t> started;
  std::optional<std::int64_t> expires_in_ms;
  // reclaim and batch: one reply per item, in order
  std::vector<Reply> results;
  // revoke
  std::optional<std::vector<graph::LeaseId>> revoked;
  // graph (format dot): the DOT text; queries: a JSON value under `listing_key`
  std::optional<std::string> graph_dot;
  std::string listing_key;   // "graph", "stats", "leases" or "deadlocks"
  std::string listing_json;  // a JSON value, spliced as is into JSON replies
  // DEADLOCK errors
  std::shared_ptr<const graph::DeadlockReport> deadlock;
  // ORDER_VIOLATION errors: the ordering report (graph::RenderOrderJson), a JSON object
  std::string order_json;

  bool ok() const { return code == Code::kOk; }
};

enum class EventKind : std::uint8_t { kGranted, kDenied, kRevoked, kOrderWarning };
std::string_view EventName(EventKind kind);

struct Event {
  EventKind kind = EventKind::kGranted;
  std::uint64_t seq = 0;
  std::uint64_t id = 0;  // request id of the queued acquire (granted/denied), 0 if none
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  graph::LeaseId lease = 0;
  graph::Token token = 0;
  Code code = Code::kOk;  // denied
  graph::RevokeReason reason = graph::RevokeReason::kDeadlock;  // revoked
  std::int64_t handover_in_ms = 0;                              // revoked
  std::shared_ptr<const graph::DeadlockReport> deadlock;
  std::string report_json;  // order_warning: the ordering report, a JSON object
};

struct DecodeError {
  Code code = Code::kBadRequest;
  std::string message;
  std::uint64_t id = 0;  // 0 when the frame did not get as far as its id
};

struct Limits {
  std::size_t max_frame_bytes = 1 << 20;
  std::size_t max_name_bytes = 1024;
  std::size_t max_batch_items = 4096;
};

// The encoding a frame announces by its first byte. An empty frame is JSON (and
// then fails to decode).
Encoding EncodingOf(std::string_view frame);

// Client -> daemon.
std::string EncodeRequest(const Request& request, Encoding encoding);
std::variant<Request, DecodeError> DecodeRequest(std::string_view frame, const Limits& limits);

// Daemon -> client. A client reads replies and events from the same socket.
std::string EncodeReply(const Reply& reply, Encoding encoding);
std::string EncodeEvent(const Event& event, Encoding encoding);
using ServerMessage = std::variant<Reply, Event>;
std::variant<ServerMessage, DecodeError> DecodeServerMessage(std::string_view frame);

// A deadlock report parsed back from the JSON of graph::RenderJson.
std::optional<graph::DeadlockReport> ParseDeadlockJson(std::string_view json);

}  // namespace lockgraph::protocol

#endif  // LOCKGRAPH_PROTOCOL_H_
