// Scenario tests of Coordinator, the core's deterministic state machine.
//
// Time is the `now` argument: the fixture keeps a fake clock in microseconds and
// advances it; nothing sleeps. Effects are rendered as short strings ("granted
// a/o1 r1", "denied b/o2 A DEADLOCK", "revoked b/o2 r2 deadlock") and the events of
// one Apply are compared as a sorted list, so a scenario reads the way it would be
// told. Every Apply is followed by consistency checks (CheckInvariants, stats that
// must agree with the listings and, in arbitrate-only scenarios, an empty
// AuditCycles); the first problem is reported when the test ends.
//
// The contract is docs/core.md and the headers in graph/include/lockgraph/graph/.

#include "lockgraph/graph/coordinator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "lockgraph/graph/report.h"
#include "lockgraph/graph/types.h"

namespace lockgraph::graph {
namespace {

namespace lg = ::lockgraph::graph;

constexpr TimeUs kMs = 1000;
constexpr TimeUs kSec = 1'000'000;
constexpr std::int64_t kLongTtlMs = 3'600'000;  // outlives every scenario

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

struct Session {
  std::string id;
  std::string secret;
  Auth auth() const { return Auth{id, secret}; }
};

std::string Who(std::string_view session, std::string_view owner) {
  return std::string(session) + "/" + std::string(owner);
}

std::string Str(Mode m) { return std::string(ModeName(m)); }
std::string Str(Code c) { return std::string(CodeName(c)); }

std::string Render(const Event& event) {
  return std::visit(
      Overloaded{
          [](const GrantedEvent& e) {
            return "granted " + Who(e.session, e.owner) + " " + e.resource;
          },
          [](const DeniedEvent& e) {
            return "denied " + Who(e.session, e.owner) + " " + e.resource + " " +
                   Str(e.code);
          },
          [](const RevokedEvent& e) {
            return "revoked " + Who(e.session, e.owner) + " " + e.resource + " " +
                   std::string(RevokeReasonName(e.reason));
          },
          [](const DeadlockEvent& e) {
            return "deadlock victim " + (e.report ? e.report->victim : std::string("?"));
          },
          [](const VictimUnresponsiveEvent& e) {
            return "unresponsive " + (e.report ? e.report->victim : std::string("?"));
          },
          [](const ConflictingHoldEvent& e) {
            return "conflict " + Who(e.session, e.owner) + " " + e.resource +
                   " held_by " + e.held_by;
          },
          [](const SessionClosedEvent& e) {
            return "closed " + e.session + (e.expired ? " expired" : " bye");
          },
          [](const NeedEpochEvent& e) {
            return "need_epoch " + std::to_string(e.next_epoch);
          },
          [](const OrderReportEvent& e) {
            return "order " + e.session + " " + std::string(OrderKindName(e.report->kind)) + " " +
                   e.report->from + "->" + e.report->to + (e.report->denied ? " denied" : "");
          },
      },
      event);
}

// The events of one Apply, rendered and sorted (their order is not part of the
// contract), joined by "; ". "" when there are none.
std::string Events(const Effects& fx) {
  std::vector<std::string> v;
  for (const Event& e : fx.events) v.push_back(Render(e));
  std::sort(v.begin(), v.end());
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += "; ";
    out += s;
  }
  return out;
}

bool HasEvent(const Effects& fx, const std::string& rendered) {
  for (const Event& e : fx.events) {
    if (Render(e) == rendered) return true;
  }
  return false;
}

template <class T>
std::vector<T> EventsOf(const Effects& fx) {
  std::vector<T> out;
  for (const Event& e : fx.events) {
    if (const T* t = std::get_if<T>(&e)) out.push_back(*t);
  }
  return out;
}

// "granted", "queued", "cancelled", "ok" or the error code.
std::string ReplyStr(const Reply& r) {
  if (!r.ok()) return Str(r.code);
  if (r.granted) return "granted";
  if (r.queued) return "queued";
  if (r.cancelled) return "cancelled";
  return "ok";
}

// "a/o1 -[r2 X]-> b/o2 | b/o2 -[r1 X]-> a/o1"; soft edges are drawn "~[r X]~>".
std::string CycleStr(const DeadlockReport& r) {
  std::string out;
  for (std::size_t i = 0; i < r.cycle.size(); ++i) {
    const CycleEdge& e = r.cycle[i];
    if (i) out += " | ";
    out += e.owner + (e.soft ? " ~[" : " -[") + e.waits_for + " " + Str(e.mode) +
           (e.soft ? "]~> " : "]-> ") + e.held_by;
  }
  return out;
}

// The report of the only DeadlockEvent in `fx` (nullptr, with a failure, otherwise).
std::shared_ptr<const DeadlockReport> OnlyReport(const Effects& fx) {
  auto v = EventsOf<DeadlockEvent>(fx);
  if (v.size() != 1) {
    ADD_FAILURE() << "expected one DeadlockEvent, got " << v.size() << ": " << Events(fx);
    return nullptr;
  }
  EXPECT_NE(v[0].report, nullptr);
  return v[0].report;
}

std::string AuditStr(const std::vector<std::vector<std::string>>& sccs) {
  std::string out;
  for (const auto& scc : sccs) {
    out += "[";
    for (std::size_t i = 0; i < scc.size(); ++i) out += (i ? " " : "") + scc[i];
    out += "]";
  }
  return out;
}

struct AcquireArgs {
  std::int64_t ttl_ms = kLongTtlMs;
  std::string site;
  std::optional<TimeUs> started;
};
AcquireArgs Ttl(std::int64_t ms) {
  AcquireArgs a;
  a.ttl_ms = ms;
  return a;
}
AcquireArgs Site(std::string site) {
  AcquireArgs a;
  a.site = std::move(site);
  return a;
}
AcquireArgs Started(TimeUs started) {
  AcquireArgs a;
  a.started = started;
  return a;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { Reset(Config{}); }
  void TearDown() override {
    EXPECT_EQ(first_problem_, "") << "a consistency check failed during the scenario";
  }

  void Reset(Config config, std::uint32_t epoch = 1, std::uint64_t first_seq = 1) {
    // These scenarios are about locking and deadlocks; lock ordering, on by default,
    // has its own tests (order_test.cc) and would add its reports to every cycle here.
    config.order.mode = OrderMode::kOff;
    coord_ = std::make_unique<Coordinator>(std::move(config), epoch, first_seq);
  }

  // ------------------------------------------------------------ applying commands

  Effects Apply(const Command& command) {
    ++applied_;
    Effects fx = coord_->Apply(command, now_);
    Check();
    return fx;
  }

  Session Hello(const std::string& name, std::int32_t priority = 0,
                std::int64_t ttl_ms = kLongTtlMs) {
    lg::Hello h;
    h.session = name;
    h.secret = name + "-secret";
    h.client = "coordinator_test";
    h.ttl_ms = ttl_ms;
    h.priority = priority;
    Effects fx = Apply(h);
    EXPECT_TRUE(fx.reply.ok()) << "hello " << name << ": " << fx.reply.message;
    return Session{name, h.secret};
  }

  Effects Acquire(const Session& s, const std::string& owner, const std::string& resource,
                  Mode mode = Mode::kExclusive, std::int64_t wait_ms = -1,
                  AcquireArgs args = {}) {
    lg::Acquire a;
    a.auth = s.auth();
    a.request_id = ++last_request_id_;
    a.owner = owner;
    a.resource = resource;
    a.mode = mode;
    a.ttl_ms = args.ttl_ms;
    a.wait_ms = wait_ms;
    a.site = args.site;
    a.started = args.started;
    return Apply(a);
  }

  Effects Hold(const Session& s, const std::string& owner, const std::string& resource,
               Mode mode = Mode::kExclusive, const std::string& site = "",
               std::int64_t ttl_ms = kLongTtlMs) {
    lg::Hold h;
    h.auth = s.auth();
    h.owner = owner;
    h.resource = resource;
    h.mode = mode;
    h.ttl_ms = ttl_ms;
    h.site = site;
    return Apply(h);
  }

  Effects Wait(const Session& s, const std::string& owner, const std::string& resource,
               Mode mode = Mode::kExclusive, const std::string& site = "") {
    lg::Wait w;
    w.auth = s.auth();
    w.owner = owner;
    w.resource = resource;
    w.mode = mode;
    w.site = site;
    return Apply(w);
  }

  Effects Unwait(const Session& s, const std::string& owner, const std::string& resource) {
    lg::Unwait u;
    u.auth = s.auth();
    u.owner = owner;
    u.resource = resource;
    return Apply(u);
  }

  Effects Release(const Session& s, LeaseId lease) {
    lg::Release r;
    r.auth = s.auth();
    r.lease = lease;
    return Apply(r);
  }

  // Report mode: release by owner + resource.
  Effects ReleaseHold(const Session& s, const std::string& owner,
                      const std::string& resource) {
    lg::Release r;
    r.auth = s.auth();
    r.owner = owner;
    r.resource = resource;
    return Apply(r);
  }

  Effects Renew(const Session& s, LeaseId lease,
                std::optional<std::int64_t> ttl_ms = std::nullopt) {
    lg::Renew r;
    r.auth = s.auth();
    r.lease = lease;
    r.ttl_ms = ttl_ms;
    return Apply(r);
  }

  Effects Bye(const Session& s) { return Apply(lg::Bye{s.auth()}); }
  Effects Heartbeat(const Session& s) { return Apply(lg::Heartbeat{s.auth()}); }

  // ------------------------------------------------------------ the fake clock

  Effects AdvanceUs(TimeUs us) {
    now_ += us;
    return Apply(Tick{});
  }
  Effects Advance(std::int64_t ms) { return AdvanceUs(ms * kMs); }
  Effects TickAt(TimeUs t) {
    now_ = t;
    return Apply(Tick{});
  }

  // ------------------------------------------------------------ reading state

  std::optional<LeaseInfo> FindLease(const std::string& session, const std::string& owner,
                                     const std::string& resource) const {
    std::optional<LeaseInfo> found;
    for (const LeaseInfo& l : coord_->Leases()) {
      if (l.session == session && l.owner == owner && l.resource == resource) {
        if (!found || (found->revoked && !l.revoked)) found = l;
      }
    }
    return found;
  }

  LeaseId LeaseOf(const Session& s, const std::string& owner, const std::string& resource) {
    auto l = FindLease(s.id, owner, resource);
    if (!l) {
      ADD_FAILURE() << "no lease of " << Who(s.id, owner) << " on " << resource;
      return 0;
    }
    return l->lease;
  }

  // "a/o1 r1 X, b/o2 r2 X revoked" in lease id order.
  std::string LeasesStr() const {
    std::string out;
    for (const LeaseInfo& l : coord_->Leases()) {
      if (!out.empty()) out += ", ";
      out += Who(l.session, l.owner) + " " + l.resource + " " + Str(l.mode);
      if (l.revoked) out += " revoked";
    }
    return out;
  }

  // "r1 b/o2 X, r1 c/o3 S up" by resource, then queue position.
  std::string WaitsStr() const {
    std::string out;
    for (const WaitInfo& w : coord_->Waits()) {
      if (!out.empty()) out += ", ";
      out += w.resource + " " + Who(w.session, w.owner) + " " + Str(w.mode);
      if (w.upgrade) out += " up";
    }
    return out;
  }

  // "a/o1->b/o2 hard, c/o3->b/o2 soft", sorted by (from, to).
  std::string EdgesStr() const {
    std::string out;
    for (const OwnerEdge& e : coord_->WaitForEdges()) {
      if (!out.empty()) out += ", ";
      out += e.from + "->" + e.to + " " +
             (e.hard && e.soft ? "hard+soft" : e.hard ? "hard" : e.soft ? "soft" : "none");
    }
    return out;
  }

  std::string Audit() const { return AuditStr(coord_->AuditCycles()); }

  // The owners queued on `resource`, in queue order.
  std::vector<std::string> QueueOf(const std::string& resource) const {
    std::vector<std::string> out;
    for (const WaitInfo& w : coord_->Waits()) {
      if (w.resource == resource) out.push_back(Who(w.session, w.owner));
    }
    return out;
  }

  // Everything observable about the state, except the `commands` and `errors`
  // counters: errors must leave this exactly as it was.
  // `with_timeouts`: a TIMEOUT reply to a try (wait_ms 0) may count in stats.timeouts.
  std::string Snapshot(bool with_stats = true, bool with_timeouts = true) const {
    std::ostringstream out;
    for (const LeaseInfo& l : coord_->Leases()) {
      out << "lease " << l.lease << " " << l.token << " " << l.session << "/" << l.owner
          << " " << l.resource << " " << Str(l.mode) << " exp=" << l.expires_at_us
          << " rep=" << l.reported << " rev=" << l.revoked << " ho=" << l.handover_at_us
          << " site=" << l.site << "\n";
      if (auto st = coord_->OwnerStarted(l.session, l.owner)) {
        out << "  started " << *st << "\n";
      }
    }
    for (const WaitInfo& w : coord_->Waits()) {
      out << "wait " << w.session << "/" << w.owner << " " << w.resource << " "
          << Str(w.mode) << " rep=" << w.reported << " up=" << w.upgrade
          << " req=" << w.request_id << " since=" << w.since_us
          << " deadline=" << w.deadline_us << " site=" << w.site << "\n";
      if (auto st = coord_->OwnerStarted(w.session, w.owner)) {
        out << "  started " << *st << "\n";
      }
    }
    for (const OwnerEdge& e : coord_->WaitForEdges()) {
      out << "edge " << e.from << "->" << e.to << " hard=" << e.hard << " soft=" << e.soft
          << "\n";
    }
    for (const std::string& s : coord_->Sessions()) out << "session " << s << "\n";
    out << "audit " << Audit() << "\n";
    out << "next " << coord_->NextDeadline() << " last_token " << coord_->last_token()
        << " epoch " << coord_->epoch() << "\n";
    if (with_stats) {
      const Stats& s = coord_->stats();
      out << "stats opened=" << s.sessions_opened << " expired=" << s.sessions_expired
          << " grants=" << s.grants << " queued=" << s.queued
          << " timeouts=" << (with_timeouts ? s.timeouts : 0)
          << " cancelled=" << s.cancelled << " releases=" << s.releases
          << " lease_expiries=" << s.lease_expiries << " revocations=" << s.revocations
          << " deadlocks=" << s.deadlocks << " reordered=" << s.cycles_reordered
          << " vanished=" << s.cycles_vanished
          << " unresponsive=" << s.victims_unresponsive
          << " conflicting=" << s.conflicting_holds << " by_step=" << s.victims_by_step[0]
          << "," << s.victims_by_step[1] << "," << s.victims_by_step[2] << ","
          << s.victims_by_step[3] << " live=" << s.live_sessions << "," << s.live_owners
          << "," << s.live_resources << "," << s.live_leases << "," << s.live_waits
          << " edges=" << s.wait_edges << "\n";
    }
    return out.str();
  }

  // Applies a command that must fail with `code` and change nothing.
  void ExpectRejected(const Command& command, Code code, const std::string& what) {
    SCOPED_TRACE(what);
    const bool timeouts = code != Code::kTimeout;
    std::string before = Snapshot(true, timeouts);
    Effects fx = Apply(command);
    EXPECT_EQ(Str(fx.reply.code), Str(code));
    EXPECT_FALSE(fx.reply.message.empty()) << "an error reply must name the problem";
    EXPECT_EQ(Events(fx), "");
    EXPECT_EQ(Snapshot(true, timeouts), before);
  }

  // As ExpectRejected, for the cases where the docs allow either of two codes.
  void ExpectRejectedEither(const Command& command, Code a, Code b, const std::string& what) {
    SCOPED_TRACE(what);
    std::string before = Snapshot();
    Effects fx = Apply(command);
    EXPECT_TRUE(fx.reply.code == a || fx.reply.code == b)
        << "got " << Str(fx.reply.code) << ", want " << Str(a) << " or " << Str(b);
    EXPECT_FALSE(fx.reply.message.empty());
    EXPECT_EQ(Events(fx), "");
    EXPECT_EQ(Snapshot(), before);
  }

  // a/o1 takes r1, b/o2 takes r2, a/o1 queues for r2, b/o2 asks for r1 (closing
  // the cycle); a millisecond between steps, so a/o1 is the older owner. Returns
  // the effects of the closing acquire; `*a_wait_id` gets a/o1's queued request.
  Effects AbBa(const Session& a, const Session& b, std::uint64_t* a_wait_id = nullptr,
               const std::string& r1 = "r1", const std::string& r2 = "r2") {
    EXPECT_EQ(ReplyStr(Acquire(a, "o1", r1).reply), "granted");
    Advance(1);
    EXPECT_EQ(ReplyStr(Acquire(b, "o2", r2).reply), "granted");
    Advance(1);
    EXPECT_EQ(ReplyStr(Acquire(a, "o1", r2).reply), "queued");
    if (a_wait_id) *a_wait_id = last_request_id_;
    Advance(1);
    return Acquire(b, "o2", r1);
  }

  void Problem(const std::string& what) {
    if (first_problem_.empty()) {
      first_problem_ = "after command #" + std::to_string(applied_) + " at " +
                       std::to_string(now_) + "us: " + what;
    }
  }

  // Run after every Apply.
  void Check() {
    std::string inv = coord_->CheckInvariants();
    if (!inv.empty()) Problem("CheckInvariants: " + inv);
    if (audit_each_apply_) {
      auto audit = coord_->AuditCycles();
      if (!audit.empty()) Problem("AuditCycles in arbitrate mode: " + AuditStr(audit));
    }
    const Stats& s = coord_->stats();
    if (s.live_leases != coord_->Leases().size()) {
      Problem("stats.live_leases " + std::to_string(s.live_leases) + " != Leases() " +
              std::to_string(coord_->Leases().size()));
    }
    if (s.live_waits != coord_->Waits().size()) {
      Problem("stats.live_waits " + std::to_string(s.live_waits) + " != Waits() " +
              std::to_string(coord_->Waits().size()));
    }
    if (s.live_sessions != coord_->Sessions().size()) {
      Problem("stats.live_sessions " + std::to_string(s.live_sessions) + " != Sessions() " +
              std::to_string(coord_->Sessions().size()));
    }
    if (s.wait_edges != coord_->WaitForEdges().size()) {
      Problem("stats.wait_edges " + std::to_string(s.wait_edges) + " != WaitForEdges() " +
              std::to_string(coord_->WaitForEdges().size()));
    }
  }

  std::unique_ptr<Coordinator> coord_;
  TimeUs now_ = 1 * kSec;
  std::uint64_t last_request_id_ = 100;
  bool audit_each_apply_ = true;  // arbitrate-only scenarios: no cycle ever survives
  std::uint64_t applied_ = 0;
  std::string first_problem_;
};

// ======================================================================= AB-BA

TEST_F(CoordinatorTest, ArbitrateAbBaYoungestRequesterIsVictimAndLeasePassesAfterGrace) {
  Session a = Hello("a");
  Session b = Hello("b");
  std::uint64_t a_wait = 0;
  Effects fx = AbBa(a, b, &a_wait);
  const TimeUs closed_at = now_;

  EXPECT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  EXPECT_FALSE(fx.reply.message.empty());
  ASSERT_NE(fx.reply.deadlock, nullptr);
  EXPECT_EQ(fx.reply.deadlock->victim, "b/o2");
  EXPECT_EQ(fx.reply.deadlock->step, VictimStep::kYoungest);
  EXPECT_FALSE(fx.reply.deadlock->why.empty());
  EXPECT_EQ(CycleStr(*fx.reply.deadlock), "a/o1 -[r2 X]-> b/o2 | b/o2 -[r1 X]-> a/o1");
  EXPECT_EQ(fx.reply.deadlock->detected_at_us, closed_at);
  EXPECT_FALSE(fx.reply.deadlock->report_mode);
  EXPECT_EQ(fx.reply.deadlock->attempt, 1);
  // The requester is the victim: the reply says so, no DeniedEvent.
  EXPECT_EQ(Events(fx), "deadlock victim b/o2; revoked b/o2 r2 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->victim, "b/o2");
  auto revoked = EventsOf<RevokedEvent>(fx);
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0].handover_in_ms, 1000);
  EXPECT_NE(revoked[0].deadlock, nullptr);
  const Token victim_token = revoked[0].token;

