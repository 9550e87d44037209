// The coordinator: sessions, owners, resources, leases and waits in compact tables,
// the owner->owner wait-for graph derived from them, and the resolution of cycles.
//
// Layout. Leases and waits live in slabs (vectors with free lists) and are linked
// into their resource and owner; resources live in a deque so that the name table
// can key on views of their names. Edges of the wait-for graph are counted per
// (from, to) pair in `edges_`; a pair whose count goes 0 -> 1 is offered to the
// Pearce-Kelly order in `wfg_` and, if it would close a cycle, kept in `closing_`.
// After every change the resolution loop looks at the closing edges: an edge that
// fits the order now goes in; one that still closes a cycle is a deadlock to act on
// (or one already being confirmed or resolved, which is left alone).
//
// Every table change that can alter edges goes through four symmetric hooks:
// WaitAdded/WaitRemoved and HolderAdded/HolderRemoved. Each computes the edges of
// one wait or one hold from the current tables, so a removal must run before the
// tables change and an addition after.
#include "lockgraph/graph/coordinator.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "chunked_vector.h"
#include "graph_export.h"
#include "id_table.h"
#include "image_codec.h"
#include "lockgraph/graph/wait_for_graph.h"

namespace lockgraph::graph {
namespace {

constexpr std::uint32_t kNone = UINT32_MAX;

std::string Str(std::string_view s) { return std::string(s); }

// An indexed binary min-heap of (deadline, key) with O(log n) update and erase.
// Ties break on the key, so the order of expiries is deterministic.
class TimerHeap {
 public:
  void Set(std::uint32_t key, TimeUs at) {
    if (key >= pos_.size()) pos_.resize(key + 1, kNone);
    if (pos_[key] == kNone) {
      pos_[key] = static_cast<std::uint32_t>(heap_.size());
      heap_.push_back({at, key});
      Up(pos_[key]);
    } else {
      std::uint32_t i = pos_[key];
      heap_[i].at = at;
      Up(i);
      Down(pos_[key]);
    }
  }
  void Erase(std::uint32_t key) {
    if (key >= pos_.size() || pos_[key] == kNone) return;
    std::uint32_t i = pos_[key];
    pos_[key] = kNone;
    if (i + 1 == heap_.size()) {
      heap_.pop_back();
      return;
    }
    heap_[i] = heap_.back();
    heap_.pop_back();
    pos_[heap_[i].key] = i;
    Up(i);
    Down(pos_[heap_[i].key]);
  }
  bool Contains(std::uint32_t key) const { return key < pos_.size() && pos_[key] != kNone; }
  TimeUs At(std::uint32_t key) const { return heap_[pos_[key]].at; }
  bool Empty() const { return heap_.empty(); }
  TimeUs TopTime() const { return heap_.empty() ? kNever : heap_[0].at; }
  std::uint32_t TopKey() const { return heap_[0].key; }
  std::size_t Size() const { return heap_.size(); }

  // Images: the entries in heap order. Pops follow (at, key), a total order, so a
  // heap rebuilt from them pops alike. Load refuses keys >= `limit` or repeated.
  void SaveImage(internal::ImageWriter& w) const {
    w.U32(static_cast<std::uint32_t>(heap_.size()));
    for (const Entry& e : heap_) {
      w.U32(e.key);
      w.I64(e.at);
    }
  }
  void LoadImage(internal::ImageReader& r, std::uint32_t limit, const char* what) {
    const std::uint32_t n = r.Count(12, what);
    for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
      const std::uint32_t key = r.U32();
      const TimeUs at = r.I64();
      if (!r.ok()) break;
      if (key >= limit || Contains(key)) return r.Fail(std::string(what) + ": key " + std::to_string(key) + " out of range or repeated");
      Set(key, at);
    }
  }

 private:
  struct Entry {
    TimeUs at;
    std::uint32_t key;
  };
  static bool Less(const Entry& a, const Entry& b) {
    return a.at != b.at ? a.at < b.at : a.key < b.key;
  }
  void Swap(std::uint32_t i, std::uint32_t j) {
    std::swap(heap_[i], heap_[j]);
    pos_[heap_[i].key] = i;
    pos_[heap_[j].key] = j;
  }
  void Up(std::uint32_t i) {
    while (i > 0) {
      std::uint32_t parent = (i - 1) / 2;
      if (!Less(heap_[i], heap_[parent])) break;
      Swap(i, parent);
      i = parent;
    }
  }
  void Down(std::uint32_t i) {
    const auto n = static_cast<std::uint32_t>(heap_.size());
    for (;;) {
      std::uint32_t l = 2 * i + 1, r = l + 1, m = i;
      if (l < n && Less(heap_[l], heap_[m])) m = l;
      if (r < n && Less(heap_[r], heap_[m])) m = r;
      if (m == i) break;
      Swap(i, m);
      i = m;
    }
  }
  std::vector<Entry> heap_;
  std::vector<std::uint32_t> pos_;
};

// Strings that many records share (call sites), stored once with a count.
class SiteTable {
 public:
  std::uint32_t Intern(const std::string& s) {
    if (s.empty()) return kNone;
    auto it = index_.find(s);
    if (it != index_.end()) {
      ++refs_[it->second];
      return it->second;
    }
    std::uint32_t id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
      names_[id] = s;
      refs_[id] = 1;
    } else {
      id = static_cast<std::uint32_t>(names_.size());
      names_.push_back(s);
      refs_.push_back(1);
    }
    index_.emplace(s, id);
    return id;
  }
  void Unref(std::uint32_t id) {
    if (id == kNone) return;
    if (--refs_[id] == 0) {
      index_.erase(names_[id]);
      names_[id].clear();
      names_[id].shrink_to_fit();
      free_.push_back(id);
    }
  }
  const std::string& Get(std::uint32_t id) const {
    static const std::string kEmpty;
    return id == kNone ? kEmpty : names_[id];
  }
  std::size_t size() const { return names_.size(); }
  std::uint32_t refs(std::uint32_t id) const { return refs_[id]; }

  // Images: every slot with its count, then the free list in order.
  void SaveImage(internal::ImageWriter& w) const {
    w.U32(static_cast<std::uint32_t>(names_.size()));
    for (std::size_t i = 0; i < names_.size(); ++i) {
      w.Str(names_[i]);
      w.U32(refs_[i]);
    }
    w.U32(static_cast<std::uint32_t>(free_.size()));
    for (std::uint32_t id : free_) w.U32(id);
  }
  void LoadImage(internal::ImageReader& r) {
    const std::uint32_t n = r.Count(8, "sites");
    for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
      names_.push_back(r.Str());
      refs_.push_back(r.U32());
      if (refs_.back() == 0 ? !names_.back().empty() : names_.back().empty()) return r.Fail("sites: a slot's name and count disagree");
      if (refs_.back() != 0 && !index_.emplace(names_.back(), i).second) return r.Fail("sites: a name twice");
    }
    const std::uint32_t f = r.Count(4, "free sites");
    for (std::uint32_t i = 0; i < f && r.ok(); ++i) {
      const std::uint32_t id = r.U32();
      if (id >= n || refs_[id] != 0) return r.Fail("sites: a free slot in use or out of range");
      free_.push_back(id);
    }
    if (r.ok() && free_.size() + index_.size() != n) r.Fail("sites: the free list does not match the empty slots");
  }

 private:
  std::unordered_map<std::string, std::uint32_t> index_;
  std::vector<std::string> names_;
  std::vector<std::uint32_t> refs_;
  std::vector<std::uint32_t> free_;
};

std::uint64_t EdgeKey(std::uint32_t from, std::uint32_t to) {
  return (std::uint64_t{from} << 32) | to;
}

}  // namespace

std::string_view RevokeReasonName(RevokeReason r) {
  switch (r) {
    case RevokeReason::kDeadlock: return "deadlock";
    case RevokeReason::kExpired: return "expired";
    case RevokeReason::kOperator: return "operator";
  }
  return "unknown";
}

class Coordinator::Impl {
 public:
  Impl(Config config, std::uint32_t epoch, std::uint64_t first_seq)
      : config_(std::move(config)), epoch_(epoch), seq_(first_seq == 0 ? 1 : first_seq),
        order_(WithSeparator(config_.order, config_.class_separator)) {}
  static OrderRules WithSeparator(OrderRules rules, char separator) {
    rules.separator = separator;
    return rules;
  }

  Effects Apply(const Command& command, TimeUs now);
  TimeUs NextDeadline() const;

  // ---- tables
  struct Session {
    std::string id;
    std::string secret;
    std::string client;
    TimeUs ttl_us = 0;
    std::int32_t priority = 0;
    TimeUs expires = 0;
    std::uint32_t lease_count = 0;
    bool live = false;
    std::unordered_map<std::string, std::uint32_t> owners;  // name -> owner slot
  };
  struct Owner {
    std::string full;  // "session/owner"
    std::uint32_t session = kNone;
    std::uint32_t name_at = 0;  // offset of the owner's own name in `full`
    std::uint32_t gen = 0;      // bumped on every reuse of the slot
    TimeUs started = 0;
    std::uint32_t lease_head = kNone;
    std::uint32_t lease_count = 0;
    std::vector<std::uint32_t> waits;
    bool live = false;
    std::string_view name() const { return std::string_view(full).substr(name_at); }
  };
  struct Resource {
    std::string name;
    std::vector<std::uint32_t> waits;  // arrival order; queued acquires form the FIFO
    std::uint32_t holder_head = kNone;
    std::uint32_t tag = 0;  // hash of the name, for the index
    bool live = false;
  };
  struct Lease {
    LeaseId id = 0;
    Token token = 0;
    TimeUs expires = 0;  // TTL end; a revoked lease's hand-over is in handover_timers_
    std::int64_t ttl_us = 0;
    std::uint32_t owner = kNone;
    std::uint32_t resource = kNone;
    std::uint32_t res_prev = kNone, res_next = kNone;  // holders of the resource
    std::uint32_t own_prev = kNone, own_next = kNone;  // leases of the owner
    std::uint32_t site = kNone;
    Mode mode = Mode::kExclusive;
    bool reported = false;
    bool revoked = false;
    bool awaiting = false;  // restored, not reclaimed yet
    bool live = false;
  };
  struct WaitRec {
    std::uint64_t request_id = 0;
    TimeUs since = 0;
    TimeUs deadline = kNever;
    std::int64_t ttl_us = 0;  // of the lease to grant
    std::uint32_t owner = kNone;
    std::uint32_t resource = kNone;
    std::uint32_t site = kNone;
    Mode mode = Mode::kExclusive;
    bool reported = false;
    bool upgrade = false;
    bool live = false;
  };
  struct EdgeCount {
    std::uint32_t hard = 0;
    std::uint32_t soft = 0;
    bool ordered = false;  // in wfg_; otherwise in closing_
  };
  // A report-mode cycle being confirmed, or whose victim is within its grace.
  struct CycleRecord {
    std::vector<std::uint32_t> owners;  // as found: the closing edge is the last
    std::vector<std::uint32_t> key;     // canonical rotation of `owners`
    std::vector<std::uint32_t> gens;
    bool doomed = false;                // victim chosen
    std::uint32_t victim = kNone;       // index into owners
    TimeUs deadline = 0;
    int attempt = 0;
    std::vector<std::uint32_t> unresponsive;  // indexes into owners
    std::shared_ptr<const DeadlockReport> report;  // the one that chose `victim`
    // What the victim waited for when its wait was dropped: (resource, mode).
    std::vector<std::pair<std::string, Mode>> victim_waits;
  };
  // One owner->owner edge explained: the wait that makes it and why.
  struct EdgeWhy {
    std::uint32_t wait = kNone;
    std::uint32_t lease = kNone;  // the blocking hold, for a hard edge
    bool soft = false;
    bool reported = false;
  };

  // ---- commands
  void DoHello(const Hello& c, Reply& r);
  void DoHeartbeat(const Heartbeat& c, Reply& r);
  void DoBye(const Bye& c, Reply& r);
  void DoAcquire(const Acquire& c, Reply& r);
  void DoRenew(const Renew& c, Reply& r);
  void DoRelease(const Release& c, Reply& r);
  void DoHold(const Hold& c, Reply& r);
  void DoWait(const Wait& c, Reply& r);
  void DoUnwait(const Unwait& c, Reply& r);
  void DoRevoke(const Revoke& c, Reply& r);
  void DoSetEpoch(const SetEpoch& c, Reply& r);
  void DoRestore(const Restore& c, Reply& r);
  void DoReclaim(const Reclaim& c, Reply& r);
  bool InGrace() const { return awaiting_ > 0 && now_ < grace_until_; }
  static constexpr std::uint32_t kNoResourceYet = kNone - 1;
  // GRACE for a request that may not be served during the grace.
  bool RefuseInGrace(Reply& r, std::uint32_t resource) {
    if (!InGrace()) return false;
    if (grant_unclaimed_) {
      bool awaited = false;
      if (resource != kNoResourceYet) {
        for (std::uint32_t x = resources_[resource].holder_head; x != kNone; x = leases_[x].res_next) {
          awaited = awaited || leases_[x].awaiting;
        }
      }
      if (!awaited) return false;
    }
    ++stats_.grace_refusals;
    Fail(r, Code::kGrace, "the daemon restarted and its leases are being reclaimed for another " +
                              std::to_string((grace_until_ - now_ + 999) / 1000) + " ms; retry then");
    return true;
  }

  // ---- helpers
  bool Fail(Reply& r, Code code, std::string message) {
    r.code = code;
    r.message = std::move(message);
    return false;
  }
  std::uint32_t Authenticate(const Auth& a, Reply& r);
  bool CheckName(std::string_view what, const std::string& name, Reply& r, bool may_be_empty = false);
  bool CheckTtl(std::int64_t ttl_ms, Reply& r);
  bool CheckMode(Mode m, Reply& r);
  void RenewSession(std::uint32_t s);

  std::uint32_t FindResource(std::string_view name, std::uint32_t tag) const {
    return resource_index_.Find(tag, [&](std::uint32_t id) { return resources_[id].name == name; });
  }
  std::uint32_t FindResource(std::string_view name) const { return FindResource(name, internal::HashTag(name)); }
  // REQUIRES: no resource of that name exists; `tag` is HashTag(name).
  std::uint32_t CreateResource(const std::string& name, std::uint32_t tag);
  std::uint32_t FindLease(LeaseId id) const {
    return lease_index_.Find(internal::HashTag(id), [&](std::uint32_t l) { return leases_[l].id == id; });
  }
  std::uint32_t FindOwner(std::uint32_t s, const std::string& name) const {
    auto it = sessions_[s].owners.find(name);
    return it == sessions_[s].owners.end() ? kNone : it->second;
  }
  std::uint32_t FindOrCreateOwner(std::uint32_t s, const std::string& name, std::optional<TimeUs> started);
  std::uint32_t FindHold(std::uint32_t owner, std::uint32_t resource) const;
  std::uint32_t FindWait(std::uint32_t owner, std::uint32_t resource) const;

