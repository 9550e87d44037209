// Lock ordering over classes: declared rules and the learned order, lockdep for
// services.
//
// A resource's class is the part of its name before the first separator
// (`account:7` -> `account`). Whenever an owner asks for a resource of class B while
// holding one of class A, that is the class edge A -> B. The checker
//   - checks it against the declared rules: ranks (acquire in increasing rank) and a
//     within-class order (ascending or descending keys; keys compare as unsigned
//     integers when both parse as numbers, otherwise bytewise);
//   - learns it, with the site, session and owner that first showed it, and reports
//     it when it closes a cycle in the learned class graph (a potential deadlock,
//     even though none happened). Nesting two resources of a class that has no
//     within-class rule is the cycle of one class (lockdep's AA).
// Each distinct report is made once; later occurrences are counted.
//
// Modes, global and per class (the class being asked for decides): off, warn
// (allow and report) and enforce (deny a request that breaks a declared rule,
// before anything blocks). A learned inversion only warns: whichever order ran first
// is not law. In report mode enforce acts as warn: the lock is already taken.
//
// Pure and deterministic like the rest of graph/: time is an argument.
#ifndef LOCKGRAPH_GRAPH_ORDER_H_
#define LOCKGRAPH_GRAPH_ORDER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lockgraph/graph/types.h"

namespace lockgraph::graph {

enum class OrderMode : std::uint8_t { kOff, kWarn, kEnforce };
std::string_view OrderModeName(OrderMode m);  // "off", "warn", "enforce"
std::optional<OrderMode> ParseOrderMode(std::string_view s);

enum class WithinRule : std::uint8_t { kNone, kAscending, kDescending };
std::string_view WithinRuleName(WithinRule w);  // "none", "ascending", "descending"
std::optional<WithinRule> ParseWithinRule(std::string_view s);

struct ClassOrderRule {
  std::optional<std::int64_t> rank;   // acquire classes in increasing rank
  WithinRule within = WithinRule::kNone;
  std::optional<OrderMode> mode;      // default: OrderRules::mode
};

struct OrderRules {
  OrderMode mode = OrderMode::kWarn;
  char separator = ':';
  std::map<std::string, ClassOrderRule, std::less<>> classes;
  // The learned class graph stops growing here (resources named without a class
  // make a class each); declared rules are still checked. Counted in edges_dropped.
  std::size_t max_learned_edges = 100'000;

  bool declares_anything() const { return !classes.empty(); }
};

// The class of a resource name: the part before the first `separator`, or the whole
// name when it has none.
std::string_view ClassOf(std::string_view resource, char separator);
// Compares two keys of one class: as unsigned integers when both parse as such
// (no sign, no leading '+', at most 20 digits), otherwise bytewise. <0, 0, >0.
int CompareKeys(std::string_view a, std::string_view b);

// ---------------------------------------------------------------- reports

enum class OrderKind : std::uint8_t {
  kInversion,  // a learned edge closed a cycle of classes (AA included)
  kRank,       // a declared rank was broken
  kWithin,     // a declared within-class order was broken
};
std::string_view OrderKindName(OrderKind k);  // "inversion", "rank", "within"

// One learned edge between classes, as first seen.
struct OrderEdge {
  std::string from;  // class
  std::string to;    // class
  std::string from_resource;  // the lock held ...
  std::string from_site;      // ... and where it was taken
  std::string to_resource;    // the lock asked for ...
  std::string site;           // ... and where
  std::string session;
  std::string owner;  // within the session
  TimeUs first_seen_us = 0;
  std::uint64_t count = 1;    // times seen
  bool inversion = false;     // it closed a cycle when first seen
};

struct HeldLock {
  std::string resource;
  std::string site;
};
// The same, borrowed: what a request passes in.
struct HeldRef {
  std::string_view resource;
  std::string_view site;
};

struct OrderReport {
  std::uint64_t id = 0;  // 1, 2, ... per checker
  OrderKind kind = OrderKind::kInversion;
  bool denied = false;   // enforce: the request was refused with ORDER_VIOLATION
  // The new edge: `held_resource` (class `from`) is held while `resource` (class
  // `to`) is asked for at `site`.
  std::string from;
  std::string to;
  std::string resource;
  std::string site;
  std::string held_resource;
  std::string held_site;
  std::string session;
  std::string owner;  // within the session
  std::string rule;   // the declared rule broken, in words (kRank, kWithin)
  // kInversion: the existing chain the new edge closes, to -> ... -> from, each edge
  // as first seen. Empty for AA (the new edge is the whole cycle).
  std::vector<OrderEdge> chain;
  std::vector<HeldLock> held;  // everything the owner held, oldest first
  TimeUs detected_at_us = 0;
};

// {"kind","from","to","site","resource","held_resource","held_site","session",
//  "owner","rule","denied","chain":[{"from","to","site","from_site","session",
//  "owner",...}],"held":[{"resource","site"}],"id","detected_at_us"}
std::string RenderOrderJson(const OrderReport& r);
// One learned edge: {"from","to","site","session","owner","from_resource",
// "from_site","to_resource","first_seen_us","count","inversion"} (report chains, the
// `order` query, order.json).
void AppendOrderEdgeJson(std::string& out, const OrderEdge& e);
// Multi-line text in the shape of a Linux lockdep report.
std::string RenderOrderText(const OrderReport& r);

// ---------------------------------------------------------------- the checker

// A request as the checker sees it.
struct OrderRequest {
  std::string_view session;
  std::string_view owner;     // within the session
  std::string_view resource;
  std::string_view site;
  bool can_block = true;      // false for a try (wait_ms 0): it adds no learned edge
  bool report_mode = false;   // hold/wait: enforce acts as warn
  std::span<const HeldRef> held;  // what the owner holds, oldest first; `resource` is skipped
};

// What checking a request found; hand it to Commit or CommitDenied unchanged.
struct OrderVerdict {
  bool deny = false;    // an enforced declared rule is broken: ORDER_VIOLATION
  std::string message;  // with deny: the first broken rule, in one line
  // A declared rule broken by holding request.held[held] (kRank or kWithin).
  struct Finding {
    OrderKind kind = OrderKind::kRank;
    std::uint32_t held = 0;
    std::string rule;
  };
  std::vector<Finding> findings;
  // Indexes into request.held of the locks that make new class edges (one per class).
  std::vector<std::uint32_t> edges;
};

struct OrderStats {
  std::uint64_t checks = 0;        // requests made while holding something
  std::uint64_t warnings = 0;      // occurrences allowed with a report (repeats too)
  std::uint64_t denied = 0;        // requests refused with ORDER_VIOLATION
  std::uint64_t reports = 0;       // distinct reports
  std::uint64_t repeats = 0;       // occurrences of an already reported problem
  std::uint64_t inversions = 0;    // distinct learned cycles
  std::uint64_t learned_edges = 0;
  std::uint64_t edges_dropped = 0;  // new edges not learned: max_learned_edges reached
};

class OrderChecker {
 public:
  explicit OrderChecker(OrderRules rules = {});
  ~OrderChecker();
  OrderChecker(OrderChecker&&) noexcept;
  OrderChecker& operator=(OrderChecker&&) noexcept;