  EXPECT_EQ(LeasesStr(), "a/o1 r1 X, b/o2 r2 X revoked");
  EXPECT_EQ(WaitsStr(), "r2 a/o1 X");
  EXPECT_EQ(coord_->stats().deadlocks, 1u);
  EXPECT_EQ(coord_->stats().victims_by_step[static_cast<int>(VictimStep::kYoungest)], 1u);
  EXPECT_EQ(Audit(), "");

  // The survivor gets r2 when revoke_grace (1 s) is over, not before.
  EXPECT_EQ(coord_->NextDeadline(), closed_at + kSec);
  EXPECT_EQ(Events(TickAt(closed_at + kSec - 1)), "");
  fx = TickAt(closed_at + kSec);
  EXPECT_EQ(Events(fx), "granted a/o1 r2");
  auto granted = EventsOf<GrantedEvent>(fx);
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].request_id, a_wait);
  EXPECT_GT(granted[0].token, victim_token);
  EXPECT_EQ(LeasesStr(), "a/o1 r1 X, a/o1 r2 X");
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, ArbitrateAbBaVictimReleaseHandsOverAtOnce) {
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fx = AbBa(a, b);
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  LeaseId victim_lease = LeaseOf(b, "o2", "r2");

  Advance(10);
  fx = Release(b, victim_lease);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(Events(fx), "granted a/o1 r2");
  EXPECT_EQ(LeasesStr(), "a/o1 r1 X, a/o1 r2 X");
  // The victim's lease is gone: releasing it again is NOT_OWNER.
  EXPECT_EQ(ReplyStr(Release(b, victim_lease).reply), "NOT_OWNER");
  // Nothing is left to hand over when the grace would have ended.
  EXPECT_EQ(Events(Advance(2000)), "");
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, ArbitrateAbBaOlderRequesterSurvivesAndVictimGetsDeniedEvent) {
  Session a = Hello("a");
  Session b = Hello("b");
  // b/o2 is seen first, so a/o1 is the youngest.
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "z:9").reply), "granted");  // not on the cycle
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  const std::uint64_t a_wait = last_request_id_;
  Advance(1);
  Effects fx = Acquire(b, "o2", "r1");
  const std::uint64_t b_wait = last_request_id_;
  const TimeUs closed_at = now_;

  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx),
            "deadlock victim a/o1; denied a/o1 r2 DEADLOCK; revoked a/o1 r1 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->victim, "a/o1");
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  // The closing edge (b/o2's request) comes last, as RenderText expects.
  EXPECT_EQ(CycleStr(*report), "a/o1 -[r2 X]-> b/o2 | b/o2 -[r1 X]-> a/o1");
  EXPECT_NE(RenderText(*report).find("b/o2 is trying to acquire:\n  r1 (X)"), std::string::npos)
      << RenderText(*report);
  auto denied = EventsOf<DeniedEvent>(fx);
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(denied[0].request_id, a_wait);
  EXPECT_EQ(denied[0].session, "a");
  ASSERT_NE(denied[0].deadlock, nullptr);
  EXPECT_EQ(denied[0].deadlock->victim, "a/o1");
  EXPECT_EQ(LeasesStr(), "b/o2 r2 X, a/o1 r1 X revoked, a/o1 z:9 X");
  EXPECT_EQ(WaitsStr(), "r1 b/o2 X");
  EXPECT_EQ(Audit(), "");

  EXPECT_EQ(Events(TickAt(closed_at + kSec - 1)), "");
  fx = TickAt(closed_at + kSec);
  EXPECT_EQ(Events(fx), "granted b/o2 r1");
  auto granted = EventsOf<GrantedEvent>(fx);
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].request_id, b_wait);
  EXPECT_EQ(LeasesStr(), "b/o2 r2 X, a/o1 z:9 X, b/o2 r1 X");
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, ArbitrateAbBaRevokeImmediateClassHandsOverInTheSameApply) {
  Config config;
  config.classes["acct"].revoke_immediate = true;
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "acct:2").reply), "granted");
  Advance(1);
  Effects first = Acquire(a, "o1", "acct:1");
  ASSERT_EQ(ReplyStr(first.reply), "granted");
  const Token victim_token = first.reply.token;
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "acct:2").reply), "queued");
  Advance(1);
  Effects fx = Acquire(b, "o2", "acct:1");

  // The hand-over happens within this Apply, so the reply is the grant.
  EXPECT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_GT(fx.reply.token, victim_token);
  EXPECT_EQ(Events(fx),
            "deadlock victim a/o1; denied a/o1 acct:2 DEADLOCK; revoked a/o1 acct:1 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  EXPECT_EQ(CycleStr(*report), "a/o1 -[acct:2 X]-> b/o2 | b/o2 -[acct:1 X]-> a/o1");
  auto revoked = EventsOf<RevokedEvent>(fx);
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0].handover_in_ms, 0);
  auto b_lease = FindLease("b", "o2", "acct:1");
  ASSERT_TRUE(b_lease.has_value());
  EXPECT_FALSE(b_lease->revoked);
  auto a_lease = FindLease("a", "o1", "acct:1");
  EXPECT_TRUE(!a_lease || a_lease->revoked) << "two live X leases on acct:1";
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, ArbitrateRevokeImmediateVictimRequesterSurvivorGrantedAtOnce) {
  Config config;
  config.classes["acct"].revoke_immediate = true;
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  std::uint64_t a_wait = 0;
  Effects fx = AbBa(a, b, &a_wait, "acct:1", "acct:2");
  EXPECT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  EXPECT_EQ(Events(fx),
            "deadlock victim b/o2; granted a/o1 acct:2; revoked b/o2 acct:2 deadlock");
  auto granted = EventsOf<GrantedEvent>(fx);
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].request_id, a_wait);
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, ArbitrateAbBaClassRevokeGraceOverridesDefault) {
  Config config;
  config.classes["fast"].revoke_grace_us = 50 * kMs;
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fx = AbBa(a, b, nullptr, "fast:1", "fast:2");
  const TimeUs closed_at = now_;
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  auto revoked = EventsOf<RevokedEvent>(fx);
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0].resource, "fast:2");
  EXPECT_EQ(revoked[0].handover_in_ms, 50);
  EXPECT_EQ(coord_->NextDeadline(), closed_at + 50 * kMs);
  EXPECT_EQ(Events(TickAt(closed_at + 50 * kMs - 1)), "");
  EXPECT_EQ(Events(TickAt(closed_at + 50 * kMs)), "granted a/o1 fast:2");
  EXPECT_EQ(Audit(), "");
}

// ======================================================================= report mode