  bool TokenAvailable() const { return seq_ < kSeqLimit; }
  Token NextToken();
  std::uint32_t NewLease(std::uint32_t owner, std::uint32_t resource, Mode mode, std::int64_t ttl_us,
                         bool reported, std::uint32_t site, const RestoredLease* restored = nullptr);
  // Ends a lease: unlinks it, frees it and lets the queue move on.
  void EndLease(std::uint32_t l);
  void RevokeLease(std::uint32_t l, RevokeReason reason, std::shared_ptr<const DeadlockReport> report);
  void ChangeHoldMode(std::uint32_t l, Mode mode);
  RevokedEvent RevokedFor(std::uint32_t l, RevokeReason reason,
                          std::shared_ptr<const DeadlockReport> report) const;

  std::uint32_t NewWait(std::uint32_t owner, std::uint32_t resource, Mode mode, bool reported,
                        bool upgrade, std::uint64_t request_id, TimeUs deadline, std::int64_t ttl_us,
                        std::uint32_t site);
  // Removes a wait (no event).
  // `pump` lets the queue move on at once; a caller that changes the resource
  // further first pumps it itself afterwards.
  void EndWait(std::uint32_t w, bool pump = true);
  void DenyWait(std::uint32_t w, Code code, std::shared_ptr<const DeadlockReport> report, bool pump = true);
  // The owner's hold ended while it waited to upgrade it: the wait becomes an
  // ordinary one, at the back of the queue.
  void DemoteUpgrade(std::uint32_t owner, std::uint32_t resource);
  bool CanGrant(const WaitRec& w) const;
  void GrantWait(std::uint32_t w);
  void Pump(std::uint32_t resource);

  // ---- ordering
  // Checks a request of owner `o` (kNone: holds nothing) for `resource` against the
  // order; fills order_request_ for CommitOrder. False when it is refused (the
  // reply is set to ORDER_VIOLATION).
  bool CheckOrder(std::uint32_t o, std::uint32_t res, const std::string& session, const std::string& owner,
                  const std::string& resource, const std::string& site, bool can_block, bool report_mode,
                  Reply& r);
  // The checked request goes ahead: learn and report. Call before anything interns
  // a site (the request borrows site names).
  void CommitOrder();

  // ---- edges
  void WaitAdded(std::uint32_t w);
  void WaitRemoved(std::uint32_t w);
  void HolderAdded(std::uint32_t l);
  void HolderRemoved(std::uint32_t l);
  void WaitEdges(std::uint32_t w, int delta);
  void HolderEdges(std::uint32_t l, int delta);
  void AddEdge(std::uint32_t from, std::uint32_t to, bool soft);
  void RemoveEdge(std::uint32_t from, std::uint32_t to, bool soft);
  EdgeWhy ExplainEdge(std::uint32_t from, std::uint32_t to) const;

  // ---- cycles
  void Resolve();
  void HandleCycle(std::vector<std::uint32_t> cycle);
  bool TryReorder(std::uint32_t from, std::uint32_t to);
  bool CycleStands(const CycleRecord& rec, std::uint32_t skip_from) const;
  void ChooseVictim(CycleRecord rec, bool report_mode);
  // The report's cycle from the current tables; an edge they no longer explain (a
  // dropped victim wait) is taken from `previous`, the report of the same cycle.
  std::shared_ptr<DeadlockReport> Describe(const std::vector<std::uint32_t>& cycle,
                                           const DeadlockReport* previous) const;
  // Whether `next` still blocks what the dropped victim of `rec` waited for.
  bool VictimEdgeStands(const CycleRecord& rec) const;
  int FindRecord(const std::vector<std::uint32_t>& canonical) const;
  void ProcessRecord(std::size_t i);

  // ---- time
  void AdvanceTo(TimeUs now);
  void CloseSession(std::uint32_t s, bool expired);
  void CollectGarbage();
  void MaybeNeedEpoch();

  // ---- images (snapshots)
  void SaveImage(internal::ImageWriter& w) const;
  // Into a freshly constructed Impl; problems go to the reader.
  void LoadImage(internal::ImageReader& r);
  // After LoadImage: every index in range and every link consistent, so that the
  // rest of the code (and CheckInvariants) can walk the tables. "" when fine.
  std::string CheckLoadedLinks() const;

  template <typename E>
  void Emit(E event) {
    out_->events.emplace_back(std::move(event));
  }

  // ---- state
  Config config_;
  std::uint32_t epoch_;
  std::uint64_t seq_;
  bool epoch_requested_ = false;
  Token last_token_ = 0;
  TimeUs now_ = 0;
  Stats stats_;
  std::uint64_t next_report_id_ = 1;

  std::vector<Session> sessions_;
  std::vector<std::uint32_t> free_sessions_;
  std::unordered_map<std::string, std::uint32_t> session_index_;
  std::vector<Owner> owners_;
  std::vector<std::uint32_t> free_owners_;
  internal::ChunkedVector<Resource> resources_;
  std::vector<std::uint32_t> free_resources_;
  internal::IdTable resource_index_;  // by name
  std::vector<Lease> leases_;
  std::vector<std::uint32_t> free_leases_;
  internal::IdTable lease_index_;  // by lease id
  std::vector<WaitRec> waits_;
  std::vector<std::uint32_t> free_waits_;
  SiteTable sites_;

  TimerHeap session_timers_;
  TimerHeap lease_timers_;
  TimerHeap wait_timers_;
  TimerHeap handover_timers_;

  WaitForGraph wfg_;
  std::unordered_map<std::uint64_t, EdgeCount> edges_;
  std::vector<std::uint64_t> closing_;
  std::uint64_t closing_added_ = 0;  // counts edges that went to closing_
  std::vector<CycleRecord> records_;

  std::vector<std::uint32_t> gc_owners_;
  std::vector<std::uint32_t> gc_resources_;

  TimeUs grace_until_ = 0;
  std::uint32_t awaiting_ = 0;  // restored leases not reclaimed yet
  bool only_restores_ = true;   // nothing but Restore applied so far
  bool grant_unclaimed_ = false;

  OrderChecker order_;
  std::vector<HeldRef> order_held_;
  OrderRequest order_request_;
  OrderVerdict order_verdict_;
  bool order_pending_ = false;

  // Per-Apply context.
  Effects* out_ = nullptr;
  std::uint32_t current_wait_ = kNone;  // the wait the current request created
  bool current_granted_ = false;
  std::uint32_t current_lease_ = kNone;
  std::shared_ptr<const DeadlockReport> current_denied_;
};

// ============================================================ entry points

Effects Coordinator::Impl::Apply(const Command& command, TimeUs now) {
  Effects effects;
  out_ = &effects;
  current_wait_ = kNone;
  current_granted_ = false;
  current_lease_ = kNone;
  current_denied_.reset();
  order_pending_ = false;  // a check never outlives its command (it borrows its strings)
  ++stats_.commands;
  AdvanceTo(now);
  Reply& r = effects.reply;
  std::visit(
      [&](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, Hello>) DoHello(c, r);
        else if constexpr (std::is_same_v<T, Heartbeat>) DoHeartbeat(c, r);
        else if constexpr (std::is_same_v<T, Bye>) DoBye(c, r);
        else if constexpr (std::is_same_v<T, Acquire>) DoAcquire(c, r);
        else if constexpr (std::is_same_v<T, Renew>) DoRenew(c, r);
        else if constexpr (std::is_same_v<T, Release>) DoRelease(c, r);
        else if constexpr (std::is_same_v<T, Hold>) DoHold(c, r);
        else if constexpr (std::is_same_v<T, Wait>) DoWait(c, r);
        else if constexpr (std::is_same_v<T, Unwait>) DoUnwait(c, r);
        else if constexpr (std::is_same_v<T, Revoke>) DoRevoke(c, r);
        else if constexpr (std::is_same_v<T, SetEpoch>) DoSetEpoch(c, r);
        else if constexpr (std::is_same_v<T, Restore>) DoRestore(c, r);
        else if constexpr (std::is_same_v<T, Reclaim>) DoReclaim(c, r);
        else static_assert(std::is_same_v<T, Tick>);
      },
      command);
  Resolve();
  CollectGarbage();
  MaybeNeedEpoch();
  if (!r.ok()) ++stats_.errors;
  if (!std::holds_alternative<Restore>(command)) only_restores_ = false;
  out_ = nullptr;
  return effects;
}

TimeUs Coordinator::Impl::NextDeadline() const {
  TimeUs t = std::min({session_timers_.TopTime(), lease_timers_.TopTime(),
                       wait_timers_.TopTime(), handover_timers_.TopTime()});
  for (const CycleRecord& rec : records_) t = std::min(t, rec.deadline);
  return t;
}

// ============================================================ validation

std::uint32_t Coordinator::Impl::Authenticate(const Auth& a, Reply& r) {
  auto it = session_index_.find(a.session);
  if (it == session_index_.end()) {
    Fail(r, Code::kUnknownSession, "unknown session '" + a.session + "' (expired, closed or never opened)");
    return kNone;
  }
  if (sessions_[it->second].secret != a.secret) {
    Fail(r, Code::kAuth, "wrong secret for session '" + a.session + "'");
    return kNone;
  }
  return it->second;
}

bool Coordinator::Impl::CheckName(std::string_view what, const std::string& name, Reply& r,
                                  bool may_be_empty) {
  if (name.empty() && !may_be_empty) return Fail(r, Code::kBadRequest, Str(what) + " must not be empty");
  if (name.size() > config_.max_name_bytes) {
    return Fail(r, Code::kLimit, Str(what) + " is " + std::to_string(name.size()) +
                                     " bytes; the limit is " + std::to_string(config_.max_name_bytes));
  }
  return true;
}

bool Coordinator::Impl::CheckTtl(std::int64_t ttl_ms, Reply& r) {
  if (ttl_ms <= 0) return Fail(r, Code::kBadRequest, "ttl_ms must be positive, got " + std::to_string(ttl_ms));
  if (ttl_ms > config_.max_ttl_ms) {
    return Fail(r, Code::kLimit, "ttl_ms " + std::to_string(ttl_ms) + " exceeds the limit of " +
                                     std::to_string(config_.max_ttl_ms));
  }
  return true;
}

bool Coordinator::Impl::CheckMode(Mode m, Reply& r) {
  if (m != Mode::kShared && m != Mode::kExclusive) return Fail(r, Code::kBadRequest, "mode must be \"S\" or \"X\"");
  return true;
}

void Coordinator::Impl::RenewSession(std::uint32_t s) {
  Session& session = sessions_[s];
  session.expires = now_ + session.ttl_us;
  session_timers_.Set(s, session.expires);
}

// ============================================================ tables

std::uint32_t Coordinator::Impl::CreateResource(const std::string& name, std::uint32_t tag) {
  std::uint32_t id;
  if (!free_resources_.empty()) {
    id = free_resources_.back();
    free_resources_.pop_back();
  } else {
    id = static_cast<std::uint32_t>(resources_.size());
    resources_.emplace_back();
  }
  Resource& res = resources_[id];
  res.name = name;
  res.holder_head = kNone;
  res.waits.clear();
  res.live = true;
  res.tag = tag;
  resource_index_.Insert(tag, id);
  ++stats_.live_resources;
  gc_resources_.push_back(id);
  return id;
}

std::uint32_t Coordinator::Impl::FindOrCreateOwner(std::uint32_t s, const std::string& name,
                                                   std::optional<TimeUs> started) {
  std::uint32_t id = FindOwner(s, name);
  if (id != kNone) return id;
  if (!free_owners_.empty()) {
    id = free_owners_.back();
    free_owners_.pop_back();
  } else {
    id = static_cast<std::uint32_t>(owners_.size());
    owners_.emplace_back();
  }
  Owner& o = owners_[id];
  o.full = sessions_[s].id + "/" + name;
  o.session = s;
  o.name_at = static_cast<std::uint32_t>(sessions_[s].id.size() + 1);
  ++o.gen;
  o.started = started ? std::min(*started, now_) : now_;
  o.lease_head = kNone;
  o.lease_count = 0;
  o.waits.clear();
  o.live = true;
  sessions_[s].owners.emplace(name, id);
  wfg_.Reserve(id + 1);
  ++stats_.live_owners;
  gc_owners_.push_back(id);
  return id;
}

std::uint32_t Coordinator::Impl::FindHold(std::uint32_t owner, std::uint32_t resource) const {
  if (owner == kNone || resource == kNone) return kNone;
  for (std::uint32_t l = resources_[resource].holder_head; l != kNone; l = leases_[l].res_next) {
    if (leases_[l].owner == owner) return l;
  }
  return kNone;
}

std::uint32_t Coordinator::Impl::FindWait(std::uint32_t owner, std::uint32_t resource) const {
  if (owner == kNone || resource == kNone) return kNone;
  for (std::uint32_t w : owners_[owner].waits) {
    if (waits_[w].resource == resource) return w;
  }
  return kNone;
}

Token Coordinator::Impl::NextToken() {
  assert(TokenAvailable());
  Token t = (std::uint64_t{epoch_} << kSeqBits) | seq_++;
  last_token_ = t;
  return t;
}

void Coordinator::Impl::MaybeNeedEpoch() {
  if (!epoch_requested_ && kSeqLimit - std::min(seq_, kSeqLimit) <= config_.epoch_low_water &&
      epoch_ + 1 < kEpochLimit) {
    epoch_requested_ = true;
    Effects* saved = out_;
    if (saved) Emit(NeedEpochEvent{epoch_ + 1});
  }
}

std::uint32_t Coordinator::Impl::NewLease(std::uint32_t owner, std::uint32_t resource, Mode mode,
                                          std::int64_t ttl_us, bool reported, std::uint32_t site,
                                          const RestoredLease* restored) {
  std::uint32_t l;
  if (!free_leases_.empty()) {
    l = free_leases_.back();
    free_leases_.pop_back();
  } else {
    l = static_cast<std::uint32_t>(leases_.size());
    leases_.emplace_back();
  }
  Lease& lease = leases_[l];
  lease = Lease{};
  lease.token = restored ? restored->token : NextToken();
  lease.id = restored ? restored->lease : lease.token;
  lease.ttl_us = ttl_us;
  lease.expires = now_ + ttl_us;
  lease.owner = owner;
  lease.resource = resource;
  lease.site = site;
  lease.mode = mode;
  lease.reported = reported;
  lease.live = true;
  // Link into the resource's holders (at the head) and the owner's leases.
  Resource& res = resources_[resource];
  lease.res_next = res.holder_head;
  if (res.holder_head != kNone) leases_[res.holder_head].res_prev = l;
  res.holder_head = l;
  Owner& o = owners_[owner];
  lease.own_next = o.lease_head;
  if (o.lease_head != kNone) leases_[o.lease_head].own_prev = l;
  o.lease_head = l;
  ++o.lease_count;
  ++sessions_[o.session].lease_count;
  lease_index_.Insert(internal::HashTag(lease.id), l);
  lease_timers_.Set(l, lease.expires);
  ++stats_.live_leases;
  ++stats_.grants;
  HolderAdded(l);
  return l;
}

