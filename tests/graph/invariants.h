// Invariants of the core, checked after every Coordinator::Apply by the property
// tests (coordinator_property_test.cc) and the simulation (simulation_test.cc).
//
// `Harness` wraps a Coordinator. Each Apply is followed by a snapshot of the public
// queries (Leases, Waits, WaitForEdges, Sessions) and a set of checks against that
// snapshot, the one before it, the command and its effects, and a small independent
// model kept from the effects (open sessions and their expiry, queued acquires not yet
// answered, the highest fencing token seen, victims chosen so far). The first step with
// a problem is recorded in failure() with the command, the effects and the tail of the
// command trace, so a test can stop there and print a reproduction.
//
// What "live" means for a lease (HolderLiveness): a granted lease that is not revoked
// is live; a revoked lease is still a holder until its handover (handover_at_us in the
// future), so waiters must not get it earlier; at handover_at_us == now it may or may
// not have passed yet; after that it has passed. A revoked lease of a revoke_immediate
// class passes at once, so it may overlap a new grant (its token is stale). A revoked
// reported (doomed) hold stays until the victim reports its release, but whether
// waiters may be granted past it is left open by docs/core.md, so it counts as
// "maybe". Mutual exclusion is checked over live granted leases only; reported holds
// may conflict (they are recorded, not refused), but no new grant may conflict with a
// live hold of any kind.
//
// The checks, after every Apply:
//  - CheckInvariants() is empty; stats() live counts agree with the queries.
//  - Mutual exclusion over live granted leases; no grant of this Apply conflicts with
//    a live hold; in arbitrate-only runs AuditCycles() is empty.
//  - Fencing: every grant (reply, GrantedEvent, upgrade, reported hold) takes a token
//    above every token seen before, GrantedEvents in increasing order; a new lease's id
//    is its first token; no lease changes token without an announced grant;
//    last_token() is at least every token handed out.
//  - Victims: each DeadlockEvent / DEADLOCK reply names a cycle whose every edge
//    existed during the Apply (wait in the state before or after or in the command;
//    hold likewise or granted in the Apply; soft edges between two incompatible queued
//    acquires); the victim is in the cycle, its wait there is denied with DEADLOCK in
//    the same Apply and its edge gone, its lease on the cycle revoked; the default
//    policy is respected (lowest priority, then youngest `started`); report ids
//    increase; one cycle (its owners in order) gets no second victim unless it was
//    broken since (arbitrate) or its report-mode victim's grace is over (or it stopped
//    holding a doomed hold, or the attempt grew after VictimUnresponsive), or a session
//    of its owners closed (a session reopened with the same id has new owners).
//  - Queued acquires: each ends in exactly one GrantedEvent or DeniedEvent matching it
//    (TIMEOUT not before its deadline, CANCELLED only by an Unwait or Hold of it), or
//    its session closes; meanwhile it is in Waits() with the deadline of its wait_ms
//    and that deadline has not passed. Waits() shows no queued wait nobody asked for.
//  - The wait-for edges are exactly those implied by Leases() and Waits()
//    (EdgeProblems); a queue head that nothing live blocks has been granted
//    (QueueHeadProblems).
//  - Sessions exist exactly while renewed within their TTL (any successful
//    session-scoped command renews); closing is announced by SessionClosedEvent or
//    answers a Bye; leases and waits belong to open sessions; a non-revoked lease is
//    never past its TTL; leases do not vanish without a release, expiry, handover or
//    session end; RevokedEvent `expired` not before the lease's TTL.
//  - NextDeadline() is never in the past, and a Tick before it changes nothing.
//  - A reply other than OK and DEADLOCK, at the same `now` as the previous Apply, leaves
//    Leases/Waits/WaitForEdges/Sessions exactly as they were and emits no event.
//
// Header-only on purpose: both test binaries include it, and tests/CMakeLists.txt
// builds one executable per *_test.cc file.
#ifndef LOCKGRAPH_TESTS_GRAPH_INVARIANTS_H_
#define LOCKGRAPH_TESTS_GRAPH_INVARIANTS_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "lockgraph/graph/coordinator.h"