// Report-mode scenarios: cycles may stand while they are being confirmed, so the
// per-Apply AuditCycles check is off (each test asserts it where it matters).
class ReportModeTest : public CoordinatorTest {
 protected:
  void SetUp() override {
    CoordinatorTest::SetUp();
    audit_each_apply_ = false;
  }
  // Each owner reports an X hold of its resource, 1 ms apart (so each is younger
  // than the one before), then 1 ms more passes.
  struct HoldSpec {
    const Session* session;
    const char* owner;
    const char* resource;
  };
  void HoldInTurn(std::initializer_list<HoldSpec> holds) {
    for (const HoldSpec& h : holds) {
      EXPECT_TRUE(Hold(*h.session, h.owner, h.resource).reply.ok()) << h.owner << " " << h.resource;
      Advance(1);
    }
  }
  // b/o2 is seen first (so a/o1 is the youngest); a/o1 holds A; b/o2 waits A; a/o1
  // waits B (free); then b/o2 reports its hold on B: the hold closes the cycle.
  // Returns the effects of that hold.
  Effects AbBaClosedByHold(const Session& a, const Session& b) {
    EXPECT_TRUE(Hold(b, "o2", "c:0").reply.ok());
    Advance(1);
    EXPECT_TRUE(Hold(a, "o1", "A", Mode::kExclusive, "a.cc:1").reply.ok());
    Advance(1);
    EXPECT_TRUE(Wait(b, "o2", "A", Mode::kExclusive, "b.cc:2").reply.ok());
    Advance(1);
    EXPECT_TRUE(Wait(a, "o1", "B", Mode::kExclusive, "a.cc:3").reply.ok());
    EXPECT_EQ(EdgesStr(), "b/o2->a/o1 hard");
    Advance(1);
    return Hold(b, "o2", "B", Mode::kExclusive, "b.cc:4");
  }
};

TEST_F(ReportModeTest, AbBaClosedByHoldIsActedOnAfterConfirm) {
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fx = AbBaClosedByHold(a, b);
  const TimeUs closed_at = now_;
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_NE(fx.reply.lease, 0u);
  EXPECT_NE(fx.reply.token, 0u);
  EXPECT_EQ(Events(fx), "");
  EXPECT_EQ(Audit(), "[a/o1 b/o2]");
  EXPECT_EQ(coord_->stats().deadlocks, 0u);

  // Nothing is acted on before confirm_us (10 ms).
  EXPECT_EQ(coord_->NextDeadline(), closed_at + 10 * kMs);
  EXPECT_EQ(Events(TickAt(closed_at + 10 * kMs - 1)), "");
  EXPECT_EQ(coord_->stats().deadlocks, 0u);

  fx = TickAt(closed_at + 10 * kMs);
  EXPECT_EQ(Events(fx),
            "deadlock victim a/o1; denied a/o1 B DEADLOCK; revoked a/o1 A deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->victim, "a/o1");
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  EXPECT_FALSE(report->why.empty());
  EXPECT_TRUE(report->report_mode);
  EXPECT_EQ(report->attempt, 1);
  EXPECT_GE(report->detected_at_us, closed_at);
  EXPECT_LE(report->detected_at_us, closed_at + 10 * kMs);
  // The hold made the closing edge a/o1 -> b/o2; the closing edge comes last.
  EXPECT_EQ(CycleStr(*report), "b/o2 -[A X]-> a/o1 | a/o1 -[B X]-> b/o2");
  auto denied = EventsOf<DeniedEvent>(fx);
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(denied[0].request_id, 0u);
  EXPECT_NE(denied[0].deadlock, nullptr);
  EXPECT_EQ(coord_->stats().deadlocks, 1u);

  // The victim's wait is dropped; its hold on A stays, doomed, until it releases.
  EXPECT_EQ(WaitsStr(), "A b/o2 X");
  auto doomed = FindLease("a", "o1", "A");
  ASSERT_TRUE(doomed.has_value());
  EXPECT_TRUE(doomed->revoked);
  EXPECT_EQ(EdgesStr(), "b/o2->a/o1 hard");
  EXPECT_EQ(Audit(), "");

  Advance(5);
  EXPECT_TRUE(ReleaseHold(a, "o1", "A").reply.ok());
  EXPECT_EQ(EdgesStr(), "");
  EXPECT_FALSE(FindLease("a", "o1", "A").has_value());
  // Released in time: no unresponsive report later.
  EXPECT_EQ(Events(Advance(3000)), "");
  EXPECT_EQ(coord_->stats().victims_unresponsive, 0u);
}

TEST_F(ReportModeTest, ConfirmZeroActsAtOnce) {
  Config config;
  config.confirm_us = 0;
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fx = AbBaClosedByHold(a, b);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;  // the victim is a/o1, not the holder
  EXPECT_NE(fx.reply.lease, 0u);
  EXPECT_EQ(Events(fx),
            "deadlock victim a/o1; denied a/o1 B DEADLOCK; revoked a/o1 A deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  EXPECT_EQ(report->detected_at_us, now_);
  EXPECT_EQ(CycleStr(*report), "b/o2 -[A X]-> a/o1 | a/o1 -[B X]-> b/o2");
  EXPECT_EQ(WaitsStr(), "A b/o2 X");
  EXPECT_EQ(Audit(), "");
  EXPECT_EQ(coord_->stats().deadlocks, 1u);
}

TEST_F(ReportModeTest, CycleBrokenWithinConfirmWindowIsNeverReported) {
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fx = AbBaClosedByHold(a, b);
  EXPECT_EQ(Events(fx), "");
  EXPECT_EQ(Audit(), "[a/o1 b/o2]");
  Advance(5);
  EXPECT_TRUE(Unwait(a, "o1", "B").reply.ok());
  EXPECT_EQ(Audit(), "");
  EXPECT_EQ(Events(Advance(5)), "");
  EXPECT_EQ(Events(Advance(100)), "");
  EXPECT_EQ(coord_->stats().deadlocks, 0u);
  EXPECT_EQ(coord_->stats().cycles_vanished, 1u);
  EXPECT_EQ(LeasesStr(), "b/o2 c:0 X, a/o1 A X, b/o2 B X");  // no revocation
}

TEST_F(ReportModeTest, SelfDeadlockRepliesDeadlockAndRecordsNothing) {
  Session a = Hello("a");
  EXPECT_TRUE(Hold(a, "o1", "r", Mode::kExclusive, "a.cc:1").reply.ok());
  const std::string before = Snapshot(/*with_stats=*/false);
  Effects fx = Wait(a, "o1", "r", Mode::kExclusive, "a.cc:2");
  EXPECT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  ASSERT_NE(fx.reply.deadlock, nullptr);
  EXPECT_EQ(CycleStr(*fx.reply.deadlock), "a/o1 -[r X]-> a/o1");
  EXPECT_EQ(fx.reply.deadlock->victim, "a/o1");
  EXPECT_EQ(Snapshot(false), before);

  // Any mode: X is held, so a wait for S cannot end either.
  fx = Wait(a, "o1", "r", Mode::kShared);
  EXPECT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  EXPECT_EQ(Snapshot(false), before);
  EXPECT_EQ(WaitsStr(), "");

  // Holding S and waiting for S records nothing and is no deadlock.
  EXPECT_TRUE(Hold(a, "o2", "s", Mode::kShared).reply.ok());
  const std::string before_s = Snapshot(false);
  fx = Wait(a, "o2", "s", Mode::kShared);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(Snapshot(false), before_s);
}

TEST_F(ReportModeTest, SharedHoldWaitingForExclusiveIsAnUpgrade) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_TRUE(Hold(a, "o1", "s", Mode::kShared).reply.ok());
  EXPECT_TRUE(Hold(b, "o2", "s", Mode::kShared).reply.ok());
  Effects fx = Wait(a, "o1", "s", Mode::kExclusive);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(EdgesStr(), "a/o1->b/o2 hard");
}

TEST_F(ReportModeTest, ConflictingHoldIsRecordedAndCounted) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_TRUE(Hold(a, "o1", "r").reply.ok());
  Effects fx = Hold(b, "o2", "r");
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(Events(fx), "conflict b/o2 r held_by a/o1");
  EXPECT_EQ(LeasesStr(), "a/o1 r X, b/o2 r X");
  EXPECT_EQ(coord_->stats().conflicting_holds, 1u);
}

TEST_F(ReportModeTest, HoldEndsTheOwnersWait) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_TRUE(Hold(b, "o2", "r").reply.ok());
  EXPECT_TRUE(Wait(a, "o1", "r").reply.ok());
  EXPECT_EQ(EdgesStr(), "a/o1->b/o2 hard");
  EXPECT_TRUE(ReleaseHold(b, "o2", "r").reply.ok());
  EXPECT_EQ(EdgesStr(), "");
  EXPECT_EQ(WaitsStr(), "r a/o1 X");
  EXPECT_TRUE(Hold(a, "o1", "r").reply.ok());
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(LeasesStr(), "a/o1 r X");
}

TEST_F(ReportModeTest, TwoDisjointCyclesConfirmedInOneTickGiveTwoVictims) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  Session d = Hello("d");
  HoldInTurn({{&a, "o1", "A"}, {&b, "o2", "B"}, {&c, "o3", "C"}, {&d, "o4", "D"}});
  EXPECT_TRUE(Wait(a, "o1", "B").reply.ok());
  EXPECT_TRUE(Wait(c, "o3", "D").reply.ok());
  Advance(1);
  // Both cycles close at the same instant.
  EXPECT_EQ(Events(Wait(b, "o2", "A")), "");
  EXPECT_EQ(Events(Wait(d, "o4", "C")), "");
  const TimeUs closed_at = now_;
  EXPECT_EQ(Audit(), "[a/o1 b/o2][c/o3 d/o4]");

  EXPECT_EQ(Events(TickAt(closed_at + 10 * kMs - 1)), "");
  Effects fx = TickAt(closed_at + 10 * kMs);
  EXPECT_EQ(Events(fx),
            "deadlock victim b/o2; deadlock victim d/o4; denied b/o2 A DEADLOCK; "
            "denied d/o4 C DEADLOCK; revoked b/o2 B deadlock; revoked d/o4 D deadlock");
  std::map<std::string, std::string> cycles;
  std::set<std::uint64_t> ids;
  for (const DeadlockEvent& e : EventsOf<DeadlockEvent>(fx)) {
    ASSERT_NE(e.report, nullptr);
    EXPECT_EQ(e.report->step, VictimStep::kYoungest);
    cycles[e.report->victim] = CycleStr(*e.report);
    ids.insert(e.report->id);
  }
  EXPECT_EQ(cycles["b/o2"], "a/o1 -[B X]-> b/o2 | b/o2 -[A X]-> a/o1");
  EXPECT_EQ(cycles["d/o4"], "c/o3 -[D X]-> d/o4 | d/o4 -[C X]-> c/o3");
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_EQ(coord_->stats().deadlocks, 2u);
  EXPECT_EQ(Audit(), "");
}

TEST_F(ReportModeTest, ResentWaitWhileConfirmingOrDoomedChoosesNoSecondVictim) {
  Session a = Hello("a");
  Session b = Hello("b");
  HoldInTurn({{&a, "o1", "A"}, {&b, "o2", "B"}});
  EXPECT_TRUE(Wait(a, "o1", "B").reply.ok());
  Advance(1);
  EXPECT_EQ(Events(Wait(b, "o2", "A")), "");
  const TimeUs closed_at = now_;

  // Re-sent while the cycle is being confirmed: nothing new.
  Advance(3);
  EXPECT_EQ(Events(Wait(b, "o2", "A")), "");
  EXPECT_EQ(Events(Wait(a, "o1", "B")), "");

  Effects fx = TickAt(closed_at + 10 * kMs);
  EXPECT_EQ(Events(fx),
            "deadlock victim b/o2; denied b/o2 A DEADLOCK; revoked b/o2 B deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kYoungest);

  // A late copy of the victim's wait finds the same cycle again (its doomed hold
  // on B still stands): one cycle, one victim.
  Advance(1);
  EXPECT_EQ(Events(Wait(b, "o2", "A")), "");
  EXPECT_EQ(Events(Advance(10)), "");
  EXPECT_EQ(Events(Advance(10)), "");
  EXPECT_EQ(Events(Advance(100)), "");
  EXPECT_EQ(coord_->stats().deadlocks, 1u);

  // The victim releases: the cycle is gone for good and nobody is unresponsive.
  EXPECT_TRUE(ReleaseHold(b, "o2", "B").reply.ok());
  EXPECT_EQ(Audit(), "");
  EXPECT_EQ(Events(Advance(3000)), "");
  EXPECT_EQ(coord_->stats().deadlocks, 1u);
  EXPECT_EQ(coord_->stats().victims_unresponsive, 0u);
}

TEST_F(ReportModeTest, UnresponsiveVictimIsReportedAndNextCandidateChosen) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  HoldInTurn({{&a, "o1", "A"}, {&b, "o2", "B"}, {&c, "o3", "C"}});
  EXPECT_TRUE(Wait(a, "o1", "B").reply.ok());
  EXPECT_TRUE(Wait(b, "o2", "C").reply.ok());
  EXPECT_TRUE(Wait(c, "o3", "A").reply.ok());
  const TimeUs closed_at = now_;

  Effects fx = TickAt(closed_at + 10 * kMs);
  const TimeUs chosen_at = now_;
  EXPECT_EQ(Events(fx),
            "deadlock victim c/o3; denied c/o3 A DEADLOCK; revoked c/o3 C deadlock");
  auto first = OnlyReport(fx);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->step, VictimStep::kYoungest);
  EXPECT_EQ(first->attempt, 1);
  EXPECT_EQ(CycleStr(*first), "a/o1 -[B X]-> b/o2 | b/o2 -[C X]-> c/o3 | c/o3 -[A X]-> a/o1");

  // c/o3 never releases C: a/o1 -> b/o2 -> c/o3 still stands.
  EXPECT_EQ(coord_->NextDeadline(), chosen_at + 2 * kSec);
  EXPECT_EQ(Events(TickAt(chosen_at + 2 * kSec - 1)), "");
  fx = TickAt(chosen_at + 2 * kSec);
  EXPECT_EQ(Events(fx),
            "deadlock victim b/o2; denied b/o2 C DEADLOCK; revoked b/o2 B deadlock; "
            "unresponsive c/o3");
  auto unresponsive = EventsOf<VictimUnresponsiveEvent>(fx);
  ASSERT_EQ(unresponsive.size(), 1u);
  ASSERT_NE(unresponsive[0].report, nullptr);
  EXPECT_EQ(unresponsive[0].report->victim, "c/o3");
  EXPECT_EQ(unresponsive[0].report->attempt, 1);
  auto second = OnlyReport(fx);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->victim, "b/o2");
  EXPECT_EQ(second->step, VictimStep::kYoungest);
  EXPECT_EQ(second->attempt, 2);
  EXPECT_EQ(second->unresponsive, std::vector<std::string>{"c/o3"});
  EXPECT_EQ(coord_->stats().victims_unresponsive, 1u);
  EXPECT_EQ(coord_->stats().deadlocks, 2u);
  EXPECT_EQ(Audit(), "");
}