void Coordinator::Impl::EndLease(std::uint32_t l) {
  HolderRemoved(l);
  Lease& lease = leases_[l];
  Resource& res = resources_[lease.resource];
  if (lease.res_prev != kNone) leases_[lease.res_prev].res_next = lease.res_next;
  else res.holder_head = lease.res_next;
  if (lease.res_next != kNone) leases_[lease.res_next].res_prev = lease.res_prev;
  Owner& o = owners_[lease.owner];
  if (lease.own_prev != kNone) leases_[lease.own_prev].own_next = lease.own_next;
  else o.lease_head = lease.own_next;
  if (lease.own_next != kNone) leases_[lease.own_next].own_prev = lease.own_prev;
  --o.lease_count;
  --sessions_[o.session].lease_count;
  lease_index_.Erase(internal::HashTag(lease.id), [l](std::uint32_t id) { return id == l; });
  lease_timers_.Erase(l);
  handover_timers_.Erase(l);
  sites_.Unref(lease.site);
  const std::uint32_t resource = lease.resource;
  gc_owners_.push_back(lease.owner);
  gc_resources_.push_back(resource);
  const std::uint32_t owner = lease.owner;
  if (lease.awaiting) --awaiting_;
  lease.awaiting = false;
  lease.live = false;
  free_leases_.push_back(l);
  --stats_.live_leases;
  DemoteUpgrade(owner, resource);
  Pump(resource);
}

void Coordinator::Impl::ChangeHoldMode(std::uint32_t l, Mode mode) {
  HolderRemoved(l);
  leases_[l].mode = mode;
  leases_[l].token = NextToken();
  HolderAdded(l);
}

RevokedEvent Coordinator::Impl::RevokedFor(std::uint32_t l, RevokeReason reason,
                                          std::shared_ptr<const DeadlockReport> report) const {
  const Lease& lease = leases_[l];
  const Owner& o = owners_[lease.owner];
  RevokedEvent ev;
  ev.session = sessions_[o.session].id;
  ev.lease = lease.id;
  ev.owner = Str(o.name());
  ev.resource = resources_[lease.resource].name;
  ev.token = lease.token;
  ev.reason = reason;
  ev.deadlock = std::move(report);
  return ev;
}

void Coordinator::Impl::RevokeLease(std::uint32_t l, RevokeReason reason,
                                    std::shared_ptr<const DeadlockReport> report) {
  Lease& lease = leases_[l];
  if (lease.revoked) return;
  lease.revoked = true;
  ++stats_.revocations;
  RevokedEvent ev = RevokedFor(l, reason, std::move(report));
  // Its TTL still runs: a revoked lease ends at the earlier of its expiry and its
  // hand-over.
  if (lease.reported) {
    // The external lock system still holds it: it stays, doomed, until released.
    ev.handover_in_ms = 0;
    Emit(std::move(ev));
    return;
  }
  const std::string& name = resources_[lease.resource].name;
  std::string_view cls = std::string_view(name).substr(0, name.find(config_.class_separator));
  TimeUs grace = config_.revoke_grace_us;
  bool immediate = false;
  if (auto it = config_.classes.find(cls); it != config_.classes.end()) {
    if (it->second.revoke_grace_us) grace = *it->second.revoke_grace_us;
    immediate = it->second.revoke_immediate;
  }
  if (immediate || grace <= 0) {
    ev.handover_in_ms = 0;
    Emit(std::move(ev));
    EndLease(l);
    return;
  }
  handover_timers_.Set(l, now_ + grace);
  ev.handover_in_ms = (grace + 999) / 1000;
  Emit(std::move(ev));
}

std::uint32_t Coordinator::Impl::NewWait(std::uint32_t owner, std::uint32_t resource, Mode mode,
                                         bool reported, bool upgrade, std::uint64_t request_id,
                                         TimeUs deadline, std::int64_t ttl_us, std::uint32_t site) {
  std::uint32_t w;
  if (!free_waits_.empty()) {
    w = free_waits_.back();
    free_waits_.pop_back();
  } else {
    w = static_cast<std::uint32_t>(waits_.size());
    waits_.emplace_back();
  }
  WaitRec& rec = waits_[w];
  rec = WaitRec{};
  rec.request_id = request_id;
  rec.since = now_;
  rec.deadline = deadline;
  rec.ttl_us = ttl_us;
  rec.owner = owner;
  rec.resource = resource;
  rec.site = site;
  rec.mode = mode;
  rec.reported = reported;
  rec.upgrade = upgrade;
  rec.live = true;
  auto& queue = resources_[resource].waits;
  if (upgrade && !reported) {
    // Ahead of every other waiter, behind earlier upgrades.
    auto pos = std::find_if(queue.begin(), queue.end(),
                            [&](std::uint32_t x) { return !waits_[x].upgrade || waits_[x].reported; });
    queue.insert(pos, w);
  } else {
    queue.push_back(w);
  }
  owners_[owner].waits.push_back(w);
  if (deadline != kNever) wait_timers_.Set(w, deadline);
  ++stats_.live_waits;
  WaitAdded(w);
  return w;
}

void Coordinator::Impl::EndWait(std::uint32_t w, bool pump) {
  WaitRemoved(w);
  WaitRec& rec = waits_[w];
  auto& queue = resources_[rec.resource].waits;
  queue.erase(std::find(queue.begin(), queue.end(), w));
  auto& mine = owners_[rec.owner].waits;
  mine.erase(std::find(mine.begin(), mine.end(), w));
  wait_timers_.Erase(w);
  sites_.Unref(rec.site);
  gc_owners_.push_back(rec.owner);
  gc_resources_.push_back(rec.resource);
  rec.live = false;
  free_waits_.push_back(w);
  --stats_.live_waits;
  // Removing a waiter can unblock those queued behind it.
  if (pump) Pump(rec.resource);
}

void Coordinator::Impl::DemoteUpgrade(std::uint32_t owner, std::uint32_t resource) {
  const std::uint32_t w = FindWait(owner, resource);
  if (w == kNone || !waits_[w].upgrade) return;
  WaitRemoved(w);
  auto& queue = resources_[resource].waits;
  queue.erase(std::find(queue.begin(), queue.end(), w));
  queue.push_back(w);
  waits_[w].upgrade = false;
  WaitAdded(w);
}

void Coordinator::Impl::DenyWait(std::uint32_t w, Code code, std::shared_ptr<const DeadlockReport> report,
                                 bool pump) {
  const WaitRec& rec = waits_[w];
  if (w == current_wait_) {
    current_denied_ = report ? report : std::make_shared<DeadlockReport>();
    current_wait_ = kNone;
  } else {
    const Owner& o = owners_[rec.owner];
    DeniedEvent ev;
    ev.session = sessions_[o.session].id;
    ev.request_id = rec.request_id;
    ev.owner = Str(o.name());
    ev.resource = resources_[rec.resource].name;
    ev.code = code;
    ev.deadlock = std::move(report);
    Emit(std::move(ev));
  }
  if (code == Code::kTimeout) ++stats_.timeouts;
  if (code == Code::kCancelled) ++stats_.cancelled;
  EndWait(w, pump);
}

bool Coordinator::Impl::CanGrant(const WaitRec& w) const {
  for (std::uint32_t l = resources_[w.resource].holder_head; l != kNone; l = leases_[l].res_next) {
    if (leases_[l].owner != w.owner && !Compatible(leases_[l].mode, w.mode)) return false;
  }
  return true;
}

void Coordinator::Impl::GrantWait(std::uint32_t w) {
  const WaitRec rec = waits_[w];
  const bool is_current = (w == current_wait_);
  // The wait goes first, so that its edges leave before the hold's arrive.
  {
    WaitRemoved(w);
    auto& queue = resources_[rec.resource].waits;
    queue.erase(std::find(queue.begin(), queue.end(), w));
    auto& mine = owners_[rec.owner].waits;
    mine.erase(std::find(mine.begin(), mine.end(), w));
    wait_timers_.Erase(w);
    waits_[w].live = false;
    free_waits_.push_back(w);
    --stats_.live_waits;
  }
  std::uint32_t l = FindHold(rec.owner, rec.resource);
  if (l != kNone && rec.upgrade) {
    ChangeHoldMode(l, rec.mode);
    Lease& lease = leases_[l];
    lease.ttl_us = rec.ttl_us;
    lease.expires = now_ + rec.ttl_us;
    lease_timers_.Set(l, lease.expires);
    sites_.Unref(rec.site);
    ++stats_.grants;
  } else {
    l = NewLease(rec.owner, rec.resource, rec.mode, rec.ttl_us, false, rec.site);
  }
  if (is_current) {
    current_wait_ = kNone;
    current_granted_ = true;
    current_lease_ = l;
    return;
  }
  const Owner& o = owners_[rec.owner];
  GrantedEvent ev;
  ev.session = sessions_[o.session].id;
  ev.request_id = rec.request_id;
  ev.owner = Str(o.name());
  ev.resource = resources_[rec.resource].name;
  ev.mode = rec.mode;
  ev.lease = leases_[l].id;
  ev.token = leases_[l].token;
  Emit(std::move(ev));
}

void Coordinator::Impl::Pump(std::uint32_t resource) {
  for (;;) {
    const auto& queue = resources_[resource].waits;
    std::uint32_t head = kNone;
    for (std::uint32_t w : queue) {
      if (!waits_[w].reported) {
        head = w;
        break;
      }
    }
    if (head == kNone || !CanGrant(waits_[head]) || !TokenAvailable()) return;
    GrantWait(head);
  }
}

// ============================================================ edges

void Coordinator::Impl::AddEdge(std::uint32_t from, std::uint32_t to, bool soft) {
  if (from == to) return;
  EdgeCount& e = edges_[EdgeKey(from, to)];
  const bool was = e.hard + e.soft > 0;
  (soft ? e.soft : e.hard)++;
  if (was) return;
  if (wfg_.InsertEdge(from, to)) {
    e.ordered = true;
  } else {
    e.ordered = false;
    closing_.push_back(EdgeKey(from, to));
    ++closing_added_;
  }
  ++stats_.wait_edges;
}

void Coordinator::Impl::RemoveEdge(std::uint32_t from, std::uint32_t to, bool soft) {
  if (from == to) return;
  auto it = edges_.find(EdgeKey(from, to));
  assert(it != edges_.end());
  EdgeCount& e = it->second;
  (soft ? e.soft : e.hard)--;
  if (e.hard + e.soft > 0) return;
  if (e.ordered) {
    wfg_.RemoveEdge(from, to);
  } else {
    closing_.erase(std::find(closing_.begin(), closing_.end(), it->first));
  }
  edges_.erase(it);
  --stats_.wait_edges;
}

void Coordinator::Impl::WaitEdges(std::uint32_t w, int delta) {
  const WaitRec& rec = waits_[w];
  const Resource& res = resources_[rec.resource];
  auto edge = [&](std::uint32_t from, std::uint32_t to, bool soft) {
    if (delta > 0) AddEdge(from, to, soft);
    else RemoveEdge(from, to, soft);
  };
  for (std::uint32_t l = res.holder_head; l != kNone; l = leases_[l].res_next) {
    if (leases_[l].owner != rec.owner && !Compatible(leases_[l].mode, rec.mode)) {
      edge(rec.owner, leases_[l].owner, false);
    }
  }
  if (rec.reported) return;
  bool after = false;
  for (std::uint32_t x : res.waits) {
    if (x == w) {
      after = true;
      continue;
    }
    const WaitRec& other = waits_[x];
    if (other.reported || other.owner == rec.owner || Compatible(other.mode, rec.mode)) continue;
    if (after) edge(other.owner, rec.owner, true);
    else edge(rec.owner, other.owner, true);
  }
}

void Coordinator::Impl::HolderEdges(std::uint32_t l, int delta) {
  const Lease& lease = leases_[l];
  for (std::uint32_t w : resources_[lease.resource].waits) {
    const WaitRec& rec = waits_[w];
    if (rec.owner == lease.owner || Compatible(lease.mode, rec.mode)) continue;
    if (delta > 0) AddEdge(rec.owner, lease.owner, false);
    else RemoveEdge(rec.owner, lease.owner, false);
  }
}

void Coordinator::Impl::WaitAdded(std::uint32_t w) { WaitEdges(w, +1); }
void Coordinator::Impl::WaitRemoved(std::uint32_t w) { WaitEdges(w, -1); }
void Coordinator::Impl::HolderAdded(std::uint32_t l) { HolderEdges(l, +1); }
void Coordinator::Impl::HolderRemoved(std::uint32_t l) { HolderEdges(l, -1); }

Coordinator::Impl::EdgeWhy Coordinator::Impl::ExplainEdge(std::uint32_t from, std::uint32_t to) const {
  EdgeWhy soft_why;
  for (std::uint32_t w : owners_[from].waits) {
    const WaitRec& rec = waits_[w];
    const Resource& res = resources_[rec.resource];
    for (std::uint32_t l = res.holder_head; l != kNone; l = leases_[l].res_next) {
      if (leases_[l].owner == to && !Compatible(leases_[l].mode, rec.mode)) {
        return EdgeWhy{w, l, false, rec.reported || leases_[l].reported};
      }
    }
    if (rec.reported || soft_why.wait != kNone) continue;
    for (std::uint32_t x : res.waits) {
      if (x == w) break;
      const WaitRec& other = waits_[x];
      if (!other.reported && other.owner == to && !Compatible(other.mode, rec.mode)) {
        soft_why = EdgeWhy{w, kNone, true, false};
        break;
      }
    }
  }
  return soft_why;
}

// ============================================================ cycles

namespace {

// The rotation of `cycle` that starts at its smallest id: one key per cycle.
std::vector<std::uint32_t> Canonical(const std::vector<std::uint32_t>& cycle) {
  auto it = std::min_element(cycle.begin(), cycle.end());
  std::vector<std::uint32_t> out(it, cycle.end());
  out.insert(out.end(), cycle.begin(), it);
  return out;
}

}  // namespace

int Coordinator::Impl::FindRecord(const std::vector<std::uint32_t>& canonical) const {
  for (std::size_t i = 0; i < records_.size(); ++i) {
    const CycleRecord& rec = records_[i];
    if (rec.key != canonical) continue;
    bool same = true;
    for (std::size_t j = 0; j < rec.owners.size(); ++j) same = same && owners_[rec.owners[j]].gen == rec.gens[j];
    if (same) return static_cast<int>(i);
  }
  return -1;
}

void Coordinator::Impl::Resolve() {
  // Each pass either fits closing edges into the order, or acts on one cycle and
  // starts over (acting changes the tables). The bound is a safety net: every action
  // removes a wait, reorders a queue for good, or records a cycle.
  for (int pass = 0; pass < 100000 && !closing_.empty(); ++pass) {
    bool acted = false;
    const std::vector<std::uint64_t> snapshot = closing_;
    for (std::uint64_t key : snapshot) {
      auto it = edges_.find(key);
      if (it == edges_.end() || it->second.ordered) continue;
      const auto from = static_cast<std::uint32_t>(key >> 32);
      const auto to = static_cast<std::uint32_t>(key);
      if (wfg_.InsertEdge(from, to)) {
        it->second.ordered = true;
        closing_.erase(std::find(closing_.begin(), closing_.end(), key));
        continue;
      }
      // to ... from, closed by from -> to.
      std::vector<std::uint32_t> cycle = wfg_.FindPath(to, from);
      assert(!cycle.empty());
      if (FindRecord(Canonical(cycle)) >= 0) continue;  // already being handled
      HandleCycle(std::move(cycle));
      acted = true;
      break;
    }
    if (!acted) break;
  }
}

