// Restarts of a real lockgraphd: what survives a SIGKILL, the grace period after it,
// and the C++ client's automatic reclaim (client.h "Restarts").
//
// - Through the raw protocol: sessions and arbitrate leases come back with their ids,
//   secrets and tokens; acquire and renew get GRACE; reclaim is judged item by item
//   (owner, resource, mode, token; a lease revoked before the restart is never
//   reclaimed); what is not reclaimed expires when the grace ends and passes on with
//   a larger token.
// - Through lockgraph::Client: it notices the new epoch and reclaims by itself, Renew
//   answered GRACE reclaims and renews, Acquire retries GRACE within its budget, and an
//   acquire queued before the restart is asked again.
// - A flipped byte in the journal: the next start names the problem, cuts the segment
//   at the last good record and serves what came before it; the client's reclaim of
//   the lease granted after the damage is refused and reported as a revocation.
// - kill -9 under load, at random moments (seeded: LOCKGRAPH_SEED replays them),
//   with --fsync always: fencing tokens only grow, every grant a client was told of
//   comes back, and no two exclusive leases on one resource are ever live at once, as
//   seen by a fenced storage and by the daemon's own listing.
// Every wait has a deadline; nothing sleeps for a fixed time to synchronise.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "daemon/daemon_harness.h"
#include "journal.h"
#include "lockgraph/client.h"

namespace lockgraph::testing {
namespace {

using graph::Code;
using graph::Mode;
using protocol::Encoding;
using protocol::Op;
using TimePoint = Clock::time_point;

constexpr int kSeqBits = 40;  // token = epoch << 40 | seq

// ---------------------------------------------------------------- helpers

// One entry of the daemon's `leases` listing.
struct Listed {
  graph::LeaseId lease = 0;
  graph::Token token = 0;
  std::string session;
  std::string owner;
  std::string resource;
  std::string mode;
  bool revoked = false;
  bool reported = false;
};

std::optional<std::vector<Listed>> ParseLeases(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsArray()) return std::nullopt;
  std::vector<Listed> out;
  for (const auto& v : d.GetArray()) {
    Listed l;
    l.lease = std::stoull(v["lease"].GetString());
    l.token = std::stoull(v["token"].GetString());
    l.session = v["session"].GetString();
    l.owner = v["owner"].GetString();
    l.resource = v["resource"].GetString();
    l.mode = v["mode"].GetString();
    l.revoked = v["revoked"].GetBool();
    l.reported = v["reported"].GetBool();
    out.push_back(std::move(l));
  }
  return out;
}

// The daemon's leases, or nullopt when it does not answer in time.
std::optional<std::vector<Listed>> Leases(RawClient& c, milliseconds timeout = milliseconds(3000)) {
  auto r = c.Call(QueryReq(Op::kLeases), timeout);
  if (!r || !r->ok()) return std::nullopt;
  return ParseLeases(r->listing_json);
}

// Empty, or which resource has two live leases of which one is exclusive.
std::string Conflicts(const std::vector<Listed>& leases) {
  std::map<std::string, std::vector<const Listed*>> by_resource;
  for (const Listed& l : leases) {
    if (!l.revoked && !l.reported) by_resource[l.resource].push_back(&l);
  }
  std::string out;
  for (const auto& [resource, held] : by_resource) {
    if (held.size() < 2) continue;
    if (std::none_of(held.begin(), held.end(), [](const Listed* l) { return l->mode == "X"; })) continue;
    out += resource + ":";
    for (const Listed* l : held) out += " " + l->session + "/" + l->owner + " " + l->mode + " token " + std::to_string(l->token);
    out += "\n";
  }
  return out;
}

bool IsListed(const std::vector<Listed>& leases, graph::LeaseId id) {
  return std::any_of(leases.begin(), leases.end(), [&](const Listed& l) { return l.lease == id; });
}

// Whether the daemon's graph shows a wait on `resource`.
bool WaitedFor(RawClient& c, const std::string& resource) {
  auto graph = c.Call(QueryReq(Op::kGraph));
  if (!graph || !graph->ok()) return false;
  rapidjson::Document d;
  d.Parse(graph->listing_json.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("waits")) return false;
  for (const auto& w : d["waits"].GetArray()) {
    if (w["resource"].GetString() == resource) return true;
  }
  return false;
}

protocol::Request Heartbeat() { return QueryReq(Op::kHeartbeat); }

protocol::Request Renew(graph::LeaseId lease) {
  protocol::Request r;
  r.op = Op::kRenew;
  r.lease = lease;
  return r;
}

protocol::Request Reclaim(std::vector<protocol::ReclaimItem> holds) {
  protocol::Request r;
  r.op = Op::kReclaim;
  r.holds = std::move(holds);
  return r;
}

// SIGKILLs the daemon and waits until it is gone.
void Kill(Daemon& d) {
  d.process().Signal(SIGKILL);
  ASSERT_TRUE(d.process().Exited(milliseconds(5000)));
}

// The newest journal segment of a data directory.
std::string LastSegment(const std::string& data_dir) {
  const auto segments = daemon::ListSegments(data_dir);
  return segments.empty() ? std::string() : segments.back();
}

// A client that notices a dead daemon quickly.
ClientOptions FastOptions(const std::string& endpoint, const std::string& name,
                          Encoding encoding = Encoding::kBinary) {
  ClientOptions o;
  o.endpoints = {endpoint};
  o.client_name = name;
  o.session_ttl = Millis{3000};
  o.request_timeout = Millis{3000};
  o.resend_after = Millis{30};
  o.backoff_min = Millis{5};
  o.backoff_max = Millis{100};
  o.safety_margin = Millis{100};
  o.encoding = encoding;
  return o;
}

// Waits for `pred`, polling; false when `timeout` passes first.
template <typename Pred>
bool Eventually(Pred pred, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::yield();
    usleep(2000);
  }
  return pred();
}

