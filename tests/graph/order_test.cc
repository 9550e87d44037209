// Tests of lock ordering (order.h, order_rules.h): Linux lockdep's self-test patterns
// (lib/locking-selftest.c) offline through TraceChecker and live through a
// Coordinator, declared rules in warn and enforce mode, the JSON and text reports,
// the [ordering] TOML table, and exporting and restoring the learned order.
//
// A scenario is a trace of TraceOps. `Offline` feeds it to a TraceChecker; `Live`
// sends the protocol request each op stands for to a Coordinator (hello first) and
// collects the OrderReportEvents. Reports are compared as short strings: an
// inversion as the cycle of classes it closes, rotated to start at the smallest
// ("inversion A -> B -> C -> A"), a rule as "rank order->account" (plus " denied").
// Time is an argument (1 ms per op); nothing sleeps.
#include "lockgraph/graph/order.h"
#include "graph/order_text.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "graph/invariants.h"
#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/order_rules.h"

namespace lockgraph::graph {
namespace {

using Reports = std::vector<std::shared_ptr<const OrderReport>>;
using Kind = TraceOp::Kind;
constexpr std::int64_t kLongMs = 3'600'000;

// ---------------------------------------------------------------- rendering

// The cycle of classes an inversion closes: its new edge from -> to plus the chain
// to -> ... -> from, rotated to start at the smallest class: "A -> B -> A".
std::string Cycle(const OrderReport& r) {
  std::vector<std::string> nodes{r.to};
  for (const OrderEdge& e : r.chain) {
    if (e.from != nodes.back()) return "(chain broken at " + e.from + " -> " + e.to + ")";
    nodes.push_back(e.to);
  }
  if (nodes.back() != r.from) return "(chain ends at " + nodes.back() + ", not at " + r.from + ")";
  std::rotate(nodes.begin(), std::min_element(nodes.begin(), nodes.end()), nodes.end());
  std::string out;
  for (const std::string& n : nodes) out += n + " -> ";
  return out + nodes.front();
}

std::string Describe(const OrderReport& r) {
  std::string out(OrderKindName(r.kind));
  out += r.kind == OrderKind::kInversion ? " " + Cycle(r) : " " + r.from + "->" + r.to;
  return r.denied ? out + " denied" : out;
}

std::string Describe(const Reports& reports) {
  std::string out;
  for (const auto& r : reports) out += (out.empty() ? "" : "; ") + (r ? Describe(*r) : "null");
  return out;
}

// "A->B x2, B->A x1 inversion" in first-seen order.
std::string LearnedText(const OrderChecker& c) {
  std::string out;
  for (const OrderEdge& e : c.Learned()) {
    out += (out.empty() ? "" : ", ") + e.from + "->" + e.to + " x" + std::to_string(e.count) +
           (e.inversion ? " inversion" : "");
  }
  return out;
}

using testing::StatsText;

// Each distinct report with its count: "rank order->account x2".
std::string ReportsText(const OrderChecker& c) {
  std::string out;
  for (const auto& [r, n] : c.Reports()) out += (out.empty() ? "" : "; ") + Describe(*r) + " x" + std::to_string(n);
  return out;
}

// ---------------------------------------------------------------- traces

TraceOp Op(Kind kind, const std::string& owner, const std::string& resource, std::int64_t wait_ms = -1,
           std::string site = "", std::string session = "s") {
  TraceOp op;
  op.kind = kind;
  op.session = std::move(session);
  op.owner = owner;
  op.resource = resource;
  op.wait_ms = wait_ms;
  op.site = site.empty() ? owner + "@" + resource : std::move(site);
  return op;
}
TraceOp Acq(const std::string& o, const std::string& r, std::int64_t wait_ms = -1, std::string site = "") {
  return Op(Kind::kAcquire, o, r, wait_ms, std::move(site));
}
TraceOp Hold(const std::string& o, const std::string& r, std::string site = "") {
  return Op(Kind::kHold, o, r, -1, std::move(site));
}
TraceOp Wait(const std::string& o, const std::string& r, std::string site = "") {
  return Op(Kind::kWait, o, r, -1, std::move(site));
}
TraceOp Rel(const std::string& o, const std::string& r) { return Op(Kind::kRelease, o, r); }
TraceOp Unwait(const std::string& o, const std::string& r) { return Op(Kind::kUnwait, o, r); }

std::vector<TraceOp> Cat(std::vector<TraceOp> a, const std::vector<TraceOp>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Somewhere to run a trace: a TraceChecker, or a Coordinator.
class Backend {
 public:
  virtual ~Backend() = default;
  // Runs the ops; returns the reports made for the first time.
  virtual Reports Run(const std::vector<TraceOp>& ops) = 0;
  virtual const OrderChecker& checker() const = 0;
  virtual OrderChecker& mutable_checker() = 0;
};

class Offline : public Backend {
 public:
  explicit Offline(OrderRules rules = {}) : trace_(std::move(rules)) {}
  OrderChecker& mutable_checker() override { return trace_.checker(); }
  Reports Run(const std::vector<TraceOp>& ops) override {
    Reports made;
    for (const TraceOp& op : ops) {
      for (auto& r : trace_.Apply(op, now_ += 1000)) made.push_back(std::move(r));
    }
    return made;
  }
  const OrderChecker& checker() const override { return trace_.checker(); }

 private:
  TraceChecker trace_;
  TimeUs now_ = 0;
};

class Live : public Backend {
 public:
  Live() : Live(With(OrderRules())) {}
  explicit Live(Config config) : coord_(std::move(config), 1) {}
  static Config With(OrderRules rules) {
    Config c;
    c.order = std::move(rules);
    return c;
  }

  Coordinator& coord() { return coord_; }
  const OrderChecker& checker() const override { return coord_.order(); }
  OrderChecker& mutable_checker() override { return coord_.order(); }
  TimeUs now() const { return now_; }

  Effects Do(const Command& command) {
    Effects fx = coord_.Apply(command, now_ += 1000);
    EXPECT_EQ(coord_.CheckInvariants(), "") << testing::Describe(command);
    return fx;
  }
  // The protocol request a trace op stands for; opens its session on first use.
  Effects Apply(const TraceOp& op) {
    if (!sessions_.count(op.session)) {
      Hello h{op.session, op.session + "-secret", "order_test", kLongMs, 0};
      EXPECT_TRUE(Do(h).reply.ok());
      sessions_.insert(op.session);
    }
    return Do(testing::CommandOf(op, kLongMs));
  }
  static Reports Events(const Effects& fx) {
    Reports out;
    for (const Event& e : fx.events) {
      if (auto* o = std::get_if<OrderReportEvent>(&e)) out.push_back(o->report);
    }
    return out;
  }
  // Every request is expected to succeed (granted, or queued) or to be refused with
  // ORDER_VIOLATION, the reply carrying the report.
  Reports Run(const std::vector<TraceOp>& ops) override {
    Reports made;
    for (const TraceOp& op : ops) {
      Effects fx = Apply(op);
      if (fx.reply.code == Code::kOrderViolation) {
        EXPECT_TRUE(fx.reply.order && fx.reply.order->denied) << testing::Describe(fx);
      } else {
        EXPECT_TRUE(fx.reply.ok()) << testing::Describe(fx);
      }
      for (auto& r : Events(fx)) made.push_back(std::move(r));
    }
    return made;
  }

 private:
  Coordinator coord_;
  std::set<std::string> sessions_;
  TimeUs now_ = 0;
};

// ---------------------------------------------------------------- lockdep's patterns

// LOCK_UNLOCK_2(X, Y) pairs, each by its own owner: "AB" is A then B nested.
struct Pattern {
  const char* name;
  std::vector<std::string> pairs;
  const char* cycle;  // the classes of the one report
};

void PrintTo(const Pattern& p, std::ostream* os) { *os << p.name; }

const Pattern kPatterns[] = {
    {"AA", {"AA"}, "A -> A"},
    {"ABBA", {"AB", "BA"}, "A -> B -> A"},
    {"ABBCCA", {"AB", "BC", "CA"}, "A -> B -> C -> A"},
    {"ABCABC", {"AB", "CA", "BC"}, "A -> B -> C -> A"},
    {"ABBCCDDA", {"AB", "BC", "CD", "DA"}, "A -> B -> C -> D -> A"},
    {"ABCDBDDA", {"AB", "CD", "BD", "DA"}, "A -> B -> D -> A"},
    {"ABCDBCDA", {"AB", "CD", "BC", "DA"}, "A -> B -> C -> D -> A"},
};

enum class Style { kAcquire, kReport };  // acquire/release, or hold/wait/hold/release
void PrintTo(Style s, std::ostream* os) { *os << (s == Style::kAcquire ? "acquire" : "report"); }

// Owner `o` acquires the resources in order, then releases them newest first.
std::vector<TraceOp> Nested(const std::string& o, const std::vector<std::string>& resources) {
  std::vector<TraceOp> ops;
  for (const std::string& r : resources) ops.push_back(Acq(o, r));
  for (auto r = resources.rbegin(); r != resources.rend(); ++r) ops.push_back(Rel(o, *r));
  return ops;
}

// The pair XY by owner `o`: X:1 then Y:2 (two resources, also when X == Y).
std::vector<TraceOp> Pair(const std::string& o, char x, char y, Style style) {
  const std::string a = std::string(1, x) + ":1", b = std::string(1, y) + ":2";
  if (style == Style::kAcquire) return Nested(o, {a, b});
  return {Hold(o, a), Wait(o, b), Hold(o, b), Rel(o, b), Rel(o, a)};
}

std::vector<TraceOp> PatternTrace(const Pattern& p, Style style) {
  std::vector<TraceOp> ops;
  for (std::size_t i = 0; i < p.pairs.size(); ++i) {
    ops = Cat(std::move(ops), Pair("o" + std::to_string(i), p.pairs[i][0], p.pairs[i][1], style));
  }
  return ops;
}

std::unique_ptr<Backend> Make(bool live, OrderRules rules = {}) {
  if (live) return std::make_unique<Live>(Live::With(std::move(rules)));
  return std::make_unique<Offline>(std::move(rules));
}

class LockdepPatternTest : public ::testing::TestWithParam<std::tuple<Pattern, bool, Style>> {};

TEST_P(LockdepPatternTest, FlaggedOnceWithItsCycle) {
  const auto& [pattern, live, style] = GetParam();
  auto backend = Make(live);
  const Reports first = backend->Run(PatternTrace(pattern, style));
  ASSERT_EQ(Describe(first), "inversion " + std::string(pattern.cycle));
  // The new edge is the last pair, asked for by its owner while holding its first lock.
  const std::string& last = pattern.pairs.back();
  EXPECT_EQ(first[0]->from, last.substr(0, 1));
  EXPECT_EQ(first[0]->to, last.substr(1, 1));
  EXPECT_EQ(first[0]->owner, "o" + std::to_string(pattern.pairs.size() - 1));
  EXPECT_EQ(first[0]->held_resource, last.substr(0, 1) + ":1");
  EXPECT_EQ(first[0]->resource, last.substr(1, 1) + ":2");
  EXPECT_FALSE(first[0]->denied);
  EXPECT_EQ(backend->checker().stats().inversions, 1u);
  EXPECT_EQ(backend->checker().stats().repeats, 0u);

  // The same again: nothing new, the inversion counted once more.
  EXPECT_EQ(Describe(backend->Run(PatternTrace(pattern, style))), "");
  const OrderStats& s = backend->checker().stats();
  EXPECT_EQ(s.reports, 1u);
  EXPECT_EQ(s.repeats, 1u);
  EXPECT_EQ(s.inversions, 1u);
  EXPECT_EQ(s.warnings, 2u);
  EXPECT_EQ(s.learned_edges, pattern.pairs.size());
  EXPECT_EQ(ReportsText(backend->checker()), "inversion " + std::string(pattern.cycle) + " x2");
}

INSTANTIATE_TEST_SUITE_P(Order, LockdepPatternTest,
                         ::testing::Combine(::testing::ValuesIn(kPatterns), ::testing::Bool(),
                                            ::testing::Values(Style::kAcquire, Style::kReport)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) ? "_Live" : "_Offline") +
                                  (std::get<2>(info.param) == Style::kAcquire ? "_Acquire" : "_Report");
                         });

class OrderBothTest : public ::testing::TestWithParam<bool> {};  // offline, live

TEST_P(OrderBothTest, ConsistentOrderIsNeverFlagged) {
  auto backend = Make(GetParam());
  // Three sessions of three owners each, each owner with its own resources (no
  // contention), five rounds of A->B, B->C, A->C in pairs, reported, and nested.
  for (int round = 0; round < 5; ++round) {
    for (int s = 0; s < 3; ++s) {
      for (int o = 0; o < 3; ++o) {
        const std::string w = "o" + std::to_string(o), k = ":" + std::to_string(s * 3 + o);
        const std::string a = "A" + k, b = "B" + k, c = "C" + k;
        std::vector<TraceOp> ops = {Acq(w, a), Acq(w, b), Rel(w, a), Acq(w, c),  Rel(w, b),  Rel(w, c),  Acq(w, a),
                                    Acq(w, c), Rel(w, c), Rel(w, a), Hold(w, a), Wait(w, b), Hold(w, b), Rel(w, a),
                                    Rel(w, b), Acq(w, a), Acq(w, b), Acq(w, c),  Rel(w, c),  Rel(w, b),  Rel(w, a)};
        for (TraceOp& op : ops) op.session = "s" + std::to_string(s);
        ASSERT_EQ(Describe(backend->Run(ops)), "") << "round " << round;
      }
    }
  }
  // 45 owner-rounds: A->B three times each (pair, wait, nested), B->C and A->C twice.
  EXPECT_EQ(LearnedText(backend->checker()), "A->B x135, B->C x90, A->C x90");
  EXPECT_EQ(StatsText(backend->checker().stats()),
            "checks=270 warnings=0 denied=0 reports=0 repeats=0 inversions=0 learned=3");
}

INSTANTIATE_TEST_SUITE_P(Order, OrderBothTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Live" : "Offline"; });

// ---------------------------------------------------------------- declared rules

// account (rank 10, keys ascending) before order (20) before cart (30).
OrderRules Shop(OrderMode mode) {
  OrderRules r;
  r.mode = mode;
  r.classes["account"].rank = 10;
  r.classes["account"].within = WithinRule::kAscending;
  r.classes["order"].rank = 20;
  r.classes["cart"].rank = 30;
  return r;
}

TEST(OrderLiveTest, AQueuedAcquireIsCheckedWhenItQueuesNotWhenGranted) {
  Live live;
  ASSERT_EQ(Describe(live.Run({Acq("o2", "B:9"), Acq("o2", "A:9"), Rel("o2", "A:9"), Rel("o2", "B:9"),
                               Op(Kind::kAcquire, "x", "B:1", -1, "", "other"), Acq("o", "A:1")})),
            "");
  const Effects queued = live.Apply(Acq("o", "B:1"));
  EXPECT_TRUE(queued.reply.queued);
  EXPECT_EQ(Describe(Live::Events(queued)), "inversion A -> B -> A");
  const Effects granted = live.Apply(Op(Kind::kRelease, "x", "B:1", -1, "", "other"));
  ASSERT_EQ(granted.events.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<GrantedEvent>(granted.events[0]));
  EXPECT_EQ(StatsText(live.checker().stats()),
            "checks=2 warnings=1 denied=0 reports=1 repeats=0 inversions=1 learned=2");
}

// Whether a broken rule is seen must not depend on contention: a try that breaks
// a rank and finds the resource busy is answered TIMEOUT and still reported.
TEST(OrderLiveTest, ABusyTryThatBreaksARuleIsReportedWithItsTimeout) {
  Live live(Live::With(Shop(OrderMode::kWarn)));
  ASSERT_EQ(Describe(live.Run({Op(Kind::kAcquire, "x", "account:1", -1, "", "other"), Acq("o", "order:1")})), "");
  const Effects busy = live.Apply(Acq("o", "account:1", /*wait_ms=*/0));
  EXPECT_EQ(busy.reply.code, Code::kTimeout);
  EXPECT_EQ(Describe(Live::Events(busy)), "rank order->account");
  EXPECT_EQ(live.checker().stats().learned_edges, 0u) << "a try learns no edge";
  EXPECT_EQ(live.checker().stats().warnings, 1u);
}

TEST_P(OrderBothTest, BrokenRankInWarnIsAllowedReportedOnceAndCounted) {
  auto backend = Make(GetParam(), Shop(OrderMode::kWarn));
  const Reports first = backend->Run({Acq("o", "order:1"), Acq("o", "account:1", -1, "pay.cc:7")});
  ASSERT_EQ(Describe(first), "rank order->account");
  EXPECT_EQ(first[0]->rule, "class 'account' (rank 10) must be taken before class 'order' (rank 20)");
  EXPECT_EQ(first[0]->site, "pay.cc:7");
  EXPECT_EQ(first[0]->held_resource, "order:1");
  EXPECT_EQ(Describe(backend->Run(
                {Rel("o", "account:1"), Rel("o", "order:1"), Acq("o2", "order:2"), Acq("o2", "account:2")})),
            "");
  EXPECT_EQ(ReportsText(backend->checker()), "rank order->account x2");
  EXPECT_EQ(StatsText(backend->checker().stats()),
            "checks=2 warnings=2 denied=0 reports=1 repeats=1 inversions=0 learned=1");
  // The right order is fine; so is nesting account keys in ascending order.
  auto fresh = Make(GetParam(), Shop(OrderMode::kWarn));
  EXPECT_EQ(
      Describe(fresh->Run({Acq("o3", "account:3"), Acq("o3", "account:4"), Acq("o3", "order:3"), Acq("o3", "cart:3")})),
      "");
  EXPECT_EQ(LearnedText(fresh->checker()), "account->order x1, account->cart x1, order->cart x1");
}

TEST_P(OrderBothTest, ARequestBreakingARuleWithManyLocksOfAClassIsOneOccurrence) {
  OrderRules rules = Shop(OrderMode::kWarn);
  rules.classes["order"].within = WithinRule::kAscending;
  auto backend = Make(GetParam(), rules);
  EXPECT_EQ(Describe(backend->Run({Acq("o", "order:1"), Acq("o", "order:2"), Acq("o", "account:1")})),
            "rank order->account");
  EXPECT_EQ(ReportsText(backend->checker()), "rank order->account x1");
  EXPECT_EQ(backend->checker().stats().warnings, 1u);
  EXPECT_EQ(backend->checker().stats().repeats, 0u);
}

TEST(OrderOfflineTest, EnforcedRuleIsRefusedOnceReportedThenCounted) {
  Offline off(Shop(OrderMode::kEnforce));
  EXPECT_EQ(Describe(off.Run({Acq("o", "order:1"), Acq("o", "account:1")})), "rank order->account denied");
  // Refused, so not held: the same request is checked (and refused) again.
  EXPECT_EQ(Describe(off.Run({Acq("o", "account:1")})), "");
  EXPECT_EQ(LearnedText(off.checker()), "");
  EXPECT_EQ(ReportsText(off.checker()), "rank order->account denied x2");
  EXPECT_EQ(StatsText(off.checker().stats()),
            "checks=2 warnings=0 denied=2 reports=1 repeats=1 inversions=0 learned=0");
}

TEST_P(OrderBothTest, EachRefusalReportsTheRuleItNames) {
  auto backend = Make(GetParam(), Shop(OrderMode::kEnforce));
  // Holding order and cart, account breaks two rules; the refusal names the first.
  EXPECT_EQ(Describe(backend->Run({Acq("o", "order:1"), Acq("o", "cart:1"), Acq("o", "account:1")})),
            "rank order->account denied");
  // The second rule, broken alone, is news and is reported.
  EXPECT_EQ(Describe(backend->Run({Rel("o", "order:1"), Acq("o", "account:1")})), "rank cart->account denied");
  EXPECT_EQ(backend->checker().stats().denied, 2u);
  EXPECT_EQ(backend->checker().stats().reports, 2u);
}

TEST(OrderLiveTest, EnforcedRefusalChangesNothing) {
  Live live(Live::With(Shop(OrderMode::kEnforce)));
  // Someone else holds account:1, so the refused request would otherwise have queued.
  ASSERT_EQ(Describe(live.Run({Acq("o", "order:1"), Op(Kind::kAcquire, "x", "account:1", -1, "", "other")})), "");
  const auto refuse = [&](const TraceOp& op, const std::string& want_report,
                          const std::string& rule_part) -> std::shared_ptr<const OrderReport> {
    SCOPED_TRACE(op.resource);
    const testing::Snapshot before = testing::Take(live.coord(), live.now());
    const std::string learned = LearnedText(live.checker());
    const OrderStats stats = live.checker().stats();
    const Effects fx = live.Apply(op);
    EXPECT_EQ(fx.reply.code, Code::kOrderViolation);
    EXPECT_NE(fx.reply.message.find(rule_part), std::string::npos) << fx.reply.message;
    if (!fx.reply.order) {
      ADD_FAILURE() << "no report in the reply";
      return nullptr;
    }
    EXPECT_TRUE(fx.reply.order->denied);
    EXPECT_EQ(fx.reply.order->resource, op.resource);
    EXPECT_NE(fx.reply.order->rule.find(rule_part), std::string::npos);
    EXPECT_EQ(Describe(Live::Events(fx)), want_report);
    EXPECT_EQ(testing::SnapshotDiff(before, testing::Take(live.coord(), live.now())), "");
    EXPECT_EQ(LearnedText(live.checker()), learned);
    EXPECT_EQ(live.checker().stats().denied, stats.denied + 1);
    EXPECT_EQ(live.coord().CheckInvariants(), "");
    return fx.reply.order;
  };
  const auto rank = refuse(Acq("o", "account:1"), "rank order->account denied",
                           "class 'account' (rank 10) must be taken before class 'order' (rank 20)");
  // Refused again: the reply carries the report (same id), no second event.
  const auto again = refuse(Acq("o", "account:1"), "", "rank 10");
  ASSERT_TRUE(rank && again);
  EXPECT_EQ(rank->id, again->id);
  // A within-class rule: keys compare as numbers, 9 < 10 < 11.
  ASSERT_EQ(Describe(live.Run({Acq("o2", "account:10")})), "");
  refuse(Acq("o2", "account:9"), "within account->account denied",
         "keys of class 'account' are taken in ascending order, but account:9 was asked for while holding "
         "account:10");
  EXPECT_EQ(Describe(live.Run({Acq("o2", "account:11")})), "");
  EXPECT_EQ(live.checker().stats().denied, 3u);
}

TEST(OrderKeysTest, NumbersCompareAsUnsignedIntegersTheRestBytewise) {
  EXPECT_LT(CompareKeys("9", "10"), 0);
  EXPECT_GT(CompareKeys("10", "9"), 0);
  EXPECT_EQ(CompareKeys("007", "7"), 0);
  EXPECT_LT(CompareKeys("18446744073709551614", "18446744073709551615"), 0);  // UINT64_MAX
  EXPECT_GT(CompareKeys("18446744073709551615", "9"), 0);
  EXPECT_LT(CompareKeys("10", "9x"), 0);   // not both numbers: bytewise
  EXPECT_LT(CompareKeys("+9", "10"), 0);   // a sign is not a number: bytewise, '+' < '1'
  EXPECT_GT(CompareKeys("-9", "-10"), 0);  // signed: not numbers, so bytewise ('9' > '1')
  EXPECT_GT(CompareKeys("b", "a"), 0);
  EXPECT_LT(CompareKeys("", "0"), 0);
  EXPECT_EQ(CompareKeys("abc", "abc"), 0);
}

struct WithinCase {
  WithinRule rule;
  const char* held;
  const char* asked;
  bool ok;
};

TEST(OrderRulesTest, WithinClassKeysInWarnAndEnforce) {
  const WithinCase cases[] = {
      {WithinRule::kAscending, "9", "10", true},   {WithinRule::kAscending, "10", "9", false},
      {WithinRule::kAscending, "a", "b", true},    {WithinRule::kAscending, "b", "a", false},
      {WithinRule::kAscending, "10", "9x", true},  {WithinRule::kAscending, "9x", "10", false},
      {WithinRule::kAscending, "7", "007", false}, {WithinRule::kDescending, "10", "9", true},
      {WithinRule::kDescending, "9", "10", false}, {WithinRule::kDescending, "b", "a", true},
      {WithinRule::kDescending, "a", "b", false},  {WithinRule::kDescending, "9x", "10", true},
  };
  for (const WithinCase& c : cases) {
    for (OrderMode mode : {OrderMode::kWarn, OrderMode::kEnforce}) {
      const std::string held = std::string("account:") + c.held, asked = std::string("account:") + c.asked;
      SCOPED_TRACE(std::string(WithinRuleName(c.rule)) + " " + held + " then " + asked + " in " +
                   std::string(OrderModeName(mode)));
      OrderRules rules;
      rules.mode = mode;
      rules.classes["account"].within = c.rule;
      Offline off(rules);
      const Reports got = off.Run({Acq("o", held), Acq("o", asked)});
      EXPECT_EQ(Describe(got), c.ok                       ? ""
                               : mode == OrderMode::kWarn ? "within account->account"
                                                          : "within account->account denied");
      if (!c.ok && got.size() == 1) {
        EXPECT_EQ(got[0]->rule, "keys of class 'account' are taken in " + std::string(WithinRuleName(c.rule)) +
                                    " order, but " + asked + " was asked for while holding " + held);
      }
      // The within-class rule governs nesting in its class: no learned edge, no AA.
      EXPECT_EQ(LearnedText(off.checker()), "");
    }
  }
}

TEST_P(OrderBothTest, ClassModeOverridesTheGlobalOne) {
  OrderRules rules = Shop(OrderMode::kEnforce);
  rules.classes["account"].mode = OrderMode::kWarn;
  auto backend = Make(GetParam(), rules);
  // The class asked for decides: account warns, order (the global enforce) refuses.
  EXPECT_EQ(Describe(backend->Run({Acq("o", "cart:1"), Acq("o", "account:1")})), "rank cart->account");
  EXPECT_EQ(Describe(backend->Run({Acq("o2", "cart:2"), Acq("o2", "order:2")})), "rank cart->order denied");

  // Globally off, enforced for account alone: account is refused while an order is
  // held, though order itself is not checked.
  OrderRules only_account = Shop(OrderMode::kOff);
  only_account.classes["account"].mode = OrderMode::kEnforce;
  auto second = Make(GetParam(), only_account);
  EXPECT_TRUE(second->checker().enabled());
  EXPECT_EQ(Describe(second->Run({Acq("o", "order:1"), Acq("o", "account:1")})), "rank order->account denied");
  EXPECT_EQ(Describe(second->Run({Acq("o2", "cart:2"), Acq("o2", "order:2"), Acq("o2", "cart:3")})), "");
  EXPECT_EQ(LearnedText(second->checker()), "");
}

TEST_P(OrderBothTest, ModeOffLearnsNothing) {
  OrderRules rules;
  rules.classes["cache"].mode = OrderMode::kOff;
  auto backend = Make(GetParam(), rules);
  EXPECT_EQ(Describe(backend->Run({Acq("o", "A:1"), Acq("o", "cache:1"), Acq("o", "B:1"), Acq("o", "cache:2"),
                                   Rel("o", "A:1"), Acq("o", "A:2")})),
            "inversion A -> B -> A");
  // Neither cache:1 -> cache:2 (AA) nor anything to or from cache is learned.
  EXPECT_EQ(LearnedText(backend->checker()), "A->B x1, B->A x1 inversion");

  OrderRules off;
  off.mode = OrderMode::kOff;
  auto quiet = Make(GetParam(), off);
  EXPECT_FALSE(quiet->checker().enabled());
  EXPECT_EQ(Describe(quiet->Run(PatternTrace(kPatterns[1], Style::kAcquire))), "");
  EXPECT_EQ(LearnedText(quiet->checker()), "");
  EXPECT_EQ(quiet->checker().stats().checks, 0u);
}

TEST_P(OrderBothTest, InReportModeEnforceActsAsWarn) {
  auto backend = Make(GetParam(), Shop(OrderMode::kEnforce));
  EXPECT_EQ(Describe(backend->Run({Hold("o", "order:1"), Hold("o", "account:1")})), "rank order->account");
  EXPECT_EQ(Describe(backend->Run({Hold("o2", "order:2"), Wait("o2", "account:2")})), "");
  EXPECT_EQ(StatsText(backend->checker().stats()),
            "checks=2 warnings=2 denied=0 reports=1 repeats=1 inversions=0 learned=1");
  if (auto* live = dynamic_cast<Live*>(backend.get())) {
    std::string state;
    for (const LeaseInfo& l : live->coord().Leases()) state += l.owner + " holds " + l.resource + "; ";
    for (const WaitInfo& w : live->coord().Waits()) state += w.owner + " waits " + w.resource + "; ";
    EXPECT_EQ(state, "o holds order:1; o holds account:1; o2 holds order:2; o2 waits account:2; ");
  }
}

TEST_P(OrderBothTest, AHoldEndingTheOwnersWaitIsNotCheckedAgain) {
  auto backend = Make(GetParam(), Shop(OrderMode::kWarn));
  EXPECT_EQ(Describe(backend->Run({Hold("o", "order:1"), Wait("o", "account:1")})), "rank order->account");
  EXPECT_EQ(backend->checker().stats().checks, 1u);
  EXPECT_EQ(Describe(backend->Run({Hold("o", "account:1")})), "");
  EXPECT_EQ(StatsText(backend->checker().stats()),
            "checks=1 warnings=1 denied=0 reports=1 repeats=0 inversions=0 learned=1");
  // A wait reported again is not checked again either; a hold after an unwait is.
  EXPECT_EQ(Describe(backend->Run(
                {Wait("o", "account:2"), Wait("o", "account:2"), Unwait("o", "account:2"), Hold("o", "account:2")})),
            "");
  EXPECT_EQ(StatsText(backend->checker().stats()),
            "checks=3 warnings=3 denied=0 reports=1 repeats=2 inversions=0 learned=1");
  EXPECT_EQ(LearnedText(backend->checker()), "order->account x3");
}

TEST_P(OrderBothTest, AnUpgradeWhileHoldingOthersIsChecked) {
  auto backend = Make(GetParam());
  auto with = [](TraceOp op, Mode mode) {
    op.mode = mode;
    return op;
  };
  // R in S, then Q; upgrading R to X blocks while Q is held: Q -> R, against R -> Q.
  EXPECT_EQ(Describe(backend->Run(
                {with(Hold("o", "R:1"), Mode::kShared), Hold("o", "Q:1"), Wait("o", "R:1"), Hold("o", "R:1")})),
            "inversion Q -> R -> Q");
  EXPECT_EQ(Describe(backend->Run({with(Acq("p", "R:2"), Mode::kShared), Acq("p", "Q:2"), Acq("p", "R:2")})), "");
  EXPECT_EQ(ReportsText(backend->checker()), "inversion Q -> R -> Q x2");
  // The held list of the report leaves out the lock being upgraded, as lockgraphd does.
  ASSERT_EQ(backend->checker().Reports().size(), 1u);
  const auto& held = backend->checker().Reports()[0].first->held;
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].resource, "Q:1");
  // Asking again for what is held in a mode that covers it is nothing new.
  EXPECT_EQ(Describe(backend->Run({with(Acq("p", "R:2"), Mode::kShared), Acq("p", "R:2"), Hold("o", "R:1")})), "");
  EXPECT_EQ(backend->checker().stats().checks, 4u);  // Q:1, wait R:1, Q:2, R:2 in X
}