bool Coordinator::Impl::TryReorder(std::uint32_t from, std::uint32_t to) {
  // Find the queue where `from` waits behind `to`.
  for (std::uint32_t w : owners_[from].waits) {
    const WaitRec& rec = waits_[w];
    if (rec.reported) continue;
    auto& queue = resources_[rec.resource].waits;
    auto mine = std::find(queue.begin(), queue.end(), w);
    auto theirs = std::find_if(queue.begin(), mine, [&](std::uint32_t x) {
      return !waits_[x].reported && waits_[x].owner == to && !Compatible(waits_[x].mode, rec.mode);
    });
    if (theirs == mine) continue;
    const auto old_index = static_cast<std::size_t>(mine - queue.begin());
    const auto new_index = static_cast<std::size_t>(theirs - queue.begin());
    const std::uint64_t closing_before = closing_added_;
    auto move = [&](std::size_t from_index, std::size_t to_index) {
      WaitRemoved(w);
      auto& q = resources_[rec.resource].waits;
      q.erase(q.begin() + static_cast<std::ptrdiff_t>(from_index));
      q.insert(q.begin() + static_cast<std::ptrdiff_t>(to_index), w);
      WaitAdded(w);
    };
    move(old_index, new_index);
    if (closing_added_ == closing_before && !edges_.count(EdgeKey(from, to))) {
      Pump(rec.resource);
      return true;
    }
    move(new_index, old_index);
  }
  return false;
}

void Coordinator::Impl::HandleCycle(std::vector<std::uint32_t> cycle) {
  const std::size_t n = cycle.size();
  bool report_mode = false;
  for (std::size_t i = 0; i < n; ++i) {
    EdgeWhy why = ExplainEdge(cycle[i], cycle[(i + 1) % n]);
    report_mode = report_mode || why.reported;
  }
  // Soft edges first: a queue reorder may break the cycle with no victim.
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t from = cycle[i], to = cycle[(i + 1) % n];
    const EdgeCount& e = edges_.at(EdgeKey(from, to));
    if (e.hard == 0 && TryReorder(from, to)) {
      ++stats_.cycles_reordered;
      return;
    }
  }
  CycleRecord rec;
  rec.key = Canonical(cycle);
  rec.owners = std::move(cycle);
  for (std::uint32_t o : rec.owners) rec.gens.push_back(owners_[o].gen);
  if (report_mode && config_.confirm_us > 0) {
    rec.deadline = now_ + config_.confirm_us;
    records_.push_back(std::move(rec));
    return;
  }
  ChooseVictim(std::move(rec), report_mode);
}

bool Coordinator::Impl::CycleStands(const CycleRecord& rec, std::uint32_t skip_from) const {
  const std::size_t n = rec.owners.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (!owners_[rec.owners[i]].live || owners_[rec.owners[i]].gen != rec.gens[i]) return false;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (i == skip_from) continue;
    if (!edges_.count(EdgeKey(rec.owners[i], rec.owners[(i + 1) % n]))) return false;
  }
  return true;
}

std::shared_ptr<DeadlockReport> Coordinator::Impl::Describe(const std::vector<std::uint32_t>& cycle,
                                                            const DeadlockReport* previous) const {
  auto report = std::make_shared<DeadlockReport>();
  const std::size_t n = cycle.size();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t from = cycle[i], to = cycle[(i + 1) % n];
    EdgeWhy why = ExplainEdge(from, to);
    CycleEdge e;
    e.owner = owners_[from].full;
    e.held_by = owners_[to].full;
    if (why.wait != kNone) {
      const WaitRec& w = waits_[why.wait];
      e.waits_for = resources_[w.resource].name;
      e.mode = w.mode;
      e.site = sites_.Get(w.site);
      e.soft = why.soft;
    } else if (previous != nullptr && previous->cycle.size() == n) {
      e = previous->cycle[i];
    }
    report->report_mode = report->report_mode || why.reported;
    report->cycle.push_back(std::move(e));
  }
  report->detected_at_us = now_;
  return report;
}

void Coordinator::Impl::ChooseVictim(CycleRecord rec, bool report_mode) {
  const std::size_t n = rec.owners.size();
  std::vector<std::size_t> candidates;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::find(rec.unresponsive.begin(), rec.unresponsive.end(), i) == rec.unresponsive.end()) {
      candidates.push_back(i);
    }
  }
  if (candidates.empty()) return;  // every owner failed to respond: nothing left to ask
  const auto& policy = config_.victim_policy;
  VictimStep decided = policy.empty() ? VictimStep::kLowestId : policy[0];
  std::string why;
  if (candidates.size() == 1) {
    why = "the only owner in the cycle that has not failed to release as a victim";
  }
  for (std::size_t s = 0; s <= policy.size() && candidates.size() > 1; ++s) {
    const VictimStep step = s < policy.size() ? policy[s] : VictimStep::kLowestId;
    auto owner = [&](std::size_t i) -> const Owner& { return owners_[rec.owners[i]]; };
    // Key: lower loses (is chosen).
    auto worse = [&](std::size_t a, std::size_t b) -> int {  // <0: a is the likelier victim
      switch (step) {
        case VictimStep::kLowestPriority: {
          auto pa = sessions_[owner(a).session].priority, pb = sessions_[owner(b).session].priority;
          return pa < pb ? -1 : pa > pb ? 1 : 0;
        }
        case VictimStep::kYoungest:
          return owner(a).started > owner(b).started ? -1 : owner(a).started < owner(b).started ? 1 : 0;
        case VictimStep::kFewestLeases:
          return owner(a).lease_count < owner(b).lease_count ? -1
                 : owner(a).lease_count > owner(b).lease_count ? 1 : 0;
        case VictimStep::kLowestId:
          return owner(a).full.compare(owner(b).full);
      }
      return 0;
    };
    std::size_t best = candidates[0];
    for (std::size_t c : candidates) {
      if (worse(c, best) < 0) best = c;
    }
    std::vector<std::size_t> kept;
    for (std::size_t c : candidates) {
      if (worse(c, best) == 0) kept.push_back(c);
    }
    if (kept.size() == 1) {
      decided = step;
      const Owner& v = owner(best);
      switch (step) {
        case VictimStep::kLowestPriority:
          why = "lowest priority in the cycle (" + std::to_string(sessions_[v.session].priority) + ")";
          break;
        case VictimStep::kYoungest:
          why = "youngest owner in the cycle (started at " + std::to_string(v.started) + " us)";
          break;
        case VictimStep::kFewestLeases:
          why = "fewest leases in the cycle (" + std::to_string(v.lease_count) + ")";
          break;
        case VictimStep::kLowestId:
          why = "lowest owner id in the cycle";
          break;
      }
      if (s > 0) why += "; tied on the earlier steps";
    }
    candidates = std::move(kept);
  }
  const std::size_t vi = candidates[0];
  const std::uint32_t victim = rec.owners[vi];
  const std::uint32_t next = rec.owners[(vi + 1) % n];
  const std::uint32_t prev = rec.owners[(vi + n - 1) % n];

  auto report = Describe(rec.owners, rec.report.get());
  report->id = next_report_id_++;
  report->victim = owners_[victim].full;
  report->step = decided;
  report->why = why;
  report->attempt = rec.attempt + 1;
  report->report_mode = report->report_mode || report_mode;
  for (std::size_t u : rec.unresponsive) report->unresponsive.push_back(owners_[rec.owners[u]].full);
  std::shared_ptr<const DeadlockReport> shared = report;
  ++stats_.deadlocks;
  ++stats_.victims_by_step[static_cast<int>(decided)];
  Emit(DeadlockEvent{shared});
  rec.report = shared;

  // Leases of the victim that the previous owner waits for: revoked. When the
  // previous owner is an earlier, unresponsive victim, its waits were dropped: what
  // it waited for is in the record.
  std::vector<std::uint32_t> to_revoke;
  auto revoke_blocking = [&](std::uint32_t res, Mode mode) {
    for (std::uint32_t l = resources_[res].holder_head; l != kNone; l = leases_[l].res_next) {
      if (leases_[l].owner == victim && !Compatible(leases_[l].mode, mode)) to_revoke.push_back(l);
    }
  };
  for (std::uint32_t w : owners_[prev].waits) revoke_blocking(waits_[w].resource, waits_[w].mode);
  if (rec.victim != kNone && rec.owners[rec.victim] == prev) {
    for (const auto& [name, mode] : rec.victim_waits) {
      if (std::uint32_t res = FindResource(name); res != kNone) revoke_blocking(res, mode);
    }
  }
  // Waits of the victim that make its edge in the cycle: denied.
  std::vector<std::uint32_t> to_deny;
  for (std::uint32_t w : owners_[victim].waits) {
    const WaitRec& rw = waits_[w];
    bool blocks = false;
    for (std::uint32_t l = resources_[rw.resource].holder_head; l != kNone; l = leases_[l].res_next) {
      blocks = blocks || (leases_[l].owner == next && !Compatible(leases_[l].mode, rw.mode));
    }
    if (!rw.reported) {
      for (std::uint32_t x : resources_[rw.resource].waits) {
        if (x == w) break;
        blocks = blocks || (!waits_[x].reported && waits_[x].owner == next && !Compatible(waits_[x].mode, rw.mode));
      }
    }
    if (blocks) to_deny.push_back(w);
  }
  bool holds_doomed = false;
  rec.victim_waits.clear();
  for (std::uint32_t w : to_deny) rec.victim_waits.emplace_back(resources_[waits_[w].resource].name, waits_[w].mode);
  for (std::uint32_t w : to_deny) DenyWait(w, Code::kDeadlock, shared);
  std::sort(to_revoke.begin(), to_revoke.end());
  to_revoke.erase(std::unique(to_revoke.begin(), to_revoke.end()), to_revoke.end());
  for (std::uint32_t l : to_revoke) {
    if (!leases_[l].live || leases_[l].owner != victim) continue;
    holds_doomed = holds_doomed || leases_[l].reported;
    RevokeLease(l, RevokeReason::kDeadlock, shared);
  }
  if (report_mode && holds_doomed) {
    // Wait for the victim to release what it holds on the cycle.
    rec.doomed = true;
    rec.victim = static_cast<std::uint32_t>(vi);
    rec.attempt += 1;
    rec.deadline = now_ + config_.victim_grace_us;
    records_.push_back(std::move(rec));
  }
}

bool Coordinator::Impl::VictimEdgeStands(const CycleRecord& rec) const {
  const std::size_t n = rec.owners.size();
  const std::uint32_t next = rec.owners[(rec.victim + 1) % n];
  for (const auto& [name, mode] : rec.victim_waits) {
    const std::uint32_t res = FindResource(name);
    if (res == kNone) continue;
    for (std::uint32_t l = resources_[res].holder_head; l != kNone; l = leases_[l].res_next) {
      if (leases_[l].owner == next && !Compatible(leases_[l].mode, mode)) return true;
    }
  }
  return false;
}

void Coordinator::Impl::ProcessRecord(std::size_t i) {
  CycleRecord rec = std::move(records_[i]);
  records_.erase(records_.begin() + static_cast<std::ptrdiff_t>(i));
  if (!rec.doomed) {
    if (CycleStands(rec, kNone)) {
      ChooseVictim(std::move(rec), true);
    } else {
      ++stats_.cycles_vanished;
    }
    return;
  }
  // Doomed: the victim's wait was dropped; has it released its doomed holds?
  const std::size_t n = rec.owners.size();
  const std::uint32_t victim = rec.owners[rec.victim];
  const std::uint32_t prev = rec.owners[(rec.victim + n - 1) % n];
  bool still_holds = owners_[victim].live && owners_[victim].gen == rec.gens[rec.victim] &&
                     edges_.count(EdgeKey(prev, victim));
  if (still_holds && CycleStands(rec, rec.victim) && VictimEdgeStands(rec)) {
    ++stats_.victims_unresponsive;
    Emit(VictimUnresponsiveEvent{rec.report});
    rec.unresponsive.push_back(rec.victim);
    rec.doomed = false;
    ChooseVictim(std::move(rec), true);
  }
}

// ============================================================ time

void Coordinator::Impl::AdvanceTo(TimeUs now) {
  now_ = std::max(now_, now);
  for (int guard = 0; guard < 10'000'000; ++guard) {
    const TimeUs ts = session_timers_.TopTime(), tl = lease_timers_.TopTime(),
                 tw = wait_timers_.TopTime(), th = handover_timers_.TopTime();
    TimeUs tr = kNever;
    std::size_t ri = 0;
    for (std::size_t i = 0; i < records_.size(); ++i) {
      if (records_[i].deadline < tr) {
        tr = records_[i].deadline;
        ri = i;
      }
    }
    const TimeUs t = std::min({ts, tl, tw, th, tr});
    if (t > now_) break;
    if (t == ts) {
      CloseSession(session_timers_.TopKey(), true);
    } else if (t == tl) {
      const std::uint32_t l = lease_timers_.TopKey();
      ++stats_.lease_expiries;
      // A revoked lease's owner was told already; its token is stale either way.
      if (!leases_[l].revoked) Emit(RevokedFor(l, RevokeReason::kExpired, nullptr));
      EndLease(l);
    } else if (t == tw) {
      DenyWait(wait_timers_.TopKey(), Code::kTimeout, nullptr);
    } else if (t == th) {
      EndLease(handover_timers_.TopKey());
    } else {
      ProcessRecord(ri);
    }
    Resolve();
  }
}

void Coordinator::Impl::CloseSession(std::uint32_t s, bool expired) {
  Session& session = sessions_[s];
  session_timers_.Erase(s);
  std::vector<std::uint32_t> owners;
  for (const auto& [name, o] : session.owners) owners.push_back(o);
  std::sort(owners.begin(), owners.end());
  // Waits first (no grants to a closing session), then holds.
  for (std::uint32_t o : owners) {
    while (!owners_[o].waits.empty()) EndWait(owners_[o].waits.back());
  }
  for (std::uint32_t o : owners) {
    while (owners_[o].lease_head != kNone) EndLease(owners_[o].lease_head);
  }
  if (expired) ++stats_.sessions_expired;
  Emit(SessionClosedEvent{session.id, expired});
  CollectGarbage();  // frees the owners, whose names point into the session's map
  session_index_.erase(session.id);
  session.owners.clear();
  session.live = false;
  session.secret.clear();
  free_sessions_.push_back(s);
  --stats_.live_sessions;
}

void Coordinator::Impl::CollectGarbage() {
  for (std::uint32_t o : gc_owners_) {
    Owner& owner = owners_[o];
    if (!owner.live || owner.lease_count || !owner.waits.empty()) continue;
    assert(wfg_.OutEdges(o).empty() && wfg_.InEdges(o).empty());
    sessions_[owner.session].owners.erase(Str(owner.name()));
    wfg_.RemoveNode(o);
    owner.live = false;
    owner.full.clear();
    free_owners_.push_back(o);
    --stats_.live_owners;
  }
  gc_owners_.clear();
  for (std::uint32_t r : gc_resources_) {
    Resource& res = resources_[r];
    if (!res.live || res.holder_head != kNone || !res.waits.empty()) continue;
    resource_index_.Erase(res.tag, [r](std::uint32_t id) { return id == r; });
    res.live = false;
    res.name.clear();
    res.waits.shrink_to_fit();
    free_resources_.push_back(r);
    --stats_.live_resources;
  }
  gc_resources_.clear();
}

// ============================================================ commands