std::optional<protocol::Event> PollUntil(Client& c, const std::function<bool(const protocol::Event&)>& pred,
                                         milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto e = c.PollEvent(std::chrono::duration_cast<Millis>(deadline - Clock::now()));
    if (e && pred(*e)) return e;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- raw protocol

TEST(RestartTest, RestoreAndReclaimThroughTheRawProtocol) {
  zmq::context_t ctx;
  // interval, not always: the grace then refuses every new acquire.
  const std::vector<std::string> args = {"--fsync", "interval", "--admin-token", "op-secret",
                                         "--revoke-grace-ms", "30000"};
  auto d = std::make_unique<Daemon>(args);
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  const std::string dir = d->data_dir();

  RawClient a(ctx, d->endpoint(), Encoding::kJson);
  RawClient b(ctx, d->endpoint(), Encoding::kBinary);
  const protocol::Reply ha = a.Hello(10'000, 0, "a");
  ASSERT_TRUE(ha.ok()) << ha.message;
  ASSERT_TRUE(b.Hello(10'000, 0, "b").ok());
  const std::uint32_t epoch0 = ha.epoch.value_or(0);
  ASSERT_GT(epoch0, 0u);
  auto la = a.Call(AcquireReq("t1", "acct:1", Mode::kExclusive, 0, 800));
  auto lr = a.Call(AcquireReq("t3", "acct:9", Mode::kExclusive, 0, 800));
  auto lb = b.Call(AcquireReq("t2", "acct:2", Mode::kExclusive, 0, 800));
  ASSERT_TRUE(la && la->granted && lr && lr->granted && lb && lb->granted);
  // acct:9 is revoked by the operator before the restart: restored, never reclaimable.
  protocol::Request revoke;
  revoke.op = Op::kRevoke;
  revoke.admin_token = "op-secret";
  revoke.lease = *lr->lease;
  auto revoked = a.Call(revoke);
  ASSERT_TRUE(revoked && revoked->ok()) << (revoked ? revoked->message : "no reply");

  ASSERT_NO_FATAL_FAILURE(Kill(*d));
  d = std::make_unique<Daemon>(args, dir);
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  EXPECT_NE(d->process().Output().find("restored 2 session(s) and 3 lease(s)"), std::string::npos)
      << d->process().Output();

  // Same sessions, same secrets, on new connections; the epoch shows the restart.
  RawClient a2(ctx, d->endpoint(), Encoding::kJson);
  RawClient b2(ctx, d->endpoint(), Encoding::kBinary);
  a2.Adopt(a.session(), a.secret());
  b2.Adopt(b.session(), b.secret());
  auto beat = a2.Call(Heartbeat());
  ASSERT_TRUE(beat && beat->ok()) << (beat ? beat->message : "no reply");
  ASSERT_TRUE(beat->epoch.has_value());
  EXPECT_GT(*beat->epoch, epoch0);
  const std::uint32_t epoch1 = *beat->epoch;

  // Grace: no new grants (not even of a resource nobody held), no renewal before the reclaim.
  auto fresh = a2.Call(AcquireReq("t1", "acct:3", Mode::kExclusive, 0));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->code, Code::kGrace) << fresh->message;
  auto taken = a2.Call(AcquireReq("t9", "acct:2", Mode::kExclusive, 1000));
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->code, Code::kGrace) << taken->message;
  auto early_renew = a2.Call(Renew(*la->lease));
  ASSERT_TRUE(early_renew.has_value());
  EXPECT_EQ(early_renew->code, Code::kGrace) << early_renew->message;

  // Reclaim is judged item by item.
  const protocol::ReclaimItem right{"t1", "acct:1", Mode::kExclusive, *la->token};
  for (const protocol::ReclaimItem& wrong : {protocol::ReclaimItem{"t1", "acct:1", Mode::kExclusive, *la->token + 1},
                                             protocol::ReclaimItem{"t1", "acct:1", Mode::kShared, *la->token},
                                             protocol::ReclaimItem{"t7", "acct:1", Mode::kExclusive, *la->token},
                                             protocol::ReclaimItem{"t1", "acct:4", Mode::kExclusive, *la->token}}) {
    auto r = a2.Call(Reclaim({wrong}));
    ASSERT_TRUE(r && r->ok()) << (r ? r->message : "no reply");
    ASSERT_EQ(r->results.size(), 1u);
    EXPECT_EQ(r->results[0].code, Code::kNotOwner) << wrong.owner << " " << wrong.resource;
    EXPECT_FALSE(r->results[0].message.empty());
  }
  // Another session's lease is not this session's to reclaim.
  auto stolen = a2.Call(Reclaim({{"t2", "acct:2", Mode::kExclusive, *lb->token}}));
  ASSERT_TRUE(stolen && stolen->ok() && stolen->results.size() == 1u);
  EXPECT_EQ(stolen->results[0].code, Code::kNotOwner);
  auto r = a2.Call(Reclaim({{"t3", "acct:9", Mode::kExclusive, *lr->token}, right}));
  ASSERT_TRUE(r && r->ok()) << (r ? r->message : "no reply");
  ASSERT_EQ(r->results.size(), 2u);
  EXPECT_EQ(r->results[0].code, Code::kNotOwner) << "a lease revoked before the restart is not reclaimable";
  EXPECT_EQ(r->results[1].code, Code::kOk) << r->results[1].message;
  protocol::Request longer = Renew(*la->lease);
  longer.ttl_ms = 5000;  // to outlive the grace below with room to spare
  auto renewed = a2.Call(longer);
  ASSERT_TRUE(renewed && renewed->ok()) << (renewed ? renewed->message : "no reply");

  // b never reclaims: its lease ends with the grace and passes on with a larger token.
  std::optional<protocol::Reply> after;
  ASSERT_TRUE(Eventually(
      [&] {
        after = a2.Call(AcquireReq("t1", "acct:2", Mode::kExclusive, 0, 800));
        return after && after->code != Code::kGrace;
      },
      milliseconds(5000)))
      << "the grace never ended";
  ASSERT_TRUE(after->granted) << after->message;
  EXPECT_GT(*after->token, *la->token);
  EXPECT_GT(*after->token, *lb->token);
  EXPECT_GT(*after->token, *lr->token);
  EXPECT_EQ(*after->token >> kSeqBits, epoch1);
  auto listing = Leases(a2);
  ASSERT_TRUE(listing.has_value());
  EXPECT_TRUE(IsListed(*listing, *la->lease)) << "the reclaimed lease is still held";
  EXPECT_FALSE(IsListed(*listing, *lb->lease));
  EXPECT_FALSE(IsListed(*listing, *lr->lease));
  EXPECT_EQ(Conflicts(*listing), "");
  // b's session itself was restored and lives on.
  auto b_beat = b2.Call(Heartbeat());
  ASSERT_TRUE(b_beat && b_beat->ok()) << (b_beat ? b_beat->message : "no reply");
  EXPECT_EQ(b_beat->epoch.value_or(0), epoch1);
}

TEST(RestartTest, GraceEndsOnceEveryRestoredLeaseIsReclaimed) {
  zmq::context_t ctx;
  const std::vector<std::string> args = {"--fsync", "interval"};
  auto d = std::make_unique<Daemon>(args);
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  RawClient a(ctx, d->endpoint(), Encoding::kBinary);
  ASSERT_TRUE(a.Hello(10'000).ok());
  // A long TTL: only the early end can let the acquire below through in time.
  auto l = a.Call(AcquireReq("t1", "acct:1", Mode::kExclusive, 0, 60'000));
  ASSERT_TRUE(l && l->granted);
  ASSERT_NO_FATAL_FAILURE(Kill(*d));
  d = std::make_unique<Daemon>(args, d->data_dir());
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  RawClient a2(ctx, d->endpoint(), Encoding::kBinary);
  a2.Adopt(a.session(), a.secret());
  auto refused = a2.Call(AcquireReq("t2", "acct:2", Mode::kExclusive, 0));
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, Code::kGrace);
  auto r = a2.Call(Reclaim({{"t1", "acct:1", Mode::kExclusive, *l->token}}));
  ASSERT_TRUE(r && r->ok() && r->results.size() == 1u);
  EXPECT_EQ(r->results[0].code, Code::kOk) << r->results[0].message;
  auto served = a2.Call(AcquireReq("t2", "acct:2", Mode::kExclusive, 0));
  ASSERT_TRUE(served.has_value());
  EXPECT_TRUE(served->granted) << served->message;
}

// ---------------------------------------------------------------- lockgraph::Client

TEST(RestartTest, ClientReclaimsByItselfAndRetriesGrace) {
  zmq::context_t ctx;
  auto d = std::make_unique<Daemon>(std::vector<std::string>{"--fsync", "interval"});
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  const std::string endpoint = d->endpoint();
  const std::string dir = d->data_dir();
  // The restarted daemon listens where the client already connects.
  const std::vector<std::string> again = {"--fsync", "interval", "--listen", endpoint};

  // b holds a lease it will never reclaim: the grace lasts its 2 s TTL.
  RawClient b(ctx, endpoint, Encoding::kJson);
  ASSERT_TRUE(b.Hello(10'000).ok());
  auto lb = b.Call(AcquireReq("other", "held-by-b", Mode::kExclusive, 0, 2000));
  ASSERT_TRUE(lb && lb->granted);

  auto connected = Client::Connect(FastOptions(endpoint, "restart-test", Encoding::kJson));
  ASSERT_TRUE(connected.ok()) << connected.error().message;
  Client& c = *connected.value();
  auto mine = c.Acquire("t1", "mine", Mode::kExclusive, Millis{1500}, Millis{0});
  ASSERT_TRUE(mine.ok()) << mine.error().message;
  // An acquire queued behind b when the daemon dies.
  std::optional<Result<Lease>> queued;
  std::thread waiter([&] { queued = c.Acquire("q", "held-by-b", Mode::kExclusive, Millis{1000}, Millis{8000}); });
  ASSERT_TRUE(Eventually([&] { return WaitedFor(b, "held-by-b"); }, milliseconds(3000)))
      << "the acquire never queued";

  ASSERT_NO_FATAL_FAILURE(Kill(*d));
  d = std::make_unique<Daemon>(again, dir);
  ASSERT_TRUE(d->process().WaitForOutput("listening on " + endpoint, milliseconds(10'000))) << d->process().Output();
  const TimePoint restarted = Clock::now();

  // Renew reclaims first when it meets GRACE (or finds the reclaim done already). A
  // longer TTL, so that the lease outlives the grace below.
  auto renewed = c.Renew(mine.value(), Millis{5000});
  ASSERT_TRUE(renewed.ok()) << renewed.error().message;
  EXPECT_EQ(renewed.value().token, mine.value().token);
  auto held = c.Held(mine.value());
  ASSERT_TRUE(held.has_value()) << "the reclaimed lease is still the client's";
  EXPECT_GT(held->valid_until, mine.value().valid_until);

  // A short wait runs out in the grace: GRACE, after retries.
  const TimePoint short_start = Clock::now();
  auto refused = c.Acquire("t2", "fresh", Mode::kExclusive, Millis{1000}, Millis{150});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Code::kGrace) << refused.error().message;
  EXPECT_NE(refused.error().message.find("attempt"), std::string::npos) << refused.error().message;
  EXPECT_GE(Clock::now() - short_start, milliseconds(150));
  EXPECT_LT(Clock::now() - short_start, milliseconds(1500));

  // A longer one outlasts the grace (b's lease ends with it) and is granted.
  auto granted = c.Acquire("t3", "fresh", Mode::kExclusive, Millis{1000}, Millis{6000});
  ASSERT_TRUE(granted.ok()) << granted.error().message;
  EXPECT_GT(granted.value().token >> kSeqBits, mine.value().token >> kSeqBits);
  EXPECT_GE(Clock::now() - restarted, milliseconds(1500)) << "granted before b's lease could have ended";

  // The acquire queued before the restart was asked again and got b's resource.
  waiter.join();
  ASSERT_TRUE(queued.has_value());
  ASSERT_TRUE(queued->ok()) << queued->error().message;
  EXPECT_GT(queued->value().token, *lb->token);

  // Reclaimed means held: the lease outlived the grace, and renews.
  EXPECT_TRUE(c.Held(mine.value()).has_value());
  auto again_renewed = c.Renew(mine.value());
  EXPECT_TRUE(again_renewed.ok()) << again_renewed.error().message;
  RawClient probe(ctx, endpoint, Encoding::kJson);
  auto listing = Leases(probe);
  ASSERT_TRUE(listing.has_value());
  EXPECT_TRUE(IsListed(*listing, mine.value().id));
  EXPECT_FALSE(IsListed(*listing, *lb->lease));
  EXPECT_EQ(Conflicts(*listing), "");
}

TEST(RestartTest, CorruptedJournalByteIsReportedAndWhatCameBeforeIsServed) {
  zmq::context_t ctx;
  auto d = std::make_unique<Daemon>(std::vector<std::string>{"--fsync", "always"});
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  const std::string endpoint = d->endpoint();
  const std::string dir = d->data_dir();
  auto connected = Client::Connect(FastOptions(endpoint, "corruption-test"));
  ASSERT_TRUE(connected.ok()) << connected.error().message;
  Client& c = *connected.value();

  auto before = c.Acquire("t1", "before", Mode::kExclusive, Millis{1500}, Millis{0});
  ASSERT_TRUE(before.ok()) << before.error().message;
  // Under `always` a reply waits for its record's fsync: the segment now ends with
  // whole records, the grant of `before` among them.
  const std::string segment = LastSegment(dir);
  ASSERT_FALSE(segment.empty());
  const auto good = std::filesystem::file_size(segment);
  auto after = c.Acquire("t2", "after", Mode::kExclusive, Millis{1500}, Millis{0});
  ASSERT_TRUE(after.ok()) << after.error().message;
  ASSERT_NO_FATAL_FAILURE(Kill(*d));
  ASSERT_GT(std::filesystem::file_size(segment), good);
  {
    // A byte inside the first record after `before` (past its length and checksum).
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(good + daemon::kRecordHeaderBytes + 1);
    f.seekg(at);
    char byte = 0;
    f.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x20);
    f.seekp(at);
    f.write(&byte, 1);
  }
  auto scanned = daemon::ScanSegment(segment);
  ASSERT_TRUE(std::holds_alternative<daemon::SegmentScan>(scanned));
  const auto& scan = std::get<daemon::SegmentScan>(scanned);
  ASSERT_TRUE(scan.torn());
  ASSERT_EQ(scan.good_bytes, good);

  d = std::make_unique<Daemon>(std::vector<std::string>{"--fsync", "always", "--listen", endpoint}, dir);
  ASSERT_TRUE(d->process().WaitForOutput("listening on " + endpoint, milliseconds(10'000))) << d->process().Output();
  const std::string& log = d->process().Output();
  EXPECT_NE(log.find(scan.problem), std::string::npos) << "names the problem:\n" << log;
  EXPECT_NE(log.find("checksum mismatch"), std::string::npos) << log;
  EXPECT_NE(log.find("truncating to the last good record"), std::string::npos) << log;
  EXPECT_NE(log.find("restored 1 session(s) and 1 lease(s)"), std::string::npos) << log;
  EXPECT_EQ(std::filesystem::file_size(segment), good);

  // The client reclaims both: `before` is kept, `after` (lost with the damaged tail)
  // is refused and reported revoked.
  auto lost = PollUntil(
      c, [&](const protocol::Event& e) { return e.kind == protocol::EventKind::kRevoked && e.lease == after.value().id; },
      milliseconds(5000));
  ASSERT_TRUE(lost.has_value()) << "no revoked event for the lease the journal lost";
  EXPECT_EQ(lost->seq, 0u);
  EXPECT_EQ(lost->reason, graph::RevokeReason::kExpired);
  EXPECT_EQ(lost->token, after.value().token);
  EXPECT_FALSE(c.Held(after.value()).has_value());
  ASSERT_TRUE(Eventually([&] { return c.Held(before.value()).has_value() &&
                                      c.Held(before.value())->valid_until > before.value().valid_until; },
                         milliseconds(3000)))
      << "the lease from before the damage was not reclaimed";

  // Serving: the grace ended with the reclaim; the resource the journal lost is free.
  auto again = c.Acquire("t3", "after", Mode::kExclusive, Millis{1500}, Millis{3000});
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_GT(again.value().token, after.value().token);
  RawClient probe(ctx, endpoint, Encoding::kJson);
  auto listing = Leases(probe);
  ASSERT_TRUE(listing.has_value());
  EXPECT_TRUE(IsListed(*listing, before.value().id));
  EXPECT_FALSE(IsListed(*listing, after.value().id));
}

// ---------------------------------------------------------------- kill -9 under load

// The storage the leases protect: it refuses a write with a token below the highest
// it has seen for that resource (fencing), and keeps every write.
class FencedStorage {
 public:
  struct Write {
    std::string resource;
    graph::Token token = 0;
    graph::LeaseId lease = 0;
    TimePoint at;              // when the writer checked that it still held the lease
    TimePoint believed_until;  // the writer's advisory deadline then
    bool accepted = false;
  };

  bool Put(const std::string& resource, graph::Token token, graph::LeaseId lease, TimePoint at,
           TimePoint believed_until) {
    std::lock_guard lock(mu_);
    graph::Token& highest = highest_[resource];
    const bool accepted = token >= highest;
    if (accepted) highest = token;
    writes_.push_back({resource, token, lease, at, believed_until, accepted});
    return accepted;
  }
  std::vector<Write> writes() const {
    std::lock_guard lock(mu_);
    return writes_;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, graph::Token> highest_;
  std::vector<Write> writes_;
};

// One lease a worker was granted, and what became of it.
struct Grant {
  int worker = 0;
  std::string resource;
  graph::LeaseId lease = 0;
  graph::Token token = 0;
  TimePoint call_start;  // Acquire called
  TimePoint granted_at;  // Acquire returned it
  // Advisory deadlines as the worker learned them: (when, valid_until).
  std::vector<std::pair<TimePoint, TimePoint>> deadlines;
  TimePoint reclaimed_at = TimePoint::max();  // Held showed a deadline only a reclaim gives
  std::vector<TimePoint> writes;  // accepted writes, each made believing the lease valid
  TimePoint release_start = TimePoint::max();
  bool release_ok = false;
};

struct Restart {
  TimePoint kill_sent;  // SIGKILL sent
  TimePoint dead;       // the process was reaped
  TimePoint spawned;    // the next one started
  TimePoint up;         // ... and listened
  std::uint32_t epoch = 0;
  std::vector<Listed> listed;  // its leases, right after it listened
};

TEST(RestartTest, KillNineUnderLoadKeepsFencingAndExclusion) {
  std::uint64_t seed = std::random_device{}();
  if (const char* env = std::getenv("LOCKGRAPH_SEED")) seed = std::strtoull(env, nullptr, 10);
  std::printf("kill -9 test: seed %llu (replay the kill moments with LOCKGRAPH_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  SCOPED_TRACE("LOCKGRAPH_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);

  constexpr int kKills = 24;
  constexpr int kWorkers = 6;
  constexpr int kResources = 3;
  constexpr Millis kTtl{400};  // the grace after a restart lasts about this long
  const TimePoint test_start = Clock::now();

  zmq::context_t ctx;
  // Tiny segments: the daemon starts a new one from a snapshot every few hundred
  // records, so kills also land just after snapshots and restarts load them.
  auto d = std::make_unique<Daemon>(std::vector<std::string>{"--fsync", "always", "--segment-kb", "1"});
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  const std::string endpoint = d->endpoint();
  const std::string dir = d->data_dir();
  const std::vector<std::string> again = {"--fsync", "always", "--segment-kb", "1", "--listen", endpoint};

  FencedStorage storage;
  std::mutex mu;  // guards what follows
  std::vector<Grant> grants;
  std::map<graph::LeaseId, TimePoint> lost;  // synthetic revocations (seq 0): reclaim refused
  std::map<std::string, int> outcomes;       // "acquire TIMEOUT", "renew GRACE", ...
  std::vector<std::string> probe_conflicts;
  int probe_samples = 0;
  std::atomic<int> granted_count{0};
  std::atomic<bool> stop{false};
  const ClientOptions base_options = [&] {
    ClientOptions o = FastOptions(endpoint, "kill9");
    o.session_ttl = Millis{1500};
    return o;
  }();

  auto worker = [&](int i) {
    ClientOptions o = base_options;
    o.client_name = "kill9-worker-" + std::to_string(i);
    o.encoding = i % 2 == 0 ? Encoding::kJson : Encoding::kBinary;
    auto connected = Client::Connect(o);
    if (!connected.ok()) {
      std::lock_guard lock(mu);
      ++outcomes["connect " + std::string(graph::CodeName(connected.error().code))];
      return;
    }
    Client& c = *connected.value();
    c.OnEvent([&](const protocol::Event& e) {
      if (e.kind != protocol::EventKind::kRevoked || e.seq != 0) return;
      std::lock_guard lock(mu);
      lost.emplace(e.lease, Clock::now());
    });
    std::mt19937_64 wrng(seed + 1 + static_cast<std::uint64_t>(i));
    const std::string owner = "w" + std::to_string(i);
    auto count = [&](const std::string& what) {
      std::lock_guard lock(mu);
      ++outcomes[what];
    };
    while (!stop) {
      const std::string resource = "res:" + std::to_string(wrng() % kResources);
      const TimePoint call_start = Clock::now();
      auto acquired = c.Acquire(owner, resource, Mode::kExclusive, kTtl, Millis{600});
      if (!acquired.ok()) {
        count("acquire " + std::string(graph::CodeName(acquired.error().code)));
        continue;
      }
      Lease lease = acquired.value();
      std::size_t index;
      {
        std::lock_guard lock(mu);
        index = grants.size();
        Grant g;
        g.worker = i;
        g.resource = resource;
        g.lease = lease.id;
        g.token = lease.token;
        g.call_start = call_start;
        g.granted_at = Clock::now();
        g.deadlines.emplace_back(g.granted_at, lease.valid_until);
        grants.push_back(std::move(g));
      }
      ++granted_count;
      TimePoint known = lease.valid_until;
      // Most hold briefly; two workers hold for up to a second or two, renewing, so that
      // kills find leases that must be reclaimed rather than released.
      const int writes = i < 2 ? 8 + static_cast<int>(wrng() % 16) : 1 + static_cast<int>(wrng() % 4);
      for (int j = 0; j < writes && !stop; ++j) {
        // The work between writes.
        if (j > 0) std::this_thread::sleep_for(Millis{static_cast<std::int64_t>(wrng() % 60)});
        auto held = c.Held(lease);
        if (!held) break;  // refused at reclaim: no longer ours
        TimePoint now = Clock::now();
        if (held->valid_until > known) {  // only a reclaim moves it without a renew
          known = held->valid_until;
          std::lock_guard lock(mu);
          grants[index].deadlines.emplace_back(now, known);
          grants[index].reclaimed_at = std::min(grants[index].reclaimed_at, now);
        }
        if (known - now < Millis{150}) {
          auto renewed = c.Renew(lease);
          if (!renewed.ok()) {
            count("renew " + std::string(graph::CodeName(renewed.error().code)));
            break;
          }
          lease = renewed.value();
          known = lease.valid_until;
          now = Clock::now();
          std::lock_guard lock(mu);
          grants[index].deadlines.emplace_back(now, known);
        }
        if (now >= known) break;  // no longer sure: write nothing
        const bool accepted = storage.Put(resource, lease.token, lease.id, now, known);
        if (accepted) {
          std::lock_guard lock(mu);
          grants[index].writes.push_back(now);
        }
      }
      const TimePoint release_start = Clock::now();
      Status released = c.Release(lease);
      std::lock_guard lock(mu);
      grants[index].release_start = release_start;
      grants[index].release_ok = released.ok();
      if (!released.ok()) ++outcomes["release " + std::string(graph::CodeName(released.error().code))];
    }
  };

  // Watches the daemon's listing while the load runs.
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  auto prober = [&] {
    RawClient probe(ctx, endpoint, Encoding::kJson);
    while (!stop) {
      if (auto listing = Leases(probe, milliseconds(200))) {
        std::string conflicts = Conflicts(*listing);
        std::lock_guard lock(mu);
        ++probe_samples;
        if (!conflicts.empty()) probe_conflicts.push_back(conflicts);
      }
      std::unique_lock lock(stop_mu);
      stop_cv.wait_for(lock, milliseconds(5), [&] { return stop.load(); });
    }
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) threads.emplace_back(worker, i);
  threads.emplace_back(prober);

  std::vector<Restart> restarts;
  std::string failure;
  std::uniform_int_distribution<int> moment(0, 300);
  for (int k = 0; k < kKills && failure.empty(); ++k) {
    // Load first: grants since this daemon came up (it must make progress), then a
    // random moment — in the grace or after it, with leases held or being released.
    const int base = granted_count.load();
    if (!Eventually([&] { return granted_count.load() >= base + 2; }, milliseconds(10'000))) {
      failure = "no grant within 10 s of restart " + std::to_string(k);
      break;
    }
    const int wait_ms = moment(rng);
    std::this_thread::sleep_for(milliseconds(wait_ms));  // the random kill moment, from the seed
    Restart r;
    r.kill_sent = Clock::now();
    d->process().Signal(SIGKILL);
    if (!d->process().Exited(milliseconds(5000))) {
      failure = "the daemon survived SIGKILL";
      break;
    }
    r.dead = Clock::now();
    r.spawned = Clock::now();
    d = std::make_unique<Daemon>(again, dir);
    // Exit code 127 is the harness's "execv failed": the binary was being relinked by
    // a concurrent build. Nothing ran; try again.
    for (int tries = 0; tries < 20 && d->process().Exited(milliseconds(0)) && d->process().exit_code() == 127;
         ++tries) {
      std::this_thread::sleep_for(milliseconds(250));
      r.spawned = Clock::now();
      d = std::make_unique<Daemon>(again, dir);
    }
    if (!d->process().WaitForOutput("listening on " + endpoint, milliseconds(10'000))) {
      const bool exited = d->process().Exited(milliseconds(0));
      failure = "restart " + std::to_string(k) + " failed (" +
                (exited ? "exit code " + std::to_string(d->process().exit_code()) : std::string("still running")) +
                "):\n" + d->process().Output();
      break;
    }
    r.up = Clock::now();
    {
      // Right away, on a fresh connection: what the journal brought back.
      RawClient probe(ctx, endpoint, Encoding::kJson);
      auto listing = Leases(probe);
      if (!listing) {
        failure = "no leases listing after restart " + std::to_string(k);
        break;
      }
      r.listed = *listing;
      if (std::string conflicts = Conflicts(*listing); !conflicts.empty()) {
        std::lock_guard lock(mu);
        probe_conflicts.push_back("right after restart " + std::to_string(k) + ": " + conflicts);
      }
      protocol::Reply hello = probe.Hello(1000, 0, "kill9-probe");
      r.epoch = hello.epoch.value_or(0);
      protocol::Request bye;
      bye.op = Op::kBye;
      (void)probe.Call(bye);
    }
    restarts.push_back(std::move(r));
  }
  stop = true;
  stop_cv.notify_all();
  for (std::thread& t : threads) t.join();
  const auto runtime = std::chrono::duration_cast<milliseconds>(Clock::now() - test_start);
  ASSERT_EQ(failure, "");
  ASSERT_EQ(restarts.size(), static_cast<std::size_t>(kKills));

  std::lock_guard lock(mu);
  const std::vector<FencedStorage::Write> writes = storage.writes();
  std::string summary = "kill -9 test: " + std::to_string(restarts.size()) + " kills in " +
                        std::to_string(runtime.count()) + " ms, " + std::to_string(grants.size()) + " grants, " +
                        std::to_string(writes.size()) + " writes, " + std::to_string(probe_samples) +
                        " listings during the load; outcomes:";
  for (const auto& [what, n] : outcomes) summary += " " + what + "=" + std::to_string(n);
  std::size_t snapshot_segments = 0;
  for (const std::string& segment : daemon::ListSegments(dir)) {
    snapshot_segments += std::filesystem::path(segment).stem().string().find('_') != std::string::npos;
  }
  summary += "; " + std::to_string(snapshot_segments) + " segments started from snapshots";
  ASSERT_GE(grants.size(), 50u) << summary;
  EXPECT_GE(snapshot_segments, 5u) << "too few snapshots to test restarts from them; " << summary;
  for (const auto& [what, n] : outcomes) {
    // A busy resource, a grace outlasting the wait, a lease lost at a reclaim: all
    // expected. A refused request or a lost session is not.
    EXPECT_TRUE(what.find("BAD_REQUEST") == std::string::npos && what.find("INTERNAL") == std::string::npos &&
                what.find("UNKNOWN_SESSION") == std::string::npos && what.find("AUTH") == std::string::npos &&
                what.find("connect") == std::string::npos)
        << what << " x" << n << "\n" << summary;
  }

  // (i) Fencing tokens only grow: every token of an acquire started after restart k
  // is above every token a client had received before kill k; each boot's epoch is
  // above the last, and its tokens carry it.
  std::uint32_t previous_epoch = 0;
  for (std::size_t k = 0; k < restarts.size(); ++k) {
    const Restart& r = restarts[k];
    EXPECT_GT(r.epoch, previous_epoch) << "restart " << k;
    previous_epoch = r.epoch;
    graph::Token before = 0, after = ~graph::Token{0};
    for (const Grant& g : grants) {
      if (g.granted_at < r.kill_sent) before = std::max(before, g.token);
      if (g.call_start > r.up) {
        after = std::min(after, g.token);
        EXPECT_GE(g.token >> kSeqBits, r.epoch) << "restart " << k << " token " << g.token;
      }
    }
    EXPECT_LT(before, after) << "restart " << k << ": a token handed out after it is not above those before";
  }

  // (ii) Every grant a client was told of (under `always`) and had not begun to
  // release, and whose TTL had not run out, when the daemon died comes back: the
  // listing right after the restart shows it, or its release (sent only after the
  // death) succeeded, or its holder reclaimed it. And a reclaim is refused only once
  // the grace may have ended, never within it.
  std::size_t at_risk = 0, seen_listed = 0, released_after = 0, reclaimed = 0, used_after = 0,
              lapsed_while_down = 0, refused_after_grace = 0;
  for (std::size_t k = 0; k < restarts.size(); ++k) {
    const Restart& r = restarts[k];
    const TimePoint next_kill = k + 1 < restarts.size() ? restarts[k + 1].kill_sent : TimePoint::max();
    for (const Grant& g : grants) {
      if (g.granted_at >= r.kill_sent || g.release_start <= r.dead) continue;
      auto lost_it = lost.find(g.lease);
      const TimePoint lost_at = lost_it == lost.end() ? TimePoint::max() : lost_it->second;
      if (lost_at <= r.kill_sent) continue;
      TimePoint valid_until = TimePoint::min();  // the latest deadline known before the kill
      for (const auto& [when, until] : g.deadlines) {
        if (when < r.kill_sent) valid_until = std::max(valid_until, until);
      }
      // The daemon's deadline is at least valid_until + safety_margin.
      if (valid_until + base_options.safety_margin <= r.dead) continue;  // may have expired before the death
      ++at_risk;
      if (valid_until + base_options.safety_margin <= r.up) ++lapsed_while_down;
      const bool listed = IsListed(r.listed, g.lease);
      const bool released = g.release_ok && g.release_start > r.dead;
      const bool reclaimed_here = g.reclaimed_at > r.dead && g.reclaimed_at != TimePoint::max();
      seen_listed += listed;
      released_after += released;
      reclaimed += reclaimed_here;
      // Still the worker's after the restart: the client reclaimed it (or renewed it
      // after a GRACE, which reclaims first) and the storage took writes under it.
      used_after += std::any_of(g.writes.begin(), g.writes.end(), [&](TimePoint t) { return t > r.up && t < next_kill; });
      EXPECT_TRUE(listed || released || reclaimed_here)
          << "restart " << k << ": lease " << g.lease << " (token " << g.token << ", " << g.resource << ", worker "
          << g.worker << ") was granted and live when the daemon died, and did not come back";
      if (lost_at < next_kill && lost_at != TimePoint::max()) {
        // The grace began after the spawn and lasts at least the TTL.
        EXPECT_GE(lost_at, r.spawned + kTtl)
            << "restart " << k << ": the reclaim of lease " << g.lease << " was refused within the grace";
        ++refused_after_grace;
      }
    }
  }
  summary += "; at kills: " + std::to_string(at_risk) + " live leases (" + std::to_string(lapsed_while_down) +
             " whose TTL ran out while the daemon was down), " + std::to_string(seen_listed) + " listed after restart, " +
             std::to_string(released_after) + " released after it, " + std::to_string(reclaimed) +
             " seen reclaimed by Held, " + std::to_string(used_after) + " written under after it, " +
             std::to_string(refused_after_grace) + " refused after the grace";
  EXPECT_GT(at_risk, 0u) << "no kill ever caught a lease held: the test proved nothing\n" << summary;
  EXPECT_GT(used_after, 0u) << "no lease was ever kept across a restart: reclaim went untested\n" << summary;

  // (iii) Never two exclusive leases at once. The storage never refused a write made
  // while its writer believed its lease valid (every write here is made so); per
  // resource, in token order, a lease's last write precedes the next lease's grant;
  // and no listing of the daemon ever showed two leases on a resource with an X.
  for (const FencedStorage::Write& w : writes) {
    EXPECT_TRUE(w.accepted) << "stale write on " << w.resource << " by lease " << w.lease << " (token " << w.token
                            << ") while its writer believed it valid for another "
                            << std::chrono::duration_cast<milliseconds>(w.believed_until - w.at).count() << " ms";
  }
  std::map<std::string, std::vector<const Grant*>> by_resource;
  for (const Grant& g : grants) {
    if (!g.writes.empty()) by_resource[g.resource].push_back(&g);
  }
  for (auto& [resource, list] : by_resource) {
    std::sort(list.begin(), list.end(), [](const Grant* a, const Grant* b) { return a->token < b->token; });
    for (std::size_t i = 1; i < list.size(); ++i) {
      const Grant& a = *list[i - 1];
      const Grant& b = *list[i];
      EXPECT_LT(a.writes.back(), b.granted_at)
          << resource << ": lease " << a.lease << " (token " << a.token << ") still wrote "
          << std::chrono::duration_cast<std::chrono::microseconds>(a.writes.back() - b.granted_at).count()
          << " us after lease " << b.lease << " (token " << b.token << ") was granted";
    }
  }
  EXPECT_GT(probe_samples, 0);
  for (const std::string& c : probe_conflicts) ADD_FAILURE() << "two leases at once, one exclusive:\n" << c;
  std::printf("%s\n", summary.c_str());
}

}  // namespace
}  // namespace lockgraph::testing