TEST_P(OrderBothTest, ATryAddsNoLearnedEdge) {
  auto backend = Make(GetParam());
  EXPECT_EQ(Describe(backend->Run({Acq("o", "A:1"), Acq("o", "B:1", 0), Rel("o", "B:1"), Rel("o", "A:1")})), "");
  EXPECT_EQ(LearnedText(backend->checker()), "");
  // So the other order is no inversion.
  EXPECT_EQ(Describe(backend->Run({Acq("o", "B:2"), Acq("o", "A:2"), Acq("o", "C:2", 0)})), "");
  EXPECT_EQ(LearnedText(backend->checker()), "B->A x1");
  // A declared rule still applies to a try.
  auto ruled = Make(GetParam(), Shop(OrderMode::kWarn));
  EXPECT_EQ(Describe(ruled->Run({Acq("o", "order:1"), Acq("o", "account:1", 0)})), "rank order->account");
  EXPECT_EQ(LearnedText(ruled->checker()), "");
}

// ---------------------------------------------------------------- reports

// Problems with `json` as the rendering of `r` (the fields order.h lists), or "".
std::string JsonProblems(const std::string& json, const OrderReport& r) {
  rapidjson::Document d;
  d.Parse(json.c_str(), json.size());
  if (d.HasParseError()) return "not JSON (error at offset " + std::to_string(d.GetErrorOffset()) + ")";
  if (!d.IsObject()) return "not an object";
  std::string out;
  auto str = [&](const rapidjson::Value& v, const char* key, const std::string& want, const std::string& where) {
    if (!v.HasMember(key) || !v[key].IsString()) {
      out += where + key + " missing; ";
    } else if (std::string(v[key].GetString(), v[key].GetStringLength()) != want) {
      out += where + key + " is '" + v[key].GetString() + "', not '" + want + "'; ";
    }
  };
  auto num = [&](const rapidjson::Value& v, const char* key, std::int64_t want, const std::string& where) {
    if (!v.HasMember(key) || !v[key].IsInt64())
      out += where + key + " missing; ";
    else if (v[key].GetInt64() != want)
      out += where + key + " is " + std::to_string(v[key].GetInt64()) + "; ";
  };
  str(d, "kind", std::string(OrderKindName(r.kind)), "");
  for (auto [key, want] : {std::pair<const char*, const std::string*>{"from", &r.from},
                           {"to", &r.to},
                           {"site", &r.site},
                           {"resource", &r.resource},
                           {"held_resource", &r.held_resource},
                           {"held_site", &r.held_site},
                           {"session", &r.session},
                           {"owner", &r.owner}}) {
    str(d, key, *want, "");
  }
  if (!r.rule.empty()) str(d, "rule", r.rule, "");
  if (r.rule.empty() && d.HasMember("rule")) out += "rule present though empty; ";
  if (!d.HasMember("denied") || !d["denied"].IsBool() || d["denied"].GetBool() != r.denied) out += "denied wrong; ";
  num(d, "id", static_cast<std::int64_t>(r.id), "");
  num(d, "detected_at_us", r.detected_at_us, "");
  if (!d.HasMember("chain") || !d["chain"].IsArray() || d["chain"].Size() != r.chain.size()) {
    out += "chain missing or of the wrong size; ";
  } else {
    for (rapidjson::SizeType i = 0; i < d["chain"].Size(); ++i) {
      const rapidjson::Value& e = d["chain"][i];
      const OrderEdge& w = r.chain[i];
      const std::string at = "chain[" + std::to_string(i) + "].";
      if (!e.IsObject()) {
        out += at + " not an object; ";
        continue;
      }
      for (auto [key, want] : {std::pair<const char*, const std::string*>{"from", &w.from},
                               {"to", &w.to},
                               {"site", &w.site},
                               {"from_site", &w.from_site},
                               {"session", &w.session},
                               {"owner", &w.owner},
                               {"from_resource", &w.from_resource},
                               {"to_resource", &w.to_resource}}) {
        str(e, key, *want, at);
      }
      num(e, "first_seen_us", w.first_seen_us, at);
    }
  }
  if (!d.HasMember("held") || !d["held"].IsArray() || d["held"].Size() != r.held.size()) {
    out += "held missing or of the wrong size; ";
  } else {
    for (rapidjson::SizeType i = 0; i < d["held"].Size(); ++i) {
      const std::string at = "held[" + std::to_string(i) + "].";
      if (!d["held"][i].IsObject()) {
        out += at + " not an object; ";
        continue;
      }
      str(d["held"][i], "resource", r.held[i].resource, at);
      str(d["held"][i], "site", r.held[i].site, at);
    }
  }
  return out;
}