namespace lockgraph::graph::testing {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// ---------------------------------------------------------------- rendering

inline std::string OwnerKey(std::string_view session, std::string_view owner) {
  std::string s(session);
  s += '/';
  s += owner;
  return s;
}

inline std::string ModeText(Mode m) {
  if (m == Mode::kShared) return "S";
  if (m == Mode::kExclusive) return "X";
  return "mode" + std::to_string(static_cast<int>(m));
}

inline std::string TimeText(TimeUs t) { return t == kNever ? "never" : std::to_string(t); }

inline std::string AuthText(const Auth& a) { return a.session + "(" + a.secret + ")"; }

// One line per command, enough to rebuild it by hand.
inline std::string Describe(const Command& command) {
  std::ostringstream o;
  std::visit(
      Overloaded{
          [&](const Hello& c) {
            o << "Hello " << c.session << " secret=" << c.secret << " ttl_ms=" << c.ttl_ms
              << " priority=" << c.priority;
          },
          [&](const Heartbeat& c) { o << "Heartbeat " << AuthText(c.auth); },
          [&](const Bye& c) { o << "Bye " << AuthText(c.auth); },
          [&](const Acquire& c) {
            o << "Acquire " << AuthText(c.auth) << " req=" << c.request_id << " owner='"
              << c.owner << "' resource='" << c.resource << "' " << ModeText(c.mode)
              << " ttl_ms=" << c.ttl_ms << " wait_ms=" << c.wait_ms;
            if (c.started) o << " started=" << *c.started;
          },
          [&](const Renew& c) {
            o << "Renew " << AuthText(c.auth) << " lease=" << c.lease;
            if (c.ttl_ms) o << " ttl_ms=" << *c.ttl_ms;
          },
          [&](const Release& c) {
            o << "Release " << AuthText(c.auth);
            if (c.lease) o << " lease=" << *c.lease;
            if (!c.owner.empty() || !c.resource.empty())
              o << " owner='" << c.owner << "' resource='" << c.resource << "'";
          },
          [&](const Hold& c) {
            o << "Hold " << AuthText(c.auth) << " owner='" << c.owner << "' resource='"
              << c.resource << "' " << ModeText(c.mode) << " ttl_ms=" << c.ttl_ms;
          },
          [&](const Wait& c) {
            o << "Wait " << AuthText(c.auth) << " owner='" << c.owner << "' resource='"
              << c.resource << "' " << ModeText(c.mode);
          },
          [&](const Unwait& c) {
            o << "Unwait " << AuthText(c.auth) << " owner='" << c.owner << "' resource='"
              << c.resource << "'";
          },
          [&](const Revoke& c) {
            o << "Revoke";
            if (c.lease) o << " lease=" << *c.lease;
            o << " resource='" << c.resource << "'";
          },
          [&](const Tick&) { o << "Tick"; },
          [&](const SetEpoch& c) { o << "SetEpoch " << c.epoch; },
          [&](const Restore& c) {
            o << "Restore sessions=" << c.sessions.size() << " leases=" << c.leases.size()
              << " grace_ms=" << c.grace_ms << (c.grant_unclaimed ? " grant_unclaimed" : "");
          },
          [&](const Reclaim& c) {
            o << "Reclaim " << c.auth.session << " items=" << c.items.size();
          },
      },
      command);
  return o.str();
}

inline std::string Describe(const DeadlockReport& r) {
  std::ostringstream o;
  o << "#" << r.id << " victim=" << r.victim << " step=" << VictimStepName(r.step)
    << " attempt=" << r.attempt << (r.report_mode ? " report" : "") << " cycle=[";
  for (std::size_t i = 0; i < r.cycle.size(); ++i) {
    const CycleEdge& e = r.cycle[i];
    if (i) o << ", ";
    o << e.owner << " -" << (e.soft ? "soft" : "hard") << " " << e.waits_for << " "
      << ModeText(e.mode) << "-> " << e.held_by;
  }
  o << "]";
  if (!r.unresponsive.empty()) {
    o << " unresponsive=";
    for (const auto& u : r.unresponsive) o << u << ";";
  }
  return o.str();
}

inline std::string Describe(const std::shared_ptr<const DeadlockReport>& r) {
  return r ? Describe(*r) : std::string("(no report)");
}

inline std::string Describe(const Event& event) {
  std::ostringstream o;
  std::visit(
      Overloaded{
          [&](const GrantedEvent& e) {
            o << "Granted " << OwnerKey(e.session, e.owner) << " req=" << e.request_id << " "
              << e.resource << " " << ModeText(e.mode) << " lease=" << e.lease
              << " token=" << e.token;
          },
          [&](const DeniedEvent& e) {
            o << "Denied " << OwnerKey(e.session, e.owner) << " req=" << e.request_id << " "
              << e.resource << " " << CodeName(e.code);
            if (e.deadlock) o << " " << Describe(e.deadlock);
          },
          [&](const RevokedEvent& e) {
            o << "Revoked " << OwnerKey(e.session, e.owner) << " " << e.resource
              << " lease=" << e.lease << " token=" << e.token << " "
              << RevokeReasonName(e.reason) << " handover_in_ms=" << e.handover_in_ms;
          },
          [&](const DeadlockEvent& e) { o << "Deadlock " << Describe(e.report); },
          [&](const VictimUnresponsiveEvent& e) {
            o << "VictimUnresponsive " << Describe(e.report);
          },
          [&](const ConflictingHoldEvent& e) {
            o << "ConflictingHold " << OwnerKey(e.session, e.owner) << " " << e.resource
              << " held_by=" << e.held_by;
          },
          [&](const SessionClosedEvent& e) {
            o << "SessionClosed " << e.session << (e.expired ? " expired" : " bye");
          },
          [&](const NeedEpochEvent& e) { o << "NeedEpoch " << e.next_epoch; },
          [&](const OrderReportEvent& e) {
            o << "OrderReport " << e.session << " " << OrderKindName(e.report->kind) << " "
              << e.report->from << "->" << e.report->to;
          },
      },
      event);
  return o.str();
}

inline std::string Describe(const Effects& fx) {
  std::ostringstream o;
  const Reply& r = fx.reply;
  o << CodeName(r.code);
  if (!r.message.empty()) o << " (" << r.message << ")";
  if (r.granted) o << " granted lease=" << r.lease << " token=" << r.token;
  if (r.queued) o << " queued";
  if (r.cancelled) o << " cancelled";
  if (r.started) o << " started=" << *r.started;
  if (r.deadlock) o << " deadlock " << Describe(r.deadlock);
  for (const Event& e : fx.events) o << "\n      event: " << Describe(e);
  return o.str();
}

inline std::string Describe(const LeaseInfo& l) {
  std::ostringstream o;
  o << "lease " << l.lease << " token=" << l.token << " " << OwnerKey(l.session, l.owner)
    << " " << l.resource << " " << ModeText(l.mode) << " expires=" << TimeText(l.expires_at_us)
    << (l.reported ? " reported" : "") << (l.revoked ? " revoked" : "")
    << " handover=" << TimeText(l.handover_at_us) << " site='" << l.site << "'";
  return o.str();
}

inline std::string Describe(const WaitInfo& w) {
  std::ostringstream o;
  o << "wait " << OwnerKey(w.session, w.owner) << " " << w.resource << " " << ModeText(w.mode)
    << (w.reported ? " reported" : "") << (w.upgrade ? " upgrade" : "")
    << " req=" << w.request_id << " since=" << w.since_us
    << " deadline=" << TimeText(w.deadline_us) << " site='" << w.site << "'";
  return o.str();
}

inline std::string Describe(const OwnerEdge& e) {
  return "edge " + e.from + " -> " + e.to + (e.hard ? " hard" : "") + (e.soft ? " soft" : "");
}

// ---------------------------------------------------------------- snapshots

struct Snapshot {
  TimeUs now = 0;
  std::vector<LeaseInfo> leases;
  std::vector<WaitInfo> waits;
  std::vector<OwnerEdge> edges;
  std::vector<std::string> sessions;
};

inline Snapshot Take(const Coordinator& c, TimeUs now) {
  Snapshot s;
  s.now = now;
  s.leases = c.Leases();
  s.waits = c.Waits();
  s.edges = c.WaitForEdges();
  s.sessions = c.Sessions();
  return s;
}

inline std::string Describe(const std::string& s) { return s; }

template <class T>
std::string ListDiff(const char* what, const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<std::string> da, db;
  for (const T& x : a) da.push_back(Describe(x));
  for (const T& x : b) db.push_back(Describe(x));
  if (da == db) return "";
  std::ostringstream o;
  o << what << " changed:";
  std::set<std::string> sa(da.begin(), da.end()), sb(db.begin(), db.end());
  for (const auto& x : da)
    if (!sb.count(x)) o << "\n      - " << x;
  for (const auto& x : db)
    if (!sa.count(x)) o << "\n      + " << x;
  if (sa == sb) o << " (order only)";
  return o.str();
}

inline bool Same(const LeaseInfo& a, const LeaseInfo& b) {
  return a.lease == b.lease && a.token == b.token && a.session == b.session &&
         a.owner == b.owner && a.resource == b.resource && a.mode == b.mode &&
         a.expires_at_us == b.expires_at_us && a.reported == b.reported &&
         a.revoked == b.revoked && a.handover_at_us == b.handover_at_us && a.site == b.site;
}
inline bool Same(const WaitInfo& a, const WaitInfo& b) {
  return a.session == b.session && a.owner == b.owner && a.resource == b.resource &&
         a.mode == b.mode && a.reported == b.reported && a.upgrade == b.upgrade &&
         a.request_id == b.request_id && a.since_us == b.since_us &&
         a.deadline_us == b.deadline_us && a.site == b.site;
}
inline bool Same(const OwnerEdge& a, const OwnerEdge& b) {
  return a.from == b.from && a.to == b.to && a.hard == b.hard && a.soft == b.soft;
}
inline bool Same(const std::string& a, const std::string& b) { return a == b; }
template <class T>
bool SameList(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!Same(a[i], b[i])) return false;
  return true;
}

// Empty when the two snapshots show the same state (time is not compared).
inline std::string SnapshotDiff(const Snapshot& a, const Snapshot& b) {
  if (SameList(a.leases, b.leases) && SameList(a.waits, b.waits) &&
      SameList(a.edges, b.edges) && SameList(a.sessions, b.sessions))
    return "";
  std::string out;
  for (std::string d : {ListDiff("leases", a.leases, b.leases),
                        ListDiff("waits", a.waits, b.waits),
                        ListDiff("edges", a.edges, b.edges),
                        ListDiff("sessions", a.sessions, b.sessions)}) {
    if (d.empty()) continue;
    if (!out.empty()) out += "\n    ";
    out += d;
  }
  return out;
}

inline std::string DescribeState(const Snapshot& s) {
  std::ostringstream o;
  o << "  state at " << s.now << ":";
  for (const auto& x : s.sessions) o << "\n    session " << x;
  for (const auto& x : s.leases) o << "\n    " << Describe(x);
  for (const auto& x : s.waits) o << "\n    " << Describe(x);
  for (const auto& x : s.edges) o << "\n    " << Describe(x);
  return o.str();
}

// ---------------------------------------------------------------- pure checks

inline std::string_view ClassOf(const Config& config, std::string_view resource) {
  std::size_t pos = resource.find(config.class_separator);
  return pos == std::string_view::npos ? resource : resource.substr(0, pos);
}

