// Property tests of the Coordinator over random command sequences (rapidcheck).
//
// A sequence is a few sessions with a few owners each, working a handful of resources:
// acquire S/X with random wait_ms, release, hold, wait, unwait, renew, heartbeat, bye,
// hello again after a session closed, clock advances of 0 to 2.5 s, and now and then a
// bad command (unknown session, wrong secret, empty or too long name, bad mode, bad TTL,
// wait_ms < -1, someone else's or no lease). After every Apply, testing::Harness
// (invariants.h) checks the state and the effects; see there for the full list. In short:
// mutual exclusion over live grants, AuditCycles() empty (arbitrate mode), strictly
// increasing fencing tokens, every victim in a real cycle with its wait denied and its
// lease revoked, one victim per cycle, every queued acquire answered or legitimately
// waiting, wait-for edges exactly those implied by holds and waits, a queue head that
// could be granted is granted, session and lease expiry on time, CheckInvariants()
// empty, and errors (other than DEADLOCK) leave Leases/Waits/WaitForEdges/Sessions
// exactly as they were. Most commands are preceded by a Tick at the same `now`, so that
// the "before" state already includes the time advance.
//
// Replaying a failure: rapidcheck prints "Falsifiable after N tests and M shrinks" with
// the shrunk op list and a line "seed: S". Rerun just that property with
//   RC_PARAMS="seed=S" build/test/tests/graph_coordinator_property_test
//       --gtest_filter='CoordinatorProperty.<Name>'
// (add "noshrink=1" to RC_PARAMS to see the original sequence). The failure text also
// carries the exact command trace (times and commands) that reproduces it by hand.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "graph/invariants.h"
#include "lockgraph/graph/coordinator.h"