// ABBCCA with a site per request; returns the report of CA.
std::shared_ptr<const OrderReport> CircularReport(Offline& off) {
  const Reports made =
      off.Run({Acq("o1", "A:1", -1, "a.cc:10"), Acq("o1", "B:1", -1, "a.cc:11"), Rel("o1", "B:1"), Rel("o1", "A:1"),
               Acq("o2", "B:2", -1, "b.cc:20"), Acq("o2", "C:2", -1, "b.cc:21"), Rel("o2", "C:2"), Rel("o2", "B:2"),
               Acq("o3", "X:3", -1, "c.cc:29"), Acq("o3", "C:3", -1, "c.cc:30"), Acq("o3", "A:3", -1, "c.cc:31")});
  EXPECT_EQ(Describe(made), "inversion A -> B -> C -> A");
  return made.empty() ? nullptr : made[0];
}

TEST(OrderReportTest, JsonHasEveryField) {
  Offline off;
  const auto circular = CircularReport(off);
  ASSERT_TRUE(circular);
  EXPECT_EQ(JsonProblems(RenderOrderJson(*circular), *circular), "");
  EXPECT_EQ(circular->chain.size(), 2u);
  EXPECT_EQ(circular->held.size(), 2u);

  Offline ruled(Shop(OrderMode::kEnforce));
  const Reports denied = ruled.Run({Acq("o", "order:1"), Acq("o", "account:1")});
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(JsonProblems(RenderOrderJson(*denied[0]), *denied[0]), "");

  // Names with every character JSON must escape.
  OrderReport odd = *circular;
  odd.site = "q\"uote\\back\nline\ttab\x01\x1f\x7f";
  odd.owner = "\xc3\xa9t\xc3\xa9";
  odd.rule = "rule \"x\"";
  odd.held.push_back(HeldLock{"r\n", "s\r"});
  EXPECT_EQ(JsonProblems(RenderOrderJson(odd), odd), "");
  EXPECT_EQ(RenderOrderJson(odd).find('\n'), std::string::npos);
}

