// Replay: a journal segment (journal.h) read back through a fresh core.
//
// The core is deterministic, so applying a segment's command records at their
// `now_us` to a Coordinator built from its boot record rebuilds the daemon's state
// at any record: the wait graph as it was, every grant, wait, revocation and
// deadlock on the way. lockgraphctl's `replay`, `history` and `check-order` (over
// journals) are built on ReplaySegment; this library has no sockets, threads or
// logging, so the tools and tests link it directly.
//
// Besides the core, the replay keeps a small book of the live leases and waits,
// fed by replies and events, so that each step can say which lease a release by id
// named and which leases and waits ended with it, including the ones the core ends
// without an event (hand-over of a revoked lease, everything of a closing session).
// The book is checked against the core's counts after every record and resynced
// from Leases()/Waits() when they differ, so it never drifts.
//
// One caveat on ordering reports: the daemon restores its learned lock order from
// DATA_DIR/order.json at start, a replay starts with none, so replayed ordering
// reports can differ from the journal's own report records (which are the truth).
// Replies, grants, waits and deadlocks do not depend on the learned order.
//
// Thread safety: none; the functions are reentrant.
#ifndef LOCKGRAPH_DAEMON_REPLAY_H_
#define LOCKGRAPH_DAEMON_REPLAY_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

#include "journal.h"
#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/order.h"

