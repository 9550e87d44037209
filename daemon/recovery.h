// Recovery at start: the state at the end of the last boot, from its journal segment.
//
// The last segment is replayed through a fresh core (ordering off: it changes no
// lock, since a refusal was journaled as a Tick, and the learned order comes back
// from order.json). Only its tail can have been cut by a crash or a power failure:
// what follows the last good record is reported and cut off, never replayed. No
// sockets, no threads, no logging: the daemon logs what this returns.
//
// Not replay.h's ReplaySegment: that one keeps the whole segment and a book of every
// lease in memory for the tools; a restart reads millions of records and needs only
// the final state, so it streams them (ScanSegment's callback form).
#ifndef LOCKGRAPH_DAEMON_RECOVERY_H_
#define LOCKGRAPH_DAEMON_RECOVERY_H_

#include <cstddef>
#include <string>
#include <variant>

#include "lockgraph/graph/coordinator.h"

namespace lockgraph::daemon {

struct Recovered {
  graph::Restore point;       // sessions and arbitrate leases to restore (grace not set)
  bool clean_tail = true;     // false: a torn or damaged tail was cut off
  std::string problem;        // with !clean_tail: what and where
  std::size_t records = 0;    // good records replayed
  bool previous_always = false;  // the previous boot ran fsync always
};

// Replays `segment` and cuts a bad tail from the file. An error when the file is not
// a segment or does not start with a boot record (the daemon then refuses to start:
// serving without what the journal holds could hand out leases twice).
std::variant<Recovered, std::string> RecoverFromSegment(const std::string& segment);

}  // namespace lockgraph::daemon

#endif  // LOCKGRAPH_DAEMON_RECOVERY_H_
