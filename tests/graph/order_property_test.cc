// Property tests of lock ordering (rapidcheck) over random traces.
//
// A trace is a few owners in two sessions working resources of four classes with
// numeric keys ("c2:3"): acquire (wait_ms -1, 0 or 100), hold, wait, release and
// unwait, nested at random and released in any order. An owner that waits is blocked:
// its next op is the hold that ends the wait, or an unwait.
//
//  1. With no declared rules (mode warn), TraceChecker reports iff the class graph of
//     the trace has a cycle, per a naive model written here: an edge held-class ->
//     asked-class for every hold, wait and acquire (but a try) made while holding
//     something, self-edges for two resources of one class; cycles by DFS. The number
//     of inversion reports is the number of distinct edges that closed a cycle when
//     added in order, and the learned edges are the model's, in first-seen order.
//  2. The Coordinator, sent the same trace under random declared rules and modes,
//     makes the same reports (same problem, chain, held locks, sites, refusals),
//     counts and learned order as TraceChecker over it. The trace is either
//     report-mode requests (hold, wait, release, unwait) on shared resources, or
//     acquires too, on resources private to each owner so that none has to queue;
//     locks are S or X, and a lock held in S may be upgraded to X.
//
// Replaying a failure: rapidcheck prints the shrunk ops and "seed: S"; rerun with
//   RC_PARAMS="seed=S" build/mine/tests/graph_order_property_test --gtest_filter='OrderProperty.*'
// The failure message carries the rules, the trace and what each side saw.
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/order.h"
#include "graph/order_text.h"