// ======================================================================= bigger cycles

TEST_F(CoordinatorTest, ThreeCycleOneVictim) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r3").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2").reply), "granted");  // youngest
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  std::uint64_t a_wait = last_request_id_;
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r3").reply), "queued");
  std::uint64_t b_wait = last_request_id_;
  Advance(1);
  Effects fx = Acquire(c, "o3", "r1");
  std::uint64_t c_wait = last_request_id_;
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx),
            "deadlock victim b/o2; denied b/o2 r3 DEADLOCK; revoked b/o2 r2 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  EXPECT_EQ(CycleStr(*report),
            "a/o1 -[r2 X]-> b/o2 | b/o2 -[r3 X]-> c/o3 | c/o3 -[r1 X]-> a/o1");
  auto denied = EventsOf<DeniedEvent>(fx);
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(denied[0].request_id, b_wait);
  EXPECT_EQ(Audit(), "");

  fx = Release(b, LeaseOf(b, "o2", "r2"));
  EXPECT_EQ(Events(fx), "granted a/o1 r2");
  EXPECT_EQ(EventsOf<GrantedEvent>(fx).at(0).request_id, a_wait);
  fx = Release(a, LeaseOf(a, "o1", "r1"));
  EXPECT_EQ(Events(fx), "granted c/o3 r1");
  EXPECT_EQ(EventsOf<GrantedEvent>(fx).at(0).request_id, c_wait);
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(coord_->stats().deadlocks, 1u);
}

TEST_F(CoordinatorTest, FiftyOwnerCycleOneVictim) {
  constexpr int kN = 50;
  constexpr int kYoungest = 17;
  Session s = Hello("s");
  auto o = [](int i) { return "o" + std::to_string(i); };
  auto r = [](int i) { return "r" + std::to_string(i); };
  for (int i = 0; i < kN; ++i) {
    if (i == kYoungest) continue;
    EXPECT_EQ(ReplyStr(Acquire(s, o(i), r(i)).reply), "granted");
    Advance(1);
  }
  EXPECT_EQ(ReplyStr(Acquire(s, o(kYoungest), r(kYoungest)).reply), "granted");
  Advance(1);
  for (int i = 0; i + 1 < kN; ++i) {
    EXPECT_EQ(ReplyStr(Acquire(s, o(i), r(i + 1)).reply), "queued");
  }
  EXPECT_EQ(coord_->WaitForEdges().size(), 49u);
  Advance(1);
  Effects fx = Acquire(s, o(kN - 1), r(0));
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx),
            "deadlock victim s/o17; denied s/o17 r18 DEADLOCK; revoked s/o17 r17 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  ASSERT_EQ(report->cycle.size(), static_cast<std::size_t>(kN));
  for (int i = 0; i < kN; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(report->cycle[i].owner, "s/" + o(i));
    EXPECT_EQ(report->cycle[i].waits_for, r((i + 1) % kN));
    EXPECT_EQ(report->cycle[i].held_by, "s/" + o((i + 1) % kN));
  }
  EXPECT_EQ(Audit(), "");
  fx = Release(s, LeaseOf(s, o(kYoungest), r(kYoungest)));
  EXPECT_EQ(Events(fx), "granted s/o16 r17");
  EXPECT_EQ(coord_->stats().deadlocks, 1u);
}

TEST_F(CoordinatorTest, TwoDisjointCyclesClosedAtTheSameInstantTwoVictims) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  Session d = Hello("d");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r3").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(d, "o4", "r4").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r4").reply), "queued");
  Advance(1);
  Effects fx1 = Acquire(b, "o2", "r1");
  Effects fx2 = Acquire(d, "o4", "r3");
  EXPECT_EQ(ReplyStr(fx1.reply), "DEADLOCK");
  EXPECT_EQ(ReplyStr(fx2.reply), "DEADLOCK");
  EXPECT_EQ(Events(fx1), "deadlock victim b/o2; revoked b/o2 r2 deadlock");
  EXPECT_EQ(Events(fx2), "deadlock victim d/o4; revoked d/o4 r4 deadlock");
  ASSERT_NE(fx1.reply.deadlock, nullptr);
  ASSERT_NE(fx2.reply.deadlock, nullptr);
  EXPECT_EQ(CycleStr(*fx1.reply.deadlock), "a/o1 -[r2 X]-> b/o2 | b/o2 -[r1 X]-> a/o1");
  EXPECT_EQ(CycleStr(*fx2.reply.deadlock), "c/o3 -[r4 X]-> d/o4 | d/o4 -[r3 X]-> c/o3");
  EXPECT_NE(fx1.reply.deadlock->id, fx2.reply.deadlock->id);
  EXPECT_EQ(coord_->stats().deadlocks, 2u);
  EXPECT_EQ(Audit(), "");
  EXPECT_EQ(Events(Advance(1000)), "granted a/o1 r2; granted c/o3 r4");
}

TEST_F(CoordinatorTest, CycleBrokenByReleaseBeforeItClosesIsNeverReported) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  Effects fx = Acquire(b, "o2", "r2");
  ASSERT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  Advance(1);
  EXPECT_EQ(Events(Release(b, fx.reply.lease)), "granted a/o1 r2");
  Advance(1);
  fx = Acquire(b, "o2", "r1");
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx), "");
  EXPECT_EQ(EdgesStr(), "b/o2->a/o1 hard");
  EXPECT_EQ(Events(Release(a, LeaseOf(a, "o1", "r1"))), "granted b/o2 r1");
  EXPECT_EQ(coord_->stats().deadlocks, 0u);
  EXPECT_EQ(Audit(), "");
}

// ======================================================================= upgrade, soft cycles

TEST_F(CoordinatorTest, SharedUpgradeDeadlockOneVictimOtherUpgradedWithNewToken) {
  Session a = Hello("a");
  Session b = Hello("b");
  Effects a_s = Acquire(a, "o1", "r", Mode::kShared);
  ASSERT_EQ(ReplyStr(a_s.reply), "granted");
  Advance(1);
  Effects b_s = Acquire(b, "o2", "r", Mode::kShared);
  ASSERT_EQ(ReplyStr(b_s.reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r", Mode::kExclusive).reply), "queued");
  const std::uint64_t a_upgrade = last_request_id_;
  EXPECT_EQ(WaitsStr(), "r a/o1 X up");
  EXPECT_EQ(EdgesStr(), "a/o1->b/o2 hard");
  Advance(1);
  Effects fx = Acquire(b, "o2", "r", Mode::kExclusive);
  EXPECT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  ASSERT_NE(fx.reply.deadlock, nullptr);
  EXPECT_EQ(fx.reply.deadlock->victim, "b/o2");
  EXPECT_EQ(fx.reply.deadlock->step, VictimStep::kYoungest);
  EXPECT_EQ(CycleStr(*fx.reply.deadlock), "a/o1 -[r X]-> b/o2 | b/o2 -[r X]-> a/o1");
  EXPECT_EQ(Events(fx), "deadlock victim b/o2; revoked b/o2 r deadlock");
  EXPECT_EQ(WaitsStr(), "r a/o1 X up");
  EXPECT_EQ(Audit(), "");

  Advance(1);
  fx = Release(b, b_s.reply.lease);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(Events(fx), "granted a/o1 r");
  auto granted = EventsOf<GrantedEvent>(fx);
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].request_id, a_upgrade);
  EXPECT_EQ(granted[0].mode, Mode::kExclusive);
  EXPECT_EQ(granted[0].lease, a_s.reply.lease);  // same lease id
  EXPECT_GT(granted[0].token, b_s.reply.token);  // new, larger token
  EXPECT_GT(granted[0].token, a_s.reply.token);
  auto leases = coord_->Leases();
  ASSERT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases[0].lease, a_s.reply.lease);
  EXPECT_EQ(leases[0].token, granted[0].token);
  EXPECT_EQ(leases[0].mode, Mode::kExclusive);
  EXPECT_EQ(WaitsStr(), "");
}

TEST_F(CoordinatorTest, SoftOnlyCycleIsBrokenByReorderingWithoutVictim) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  Session d = Hello("d");
  EXPECT_EQ(ReplyStr(Acquire(c, "h1", "r1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(d, "h2", "r2").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "queued");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2").reply), "queued");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r1").reply), "queued");  // behind a/o1
  EXPECT_EQ(EdgesStr(), "a/o1->c/h1 hard, b/o2->a/o1 soft, b/o2->c/h1 hard, b/o2->d/h2 hard");
  Advance(1);
  // a/o1 queues behind b/o2 on r2: a soft-only cycle a/o1 <-> b/o2.
  Effects fx = Acquire(a, "o1", "r2");
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx), "");
  EXPECT_EQ(coord_->stats().cycles_reordered, 1u);
  EXPECT_EQ(coord_->stats().deadlocks, 0u);
  EXPECT_EQ(coord_->stats().revocations, 0u);
  EXPECT_EQ(Audit(), "");
  // The two queues now agree on the order of a/o1 and b/o2.
  std::vector<std::string> q1 = QueueOf("r1");
  std::vector<std::string> q2 = QueueOf("r2");
  ASSERT_EQ(q1.size(), 2u);
  EXPECT_EQ(q1, q2);
  const std::string first = q1[0];
  const std::string second = q1[1];
  for (const OwnerEdge& e : coord_->WaitForEdges()) {
    EXPECT_FALSE(e.from == first && e.to == second) << "edge " << e.from << "->" << e.to;
  }

  // Whoever is first gets both resources, then the other.
  EXPECT_EQ(Events(Release(c, LeaseOf(c, "h1", "r1"))), "granted " + first + " r1");
  EXPECT_EQ(Events(Release(d, LeaseOf(d, "h2", "r2"))), "granted " + first + " r2");
  const Session& fs = first == "a/o1" ? a : b;
  const std::string fo = first == "a/o1" ? "o1" : "o2";
  EXPECT_EQ(Events(Release(fs, LeaseOf(fs, fo, "r1"))), "granted " + second + " r1");
  EXPECT_EQ(Events(Release(fs, LeaseOf(fs, fo, "r2"))), "granted " + second + " r2");
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(coord_->stats().deadlocks, 0u);
}

// ======================================================================= no cycles

TEST_F(CoordinatorTest, DiamondWithManyPathsHasNoCycle) {
  constexpr int kWidth = 10;
  Session s = Hello("s");
  auto m = [](int i) { return "m" + std::to_string(i); };
  auto n = [](int i) { return "n" + std::to_string(i); };
  for (int i = 0; i < kWidth; ++i) {
    EXPECT_EQ(ReplyStr(Acquire(s, m(i), "mid", Mode::kShared).reply), "granted");
    EXPECT_EQ(ReplyStr(Acquire(s, n(i), "mid2", Mode::kShared).reply), "granted");
  }
  EXPECT_EQ(ReplyStr(Acquire(s, "b", "bot").reply), "granted");
  Advance(1);
  for (int i = 0; i < kWidth; ++i) {
    EXPECT_EQ(ReplyStr(Acquire(s, n(i), "bot").reply), "queued");
  }
  for (int i = 0; i < kWidth; ++i) {
    EXPECT_EQ(ReplyStr(Acquire(s, m(i), "mid2").reply), "queued");
  }
  Effects fx = Acquire(s, "t", "mid");
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx), "");
  // t -> every m (10), every m -> every n (100) plus m queue order (45 soft),
  // every n -> b (10) plus n queue order (45 soft).
  auto edges = coord_->WaitForEdges();
  EXPECT_EQ(edges.size(), 210u);
  int hard = 0, soft = 0;
  for (const OwnerEdge& e : edges) {
    hard += e.hard;
    soft += e.soft;
  }
  EXPECT_EQ(hard, 120);
  EXPECT_EQ(soft, 90);
  EXPECT_EQ(Audit(), "");
  EXPECT_EQ(coord_->stats().deadlocks, 0u);
  EXPECT_EQ(coord_->stats().cycles_reordered, 0u);
}