namespace lockgraph::graph {
namespace {

using testing::Harness;
using testing::HarnessOptions;
using testing::Snapshot;

constexpr int kSessions = 3;
constexpr int kOwners = 3;
constexpr std::uint32_t kMaxName = 32;
// "imm" hands revoked leases over at once; "g" after 50 ms; the rest after 1 s.
const char* const kResources[] = {"a:1", "a:2", "imm:1", "g:1", "b"};
constexpr std::int64_t kWaitMs[] = {-1, 0, 5, 50, 500, 3000};
constexpr std::int64_t kTtlMs[] = {100, 1000, 5000, 30'000};
constexpr std::int64_t kAdvanceMs[] = {0, 1, 10, 100, 1000, 2500};
constexpr std::int64_t kSessionTtlMs = 2000;

enum class OpKind : int {
  kAcquire,
  kRelease,        // by lease id
  kReleaseByName,  // owner + resource (report mode)
  kHold,
  kWait,
  kUnwait,
  kRenew,
  kHeartbeat,
  kBye,
  kHello,  // reopens a closed session
  kTick,
};
const char* const kOpNames[] = {"acquire", "release", "release-by-name", "hold",
                                "wait",    "unwait",  "renew",           "heartbeat",
                                "bye",     "hello",   "tick"};

enum class Bad : int {
  kNone,
  kUnknownSession,
  kWrongSecret,
  kEmptyOwner,
  kEmptyResource,
  kLongName,
  kBadMode,
  kBadTtl,
  kBadWait,
  kNoLease,
  kOtherLease,
};
const char* const kBadNames[] = {"",          "unknown-session", "wrong-secret", "empty-owner",
                                 "empty-res", "long-name",       "bad-mode",     "bad-ttl",
                                 "bad-wait",  "no-lease",        "other-lease"};

struct Op {
  OpKind kind = OpKind::kTick;
  int session = 0;
  int owner = 0;
  int resource = 0;
  bool exclusive = true;
  int wait = 0;     // index into kWaitMs
  int ttl = 0;      // index into kTtlMs
  int advance = 0;  // index into kAdvanceMs: the clock moves before the op
  int pick = 0;     // chooses a lease among the candidates
  Bad bad = Bad::kNone;
  bool pre_tick = true;  // a Tick at the same `now` first
  bool pass_started = false;
};

void showValue(const Op& op, std::ostream& os) {
  os << "+" << kAdvanceMs[op.advance] << "ms " << (op.pre_tick ? "" : "(no tick) ")
     << kOpNames[static_cast<int>(op.kind)] << " s" << op.session << "/o" << op.owner << " "
     << kResources[op.resource] << " " << (op.exclusive ? "X" : "S")
     << " wait=" << kWaitMs[op.wait] << " ttl=" << kTtlMs[op.ttl] << " pick=" << op.pick;
  if (op.pass_started) os << " started";
  if (op.bad != Bad::kNone) os << " BAD:" << kBadNames[static_cast<int>(op.bad)];
}

rc::Gen<Bad> GenBad(int bad_percent) {
  return rc::gen::weightedOneOf<Bad>(
      {{static_cast<std::size_t>(100 - bad_percent), rc::gen::just(Bad::kNone)},
       {static_cast<std::size_t>(bad_percent),
        rc::gen::element(Bad::kUnknownSession, Bad::kWrongSecret, Bad::kEmptyOwner,
                         Bad::kEmptyResource, Bad::kLongName, Bad::kBadMode, Bad::kBadTtl,
                         Bad::kBadWait, Bad::kNoLease, Bad::kOtherLease)}});
}

rc::Gen<Op> GenOp(rc::Gen<OpKind> kind, int bad_percent, int pre_tick_percent) {
  return rc::gen::build<Op>(
      rc::gen::set(&Op::kind, std::move(kind)),
      rc::gen::set(&Op::session, rc::gen::inRange(0, kSessions)),
      rc::gen::set(&Op::owner, rc::gen::inRange(0, kOwners)),
      rc::gen::set(&Op::resource, rc::gen::weightedElement<int>({{3, 0}, {3, 1}, {2, 2},
                                                                 {2, 3}, {1, 4}})),
      rc::gen::set(&Op::exclusive, rc::gen::arbitrary<bool>()),
      rc::gen::set(&Op::wait,
                   rc::gen::weightedElement<int>({{5, 0}, {1, 1}, {1, 2}, {1, 3}, {1, 4}, {2, 5}})),
      rc::gen::set(&Op::ttl, rc::gen::weightedElement<int>({{1, 0}, {2, 1}, {3, 2}, {3, 3}})),
      rc::gen::set(&Op::advance,
                   rc::gen::weightedElement<int>({{40, 0}, {8, 1}, {8, 2}, {6, 3}, {3, 4}, {1, 5}})),
      rc::gen::set(&Op::pick, rc::gen::inRange(0, 8)),
      rc::gen::set(&Op::bad, GenBad(bad_percent)),
      rc::gen::set(&Op::pre_tick, rc::gen::map(rc::gen::inRange(0, 100), [=](int x) {
                     return x < pre_tick_percent;
                   })),
      rc::gen::set(&Op::pass_started, rc::gen::arbitrary<bool>()));
}

// Arbitrate mode: the daemon is the lock manager.
rc::Gen<OpKind> GenArbitrateKind() {
  return rc::gen::weightedElement<OpKind>({{50, OpKind::kAcquire},
                                           {12, OpKind::kRelease},
                                           {8, OpKind::kUnwait},
                                           {8, OpKind::kHeartbeat},
                                           {2, OpKind::kBye},
                                           {4, OpKind::kHello},
                                           {10, OpKind::kTick}});
}

// Both modes on one graph.
rc::Gen<OpKind> GenMixedKind() {
  return rc::gen::weightedElement<OpKind>({{25, OpKind::kAcquire},
                                           {12, OpKind::kRelease},
                                           {8, OpKind::kReleaseByName},
                                           {15, OpKind::kHold},
                                           {15, OpKind::kWait},
                                           {8, OpKind::kUnwait},
                                           {4, OpKind::kRenew},
                                           {6, OpKind::kHeartbeat},
                                           {2, OpKind::kBye},
                                           {4, OpKind::kHello},
                                           {8, OpKind::kTick}});
}

Config MakeConfig(TimeUs confirm_us) {
  Config c;
  c.max_name_bytes = kMaxName;
  c.confirm_us = confirm_us;
  c.classes["imm"].revoke_immediate = true;
  c.classes["g"].revoke_grace_us = 50'000;
  return c;
}

// Runs ops against a Harness and checks each reply's code against what the contract
// says for that command.
class Run {
 public:
  Run(Config config, HarnessOptions options, const std::vector<int>& priorities,
      std::uint32_t epoch = 1, std::uint64_t first_seq = 1)
      : harness_(std::move(config), options, epoch, first_seq), priorities_(priorities) {
    for (int s = 0; s < kSessions; ++s) Open(s);
  }

  Harness& harness() { return harness_; }

  void Step(const Op& op) {
    now_ += kAdvanceMs[op.advance] * 1000;
    // The caller persists the epoch the core asked for, sooner or later.
    if (need_epoch_ && op.pick % 2 == 0) {
      Effects fx = Do(SetEpoch{*need_epoch_});
      if (!fx.reply.ok()) harness_.Fail("SetEpoch refused: " + fx.reply.message);
      need_epoch_.reset();
    }
    if (op.kind == OpKind::kTick) {
      Do(Tick{});
      return;
    }
    // A Hello only makes sense for a closed session: find out after the time advance.
    bool pre_tick = op.pre_tick || op.kind == OpKind::kHello;
    if (pre_tick) Do(Tick{});
    const bool exhausted = harness_.tokens_exhausted();
    const Snapshot& before = harness_.last();
    const std::string session = SessionName(op.session);
    bool live = std::find(before.sessions.begin(), before.sessions.end(), session) !=
                before.sessions.end();
    if (op.kind == OpKind::kHello) {
      if (!live) Open(op.session);
      return;
    }

    Auth auth{session, secrets_[op.session]};
    Bad bad = op.bad;
    if (bad == Bad::kUnknownSession) auth.session = "nosuch";
    if (bad == Bad::kWrongSecret) auth.secret = "wrong";
    std::string owner = "o" + std::to_string(op.owner);
    std::string resource = kResources[op.resource];
    Mode mode = op.exclusive ? Mode::kExclusive : Mode::kShared;
    std::int64_t ttl_ms = kTtlMs[op.ttl];
    std::int64_t wait_ms = kWaitMs[op.wait];
    std::vector<Code> expect;  // empty: any code
    std::vector<Code> bad_expect;
    bool bad_used = false;
    auto use_bad = [&](Bad b, std::vector<Code> codes) {
      if (bad == b) {
        bad_used = true;
        bad_expect = std::move(codes);
      }
    };
    auto names = [&] {
      use_bad(Bad::kEmptyOwner, {Code::kBadRequest});
      use_bad(Bad::kEmptyResource, {Code::kBadRequest});
      use_bad(Bad::kLongName, {Code::kLimit});
      if (bad == Bad::kEmptyOwner) owner.clear();
      if (bad == Bad::kEmptyResource) resource.clear();
      if (bad == Bad::kLongName) resource = "a:" + std::string(kMaxName - 1, 'x');
    };
    auto bad_mode = [&] {
      use_bad(Bad::kBadMode, {Code::kBadRequest});
      if (bad == Bad::kBadMode) mode = static_cast<Mode>(2 + op.pick % 5);
    };
    auto bad_ttl = [&](std::int64_t& ttl) {
      if (bad != Bad::kBadTtl) return;
      if (op.pick % 2 == 0) {
        use_bad(Bad::kBadTtl, {Code::kBadRequest});
        ttl = op.pick % 4 == 0 ? 0 : -7;
      } else {
        use_bad(Bad::kBadTtl, {Code::kBadRequest, Code::kLimit});
        ttl = harness_.config().max_ttl_ms + 1;
      }
    };
    // A lease for release/renew: one of this session's, or for the bad variants none
    // or another session's.
    std::optional<LeaseInfo> target;
    auto pick_lease = [&]() -> LeaseId {
      std::vector<const LeaseInfo*> mine, others;
      for (const LeaseInfo& l : before.leases)
        (l.session == session ? mine : others).push_back(&l);
      if (bad == Bad::kNoLease) {
        use_bad(Bad::kNoLease, {Code::kNotOwner});
        return 987'654'321;
      }
      if (bad == Bad::kOtherLease && !others.empty()) {
        use_bad(Bad::kOtherLease, {Code::kNotOwner});
        return others[op.pick % others.size()]->lease;
      }
      if (mine.empty()) {
        expect = {Code::kNotOwner};
        return 987'654'321;
      }
      target = *mine[op.pick % mine.size()];
      return target->lease;
    };

    Command command = Tick{};
    switch (op.kind) {
      case OpKind::kAcquire: {
        names();
        bad_mode();
        bad_ttl(ttl_ms);
        use_bad(Bad::kBadWait, {Code::kBadRequest});
        if (bad == Bad::kBadWait) wait_ms = -2 - op.pick;
        Acquire a;
        a.auth = auth;
        a.request_id = ++next_request_[op.session];
        a.owner = owner;
        a.resource = resource;
        a.mode = mode;
        a.ttl_ms = ttl_ms;
        a.wait_ms = wait_ms;
        a.site = "prop.cc:" + std::to_string(op.resource);
        auto st = started_.find(testing::OwnerKey(session, owner));
        if (op.pass_started && st != started_.end()) a.started = st->second;
        if (wait_ms == 0)
          expect = {Code::kOk, Code::kTimeout};
        else
          expect = {Code::kOk, Code::kDeadlock};
        // An owner that already waits for the resource is refused (docs/core.md does
        // not say how; the state must not change either way).
        for (const WaitInfo& w : before.waits)
          if (w.session == session && w.owner == owner && w.resource == resource)
            expect.push_back(Code::kBadRequest);
        // So is an owner whose lease on it was revoked and not yet released.
        for (const LeaseInfo& l : before.leases)
          if (l.session == session && l.owner == owner && l.resource == resource && l.revoked)
            expect.push_back(Code::kBadRequest);
        command = std::move(a);
        break;
      }
      case OpKind::kRelease: {
        Release r;
        r.auth = auth;
        expect = {Code::kOk};
        r.lease = pick_lease();
        command = std::move(r);
        break;
      }
      case OpKind::kReleaseByName: {
        Release r;
        r.auth = auth;
        r.owner = owner;
        r.resource = resource;
        bool holds = false;
        for (const LeaseInfo& l : before.leases)
          holds |= l.session == session && l.owner == owner && l.resource == resource;
        expect = {holds ? Code::kOk : Code::kNotOwner};
        command = std::move(r);
        break;
      }
      case OpKind::kHold: {
        names();
        bad_mode();
        bad_ttl(ttl_ms);
        Hold h;
        h.auth = auth;
        h.owner = owner;
        h.resource = resource;
        h.mode = mode;
        h.ttl_ms = ttl_ms;
        h.site = "hold.cc:" + std::to_string(op.resource);
        expect = {Code::kOk};
        // Reporting X over the owner's own granted S is refused: an upgrade of a
        // granted lease goes through acquire.
        for (const LeaseInfo& l : before.leases)
          if (l.session == session && l.owner == owner && l.resource == resource && !l.reported &&
              l.mode == Mode::kShared && mode == Mode::kExclusive)
            expect = {Code::kBadRequest};
        command = std::move(h);
        break;
      }
      case OpKind::kWait: {
        names();
        bad_mode();
        Wait w;
        w.auth = auth;
        w.owner = owner;
        w.resource = resource;
        w.mode = mode;
        w.site = "wait.cc:" + std::to_string(op.resource);
        expect = {Code::kOk, Code::kDeadlock};
        // Already waiting for it in another mode, or by a queued acquire: refused (not
        // specified by docs/core.md; a re-sent identical report must be accepted).
        for (const WaitInfo& x : before.waits)
          if (x.session == session && x.owner == owner && x.resource == resource &&
              (!x.reported || x.mode != mode))
            expect.push_back(Code::kBadRequest);
        command = std::move(w);
        break;
      }
      case OpKind::kUnwait: {
        names();
        Unwait u;
        u.auth = auth;
        u.owner = owner;
        u.resource = resource;
        expect = {Code::kOk};
        command = std::move(u);
        break;
      }
      case OpKind::kRenew: {
        Renew r;
        r.auth = auth;
        expect = {Code::kOk};
        r.lease = pick_lease();
        if (op.ttl % 2 == 1 || bad == Bad::kBadTtl) {
          std::int64_t t = ttl_ms;
          bad_ttl(t);
          r.ttl_ms = t;
        }
        // Renewing a revoked lease: the contract does not say.
        if (target && target->revoked) expect.clear();
        // A bad TTL for a lease that is not there: docs/core.md lists field checks
        // before NOT_OWNER, the implementation answers NOT_OWNER. Both are accepted.
        if (bad == Bad::kBadTtl && !target && bad_used) bad_expect.push_back(Code::kNotOwner);
        command = std::move(r);
        break;
      }
      case OpKind::kHeartbeat:
        command = Heartbeat{auth};
        expect = {Code::kOk};
        break;
      case OpKind::kBye:
        command = Bye{auth};
        expect = {Code::kOk};
        break;
      case OpKind::kHello:
      case OpKind::kTick:
        return;
    }
    if (bad == Bad::kUnknownSession || !live) {
      expect = {Code::kUnknownSession};
    } else if (bad == Bad::kWrongSecret) {
      expect = {Code::kAuth};
    } else if (bad_used) {
      expect = bad_expect;
    }

    // Out of fencing tokens (before SetEpoch), a grant is refused with INTERNAL.
    if (exhausted && (op.kind == OpKind::kAcquire || op.kind == OpKind::kHold))
      expect.push_back(Code::kInternal);
    Effects fx = Do(command);
    if (pre_tick && !expect.empty() &&
        std::find(expect.begin(), expect.end(), fx.reply.code) == expect.end()) {
      std::string want;
      for (Code c : expect) want += std::string(want.empty() ? "" : " or ") + std::string(CodeName(c));
      harness_.Fail("reply " + std::string(CodeName(fx.reply.code)) + " (" + fx.reply.message +
                    "), expected " + want + " for " + testing::Describe(command));
    }
    if (const auto* a = std::get_if<Acquire>(&command); a && fx.reply.started)
      started_[testing::OwnerKey(a->auth.session, a->owner)] = *fx.reply.started;
  }

 private:
  static std::string SessionName(int s) { return "s" + std::to_string(s); }

  void Open(int s) {
    Hello h;
    h.session = SessionName(s);
    h.secret = "k" + std::to_string(s) + "." + std::to_string(++hellos_);
    h.client = "prop";
    h.ttl_ms = kSessionTtlMs;
    h.priority = priorities_[s];
    secrets_[s] = h.secret;
    Effects fx = Do(h);
    if (!fx.reply.ok())
      harness_.Fail("Hello of a closed session failed: " + std::string(CodeName(fx.reply.code)));
    // A reopened session has new owners: their ages start again.
    for (auto it = started_.begin(); it != started_.end();)
      it = it->first.rfind(h.session + "/", 0) == 0 ? started_.erase(it) : std::next(it);
  }

  Effects Do(const Command& command) {
    Effects fx = harness_.Apply(command, now_);
    for (const Event& e : fx.events)
      if (const auto* n = std::get_if<NeedEpochEvent>(&e)) need_epoch_ = n->next_epoch;
    return fx;
  }

  Harness harness_;
  std::optional<std::uint32_t> need_epoch_;
  std::vector<int> priorities_;
  TimeUs now_ = 1'000'000;
  int hellos_ = 0;
  std::map<int, std::string> secrets_;
  std::map<int, std::uint64_t> next_request_;
  std::map<std::string, TimeUs> started_;
};

// Runs the ops, stopping at the first problem with the harness's report.
void RunOps(Run& run, const std::vector<Op>& ops) {
  for (const Op& op : ops) {
    run.Step(op);
    if (run.harness().failed()) RC_FAIL(run.harness().failure());
  }
  RC_TAG(run.harness().deadlocks_seen() > 0 ? "victims chosen" : "no victim");
}

RC_GTEST_PROP(CoordinatorProperty, ArbitrateModeKeepsExclusionAndNoCycles, ()) {
  TimeUs confirm_us = *rc::gen::element<TimeUs>(0, 10'000);
  auto priorities =
      *rc::gen::container<std::vector<int>>(kSessions, rc::gen::inRange(0, 2));
  auto ops = *rc::gen::scale(2.0, rc::gen::container<std::vector<Op>>(
                                      GenOp(GenArbitrateKind(), /*bad_percent=*/8,
                                            /*pre_tick_percent=*/75)));
  HarnessOptions options;
  options.arbitrate_only = true;
  Run run(MakeConfig(confirm_us), options, priorities);
  RunOps(run, ops);
}

RC_GTEST_PROP(CoordinatorProperty, MixedModeKeepsInvariants, ()) {
  TimeUs confirm_us = *rc::gen::element<TimeUs>(0, 10'000);
  auto priorities =
      *rc::gen::container<std::vector<int>>(kSessions, rc::gen::inRange(0, 2));
  auto ops = *rc::gen::scale(2.0, rc::gen::container<std::vector<Op>>(
                                      GenOp(GenMixedKind(), /*bad_percent=*/8,
                                            /*pre_tick_percent=*/75)));
  Run run(MakeConfig(confirm_us), HarnessOptions{}, priorities);
  RunOps(run, ops);
}

// Half of the commands are bad; every command is preceded by a Tick at the same time,
// so each error reply is checked against the exact state before it.
RC_GTEST_PROP(CoordinatorProperty, ErrorsChangeNothing, ()) {
  auto priorities =
      *rc::gen::container<std::vector<int>>(kSessions, rc::gen::inRange(0, 2));
  auto ops = *rc::gen::scale(2.0, rc::gen::container<std::vector<Op>>(GenOp(
                                      GenMixedKind(), /*bad_percent=*/50,
                                      /*pre_tick_percent=*/100)));
  Run run(MakeConfig(10'000), HarnessOptions{}, priorities);
  RunOps(run, ops);
}

// Near the end of an epoch's sequence numbers: the core asks for the next epoch
// (NeedEpoch), refuses grants with INTERNAL once none is left, and after SetEpoch
// continues in the new epoch; tokens strictly increase throughout.
RC_GTEST_PROP(CoordinatorProperty, EpochRolloverKeepsTokensIncreasing, ()) {
  auto priorities =
      *rc::gen::container<std::vector<int>>(kSessions, rc::gen::inRange(0, 2));
  auto ops = *rc::gen::scale(2.0, rc::gen::container<std::vector<Op>>(
                                      GenOp(GenMixedKind(), /*bad_percent=*/5,
                                            /*pre_tick_percent=*/75)));
  Config config = MakeConfig(10'000);
  config.epoch_low_water = 8;
  Run run(config, HarnessOptions{}, priorities, /*epoch=*/7, /*first_seq=*/kSeqLimit - 24);
  RunOps(run, ops);
  RC_TAG(run.harness().coordinator().epoch() > 7 ? "rolled over" : "same epoch");
}

// ---------------------------------------------------------------- fixed scenarios

// The harness sees and accepts a plain AB-BA deadlock: one victim, denied, revoked.
TEST(CoordinatorProperty, HarnessAcceptsAbBaDeadlock) {
  Harness h(MakeConfig(10'000), HarnessOptions{.arbitrate_only = true});
  TimeUs now = 1'000'000;
  for (const char* s : {"a", "b"}) {
    Hello hello;
    hello.session = s;
    hello.secret = "k";
    h.Apply(hello, now);
  }
  auto acquire = [&](const char* s, const char* r, std::uint64_t id) {
    Acquire a;
    a.auth = {s, "k"};
    a.request_id = id;
    a.owner = "t";
    a.resource = r;
    a.wait_ms = -1;
    return h.Apply(a, ++now);
  };
  EXPECT_TRUE(acquire("a", "a:1", 1).reply.granted);
  EXPECT_TRUE(acquire("b", "a:2", 1).reply.granted);
  EXPECT_TRUE(acquire("a", "a:2", 2).reply.queued);
  Effects fx = acquire("b", "a:1", 2);
  ASSERT_FALSE(h.failed()) << h.failure();
  EXPECT_EQ(h.deadlocks_seen(), 1u) << testing::Describe(fx);
  // The cycle is gone: its victim's wait was denied.
  EXPECT_TRUE(h.coordinator().AuditCycles().empty());
  // Release everything; whoever waits is granted.
  for (const LeaseInfo& l : h.last().leases) {
    Release r;
    r.auth = {l.session, "k"};
    r.lease = l.lease;
    h.Apply(r, ++now);
  }
  h.Apply(Tick{}, now + 5'000'000);
  EXPECT_FALSE(h.failed()) << h.failure();
}

// The pure checks can fail: each is fed a state that breaks it.
TEST(Invariants, CatchPlantedViolations) {
  Config config = MakeConfig(0);
  Snapshot s;
  s.now = 100;
  s.sessions = {"a", "b"};
  LeaseInfo x1;
  x1.lease = x1.token = 1;
  x1.session = "a";
  x1.owner = "t";
  x1.resource = "r";
  x1.expires_at_us = 1000;
  LeaseInfo x2 = x1;
  x2.lease = x2.token = 2;
  x2.session = "b";
  s.leases = {x1, x2};
  EXPECT_FALSE(testing::ExclusionProblems(s, config).empty());
  // Revoked with a handover in the past: passed, no longer a holder.
  s.leases[0].revoked = true;
  s.leases[0].handover_at_us = 50;
  EXPECT_TRUE(testing::ExclusionProblems(s, config).empty());
  s.leases[0].handover_at_us = 500;
  EXPECT_FALSE(testing::ExclusionProblems(s, config).empty());

  // A waiter behind a holder needs a hard edge; an unblocked head must be granted.
  Snapshot w;
  w.now = 100;
  w.leases = {x1};
  WaitInfo wi;
  wi.session = "b";
  wi.owner = "t";
  wi.resource = "r";
  wi.request_id = 1;
  w.waits = {wi};
  EXPECT_FALSE(testing::EdgeProblems(w, config).empty());  // edge missing
  w.edges = {OwnerEdge{"b/t", "a/t", /*hard=*/true, /*soft=*/false}};
  EXPECT_TRUE(testing::EdgeProblems(w, config).empty());
  EXPECT_TRUE(testing::QueueHeadProblems(w, config).empty());
  w.leases.clear();
  EXPECT_FALSE(testing::EdgeProblems(w, config).empty());  // edge without a hold
  EXPECT_FALSE(testing::QueueHeadProblems(w, config).empty());

  EXPECT_TRUE(testing::SnapshotDiff(s, s).empty());
  EXPECT_FALSE(testing::SnapshotDiff(s, w).empty());
}

}  // namespace
}  // namespace lockgraph::graph