namespace lockgraph::graph {
namespace {

constexpr int kSessions = 2;
constexpr int kOwners = 2;
constexpr int kClasses = 4;
constexpr int kKeys = 3;
constexpr std::int64_t kWaitMs[] = {-1, 0, 100};
constexpr std::int64_t kLongMs = 3'600'000;

enum class RawKind : int { kAcquire, kHold, kWait, kRelease, kUnwait };

struct RawOp {
  RawKind kind = RawKind::kAcquire;
  int session = 0;
  int owner = 0;
  int cls = 0;
  int key = 0;
  int wait = 0;         // index into kWaitMs
  int pick = 0;         // which held lock to release; whether a blocked owner gets its lock
  bool shared = false;  // mode S (only where the trace has modes)
};

std::ostream& operator<<(std::ostream& os, const RawOp& r) {
  return os << "{kind " << static_cast<int>(r.kind) << " s" << r.session << "/o" << r.owner << " c" << r.cls << ":"
            << r.key + 1 << " wait " << r.wait << " pick " << r.pick << (r.shared ? " S" : "") << "}";
}

rc::Gen<RawOp> GenRawOp() {
  return rc::gen::build<RawOp>(rc::gen::set(&RawOp::kind, rc::gen::weightedElement<RawKind>({{4, RawKind::kAcquire},
                                                                                             {2, RawKind::kHold},
                                                                                             {2, RawKind::kWait},
                                                                                             {4, RawKind::kRelease},
                                                                                             {1, RawKind::kUnwait}})),
                               rc::gen::set(&RawOp::session, rc::gen::inRange(0, kSessions)),
                               rc::gen::set(&RawOp::owner, rc::gen::inRange(0, kOwners)),
                               rc::gen::set(&RawOp::cls, rc::gen::inRange(0, kClasses)),
                               rc::gen::set(&RawOp::key, rc::gen::inRange(0, kKeys)),
                               rc::gen::set(&RawOp::wait, rc::gen::weightedElement<int>({{4, 0}, {1, 1}, {2, 2}})),
                               rc::gen::set(&RawOp::pick, rc::gen::inRange(0, 12)),
                               rc::gen::set(&RawOp::shared, rc::gen::weightedElement<bool>({{2, false}, {1, true}})));
}

rc::Gen<std::vector<RawOp>> GenRawOps() {
  return rc::gen::mapcat(rc::gen::inRange(0, 60), [](int n) {
    return rc::gen::container<std::vector<RawOp>>(static_cast<std::size_t>(n), GenRawOp());
  });
}

// The raw ops as a trace that makes sense: releases of held locks, waits for locks
// not held (or, with `modes`, to upgrade a reported S hold to X), a blocked owner's
// next op ends its wait. `report_only`: acquires become holds (what a report-mode
// client sends). `private_keys`: each owner has keys of its own, so that no acquire
// ever has to queue. Without `modes` every lock is X.
std::vector<TraceOp> MakeTrace(const std::vector<RawOp>& raw, bool report_only, bool private_keys = false,
                               bool modes = false) {
  struct Held {
    std::string resource;
    Mode mode;
    bool reported;  // by a hold, not an acquire: only that may be upgraded by a hold
  };
  struct State {
    std::vector<Held> held;
    std::optional<TraceOp> pending;  // the wait it is blocked in
  };
  std::map<std::pair<int, int>, State> owners;
  std::vector<TraceOp> out;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const RawOp& r = raw[i];
    State& st = owners[{r.session, r.owner}];
    TraceOp op;
    op.session = "s" + std::to_string(r.session);
    op.owner = "o" + std::to_string(r.owner);
    const int key = private_keys ? (r.session * kOwners + r.owner) * kKeys + r.key : r.key;
    op.resource = "c" + std::to_string(r.cls) + ":" + std::to_string(key + 1);
    op.mode = modes && r.shared ? Mode::kShared : Mode::kExclusive;
    op.site = "L" + std::to_string(i);
    const auto held =
        std::find_if(st.held.begin(), st.held.end(), [&](const Held& h) { return h.resource == op.resource; });
    if (st.pending) {
      op.resource = st.pending->resource;
      op.mode = st.pending->mode;
      op.kind = r.pick % 3 != 0 ? TraceOp::Kind::kHold : TraceOp::Kind::kUnwait;
      if (op.kind == TraceOp::Kind::kHold) {
        const auto was =
            std::find_if(st.held.begin(), st.held.end(), [&](const Held& h) { return h.resource == op.resource; });
        if (was != st.held.end())
          was->mode = Mode::kExclusive;  // an upgrade
        else
          st.held.push_back({op.resource, op.mode, true});
      }
      st.pending.reset();
      out.push_back(op);
      continue;
    }
    switch (r.kind) {
      case RawKind::kAcquire:
      case RawKind::kHold: {
        bool hold = r.kind == RawKind::kHold || report_only;
        if (held != st.held.end()) {
          hold = held->reported;  // lockgraphd upgrades a granted lease by acquire only
          if (op.mode == Mode::kExclusive) held->mode = Mode::kExclusive;
        } else {
          st.held.push_back({op.resource, op.mode, hold});
        }
        op.kind = hold ? TraceOp::Kind::kHold : TraceOp::Kind::kAcquire;
        if (!hold) op.wait_ms = kWaitMs[r.wait];
        break;
      }
      case RawKind::kWait:
        if (held != st.held.end() && !(held->reported && held->mode == Mode::kShared)) continue;
        if (held != st.held.end()) op.mode = Mode::kExclusive;
        op.kind = TraceOp::Kind::kWait;
        st.pending = op;
        break;
      case RawKind::kRelease: {
        if (st.held.empty()) continue;
        const auto it = st.held.begin() + r.pick % static_cast<int>(st.held.size());
        op.kind = TraceOp::Kind::kRelease;
        op.resource = it->resource;
        st.held.erase(it);
        break;
      }
      case RawKind::kUnwait:
        op.kind = TraceOp::Kind::kUnwait;
        break;
    }
    out.push_back(op);
  }
  return out;
}

std::string Describe(const TraceOp& op) {
  static const char* const kNames[] = {"hold", "wait", "acquire", "release", "unwait"};
  std::string out = op.session + "/" + op.owner + " " + kNames[static_cast<int>(op.kind)] + " " + op.resource;
  if (op.kind != TraceOp::Kind::kRelease && op.kind != TraceOp::Kind::kUnwait)
    out += " " + std::string(ModeName(op.mode));
  if (op.kind == TraceOp::Kind::kAcquire) out += " wait_ms=" + std::to_string(op.wait_ms);
  return out + " @" + op.site;
}

std::string Describe(const std::vector<TraceOp>& trace) {
  std::string out;
  for (std::size_t i = 0; i < trace.size(); ++i) out += "  " + std::to_string(i) + ": " + Describe(trace[i]) + "\n";
  return out;
}

// ---------------------------------------------------------------- the naive model

using ClassEdge = std::pair<std::string, std::string>;

std::string Class(const std::string& resource) { return resource.substr(0, resource.find(':')); }

struct Model {
  std::vector<ClassEdge> edges;  // distinct, in first-seen order
  std::set<ClassEdge> known;
  std::vector<ClassEdge> closing;  // the edges that closed a cycle when added

