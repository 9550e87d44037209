// The order checker: declared rules, and the learned class graph kept as a
// Boost.Graph adjacency_list. Classes are few and a new class edge is rare (each is
// learned once), so a breadth-first search per new edge is cheap; the hot path, a
// request whose edges are all known, is a hash lookup per held class.
#include "lockgraph/graph/order.h"

#include <algorithm>
#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/topological_sort.hpp>
#include <boost/graph/visitors.hpp>
#include <charconv>
#include <cstdio>
#include <iterator>
#include <unordered_map>

#include "lockgraph/graph/report.h"

namespace lockgraph::graph {

std::string_view OrderModeName(OrderMode m) {
  switch (m) {
    case OrderMode::kOff: return "off";
    case OrderMode::kWarn: return "warn";
    case OrderMode::kEnforce: return "enforce";
  }
  return "unknown";
}

std::optional<OrderMode> ParseOrderMode(std::string_view s) {
  for (auto m : {OrderMode::kOff, OrderMode::kWarn, OrderMode::kEnforce}) {
    if (OrderModeName(m) == s) return m;
  }
  return std::nullopt;
}

std::string_view WithinRuleName(WithinRule w) {
  switch (w) {
    case WithinRule::kNone: return "none";
    case WithinRule::kAscending: return "ascending";
    case WithinRule::kDescending: return "descending";
  }
  return "unknown";
}

std::optional<WithinRule> ParseWithinRule(std::string_view s) {
  for (auto w : {WithinRule::kNone, WithinRule::kAscending, WithinRule::kDescending}) {
    if (WithinRuleName(w) == s) return w;
  }
  return std::nullopt;
}

std::string_view OrderKindName(OrderKind k) {
  switch (k) {
    case OrderKind::kInversion: return "inversion";
    case OrderKind::kRank: return "rank";
    case OrderKind::kWithin: return "within";
  }
  return "unknown";
}

std::string_view ClassOf(std::string_view resource, char separator) {
  const std::size_t at = resource.find(separator);
  return at == std::string_view::npos ? resource : resource.substr(0, at);
}

namespace {

std::string_view KeyOf(std::string_view resource, char separator) {
  const std::size_t at = resource.find(separator);
  return at == std::string_view::npos ? std::string_view() : resource.substr(at + 1);
}

std::optional<std::uint64_t> AsUnsigned(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// A TOML basic string: JSON's escapes, plus DEL, which TOML does not allow raw.
void AppendTomlString(std::string& out, std::string_view s) {
  std::string json;
  AppendJsonString(json, s);
  for (char c : json) {
    if (c == '\x7f') out += "\\u007f";
    else out.push_back(c);
  }
}

// Names as comment text: a TOML comment ends at a newline and may hold no other
// control character but tab, so a name with one must not end it early.
std::string CommentText(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

}  // namespace

int CompareKeys(std::string_view a, std::string_view b) {
  const auto na = AsUnsigned(a);
  const auto nb = AsUnsigned(b);
  if (na && nb) return *na < *nb ? -1 : (*na > *nb ? 1 : 0);
  const int c = a.compare(b);
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

// ============================================================ the checker

class OrderChecker::Impl {
 public:
  using ClassGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS>;
  static constexpr std::uint32_t kNone = UINT32_MAX;

  explicit Impl(OrderRules rules) : rules_(std::move(rules)) {
    enabled_ = rules_.mode != OrderMode::kOff;
    for (const auto& [name, rule] : rules_.classes) {
      if (rule.mode && *rule.mode != OrderMode::kOff) enabled_ = true;
    }
  }

  OrderMode ModeOf(std::string_view cls) const {
    auto it = rules_.classes.find(cls);
    if (it != rules_.classes.end() && it->second.mode) return *it->second.mode;
    return rules_.mode;
  }
  const ClassOrderRule* RuleOf(std::string_view cls) const {
    auto it = rules_.classes.find(cls);
    return it == rules_.classes.end() ? nullptr : &it->second;
  }
  std::uint32_t InternClass(std::string_view cls) {
    if (auto it = class_ids_.find(cls); it != class_ids_.end()) return it->second;
    const auto id = static_cast<std::uint32_t>(class_names_.size());
    class_ids_.emplace(std::string(cls), id);
    class_names_.emplace_back(cls);
    boost::add_vertex(graph_);
    return id;
  }
  static std::uint64_t Key(std::uint32_t from, std::uint32_t to) { return std::uint64_t{from} << 32 | to; }
  static std::uint64_t ReportKey(OrderKind kind, std::uint32_t from, std::uint32_t to) {
    // Class ids stay below 2^31 (far more classes than any deployment has).
    return std::uint64_t{static_cast<std::uint8_t>(kind)} << 62 | std::uint64_t{from} << 31 | to;
  }

  OrderVerdict Check(const OrderRequest& q) const;
  std::vector<std::shared_ptr<const OrderReport>> Commit(const OrderRequest& q, const OrderVerdict& v, TimeUs now);
  std::pair<std::shared_ptr<const OrderReport>, bool> CommitDenied(const OrderRequest& q, const OrderVerdict& v,
                                                                   TimeUs now);

  // Adds a learned edge; returns its index.
  std::uint32_t AddEdge(OrderEdge edge, std::uint32_t from, std::uint32_t to) {
    const auto index = static_cast<std::uint32_t>(edges_.size());
    edges_.push_back(std::move(edge));
    edge_index_.emplace(Key(from, to), index);
    boost::add_edge(from, to, graph_);
    ++stats_.learned_edges;
    ++version_;
    return index;
  }
  // The learned chain from `start` to `goal` (shortest), as edge indexes; empty when
  // there is none or start == goal.
  std::optional<std::vector<std::uint32_t>> FindPath(std::uint32_t start, std::uint32_t goal) const;
  OrderReport BaseReport(const OrderRequest& q, std::uint32_t held, OrderKind kind, TimeUs now) const;
  // Records one occurrence of a problem; returns the report when it is new.
  std::shared_ptr<const OrderReport> Occur(std::uint64_t key, OrderReport report);

  OrderRules rules_;
  bool enabled_ = false;
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::uint32_t, NameHash, std::equal_to<>> class_ids_;
  std::vector<std::string> class_names_;
  ClassGraph graph_;
  std::vector<OrderEdge> edges_;
  std::unordered_map<std::uint64_t, std::uint32_t> edge_index_;
  struct ReportRec {
    std::shared_ptr<const OrderReport> report;
    std::uint64_t count = 1;
  };
  std::vector<ReportRec> reports_;
  std::unordered_map<std::uint64_t, std::uint32_t> report_index_;
  OrderStats stats_;
  std::uint64_t version_ = 0;
  std::uint64_t next_report_id_ = 1;
};

OrderVerdict OrderChecker::Impl::Check(const OrderRequest& q) const {
  OrderVerdict v;
  if (!enabled_ || q.held.empty()) return v;
  const char sep = rules_.separator;
  const std::string_view to_cls = ClassOf(q.resource, sep);
  const OrderMode to_mode = ModeOf(to_cls);
  if (to_mode == OrderMode::kOff) return v;
  const ClassOrderRule* to_rule = RuleOf(to_cls);
  std::vector<std::string_view> seen;  // classes that already gave an edge
  // One finding per (kind, held class): a request is one occurrence of a problem,
  // however many locks of the held class it breaks the rule with.
  std::vector<std::pair<OrderKind, std::string_view>> found;
  auto first_finding = [&](OrderKind kind, std::string_view cls) {
    if (std::find(found.begin(), found.end(), std::make_pair(kind, cls)) != found.end()) return false;
    found.emplace_back(kind, cls);
    return true;
  };
  for (std::uint32_t i = 0; i < q.held.size(); ++i) {
    const std::string_view held = q.held[i].resource;
    if (held == q.resource) continue;
    const std::string_view from_cls = ClassOf(held, sep);
    // The class asked for decides the mode, so a held class that is off is still
    // checked against the declared rules; it only takes no part in the learned order.
    const bool from_off = ModeOf(from_cls) == OrderMode::kOff;
    if (from_cls == to_cls) {
      if (to_rule != nullptr && to_rule->within != WithinRule::kNone) {
        const int c = CompareKeys(KeyOf(held, sep), KeyOf(q.resource, sep));
        const bool ok = to_rule->within == WithinRule::kAscending ? c < 0 : c > 0;
        if (!ok && first_finding(OrderKind::kWithin, from_cls)) {
          v.findings.push_back({OrderKind::kWithin, i,
                                "keys of class '" + std::string(to_cls) + "' are taken in " +
                                    std::string(WithinRuleName(to_rule->within)) + " order, but " +
                                    std::string(q.resource) + " was asked for while holding " +
                                    std::string(held)});
        }
        continue;  // the within-class rule governs nesting in a class: no learned edge
      }
    } else if (to_rule != nullptr && to_rule->rank) {
      const ClassOrderRule* from_rule = RuleOf(from_cls);
      if (from_rule != nullptr && from_rule->rank && *to_rule->rank < *from_rule->rank &&
          first_finding(OrderKind::kRank, from_cls)) {
        v.findings.push_back({OrderKind::kRank, i,
                              "class '" + std::string(to_cls) + "' (rank " + std::to_string(*to_rule->rank) +
                                  ") must be taken before class '" + std::string(from_cls) + "' (rank " +
                                  std::to_string(*from_rule->rank) + ")"});
      }
    }
    if (from_off || !q.can_block) continue;  // a try never blocks, so it makes no dependency
    if (std::find(seen.begin(), seen.end(), from_cls) != seen.end()) continue;
    seen.push_back(from_cls);
    v.edges.push_back(i);
  }
  if (!q.report_mode && to_mode == OrderMode::kEnforce && !v.findings.empty()) {
    v.deny = true;
    v.message = v.findings.front().rule;
  }
  return v;
}

std::optional<std::vector<std::uint32_t>> OrderChecker::Impl::FindPath(std::uint32_t start,
                                                                       std::uint32_t goal) const {
  const std::size_t n = boost::num_vertices(graph_);
  std::vector<ClassGraph::vertex_descriptor> pred(n);
  for (std::size_t i = 0; i < n; ++i) pred[i] = i;
  boost::breadth_first_search(
      graph_, start,
      boost::visitor(boost::make_bfs_visitor(boost::record_predecessors(pred.data(), boost::on_tree_edge()))));
  if (start != goal && pred[goal] == goal) return std::nullopt;
  std::vector<std::uint32_t> path;
  for (std::size_t v = goal; v != start; v = pred[v]) {
    path.push_back(edge_index_.at(Key(static_cast<std::uint32_t>(pred[v]), static_cast<std::uint32_t>(v))));
  }
  std::reverse(path.begin(), path.end());
  return path;
}

OrderReport OrderChecker::Impl::BaseReport(const OrderRequest& q, std::uint32_t held, OrderKind kind,
                                           TimeUs now) const {
  OrderReport r;
  r.kind = kind;
  r.from = ClassOf(q.held[held].resource, rules_.separator);
  r.to = ClassOf(q.resource, rules_.separator);
  r.resource = q.resource;
  r.site = q.site;
  r.held_resource = q.held[held].resource;
  r.held_site = q.held[held].site;
  r.session = q.session;
  r.owner = q.owner;
  for (const HeldRef& h : q.held) r.held.push_back(HeldLock{std::string(h.resource), std::string(h.site)});
  r.detected_at_us = now;
  return r;
}

std::shared_ptr<const OrderReport> OrderChecker::Impl::Occur(std::uint64_t key, OrderReport report) {
  auto [it, inserted] = report_index_.try_emplace(key, static_cast<std::uint32_t>(reports_.size()));
  if (!inserted) {
    ++reports_[it->second].count;
    ++stats_.repeats;
    return nullptr;
  }
  report.id = next_report_id_++;
  auto shared = std::make_shared<const OrderReport>(std::move(report));
  reports_.push_back({shared, 1});
  ++stats_.reports;
  return shared;
}

std::vector<std::shared_ptr<const OrderReport>> OrderChecker::Impl::Commit(const OrderRequest& q,
                                                                           const OrderVerdict& v, TimeUs now) {
  std::vector<std::shared_ptr<const OrderReport>> made;
  if (!enabled_ || q.held.empty()) return made;
  ++stats_.checks;
  const char sep = rules_.separator;
  const std::string_view to_cls = ClassOf(q.resource, sep);
  for (const OrderVerdict::Finding& f : v.findings) {
    ++stats_.warnings;
    const std::uint32_t from = InternClass(ClassOf(q.held[f.held].resource, sep));
    const std::uint32_t to = InternClass(to_cls);
    OrderReport r = BaseReport(q, f.held, f.kind, now);
    r.rule = f.rule;
    if (auto shared = Occur(ReportKey(f.kind, from, to), std::move(r))) made.push_back(std::move(shared));
  }
  const std::uint32_t to = v.edges.empty() ? kNone : InternClass(to_cls);
  for (std::uint32_t i : v.edges) {
    const std::uint32_t from = InternClass(ClassOf(q.held[i].resource, sep));
    auto it = edge_index_.find(Key(from, to));
    std::uint32_t e;
    std::vector<std::uint32_t> chain;  // to -> ... -> from, for a new inversion
    if (it != edge_index_.end()) {
      e = it->second;
      ++edges_[e].count;
      if (!edges_[e].inversion) continue;
    } else {
      if (edges_.size() >= rules_.max_learned_edges) {
        ++stats_.edges_dropped;
        continue;
      }
      OrderEdge edge;
      edge.from = class_names_[from];
      edge.to = class_names_[to];
      edge.from_resource = q.held[i].resource;
      edge.from_site = q.held[i].site;
      edge.to_resource = q.resource;
      edge.site = q.site;
      edge.session = q.session;
      edge.owner = q.owner;
      edge.first_seen_us = now;
      // Does the learned order already lead from `to` back to `from`?
      auto path = from == to ? std::optional<std::vector<std::uint32_t>>() : FindPath(to, from);
      edge.inversion = from == to || path.has_value();
      if (path) chain = std::move(*path);
      e = AddEdge(std::move(edge), from, to);
      if (!edges_[e].inversion) continue;
      ++stats_.inversions;
    }
    ++stats_.warnings;
    const std::uint64_t key = ReportKey(OrderKind::kInversion, from, to);
    if (report_index_.count(key)) {
      Occur(key, OrderReport{});
      continue;
    }
    OrderReport r = BaseReport(q, i, OrderKind::kInversion, now);
    if (from != to && chain.empty()) {
      // A known inversion reported for the first time (restored from an earlier
      // run): the shortest chain back. BFS from `to` reaches `from` before it could
      // use the edge from -> to itself.
      chain = FindPath(to, from).value_or(std::vector<std::uint32_t>{});
    }
    for (std::uint32_t x : chain) r.chain.push_back(edges_[x]);
    made.push_back(Occur(key, std::move(r)));
  }
  return made;
}

std::pair<std::shared_ptr<const OrderReport>, bool> OrderChecker::Impl::CommitDenied(const OrderRequest& q,
                                                                                     const OrderVerdict& v,
                                                                                     TimeUs now) {
  if (!v.deny || v.findings.empty()) return {nullptr, false};
  ++stats_.checks;
  ++stats_.denied;
  // Only the rule the refusal names is recorded: a report is made to be shown, and
  // the caller shows one per refusal. Recording the others here would mark them as
  // reported without anyone ever seeing them.
  const OrderVerdict::Finding& f = v.findings.front();
  const std::uint32_t from = InternClass(ClassOf(q.held[f.held].resource, rules_.separator));
  const std::uint32_t to = InternClass(ClassOf(q.resource, rules_.separator));
  OrderReport r = BaseReport(q, f.held, f.kind, now);
  r.rule = f.rule;
  r.denied = true;
  const std::uint64_t key = ReportKey(f.kind, from, to);
  if (auto known = report_index_.find(key); known != report_index_.end()) {
    r.id = reports_[known->second].report->id;
    auto copy = std::make_shared<const OrderReport>(r);
    Occur(key, std::move(r));
    return {std::move(copy), false};
  }
  return {Occur(key, std::move(r)), true};
}

OrderChecker::OrderChecker(OrderRules rules) : impl_(std::make_unique<Impl>(std::move(rules))) {}
OrderChecker::~OrderChecker() = default;
OrderChecker::OrderChecker(OrderChecker&&) noexcept = default;
OrderChecker& OrderChecker::operator=(OrderChecker&&) noexcept = default;

const OrderRules& OrderChecker::rules() const { return impl_->rules_; }
bool OrderChecker::enabled() const { return impl_->enabled_; }
OrderVerdict OrderChecker::Check(const OrderRequest& request) const { return impl_->Check(request); }
std::vector<std::shared_ptr<const OrderReport>> OrderChecker::Commit(const OrderRequest& request,
                                                                     const OrderVerdict& verdict, TimeUs now) {
  return impl_->Commit(request, verdict, now);
}
std::pair<std::shared_ptr<const OrderReport>, bool> OrderChecker::CommitDenied(const OrderRequest& request,
                                                                               const OrderVerdict& verdict,
                                                                               TimeUs now) {
  return impl_->CommitDenied(request, verdict, now);
}
const OrderStats& OrderChecker::stats() const { return impl_->stats_; }
std::vector<OrderEdge> OrderChecker::Learned() const { return impl_->edges_; }
std::uint64_t OrderChecker::version() const { return impl_->version_; }

std::vector<std::pair<std::shared_ptr<const OrderReport>, std::uint64_t>> OrderChecker::Reports() const {
  std::vector<std::pair<std::shared_ptr<const OrderReport>, std::uint64_t>> out;
  out.reserve(impl_->reports_.size());
  for (const auto& r : impl_->reports_) out.emplace_back(r.report, r.count);
  return out;
}

void OrderChecker::Restore(const std::vector<OrderEdge>& edges) {
  for (const OrderEdge& edge : edges) {
    const std::uint32_t from = impl_->InternClass(edge.from);
    const std::uint32_t to = impl_->InternClass(edge.to);
    if (impl_->edge_index_.count(Impl::Key(from, to))) continue;
    if (impl_->edges_.size() >= impl_->rules_.max_learned_edges) {
      ++impl_->stats_.edges_dropped;
      continue;
    }
    OrderEdge copy = edge;
    // Whether it closes a cycle is decided again, against what is restored before
    // it, so a hand-edited file cannot leave a cycle unflagged.
    copy.inversion = from == to || impl_->FindPath(to, from).has_value();
    if (copy.inversion) ++impl_->stats_.inversions;
    impl_->AddEdge(std::move(copy), from, to);
  }
}

std::string OrderChecker::ExportRules() const {
  const Impl& m = *impl_;
  // The edges that closed no cycle form a DAG (each was added when it closed none).
  Impl::ClassGraph dag(m.class_names_.size());
  for (const OrderEdge& e : m.edges_) {
    if (!e.inversion) boost::add_edge(m.class_ids_.at(e.from), m.class_ids_.at(e.to), dag);
  }
  std::vector<Impl::ClassGraph::vertex_descriptor> order;
  boost::topological_sort(dag, std::back_inserter(order));  // reverse topological
  std::vector<std::int64_t> depth(m.class_names_.size(), 0);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    for (auto [e, end] = boost::out_edges(*it, dag); e != end; ++e) {
      const auto t = boost::target(*e, dag);
      depth[t] = std::max(depth[t], depth[*it] + 1);
    }
  }
  // Only classes some learned edge names: a class seen only in refused requests
  // has no order to export.
  std::vector<bool> named(m.class_names_.size(), false);
  for (const OrderEdge& e : m.edges_) named[m.class_ids_.at(e.from)] = named[m.class_ids_.at(e.to)] = true;
  std::vector<std::pair<std::int64_t, std::string>> ranked;
  for (std::size_t i = 0; i < m.class_names_.size(); ++i) {
    if (named[i]) ranked.emplace_back(depth[i], m.class_names_[i]);
  }
  std::sort(ranked.begin(), ranked.end());

  std::string out;
  out += "# Lock order learned by lockgraph: acquire classes in increasing rank.\n";
  out += "# Every learned edge that closed no cycle goes from a lower to a higher rank.\n";
  out += "# Review before switching a class to enforce.\n";
  out += "[ordering]\nmode = \"warn\"\nseparator = ";
  AppendTomlString(out, std::string(1, m.rules_.separator));
  out += "\n\n[ordering.rank]\n";
  for (const auto& [d, name] : ranked) {
    AppendTomlString(out, name);
    out += " = " + std::to_string((d + 1) * 10) + "\n";
  }
  bool within_header = false;
  for (const auto& [name, rule] : m.rules_.classes) {
    if (rule.within == WithinRule::kNone) continue;
    if (!within_header) out += "\n[ordering.within]\n";
    within_header = true;
    AppendTomlString(out, name);
    out += " = \"" + std::string(WithinRuleName(rule.within)) + "\"\n";
  }
  bool inversions = false;
  for (const OrderEdge& e : m.edges_) {
    if (!e.inversion) continue;
    if (!inversions) out += "\n# Inversions seen (not ranked; resolve in the code, or choose a direction):\n";
    inversions = true;
    const std::string site = e.site.empty() ? "?" : CommentText(e.site);
    if (e.from == e.to) {
      out += "#   " + CommentText(e.from) + " nested in itself at " + site + ": declare [ordering.within] " +
             CommentText(e.from) + " = \"ascending\" if keys are taken in order\n";
    } else {
      out += "#   " + CommentText(e.from) + " -> " + CommentText(e.to) + " at " + site + " (session " +
             CommentText(e.session) + ", owner " + CommentText(e.owner) + ")\n";
    }
  }
  return out;
}

// ============================================================ traces

TraceChecker::TraceChecker(OrderRules rules) : checker_(std::move(rules)) {}

std::vector<std::shared_ptr<const OrderReport>> TraceChecker::Apply(const TraceOp& op, TimeUs now) {
  OwnerState& st = owners_[{op.session, op.owner}];
  auto held_at = [&](std::string_view resource) {
    return std::find_if(st.held.begin(), st.held.end(), [&](const HeldLock& h) { return h.resource == resource; });
  };
  auto wait_at = [&](std::string_view resource) { return std::find(st.waits.begin(), st.waits.end(), resource); };
  std::vector<std::shared_ptr<const OrderReport>> made;
  switch (op.kind) {
    case TraceOp::Kind::kRelease: {
      if (auto it = held_at(op.resource); it != st.held.end()) {
        st.modes.erase(st.modes.begin() + (it - st.held.begin()));
        st.held.erase(it);
      }
      return made;
    }
    case TraceOp::Kind::kUnwait: {
      if (auto it = wait_at(op.resource); it != st.waits.end()) st.waits.erase(it);
      return made;
    }
    default: break;
  }
  const auto held_it = held_at(op.resource);
  const std::size_t held_index = static_cast<std::size_t>(held_it - st.held.begin());
  const bool holds = held_it != st.held.end();
  const bool after_wait = wait_at(op.resource) != st.waits.end();
  if (holds) {
    // Held already: only an upgrade from S to X is new, and lockgraphd checks it when
    // it is asked for (acquire) or waited for (wait), since the owner blocks on it
    // while holding the rest; a hold is recorded without a check.
    if (op.kind == TraceOp::Kind::kHold) {
      if (after_wait) st.waits.erase(wait_at(op.resource));
      if (!Covers(st.modes[held_index], op.mode)) st.modes[held_index] = op.mode;
      return made;
    }
    if (Covers(st.modes[held_index], op.mode)) return made;  // nothing new
  }
  // A wait reported again changes nothing (lockgraphd answers it without a check).
  if (op.kind == TraceOp::Kind::kWait && after_wait) return made;
  std::vector<HeldRef> held;
  held.reserve(st.held.size());
  for (const HeldLock& h : st.held) {
    if (h.resource != op.resource) held.push_back(HeldRef{h.resource, h.site});  // as lockgraphd: not the upgraded one
  }
  OrderRequest q;
  q.session = op.session;
  q.owner = op.owner;
  q.resource = op.resource;
  q.site = op.site;
  q.held = held;
  q.report_mode = op.kind != TraceOp::Kind::kAcquire;
  q.can_block = !(op.kind == TraceOp::Kind::kAcquire && op.wait_ms == 0);
  if (!(op.kind == TraceOp::Kind::kHold && after_wait)) {  // a hold after its wait was checked
    const OrderVerdict v = checker_.Check(q);
    if (v.deny) {
      if (auto [r, first] = checker_.CommitDenied(q, v, now); first) made.push_back(std::move(r));
      return made;
    }
    made = checker_.Commit(q, v, now);
  }
  if (op.kind == TraceOp::Kind::kWait) {
    st.waits.push_back(op.resource);
    return made;
  }
  if (after_wait) st.waits.erase(wait_at(op.resource));
  if (holds) {
    st.modes[held_index] = op.mode;  // upgraded
  } else {
    st.held.push_back(HeldLock{op.resource, op.site});
    st.modes.push_back(op.mode);
  }
  return made;
}

}  // namespace lockgraph::graph