TEST_F(CoordinatorTest, ThousandOwnerChainHasNoCycle) {
  constexpr int kN = 1000;
  Session s = Hello("s");
  auto c = [](int i) { return "c" + std::to_string(i); };
  auto q = [](int i) { return "q" + std::to_string(i); };
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(ReplyStr(Acquire(s, c(i), q(i)).reply), "granted") << i;
  }
  // Each owner waits for the one created before it: edges against creation order.
  for (int i = 1; i < kN; ++i) {
    Effects fx = Acquire(s, c(i), q(i - 1));
    ASSERT_EQ(ReplyStr(fx.reply), "queued") << i;
    ASSERT_EQ(Events(fx), "") << i;
  }
  EXPECT_EQ(coord_->WaitForEdges().size(), static_cast<std::size_t>(kN - 1));
  EXPECT_EQ(Audit(), "");
  EXPECT_EQ(coord_->stats().deadlocks, 0u);
  EXPECT_EQ(Events(Release(s, LeaseOf(s, c(0), q(0)))), "granted s/c1 q0");
  EXPECT_EQ(coord_->WaitForEdges().size(), static_cast<std::size_t>(kN - 2));
}

// ======================================================================= victim policy

TEST_F(CoordinatorTest, VictimPolicyPriorityBeatsAge) {
  Session a = Hello("a", /*priority=*/0);
  Session b = Hello("b", /*priority=*/5);
  Effects fx = AbBa(a, b);  // a/o1 is older but has the lower priority
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx),
            "deadlock victim a/o1; denied a/o1 r2 DEADLOCK; revoked a/o1 r1 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kLowestPriority);
  EXPECT_FALSE(report->why.empty());
  EXPECT_NE(RenderText(*report).find("(lowest_priority)"), std::string::npos);
  EXPECT_EQ(coord_->stats().victims_by_step[static_cast<int>(VictimStep::kLowestPriority)],
            1u);
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, VictimPolicyStartedPassedBackKeepsTheOwnerOlder) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  Advance(1);
  Effects b_first = Acquire(b, "o2", "r2");
  ASSERT_EQ(ReplyStr(b_first.reply), "granted");
  ASSERT_TRUE(b_first.reply.started.has_value());
  const TimeUs b_started = *b_first.reply.started;
  EXPECT_EQ(b_started, now_);
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  Advance(1);
  Effects fx = Acquire(b, "o2", "r1");
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  ASSERT_NE(fx.reply.deadlock, nullptr);
  EXPECT_EQ(fx.reply.deadlock->victim, "b/o2");

  // b/o2 gives everything back; a/o1 finishes.
  EXPECT_EQ(Events(Release(b, b_first.reply.lease)), "granted a/o1 r2");
  EXPECT_TRUE(Release(a, LeaseOf(a, "o1", "r1")).reply.ok());
  EXPECT_TRUE(Release(a, LeaseOf(a, "o1", "r2")).reply.ok());
  EXPECT_EQ(LeasesStr(), "");
  Advance(10);

  // c/o3 appears, then b/o2 retries passing back its `started`.
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r3").reply), "granted");
  Advance(1);
  fx = Acquire(b, "o2", "r1", Mode::kExclusive, -1, Started(b_started));
  ASSERT_EQ(ReplyStr(fx.reply), "granted");
  ASSERT_TRUE(fx.reply.started.has_value());
  EXPECT_EQ(*fx.reply.started, b_started);
  EXPECT_EQ(coord_->OwnerStarted("b", "o2"), std::optional<TimeUs>(b_started));
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r1").reply), "queued");
  Advance(1);
  fx = Acquire(b, "o2", "r3", Mode::kExclusive, -1, Started(b_started));
  // b/o2 is older than c/o3 now: c/o3 is the victim, not b/o2 again.
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx),
            "deadlock victim c/o3; denied c/o3 r1 DEADLOCK; revoked c/o3 r3 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, VictimPolicyFewestLeases) {
  Session a = Hello("a");
  Session b = Hello("b");
  // All at the same instant: priority and age tie.
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "x1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  Effects fx = Acquire(b, "o2", "r1");
  // b/o2 holds one lease, a/o1 two: b/o2 loses (lowest id would have said a/o1).
  EXPECT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  ASSERT_NE(fx.reply.deadlock, nullptr);
  EXPECT_EQ(fx.reply.deadlock->victim, "b/o2");
  EXPECT_EQ(fx.reply.deadlock->step, VictimStep::kFewestLeases);
  EXPECT_FALSE(fx.reply.deadlock->why.empty());
  EXPECT_EQ(CycleStr(*fx.reply.deadlock), "a/o1 -[r2 X]-> b/o2 | b/o2 -[r1 X]-> a/o1");
  EXPECT_EQ(Events(fx), "deadlock victim b/o2; revoked b/o2 r2 deadlock");
  EXPECT_EQ(coord_->stats().victims_by_step[static_cast<int>(VictimStep::kFewestLeases)],
            1u);
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, VictimPolicyLowestId) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  Effects fx = Acquire(b, "o2", "r1");
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx),
            "deadlock victim a/o1; denied a/o1 r2 DEADLOCK; revoked a/o1 r1 deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->step, VictimStep::kLowestId);
  EXPECT_FALSE(report->why.empty());
  EXPECT_EQ(CycleStr(*report), "a/o1 -[r2 X]-> b/o2 | b/o2 -[r1 X]-> a/o1");
  EXPECT_EQ(coord_->stats().victims_by_step[static_cast<int>(VictimStep::kLowestId)], 1u);
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, VictimPolicyConfiguredOrderIsFollowed) {
  Config config;
  config.victim_policy = {VictimStep::kLowestId};
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  // b/o2 is the youngest, but the policy only looks at ids.
  Effects fx = AbBa(a, b);
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->victim, "a/o1");
  EXPECT_EQ(report->step, VictimStep::kLowestId);
  EXPECT_EQ(Audit(), "");
}

// ======================================================================= leases

TEST_F(CoordinatorTest, LeaseTtlExpiryRevokesAndGrantsWaiterLargerToken) {
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fa = Acquire(a, "o1", "r", Mode::kExclusive, -1, Ttl(100));
  ASSERT_EQ(ReplyStr(fa.reply), "granted");
  const TimeUs granted_at = now_;
  Advance(10);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r").reply), "queued");
  const std::uint64_t b_wait = last_request_id_;
  EXPECT_EQ(coord_->NextDeadline(), granted_at + 100 * kMs);
  EXPECT_EQ(Events(TickAt(granted_at + 100 * kMs - 1)), "");
  Effects fx = TickAt(granted_at + 100 * kMs);
  EXPECT_EQ(Events(fx), "granted b/o2 r; revoked a/o1 r expired");
  auto revoked = EventsOf<RevokedEvent>(fx);
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0].lease, fa.reply.lease);
  EXPECT_EQ(revoked[0].token, fa.reply.token);
  auto granted = EventsOf<GrantedEvent>(fx);
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].request_id, b_wait);
  EXPECT_GT(granted[0].token, fa.reply.token);
  EXPECT_EQ(LeasesStr(), "b/o2 r X");
  EXPECT_EQ(coord_->stats().lease_expiries, 1u);
  EXPECT_EQ(ReplyStr(Renew(a, fa.reply.lease).reply), "NOT_OWNER");
}

TEST_F(CoordinatorTest, RenewExtendsLease) {
  Session a = Hello("a");
  Effects fa = Acquire(a, "o1", "r", Mode::kExclusive, -1, Ttl(100));
  ASSERT_EQ(ReplyStr(fa.reply), "granted");
  const TimeUs t0 = now_;
  Advance(80);
  Effects fx = Renew(a, fa.reply.lease);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(fx.reply.expires_in_ms, 100);
  EXPECT_EQ(FindLease("a", "o1", "r")->expires_at_us, t0 + 180 * kMs);
  EXPECT_EQ(Events(TickAt(t0 + 150 * kMs)), "");  // past the first TTL, still held
  EXPECT_EQ(LeasesStr(), "a/o1 r X");
  fx = Renew(a, fa.reply.lease, 500);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(fx.reply.expires_in_ms, 500);
  EXPECT_EQ(Events(TickAt(t0 + 650 * kMs - 1)), "");
  EXPECT_EQ(Events(TickAt(t0 + 650 * kMs)), "revoked a/o1 r expired");
  EXPECT_EQ(LeasesStr(), "");
}

TEST_F(CoordinatorTest, RenewByAnotherSessionIsNotOwner) {
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fa = Acquire(a, "o1", "r", Mode::kExclusive, -1, Ttl(100));
  ASSERT_EQ(ReplyStr(fa.reply), "granted");
  Advance(50);
  ExpectRejected(lg::Renew{b.auth(), fa.reply.lease, std::nullopt}, Code::kNotOwner,
                 "renew another session's lease");
  ExpectRejected(lg::Release{b.auth(), fa.reply.lease, "", ""}, Code::kNotOwner,
                 "release another session's lease");
  // Not renewed: it expires on its own schedule.
  EXPECT_EQ(Events(Advance(50)), "revoked a/o1 r expired");
}

TEST_F(CoordinatorTest, SessionExpiryReleasesEverything) {
  Session a = Hello("a", 0, /*ttl_ms=*/1000);
  Session b = Hello("b");
  Session c = Hello("c");
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r2").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");  // renews a
  const TimeUs a_renewed = now_;
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  Advance(10);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r1").reply), "queued");
  EXPECT_EQ(coord_->NextDeadline(), a_renewed + kSec);
  EXPECT_EQ(Events(TickAt(a_renewed + kSec - 1)), "");
  Effects fx = TickAt(a_renewed + kSec);
  EXPECT_TRUE(HasEvent(fx, "closed a expired")) << Events(fx);
  EXPECT_TRUE(HasEvent(fx, "granted b/o2 r1")) << Events(fx);
  EXPECT_EQ(LeasesStr(), "c/o3 r2 X, b/o2 r1 X");
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(coord_->Sessions(), (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(coord_->stats().sessions_expired, 1u);
  EXPECT_EQ(ReplyStr(Heartbeat(a).reply), "UNKNOWN_SESSION");
}

TEST_F(CoordinatorTest, HeartbeatKeepsSessionAlive) {
  Session a = Hello("a", 0, /*ttl_ms=*/1000);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Events(Advance(900)), "");
    EXPECT_TRUE(Heartbeat(a).reply.ok());
  }
  EXPECT_EQ(LeasesStr(), "a/o1 r1 X");
  EXPECT_TRUE(HasEvent(Advance(1000), "closed a expired"));
}

TEST_F(CoordinatorTest, ByeReleasesEverything) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o3", "r2").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r1").reply), "queued");
  Advance(1);
  Effects fx = Bye(a);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_TRUE(HasEvent(fx, "closed a bye")) << Events(fx);
  EXPECT_TRUE(HasEvent(fx, "granted b/o2 r1")) << Events(fx);
  EXPECT_EQ(LeasesStr(), "b/o3 r2 X, b/o2 r1 X");
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(coord_->Sessions(), std::vector<std::string>{"b"});
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r9").reply), "UNKNOWN_SESSION");
}

TEST_F(CoordinatorTest, QueuedAcquireTimesOut) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r", Mode::kExclusive, /*wait_ms=*/50).reply), "queued");
  const std::uint64_t b_wait = last_request_id_;
  const TimeUs queued_at = now_;
  ASSERT_EQ(coord_->Waits().size(), 1u);
  EXPECT_EQ(coord_->Waits()[0].deadline_us, queued_at + 50 * kMs);
  EXPECT_EQ(Events(TickAt(queued_at + 50 * kMs - 1)), "");
  Effects fx = TickAt(queued_at + 50 * kMs);
  EXPECT_EQ(Events(fx), "denied b/o2 r TIMEOUT");
  EXPECT_EQ(EventsOf<DeniedEvent>(fx).at(0).request_id, b_wait);
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(EdgesStr(), "");
  EXPECT_EQ(coord_->stats().timeouts, 1u);
  EXPECT_EQ(LeasesStr(), "a/o1 r X");
}

TEST_F(CoordinatorTest, TryAcquireOnBusyResourceIsTimeoutAndChangesNothing) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r").reply), "granted");
  Advance(1);
  lg::Acquire try_acquire;
  try_acquire.auth = b.auth();
  try_acquire.request_id = 7;
  try_acquire.owner = "o2";
  try_acquire.resource = "r";
  try_acquire.wait_ms = 0;
  ExpectRejected(try_acquire, Code::kTimeout, "wait_ms 0 on a busy resource");
  // Free: wait_ms 0 is granted.
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "free", Mode::kExclusive, 0).reply), "granted");
}

TEST_F(CoordinatorTest, FifoGrantsUnderContention) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  Session d = Hello("d");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r").reply), "granted");
  // Queued in an order unrelated to the session names.
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r").reply), "queued");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r").reply), "queued");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(d, "o4", "r").reply), "queued");
  EXPECT_EQ(WaitsStr(), "r c/o3 X, r b/o2 X, r d/o4 X");
  // Every waiter waits for the holder (hard) and for those queued ahead (soft).
  EXPECT_EQ(EdgesStr(),
            "b/o2->a/o1 hard, b/o2->c/o3 soft, c/o3->a/o1 hard, d/o4->a/o1 hard, "
            "d/o4->b/o2 soft, d/o4->c/o3 soft");
  EXPECT_EQ(Events(Release(a, LeaseOf(a, "o1", "r"))), "granted c/o3 r");
  EXPECT_EQ(Events(Release(c, LeaseOf(c, "o3", "r"))), "granted b/o2 r");
  EXPECT_EQ(Events(Release(b, LeaseOf(b, "o2", "r"))), "granted d/o4 r");
  EXPECT_EQ(WaitsStr(), "");
}

