// Coordinator: the whole core as one deterministic state machine.
//
//   Effects Apply(const Command& command, TimeUs now);
//
// A command is a client request (hello, acquire, hold, ...) or the passage of time
// (Tick). The effects are the reply to the command plus events for any session:
// grants of queued acquires, denials, revocations, deadlock reports. The same
// commands at the same times always give the same effects, so a journal of commands
// replays bit for bit. Nothing in here reads a clock, opens a file or a socket.
//
// Every command first advances time to `now` (expiring sessions and leases, timing
// out waits, handing over revoked leases, confirming report-mode cycles), then acts.
// `now` must not go backwards; an earlier value is treated as the latest seen.
//
// Errors are values: a command that fails (reply.code != kOk) leaves the state
// exactly as it was, except kDeadlock, where the requester is the victim: its wait
// is dropped and its leases on the cycle are revoked. Time advancing at the start
// of a command happens either way, as it would have on the next Tick.
//
// Thread safety: none. One thread owns a Coordinator.
#ifndef LOCKGRAPH_GRAPH_COORDINATOR_H_
#define LOCKGRAPH_GRAPH_COORDINATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "lockgraph/graph/order.h"
#include "lockgraph/graph/report.h"
#include "lockgraph/graph/types.h"

namespace lockgraph::graph {

// ---------------------------------------------------------------- configuration

struct ClassConfig {
  std::optional<TimeUs> revoke_grace_us;  // default: Config::revoke_grace_us
  bool revoke_immediate = false;          // storage checks tokens: hand over at once
};

struct Config {
  std::uint32_t max_name_bytes = 1024;          // owner, resource, site; longer: kLimit
  std::uint32_t max_leases_per_session = 1u << 20;
  std::uint32_t max_waits_per_owner = 64;
  TimeUs confirm_us = 10'000;          // report-mode cycles act after this; 0: at once
  TimeUs victim_grace_us = 2'000'000;  // report-mode victim must release within this
  TimeUs revoke_grace_us = 1'000'000;  // revoked leases pass to waiters after this
  std::int64_t max_ttl_ms = 24LL * 3600 * 1000;
  char class_separator = ':';  // also the ordering rules' separator
  // Lock ordering (order.h): declared rules, learned order, modes. Checked on every
  // acquire, hold and wait made while the owner holds something.
  OrderRules order;
  std::map<std::string, ClassConfig, std::less<>> classes;  // by class name
  std::vector<VictimStep> victim_policy = {VictimStep::kLowestPriority,
                                           VictimStep::kYoungest,
                                           VictimStep::kFewestLeases,
                                           VictimStep::kLowestId};
  // The coordinator asks for the next epoch (NeedEpoch) when fewer than this many
  // sequence numbers are left in the current one.
  std::uint64_t epoch_low_water = std::uint64_t{1} << 20;
};

// ---------------------------------------------------------------- commands

// Proof of a session: every session-scoped command carries it.
struct Auth {
  std::string session;
  std::string secret;
};

// Opens a session. Its id and secret are chosen by the caller (the daemon draws
// them at random), so that replaying a journal reproduces them.
struct Hello {
  std::string session;
  std::string secret;
  std::string client;
  std::int64_t ttl_ms = 10'000;
  std::int32_t priority = 0;
};
struct Heartbeat {
  Auth auth;
};
// Releases everything the session holds or waits for, and closes it.
struct Bye {
  Auth auth;
};
// Arbitrate mode: grant, queue (for wait_ms; -1 forever) or refuse.
struct Acquire {
  Auth auth;
  std::uint64_t request_id = 0;  // echoed in the granted/denied event if queued
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  std::int64_t ttl_ms = 30'000;
  std::int64_t wait_ms = -1;
  std::string site;
  std::optional<TimeUs> started;  // as returned earlier: keeps the owner's age
};
struct Renew {
  Auth auth;
  LeaseId lease = 0;
  std::optional<std::int64_t> ttl_ms;  // default: the lease's own
};
// By lease id, or (report mode) by owner + resource.
struct Release {
  Auth auth;
  std::optional<LeaseId> lease;
  std::string owner;
  std::string resource;
};
// Report mode: an external lock system granted this.
struct Hold {
  Auth auth;
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  std::int64_t ttl_ms = 30'000;
  std::string site;
};
// Report mode: the owner is blocked on this in an external lock system.
struct Wait {
  Auth auth;
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  std::string site;
};
// Ends a reported wait, or cancels a queued acquire.
struct Unwait {
  Auth auth;
  std::string owner;
  std::string resource;
};
// Operator action (authorised by the caller): revoke one lease or all on a resource.
struct Revoke {
  std::optional<LeaseId> lease;
  std::string resource;
};
// Time passes; nothing else.
struct Tick {};
// After a restart, on a fresh coordinator: the sessions and arbitrate leases taken
// from the journal, and the grace period in which their holders reclaim them.
// Restored leases keep their ids and tokens and await reclaim; those not reclaimed
// expire when the grace ends. During the grace acquire, hold and wait get GRACE (no
// new wait, so no victim is chosen), except that with `grant_unclaimed` (fsync
// always and a clean journal tail: nothing granted can be missing) an acquire of a
// resource with no lease awaiting reclaim is served. The grace ends early once every
// restored lease is reclaimed or released. A large state may be restored in several
// Restore commands (a lease may name a session of an earlier one); all of them come
// before any other command, and the last one's grace counts.
struct RestoredSession {
  std::string session;
  std::string secret;
  std::string client;
  std::int64_t ttl_ms = 10'000;
  std::int32_t priority = 0;
};
struct RestoredLease {
  std::string session;
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  LeaseId lease = 0;
  Token token = 0;
  std::int64_t ttl_ms = 30'000;
  std::string site;
  TimeUs started = 0;    // the owner's
  bool revoked = false;  // revoked before the restart: kept until the grace ends, never reclaimed
};
struct Restore {
  std::vector<RestoredSession> sessions;
  std::vector<RestoredLease> leases;
  std::int64_t grace_ms = 0;
  bool grant_unclaimed = false;
};
// A client's claim, after a restart, to what it held: matched item by item on
// session, owner, resource, mode and token.
struct ReclaimItem {
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  Token token = 0;
};
struct Reclaim {
  Auth auth;
  std::vector<ReclaimItem> items;
};
// The caller persisted a new epoch (after a NeedEpoch event). Tokens continue in it.
struct SetEpoch {
  std::uint32_t epoch = 0;
};

using Command = std::variant<Hello, Heartbeat, Bye, Acquire, Renew, Release, Hold,
                             Wait, Unwait, Revoke, Tick, SetEpoch, Restore, Reclaim>;

// ---------------------------------------------------------------- effects

struct Reply {
  Code code = Code::kOk;
  std::string message;  // set when code != kOk: names the problem
  // hello
  std::string session;
  std::string secret;
  std::int64_t heartbeat_ms = 0;
  std::uint32_t epoch = 0;
  // acquire / hold / unwait / renew
  bool granted = false;
  bool queued = false;
  bool cancelled = false;
  LeaseId lease = 0;
  Token token = 0;
  std::optional<TimeUs> started;
  std::int64_t expires_in_ms = 0;
  std::shared_ptr<const DeadlockReport> deadlock;  // with kDeadlock
  std::shared_ptr<const OrderReport> order;        // with kOrderViolation
  std::vector<LeaseId> revoked;                    // revoke
  // reclaim: one result per item, in order (kOk: the lease is the holder's again,
  // for `expires_in_ms` from now)
  struct ItemResult {
    Code code = Code::kOk;
    std::string message;
    std::int64_t expires_in_ms = 0;
  };
  std::vector<ItemResult> items;
  bool ok() const { return code == Code::kOk; }
};

enum class RevokeReason : std::uint8_t { kDeadlock, kExpired, kOperator };
std::string_view RevokeReasonName(RevokeReason r);  // "deadlock", ...

// A queued acquire was granted.
struct GrantedEvent {
  std::string session;
  std::uint64_t request_id = 0;
  std::string owner;  // within the session
  std::string resource;
  Mode mode = Mode::kExclusive;
  LeaseId lease = 0;
  Token token = 0;
};
// A queued acquire (request_id != 0) or a reported wait (request_id == 0) ended
// without a grant: TIMEOUT, DEADLOCK (with the report), CANCELLED.
struct DeniedEvent {
  std::string session;
  std::uint64_t request_id = 0;
  std::string owner;
  std::string resource;
  Code code = Code::kTimeout;
  std::shared_ptr<const DeadlockReport> deadlock;
};
// A lease was taken away. Its token is stale from now on.
struct RevokedEvent {
  std::string session;
  LeaseId lease = 0;
  std::string owner;
  std::string resource;
  Token token = 0;
  RevokeReason reason = RevokeReason::kDeadlock;
  std::int64_t handover_in_ms = 0;  // when waiters get it, unless released before
  std::shared_ptr<const DeadlockReport> deadlock;
};
// A victim was chosen (for logs, journal and history; one per victim).
struct DeadlockEvent {
  std::shared_ptr<const DeadlockReport> report;
};
// A report-mode victim did not release within victim_grace; a new victim follows.
struct VictimUnresponsiveEvent {
  std::shared_ptr<const DeadlockReport> report;  // the report that chose it
};
// Report mode: a hold was reported that conflicts with a recorded one.
struct ConflictingHoldEvent {
  std::string session;
  std::string owner;
  std::string resource;
  std::string held_by;  // "session/owner" of a conflicting holder
};
struct SessionClosedEvent {
  std::string session;
  bool expired = false;  // false: bye
};
// An ordering problem seen for the first time (later occurrences are only counted):
// a warning for `session` (report->denied false), or the first refusal of a request
// with ORDER_VIOLATION (for logs; the reply carries it).
struct OrderReportEvent {
  std::string session;
  std::shared_ptr<const OrderReport> report;
};
// Persist `next_epoch` and send SetEpoch before the current epoch runs out.
struct NeedEpochEvent {
  std::uint32_t next_epoch = 0;
};

using Event = std::variant<GrantedEvent, DeniedEvent, RevokedEvent, DeadlockEvent,
                           VictimUnresponsiveEvent, ConflictingHoldEvent,
                           SessionClosedEvent, NeedEpochEvent, OrderReportEvent>;

struct Effects {
  Reply reply;
  std::vector<Event> events;
};

// ---------------------------------------------------------------- queries

struct Stats {
  std::uint64_t commands = 0;
  std::uint64_t errors = 0;
  std::uint64_t sessions_opened = 0;
  std::uint64_t sessions_expired = 0;
  std::uint64_t grants = 0;
  std::uint64_t queued = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t releases = 0;
  std::uint64_t lease_expiries = 0;
  std::uint64_t revocations = 0;
  std::uint64_t deadlocks = 0;        // victims chosen
  std::uint64_t cycles_reordered = 0; // soft cycles broken by reordering a queue
  std::uint64_t cycles_vanished = 0;  // report-mode cycles gone before confirmation
  std::uint64_t victims_unresponsive = 0;
  std::uint64_t conflicting_holds = 0;
  std::uint64_t victims_by_step[4] = {0, 0, 0, 0};  // indexed by VictimStep
  std::uint64_t live_sessions = 0;
  std::uint64_t live_owners = 0;
  std::uint64_t live_resources = 0;
  std::uint64_t live_leases = 0;
  std::uint64_t live_waits = 0;
  std::uint64_t wait_edges = 0;  // owner->owner edges in the wait-for graph
  std::uint64_t restored_leases = 0;
  std::uint64_t reclaimed = 0;
  std::uint64_t reclaims_refused = 0;
  std::uint64_t grace_refusals = 0;  // requests answered GRACE
};

struct LeaseInfo {
  LeaseId lease = 0;
  Token token = 0;
  std::string session;
  std::string owner;  // within the session
  std::string resource;
  Mode mode = Mode::kExclusive;
  TimeUs expires_at_us = 0;
  bool reported = false;  // report mode (hold), not granted by the coordinator
  bool revoked = false;
  TimeUs handover_at_us = kNever;  // for revoked leases
  std::string site;
};

struct WaitInfo {
  std::string session;
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  bool reported = false;  // report mode (wait), not a queued acquire
  bool upgrade = false;
  std::uint64_t request_id = 0;
  TimeUs since_us = 0;
  TimeUs deadline_us = kNever;
  std::string site;
};

struct OwnerEdge {
  std::string from;  // "session/owner"
  std::string to;
  bool hard = false;  // some wait of `from` is blocked by a hold of `to`
  bool soft = false;  // some wait of `from` is queued behind a wait of `to`
};

class Coordinator {
 public:
  // `epoch` is the current persisted epoch (< 2^24-1); tokens start at
  // epoch << 40 | first_seq.
  Coordinator(Config config, std::uint32_t epoch, std::uint64_t first_seq = 1);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  Effects Apply(const Command& command, TimeUs now);