  bool Reaches(const std::string& from, const std::string& to) const {
    std::set<std::string> seen;
    std::function<bool(const std::string&)> dfs = [&](const std::string& at) {
      if (at == to) return true;
      if (!seen.insert(at).second) return false;
      for (const ClassEdge& e : edges) {
        if (e.first == at && dfs(e.second)) return true;
      }
      return false;
    };
    return dfs(from);
  }
  void Add(const std::string& from, const std::string& to) {
    if (known.count({from, to})) return;
    if (Reaches(to, from)) closing.emplace_back(from, to);  // from == to: a self-edge
    known.insert({from, to});
    edges.emplace_back(from, to);
  }
  // A cycle in the final graph, by DFS with three colours.
  bool Cyclic() const {
    std::map<std::string, int> colour;  // 0 new, 1 on the stack, 2 done
    std::function<bool(const std::string&)> dfs = [&](const std::string& at) {
      colour[at] = 1;
      for (const ClassEdge& e : edges) {
        if (e.first != at) continue;
        if (colour[e.second] == 1) return true;
        if (colour[e.second] == 0 && dfs(e.second)) return true;
      }
      colour[at] = 2;
      return false;
    };
    for (const ClassEdge& e : edges) {
      if (colour[e.first] == 0 && dfs(e.first)) return true;
    }
    return false;
  }
};

Model RunModel(const std::vector<TraceOp>& trace) {
  Model m;
  std::map<std::string, std::vector<std::string>> held;  // by "session/owner"
  for (const TraceOp& op : trace) {
    std::vector<std::string>& h = held[op.session + "/" + op.owner];
    const auto at = std::find(h.begin(), h.end(), op.resource);
    if (op.kind == TraceOp::Kind::kRelease) {
      if (at != h.end()) h.erase(at);
      continue;
    }
    if (op.kind == TraceOp::Kind::kUnwait || at != h.end()) continue;
    if (!(op.kind == TraceOp::Kind::kAcquire && op.wait_ms == 0)) {
      for (const std::string& r : h) m.Add(Class(r), Class(op.resource));
    }
    if (op.kind != TraceOp::Kind::kWait) h.push_back(op.resource);
  }
  return m;
}

std::string Describe(const std::vector<ClassEdge>& edges) {
  std::string out;
  for (const auto& [from, to] : edges) out += (out.empty() ? "" : ", ") + from + "->" + to;
  return out;
}

std::string Describe(const OrderReport& r) {
  std::vector<ClassEdge> chain;
  for (const OrderEdge& e : r.chain) chain.emplace_back(e.from, e.to);
  std::string out = std::string(OrderKindName(r.kind)) + " " + r.from + "->" + r.to + " by " + r.session + "/" +
                    r.owner + " asking " + r.resource + "@" + r.site + " holding " + r.held_resource + "@" +
                    r.held_site + " at " + std::to_string(r.detected_at_us) + " chain [" + Describe(chain) + "] held [";
  for (const HeldLock& h : r.held) out += h.resource + "@" + h.site + " ";
  return out + "]" + (r.denied ? " denied" : "");
}

std::vector<ClassEdge> LearnedEdges(const OrderChecker& c) {
  std::vector<ClassEdge> out;
  for (const OrderEdge& e : c.Learned()) out.emplace_back(e.from, e.to);
  return out;
}

// ---------------------------------------------------------------- 1. the model

RC_GTEST_PROP(OrderProperty, TraceCheckerReportsExactlyTheCyclesOfTheClassGraph, ()) {
  const std::vector<TraceOp> trace = MakeTrace(*GenRawOps(), false);
  TraceChecker checker;  // no declared rules, mode warn
  std::vector<std::shared_ptr<const OrderReport>> reports;
  std::string seen;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    for (auto& r : checker.Apply(trace[i], static_cast<TimeUs>(i))) {
      seen += "  after op " + std::to_string(i) + ": " + Describe(*r) + "\n";
      reports.push_back(std::move(r));
    }
  }
  const Model model = RunModel(trace);
  const std::string config = "rules: none, mode warn\ntrace:\n" + Describe(trace) + "reports:\n" + seen +
                             "model edges: " + Describe(model.edges) +
                             "\nmodel closing edges: " + Describe(model.closing) +
                             "\nlearned: " + Describe(LearnedEdges(checker.checker())) + "\n";
  RC_CLASSIFY(model.Cyclic(), "the class graph has a cycle");
  if (model.Cyclic() != !model.closing.empty()) RC_FAIL("the model disagrees with itself\n" + config);
  if (reports.empty() == model.Cyclic()) RC_FAIL("a report iff the class graph has a cycle\n" + config);
  if (reports.size() != model.closing.size()) RC_FAIL("one report per edge that closed a cycle\n" + config);
  if (checker.checker().stats().inversions != model.closing.size()) RC_FAIL("stats().inversions\n" + config);
  if (LearnedEdges(checker.checker()) != model.edges) RC_FAIL("learned edges differ from the model's\n" + config);
  for (std::size_t i = 0; i < reports.size(); ++i) {
    const OrderReport& r = *reports[i];
    if (r.kind != OrderKind::kInversion || r.denied) RC_FAIL("not a warned inversion\n" + config);
    if (ClassEdge(r.from, r.to) != model.closing[i])
      RC_FAIL("report " + std::to_string(i) + " is not for the " + "edge the model saw closing a cycle\n" + config);
    // The chain leads from `to` back to `from` over edges the model has.
    std::string at = r.to;
    for (const OrderEdge& e : r.chain) {
      if (e.from != at || !model.known.count({e.from, e.to})) RC_FAIL("chain not a path of known edges\n" + config);
      at = e.to;
    }
    if (at != r.from) RC_FAIL("chain does not end at the held class\n" + config);
  }
}