TEST_F(CoordinatorTest, SharedHeadOfQueueGrantedTogetherThenExclusive) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "x", "r").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "s1", "r", Mode::kShared).reply), "queued");
  EXPECT_EQ(ReplyStr(Acquire(b, "s2", "r", Mode::kShared).reply), "queued");
  EXPECT_EQ(ReplyStr(Acquire(b, "x2", "r", Mode::kExclusive).reply), "queued");
  EXPECT_EQ(ReplyStr(Acquire(b, "s3", "r", Mode::kShared).reply), "queued");
  EXPECT_EQ(Events(Release(a, LeaseOf(a, "x", "r"))), "granted b/s1 r; granted b/s2 r");
  EXPECT_EQ(WaitsStr(), "r b/x2 X, r b/s3 S");
  EXPECT_EQ(Events(Release(b, LeaseOf(b, "s1", "r"))), "");
  EXPECT_EQ(Events(Release(b, LeaseOf(b, "s2", "r"))), "granted b/x2 r");
  EXPECT_EQ(Events(Release(b, LeaseOf(b, "x2", "r"))), "granted b/s3 r");
  EXPECT_EQ(WaitsStr(), "");
}

TEST_F(CoordinatorTest, NewSharedQueuesBehindWaitingExclusive) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r", Mode::kShared).reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r", Mode::kExclusive).reply), "queued");
  // Compatible with the holder, but an X is waiting: FIFO.
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r", Mode::kShared).reply), "queued");
  EXPECT_EQ(EdgesStr(), "b/o2->a/o1 hard, c/o3->b/o2 soft");
  EXPECT_EQ(Events(Release(a, LeaseOf(a, "o1", "r"))), "granted b/o2 r");
  EXPECT_EQ(Events(Release(b, LeaseOf(b, "o2", "r"))), "granted c/o3 r");
}

TEST_F(CoordinatorTest, ReacquiringAHeldModeReturnsTheSameLease) {
  Session a = Hello("a");
  Effects x = Acquire(a, "o1", "r");
  ASSERT_EQ(ReplyStr(x.reply), "granted");
  Effects again = Acquire(a, "o1", "r");
  EXPECT_EQ(ReplyStr(again.reply), "granted");
  EXPECT_EQ(again.reply.lease, x.reply.lease);
  EXPECT_EQ(again.reply.token, x.reply.token);
  Effects weaker = Acquire(a, "o1", "r", Mode::kShared);
  EXPECT_EQ(ReplyStr(weaker.reply), "granted");
  EXPECT_EQ(weaker.reply.lease, x.reply.lease);
  EXPECT_EQ(weaker.reply.token, x.reply.token);
  EXPECT_EQ(LeasesStr(), "a/o1 r X");

  Effects s = Acquire(a, "o1", "q", Mode::kShared);
  ASSERT_EQ(ReplyStr(s.reply), "granted");
  Effects s_again = Acquire(a, "o1", "q", Mode::kShared);
  EXPECT_EQ(s_again.reply.lease, s.reply.lease);
  EXPECT_EQ(s_again.reply.token, s.reply.token);
  // Another owner of the same session is another lease.
  Effects other = Acquire(a, "o2", "q", Mode::kShared);
  ASSERT_EQ(ReplyStr(other.reply), "granted");
  EXPECT_NE(other.reply.lease, s.reply.lease);
  EXPECT_EQ(LeasesStr(), "a/o1 r X, a/o1 q S, a/o2 q S");
  // Released once, it is gone (locks are not counted).
  EXPECT_TRUE(Release(a, x.reply.lease).reply.ok());
  EXPECT_EQ(LeasesStr(), "a/o1 q S, a/o2 q S");
}

TEST_F(CoordinatorTest, UnwaitCancelsAQueuedAcquire) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r").reply), "queued");
  const std::uint64_t b_wait = last_request_id_;
  Effects fx = Unwait(b, "o2", "r");
  EXPECT_EQ(ReplyStr(fx.reply), "cancelled");
  EXPECT_EQ(Events(fx), "denied b/o2 r CANCELLED");
  EXPECT_EQ(EventsOf<DeniedEvent>(fx).at(0).request_id, b_wait);
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(EdgesStr(), "");
  EXPECT_EQ(coord_->stats().cancelled, 1u);
  EXPECT_EQ(Events(Release(a, LeaseOf(a, "o1", "r"))), "");
}

TEST_F(CoordinatorTest, UnwaitAfterTheGrantReturnsTheLease) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r").reply), "queued");
  Effects fx = Release(a, LeaseOf(a, "o1", "r"));
  EXPECT_EQ(Events(fx), "granted b/o2 r");
  GrantedEvent grant = EventsOf<GrantedEvent>(fx).at(0);
  fx = Unwait(b, "o2", "r");
  EXPECT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_EQ(fx.reply.lease, grant.lease);
  EXPECT_EQ(fx.reply.token, grant.token);
  EXPECT_EQ(Events(fx), "");
  EXPECT_EQ(LeasesStr(), "b/o2 r X");
}

TEST_F(CoordinatorTest, UnwaitOfNothingIsANoop) {
  Session a = Hello("a");
  const std::string before = Snapshot(false);
  Effects fx = Unwait(a, "o1", "r");
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_FALSE(fx.reply.cancelled);
  EXPECT_FALSE(fx.reply.granted);
  EXPECT_EQ(Events(fx), "");
  EXPECT_EQ(Snapshot(false), before);
}

TEST_F(CoordinatorTest, OperatorRevokeRevokesTheLease) {
  Session a = Hello("a");
  Effects fa = Acquire(a, "o1", "r");
  ASSERT_EQ(ReplyStr(fa.reply), "granted");
  Effects fx = Apply(lg::Revoke{fa.reply.lease, ""});
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(fx.reply.revoked, std::vector<LeaseId>{fa.reply.lease});
  EXPECT_TRUE(HasEvent(fx, "revoked a/o1 r operator")) << Events(fx);
}

TEST_F(CoordinatorTest, UpgradeGoesAheadOfOtherWaiters) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  Effects a_s = Acquire(a, "o1", "r", Mode::kShared);
  ASSERT_EQ(ReplyStr(a_s.reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(c, "o3", "r", Mode::kShared).reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r", Mode::kExclusive).reply), "queued");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r", Mode::kExclusive).reply), "queued");
  EXPECT_EQ(WaitsStr(), "r a/o1 X up, r b/o2 X");
  EXPECT_EQ(EdgesStr(), "a/o1->c/o3 hard, b/o2->a/o1 hard+soft, b/o2->c/o3 hard");
  Effects fx = Release(c, LeaseOf(c, "o3", "r"));
  EXPECT_EQ(Events(fx), "granted a/o1 r");
  GrantedEvent up = EventsOf<GrantedEvent>(fx).at(0);
  EXPECT_EQ(up.lease, a_s.reply.lease);
  EXPECT_GT(up.token, a_s.reply.token);
  EXPECT_EQ(LeasesStr(), "a/o1 r X");
  EXPECT_EQ(Events(Release(a, a_s.reply.lease)), "granted b/o2 r");
}

TEST_F(CoordinatorTest, ClockGoingBackwardsIsTreatedAsTheLatestSeen) {
  Session a = Hello("a");
  Advance(5000);
  const TimeUs latest = now_;
  now_ = latest - 4 * kSec;  // a confused caller
  Effects fx = Acquire(a, "o1", "r", Mode::kExclusive, -1, Ttl(100));
  ASSERT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_EQ(FindLease("a", "o1", "r")->expires_at_us, latest + 100 * kMs);
  EXPECT_EQ(Events(TickAt(latest + 100 * kMs - 1)), "");
  EXPECT_EQ(Events(TickAt(latest + 100 * kMs)), "revoked a/o1 r expired");
}

TEST_F(CoordinatorTest, VictimByeDuringRevokeGraceHandsOverAtOnce) {
  Session a = Hello("a");
  Session b = Hello("b");
  Effects fx = AbBa(a, b);
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  Advance(100);
  fx = Bye(b);
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(Events(fx), "closed b bye; granted a/o1 r2");
  EXPECT_EQ(LeasesStr(), "a/o1 r1 X, a/o1 r2 X");
  EXPECT_EQ(Events(Advance(2000)), "");
}

TEST_F(ReportModeTest, WaitClosingTheCycleWhenTheWaiterIsTheVictimIsDeadlockReply) {
  Config config;
  config.confirm_us = 0;
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  HoldInTurn({{&a, "o1", "A"}, {&b, "o2", "B"}});
  EXPECT_TRUE(Wait(a, "o1", "B", Mode::kExclusive, "a.cc:1").reply.ok());
  Advance(1);
  Effects fx = Wait(b, "o2", "A", Mode::kExclusive, "b.cc:2");
  EXPECT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  EXPECT_FALSE(fx.reply.message.empty());
  ASSERT_NE(fx.reply.deadlock, nullptr);
  EXPECT_EQ(fx.reply.deadlock->victim, "b/o2");
  EXPECT_EQ(fx.reply.deadlock->step, VictimStep::kYoungest);
  EXPECT_TRUE(fx.reply.deadlock->report_mode);
  EXPECT_EQ(CycleStr(*fx.reply.deadlock), "a/o1 -[B X]-> b/o2 | b/o2 -[A X]-> a/o1");
  // The reply is the denial: no DeniedEvent for the requester.
  EXPECT_EQ(Events(fx), "deadlock victim b/o2; revoked b/o2 B deadlock");
  EXPECT_EQ(WaitsStr(), "B a/o1 X");
  EXPECT_EQ(Audit(), "");
}

TEST_F(ReportModeTest, MixedCycleWithAReportedEdgeWaitsForConfirmation) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  Advance(1);
  EXPECT_TRUE(Hold(b, "o2", "B").reply.ok());
  Advance(1);
  EXPECT_TRUE(Wait(a, "o1", "B").reply.ok());  // reported edge a/o1 -> b/o2
  Advance(1);
  Effects fx = Acquire(b, "o2", "r1");  // queued acquire closes the cycle
  const std::uint64_t b_wait = last_request_id_;
  const TimeUs closed_at = now_;
  EXPECT_EQ(ReplyStr(fx.reply), "queued");
  EXPECT_EQ(Events(fx), "");
  EXPECT_EQ(Audit(), "[a/o1 b/o2]");
  EXPECT_EQ(Events(TickAt(closed_at + 10 * kMs - 1)), "");
  fx = TickAt(closed_at + 10 * kMs);
  EXPECT_EQ(Events(fx),
            "deadlock victim b/o2; denied b/o2 r1 DEADLOCK; revoked b/o2 B deadlock");
  auto report = OnlyReport(fx);
  ASSERT_NE(report, nullptr);
  EXPECT_TRUE(report->report_mode);
  EXPECT_EQ(report->step, VictimStep::kYoungest);
  EXPECT_EQ(CycleStr(*report), "a/o1 -[B X]-> b/o2 | b/o2 -[r1 X]-> a/o1");
  EXPECT_EQ(EventsOf<DeniedEvent>(fx).at(0).request_id, b_wait);
  EXPECT_EQ(Audit(), "");
}

TEST_F(CoordinatorTest, RevokedLeaseStillEndsAtItsTtl) {
  // core.md: a lease ends at the earlier of its session's end and ttl_ms after its
  // grant; being revoked (waiting for hand-over) must not make it live longer.
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  Advance(1);
  ASSERT_EQ(ReplyStr(Acquire(b, "o2", "r2", Mode::kExclusive, -1, Ttl(200)).reply), "granted");
  const TimeUs b_granted = now_;
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  Advance(1);
  Effects fx = Acquire(b, "o2", "r1");
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  EXPECT_EQ(Events(fx), "deadlock victim b/o2; revoked b/o2 r2 deadlock");
  EXPECT_EQ(Events(TickAt(b_granted + 200 * kMs - 1)), "");
  fx = TickAt(b_granted + 200 * kMs);
  EXPECT_TRUE(HasEvent(fx, "granted a/o1 r2"))
      << "the revoked lease outlived its TTL; events: " << Events(fx)
      << "; leases: " << LeasesStr();
}

TEST_F(ReportModeTest, DoomedHoldStillExpiresAtItsTtl) {
  // Report-mode holds keep their TTL (a crashed client's holds disappear), doomed
  // or not: a doomed hold that expires is no unresponsive victim.
  Config config;
  config.confirm_us = 0;
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_TRUE(Hold(a, "o1", "A").reply.ok());
  Advance(1);
  EXPECT_TRUE(Hold(b, "o2", "B", Mode::kExclusive, "", /*ttl_ms=*/500).reply.ok());
  const TimeUs b_held = now_;
  Advance(1);
  EXPECT_TRUE(Wait(a, "o1", "B").reply.ok());
  Advance(1);
  Effects fx = Wait(b, "o2", "A");
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  EXPECT_EQ(Events(fx), "deadlock victim b/o2; revoked b/o2 B deadlock");
  ASSERT_TRUE(FindLease("b", "o2", "B").has_value());

  TickAt(b_held + 500 * kMs);
  EXPECT_FALSE(FindLease("b", "o2", "B").has_value())
      << "the doomed hold outlived its TTL: " << LeasesStr();
  EXPECT_EQ(EdgesStr(), "");
  fx = Advance(3000);
  EXPECT_FALSE(HasEvent(fx, "unresponsive b/o2")) << Events(fx);
  EXPECT_EQ(coord_->stats().victims_unresponsive, 0u);
  EXPECT_EQ(coord_->stats().deadlocks, 1u);
}