  // The earliest time at which a Tick would change something, or kNever.
  TimeUs NextDeadline() const;

  const Config& config() const;
  const Stats& stats() const;
  // The order checker: its counters, learned order and reports; Restore() on it
  // loads an order saved by an earlier run.
  const OrderChecker& order() const;
  OrderChecker& order();
  std::uint32_t epoch() const;
  Token last_token() const;  // 0 before the first grant

  std::vector<LeaseInfo> Leases() const;  // ordered by lease id
  std::vector<WaitInfo> Waits() const;    // by resource, then queue position
  std::vector<OwnerEdge> WaitForEdges() const;  // sorted by (from, to)
  std::vector<std::string> Sessions() const;    // sorted
  // What a restart restores: live sessions (with their secrets) and the arbitrate
  // leases (not the reported ones: report-mode state is re-sent by its clients).
  Restore RestorePoint() const;
  // The end of the grace period after a Restore (0 when there was none).
  TimeUs grace_until() const;
  bool in_grace() const;
  // A live session's secret (the journal keeps secrets once; a segment that starts
  // from a snapshot finds them in the state it loaded).
  std::optional<std::string> SecretOf(const std::string& session) const;
  // "session/owner" -> `started`, for live owners.
  std::optional<TimeUs> OwnerStarted(const std::string& session,
                                     const std::string& owner) const;