TEST(OrderReportTest, TextHasLockdepsShape) {
  Offline off;
  const auto circular = CircularReport(off);
  ASSERT_TRUE(circular);
  const std::string text = RenderOrderText(*circular);
  std::size_t at = 0;
  // The parts, in lockdep's order.
  for (const char* part :
       {"WARNING: possible circular locking dependency detected",
        "s/o3 is trying to acquire:\n  A:3 (class A) at c.cc:31", "but already holds:\n  C:3 (class C) at c.cc:30",
        "which lock already depends on the new lock.", "the existing dependency chain (in reverse order) is:",
        "-> #2 (B -> C):\n       B:2 held at b.cc:20 while asking for C:2 at b.cc:21",
        "-> #1 (A -> B):\n       A:1 held at a.cc:10 while asking for B:1 at a.cc:11", "-> #0 (C -> A): this request",
        "Chain exists of:\n  A --> B --> C\n", " Possible unsafe locking scenario:",
        "  lock(C);\n                               lock(B);\n"
        "                               lock(C);\n  lock(A);\n",
        "*** DEADLOCK ***", "s/o3 holds 2 locks:\n #0: X:3 at c.cc:29\n #1: C:3 at c.cc:30\n",
        "the request was allowed (warn)"}) {
    const std::size_t found = text.find(part, at);
    EXPECT_NE(found, std::string::npos) << "missing or out of order: " << part << "\nin:\n" << text;
    if (found != std::string::npos) at = found;
  }

  Offline aa;
  const Reports nested = aa.Run({Acq("o", "A:1"), Acq("o", "A:2")});
  ASSERT_EQ(nested.size(), 1u);
  const std::string recursive = RenderOrderText(*nested[0]);
  EXPECT_NE(recursive.find("WARNING: possible recursive locking detected"), std::string::npos) << recursive;
  EXPECT_NE(recursive.find("declare [ordering.within] A = \"ascending\""), std::string::npos) << recursive;

  Offline ruled(Shop(OrderMode::kEnforce));
  const Reports denied = ruled.Run({Acq("o", "order:1"), Acq("o", "account:1", -1, "pay.cc:3")});
  ASSERT_EQ(denied.size(), 1u);
  const std::string rank = RenderOrderText(*denied[0]);
  for (const char* part :
       {"lock order rule violated (rank)", "is trying to acquire:\n  account:1 (class account) at pay.cc:3",
        "which breaks the declared rule:\n  class 'account' (rank 10) must be taken before class "
        "'order' (rank 20)",
        "denied (ORDER_VIOLATION)"}) {
    EXPECT_NE(rank.find(part), std::string::npos) << part << "\nin:\n" << rank;
  }
}