TEST_F(ReportModeTest, UnresponsiveEventCarriesTheReportThatChoseTheVictim) {
  Session a = Hello("a");
  Session b = Hello("b");
  Session c = Hello("c");
  HoldInTurn({{&a, "o1", "A"}, {&b, "o2", "B"}, {&c, "o3", "C"}});
  EXPECT_TRUE(Wait(a, "o1", "B").reply.ok());
  EXPECT_TRUE(Wait(b, "o2", "C").reply.ok());
  EXPECT_TRUE(Wait(c, "o3", "A").reply.ok());
  auto first = OnlyReport(Advance(10));
  ASSERT_NE(first, nullptr);
  Effects fx = Advance(2000);
  auto unresponsive = EventsOf<VictimUnresponsiveEvent>(fx);
  ASSERT_EQ(unresponsive.size(), 1u) << Events(fx);
  ASSERT_NE(unresponsive[0].report, nullptr);
  const DeadlockReport& r = *unresponsive[0].report;
  EXPECT_EQ(r.victim, first->victim);
  EXPECT_EQ(r.id, first->id);
  EXPECT_EQ(r.step, first->step);
  EXPECT_EQ(r.why, first->why);
  EXPECT_EQ(r.attempt, first->attempt);
}

TEST_F(ReportModeTest, UnresponsiveVictimInTwoOwnerCycleNextVictimSaysWhy) {
  Session a = Hello("a");
  Session b = Hello("b");
  HoldInTurn({{&a, "o1", "A"}, {&b, "o2", "B"}});
  EXPECT_TRUE(Wait(a, "o1", "B").reply.ok());
  EXPECT_TRUE(Wait(b, "o2", "A").reply.ok());
  Effects fx = Advance(10);
  EXPECT_EQ(Events(fx), "deadlock victim b/o2; denied b/o2 A DEADLOCK; revoked b/o2 B deadlock");
  fx = Advance(2000);
  // a/o1's hold on A is what the unresponsive b/o2 waited for: revoked too.
  EXPECT_EQ(Events(fx), "deadlock victim a/o1; denied a/o1 B DEADLOCK; revoked a/o1 A deadlock; unresponsive b/o2");
  auto second = OnlyReport(fx);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->attempt, 2);
  EXPECT_EQ(second->unresponsive, std::vector<std::string>{"b/o2"});
  // One candidate is left: the first step of the policy leaves one, so it decides,
  // and the report must still say why.
  EXPECT_FALSE(second->why.empty()) << "empty why for the second victim";
  EXPECT_EQ(VictimStepName(second->step), VictimStepName(VictimStep::kLowestPriority));
  EXPECT_EQ(Audit(), "");
}

// ======================================================================= fencing

TEST_F(CoordinatorTest, TokensStrictlyIncreaseWithTheEpochInTheHighBits) {
  Reset(Config{}, /*epoch=*/7);
  Session a = Hello("a");
  Session b = Hello("b");
  std::vector<Token> tokens;
  EXPECT_EQ(coord_->last_token(), 0u);
  Effects fx = Acquire(a, "o1", "r1");
  tokens.push_back(fx.reply.token);
  EXPECT_EQ(fx.reply.lease, fx.reply.token);  // a lease id is its first token
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r1").reply), "queued");
  fx = Release(a, fx.reply.lease);
  tokens.push_back(EventsOf<GrantedEvent>(fx).at(0).token);
  Effects s1 = Acquire(a, "o1", "s", Mode::kShared);
  tokens.push_back(s1.reply.token);
  Effects s2 = Acquire(b, "o2", "s", Mode::kShared);
  tokens.push_back(s2.reply.token);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "s", Mode::kExclusive).reply), "queued");
  fx = Release(b, s2.reply.lease);
  GrantedEvent upgrade = EventsOf<GrantedEvent>(fx).at(0);
  EXPECT_EQ(upgrade.lease, s1.reply.lease);
  tokens.push_back(upgrade.token);
  EXPECT_EQ(coord_->last_token(), upgrade.token);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(tokens[i] >> kSeqBits, 7u);
    if (i) {
      EXPECT_GT(tokens[i], tokens[i - 1]);
    }
  }
  EXPECT_EQ(tokens[0], (Token{7} << kSeqBits) | 1);
  EXPECT_EQ(coord_->epoch(), 7u);
}

TEST_F(CoordinatorTest, NeedEpochNearTheSeqLimitAndSetEpochContinues) {
  Config config;
  config.epoch_low_water = 10;
  Reset(config, /*epoch=*/3, /*first_seq=*/kSeqLimit - 20);
  Session a = Hello("a");
  int need_epoch = 0;
  for (int i = 0; i < 15; ++i) {
    SCOPED_TRACE(i);
    Effects fx = Acquire(a, "o1", "r" + std::to_string(i));
    ASSERT_EQ(ReplyStr(fx.reply), "granted");
    EXPECT_EQ(fx.reply.token, (Token{3} << kSeqBits) | (kSeqLimit - 20 + i));
    for (const NeedEpochEvent& e : EventsOf<NeedEpochEvent>(fx)) {
      EXPECT_EQ(e.next_epoch, 4u);
      ++need_epoch;
    }
    // 15 or more sequence numbers are left after the first five grants.
    if (i < 5) {
      EXPECT_EQ(need_epoch, 0);
    }
  }
  EXPECT_GE(need_epoch, 1) << "no NeedEpochEvent with 5 sequence numbers left";

  Effects fx = Apply(SetEpoch{4});
  EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
  EXPECT_EQ(coord_->epoch(), 4u);
  fx = Acquire(a, "o1", "after");
  ASSERT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_EQ(fx.reply.token, (Token{4} << kSeqBits) | 1);
  EXPECT_EQ(EventsOf<NeedEpochEvent>(fx).size(), 0u);
}

TEST_F(CoordinatorTest, GrantPastTheSeqLimitWithoutSetEpochIsInternal) {
  Reset(Config{}, /*epoch=*/5, /*first_seq=*/kSeqLimit - 2);
  Session a = Hello("a");
  Effects fx = Acquire(a, "o1", "r0");
  ASSERT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_EQ(fx.reply.token, (Token{5} << kSeqBits) | (kSeqLimit - 2));
  fx = Acquire(a, "o1", "r1");
  ASSERT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_EQ(fx.reply.token, (Token{5} << kSeqBits) | (kSeqLimit - 1));

  lg::Acquire next;
  next.auth = a.auth();
  next.request_id = 9;
  next.owner = "o1";
  next.resource = "r2";
  ExpectRejected(next, Code::kInternal, "grant past 2^40-1");
  EXPECT_EQ(coord_->last_token(), (Token{5} << kSeqBits) | (kSeqLimit - 1));

  EXPECT_TRUE(Apply(SetEpoch{6}).reply.ok());
  fx = Acquire(a, "o1", "r2");
  ASSERT_EQ(ReplyStr(fx.reply), "granted");
  EXPECT_EQ(fx.reply.token, (Token{6} << kSeqBits) | 1);
}

// ======================================================================= bad commands

class BadCommandTest : public CoordinatorTest {
 protected:
  void SetUp() override {
    CoordinatorTest::SetUp();
    audit_each_apply_ = false;  // one report-mode hold below; no cycles anyway
    a_ = Hello("a");
    b_ = Hello("b");
    EXPECT_EQ(ReplyStr(Acquire(a_, "o1", "r1").reply), "granted");
    EXPECT_EQ(ReplyStr(Acquire(b_, "o2", "r2").reply), "granted");
    EXPECT_EQ(ReplyStr(Acquire(a_, "o1", "r2", Mode::kExclusive, 5000).reply), "queued");
    EXPECT_EQ(ReplyStr(Acquire(a_, "o3", "s1", Mode::kShared).reply), "granted");
    EXPECT_TRUE(Hold(b_, "o4", "h1").reply.ok());
    EXPECT_TRUE(Wait(b_, "o4", "r1").reply.ok());
    Advance(1);
    a_lease_ = LeaseOf(a_, "o1", "r1");
  }

  lg::Acquire GoodAcquire() const {
    lg::Acquire c;
    c.auth = a_.auth();
    c.request_id = 500;
    c.owner = "o9";
    c.resource = "r9";
    c.mode = Mode::kExclusive;
    c.ttl_ms = 1000;
    c.wait_ms = -1;
    return c;
  }
  lg::Hold GoodHold() const {
    lg::Hold c;
    c.auth = a_.auth();
    c.owner = "o9";
    c.resource = "h9";
    c.ttl_ms = 1000;
    return c;
  }
  lg::Wait GoodWait() const {
    lg::Wait c;
    c.auth = a_.auth();
    c.owner = "o9";
    c.resource = "h1";
    return c;
  }

  Session a_, b_;
  LeaseId a_lease_ = 0;
};

TEST_F(BadCommandTest, UnknownSessionAndWrongSecret) {
  lg::Acquire c = GoodAcquire();
  c.auth = Auth{"nope", "x"};
  ExpectRejected(c, Code::kUnknownSession, "acquire, unknown session");
  ExpectRejected(lg::Heartbeat{Auth{"nope", "x"}}, Code::kUnknownSession, "heartbeat");
  ExpectRejected(lg::Bye{Auth{"nope", "x"}}, Code::kUnknownSession, "bye");
  c.auth = Auth{"a", "wrong"};
  ExpectRejected(c, Code::kAuth, "acquire, wrong secret");
  ExpectRejected(lg::Bye{Auth{"a", "wrong"}}, Code::kAuth, "bye, wrong secret");
  ExpectRejected(lg::Heartbeat{Auth{"a", "wrong"}}, Code::kAuth, "heartbeat, wrong secret");
  ExpectRejected(lg::Release{Auth{"a", "wrong"}, a_lease_, "", ""}, Code::kAuth,
                 "release, wrong secret");
  ExpectRejected(lg::Renew{Auth{"a", "b-secret"}, a_lease_, std::nullopt}, Code::kAuth,
                 "renew with another session's secret");
  ExpectRejected(lg::Unwait{Auth{"a", "wrong"}, "o1", "r2"}, Code::kAuth,
                 "unwait, wrong secret");
  lg::Hold h = GoodHold();
  h.auth = Auth{"a", "wrong"};
  ExpectRejected(h, Code::kAuth, "hold, wrong secret");
}

TEST_F(BadCommandTest, AnotherSessionsLeaseIsNotOwner) {
  ExpectRejected(lg::Release{b_.auth(), a_lease_, "", ""}, Code::kNotOwner, "release");
  ExpectRejected(lg::Renew{b_.auth(), a_lease_, std::nullopt}, Code::kNotOwner, "renew");
  ExpectRejected(lg::Release{a_.auth(), 987654321, "", ""}, Code::kNotOwner,
                 "release of a lease that does not exist");
  ExpectRejected(lg::Renew{a_.auth(), 987654321, std::nullopt}, Code::kNotOwner,
                 "renew of a lease that does not exist");
}

TEST_F(BadCommandTest, BadModeIsBadRequest) {
  lg::Acquire c = GoodAcquire();
  c.mode = static_cast<Mode>(7);
  ExpectRejected(c, Code::kBadRequest, "acquire");
  lg::Hold h = GoodHold();
  h.mode = static_cast<Mode>(7);
  ExpectRejected(h, Code::kBadRequest, "hold");
  lg::Wait w = GoodWait();
  w.mode = static_cast<Mode>(7);
  ExpectRejected(w, Code::kBadRequest, "wait");
}

TEST_F(BadCommandTest, EmptyNamesAreBadRequest) {
  lg::Acquire c = GoodAcquire();
  c.owner = "";
  ExpectRejected(c, Code::kBadRequest, "acquire, empty owner");
  c = GoodAcquire();
  c.resource = "";
  ExpectRejected(c, Code::kBadRequest, "acquire, empty resource");
  lg::Hold h = GoodHold();
  h.owner = "";
  ExpectRejected(h, Code::kBadRequest, "hold, empty owner");
  lg::Wait w = GoodWait();
  w.resource = "";
  ExpectRejected(w, Code::kBadRequest, "wait, empty resource");
  ExpectRejected(lg::Unwait{a_.auth(), "", "r2"}, Code::kBadRequest, "unwait, empty owner");
}

TEST_F(BadCommandTest, NamesOverMaxBytesAreLimit) {
  const std::string long_name(1025, 'n');
  lg::Acquire c = GoodAcquire();
  c.owner = long_name;
  ExpectRejected(c, Code::kLimit, "acquire, long owner");
  c = GoodAcquire();
  c.resource = long_name;
  ExpectRejected(c, Code::kLimit, "acquire, long resource");
  c = GoodAcquire();
  c.site = long_name;
  ExpectRejected(c, Code::kLimit, "acquire, long site");
  lg::Hold h = GoodHold();
  h.site = long_name;
  ExpectRejected(h, Code::kLimit, "hold, long site");
  lg::Wait w = GoodWait();
  w.owner = long_name;
  ExpectRejected(w, Code::kLimit, "wait, long owner");
}

TEST_F(BadCommandTest, NameOfExactlyMaxBytesIsAccepted) {
  const std::string name(1024, 'n');
  Effects fx = Acquire(a_, name, name, Mode::kExclusive, -1, Site(name));
  EXPECT_EQ(ReplyStr(fx.reply), "granted") << fx.reply.message;
}