// ---------------------------------------------------------------- 2. live vs offline

rc::Gen<OrderRules> GenRules() {
  return rc::gen::exec([] {
    OrderRules rules;
    rules.mode = *rc::gen::element(OrderMode::kOff, OrderMode::kWarn, OrderMode::kEnforce);
    for (int c = 0; c < kClasses; ++c) {
      ClassOrderRule rule;
      if (*rc::gen::inRange(0, 3) != 0) rule.rank = *rc::gen::inRange(0, 4) * 10;
      rule.within = *rc::gen::element(WithinRule::kNone, WithinRule::kAscending, WithinRule::kDescending);
      if (*rc::gen::inRange(0, 4) == 0) {
        rule.mode = *rc::gen::element(OrderMode::kOff, OrderMode::kWarn, OrderMode::kEnforce);
      }
      if (rule.rank || rule.within != WithinRule::kNone || rule.mode) rules.classes["c" + std::to_string(c)] = rule;
    }
    return rules;
  });
}

std::string Describe(const OrderRules& r) {
  std::string out = "mode " + std::string(OrderModeName(r.mode));
  for (const auto& [name, c] : r.classes) {
    out += "; " + name + ":";
    if (c.rank) out += " rank " + std::to_string(*c.rank);
    if (c.within != WithinRule::kNone) out += " " + std::string(WithinRuleName(c.within));
    if (c.mode) out += " mode " + std::string(OrderModeName(*c.mode));
  }
  return out;
}

using testing::StatsText;

std::string LearnedText(const OrderChecker& c) {
  std::string out;
  for (const OrderEdge& e : c.Learned()) {
    out += e.from + "->" + e.to + " x" + std::to_string(e.count) + (e.inversion ? " inv" : "") + " (" +
           e.from_resource + "@" + e.from_site + " " + e.to_resource + "@" + e.site + " by " + e.session + "/" +
           e.owner + " at " + std::to_string(e.first_seen_us) + "); ";
  }
  return out;
}