// ---------------------------------------------------------------- the rules file

// Everything in `r`, one line.
std::string RulesText(const OrderRules& r) {
  std::string out = "mode=" + std::string(OrderModeName(r.mode)) + " sep=" + std::string(1, r.separator);
  for (const auto& [name, c] : r.classes) {
    out += " " + name + "{";
    if (c.rank) out += "rank=" + std::to_string(*c.rank) + " ";
    if (c.within != WithinRule::kNone) out += "within=" + std::string(WithinRuleName(c.within)) + " ";
    if (c.mode) out += "mode=" + std::string(OrderModeName(*c.mode)) + " ";
    out += "}";
  }
  return out;
}

TEST(OrderRulesFileTest, ParsesAFullDocument) {
  OrderRules rules;
  const std::string doc = R"(# lockgraphd.toml
[daemon]
listen = "tcp://*:7000"

[ordering]
mode = "enforce"   # the default for every class
separator = "/"

[ordering.rank]
account = 10
order = 20
"odd.name" = -5

[ordering.within]
account = "ascending"
order = "descending"
cart = "none"

[ordering.class_mode]
order = "warn"
cache = "off"
)";
  EXPECT_EQ(ParseOrderRules(doc, "lockgraphd.toml", rules), "");
  EXPECT_EQ(RulesText(rules),
            "mode=enforce sep=/ account{rank=10 within=ascending } cache{mode=off } cart{} "
            "odd.name{rank=-5 } order{rank=20 within=descending mode=warn }");
  EXPECT_TRUE(OrderChecker(rules).enabled());

  // Without an [ordering] table, nothing changes.
  EXPECT_EQ(ParseOrderRules("[daemon]\nlisten = \"x\"\n", "other.toml", rules), "");
  EXPECT_EQ(RulesText(rules).substr(0, 14), "mode=enforce s");
}