inline bool RevokeImmediate(const Config& config, std::string_view resource) {
  auto it = config.classes.find(ClassOf(config, resource));
  return it != config.classes.end() && it->second.revoke_immediate;
}

enum class Liveness { kLive, kMaybe, kGone };

// See the comment at the top of the file.
inline Liveness HolderLiveness(const LeaseInfo& l, const Config& config, TimeUs now) {
  if (!l.revoked) return Liveness::kLive;
  if (l.reported || RevokeImmediate(config, l.resource)) return Liveness::kMaybe;
  if (l.handover_at_us > now) return Liveness::kLive;
  if (l.handover_at_us == now) return Liveness::kMaybe;
  return Liveness::kGone;
}

// Mutual exclusion over granted (not reported) leases: on every resource the live ones
// are all S, or a single lease.
inline std::vector<std::string> ExclusionProblems(const Snapshot& s, const Config& config) {
  std::vector<std::string> out;
  std::map<std::string, std::vector<const LeaseInfo*>> by_resource;
  for (const LeaseInfo& l : s.leases)
    if (!l.reported && HolderLiveness(l, config, s.now) == Liveness::kLive)
      by_resource[l.resource].push_back(&l);
  for (const auto& [resource, ls] : by_resource) {
    for (std::size_t i = 0; i < ls.size(); ++i)
      for (std::size_t j = i + 1; j < ls.size(); ++j)
        if (!Compatible(ls[i]->mode, ls[j]->mode))
          out.push_back("mutual exclusion broken on " + resource + ": " + Describe(*ls[i]) +
                        " / " + Describe(*ls[j]));
  }
  return out;
}