TEST_F(BadCommandTest, NonPositiveOrTooLongTtlIsRejected) {
  for (std::int64_t ttl : {0, -1, -30000}) {
    lg::Acquire c = GoodAcquire();
    c.ttl_ms = ttl;
    ExpectRejected(c, Code::kBadRequest, "acquire ttl " + std::to_string(ttl));
    lg::Hold h = GoodHold();
    h.ttl_ms = ttl;
    ExpectRejected(h, Code::kBadRequest, "hold ttl " + std::to_string(ttl));
    ExpectRejected(lg::Renew{a_.auth(), a_lease_, ttl}, Code::kBadRequest,
                   "renew ttl " + std::to_string(ttl));
    lg::Hello hello;
    hello.session = "c";
    hello.secret = "c-secret";
    hello.ttl_ms = ttl;
    ExpectRejected(hello, Code::kBadRequest, "hello ttl " + std::to_string(ttl));
  }
  lg::Acquire c = GoodAcquire();
  c.ttl_ms = coord_->config().max_ttl_ms + 1;
  ExpectRejectedEither(c, Code::kBadRequest, Code::kLimit, "acquire ttl over max");
  ExpectRejectedEither(lg::Renew{a_.auth(), a_lease_, coord_->config().max_ttl_ms + 1},
                       Code::kBadRequest, Code::kLimit, "renew ttl over max");
}

TEST_F(BadCommandTest, WaitMsBelowMinusOneIsBadRequest) {
  for (std::int64_t wait_ms : {-2, -1000}) {
    lg::Acquire c = GoodAcquire();
    c.wait_ms = wait_ms;
    ExpectRejected(c, Code::kBadRequest, "wait_ms " + std::to_string(wait_ms));
  }
}

TEST_F(BadCommandTest, ChecksComeInTheDocumentedOrder) {
  lg::Acquire c = GoodAcquire();
  c.auth = Auth{"nope", "x"};
  c.owner = "";
  c.mode = static_cast<Mode>(7);
  ExpectRejected(c, Code::kUnknownSession, "unknown session before anything else");
  c.auth = Auth{"a", "wrong"};
  ExpectRejected(c, Code::kAuth, "secret before names and mode");
  c = GoodAcquire();
  c.owner = std::string(2000, 'x');
  c.mode = static_cast<Mode>(7);
  c.ttl_ms = 0;
  ExpectRejected(c, Code::kLimit, "names before the mode and TTL");
}

TEST_F(BadCommandTest, TryAcquireOfBusyResourceLeavesStateAlone) {
  lg::Acquire c = GoodAcquire();
  c.auth = b_.auth();
  c.owner = "o2";
  c.resource = "r1";
  c.wait_ms = 0;
  ExpectRejected(c, Code::kTimeout, "try on busy r1");
}

TEST_F(CoordinatorTest, TooManyWaitsPerOwnerIsLimit) {
  Config config;
  config.max_waits_per_owner = 2;
  Reset(config);
  Session a = Hello("a");
  Session b = Hello("b");
  for (const char* r : {"r1", "r2", "r3"}) {
    EXPECT_EQ(ReplyStr(Acquire(b, "o2", r).reply), "granted");
  }
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "queued");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2").reply), "queued");
  Advance(1);
  lg::Acquire c;
  c.auth = a.auth();
  c.request_id = 77;
  c.owner = "o1";
  c.resource = "r3";
  ExpectRejected(c, Code::kLimit, "third wait of a/o1");
  // Another owner of the same session has its own budget.
  EXPECT_EQ(ReplyStr(Acquire(a, "o5", "r3").reply), "queued");
}

TEST_F(CoordinatorTest, TooManyLeasesPerSessionIsLimit) {
  Config config;
  config.max_leases_per_session = 2;
  Reset(config);
  Session a = Hello("a");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o2", "r2").reply), "granted");
  Advance(1);
  lg::Acquire c;
  c.auth = a.auth();
  c.request_id = 77;
  c.owner = "o3";
  c.resource = "r3";
  ExpectRejected(c, Code::kLimit, "third lease of session a");
}

// ======================================================================= reports and exports

TEST_F(CoordinatorTest, DeadlockReportRendersAsProtocolJson) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1", Mode::kExclusive, -1, Site("a.cc:10")).reply),
            "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2", Mode::kExclusive, -1, Site("b.cc:10")).reply),
            "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2", Mode::kExclusive, -1, Site("a.cc:12")).reply),
            "queued");
  Advance(1);
  Effects fx = Acquire(b, "o2", "r1", Mode::kExclusive, -1, Site("b.cc:20"));
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  ASSERT_NE(fx.reply.deadlock, nullptr);
  const DeadlockReport& r = *fx.reply.deadlock;
  const std::string json = RenderJson(r);
  EXPECT_EQ(json.rfind(
                "{\"cycle\":["
                "{\"owner\":\"a/o1\",\"waits_for\":\"r2\",\"mode\":\"X\",\"held_by\":\"b/o2\","
                "\"site\":\"a.cc:12\"},"
                "{\"owner\":\"b/o2\",\"waits_for\":\"r1\",\"mode\":\"X\",\"held_by\":\"a/o1\","
                "\"site\":\"b.cc:20\"}],"
                "\"victim\":\"b/o2\",\"why\":",
                0),
            0u)
      << json;
  for (const char* key : {"\"cycle\":", "\"owner\":", "\"waits_for\":", "\"mode\":",
                          "\"held_by\":", "\"site\":", "\"victim\":", "\"why\":",
                          "\"detected_at_us\":"}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
  }
  EXPECT_NE(json.find("\"detected_at_us\":" + std::to_string(now_)), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"step\":\"youngest\""), std::string::npos) << json;
  EXPECT_EQ(json.back(), '}');
}

TEST_F(CoordinatorTest, DeadlockReportRendersAsLockdepText) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r1").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "r2").reply), "granted");
  Advance(1);
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "r2", Mode::kExclusive, -1, Site("a.cc:12")).reply),
            "queued");
  Advance(1);
  Effects fx = Acquire(b, "o2", "r1", Mode::kExclusive, -1, Site("b.cc:20"));
  ASSERT_EQ(ReplyStr(fx.reply), "DEADLOCK");
  ASSERT_NE(fx.reply.deadlock, nullptr);
  const std::string text = RenderText(*fx.reply.deadlock);
  for (const std::string& part : {
           std::string("WARNING: deadlock detected"),
           std::string("b/o2 is trying to acquire:\n  r1 (X) at b.cc:20"),
           std::string("but it is held by a/o1"),
           std::string("the existing dependency chain is:"),
           std::string("-> #0 a/o1 waits for r2 (X) held by b/o2\n       at a.cc:12"),
           std::string("-> #1 b/o2 waits for r1 (X) held by a/o1\n       at b.cc:20"),
           std::string("*** DEADLOCK ***"),
           std::string("victim: b/o2"),
           std::string("why: " + fx.reply.deadlock->why + " (youngest)"),
       }) {
    EXPECT_NE(text.find(part), std::string::npos) << "missing \"" << part << "\" in\n" << text;
  }
}

TEST_F(CoordinatorTest, ToDotShowsOwnersAndResources) {
  Session a = Hello("a");
  Session b = Hello("b");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "acct:1").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(b, "o2", "order:17").reply), "granted");
  EXPECT_EQ(ReplyStr(Acquire(a, "o1", "order:17").reply), "queued");
  const std::string dot = coord_->ToDot();
  for (const char* part : {"digraph", "a/o1", "b/o2", "acct:1", "order:17"}) {
    EXPECT_NE(dot.find(part), std::string::npos) << part << " in\n" << dot;
  }
}

// ======================================================================= randomized

// Random arbitrate-mode traffic (seeded, so a failure replays): after every command
// no cycle survives, live leases are mutually exclusive, every new token is larger
// than all before it and carries the epoch, and every queued acquire ends at most
// once and is listed in Waits() until it does.
class RandomTrafficTest : public CoordinatorTest,
                          public ::testing::WithParamInterface<std::uint32_t> {};

TEST_P(RandomTrafficTest, ArbitrateTrafficKeepsInvariants) {
  const std::uint32_t seed = GetParam();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  // Three classes: default revoke grace, a short one, and immediate hand-over.
  Config config;
  config.classes["g"].revoke_grace_us = 100 * kMs;
  config.classes["imm"].revoke_immediate = true;
  Reset(config, /*epoch=*/9);
  const std::string resources[] = {"r:0", "r:1", "g:0", "g:1", "imm:0", "imm:1"};
  std::vector<Session> sessions = {Hello("a"), Hello("b"), Hello("c")};

  std::map<std::uint64_t, std::tuple<std::string, std::string, std::string>> pending;
  // Tokens first seen in one Apply must all be larger than every token before it
  // (their order within the Apply's reply and events is presentation only).
  std::set<Token> seen;
  Token max_token = 0;
  std::vector<Token> fresh;
  auto note_token = [&](Token t) {
    EXPECT_EQ(t >> kSeqBits, 9u);
    if (seen.insert(t).second) fresh.push_back(t);
  };
  auto settle_tokens = [&] {
    for (Token t : fresh) {
      EXPECT_GT(t, max_token) << "token went backwards: seq " << (t & (kSeqLimit - 1))
                              << " after seq " << (max_token & (kSeqLimit - 1));
    }
    for (Token t : fresh) max_token = std::max(max_token, t);
    fresh.clear();
  };
  auto handle = [&](const Effects& fx) {
    for (const Event& e : fx.events) {
      if (const auto* g = std::get_if<GrantedEvent>(&e)) {
        EXPECT_EQ(pending.erase(g->request_id), 1u) << "grant of request " << g->request_id;
        note_token(g->token);
      } else if (const auto* d = std::get_if<DeniedEvent>(&e)) {
        EXPECT_EQ(pending.erase(d->request_id), 1u) << "denial of request " << d->request_id;
      }
    }
  };

  for (int step = 0; step < 5000 && !HasFailure(); ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const int op = pick(100);
    if (op < 45) {
      const Session& s = sessions[pick(3)];
      std::string owner = "o" + std::to_string(pick(3));
      std::string resource = resources[pick(6)];
      bool already = false;
      for (const auto& [id, t] : pending) {
        if (t == std::make_tuple(s.id, owner, resource)) already = true;
      }
      if (already) continue;
      // Re-acquiring over one's own revoked lease is refused (BAD_REQUEST): the
      // client must release first. Not what this test is about.
      auto own = FindLease(s.id, owner, resource);
      if (own && own->revoked) continue;
      const Mode mode = pick(3) == 0 ? Mode::kShared : Mode::kExclusive;
      const std::int64_t waits[] = {-1, -1, 0, 200};
      const std::int64_t ttls[] = {500, 2000, kLongTtlMs};
      Effects fx = Acquire(s, owner, resource, mode, waits[pick(4)], Ttl(ttls[pick(3)]));
      if (fx.reply.ok() && fx.reply.granted) {
        note_token(fx.reply.token);
      } else if (fx.reply.ok() && fx.reply.queued) {
        pending[last_request_id_] = {s.id, owner, resource};
      } else {
        EXPECT_TRUE(fx.reply.code == Code::kDeadlock || fx.reply.code == Code::kTimeout)
            << ReplyStr(fx.reply) << ": " << fx.reply.message;
      }
      handle(fx);
    } else if (op < 70) {
      auto leases = coord_->Leases();
      if (leases.empty()) continue;
      const LeaseInfo& l = leases[pick(static_cast<int>(leases.size()))];
      Session s{l.session, l.session + "-secret"};
      Effects fx = Release(s, l.lease);
      EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
      handle(fx);
    } else if (op < 78) {
      if (pending.empty()) continue;
      auto it = pending.begin();
      std::advance(it, pick(static_cast<int>(pending.size())));
      auto [sid, owner, resource] = it->second;
      Effects fx = Unwait(Session{sid, sid + "-secret"}, owner, resource);
      EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
      handle(fx);
      if (fx.reply.granted) pending.erase(it);
    } else if (op < 80) {
      // A session leaves and comes back under the same name.
      const int i = pick(3);
      const Session s = sessions[i];
      Effects fx = Bye(s);
      EXPECT_TRUE(fx.reply.ok()) << fx.reply.message;
      handle(fx);
      for (auto it = pending.begin(); it != pending.end();) {
        it = std::get<0>(it->second) == s.id ? pending.erase(it) : std::next(it);
      }
      sessions[i] = Hello(s.id);
    } else {
      handle(AdvanceUs(pick(400) * kMs + pick(1000)));
    }

    settle_tokens();
    // Mutual exclusion over live (not revoked) leases.
    std::map<std::string, std::pair<int, int>> per_resource;  // total, exclusive
    for (const LeaseInfo& l : coord_->Leases()) {
      if (l.revoked) continue;
      auto& [total, exclusive] = per_resource[l.resource];
      ++total;
      exclusive += l.mode == Mode::kExclusive;
    }
    for (const auto& [resource, counts] : per_resource) {
      EXPECT_TRUE(counts.second == 0 || counts.first == 1)
          << resource << ": " << LeasesStr();
    }
    // Every pending request is queued, and every queued acquire is pending.
    std::set<std::uint64_t> queued;
    for (const WaitInfo& w : coord_->Waits()) queued.insert(w.request_id);
    std::set<std::uint64_t> expected;
    for (const auto& [id, t] : pending) expected.insert(id);
    EXPECT_EQ(queued, expected) << WaitsStr();
  }
  EXPECT_GT(coord_->stats().grants, 100u);

  for (const Session& s : sessions) EXPECT_TRUE(Bye(s).reply.ok());
  EXPECT_EQ(LeasesStr(), "");
  EXPECT_EQ(WaitsStr(), "");
  EXPECT_EQ(coord_->Sessions(), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(Seeds, RandomTrafficTest,
                         ::testing::Values(20240611u, 1u, 2u, 3u, 4u, 5u, 6u, 7u));

}  // namespace
}  // namespace lockgraph::graph