TEST(OrderRulesFileTest, EachErrorNamesSourceAndKeyAndChangesNothing) {
  struct Bad {
    const char* doc;
    std::vector<std::string> parts;  // the error names each
  };
  const Bad bad[] = {
      {"[ordering]\nmode = \"loud\"\n", {"rules.toml: ordering.mode:", "\"off\", \"warn\" or \"enforce\""}},
      {"[ordering]\nmode = 1\n", {"rules.toml: ordering.mode:"}},
      {"[ordering.within]\naccount = \"sideways\"\n", {"rules.toml: ordering.within.account:", "ascending"}},
      {"[ordering.within]\naccount = true\n", {"rules.toml: ordering.within.account:"}},
      {"[ordering.rank]\naccount = 1.5\n", {"rules.toml: ordering.rank.account:", "integer"}},
      {"[ordering.rank]\naccount = \"10\"\n", {"rules.toml: ordering.rank.account:", "integer"}},
      {"[ordering]\ncolour = \"red\"\n", {"rules.toml: ordering.colour:", "unknown key"}},
      {"[ordering]\nseparator = \"::\"\n", {"rules.toml: ordering.separator:", "one-byte"}},
      {"[ordering]\nseparator = \"\"\n", {"rules.toml: ordering.separator:"}},
      {"[ordering]\nseparator = 58\n", {"rules.toml: ordering.separator:"}},
      {"[ordering.class_mode]\norder = \"strict\"\n", {"rules.toml: ordering.class_mode.order:"}},
      {"[ordering]\nrank = 5\n", {"rules.toml: ordering.rank:", "table"}},
      {"ordering = 5\n", {"rules.toml: ordering:", "expected a table"}},
      {"ordering = [1, 2]\n", {"rules.toml: ordering:", "expected a table"}},
      {"[ordering]\nmode = \"warn\"\nbroken = = 1\n", {"rules.toml:3:"}},
      {"[ordering]\nmode = \"warn\n", {"rules.toml:2:"}},
      // Valid settings before the bad one are not applied either.
      {"[ordering]\nmode = \"off\"\nseparator = \"/\"\n[ordering.rank]\nnew = 1\naccount = \"x\"\n",
       {"rules.toml: ordering.rank.account:"}},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.doc);
    OrderRules rules = Shop(OrderMode::kWarn);
    const std::string before = RulesText(rules);
    const std::string error = ParseOrderRules(b.doc, "rules.toml", rules);
    EXPECT_FALSE(error.empty());
    for (const std::string& part : b.parts) EXPECT_NE(error.find(part), std::string::npos) << error;
    EXPECT_EQ(RulesText(rules), before);
  }
}