namespace lockgraph::daemon {

// ---------------------------------------------------------------- time

// TIME for the tools: Unix microseconds (all digits), or UTC ISO 8601
// `YYYY-MM-DDTHH:MM:SS[.ffffff][Z]` (1 to 6 fraction digits). Returns the Unix
// microseconds, or an error that quotes the input and says what is wrong.
std::variant<std::int64_t, std::string> ParseTime(std::string_view text);
// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC.
std::string FormatTime(std::int64_t unix_us);

// ---------------------------------------------------------------- the book

// A live lease as the replay knows it.
struct LeaseRef {
  graph::LeaseId lease = 0;
  std::string session;
  std::string owner;  // within the session
  std::string resource;
  graph::Mode mode = graph::Mode::kExclusive;
  bool reported = false;  // a hold (report mode), not a grant
  bool revoked = false;
  std::string full_owner() const { return session + "/" + owner; }
};

// A live wait: a queued acquire or a reported wait.
struct WaitRef {
  std::string session;
  std::string owner;
  std::string resource;
  graph::Mode mode = graph::Mode::kExclusive;
  bool reported = false;
  std::string site;
  std::string full_owner() const { return session + "/" + owner; }
};

// How a lease or a wait ended.
enum class EndHow : std::uint8_t {
  kReleased,        // lease: a release command
  kExpired,         // lease: its TTL ran out (a RevokedEvent with reason expired said so)
  kHandedOver,      // lease: revoked with no grace (revoke = immediate): gone at once
  kRevokedGone,     // lease: revoked earlier; now handed over to waiters or expired
  kSessionClosed,   // its session said bye
  kSessionExpired,  // its session's TTL ran out
  kGranted,         // wait: granted (a GrantedEvent)
  kDenied,          // wait: a DeniedEvent (TIMEOUT, DEADLOCK, CANCELLED)
  kCancelled,       // wait: ended by an unwait
  kHeld,            // wait: ended by a hold of its resource
  kGone,            // found gone when resyncing with the core (no event said why)
};
std::string_view EndHowName(EndHow how);  // "released", "expired", ...

struct EndedLease {
  LeaseRef lease;
  EndHow how = EndHow::kReleased;
};
struct EndedWait {
  WaitRef wait;
  EndHow how = EndHow::kGranted;
  graph::Code code = graph::Code::kOk;  // kDenied: why
};

// True for ends that happen as time advances at the start of a command, before the
// command acts: expiries, hand-overs after a grace, timeouts.
bool EndsWithTime(const EndedLease& e);
bool EndsWithTime(const EndedWait& e);

// ---------------------------------------------------------------- replay

// One record of the segment, after it was applied. The pointers are valid only
// during the on_step call that passes the step.
struct ReplayStep {
  std::size_t number = 0;                    // 1-based record number in the segment (the boot record is 1)
  const JournalRecord* record = nullptr;
  const graph::Effects* effects = nullptr;   // what applying it gave; null for boot and report records
  const graph::Coordinator* coordinator = nullptr;  // the state after it
  // Release, Renew or Revoke by lease id: that lease as it was before the record
  // (nullopt when the id was not live).
  std::optional<LeaseRef> named_lease;
  std::vector<EndedLease> ended_leases;  // in the order they ended
  std::vector<EndedWait> ended_waits;
  // Leases live in the core that no reply or event granted: restored at a restart,
  // or (with `snapshot`) held when the segment's snapshot was taken.
  std::vector<LeaseRef> appeared_leases;
  // This record completed the segment's snapshot, and the state now comes from it.
  bool snapshot = false;
};

struct ReplayResult {
  std::unique_ptr<graph::Coordinator> coordinator;  // the state after the last record applied
  BootInfo boot;
  std::uint64_t boot_id = 0;
  std::int64_t boot_wall_us = 0;
  std::int64_t last_now_us = 0;   // of the last record applied (the boot record's if none)
  std::int64_t last_wall_us = 0;
  std::size_t records_applied = 0;  // the boot record included
  std::size_t records_total = 0;    // readable records in the segment
  bool stopped_early() const { return records_applied < records_total; }  // `until` came first
  // Every victim chosen up to then (DeadlockEvents), oldest first.
  std::vector<std::shared_ptr<const graph::DeadlockReport>> deadlocks;
  // The scan's problem: the segment has a torn or damaged tail and was replayed up to
  // its last good record. Tools print it as a warning.
  std::string problem;
  // Disagreements between the replay and the journal's own deadlock report records
  // (a journal written by a core that decided differently), one line each.
  std::vector<std::string> warnings;
  // The live leases and waits at the end, as the book knows them.
  std::map<graph::LeaseId, LeaseRef> leases;
  std::vector<WaitRef> waits;
};

// Replays `scan`: builds the core from the boot record (an error if the first
// record is not one), loads the snapshot that may follow it (a segment started
// mid-run: the state then, see SnapshotPart), then applies the records in order, stopping before the first
// record whose wall_us is after `until_wall_us` (all records without it). Calls
// `on_step` (may be empty) for every record applied, the boot record included.
// Returns the result, or an error naming the record that cannot be replayed.
std::variant<ReplayResult, std::string> ReplaySegment(
    const SegmentScan& scan, std::optional<std::int64_t> until_wall_us,
    const std::function<void(const ReplayStep&)>& on_step = {});

// The first record of a segment file, without reading the rest (to choose the
// segment of a data directory that covers a moment). An error when the file is not
// a segment or its first record is unreadable or not a boot record.
std::variant<JournalRecord, std::string> ReadBootRecord(const std::string& path);

// ---------------------------------------------------------------- check-order

// Turns replay steps into the ops lockgraphctl check-order checks (order.h's
// TraceOp), as a recorded trace would show them:
//   acquire granted at once          -> acquire (with its wait_ms)
//   acquire queued                   -> wait (the order is checked when it is asked
//                                       for, as lockgraphd does), then on its grant
//                                       a hold, or on its denial an unwait
//   hold / wait reported             -> hold / wait; unwait -> unwait
//   a lease ending in any way        -> release (by its owner and resource)
//   a wait ending without a grant    -> unwait
//   a lease restored at a restart    -> hold
// Ends that happen as time advances (expiries, timeouts, hand-overs) come before the
// record's own op, the rest after it. Session and owner are the command's. Boot and
// report records give no op.
std::vector<graph::TraceOp> TraceOpsOf(const ReplayStep& step);

}  // namespace lockgraph::daemon

#endif  // LOCKGRAPH_DAEMON_REPLAY_H_