void Coordinator::Impl::DoHello(const Hello& c, Reply& r) {
  if (!CheckName("session", c.session, r) || !CheckName("secret", c.secret, r) ||
      !CheckName("client", c.client, r, true) || !CheckTtl(c.ttl_ms, r)) {
    return;
  }
  if (session_index_.count(c.session)) {
    Fail(r, Code::kBadRequest, "session '" + c.session + "' already exists");
    return;
  }
  std::uint32_t s;
  if (!free_sessions_.empty()) {
    s = free_sessions_.back();
    free_sessions_.pop_back();
  } else {
    s = static_cast<std::uint32_t>(sessions_.size());
    sessions_.emplace_back();
  }
  Session& session = sessions_[s];
  session.id = c.session;
  session.secret = c.secret;
  session.client = c.client;
  session.ttl_us = c.ttl_ms * 1000;
  session.priority = c.priority;
  session.lease_count = 0;
  session.live = true;
  session_index_.emplace(c.session, s);
  RenewSession(s);
  ++stats_.sessions_opened;
  ++stats_.live_sessions;
  r.session = c.session;
  r.secret = c.secret;
  r.heartbeat_ms = std::max<std::int64_t>(1, c.ttl_ms / 3);
  r.epoch = epoch_;
}

void Coordinator::Impl::DoHeartbeat(const Heartbeat& c, Reply& r) {
  std::uint32_t s = Authenticate(c.auth, r);
  if (s != kNone) RenewSession(s);
}

void Coordinator::Impl::DoBye(const Bye& c, Reply& r) {
  std::uint32_t s = Authenticate(c.auth, r);
  if (s != kNone) CloseSession(s, false);
}

void Coordinator::Impl::DoAcquire(const Acquire& c, Reply& r) {
  const std::uint32_t s = Authenticate(c.auth, r);
  if (s == kNone || !CheckName("owner", c.owner, r) || !CheckName("resource", c.resource, r) ||
      !CheckName("site", c.site, r, true) || !CheckMode(c.mode, r) || !CheckTtl(c.ttl_ms, r)) {
    return;
  }
  if (c.wait_ms < -1) {
    Fail(r, Code::kBadRequest, "wait_ms must be -1 (forever), 0 (try) or positive, got " + std::to_string(c.wait_ms));
    return;
  }
  std::uint32_t o = FindOwner(s, c.owner);
  const std::uint32_t tag = internal::HashTag(c.resource);
  std::uint32_t res = FindResource(c.resource, tag);
  const std::uint32_t held = FindHold(o, res);
  // During a grace only a lease the owner holds already (reclaimed) is answered.
  if (held == kNone || leases_[held].awaiting || !Covers(leases_[held].mode, c.mode)) {
    if (RefuseInGrace(r, res == kNone ? kNoResourceYet : res)) return;
  }
  bool upgrade = false;
  if (held != kNone) {
    const Lease& lease = leases_[held];
    if (lease.revoked) {
      Fail(r, Code::kBadRequest, "lease " + std::to_string(lease.id) + " on " + c.resource +
                                     " was revoked; release it before acquiring again");
      return;
    }
    if (Covers(lease.mode, c.mode)) {
      RenewSession(s);
      r.granted = true;
      r.lease = lease.id;
      r.token = lease.token;
      r.started = owners_[o].started;
      return;
    }
    upgrade = true;
  }
  if (FindWait(o, res) != kNone) {
    Fail(r, Code::kBadRequest, "owner '" + c.owner + "' already waits for " + c.resource);
    return;
  }
  if (o != kNone && owners_[o].waits.size() >= config_.max_waits_per_owner) {
    Fail(r, Code::kLimit, "owner '" + c.owner + "' already waits for " +
                              std::to_string(config_.max_waits_per_owner) + " resources");
    return;
  }
  if (!upgrade && sessions_[s].lease_count >= config_.max_leases_per_session) {
    Fail(r, Code::kLimit, "session holds " + std::to_string(sessions_[s].lease_count) + " leases, the limit");
    return;
  }
  if (!TokenAvailable()) {
    Fail(r, Code::kInternal, "fencing tokens of epoch " + std::to_string(epoch_) +
                                 " are used up; waiting for the next epoch to be persisted");
    return;
  }
  if (!CheckOrder(o, res, c.auth.session, c.owner, c.resource, c.site, c.wait_ms != 0, false, r)) return;
  if (res == kNone) res = CreateResource(c.resource, tag);
  o = FindOrCreateOwner(s, c.owner, c.started);
  // A retry passing back an earlier `started` keeps the owner's age (wound-wait),
  // also when the owner is still known from other holds; applied unless refused.
  const TimeUs started = c.started ? std::min(owners_[o].started, std::min(*c.started, now_)) : owners_[o].started;
  r.started = started;
  const std::int64_t ttl_us = c.ttl_ms * 1000;
  WaitRec probe;
  probe.owner = o;
  probe.resource = res;
  probe.mode = c.mode;
  bool queue_free = true;
  for (std::uint32_t w : resources_[res].waits) queue_free = queue_free && waits_[w].reported;
  if (CanGrant(probe) && (queue_free || upgrade)) {
    CommitOrder();
    owners_[o].started = started;
    std::uint32_t l = held;
    if (upgrade) {
      ChangeHoldMode(l, c.mode);
      leases_[l].ttl_us = ttl_us;
      leases_[l].expires = now_ + ttl_us;
      lease_timers_.Set(l, leases_[l].expires);
      ++stats_.grants;
    } else {
      l = NewLease(o, res, c.mode, ttl_us, false, sites_.Intern(c.site));
    }
    RenewSession(s);
    r.granted = true;
    r.lease = leases_[l].id;
    r.token = leases_[l].token;
    return;
  }
  if (c.wait_ms == 0) {
    // A try that breaks a declared rule is reported whether or not the resource
    // happens to be free (it learns no edge: it could not have blocked).
    CommitOrder();
    ++stats_.timeouts;
    Fail(r, Code::kTimeout, c.resource + " is busy and wait_ms is 0");
    return;
  }
  CommitOrder();
  owners_[o].started = started;
  const TimeUs deadline = c.wait_ms < 0 ? kNever : now_ + c.wait_ms * 1000;
  current_wait_ = NewWait(o, res, c.mode, false, upgrade, c.request_id, deadline, ttl_us, sites_.Intern(c.site));
  ++stats_.queued;
  Resolve();
  if (current_granted_) {
    RenewSession(s);
    r.granted = true;
    r.lease = leases_[current_lease_].id;
    r.token = leases_[current_lease_].token;
    return;
  }
  if (current_denied_) {
    r.code = Code::kDeadlock;
    r.message = "deadlock: " + c.resource + " closes a cycle and this owner is the victim (" + current_denied_->why + ")";
    r.deadlock = current_denied_;
    return;
  }
  RenewSession(s);
  r.queued = true;
  current_wait_ = kNone;
}

// ============================================================ ordering

bool Coordinator::Impl::CheckOrder(std::uint32_t o, std::uint32_t res, const std::string& session,
                                   const std::string& owner, const std::string& resource, const std::string& site,
                                   bool can_block, bool report_mode, Reply& r) {
  order_pending_ = false;
  if (!order_.enabled() || o == kNone || owners_[o].lease_count == 0) return true;
  order_held_.clear();
  for (std::uint32_t l = owners_[o].lease_head; l != kNone; l = leases_[l].own_next) {
    if (leases_[l].resource == res) continue;
    order_held_.push_back(HeldRef{resources_[leases_[l].resource].name, sites_.Get(leases_[l].site)});
  }
  if (order_held_.empty()) return true;
  std::reverse(order_held_.begin(), order_held_.end());  // the list is newest first
  order_request_ = OrderRequest{session, owner, resource, site, can_block, report_mode, order_held_};
  order_verdict_ = order_.Check(order_request_);
  if (order_verdict_.deny) {
    auto [report, first] = order_.CommitDenied(order_request_, order_verdict_, now_);
    if (first) Emit(OrderReportEvent{session, report});
    r.order = std::move(report);
    Fail(r, Code::kOrderViolation, order_verdict_.message);
    return false;
  }
  order_pending_ = true;
  return true;
}

void Coordinator::Impl::CommitOrder() {
  if (!order_pending_) return;
  order_pending_ = false;
  for (auto& report : order_.Commit(order_request_, order_verdict_, now_)) {
    Emit(OrderReportEvent{std::string(order_request_.session), std::move(report)});
  }
}

void Coordinator::Impl::DoRenew(const Renew& c, Reply& r) {
  const std::uint32_t s = Authenticate(c.auth, r);
  if (s == kNone || (c.ttl_ms && !CheckTtl(*c.ttl_ms, r))) return;
  const std::uint32_t l = FindLease(c.lease);
  if (l == kNone) {
    Fail(r, Code::kNotOwner, "lease " + std::to_string(c.lease) + " is not held (released, expired or never granted)");
    return;
  }
  Lease& lease = leases_[l];
  if (owners_[lease.owner].session != s) {
    Fail(r, Code::kNotOwner, "lease " + std::to_string(c.lease) + " belongs to another session");
    return;
  }
  if (lease.revoked) {
    Fail(r, Code::kNotOwner, "lease " + std::to_string(c.lease) + " was revoked");
    return;
  }
  if (lease.awaiting) {
    Fail(r, Code::kGrace, "lease " + std::to_string(c.lease) + " was restored after a restart: reclaim it first");
    return;
  }
  const std::int64_t ttl_ms = c.ttl_ms.value_or(lease.ttl_us / 1000);
  if (!CheckTtl(ttl_ms, r)) return;
  lease.ttl_us = ttl_ms * 1000;
  lease.expires = now_ + lease.ttl_us;
  lease_timers_.Set(l, lease.expires);
  RenewSession(s);
  r.expires_in_ms = ttl_ms;
  r.lease = lease.id;
  r.token = lease.token;
}

void Coordinator::Impl::DoRelease(const Release& c, Reply& r) {
  const std::uint32_t s = Authenticate(c.auth, r);
  if (s == kNone) return;
  std::uint32_t l = kNone;
  if (c.lease) {
    l = FindLease(*c.lease);
    if (l == kNone) {
      Fail(r, Code::kNotOwner, "lease " + std::to_string(*c.lease) + " is not held (released, expired or never granted)");
      return;
    }
    if (owners_[leases_[l].owner].session != s) {
      Fail(r, Code::kNotOwner, "lease " + std::to_string(*c.lease) + " belongs to another session");
      return;
    }
  } else {
    if (!CheckName("owner", c.owner, r) || !CheckName("resource", c.resource, r)) return;
    l = FindHold(FindOwner(s, c.owner), FindResource(c.resource));
    if (l == kNone) {
      Fail(r, Code::kNotOwner, "owner '" + c.owner + "' holds no lease on " + c.resource);
      return;
    }
  }
  r.lease = leases_[l].id;
  ++stats_.releases;
  EndLease(l);
  RenewSession(s);
}

void Coordinator::Impl::DoHold(const Hold& c, Reply& r) {
  const std::uint32_t s = Authenticate(c.auth, r);
  if (s == kNone || !CheckName("owner", c.owner, r) || !CheckName("resource", c.resource, r) ||
      !CheckName("site", c.site, r, true) || !CheckMode(c.mode, r) || !CheckTtl(c.ttl_ms, r)) {
    return;
  }
  std::uint32_t o = FindOwner(s, c.owner);
  const std::uint32_t tag = internal::HashTag(c.resource);
  std::uint32_t res = FindResource(c.resource, tag);
  if (RefuseInGrace(r, res == kNone ? kNoResourceYet : res)) return;
  std::uint32_t l = FindHold(o, res);
  if (l == kNone && sessions_[s].lease_count >= config_.max_leases_per_session) {
    Fail(r, Code::kLimit, "session holds " + std::to_string(sessions_[s].lease_count) + " leases, the limit");
    return;
  }
  if ((l == kNone || !Covers(leases_[l].mode, c.mode)) && !TokenAvailable()) {
    Fail(r, Code::kInternal, "fencing tokens of epoch " + std::to_string(epoch_) + " are used up");
    return;
  }
  if (l != kNone && !leases_[l].reported && !Covers(leases_[l].mode, c.mode)) {
    Fail(r, Code::kBadRequest, "owner '" + c.owner + "' holds a granted S lease on " + c.resource +
                                   "; acquire X to upgrade it");
    return;
  }
  // A hold that ends the owner's wait for it was checked as that wait.
  if (l == kNone && (o == kNone || res == kNone || FindWait(o, res) == kNone)) {
    CheckOrder(o, res, c.auth.session, c.owner, c.resource, c.site, true, true, r);
    CommitOrder();
  }
  if (res == kNone) res = CreateResource(c.resource, tag);
  o = FindOrCreateOwner(s, c.owner, std::nullopt);
  // The hold ends the owner's wait for this resource, if any. The queue moves on
  // only once the hold is recorded, so that nothing is granted past it.
  if (std::uint32_t w = FindWait(o, res); w != kNone) {
    if (waits_[w].reported) EndWait(w, /*pump=*/false);
    else DenyWait(w, Code::kCancelled, nullptr, /*pump=*/false);
  }
  auto count_conflicts = [&] {
    bool counted = false;
    for (std::uint32_t x = resources_[res].holder_head; x != kNone; x = leases_[x].res_next) {
      if (leases_[x].owner != o && !Compatible(leases_[x].mode, c.mode)) {
        if (!counted) ++stats_.conflicting_holds;
        counted = true;
        Emit(ConflictingHoldEvent{sessions_[s].id, c.owner, c.resource, owners_[leases_[x].owner].full});
      }
    }
  };
  const std::int64_t ttl_us = c.ttl_ms * 1000;
  if (l != kNone) {
    if (!Covers(leases_[l].mode, c.mode)) {
      count_conflicts();
      ChangeHoldMode(l, c.mode);
    }
    if (!leases_[l].revoked) {
      leases_[l].ttl_us = ttl_us;
      leases_[l].expires = now_ + ttl_us;
      lease_timers_.Set(l, leases_[l].expires);
    }
  } else {
    count_conflicts();
    l = NewLease(o, res, c.mode, ttl_us, true, sites_.Intern(c.site));
  }
  Pump(res);
  RenewSession(s);
  r.lease = leases_[l].id;
  r.token = leases_[l].token;
}