// ---------------------------------------------------------------- export and restore

// Whether a checker with `rules` would refuse `from`:1 held while asking for `to`:2.
bool Refuses(const OrderChecker& checker, const std::string& from, const std::string& to) {
  const std::string held = from + ":1", asked = to + ":2";
  const HeldRef refs[] = {{held, "h"}};
  OrderRequest q;
  q.session = "s";
  q.owner = "o";
  q.resource = asked;
  q.site = "x";
  q.held = refs;
  return checker.Check(q).deny;
}

TEST(OrderExportTest, ExportedRulesEnforceTheLearnedOrder) {
  OrderRules rules;
  rules.classes["acct"].within = WithinRule::kAscending;
  Offline off(rules);
  const std::string odd = "we\"ird\x7f";  // a class name TOML must escape
  std::vector<TraceOp> ops;
  for (const std::vector<std::string>& nest : std::vector<std::vector<std::string>>{{"A:1", "B:2"},
                                                                                    {"B:1", "C:2"},
                                                                                    {"A:1", "C:2"},
                                                                                    {"D:1", "C:2"},
                                                                                    {"acct:1", "A:2"},
                                                                                    {"C:1", "E:2"},
                                                                                    {"acct:1", "acct:2", odd + ":1"}}) {
    ops = Cat(std::move(ops), Nested("o", nest));
  }
  ASSERT_EQ(Describe(off.Run(ops)), "");
  const std::vector<OrderEdge> learned = off.checker().Learned();
  ASSERT_EQ(LearnedText(off.checker()),
            "A->B x1, B->C x1, A->C x1, D->C x1, acct->A x1, C->E x1, acct->" + odd + " x1");

  auto check_export = [&](const std::string& text) {
    OrderRules parsed;
    ASSERT_EQ(ParseOrderRules(text, "export.toml", parsed), "") << text;
    EXPECT_EQ(parsed.classes["acct"].within, WithinRule::kAscending);
    parsed.mode = OrderMode::kEnforce;
    const OrderChecker enforcing(parsed);
    for (const OrderEdge& e : learned) {
      EXPECT_FALSE(Refuses(enforcing, e.from, e.to)) << e.from << " -> " << e.to << "\n" << text;
      EXPECT_TRUE(Refuses(enforcing, e.to, e.from)) << e.to << " -> " << e.from << "\n" << text;
    }
    EXPECT_TRUE(Refuses(enforcing, "E", "A")) << text;  // transitively
  };
  const std::string text = off.checker().ExportRules();
  check_export(text);
  EXPECT_EQ(text.find("Inversions"), std::string::npos);

  // Inversions, with names that must not break out of their comment, are listed as
  // comments and do not change the ranks.
  std::vector<TraceOp> evil = {Acq("p", "C:1"), Acq("p", "A:2", -1, "evil.cc\nzzz = 1")};
  for (TraceOp& op : evil) op.session = "s\n[ordering.rank]";
  EXPECT_EQ(Describe(off.Run(Cat(evil, {Acq("p2", "F:1"), Acq("p2", "F:2")}))),
            "inversion A -> C -> A; inversion F -> F");  // the shortest chain back
  const std::string with_inversions = off.checker().ExportRules();
  check_export(with_inversions);
  for (const char* part :
       {"\n# Inversions seen", "\n#   C -> A at evil.cc\\x0azzz = 1 (session s\\x0a[ordering.rank], owner p)\n",
        "\n#   F nested in itself at p2@F:2: declare [ordering.within] F = \"ascending\""}) {
    EXPECT_NE(with_inversions.find(part), std::string::npos) << part << "\nin:\n" << with_inversions;
  }
  OrderRules parsed;
  ASSERT_EQ(ParseOrderRules(with_inversions, "export.toml", parsed), "");
  EXPECT_EQ(parsed.classes.count("zzz"), 0u);
}