// The wait-for edges must be exactly those implied by the holds and waits
// (docs/core.md, "The wait-for graph"): a hard edge from each waiter to every other
// owner holding the resource incompatibly (revoked holders may or may not count, see
// HolderLiveness), a soft edge from each queued acquire to every earlier incompatible
// queued acquire of the same resource (Waits() lists queues in order).
inline std::vector<std::string> EdgeProblems(const Snapshot& s, const Config& config) {
  std::vector<std::string> out;
  using Pair = std::pair<std::string, std::string>;
  std::vector<Pair> hard_min, hard_max, soft;
  std::vector<std::string> lease_owner(s.leases.size());
  std::map<std::string_view, std::vector<std::size_t>> holders;  // resource -> leases
  for (std::size_t i = 0; i < s.leases.size(); ++i) {
    lease_owner[i] = OwnerKey(s.leases[i].session, s.leases[i].owner);
    holders[s.leases[i].resource].push_back(i);
  }
  std::map<std::string_view, std::vector<std::size_t>> queues;  // resource -> waits
  std::vector<std::string> wait_owner(s.waits.size());
  for (std::size_t i = 0; i < s.waits.size(); ++i) {
    const WaitInfo& w = s.waits[i];
    wait_owner[i] = OwnerKey(w.session, w.owner);
    const std::string& from = wait_owner[i];
    auto h = holders.find(w.resource);
    if (h != holders.end()) {
      for (std::size_t li : h->second) {
        const LeaseInfo& l = s.leases[li];
        const std::string& to = lease_owner[li];
        if (to == from || Compatible(l.mode, w.mode)) continue;
        hard_max.emplace_back(from, to);
        if (HolderLiveness(l, config, s.now) == Liveness::kLive) hard_min.emplace_back(from, to);
      }
    }
    if (!w.reported) {
      auto& q = queues[w.resource];
      for (std::size_t ei : q) {
        const std::string& to = wait_owner[ei];
        if (to != from && !Compatible(s.waits[ei].mode, w.mode)) soft.emplace_back(from, to);
      }
      q.push_back(i);
    }
  }
  for (auto* v : {&hard_min, &hard_max, &soft}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
  auto has = [](const std::vector<Pair>& v, const Pair& p) {
    return std::binary_search(v.begin(), v.end(), p);
  };
  std::vector<Pair> seen;
  seen.reserve(s.edges.size());
  for (const OwnerEdge& e : s.edges) {
    Pair p{e.from, e.to};
    if (!seen.empty() && !(seen.back() < p))
      out.push_back("edges not sorted by (from, to), or duplicate: " + Describe(e));
    seen.push_back(p);
    if (!e.hard && !e.soft) out.push_back("neither hard nor soft: " + Describe(e));
    if (e.hard && !has(hard_max, p))
      out.push_back("hard " + Describe(e) + " has no incompatible hold behind it");
    if (!e.hard && has(hard_min, p))
      out.push_back(Describe(e) + " should be hard (a live incompatible hold)");
    if (e.soft != has(soft, p))
      out.push_back(Describe(e) + (e.soft ? " should not be soft" : " should be soft"));
  }
  std::sort(seen.begin(), seen.end());
  for (const Pair& p : hard_min)
    if (!has(seen, p)) out.push_back("missing hard edge " + p.first + " -> " + p.second);
  for (const Pair& p : soft)
    if (!has(seen, p)) out.push_back("missing soft edge " + p.first + " -> " + p.second);
  return out;
}

// Queued grants happen in queue order while the head is compatible with the holders:
// a queue head that no live (or maybe-live) hold of another owner blocks must have been
// granted.
inline std::vector<std::string> QueueHeadProblems(const Snapshot& s, const Config& config) {
  std::vector<std::string> out;
  std::set<std::string> seen_resource;
  for (const WaitInfo& w : s.waits) {
    if (w.reported || !seen_resource.insert(w.resource).second) continue;
    bool blocked = false;
    std::string me = OwnerKey(w.session, w.owner);
    for (const LeaseInfo& l : s.leases) {
      if (l.resource != w.resource || OwnerKey(l.session, l.owner) == me) continue;
      if (HolderLiveness(l, config, s.now) == Liveness::kGone) continue;
      if (!Compatible(l.mode, w.mode)) blocked = true;
    }
    if (!blocked) out.push_back("queue head could be granted but still waits: " + Describe(w));
  }
  return out;
}

// ---------------------------------------------------------------- the harness

struct HarnessOptions {
  bool arbitrate_only = false;  // AuditCycles() must be empty after every Apply
  bool check_victim_policy = true;  // needs the default Config::victim_policy
  std::size_t trace_tail = 60;   // commands shown with a failure
};

class Harness {
 public:
  Harness(Config config, HarnessOptions options, std::uint32_t epoch = 1,
          std::uint64_t first_seq = 1)
      : config_(config), options_(options), coordinator_(std::move(config), epoch, first_seq) {
    last_ = Take(coordinator_, 0);
  }

  Coordinator& coordinator() { return coordinator_; }
  const Config& config() const { return config_; }
  // The state after the last Apply.
  const Snapshot& last() const { return last_; }
  TimeUs now() const { return last_now_; }
  std::uint64_t steps() const { return steps_; }
  bool failed() const { return !failure_.empty(); }
  // The current epoch has no sequence number left: grants need a SetEpoch first.
  bool tokens_exhausted() const { return TokensExhausted(); }
  // The first failing step: what went wrong, the command, its effects, the state, and
  // the tail of the trace. Empty while nothing failed.
  const std::string& failure() const { return failure_; }
  std::uint64_t deadlocks_seen() const { return deadlocks_seen_; }
  std::uint64_t grants_seen() const { return grants_seen_; }

  // Queued acquires not answered yet, by (session, request_id).
  struct Pending {
    std::string owner;
    std::string resource;
    Mode mode = Mode::kExclusive;
    TimeUs deadline = kNever;
  };
  const std::map<std::pair<std::string, std::uint64_t>, Pending>& pending() const {
    return pending_;
  }

  // Records a problem found by the test itself for the current step (after Apply).
  void Fail(const std::string& problem) { problems_.push_back(problem); Flush(); }

  Effects Apply(const Command& command, TimeUs now) {
    TimeUs t = std::max(now, last_now_);
    bool same_time = steps_ > 0 && t == last_now_;
    ++steps_;
    trace_.emplace_back(now, command);
    if (trace_.size() > options_.trace_tail) trace_.pop_front();
    Snapshot before = std::move(last_);
    TimeUs deadline_before = next_deadline_;
    Effects fx = coordinator_.Apply(command, now);
    Snapshot after = Take(coordinator_, t);
    cur_command_ = &command;
    cur_fx_ = &fx;
    cur_before_ = &before;
    CheckEffects(command, fx, before, after, t);
    CheckState(after, t);
    // NextDeadline(): nothing is due before it, and nothing due is left behind.
    if (std::holds_alternative<Tick>(command) && steps_ > 1 && t < deadline_before) {
      std::string d = SnapshotDiff(before, after);
      if (!fx.events.empty() || !d.empty())
        Problem("a Tick before NextDeadline() (" + TimeText(deadline_before) +
                ") changed something:\n    " + d);
    }
    next_deadline_ = coordinator_.NextDeadline();
    if (next_deadline_ < t)
      Problem("NextDeadline() " + TimeText(next_deadline_) + " is in the past");
    if (same_time && fx.reply.code != Code::kOk && fx.reply.code != Code::kDeadlock) {
      std::string d = SnapshotDiff(before, after);
      if (!d.empty()) Problem("an error reply changed the state:\n    " + d);
      // The only events an error may bring are ordering reports, which are for logs
      // and change no lock (a refusal, or a try that broke a rule and found the
      // resource busy).
      for (const Event& e : fx.events) {
        if (!std::holds_alternative<OrderReportEvent>(e)) Problem("an error reply came with events");
      }
    }
    last_ = std::move(after);
    last_now_ = t;
    Flush();
    cur_command_ = nullptr;
    cur_fx_ = nullptr;
    cur_before_ = nullptr;
    return fx;
  }

 private:
  struct SessionModel {
    TimeUs ttl_us = 0;
    TimeUs last_ok = 0;
    std::int32_t priority = 0;
  };
  struct CycleRecord {
    TimeUs acted_at = 0;
    bool report_mode = false;
    int attempt = 1;
    std::string victim;
    std::vector<CycleEdge> cycle;
    bool broken = false;
  };
  using Key = std::pair<std::string, std::string>;  // (owner key, resource)

  void Problem(std::string p) { problems_.push_back(std::move(p)); }

  void Flush() {
    if (problems_.empty()) return;
    if (failure_.empty()) {
      std::ostringstream o;
      o << "step " << steps_ << " at t=" << last_now_ << "us:";
      for (const auto& p : problems_) o << "\n  PROBLEM: " << p;
      if (cur_command_) o << "\n  command: " << Describe(*cur_command_);
      if (cur_fx_) o << "\n  effects: " << Describe(*cur_fx_);
      if (cur_before_) o << "\n  before:\n" << DescribeState(*cur_before_);
      o << "\n  after:\n" << DescribeState(last_);
      o << "\n  last " << trace_.size() << " commands (time us: command):";
      for (const auto& [t, c] : trace_) o << "\n    " << t << ": " << Describe(c);
      failure_ = o.str();
    }
    problems_.clear();
  }

  static const Auth* AuthOf(const Command& c) {
    return std::visit(
        Overloaded{[](const Heartbeat& x) -> const Auth* { return &x.auth; },
                   [](const Bye& x) -> const Auth* { return &x.auth; },
                   [](const Acquire& x) -> const Auth* { return &x.auth; },
                   [](const Renew& x) -> const Auth* { return &x.auth; },
                   [](const Release& x) -> const Auth* { return &x.auth; },
                   [](const Hold& x) -> const Auth* { return &x.auth; },
                   [](const Wait& x) -> const Auth* { return &x.auth; },
                   [](const Unwait& x) -> const Auth* { return &x.auth; },
                   [](const auto&) -> const Auth* { return nullptr; }},
        c);
  }

  // ------------------------------------------------------------ effects

  void CheckEffects(const Command& command, const Effects& fx, const Snapshot& before,
                    const Snapshot& after, TimeUs t) {
    const Reply& reply = fx.reply;
    std::map<LeaseId, const LeaseInfo*> before_by_id, after_by_id;
    for (const LeaseInfo& l : before.leases) before_by_id[l.lease] = &l;
    for (const LeaseInfo& l : after.leases) after_by_id[l.lease] = &l;

    // --- sessions: replies first (a Hello opens, a Bye closes), then events.
    const Auth* auth = AuthOf(command);
    std::set<std::string> closed_now;
    if (const auto* h = std::get_if<Hello>(&command); h && reply.ok()) {
      sessions_[h->session] = {h->ttl_ms * 1000, t, h->priority};
    } else if (auth && reply.ok()) {
      auto it = sessions_.find(auth->session);
      if (it == sessions_.end()) {
        Problem("a command of session " + auth->session + " (not open) succeeded");
      } else {
        it->second.last_ok = t;
      }
      if (std::holds_alternative<Bye>(command)) {
        sessions_.erase(auth->session);
        closed_now.insert(auth->session);
        ForgetCyclesOf(auth->session);
      }
    }

    // --- tokens: every grant of this Apply takes a new, larger token.
    std::set<Token> new_tokens;
    Token last_event_token = 0;
    auto new_token = [&](Token token, const std::string& what) {
      if (token <= max_token_)
        Problem(what + ": token " + std::to_string(token) + " not above the highest seen " +
                std::to_string(max_token_));
      new_tokens.insert(token);
    };

    std::map<LeaseId, const RevokedEvent*> revoked_now;
    std::vector<const DeadlockEvent*> deadlock_events;
    std::set<std::pair<std::string, std::string>> denied_deadlock;  // (owner key, resource)
    struct Grant {
      std::string owner_key, resource;
      Mode mode;
      LeaseId lease;
      Token token;
    };
    std::vector<Grant> grants;

    for (const Event& ev : fx.events) {
      if (const auto* g = std::get_if<GrantedEvent>(&ev)) {
        ++grants_seen_;
        new_token(g->token, "GrantedEvent " + Describe(ev));
        if (g->token <= last_event_token) Problem("tokens out of order in events: " + Describe(ev));
        last_event_token = g->token;
        auto it = pending_.find({g->session, g->request_id});
        if (it == pending_.end()) {
          Problem("GrantedEvent for no queued acquire: " + Describe(ev));
        } else {
          if (it->second.owner != g->owner || it->second.resource != g->resource ||
              it->second.mode != g->mode)
            Problem("GrantedEvent does not match its acquire: " + Describe(ev));
          pending_.erase(it);
        }
        auto b = before_by_id.find(g->lease);
        bool upgrade = b != before_by_id.end();
        if (upgrade) {
          if (b->second->mode != Mode::kShared || g->mode != Mode::kExclusive ||
              b->second->session != g->session || b->second->owner != g->owner)
            Problem("GrantedEvent reuses a lease id that is not this owner's S: " +
                    Describe(ev));
        } else if (g->lease != g->token) {
          Problem("a new lease's id must be its first token: " + Describe(ev));
        }
        grants.push_back({OwnerKey(g->session, g->owner), g->resource, g->mode, g->lease,
                          g->token});
      } else if (const auto* d = std::get_if<DeniedEvent>(&ev)) {
        if (d->code != Code::kTimeout && d->code != Code::kDeadlock && d->code != Code::kCancelled)
          Problem("DeniedEvent with an unexpected code: " + Describe(ev));
        if (d->code == Code::kDeadlock) {
          if (!d->deadlock) Problem("DeniedEvent DEADLOCK without a report: " + Describe(ev));
          denied_deadlock.insert({OwnerKey(d->session, d->owner), d->resource});
        }
        if (d->request_id != 0) {
          auto it = pending_.find({d->session, d->request_id});
          if (it == pending_.end()) {
            Problem("DeniedEvent for no queued acquire: " + Describe(ev));
          } else {
            if (it->second.owner != d->owner || it->second.resource != d->resource)
              Problem("DeniedEvent does not match its acquire: " + Describe(ev));
            if (d->code == Code::kTimeout && t < it->second.deadline)
              Problem("TIMEOUT before the deadline " + std::to_string(it->second.deadline) +
                      ": " + Describe(ev));
            if (d->code == Code::kCancelled) {
              // An Unwait cancels; so does a reported Hold of the resource (it ends the
              // owner's wait for it).
              const auto* u = std::get_if<Unwait>(&command);
              const auto* h = std::get_if<Hold>(&command);
              bool by_unwait = u && u->auth.session == d->session && u->owner == d->owner &&
                               u->resource == d->resource;
              bool by_hold = h && h->auth.session == d->session && h->owner == d->owner &&
                             h->resource == d->resource;
              if (!by_unwait && !by_hold)
                Problem("CANCELLED without an Unwait or Hold of that request: " + Describe(ev));
            }
            pending_.erase(it);
          }
        }
      } else if (const auto* r = std::get_if<RevokedEvent>(&ev)) {
        revoked_now[r->lease] = r;
        auto b = before_by_id.find(r->lease);
        // Granted earlier in this Apply (by an event, or by the command's own reply:
        // a grant or a reported hold can close a cycle whose victim is its holder).
        bool granted_now = std::any_of(grants.begin(), grants.end(),
                                       [&](const Grant& g) { return g.lease == r->lease; }) ||
                           (reply.ok() && reply.lease == r->lease);
        if (b == before_by_id.end() && !granted_now) {
          Problem("RevokedEvent for a lease that did not exist: " + Describe(ev));
        } else if (b != before_by_id.end()) {
          const LeaseInfo& l = *b->second;
          if (l.session != r->session || l.owner != r->owner || l.resource != r->resource)
            Problem("RevokedEvent does not match its lease: " + Describe(ev));
          if (r->reason == RevokeReason::kExpired && l.expires_at_us > t)
            Problem("lease expired before its TTL (" + std::to_string(l.expires_at_us) +
                    "): " + Describe(ev));
        }
        if (r->reason == RevokeReason::kDeadlock && !r->deadlock)
          Problem("RevokedEvent deadlock without a report: " + Describe(ev));
      } else if (const auto* de = std::get_if<DeadlockEvent>(&ev)) {
        deadlock_events.push_back(de);
      } else if (const auto* sc = std::get_if<SessionClosedEvent>(&ev)) {
        if (std::find(after.sessions.begin(), after.sessions.end(), sc->session) !=
            after.sessions.end())
          Problem("SessionClosedEvent but the session is still open: " + Describe(ev));
        auto it = sessions_.find(sc->session);
        if (sc->expired) {
          if (it == sessions_.end()) {
            Problem("SessionClosedEvent expired for a session not open: " + Describe(ev));
          } else if (t < it->second.last_ok + it->second.ttl_us) {
            Problem("session expired early (last renewed " + std::to_string(it->second.last_ok) +
                    ", ttl " + std::to_string(it->second.ttl_us) + "us): " + Describe(ev));
          }
        } else if (!closed_now.count(sc->session)) {
          Problem("SessionClosedEvent (bye) without a Bye: " + Describe(ev));
        }
        if (it != sessions_.end()) sessions_.erase(it);
        closed_now.insert(sc->session);
        ForgetCyclesOf(sc->session);
      } else if (const auto* ne = std::get_if<NeedEpochEvent>(&ev)) {
        if (ne->next_epoch != coordinator_.epoch() + 1)
          Problem("NeedEpoch for an epoch other than the next: " + Describe(ev));
      } else if (const auto* vu = std::get_if<VictimUnresponsiveEvent>(&ev)) {
        if (!vu->report) {
          Problem("VictimUnresponsiveEvent without a report");
        } else {
          auto it = report_acted_.find(vu->report->id);
          if (it == report_acted_.end()) {
            Problem("VictimUnresponsiveEvent for an unknown report: " + Describe(ev));
          } else if (t < it->second + config_.victim_grace_us) {
            Problem("victim declared unresponsive before victim_grace: " + Describe(ev));
          }
        }
      }
    }

    // --- the reply's grant.
    const Acquire* acquire = std::get_if<Acquire>(&command);
    const Hold* hold = std::get_if<Hold>(&command);
    const Unwait* unwait = std::get_if<Unwait>(&command);
    // Hold answers with lease and token (no `granted` flag); acquire and unwait with
    // granted:true.
    if (reply.ok() && (hold || (reply.granted && (acquire || unwait)))) {
      ++grants_seen_;
      const std::string& session = auth->session;
      const std::string& owner = acquire ? acquire->owner : hold ? hold->owner : unwait->owner;
      const std::string& resource =
          acquire ? acquire->resource : hold ? hold->resource : unwait->resource;
      auto b = before_by_id.find(reply.lease);
      bool reissued = b != before_by_id.end() && b->second->token == reply.token;
      bool from_event = new_tokens.count(reply.token) > 0;
      if (b != before_by_id.end() &&
          (b->second->session != session || b->second->owner != owner ||
           b->second->resource != resource))
        Problem("granted reply names someone else's lease");
      if (!reissued && !from_event) {
        new_token(reply.token, "reply grant");
        // A lease granted by an event earlier in this Apply may be upgraded by the
        // reply: its id is then that event's token.
        if (b == before_by_id.end() && reply.lease != reply.token && !new_tokens.count(reply.lease))
          Problem("a new lease's id must be its first token");
        if (acquire) grants.push_back({OwnerKey(session, owner), resource, acquire->mode,
                                       reply.lease, reply.token});
      } else if (reissued && acquire && !Covers(b->second->mode, acquire->mode)) {
        Problem("an upgrade was answered with the old token");
      }
      if (!after_by_id.count(reply.lease) && !revoked_now.count(reply.lease))
        Problem("granted lease " + std::to_string(reply.lease) + " is not in Leases()");
    }
    if (acquire && reply.ok() && !reply.granted && !reply.queued)
      Problem("Acquire OK but neither granted nor queued");
    if (acquire && reply.ok() && !reply.started) Problem("Acquire OK without `started`");
    if (acquire && reply.code == Code::kTimeout && acquire->wait_ms != 0)
      Problem("Acquire TIMEOUT in the reply with wait_ms != 0");
    if (acquire && reply.ok() && reply.queued) {
      if (acquire->wait_ms == 0) Problem("Acquire with wait_ms 0 was queued");
      auto k = std::make_pair(acquire->auth.session, acquire->request_id);
      if (pending_.count(k)) Problem("request id queued twice");
      pending_[k] = {acquire->owner, acquire->resource, acquire->mode,
                     acquire->wait_ms < 0 ? kNever : t + acquire->wait_ms * 1000};
    }

    // Every lease either kept its token or got a token issued in this Apply.
    for (const LeaseInfo& l : after.leases) {
      auto b = before_by_id.find(l.lease);
      if (b != before_by_id.end() && b->second->token == l.token) continue;
      if (!new_tokens.count(l.token))
        Problem("lease got a token no grant announced: " + Describe(l));
    }
    for (Token tk : new_tokens) max_token_ = std::max(max_token_, tk);
    if (coordinator_.last_token() < max_token_)
      Problem("last_token() " + std::to_string(coordinator_.last_token()) +
              " below a token handed out");

    // New grants never conflict with a live hold of another owner (reported or not).
    for (const Grant& g : grants) {
      // A grant revoked again within the Apply (it closed a cycle and its holder was
      // the victim) may have passed on already.
      auto mine = after_by_id.find(g.lease);
      if (mine == after_by_id.end() || mine->second->token != g.token ||
          HolderLiveness(*mine->second, config_, t) != Liveness::kLive)
        continue;
      for (const LeaseInfo& l : after.leases) {
        if (l.resource != g.resource || l.lease == g.lease) continue;
        if (OwnerKey(l.session, l.owner) == g.owner_key) continue;
        if (HolderLiveness(l, config_, t) != Liveness::kLive) continue;
        // A hold reported in this Apply after the grant conflicts by its own report:
        // recorded and counted (ConflictingHoldEvent), not refused.
        if (l.reported && !before_by_id.count(l.lease)) continue;
        if (!Compatible(l.mode, g.mode))
          Problem("grant of " + g.resource + " " + ModeText(g.mode) + " to " + g.owner_key +
                  " (token " + std::to_string(g.token) + ") conflicts with " + Describe(l));
      }
    }

    // Leases do not vanish without a reason.
    const Release* release = std::get_if<Release>(&command);
    for (const LeaseInfo& l : before.leases) {
      if (after_by_id.count(l.lease)) continue;
      if (closed_now.count(l.session) || revoked_now.count(l.lease)) continue;
      if (release && release->auth.session == l.session &&
          ((release->lease && *release->lease == l.lease) ||
           (!release->lease && release->owner == l.owner && release->resource == l.resource)))
        continue;
      if (hold && hold->auth.session == l.session && hold->owner == l.owner &&
          hold->resource == l.resource)
        continue;
      if (l.revoked && (l.handover_at_us <= t || l.expires_at_us <= t ||
                        RevokeImmediate(config_, l.resource)))
        continue;
      Problem("lease vanished without release, expiry or session end: " + Describe(l));
    }

    // --- deadlocks.
    std::vector<std::pair<const DeadlockReport*, bool>> reports;  // (report, is event)
    for (const DeadlockEvent* de : deadlock_events) {
      if (!de->report) {
        Problem("DeadlockEvent without a report");
        continue;
      }
      reports.push_back({de->report.get(), true});
    }
    if (reply.code == Code::kDeadlock) {
      if (!reply.deadlock) {
        Problem("DEADLOCK reply without a report");
      } else {
        reports.push_back({reply.deadlock.get(), false});
      }
      if (!acquire && !std::holds_alternative<Wait>(command))
        Problem("DEADLOCK reply to a command that cannot wait");
      if (acquire && acquire->wait_ms == 0) Problem("DEADLOCK reply to a try-acquire");
    }
    if (!reports.empty()) {
      std::vector<std::tuple<std::string, std::string, Mode>> granted;
      for (const Grant& g : grants) granted.emplace_back(g.owner_key, g.resource, g.mode);
      CheckDeadlocks(command, fx, reports, before, after, t, denied_deadlock, revoked_now,
                     granted);
    }
  }

  // Each cycle edge must have existed during this Apply: the wait in the snapshot
  // before or after or in the command; the hold in those or granted in this Apply.
  void CheckDeadlocks(const Command& command, const Effects& fx,
                      const std::vector<std::pair<const DeadlockReport*, bool>>& reports,
                      const Snapshot& before, const Snapshot& after, TimeUs t,
                      const std::set<std::pair<std::string, std::string>>& denied_deadlock,
                      const std::map<LeaseId, const RevokedEvent*>& revoked_now,
                      const std::vector<std::tuple<std::string, std::string, Mode>>& grants) {
    struct Item {
      Mode mode;
      bool reported;
    };
    std::multimap<Key, Item> holds, waits;
    for (const Snapshot* s : {&before, &after}) {
      for (const LeaseInfo& l : s->leases)
        holds.insert({{OwnerKey(l.session, l.owner), l.resource}, {l.mode, l.reported}});
      for (const WaitInfo& w : s->waits)
        waits.insert({{OwnerKey(w.session, w.owner), w.resource}, {w.mode, w.reported}});
    }
    for (const auto& [o, r, m] : grants) holds.insert({{o, r}, {m, false}});
    std::string requester;
    std::string requested;
    if (const auto* a = std::get_if<Acquire>(&command)) {
      requester = OwnerKey(a->auth.session, a->owner);
      requested = a->resource;
      waits.insert({{requester, a->resource}, {a->mode, false}});
    } else if (const auto* w = std::get_if<Wait>(&command)) {
      requester = OwnerKey(w->auth.session, w->owner);
      requested = w->resource;
      waits.insert({{requester, w->resource}, {w->mode, true}});
    } else if (const auto* h = std::get_if<Hold>(&command)) {
      holds.insert({{OwnerKey(h->auth.session, h->owner), h->resource}, {h->mode, true}});
    }

    std::set<std::vector<std::string>> keys_this_apply;
    std::set<std::uint64_t> event_ids;
    for (const auto& [r, is_event] : reports)
      if (is_event) event_ids.insert(r->id);

    for (const auto& [r, is_event] : reports) {
      std::string head = (is_event ? "DeadlockEvent " : "DEADLOCK reply ") + Describe(*r);
      const auto& cycle = r->cycle;
      std::size_t n = cycle.size();
      if (n == 0) {
        Problem(head + ": empty cycle");
        continue;
      }
      if (is_event) {
        if (r->id <= last_report_id_)
          Problem(head + ": report ids must increase (last " +
                  std::to_string(last_report_id_) + ")");
        last_report_id_ = std::max(last_report_id_, r->id);
        ++deadlocks_seen_;
        report_acted_[r->id] = t;
      }
      bool self = n == 1 && cycle[0].owner == cycle[0].held_by;
      if (self) {
        // Self-deadlock (docs/core.md): a reported wait on what the owner holds in X;
        // the reply is DEADLOCK and nothing is recorded.
        if (!std::holds_alternative<Wait>(command) || cycle[0].owner != requester ||
            fx.reply.code != Code::kDeadlock)
          Problem(head + ": a one-edge cycle other than a reported self-deadlock");
        bool holds_x = false;
        auto range = holds.equal_range({requester, requested});
        for (auto it = range.first; it != range.second; ++it)
          holds_x |= it->second.mode == Mode::kExclusive;
        if (!holds_x) Problem(head + ": self-deadlock but the owner does not hold X");
        std::string d = SnapshotDiff(before, after);
        if (!d.empty() && t == before.now)
          Problem(head + ": a self-deadlock changed the state:\n    " + d);
        continue;
      }
      if (!is_event && !event_ids.count(r->id))
        Problem(head + ": the requester is a victim but no DeadlockEvent reports it");
      if (!is_event && r->victim != requester)
        Problem(head + ": DEADLOCK reply but the victim is not the requester");
      if (r->detected_at_us > t) Problem(head + ": detected in the future");
      if (r->attempt < 1 || static_cast<std::size_t>(r->attempt - 1) != r->unresponsive.size())
        Problem(head + ": attempt and unresponsive disagree");
      std::set<std::string> owners;
      bool victim_in_cycle = false;
      const CycleEdge* victim_edge = nullptr;
      const CycleEdge* into_victim = nullptr;
      for (std::size_t i = 0; i < n; ++i) {
        const CycleEdge& e = cycle[i];
        if (!owners.insert(e.owner).second) Problem(head + ": owner twice in the cycle");
        if (e.held_by != cycle[(i + 1) % n].owner)
          Problem(head + ": edge " + std::to_string(i) + " does not lead to the next owner");
        if (e.owner == r->victim) {
          victim_in_cycle = true;
          victim_edge = &e;
        }
        if (e.held_by == r->victim) into_victim = &e;
        bool skip = std::find(r->unresponsive.begin(), r->unresponsive.end(), e.owner) !=
                    r->unresponsive.end();
        // The wait of the edge.
        bool wait_ok = false, wait_queued = false;
        auto wr = waits.equal_range({e.owner, e.waits_for});
        for (auto it = wr.first; it != wr.second; ++it) {
          if (it->second.mode == e.mode) wait_ok = true;
          if (it->second.mode == e.mode && !it->second.reported) wait_queued = true;
        }
        if (!wait_ok && !skip)
          Problem(head + ": " + e.owner + " never waited for " + e.waits_for + " in " +
                  ModeText(e.mode));
        if (e.soft) {
          bool ok = false;
          auto hr = waits.equal_range({e.held_by, e.waits_for});
          for (auto it = hr.first; it != hr.second; ++it)
            if (!it->second.reported && !Compatible(it->second.mode, e.mode)) ok = true;
          if (!ok || !wait_queued)
            Problem(head + ": soft edge " + e.owner + " -> " + e.held_by + " on " +
                    e.waits_for + " without two incompatible queued acquires");
        } else {
          bool ok = false;
          auto hr = holds.equal_range({e.held_by, e.waits_for});
          for (auto it = hr.first; it != hr.second; ++it)
            if (!Compatible(it->second.mode, e.mode)) ok = true;
          if (!ok)
            Problem(head + ": hard edge " + e.owner + " -> " + e.held_by + " on " +
                    e.waits_for + " but no incompatible hold");
        }
      }
      if (!victim_in_cycle) {
        Problem(head + ": the victim is not in the cycle");
        continue;
      }
      // The victim's wait that makes its edge is denied at once.
      auto [victim_session, victim_owner] = SplitOwner(r->victim);
      bool denied = denied_deadlock.count({r->victim, victim_edge->waits_for}) > 0 ||
                    (fx.reply.code == Code::kDeadlock && requester == r->victim &&
                     requested == victim_edge->waits_for);
      if (!denied)
        Problem(head + ": the victim's wait on " + victim_edge->waits_for +
                " was not denied with DEADLOCK");
      for (const WaitInfo& w : after.waits) {
        // The command itself may wait again once time has advanced past the
        // confirmation that chose the victim: that is a new wait, not the old one.
        const bool new_by_command = requester == r->victim && requested == w.resource && w.since_us == t &&
                                    r->report_mode;
        if (OwnerKey(w.session, w.owner) == r->victim && w.resource == victim_edge->waits_for && !new_by_command)
          Problem(head + ": the victim still waits: " + Describe(w));
      }
      // The cycle is broken: in arbitrate mode not all of its edges still exist. (The
      // victim may still wait for the next owner through another wait of its own,
      // e.g. an upgrade that lost its S hold and queued behind that owner.)
      if (!r->report_mode) {
        std::size_t standing = 0;
        for (const CycleEdge& c : r->cycle)
          for (const OwnerEdge& e : after.edges)
            if (e.from == c.owner && e.to == c.held_by) ++standing;
        if (standing == r->cycle.size())
          Problem(head + ": every edge of the cycle is still there after the victim was chosen");
      }
      // Its lease on the cycle (what the previous owner waits for) is revoked.
      if (into_victim && !into_victim->soft) {
        bool revoked = false;
        for (const LeaseInfo& l : before.leases)
          if (OwnerKey(l.session, l.owner) == r->victim && l.resource == into_victim->waits_for &&
              l.revoked)
            revoked = true;
        for (const auto& [id, ev] : revoked_now)
          if (OwnerKey(ev->session, ev->owner) == r->victim &&
              ev->resource == into_victim->waits_for && ev->reason == RevokeReason::kDeadlock)
            revoked = true;
        bool held = false;
        for (const LeaseInfo& l : after.leases)
          if (OwnerKey(l.session, l.owner) == r->victim && l.resource == into_victim->waits_for)
            held = true;
        if (!revoked && held)
          Problem(head + ": the victim's lease on " + into_victim->waits_for +
                  " was not revoked");
      }
      if (options_.check_victim_policy && r->attempt == 1) CheckPolicy(head, *r);
      // One cycle, one victim.
      std::vector<std::string> key = CycleKey(*r);
      if (is_event) {
        if (!keys_this_apply.insert(key).second)
          Problem(head + ": a second victim for the same cycle in one Apply");
        auto it = cycles_.find(key);
        if (it != cycles_.end()) {
          const CycleRecord& rec = it->second;
          if (!r->report_mode && !rec.broken)
            Problem(head + ": the cycle already had victim " + rec.victim +
                    " and was not broken since");
          if (r->report_mode && r->attempt <= rec.attempt &&
              t < rec.acted_at + config_.victim_grace_us && StillDoomed(rec.victim, before))
            Problem(head + ": found again while victim " + rec.victim +
                    " is within its grace (chosen at " + std::to_string(rec.acted_at) + ")");
        }
        cycles_[key] = {t, r->report_mode, r->attempt, r->victim, r->cycle, false};
      }
    }
  }

  // A report-mode victim is "within grace" while it still holds a doomed hold: a revoked
  // reported lease (docs/core.md, "Resolving a cycle" 3). A revoked granted lease just
  // passes on after revoke_grace, so a retry may form the cycle again and cost a victim.
  bool TokensExhausted() const {
    Token last = coordinator_.last_token();
    return (last >> kSeqBits) == coordinator_.epoch() && (last & (kSeqLimit - 1)) == kSeqLimit - 1;
  }

  // A closed session's owners are gone: a later session with the same id has new
  // owners, and a cycle through them is a new cycle, not the old one found again.
  void ForgetCyclesOf(const std::string& session) {
    std::erase_if(cycles_, [&](const auto& entry) {
      for (const CycleEdge& e : entry.second.cycle)
        if (SplitOwner(e.owner).first == session || SplitOwner(e.held_by).first == session) return true;
      return false;
    });
  }

  static bool StillDoomed(const std::string& victim, const Snapshot& s) {
    for (const LeaseInfo& l : s.leases)
      if (l.revoked && l.reported && OwnerKey(l.session, l.owner) == victim) return true;
    return false;
  }

  static std::pair<std::string, std::string> SplitOwner(const std::string& key) {
    std::size_t pos = key.find('/');
    if (pos == std::string::npos) return {key, ""};
    return {key.substr(0, pos), key.substr(pos + 1)};
  }

  // A cycle is known by its owners in order; rotate so the smallest comes first.
  static std::vector<std::string> CycleKey(const DeadlockReport& r) {
    std::vector<std::string> owners;
    for (const CycleEdge& e : r.cycle) owners.push_back(e.owner);
    if (owners.empty()) return owners;
    auto m = std::min_element(owners.begin(), owners.end());
    std::rotate(owners.begin(), m, owners.end());
    return owners;
  }

  // Default policy: lowest priority, then youngest (latest `started`). Checked only
  // when every owner's `started` is known.
  void CheckPolicy(const std::string& head, const DeadlockReport& r) {
    struct Cand {
      std::string owner;
      std::int32_t priority;
      TimeUs started;
    };
    std::vector<Cand> cands;
    for (const CycleEdge& e : r.cycle) {
      auto [s, o] = SplitOwner(e.owner);
      auto it = sessions_.find(s);
      std::optional<TimeUs> started = coordinator_.OwnerStarted(s, o);
      if (it == sessions_.end() || !started) return;
      cands.push_back({e.owner, it->second.priority, *started});
    }
    std::int32_t min_priority = INT32_MAX;
    for (const Cand& c : cands) min_priority = std::min(min_priority, c.priority);
    int at_min = 0;
    TimeUs youngest = INT64_MIN;
    for (const Cand& c : cands)
      if (c.priority == min_priority) {
        ++at_min;
        youngest = std::max(youngest, c.started);
      }
    const Cand* v = nullptr;
    for (const Cand& c : cands)
      if (c.owner == r.victim) v = &c;
    if (!v) return;
    std::ostringstream o;
    for (const Cand& c : cands) o << " " << c.owner << "(prio " << c.priority << ", started " << c.started << ")";
    if (v->priority != min_priority)
      Problem(head + ": victim does not have the lowest priority:" + o.str());
    else if (v->started != youngest)
      Problem(head + ": victim is not the youngest of the lowest priority:" + o.str());
    if (at_min == 1 && r.step != VictimStep::kLowestPriority)
      Problem(head + ": priority alone decides but step is " +
              std::string(VictimStepName(r.step)));
  }

  // ------------------------------------------------------------ state

  void CheckState(const Snapshot& s, TimeUs t) {
    std::string inv = coordinator_.CheckInvariants();
    if (!inv.empty()) Problem("CheckInvariants(): " + inv);

    const Stats& st = coordinator_.stats();
    if (st.live_sessions != s.sessions.size() || st.live_leases != s.leases.size() ||
        st.live_waits != s.waits.size() || st.wait_edges != s.edges.size())
      Problem("stats disagree with the queries: sessions " + std::to_string(st.live_sessions) +
              "/" + std::to_string(s.sessions.size()) + " leases " +
              std::to_string(st.live_leases) + "/" + std::to_string(s.leases.size()) +
              " waits " + std::to_string(st.live_waits) + "/" + std::to_string(s.waits.size()) +
              " edges " + std::to_string(st.wait_edges) + "/" + std::to_string(s.edges.size()));

    // Sessions: open exactly while renewed within their TTL.
    std::set<std::string> live(s.sessions.begin(), s.sessions.end());
    for (const std::string& id : s.sessions) {
      auto it = sessions_.find(id);
      if (it == sessions_.end()) {
        Problem("session " + id + " is open but was never opened (or was closed)");
      } else if (t > it->second.last_ok + it->second.ttl_us) {
        Problem("session " + id + " should have expired at " +
                std::to_string(it->second.last_ok + it->second.ttl_us));
      }
    }
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (!live.count(it->first)) {
        Problem("session " + it->first + " vanished without SessionClosedEvent or Bye");
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }

    // Leases.
    std::set<LeaseId> ids;
    std::set<Token> tokens;
    for (const LeaseInfo& l : s.leases) {
      if (!live.count(l.session)) Problem("lease of a closed session: " + Describe(l));
      if (!ids.insert(l.lease).second) Problem("lease id twice: " + Describe(l));
      if (!tokens.insert(l.token).second) Problem("token twice: " + Describe(l));
      if (l.token > coordinator_.last_token()) Problem("token above last_token(): " + Describe(l));
      if (l.lease > l.token) Problem("lease id above its token: " + Describe(l));
      if (!l.revoked && l.expires_at_us < t) Problem("lease past its TTL: " + Describe(l));
      if (l.mode != Mode::kShared && l.mode != Mode::kExclusive)
        Problem("lease with a bad mode: " + Describe(l));
    }
    // One lease per (owner, resource).
    std::set<Key> held;
    for (const LeaseInfo& l : s.leases)
      if (!held.insert({OwnerKey(l.session, l.owner), l.resource}).second)
        Problem("two leases of one owner on one resource: " + Describe(l));

    // Waits: queued acquires are exactly the unanswered ones.
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (!live.count(it->first.first)) {
        it = pending_.erase(it);  // its session ended; nobody to answer
        continue;
      }
      ++it;
    }
    std::set<std::pair<std::string, std::uint64_t>> seen;
    std::set<Key> waiting;
    for (const WaitInfo& w : s.waits) {
      if (!live.count(w.session)) Problem("wait of a closed session: " + Describe(w));
      if (!waiting.insert({OwnerKey(w.session, w.owner), w.resource}).second)
        Problem("two waits of one owner on one resource: " + Describe(w));
      if (w.upgrade) {
        bool holds_s = false;
        for (const LeaseInfo& l : s.leases)
          holds_s |= l.session == w.session && l.owner == w.owner && l.resource == w.resource &&
                     l.mode == Mode::kShared;
        if (!holds_s) Problem("upgrade wait without an S lease: " + Describe(w));
      }
      if (w.reported) continue;
      auto it = pending_.find({w.session, w.request_id});
      if (it == pending_.end()) {
        Problem("queued wait that no Acquire reply queued (or already answered): " +
                Describe(w));
        continue;
      }
      seen.insert(it->first);
      if (it->second.owner != w.owner || it->second.resource != w.resource ||
          it->second.mode != w.mode)
        Problem("queued wait does not match its acquire: " + Describe(w));
      if (w.deadline_us != it->second.deadline)
        Problem("queued wait deadline " + TimeText(w.deadline_us) + ", expected " +
                TimeText(it->second.deadline) + ": " + Describe(w));
      if (t > it->second.deadline) Problem("queued wait past its deadline: " + Describe(w));
    }
    for (const auto& [k, p] : pending_)
      if (!seen.count(k))
        Problem("queued acquire " + k.first + " req " + std::to_string(k.second) + " (" +
                p.owner + " " + p.resource + ") vanished without a grant or a denial");

    for (auto& p : ExclusionProblems(s, config_)) Problem(p);
    for (auto& p : EdgeProblems(s, config_)) Problem(p);
    // Without fencing tokens left in the epoch, a grantable head waits for SetEpoch.
    if (!TokensExhausted())
      for (auto& p : QueueHeadProblems(s, config_)) Problem(p);

    if (options_.arbitrate_only) {
      auto cycles = coordinator_.AuditCycles();
      if (!cycles.empty()) {
        std::string text;
        for (const auto& c : cycles) {
          text += " {";
          for (const auto& o : c) text += " " + o;
          text += " }";
        }
        Problem("AuditCycles() not empty in arbitrate mode:" + text);
      }
    }

    // Cycles already acted on: note whether they have been broken since.
    for (auto& [key, rec] : cycles_) {
      if (rec.broken) continue;
      if (!CycleStands(rec.cycle, s)) rec.broken = true;
    }
  }

  static bool CycleStands(const std::vector<CycleEdge>& cycle, const Snapshot& s) {
    for (const CycleEdge& e : cycle) {
      bool wait = false, to = false;
      for (const WaitInfo& w : s.waits)
        if (w.resource == e.waits_for && OwnerKey(w.session, w.owner) == e.owner) wait = true;
      if (!wait) return false;
      if (e.soft) {
        for (const WaitInfo& w : s.waits)
          if (w.resource == e.waits_for && OwnerKey(w.session, w.owner) == e.held_by) to = true;
      } else {
        for (const LeaseInfo& l : s.leases)
          if (l.resource == e.waits_for && OwnerKey(l.session, l.owner) == e.held_by) to = true;
      }
      if (!to) return false;
    }
    return true;
  }

  Config config_;
  HarnessOptions options_;
  Coordinator coordinator_;
  Snapshot last_;
  TimeUs last_now_ = 0;
  TimeUs next_deadline_ = kNever;
  std::uint64_t steps_ = 0;
  std::deque<std::pair<TimeUs, Command>> trace_;
  std::vector<std::string> problems_;
  std::string failure_;
  const Command* cur_command_ = nullptr;
  const Effects* cur_fx_ = nullptr;
  const Snapshot* cur_before_ = nullptr;

  std::map<std::string, SessionModel> sessions_;
  std::map<std::pair<std::string, std::uint64_t>, Pending> pending_;
  Token max_token_ = 0;
  std::uint64_t last_report_id_ = 0;
  std::map<std::uint64_t, TimeUs> report_acted_;
  std::map<std::vector<std::string>, CycleRecord> cycles_;
  std::uint64_t deadlocks_seen_ = 0;
  std::uint64_t grants_seen_ = 0;
};

}  // namespace lockgraph::graph::testing

#endif  // LOCKGRAPH_TESTS_GRAPH_INVARIANTS_H_