void Coordinator::Impl::DoWait(const Wait& c, Reply& r) {
  const std::uint32_t s = Authenticate(c.auth, r);
  if (s == kNone || !CheckName("owner", c.owner, r) || !CheckName("resource", c.resource, r) ||
      !CheckName("site", c.site, r, true) || !CheckMode(c.mode, r)) {
    return;
  }
  std::uint32_t o = FindOwner(s, c.owner);
  const std::uint32_t tag = internal::HashTag(c.resource);
  std::uint32_t res = FindResource(c.resource, tag);
  if (RefuseInGrace(r, res == kNone ? kNoResourceYet : res)) return;
  const std::uint32_t held = FindHold(o, res);
  if (held != kNone && leases_[held].mode == Mode::kExclusive) {
    auto report = std::make_shared<DeadlockReport>();
    report->id = next_report_id_++;
    CycleEdge e;
    e.owner = e.held_by = owners_[o].full;
    e.waits_for = c.resource;
    e.mode = c.mode;
    e.site = c.site;
    report->cycle.push_back(std::move(e));
    report->victim = owners_[o].full;
    report->why = "self-deadlock: the owner waits for what it holds";
    report->detected_at_us = now_;
    report->report_mode = true;
    ++stats_.deadlocks;
    Emit(DeadlockEvent{report});
    r.code = Code::kDeadlock;
    r.message = "self-deadlock: '" + c.owner + "' waits for " + c.resource + ", which it holds in X";
    r.deadlock = std::move(report);
    return;
  }
  if (held != kNone && c.mode == Mode::kShared) {
    RenewSession(s);  // holds S, waits S: nothing to wait for
    return;
  }
  if (std::uint32_t w = FindWait(o, res); w != kNone) {
    if (waits_[w].mode == c.mode && waits_[w].reported) {
      RenewSession(s);  // a re-sent report
      return;
    }
    Fail(r, Code::kBadRequest, "owner '" + c.owner + "' already waits for " + c.resource + " in another way");
    return;
  }
  if (o != kNone && owners_[o].waits.size() >= config_.max_waits_per_owner) {
    Fail(r, Code::kLimit, "owner '" + c.owner + "' already waits for " +
                              std::to_string(config_.max_waits_per_owner) + " resources");
    return;
  }
  CheckOrder(o, res, c.auth.session, c.owner, c.resource, c.site, true, true, r);
  CommitOrder();
  if (res == kNone) res = CreateResource(c.resource, tag);
  o = FindOrCreateOwner(s, c.owner, std::nullopt);
  current_wait_ = NewWait(o, res, c.mode, true, held != kNone, 0, kNever, 0, sites_.Intern(c.site));
  Resolve();
  if (current_denied_) {
    r.code = Code::kDeadlock;
    r.message = "deadlock: waiting for " + c.resource + " closes a cycle and this owner is the victim (" +
                current_denied_->why + ")";
    r.deadlock = current_denied_;
    return;
  }
  current_wait_ = kNone;
  RenewSession(s);
}

void Coordinator::Impl::DoUnwait(const Unwait& c, Reply& r) {
  const std::uint32_t s = Authenticate(c.auth, r);
  if (s == kNone || !CheckName("owner", c.owner, r) || !CheckName("resource", c.resource, r)) return;
  const std::uint32_t o = FindOwner(s, c.owner);
  const std::uint32_t res = FindResource(c.resource);
  if (std::uint32_t w = FindWait(o, res); w != kNone) {
    if (waits_[w].reported) EndWait(w);
    else DenyWait(w, Code::kCancelled, nullptr);
    r.cancelled = true;
  } else if (std::uint32_t l = FindHold(o, res); l != kNone) {
    r.granted = true;
    r.lease = leases_[l].id;
    r.token = leases_[l].token;
  }
  RenewSession(s);
}

void Coordinator::Impl::DoRevoke(const Revoke& c, Reply& r) {
  std::vector<std::uint32_t> targets;
  if (c.lease) {
    const std::uint32_t l = FindLease(*c.lease);
    if (l == kNone) {
      Fail(r, Code::kNotOwner, "lease " + std::to_string(*c.lease) + " is not held");
      return;
    }
    targets.push_back(l);
  } else {
    if (!CheckName("resource", c.resource, r)) return;
    const std::uint32_t res = FindResource(c.resource);
    for (std::uint32_t l = res == kNone ? kNone : resources_[res].holder_head; l != kNone; l = leases_[l].res_next) {
      targets.push_back(l);
    }
  }
  for (std::uint32_t l : targets) {
    if (!leases_[l].live || leases_[l].revoked) continue;
    r.revoked.push_back(leases_[l].id);
    RevokeLease(l, RevokeReason::kOperator, nullptr);
  }
}

void Coordinator::Impl::DoSetEpoch(const SetEpoch& c, Reply& r) {
  if (c.epoch <= epoch_ || c.epoch >= kEpochLimit) {
    Fail(r, Code::kBadRequest, "epoch " + std::to_string(c.epoch) + " must be above " + std::to_string(epoch_) +
                                   " and below " + std::to_string(kEpochLimit));
    return;
  }
  epoch_ = c.epoch;
  seq_ = 1;
  epoch_requested_ = false;
  r.epoch = epoch_;
  // Grants that waited for token space can go ahead now.
  for (std::uint32_t res = 0; res < resources_.size(); ++res) {
    if (resources_[res].live) Pump(res);
  }
}

// ============================================================ restart

void Coordinator::Impl::DoRestore(const Restore& c, Reply& r) {
  // A large state is restored in several Restore commands (each journal record stays
  // small), all before anything else.
  if (!only_restores_) {
    Fail(r, Code::kBadRequest, "restore must come before any other command");
    return;
  }
  if (c.grace_ms < 0 || c.grace_ms > config_.max_ttl_ms) {
    Fail(r, Code::kBadRequest, "grace_ms must be in [0, max_ttl_ms], got " + std::to_string(c.grace_ms));
    return;
  }
  // Everything is checked before anything is created: a refused restore changes nothing.
  std::unordered_map<std::string, std::size_t> sessions;
  for (std::size_t i = 0; i < c.sessions.size(); ++i) {
    const RestoredSession& x = c.sessions[i];
    if (!CheckName("session", x.session, r) || !CheckName("secret", x.secret, r) ||
        !CheckName("client", x.client, r, true) || !CheckTtl(x.ttl_ms, r)) {
      return;
    }
    if (!sessions.emplace(x.session, i).second) {
      Fail(r, Code::kBadRequest, "session '" + x.session + "' is restored twice");
      return;
    }
  }
  std::unordered_set<LeaseId> ids;
  for (const RestoredSession& x : c.sessions) {
    if (session_index_.count(x.session)) {
      Fail(r, Code::kBadRequest, "session '" + x.session + "' is restored twice");
      return;
    }
  }
  for (const RestoredLease& x : c.leases) {
    if (!sessions.count(x.session) && !session_index_.count(x.session)) {
      Fail(r, Code::kBadRequest, "lease " + std::to_string(x.lease) + " names session '" + x.session +
                                     "', which is not restored");
      return;
    }
    if (!CheckName("owner", x.owner, r) || !CheckName("resource", x.resource, r) ||
        !CheckName("site", x.site, r, true) || !CheckMode(x.mode, r) || !CheckTtl(x.ttl_ms, r)) {
      return;
    }
    if ((x.token >> kSeqBits) >= epoch_ || (x.lease >> kSeqBits) >= epoch_) {
      Fail(r, Code::kBadRequest, "lease " + std::to_string(x.lease) + " has a token of epoch " +
                                     std::to_string(x.token >> kSeqBits) + ", not below the current " +
                                     std::to_string(epoch_));
      return;
    }
    if (!ids.insert(x.lease).second || FindLease(x.lease) != kNone) {
      Fail(r, Code::kBadRequest, "lease " + std::to_string(x.lease) + " is restored twice");
      return;
    }
  }
  const TimeUs grace_us = c.grace_ms * 1000;
  for (const RestoredSession& x : c.sessions) {
    Hello h{x.session, x.secret, x.client, x.ttl_ms, x.priority};
    DoHello(h, r);
    const std::uint32_t s = session_index_.at(x.session);
    sessions_[s].expires = now_ + std::max(sessions_[s].ttl_us, grace_us);
    session_timers_.Set(s, sessions_[s].expires);
  }
  for (const RestoredLease& x : c.leases) {
    const std::uint32_t s = session_index_.at(x.session);
    const std::uint32_t tag = internal::HashTag(x.resource);
    std::uint32_t res = FindResource(x.resource, tag);
    if (res == kNone) res = CreateResource(x.resource, tag);
    const std::uint32_t o = FindOrCreateOwner(s, x.owner, x.started);
    const std::uint32_t l = NewLease(o, res, x.mode, x.ttl_ms * 1000, false, sites_.Intern(x.site), &x);
    Lease& lease = leases_[l];
    lease.awaiting = true;
    lease.revoked = x.revoked;
    lease.expires = now_ + grace_us;  // unless reclaimed, it ends with the grace
    lease_timers_.Set(l, lease.expires);
    // A lease revoked before the restart still passes to its waiters at the latest
    // when the grace ends (its victim cannot reclaim it).
    if (x.revoked) handover_timers_.Set(l, lease.expires);
    ++awaiting_;
    --stats_.grants;  // restored, not granted
    ++stats_.restored_leases;
  }
  grace_until_ = now_ + grace_us;
  grant_unclaimed_ = c.grant_unclaimed;
  r = Reply{};
}

void Coordinator::Impl::DoReclaim(const Reclaim& c, Reply& r) {
  const std::uint32_t s = Authenticate(c.auth, r);
  if (s == kNone) return;
  for (const ReclaimItem& item : c.items) {
    auto refuse = [&](std::string why) {
      ++stats_.reclaims_refused;
      r.items.push_back({Code::kNotOwner, item.owner + " on " + item.resource + ": " + std::move(why), 0});
    };
    const std::uint32_t o = FindOwner(s, item.owner);
    const std::uint32_t l = FindHold(o, FindResource(item.resource));
    if (l == kNone) {
      refuse("no such lease to reclaim (it expired, or was never granted to this session)");
      continue;
    }
    Lease& lease = leases_[l];
    if (lease.mode != item.mode || lease.token != item.token) {
      refuse("the lease held is " + std::string(ModeName(lease.mode)) + " with token " + std::to_string(lease.token) +
             ", not " + std::string(ModeName(item.mode)) + " with token " + std::to_string(item.token));
      continue;
    }
    if (lease.revoked) {
      refuse("the lease was revoked before the restart");
      continue;
    }
    if (lease.awaiting) {
      lease.awaiting = false;
      --awaiting_;
      ++stats_.reclaimed;
      lease.expires = now_ + lease.ttl_us;
      lease_timers_.Set(l, lease.expires);
    }
    r.items.push_back({Code::kOk, "", std::max<TimeUs>(0, lease.expires - now_) / 1000});
  }
  RenewSession(s);
}

Restore Coordinator::RestorePoint() const {
  const Impl& m = *impl_;
  Restore out;
  for (const auto& s : m.sessions_) {
    if (!s.live) continue;
    out.sessions.push_back({s.id, s.secret, s.client, s.ttl_us / 1000, s.priority});
  }
  for (const auto& l : m.leases_) {
    if (!l.live || l.reported) continue;
    const auto& o = m.owners_[l.owner];
    out.leases.push_back({m.sessions_[o.session].id, std::string(o.name()), m.resources_[l.resource].name, l.mode, l.id,
                          l.token, l.ttl_us / 1000, m.sites_.Get(l.site), o.started, l.revoked});
  }
  return out;
}

TimeUs Coordinator::grace_until() const { return impl_->grace_until_; }
bool Coordinator::in_grace() const { return impl_->InGrace(); }

// ============================================================ queries

Coordinator::Coordinator(Config config, std::uint32_t epoch, std::uint64_t first_seq)
    : impl_(std::make_unique<Impl>(std::move(config), epoch, first_seq)) {}
Coordinator::~Coordinator() = default;

Effects Coordinator::Apply(const Command& command, TimeUs now) { return impl_->Apply(command, now); }
TimeUs Coordinator::NextDeadline() const { return impl_->NextDeadline(); }
const Config& Coordinator::config() const { return impl_->config_; }
const Stats& Coordinator::stats() const { return impl_->stats_; }
const OrderChecker& Coordinator::order() const { return impl_->order_; }
OrderChecker& Coordinator::order() { return impl_->order_; }
std::uint32_t Coordinator::epoch() const { return impl_->epoch_; }
Token Coordinator::last_token() const { return impl_->last_token_; }

std::vector<LeaseInfo> Coordinator::Leases() const {
  const Impl& m = *impl_;
  std::vector<LeaseInfo> out;
  for (const auto& lease : m.leases_) {
    if (!lease.live) continue;
    const auto& o = m.owners_[lease.owner];
    LeaseInfo info;
    info.lease = lease.id;
    info.token = lease.token;
    info.session = m.sessions_[o.session].id;
    info.owner = Str(o.name());
    info.resource = m.resources_[lease.resource].name;
    info.mode = lease.mode;
    info.expires_at_us = lease.expires;
    info.reported = lease.reported;
    info.revoked = lease.revoked;
    const std::uint32_t slot = static_cast<std::uint32_t>(&lease - m.leases_.data());
    info.handover_at_us = m.handover_timers_.Contains(slot) ? m.handover_timers_.At(slot) : kNever;
    info.site = m.sites_.Get(lease.site);
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const LeaseInfo& a, const LeaseInfo& b) { return a.lease < b.lease; });
  return out;
}

std::vector<WaitInfo> Coordinator::Waits() const {
  const Impl& m = *impl_;
  std::vector<std::uint32_t> live;
  for (std::uint32_t r = 0; r < m.resources_.size(); ++r) {
    if (m.resources_[r].live && !m.resources_[r].waits.empty()) live.push_back(r);
  }
  std::sort(live.begin(), live.end(),
            [&](std::uint32_t a, std::uint32_t b) { return m.resources_[a].name < m.resources_[b].name; });
  std::vector<WaitInfo> out;
  for (std::uint32_t r : live) {
    for (std::uint32_t w : m.resources_[r].waits) {
      const auto& rec = m.waits_[w];
      const auto& o = m.owners_[rec.owner];
      WaitInfo info;
      info.session = m.sessions_[o.session].id;
      info.owner = Str(o.name());
      info.resource = m.resources_[r].name;
      info.mode = rec.mode;
      info.reported = rec.reported;
      info.upgrade = rec.upgrade;
      info.request_id = rec.request_id;
      info.since_us = rec.since;
      info.deadline_us = rec.deadline;
      info.site = m.sites_.Get(rec.site);
      out.push_back(std::move(info));
    }
  }
  return out;
}

std::vector<OwnerEdge> Coordinator::WaitForEdges() const {
  const Impl& m = *impl_;
  std::vector<OwnerEdge> out;
  for (const auto& [key, count] : m.edges_) {
    OwnerEdge e;
    e.from = m.owners_[key >> 32].full;
    e.to = m.owners_[static_cast<std::uint32_t>(key)].full;
    e.hard = count.hard > 0;
    e.soft = count.soft > 0;
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const OwnerEdge& a, const OwnerEdge& b) {
    return a.from != b.from ? a.from < b.from : a.to < b.to;
  });
  return out;
}