TEST(OrderRestoreTest, KnownEdgesAreQuietAKnownInversionIsReportedOnceOnItsNextOccurrence) {
  Offline first;
  ASSERT_EQ(Describe(first.Run(PatternTrace(kPatterns[2], Style::kAcquire))), "inversion A -> B -> C -> A");
  const std::vector<OrderEdge> learned = first.checker().Learned();

  for (bool live : {false, true}) {
    SCOPED_TRACE(live ? "live" : "offline");
    auto made = Make(live);
    Backend& backend = *made;
    OrderChecker& checker = backend.mutable_checker();
    const std::uint64_t version = checker.version();
    checker.Restore(learned);
    EXPECT_GT(checker.version(), version);
    EXPECT_EQ(LearnedText(checker), "A->B x1, B->C x1, C->A x1 inversion");
    checker.Restore(learned);  // known edges are skipped
    EXPECT_EQ(checker.stats().learned_edges, 3u);
    EXPECT_EQ(checker.stats().inversions, 1u);
    // Consistent edges are known: quiet.
    EXPECT_EQ(Describe(backend.Run({Acq("o", "A:1"), Acq("o", "B:1"), Rel("o", "A:1"), Acq("o", "C:1")})), "");
    // The inversion was never reported in this run: once on its next occurrence, with its chain.
    EXPECT_EQ(Describe(backend.Run({Acq("p", "C:2"), Acq("p", "A:2")})), "inversion A -> B -> C -> A");
    EXPECT_EQ(Describe(backend.Run({Acq("q", "C:3"), Acq("q", "A:3")})), "");
    EXPECT_EQ(ReportsText(checker), "inversion A -> B -> C -> A x2");
  }

  // A saved order whose flags were edited by hand: the cycle is found again.
  std::vector<OrderEdge> edited = learned;
  for (OrderEdge& e : edited) e.inversion = false;
  Offline off;
  off.mutable_checker().Restore(edited);
  EXPECT_EQ(LearnedText(off.checker()), "A->B x1, B->C x1, C->A x1 inversion");
  EXPECT_EQ(Describe(off.Run({Acq("p", "C:2"), Acq("p", "A:2")})), "inversion A -> B -> C -> A");
}

}  // namespace
}  // namespace lockgraph::graph