std::string ReportsText(const OrderChecker& c) {
  std::string out;
  for (const auto& [r, n] : c.Reports()) out += Describe(*r) + " x" + std::to_string(n) + "\n";
  return out;
}

RC_GTEST_PROP(OrderProperty, CoordinatorReportsAsTheTraceCheckerDoes, ()) {
  const OrderRules rules = *GenRules();
  // Report mode (holds and waits, shared keys), or acquires too (private keys, so
  // that each is granted at once as the trace assumes; enforce may refuse one).
  const bool acquires = *rc::gen::arbitrary<bool>();
  const std::vector<TraceOp> trace = MakeTrace(*GenRawOps(), !acquires, acquires, /*modes=*/true);
  Config config;
  config.order = rules;
  Coordinator coord(config, 1);
  TraceChecker offline(rules);
  std::set<std::string> sessions;
  TimeUs now = 0;
  std::string live_seen, offline_seen, problems;
  // What each owner was granted: the trace assumes every acquire is, but enforce may
  // refuse one, and its release is then left out (on both sides).
  std::map<std::string, std::set<std::string>> granted;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    const TraceOp& op = trace[i];
    std::set<std::string>& has = granted[op.session + "/" + op.owner];
    if (op.kind == TraceOp::Kind::kRelease && !has.erase(op.resource)) continue;
    const Auth auth{op.session, op.session + "-secret"};
    if (sessions.insert(op.session).second) coord.Apply(Hello{op.session, auth.secret, "prop", kLongMs, 0}, ++now);
    const Command command = testing::CommandOf(op, kLongMs);
    const Effects fx = coord.Apply(command, ++now);
    if (!fx.reply.ok() && fx.reply.code != Code::kOrderViolation) {
      problems += "op " + std::to_string(i) + " failed: " + fx.reply.message + "\n";
    }
    if (fx.reply.queued) problems += "op " + std::to_string(i) + " queued\n";
    if (fx.reply.ok() && (op.kind == TraceOp::Kind::kAcquire || op.kind == TraceOp::Kind::kHold)) {
      has.insert(op.resource);
    }
    for (const Event& e : fx.events) {
      if (const auto* o = std::get_if<OrderReportEvent>(&e)) {
        if (o->session != op.session) problems += "op " + std::to_string(i) + ": event for another session\n";
        live_seen += "  after op " + std::to_string(i) + ": " + Describe(*o->report) + "\n";
      }
    }
    for (const auto& r : offline.Apply(op, now)) {
      offline_seen += "  after op " + std::to_string(i) + ": " + Describe(*r) + "\n";
    }
  }
  const std::string config_text = "rules: " + Describe(rules) + "\ntrace:\n" + Describe(trace) + "live reports:\n" +
                                  live_seen + "offline reports:\n" + offline_seen;
  RC_CLASSIFY(!offline_seen.empty(), "reported");
  if (!problems.empty()) RC_FAIL(problems + config_text);
  if (live_seen != offline_seen) RC_FAIL("the reports differ\n" + config_text);
  const OrderChecker& live = coord.order();
  if (StatsText(live.stats()) != StatsText(offline.checker().stats())) {
    RC_FAIL("stats differ: live " + StatsText(live.stats()) + ", offline " + StatsText(offline.checker().stats()) +
            "\n" + config_text);
  }
  if (LearnedText(live) != LearnedText(offline.checker())) {
    RC_FAIL("learned orders differ:\n live " + LearnedText(live) + "\n offline " + LearnedText(offline.checker()) +
            "\n" + config_text);
  }
  if (ReportsText(live) != ReportsText(offline.checker())) {
    RC_FAIL("Reports() differ:\n live " + ReportsText(live) + " offline " + ReportsText(offline.checker()) + "\n" +
            config_text);
  }
  if (!coord.CheckInvariants().empty()) RC_FAIL(coord.CheckInvariants() + "\n" + config_text);
}

}  // namespace

// For rapidcheck's counterexample (found by argument-dependent lookup).
void showValue(const OrderRules& rules, std::ostream& os) { os << Describe(rules); }

}  // namespace lockgraph::graph