  // Full audit with boost::strong_components over the wait-for graph: every
  // strongly connected set of owners with more than one member (or a self-loop),
  // each sorted, the list sorted. Empty when the graph has no cycle.
  std::vector<std::vector<std::string>> AuditCycles() const;
  // The ownership graph (owners, resources, hold and wait edges) as Graphviz DOT,
  // written by boost::write_graphviz.
  std::string ToDot() const;
  // Internal consistency (tables, graph, timers agree); for tests. Empty when fine.
  std::string CheckInvariants() const;

  // The whole state as bytes: the image a journal segment starts from (a snapshot).
  // A coordinator made with the same Config that loads it answers every later
  // command exactly as this one would: tables, free slots, timers, the wait-for
  // graph's order and the report-mode cycles being confirmed are all in it. Not in
  // it: the order checker, whose verdicts never change the state (a refusal is
  // journaled as a Tick) and whose learned order is kept apart (order.json).
  std::string SaveImage() const;
  // Replaces the state with an image's. Checks every index and link, then
  // CheckInvariants(); on any problem returns what it is and changes nothing.
  // The order checker is kept. "" on success.
  std::string LoadImage(std::string_view image);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// The wait graph as JSON: {"holds":[{"owner","resource","mode","lease","revoked"}],
// "waits":[{"owner","resource","mode","reported","waiting_ms","site"}],
// "edges":[{"from","to","kind"}]} — what lockgraphd's `graph` query answers, and
// what `lockgraphctl replay` prints for a moment of the journal. `now` gives waiting_ms.
std::string GraphJson(const Coordinator& coordinator, TimeUs now);

}  // namespace lockgraph::graph

#endif  // LOCKGRAPH_GRAPH_COORDINATOR_H_