  const OrderRules& rules() const;
  bool enabled() const;  // false when every class is off

  // Checks a request against the rules and the learned order. Changes nothing.
  OrderVerdict Check(const OrderRequest& request) const;
  // The request went ahead: learn its edges, and return the reports made for the
  // first time (repeats are only counted). `request` must be the one checked.
  std::vector<std::shared_ptr<const OrderReport>> Commit(const OrderRequest& request,
                                                         const OrderVerdict& verdict, TimeUs now);
  // The request was refused (verdict.deny): count it. Returns the report of this
  // refusal, and whether the problem is seen for the first time (to log it once).
  std::pair<std::shared_ptr<const OrderReport>, bool> CommitDenied(const OrderRequest& request,
                                                                   const OrderVerdict& verdict, TimeUs now);

  const OrderStats& stats() const;
  // Learned edges, in the order first seen.
  std::vector<OrderEdge> Learned() const;
  // Every distinct report made so far, with how often each recurred.
  std::vector<std::pair<std::shared_ptr<const OrderReport>, std::uint64_t>> Reports() const;
  // Bumped whenever the learned order changes (to know when to save it).
  std::uint64_t version() const;
  // Adds edges saved earlier (Learned() of a previous run); skips known ones.
  void Restore(const std::vector<OrderEdge>& edges);

  // The learned order as a rules file: a rank for every class a learned edge names,
  // by longest path over the edges that closed no cycle, so that following the ranks
  // obeys every such edge; the declared within-class rules; inversions listed as
  // comments to resolve by hand. Declared ranks and modes are not copied (they are
  // in the config already); the file's mode is warn, to be raised by hand.
  std::string ExportRules() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------- traces

// One line of a trace: a protocol request (hold, wait, acquire, release, unwait).
struct TraceOp {
  enum class Kind : std::uint8_t { kHold, kWait, kAcquire, kRelease, kUnwait };
  Kind kind = Kind::kHold;
  std::string session;
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  std::string site;
  std::int64_t wait_ms = -1;  // acquire: 0 is a try
};

// Runs the checker over a trace with no daemon: keeps what each owner holds and
// waits for, and checks each hold, wait and acquire as lockgraphd would.
class TraceChecker {
 public:
  explicit TraceChecker(OrderRules rules = {});
  // Returns the reports this op made for the first time (denied ones included).
  std::vector<std::shared_ptr<const OrderReport>> Apply(const TraceOp& op, TimeUs now = 0);
  const OrderChecker& checker() const { return checker_; }
  OrderChecker& checker() { return checker_; }

 private:
  struct OwnerState {
    std::vector<HeldLock> held;
    std::vector<Mode> modes;         // the mode of each lock in `held`
    std::vector<std::string> waits;  // checked already; a hold of one is not checked again
  };
  OrderChecker checker_;
  std::map<std::pair<std::string, std::string>, OwnerState> owners_;
};

}  // namespace lockgraph::graph

#endif  // LOCKGRAPH_GRAPH_ORDER_H_