std::vector<std::string> Coordinator::Sessions() const {
  std::vector<std::string> out;
  for (const auto& s : impl_->sessions_) {
    if (s.live) out.push_back(s.id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> Coordinator::SecretOf(const std::string& session) const {
  auto it = impl_->session_index_.find(session);
  if (it == impl_->session_index_.end()) return std::nullopt;
  return impl_->sessions_[it->second].secret;
}

std::optional<TimeUs> Coordinator::OwnerStarted(const std::string& session, const std::string& owner) const {
  const Impl& m = *impl_;
  auto it = m.session_index_.find(session);
  if (it == m.session_index_.end()) return std::nullopt;
  std::uint32_t o = m.FindOwner(it->second, owner);
  if (o == kNone) return std::nullopt;
  return m.owners_[o].started;
}

std::vector<std::vector<std::string>> Coordinator::AuditCycles() const {
  const Impl& m = *impl_;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> edges;
  edges.reserve(m.edges_.size());
  for (const auto& [key, count] : m.edges_) edges.emplace_back(key >> 32, static_cast<std::uint32_t>(key));
  std::vector<std::vector<std::string>> out;
  for (const auto& component :
       internal::CyclicComponents(static_cast<std::uint32_t>(m.owners_.size()), edges)) {
    std::vector<std::string> names;
    for (std::uint32_t o : component) names.push_back(m.owners_[o].full);
    std::sort(names.begin(), names.end());
    out.push_back(std::move(names));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Coordinator::ToDot() const {
  const Impl& m = *impl_;
  std::vector<internal::DotVertex> vertices;
  std::vector<internal::DotEdge> edges;
  std::unordered_map<std::uint32_t, std::uint32_t> owner_v, resource_v;
  auto owner_vertex = [&](std::uint32_t o) {
    auto [it, fresh] = owner_v.emplace(o, static_cast<std::uint32_t>(vertices.size()));
    if (fresh) vertices.push_back({m.owners_[o].full, false});
    return it->second;
  };
  auto resource_vertex = [&](std::uint32_t r) {
    auto [it, fresh] = resource_v.emplace(r, static_cast<std::uint32_t>(vertices.size()));
    if (fresh) vertices.push_back({m.resources_[r].name, true});
    return it->second;
  };
  std::vector<std::uint32_t> order;
  for (std::uint32_t r = 0; r < m.resources_.size(); ++r) {
    if (m.resources_[r].live) order.push_back(r);
  }
  std::sort(order.begin(), order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return m.resources_[a].name < m.resources_[b].name; });
  for (std::uint32_t r : order) {
    const std::uint32_t rv = resource_vertex(r);
    for (std::uint32_t l = m.resources_[r].holder_head; l != kNone; l = m.leases_[l].res_next) {
      const auto& lease = m.leases_[l];
      edges.push_back({rv, owner_vertex(lease.owner),
                       "holds " + std::string(ModeName(lease.mode)) + (lease.revoked ? " (revoked)" : ""),
                       lease.revoked ? "dotted" : "bold"});
    }
    for (std::uint32_t w : m.resources_[r].waits) {
      const auto& rec = m.waits_[w];
      edges.push_back({owner_vertex(rec.owner), rv,
                       "waits " + std::string(ModeName(rec.mode)) + (rec.reported ? " (reported)" : ""),
                       "dashed"});
    }
  }
  return internal::WriteDot(vertices, edges);
}

std::string Coordinator::CheckInvariants() const {
  const Impl& m = *impl_;
  // Recompute every edge from the tables and compare with the counts.
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, std::uint32_t>> expect;
  for (std::uint32_t r = 0; r < m.resources_.size(); ++r) {
    const auto& res = m.resources_[r];
    if (!res.live) continue;
    if (res.holder_head == kNone && res.waits.empty()) return "idle resource left behind: " + res.name;
    for (std::size_t i = 0; i < res.waits.size(); ++i) {
      const auto& w = m.waits_[res.waits[i]];
      if (!w.live || w.resource != r) return "dead or misplaced wait on " + res.name;
      for (std::uint32_t l = res.holder_head; l != kNone; l = m.leases_[l].res_next) {
        const auto& lease = m.leases_[l];
        if (lease.owner != w.owner && !Compatible(lease.mode, w.mode)) ++expect[EdgeKey(w.owner, lease.owner)].first;
      }
      if (w.reported) continue;
      for (std::size_t j = 0; j < i; ++j) {
        const auto& e = m.waits_[res.waits[j]];
        if (!e.reported && e.owner != w.owner && !Compatible(e.mode, w.mode)) ++expect[EdgeKey(w.owner, e.owner)].second;
      }
    }
    // A queue head that could be granted must have been.
    for (std::uint32_t w : res.waits) {
      if (m.waits_[w].reported) continue;
      if (m.CanGrant(m.waits_[w]) && m.TokenAvailable()) return "grantable queue head left waiting on " + res.name;
      break;
    }
  }
  if (expect.size() != m.edges_.size()) {
    return "edge count mismatch: tables give " + std::to_string(expect.size()) + ", graph has " +
           std::to_string(m.edges_.size());
  }
  std::size_t ordered = 0;
  for (const auto& [key, count] : m.edges_) {
    auto it = expect.find(key);
    if (it == expect.end() || it->second.first != count.hard || it->second.second != count.soft) {
      return "edge " + m.owners_[key >> 32].full + " -> " + m.owners_[static_cast<std::uint32_t>(key)].full +
             " has wrong counts";
    }
    const bool in_wfg = m.wfg_.HasEdge(static_cast<std::uint32_t>(key >> 32), static_cast<std::uint32_t>(key));
    if (in_wfg != count.ordered) return "edge order flag disagrees with the wait-for graph";
    ordered += count.ordered;
    const bool in_closing = std::find(m.closing_.begin(), m.closing_.end(), key) != m.closing_.end();
    if (in_closing == count.ordered) return "closing list disagrees with the edge flags";
  }
  if (ordered != m.wfg_.EdgeCount()) return "wait-for graph has edges the tables do not";
  if (!m.wfg_.CheckInvariants()) return "wait-for graph order broken";
  std::size_t live_leases = 0;
  for (std::uint32_t l = 0; l < m.leases_.size(); ++l) {
    const auto& lease = m.leases_[l];
    if (!lease.live) continue;
    ++live_leases;
    if (!m.owners_[lease.owner].live) return "lease of a dead owner";
    if (m.FindLease(lease.id) != l) return "lease missing from the index";
    if (!m.lease_timers_.Contains(l)) return "lease without an expiry timer";
    if (lease.revoked && !lease.reported && !m.handover_timers_.Contains(l)) return "revoked lease without hand-over";
  }
  if (live_leases != m.stats_.live_leases || live_leases != m.lease_index_.size()) return "lease count mismatch";
  for (const auto& o : m.owners_) {
    if (o.live && o.lease_count == 0 && o.waits.empty()) return "idle owner left behind: " + o.full;
  }
  return "";
}

// ============================================================ images

namespace {

constexpr std::string_view kImageMagic = "lockgraph-image-1";

void SaveIndexes(internal::ImageWriter& w, const std::vector<std::uint32_t>& v) {
  w.U32(static_cast<std::uint32_t>(v.size()));
  for (std::uint32_t x : v) w.U32(x);
}

std::vector<std::uint32_t> LoadIndexes(internal::ImageReader& r, const char* what) {
  std::vector<std::uint32_t> v(r.Count(4, what));
  for (std::uint32_t& x : v) x = r.U32();
  return v;
}

Mode LoadMode(internal::ImageReader& r) {
  const std::uint8_t m = r.U8();
  if (m != static_cast<std::uint8_t>(Mode::kShared) && m != static_cast<std::uint8_t>(Mode::kExclusive)) {
    r.Fail("a mode of " + std::to_string(m));
  }
  return static_cast<Mode>(m);
}

void SaveReport(internal::ImageWriter& w, const DeadlockReport& d) {
  w.U64(d.id);
  w.U32(static_cast<std::uint32_t>(d.cycle.size()));
  for (const CycleEdge& e : d.cycle) {
    w.Str(e.owner);
    w.Str(e.waits_for);
    w.U8(static_cast<std::uint8_t>(e.mode));
    w.Str(e.held_by);
    w.Str(e.site);
    w.Bool(e.soft);
  }
  w.Str(d.victim);
  w.U8(static_cast<std::uint8_t>(d.step));
  w.Str(d.why);
  w.I64(d.detected_at_us);
  w.Bool(d.report_mode);
  w.I32(d.attempt);
  w.U32(static_cast<std::uint32_t>(d.unresponsive.size()));
  for (const std::string& u : d.unresponsive) w.Str(u);
}

std::shared_ptr<const DeadlockReport> LoadReport(internal::ImageReader& r) {
  auto d = std::make_shared<DeadlockReport>();
  d->id = r.U64();
  d->cycle.resize(r.Count(21, "a report's cycle"));
  for (CycleEdge& e : d->cycle) {
    e.owner = r.Str();
    e.waits_for = r.Str();
    e.mode = LoadMode(r);
    e.held_by = r.Str();
    e.site = r.Str();
    e.soft = r.Bool();
  }
  d->victim = r.Str();
  const std::uint8_t step = r.U8();
  if (step > static_cast<std::uint8_t>(VictimStep::kLowestId)) r.Fail("a victim step of " + std::to_string(step));
  d->step = static_cast<VictimStep>(step);
  d->why = r.Str();
  d->detected_at_us = r.I64();
  d->report_mode = r.Bool();
  d->attempt = r.I32();
  d->unresponsive.resize(r.Count(4, "a report's unresponsive victims"));
  for (std::string& u : d->unresponsive) u = r.Str();
  return d;
}

// Stats holds nothing but 64-bit counters; an image keeps them as words.
constexpr std::size_t kStatsWords = sizeof(Stats) / sizeof(std::uint64_t);
static_assert(sizeof(Stats) % sizeof(std::uint64_t) == 0 && std::is_trivially_copyable_v<Stats>);

}  // namespace

void Coordinator::Impl::SaveImage(internal::ImageWriter& w) const {
  w.Str(kImageMagic);
  w.U32(epoch_);
  w.U64(seq_);
  w.Bool(epoch_requested_);
  w.U64(last_token_);
  w.I64(now_);
  w.U64(next_report_id_);
  w.U64(closing_added_);
  w.I64(grace_until_);
  w.U32(awaiting_);
  w.Bool(only_restores_);
  w.Bool(grant_unclaimed_);
  std::uint64_t words[kStatsWords];
  std::memcpy(words, &stats_, sizeof(Stats));
  for (std::uint64_t x : words) w.U64(x);

  w.U32(static_cast<std::uint32_t>(sessions_.size()));
  for (const Session& x : sessions_) {
    w.Bool(x.live);
    if (!x.live) continue;
    w.Str(x.id);
    w.Str(x.secret);
    w.Str(x.client);
    w.I64(x.ttl_us);
    w.I32(x.priority);
    w.I64(x.expires);
    w.U32(x.lease_count);
  }
  SaveIndexes(w, free_sessions_);
  w.U32(static_cast<std::uint32_t>(owners_.size()));
  for (const Owner& o : owners_) {
    w.Bool(o.live);
    w.U32(o.gen);
    if (!o.live) continue;
    w.Str(o.full);
    w.U32(o.session);
    w.U32(o.name_at);
    w.I64(o.started);
    w.U32(o.lease_head);
    w.U32(o.lease_count);
    SaveIndexes(w, o.waits);
  }
  SaveIndexes(w, free_owners_);
  w.U32(static_cast<std::uint32_t>(resources_.size()));
  for (std::size_t i = 0; i < resources_.size(); ++i) {
    const Resource& x = resources_[i];
    w.Bool(x.live);
    if (!x.live) continue;
    w.Str(x.name);
    w.U32(x.holder_head);
    SaveIndexes(w, x.waits);
  }
  SaveIndexes(w, free_resources_);
  w.U32(static_cast<std::uint32_t>(leases_.size()));
  for (const Lease& l : leases_) {
    w.Bool(l.live);
    if (!l.live) continue;
    w.U64(l.id);
    w.U64(l.token);
    w.I64(l.expires);
    w.I64(l.ttl_us);
    for (std::uint32_t x : {l.owner, l.resource, l.res_prev, l.res_next, l.own_prev, l.own_next, l.site}) w.U32(x);
    w.U8(static_cast<std::uint8_t>(l.mode));
    w.Bool(l.reported);
    w.Bool(l.revoked);
    w.Bool(l.awaiting);
  }
  SaveIndexes(w, free_leases_);
  w.U32(static_cast<std::uint32_t>(waits_.size()));
  for (const WaitRec& x : waits_) {
    w.Bool(x.live);
    if (!x.live) continue;
    w.U64(x.request_id);
    w.I64(x.since);
    w.I64(x.deadline);
    w.I64(x.ttl_us);
    w.U32(x.owner);
    w.U32(x.resource);
    w.U32(x.site);
    w.U8(static_cast<std::uint8_t>(x.mode));
    w.Bool(x.reported);
    w.Bool(x.upgrade);
  }
  SaveIndexes(w, free_waits_);
  sites_.SaveImage(w);
  session_timers_.SaveImage(w);
  lease_timers_.SaveImage(w);
  wait_timers_.SaveImage(w);
  handover_timers_.SaveImage(w);
  wfg_.SaveImage(w);
  // The edge counts in key order, so that equal states give equal images.
  std::vector<std::uint64_t> keys;
  keys.reserve(edges_.size());
  for (const auto& [key, count] : edges_) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  w.U32(static_cast<std::uint32_t>(keys.size()));
  for (std::uint64_t key : keys) {
    const EdgeCount& e = edges_.at(key);
    w.U64(key);
    w.U32(e.hard);
    w.U32(e.soft);
    w.Bool(e.ordered);
  }
  w.U32(static_cast<std::uint32_t>(closing_.size()));
  for (std::uint64_t key : closing_) w.U64(key);
  w.U32(static_cast<std::uint32_t>(records_.size()));
  for (const CycleRecord& rec : records_) {
    SaveIndexes(w, rec.owners);
    SaveIndexes(w, rec.key);
    SaveIndexes(w, rec.gens);
    w.Bool(rec.doomed);
    w.U32(rec.victim);
    w.I64(rec.deadline);
    w.I32(rec.attempt);
    SaveIndexes(w, rec.unresponsive);
    w.Bool(rec.report != nullptr);
    if (rec.report) SaveReport(w, *rec.report);
    w.U32(static_cast<std::uint32_t>(rec.victim_waits.size()));
    for (const auto& [resource, mode] : rec.victim_waits) {
      w.Str(resource);
      w.U8(static_cast<std::uint8_t>(mode));
    }
  }
}

void Coordinator::Impl::LoadImage(internal::ImageReader& r) {
  if (r.Str() != kImageMagic) return r.Fail("not a lockgraph image (or one of another version)");
  epoch_ = r.U32();
  seq_ = r.U64();
  epoch_requested_ = r.Bool();
  last_token_ = r.U64();
  now_ = r.I64();
  next_report_id_ = r.U64();
  closing_added_ = r.U64();
  grace_until_ = r.I64();
  awaiting_ = r.U32();
  only_restores_ = r.Bool();
  grant_unclaimed_ = r.Bool();
  std::uint64_t words[kStatsWords];
  for (std::uint64_t& x : words) x = r.U64();
  std::memcpy(&stats_, words, sizeof(Stats));
  if (epoch_ >= kEpochLimit || seq_ == 0 || seq_ > kSeqLimit) r.Fail("epoch or sequence number out of range");

  sessions_.resize(r.Count(1, "sessions"));
  for (std::uint32_t i = 0; i < sessions_.size() && r.ok(); ++i) {
    Session& x = sessions_[i];
    x.live = r.Bool();
    if (!x.live) continue;
    x.id = r.Str();
    x.secret = r.Str();
    x.client = r.Str();
    x.ttl_us = r.I64();
    x.priority = r.I32();
    x.expires = r.I64();
    x.lease_count = r.U32();
    if (r.ok() && !session_index_.emplace(x.id, i).second) r.Fail("session '" + x.id + "' twice");
  }
  free_sessions_ = LoadIndexes(r, "free sessions");
  owners_.resize(r.Count(5, "owners"));
  for (Owner& o : owners_) {
    if (!r.ok()) break;
    o.live = r.Bool();
    o.gen = r.U32();
    if (!o.live) continue;
    o.full = r.Str();
    o.session = r.U32();
    o.name_at = r.U32();
    o.started = r.I64();
    o.lease_head = r.U32();
    o.lease_count = r.U32();
    o.waits = LoadIndexes(r, "an owner's waits");
  }
  free_owners_ = LoadIndexes(r, "free owners");
  const std::uint32_t resource_count = r.Count(1, "resources");
  for (std::uint32_t i = 0; i < resource_count && r.ok(); ++i) {
    Resource& x = resources_.emplace_back();
    x.live = r.Bool();
    if (!x.live) continue;
    x.name = r.Str();
    x.holder_head = r.U32();
    x.waits = LoadIndexes(r, "a resource's queue");
    x.tag = internal::HashTag(x.name);
    if (r.ok() && FindResource(x.name, x.tag) != kNone) return r.Fail("resource '" + x.name + "' twice");
    resource_index_.Insert(x.tag, i);
  }
  free_resources_ = LoadIndexes(r, "free resources");
  leases_.resize(r.Count(1, "leases"));
  for (std::uint32_t i = 0; i < leases_.size() && r.ok(); ++i) {
    Lease& l = leases_[i];
    l.live = r.Bool();
    if (!l.live) continue;
    l.id = r.U64();
    l.token = r.U64();
    l.expires = r.I64();
    l.ttl_us = r.I64();
    for (std::uint32_t* x : {&l.owner, &l.resource, &l.res_prev, &l.res_next, &l.own_prev, &l.own_next, &l.site}) {
      *x = r.U32();
    }
    l.mode = LoadMode(r);
    l.reported = r.Bool();
    l.revoked = r.Bool();
    l.awaiting = r.Bool();
    if (r.ok() && FindLease(l.id) != kNone) return r.Fail("lease " + std::to_string(l.id) + " twice");
    lease_index_.Insert(internal::HashTag(l.id), i);
  }
  free_leases_ = LoadIndexes(r, "free leases");
  waits_.resize(r.Count(1, "waits"));
  for (WaitRec& x : waits_) {
    if (!r.ok()) break;
    x.live = r.Bool();
    if (!x.live) continue;
    x.request_id = r.U64();
    x.since = r.I64();
    x.deadline = r.I64();
    x.ttl_us = r.I64();
    x.owner = r.U32();
    x.resource = r.U32();
    x.site = r.U32();
    x.mode = LoadMode(r);
    x.reported = r.Bool();
    x.upgrade = r.Bool();
  }
  free_waits_ = LoadIndexes(r, "free waits");
  sites_.LoadImage(r);
  session_timers_.LoadImage(r, static_cast<std::uint32_t>(sessions_.size()), "session timers");
  lease_timers_.LoadImage(r, static_cast<std::uint32_t>(leases_.size()), "lease timers");
  wait_timers_.LoadImage(r, static_cast<std::uint32_t>(waits_.size()), "wait timers");
  handover_timers_.LoadImage(r, static_cast<std::uint32_t>(leases_.size()), "hand-over timers");
  wfg_.LoadImage(r);
  const std::uint32_t edge_count = r.Count(17, "wait-for edges");
  for (std::uint32_t i = 0; i < edge_count && r.ok(); ++i) {
    const std::uint64_t key = r.U64();
    EdgeCount e;
    e.hard = r.U32();
    e.soft = r.U32();
    e.ordered = r.Bool();
    if (r.ok() && !edges_.emplace(key, e).second) return r.Fail("a wait-for edge twice");
  }
  closing_.resize(r.Count(8, "closing edges"));
  for (std::uint64_t& key : closing_) key = r.U64();
  records_.resize(r.Count(30, "cycle records"));
  for (CycleRecord& rec : records_) {
    if (!r.ok()) break;
    rec.owners = LoadIndexes(r, "a cycle's owners");
    rec.key = LoadIndexes(r, "a cycle's key");
    rec.gens = LoadIndexes(r, "a cycle's generations");
    rec.doomed = r.Bool();
    rec.victim = r.U32();
    rec.deadline = r.I64();
    rec.attempt = r.I32();
    rec.unresponsive = LoadIndexes(r, "a cycle's unresponsive victims");
    if (r.Bool()) rec.report = LoadReport(r);
    rec.victim_waits.resize(r.Count(5, "a victim's waits"));
    for (auto& [resource, mode] : rec.victim_waits) {
      resource = r.Str();
      mode = LoadMode(r);
    }
  }
  if (r.ok() && !r.done()) r.Fail(std::to_string(r.left()) + " bytes after the image");
  if (!r.ok()) return;
  if (const std::string bad = CheckLoadedLinks(); !bad.empty()) return r.Fail(bad);
  // The owners' name maps, keyed by the owner's own name.
  for (std::uint32_t o = 0; o < owners_.size(); ++o) {
    if (!owners_[o].live) continue;
    if (!sessions_[owners_[o].session].owners.emplace(Str(owners_[o].name()), o).second) {
      return r.Fail("owner '" + owners_[o].full + "' twice");
    }
  }
}

std::string Coordinator::Impl::CheckLoadedLinks() const {
  const auto n_sessions = static_cast<std::uint32_t>(sessions_.size());
  const auto n_owners = static_cast<std::uint32_t>(owners_.size());
  const auto n_resources = static_cast<std::uint32_t>(resources_.size());
  const auto n_leases = static_cast<std::uint32_t>(leases_.size());
  const auto n_waits = static_cast<std::uint32_t>(waits_.size());
  // A free list names exactly the dead slots, each once.
  auto free_list = [](const std::vector<std::uint32_t>& list, std::uint32_t n, auto live) {
    std::vector<bool> seen(n, false);
    std::size_t dead = 0;
    for (std::uint32_t i = 0; i < n; ++i) dead += !live(i);
    for (std::uint32_t x : list) {
      if (x >= n || live(x) || seen[x]) return false;
      seen[x] = true;
    }
    return list.size() == dead;
  };
  if (!free_list(free_sessions_, n_sessions, [&](std::uint32_t i) { return sessions_[i].live; }) ||
      !free_list(free_owners_, n_owners, [&](std::uint32_t i) { return owners_[i].live; }) ||
      !free_list(free_resources_, n_resources, [&](std::uint32_t i) { return resources_[i].live; }) ||
      !free_list(free_leases_, n_leases, [&](std::uint32_t i) { return leases_[i].live; }) ||
      !free_list(free_waits_, n_waits, [&](std::uint32_t i) { return waits_[i].live; })) {
    return "a free list does not match the dead slots";
  }
  auto live_session = [&](std::uint32_t i) { return i < n_sessions && sessions_[i].live; };
  auto live_owner = [&](std::uint32_t i) { return i < n_owners && owners_[i].live; };
  auto live_resource = [&](std::uint32_t i) { return i < n_resources && resources_[i].live; };
  auto lease_link = [&](std::uint32_t i) { return i == kNone || (i < n_leases && leases_[i].live); };
  auto live_wait = [&](std::uint32_t i) { return i < n_waits && waits_[i].live; };
  std::vector<std::uint32_t> site_refs(sites_.size(), 0);
  auto site_ok = [&](std::uint32_t i) {
    if (i == kNone) return true;
    if (i >= site_refs.size() || sites_.refs(i) == 0) return false;
    ++site_refs[i];
    return true;
  };
  std::uint64_t live[5] = {0, 0, 0, 0, 0};
  std::uint32_t awaiting = 0;
  for (std::uint32_t i = 0; i < n_sessions; ++i) live[0] += sessions_[i].live;
  for (std::uint32_t o = 0; o < n_owners; ++o) {
    const Owner& x = owners_[o];
    if (!x.live) continue;
    ++live[1];
    if (!live_session(x.session)) return "owner '" + x.full + "' of a dead session";
    const std::string& sid = sessions_[x.session].id;
    if (x.name_at != sid.size() + 1 || x.full.compare(0, sid.size(), sid) != 0 || x.full[sid.size()] != '/') {
      return "owner '" + x.full + "' is not named after its session";
    }
    if (!lease_link(x.lease_head)) return "owner '" + x.full + "' links a dead lease";
    for (std::uint32_t w : x.waits) {
      if (!live_wait(w) || waits_[w].owner != o) return "owner '" + x.full + "' lists a wait not its own";
    }
  }
  for (std::uint32_t i = 0; i < n_resources; ++i) {
    const Resource& x = resources_[i];
    if (!x.live) continue;
    ++live[2];
    if (!lease_link(x.holder_head)) return "resource '" + x.name + "' links a dead lease";
    for (std::uint32_t w : x.waits) {
      if (!live_wait(w) || waits_[w].resource != i) return "resource '" + x.name + "' queues a wait not its own";
    }
  }
  for (std::uint32_t i = 0; i < n_leases; ++i) {
    const Lease& l = leases_[i];
    if (!l.live) continue;
    ++live[3];
    awaiting += l.awaiting;
    if (!live_owner(l.owner) || !live_resource(l.resource) || !lease_link(l.res_prev) || !lease_link(l.res_next) ||
        !lease_link(l.own_prev) || !lease_link(l.own_next) || !site_ok(l.site)) {
      return "lease " + std::to_string(l.id) + " links something dead or out of range";
    }
  }
  for (std::uint32_t i = 0; i < n_waits; ++i) {
    const WaitRec& x = waits_[i];
    if (!x.live) continue;
    ++live[4];
    if (!live_owner(x.owner) || !live_resource(x.resource) || !site_ok(x.site)) {
      return "a wait links something dead or out of range";
    }
    const auto& mine = owners_[x.owner].waits;
    const auto& queue = resources_[x.resource].waits;
    if (std::count(mine.begin(), mine.end(), i) != 1 || std::count(queue.begin(), queue.end(), i) != 1) {
      return "a wait is not listed exactly once by its owner and its resource";
    }
  }
  for (std::uint32_t i = 0; i < site_refs.size(); ++i) {
    if (site_refs[i] != sites_.refs(i)) return "a site's count does not match its uses";
  }
  // The lease lists: walked with a step bound, each lease met once, links both ways.
  std::vector<std::uint8_t> met(n_leases, 0);
  for (std::uint32_t i = 0; i < n_resources; ++i) {
    if (!resources_[i].live) continue;
    std::uint32_t prev = kNone;
    for (std::uint32_t l = resources_[i].holder_head; l != kNone; prev = l, l = leases_[l].res_next) {
      if (leases_[l].resource != i || leases_[l].res_prev != prev || (met[l] & 1)) return "a resource's holder list is broken";
      met[l] |= 1;
    }
  }
  std::vector<std::uint32_t> session_leases(n_sessions, 0);
  for (std::uint32_t o = 0; o < n_owners; ++o) {
    if (!owners_[o].live) continue;
    std::uint32_t prev = kNone, count = 0;
    for (std::uint32_t l = owners_[o].lease_head; l != kNone; prev = l, l = leases_[l].own_next) {
      if (leases_[l].owner != o || leases_[l].own_prev != prev || (met[l] & 2)) return "an owner's lease list is broken";
      met[l] |= 2;
      ++count;
    }
    if (count != owners_[o].lease_count) return "owner '" + owners_[o].full + "' miscounts its leases";
    session_leases[owners_[o].session] += count;
  }
  for (std::uint32_t i = 0; i < n_leases; ++i) {
    if (leases_[i].live && met[i] != 3) return "a lease is missing from its resource's or owner's list";
  }
  for (std::uint32_t i = 0; i < n_sessions; ++i) {
    if (sessions_[i].live && sessions_[i].lease_count != session_leases[i]) return "a session miscounts its leases";
  }
  if (live[0] != stats_.live_sessions || live[1] != stats_.live_owners || live[2] != stats_.live_resources ||
      live[3] != stats_.live_leases || live[4] != stats_.live_waits || awaiting != awaiting_) {
    return "the live counts do not match the tables";
  }
  // Fencing: the next token must be above every token and lease id handed out.
  const Token next = (std::uint64_t{epoch_} << kSeqBits) | seq_;
  if (last_token_ >= next) return "the next token is not above the last one handed out";
  for (std::uint32_t i = 0; i < n_leases; ++i) {
    if (leases_[i].live && (leases_[i].token >= next || leases_[i].id >= next)) {
      return "lease " + std::to_string(leases_[i].id) + " has a token at or above the next one";
    }
  }
  for (std::uint32_t i = 0; i < n_sessions; ++i) {
    if (sessions_[i].live != session_timers_.Contains(i)) return "a session timer for a dead session, or none for a live one";
  }
  for (std::uint32_t i = 0; i < n_leases; ++i) {
    if (!leases_[i].live && (lease_timers_.Contains(i) || handover_timers_.Contains(i))) return "a timer for a dead lease";
  }
  for (std::uint32_t i = 0; i < n_waits; ++i) {
    if (!waits_[i].live && wait_timers_.Contains(i)) return "a timer for a dead wait";
  }
  if (wfg_.NodeCount() != n_owners) return "the wait-for graph and the owner table differ in size";
  for (std::uint32_t o = 0; o < n_owners; ++o) {
    if (!owners_[o].live && (!wfg_.OutEdges(o).empty() || !wfg_.InEdges(o).empty())) return "a dead owner has wait-for edges";
  }
  for (const auto& [key, count] : edges_) {
    if (!live_owner(static_cast<std::uint32_t>(key >> 32)) || !live_owner(static_cast<std::uint32_t>(key))) {
      return "a wait-for edge of a dead owner";
    }
  }
  for (std::size_t i = 0; i < closing_.size(); ++i) {
    auto it = edges_.find(closing_[i]);
    if (it == edges_.end() || it->second.ordered) return "a closing edge that is not a set-aside edge";
    if (std::find(closing_.begin(), closing_.begin() + static_cast<std::ptrdiff_t>(i), closing_[i]) !=
        closing_.begin() + static_cast<std::ptrdiff_t>(i)) {
      return "a closing edge twice";
    }
  }
  for (const CycleRecord& rec : records_) {
    const std::size_t n = rec.owners.size();
    if (n == 0 || rec.key.size() != n || rec.gens.size() != n) return "a cycle record of mismatched sizes";
    for (std::uint32_t o : rec.owners) {
      if (o >= n_owners) return "a cycle record names an owner out of range";
    }
    for (std::uint32_t o : rec.key) {
      if (o >= n_owners) return "a cycle record's key names an owner out of range";
    }
    if (rec.victim != kNone && rec.victim >= n) return "a cycle record's victim out of range";
    if (rec.doomed != (rec.victim != kNone)) return "a cycle record doomed without a victim";
    for (std::uint32_t u : rec.unresponsive) {
      if (u >= n) return "a cycle record's unresponsive victim out of range";
    }
  }
  return "";
}

std::string Coordinator::SaveImage() const {
  std::string out;
  internal::ImageWriter w(out);
  impl_->SaveImage(w);
  return out;
}

std::string Coordinator::LoadImage(std::string_view image) {
  auto fresh = std::make_unique<Impl>(impl_->config_, impl_->epoch_, impl_->seq_);
  internal::ImageReader r(image);
  fresh->LoadImage(r);
  if (!r.ok()) return "bad coordinator image: " + r.error();
  std::swap(impl_, fresh);
  if (std::string bad = CheckInvariants(); !bad.empty()) {
    std::swap(impl_, fresh);
    return "bad coordinator image: " + bad;
  }
  impl_->order_ = std::move(fresh->order_);
  return "";
}

}  // namespace lockgraph::graph
