// Integration tests: a real lockgraphd on a loopback port, spoken to over ZeroMQ in
// both encodings. Short TTLs; every wait has a deadline; no fixed sleeps.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "daemon/daemon_harness.h"

namespace lockgraph::testing {
namespace {

using graph::Code;
using graph::Mode;
using protocol::Encoding;
using protocol::Op;

class LockgraphdTest : public ::testing::TestWithParam<Encoding> {
 protected:
  void SetUp() override { ASSERT_FALSE(daemon_.endpoint().empty()) << daemon_.process().Output(); }

  std::unique_ptr<RawClient> NewClient(Encoding e) {
    return std::make_unique<RawClient>(ctx_, daemon_.endpoint(), e);
  }
  std::unique_ptr<RawClient> NewClient() { return NewClient(GetParam()); }

  // The daemon's observable state: leases and the graph, as JSON text.
  std::string State() {
    auto c = NewClient(Encoding::kJson);
    auto leases = c->Call(QueryReq(Op::kLeases));
    auto graph = c->Call(QueryReq(Op::kGraph));
    if (!leases || !graph) return "unreachable";
    // expires_in_ms and waiting_ms move with the clock; drop them.
    std::string s = leases->listing_json + "\n" + graph->listing_json;
    for (const char* key : {"\"expires_in_ms\":", "\"waiting_ms\":"}) {
      for (auto at = s.find(key); at != std::string::npos; at = s.find(key, at)) {
        auto end = s.find_first_of(",}", at);
        s.erase(at, end - at);
      }
    }
    return s;
  }

  zmq::context_t ctx_;
  Daemon daemon_{{"--revoke-grace-ms", "50", "--confirm-ms", "5", "--victim-grace-ms", "300"}};
};

INSTANTIATE_TEST_SUITE_P(Encodings, LockgraphdTest, ::testing::Values(Encoding::kJson, Encoding::kBinary),
                         [](const auto& info) { return info.param == Encoding::kJson ? "Json" : "Binary"; });

TEST_P(LockgraphdTest, HelloGivesSessionSecretAndHeartbeat) {
  auto c = NewClient();
  protocol::Reply r = c->Hello(3000);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_FALSE(r.session.value_or("").empty());
  EXPECT_GE(r.secret.value_or("").size(), 16u);
  EXPECT_EQ(r.heartbeat_ms.value_or(0), 1000);
  EXPECT_EQ(r.epoch.value_or(0), 1u);
}

TEST_P(LockgraphdTest, ArbitrateAbBaOneVictimOtherGranted) {
  auto a = NewClient();
  auto b = NewClient();
  ASSERT_TRUE(a->Hello().ok());
  ASSERT_TRUE(b->Hello().ok());
  auto la = a->Call(AcquireReq("t1", "acct:1", Mode::kExclusive, 0));
  auto lb = b->Call(AcquireReq("t2", "acct:2", Mode::kExclusive, 0));
  ASSERT_TRUE(la && la->granted && lb && lb->granted);
  auto qa = a->Call(AcquireReq("t1", "acct:2", Mode::kExclusive, -1));
  ASSERT_TRUE(qa && qa->queued) << (qa ? qa->message : "no reply");
  // b/t2 is younger: its request closes the cycle and it is the victim.
  auto qb = b->Call(AcquireReq("t2", "acct:1", Mode::kExclusive, -1));
  ASSERT_TRUE(qb.has_value());
  ASSERT_EQ(qb->code, Code::kDeadlock) << qb->message;
  ASSERT_NE(qb->deadlock, nullptr);
  EXPECT_EQ(qb->deadlock->victim, b->session() + "/t2");
  EXPECT_EQ(qb->deadlock->cycle.size(), 2u);
  EXPECT_FALSE(qb->deadlock->why.empty());
  // Its lease on the cycle is revoked, and passes to a/t1 after the grace.
  auto revoked = b->WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kRevoked; });
  ASSERT_TRUE(revoked.has_value());
  EXPECT_EQ(revoked->resource, "acct:2");
  EXPECT_EQ(revoked->reason, graph::RevokeReason::kDeadlock);
  ASSERT_NE(revoked->deadlock, nullptr);
  auto granted = a->WaitEvent([&](const protocol::Event& e) {
    return e.kind == protocol::EventKind::kGranted && e.id == qa->id;
  });
  ASSERT_TRUE(granted.has_value());
  EXPECT_EQ(granted->resource, "acct:2");
  EXPECT_GT(granted->token, *lb->token);
}

TEST_P(LockgraphdTest, ReportModeAbBaVictimGetsDeniedEvent) {
  auto a = NewClient();
  auto b = NewClient();
  ASSERT_TRUE(a->Hello().ok());
  ASSERT_TRUE(b->Hello().ok());
  auto hold = [](const std::string& owner, const std::string& resource) {
    protocol::Request r;
    r.op = Op::kHold;
    r.owner = owner;
    r.resource = resource;
    r.mode = Mode::kExclusive;
    r.ttl_ms = 5000;
    return r;
  };
  auto wait = [](const std::string& owner, const std::string& resource) {
    protocol::Request r;
    r.op = Op::kWait;
    r.owner = owner;
    r.resource = resource;
    r.mode = Mode::kExclusive;
    r.site = "orders.py:42";
    return r;
  };
  ASSERT_TRUE(a->Call(hold("t1", "order:17"))->ok());
  ASSERT_TRUE(b->Call(hold("t2", "account:7"))->ok());
  ASSERT_TRUE(a->Call(wait("t1", "account:7"))->ok());
  auto w = b->Call(wait("t2", "order:17"));
  ASSERT_TRUE(w && w->ok()) << "report mode confirms before acting";
  // After confirm_ms the younger owner is the victim: a denied event with the report.
  auto denied = b->WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kDenied; });
  ASSERT_TRUE(denied.has_value());
  EXPECT_EQ(denied->code, Code::kDeadlock);
  ASSERT_NE(denied->deadlock, nullptr);
  EXPECT_EQ(denied->deadlock->victim, b->session() + "/t2");
  EXPECT_TRUE(denied->deadlock->report_mode);
  bool site_seen = false;
  for (const auto& e : denied->deadlock->cycle) site_seen = site_seen || e.site == "orders.py:42";
  EXPECT_TRUE(site_seen);
  EXPECT_TRUE(a->events().empty() || a->events().front().kind != protocol::EventKind::kDenied);
}

TEST_P(LockgraphdTest, ClientThatStopsHeartbeatingLosesLeasesAndWaiterGetsLargerToken) {
  auto dead = NewClient();
  auto waiter = NewClient();
  ASSERT_TRUE(dead->Hello(/*ttl_ms=*/200).ok());
  ASSERT_TRUE(waiter->Hello(/*ttl_ms=*/5000).ok());
  auto held = dead->Call(AcquireReq("t", "row:1", Mode::kExclusive, 0, /*ttl_ms=*/30'000));
  ASSERT_TRUE(held && held->granted);
  auto q = waiter->Call(AcquireReq("w", "row:1", Mode::kExclusive, 5000));
  ASSERT_TRUE(q && q->queued);
  dead.reset();  // gone without bye: its session expires after 200 ms
  auto granted = waiter->WaitEvent(
      [&](const protocol::Event& e) { return e.kind == protocol::EventKind::kGranted && e.id == q->id; },
      milliseconds(3000));
  ASSERT_TRUE(granted.has_value());
  EXPECT_GT(granted->token, *held->token);
}

TEST_P(LockgraphdTest, RetriedRequestIdIsAnsweredFromTheCache) {
  auto a = NewClient();
  auto b = NewClient();
  ASSERT_TRUE(a->Hello().ok());
  ASSERT_TRUE(b->Hello().ok());
  ASSERT_TRUE(a->Call(AcquireReq("t", "k:1", Mode::kExclusive, 0))->granted);
  protocol::Request q = AcquireReq("u", "k:1", Mode::kExclusive, -1);
  q.id = 40;
  auto first = b->Call(q);
  ASSERT_TRUE(first && first->queued);
  auto second = b->Call(q);  // the same id again: a retry after a lost reply
  ASSERT_TRUE(second && second->queued);
  auto listing = NewClient(Encoding::kJson)->Call(QueryReq(Op::kGraph));
  ASSERT_TRUE(listing.has_value());
  // One wait, not two.
  std::size_t waits = 0;
  for (auto at = listing->listing_json.find("\"waits\""); (at = listing->listing_json.find("\"owner\"", at + 1)) != std::string::npos;) ++waits;
  EXPECT_EQ(waits, 1u) << listing->listing_json;
  auto stats = NewClient(Encoding::kJson)->Call(QueryReq(Op::kStats));
  EXPECT_NE(stats->listing_json.find("\"cache_hits\":1"), std::string::npos) << stats->listing_json;
  // An id below the last one whose reply was cached still gets its reply.
  protocol::Request again = q;
  auto third = b->Call(again);
  ASSERT_TRUE(third && third->queued);
}

TEST_P(LockgraphdTest, RetriedHelloOpensOneSession) {
  auto c = NewClient();
  protocol::Request hello;
  hello.op = Op::kHello;
  hello.client = "retry";
  hello.ttl_ms = 3000;
  hello.id = 5;
  auto first = c->Call(hello);
  auto second = c->Call(hello);
  ASSERT_TRUE(first && second && first->ok() && second->ok());
  EXPECT_EQ(first->session, second->session);
  auto stats = NewClient(Encoding::kJson)->Call(QueryReq(Op::kStats));
  EXPECT_NE(stats->listing_json.find("\"sessions_opened\":1,"), std::string::npos) << stats->listing_json;
}

TEST_P(LockgraphdTest, CachedRepliesNeedTheSecret) {
  auto a = NewClient();
  ASSERT_TRUE(a->Hello().ok());
  protocol::Request acquire = AcquireReq("t", "k:9", Mode::kExclusive, 0);
  acquire.id = 10;
  ASSERT_TRUE(a->Call(acquire)->granted);
  auto thief = NewClient();
  thief->Adopt(a->session(), "not-the-secret");
  auto r = thief->Call(acquire);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code, Code::kAuth);
  EXPECT_FALSE(r->token.has_value());
}

TEST_P(LockgraphdTest, ReconnectingClientGetsUnacknowledgedEvents) {
  auto a = NewClient();
  auto b = NewClient();
  ASSERT_TRUE(a->Hello().ok());
  ASSERT_TRUE(b->Hello().ok());
  auto held = a->Call(AcquireReq("t", "k:2", Mode::kExclusive, 0));
  ASSERT_TRUE(held && held->granted);
  auto q = b->Call(AcquireReq("u", "k:2", Mode::kExclusive, -1));
  ASSERT_TRUE(q && q->queued);
  const std::string session = b->session(), secret = b->secret();
  b.reset();  // connection lost before the grant
  ASSERT_TRUE(a->Call(ReleaseReq(*held->lease))->ok());
  // A new connection of the same session: its next request brings the grant again.
  auto b2 = NewClient();
  b2->Adopt(session, secret);
  protocol::Request hb;
  hb.op = Op::kHeartbeat;
  hb.id = q->id + 1;
  ASSERT_TRUE(b2->Call(hb)->ok());
  auto granted = b2->WaitEvent([&](const protocol::Event& e) {
    return e.kind == protocol::EventKind::kGranted && e.id == q->id;
  });
  ASSERT_TRUE(granted.has_value());
  // Acknowledged: not sent again on the next reconnect.
  hb.id += 1;
  hb.acked_seq = granted->seq;
  ASSERT_TRUE(b2->Call(hb)->ok());
  auto b3 = NewClient();
  b3->Adopt(session, secret);
  hb.id += 1;
  hb.acked_seq.reset();
  ASSERT_TRUE(b3->Call(hb)->ok());
  EXPECT_FALSE(b3->WaitEvent([](const protocol::Event&) { return true; }, milliseconds(200)).has_value());
}

TEST_P(LockgraphdTest, FifoGrantsUnderContentionAndWaitTimeout) {
  auto holder = NewClient();
  ASSERT_TRUE(holder->Hello().ok());
  auto lease = holder->Call(AcquireReq("h", "hot", Mode::kExclusive, 0));
  ASSERT_TRUE(lease && lease->granted);
  std::vector<std::unique_ptr<RawClient>> waiters;
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    waiters.push_back(NewClient());
    ASSERT_TRUE(waiters.back()->Hello().ok());
    auto q = waiters.back()->Call(AcquireReq("w" + std::to_string(i), "hot", Mode::kExclusive, -1));
    ASSERT_TRUE(q && q->queued);
    ids.push_back(q->id);
  }
  auto timed = NewClient();
  ASSERT_TRUE(timed->Hello().ok());
  auto q = timed->Call(AcquireReq("late", "hot", Mode::kExclusive, 50));
  ASSERT_TRUE(q && q->queued);
  auto denied = timed->WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kDenied; });
  ASSERT_TRUE(denied.has_value());
  EXPECT_EQ(denied->code, Code::kTimeout);
  auto busy = timed->Call(AcquireReq("try", "hot", Mode::kExclusive, 0));
  ASSERT_TRUE(busy.has_value());
  EXPECT_EQ(busy->code, Code::kTimeout);

  graph::LeaseId current = *lease->lease;
  RawClient* current_client = holder.get();
  graph::Token last_token = *lease->token;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(current_client->Call(ReleaseReq(current))->ok());
    auto g = waiters[i]->WaitEvent([&](const protocol::Event& e) {
      return e.kind == protocol::EventKind::kGranted && e.id == ids[i];
    });
    ASSERT_TRUE(g.has_value()) << "waiter " << i << " not granted in order";
    EXPECT_GT(g->token, last_token);
    last_token = g->token;
    current = g->lease;
    current_client = waiters[i].get();
  }
}

TEST_P(LockgraphdTest, BatchAnswersEachItemInOrder) {
  auto c = NewClient();
  ASSERT_TRUE(c->Hello().ok());
  protocol::Request batch;
  batch.op = Op::kBatch;
  for (int i = 0; i < 3; ++i) {
    protocol::Request h;
    h.op = Op::kHold;
    h.owner = "o";
    h.resource = "r:" + std::to_string(i);
    h.mode = Mode::kShared;
    h.ttl_ms = 5000;
    batch.items.push_back(h);
  }
  protocol::Request bad;
  bad.op = Op::kRelease;
  bad.lease = 12345;
  batch.items.push_back(bad);
  auto r = c->Call(batch);
  ASSERT_TRUE(r && r->ok()) << (r ? r->message : "no reply");
  ASSERT_EQ(r->results.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(r->results[i].ok());
  EXPECT_EQ(r->results[3].code, Code::kNotOwner);
}

// The same request sequence in JSON and in binary gives the same results.
TEST(LockgraphdEncodings, SameSequenceSameResults) {
  auto run = [](Encoding e) {
    zmq::context_t ctx;
    Daemon d({"--revoke-grace-ms", "0"});
    RawClient a(ctx, d.endpoint(), e), b(ctx, d.endpoint(), e);
    std::vector<std::string> out;
    a.Hello();
    b.Hello();
    auto step = [&](RawClient& c, protocol::Request r) {
      auto reply = c.Call(r);
      if (!reply) return out.push_back("no reply");
      out.push_back(std::string(graph::CodeName(reply->code)) + (reply->granted ? " granted" : "") +
                    (reply->queued ? " queued" : "") + (reply->lease ? " lease" : ""));
    };
    step(a, AcquireReq("t", "x:1", Mode::kShared, 0));
    step(b, AcquireReq("u", "x:1", Mode::kShared, 0));
    step(b, AcquireReq("u", "x:2", Mode::kExclusive, 0));
    step(a, AcquireReq("t", "x:2", Mode::kExclusive, -1));
    step(b, AcquireReq("u", "x:1", Mode::kExclusive, -1));  // upgrade closes a cycle
    step(a, AcquireReq("t", "x:3", Mode::kExclusive, 0));
    protocol::Request unknown;
    unknown.op = Op::kRenew;
    unknown.lease = 99;
    step(a, unknown);
    auto ev = a.WaitEvent([](const protocol::Event& x) { return x.kind == protocol::EventKind::kGranted; });
    out.push_back(ev ? "event granted " + ev->resource : "no event");
    return out;
  };
  auto json = run(Encoding::kJson);
  auto binary = run(Encoding::kBinary);
  EXPECT_EQ(json, binary);
  EXPECT_EQ(json[4], "DEADLOCK");
}

// ------------------------------------------------------------------ bad input

struct BadCase {
  const char* name;
  std::string frame;
  Code code;
};

class LockgraphdBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(daemon_.endpoint().empty()) << daemon_.process().Output(); }
  zmq::context_t ctx_;
  Daemon daemon_{{"--max-frame-bytes", "4096", "--max-name-bytes", "64"}};
};

TEST_F(LockgraphdBadInputTest, EveryBadFrameGetsItsErrorAndChangesNothing) {
  RawClient owner(ctx_, daemon_.endpoint(), Encoding::kJson);
  ASSERT_TRUE(owner.Hello().ok());
  auto lease = owner.Call(AcquireReq("t", "acct:1", Mode::kExclusive, 0));
  ASSERT_TRUE(lease && lease->granted);
  RawClient other(ctx_, daemon_.endpoint(), Encoding::kJson);
  ASSERT_TRUE(other.Hello().ok());
  ASSERT_TRUE(other.Call(AcquireReq("u", "acct:1", Mode::kExclusive, -1))->queued);

  auto state = [&] {
    RawClient q(ctx_, daemon_.endpoint(), Encoding::kJson);
    auto l = q.Call(QueryReq(Op::kLeases));
    auto g = q.Call(QueryReq(Op::kGraph));
    std::string s = (l ? l->listing_json : "?") + (g ? g->listing_json : "?");
    for (const char* key : {"\"expires_in_ms\":", "\"waiting_ms\":"}) {
      for (auto at = s.find(key); at != std::string::npos; at = s.find(key, at)) s.erase(at, s.find_first_of(",}", at) - at);
    }
    return s;
  };
  const std::string before = state();

  const std::string s = owner.session(), k = owner.secret();
  auto json = [&](const std::string& body) { return "{\"v\":1,\"id\":7," + body + "}"; };
  const std::string auth = "\"session\":\"" + s + "\",\"secret\":\"" + k + "\"";
  std::string valid_binary;
  {
    protocol::Request r = AcquireReq("t", "acct:9", Mode::kExclusive, 0);
    r.id = 7;
    r.session = s;
    r.secret = k;
    valid_binary = protocol::EncodeRequest(r, Encoding::kBinary);
  }
  std::vector<BadCase> cases = {
      {"garbage", std::string("\x02\xff\xfe garbage \x00\x01", 15), Code::kBadRequest},
      {"truncated binary", valid_binary.substr(0, valid_binary.size() / 2), Code::kBadRequest},
      {"invalid json", "{\"v\":1,\"id\":7,\"op\":", Code::kBadRequest},
      {"wrong type", json("\"op\":\"acquire\"," + auth + ",\"owner\":5,\"resource\":\"a\",\"mode\":\"X\",\"ttl_ms\":100,\"wait_ms\":0"), Code::kBadRequest},
      {"unknown op", json("\"op\":\"steal\"," + auth), Code::kBadRequest},
      {"missing field", json("\"op\":\"acquire\"," + auth + ",\"owner\":\"t\",\"mode\":\"X\",\"ttl_ms\":100,\"wait_ms\":0"), Code::kBadRequest},
      {"bad mode", json("\"op\":\"acquire\"," + auth + ",\"owner\":\"t\",\"resource\":\"a\",\"mode\":\"Q\",\"ttl_ms\":100,\"wait_ms\":0"), Code::kBadRequest},
      {"oversize frame", json("\"op\":\"heartbeat\"," + auth + ",\"pad\":\"" + std::string(5000, 'x') + "\""), Code::kLimit},
      {"name over limit", json("\"op\":\"acquire\"," + auth + ",\"owner\":\"t\",\"resource\":\"" + std::string(65, 'r') + "\",\"mode\":\"X\",\"ttl_ms\":100,\"wait_ms\":0"), Code::kLimit},
      {"wrong secret", json("\"op\":\"release\",\"session\":\"" + s + "\",\"secret\":\"nope\",\"lease\":\"" + std::to_string(*lease->lease) + "\""), Code::kAuth},
      {"unknown session", json("\"op\":\"heartbeat\",\"session\":\"nosuch\",\"secret\":\"x\""), Code::kUnknownSession},
      {"another session's lease", json("\"op\":\"release\",\"session\":\"" + other.session() + "\",\"secret\":\"" + other.secret() + "\",\"lease\":\"" + std::to_string(*lease->lease) + "\""), Code::kNotOwner},
      {"lease not digits", json("\"op\":\"release\"," + auth + ",\"lease\":\"12ab\""), Code::kBadRequest},
      {"wrong version", "{\"v\":2,\"id\":7,\"op\":\"heartbeat\"," + auth + "}", Code::kBadRequest},
      {"empty frame", "", Code::kBadRequest},
      {"reclaim with a token not held", json("\"op\":\"reclaim\"," + auth + ",\"holds\":[{\"owner\":\"t\",\"resource\":\"acct:1\",\"mode\":\"X\",\"token\":\"" + std::to_string(*lease->token + 1) + "\"}]"), Code::kNotOwner},
      {"revoke wrong token", json("\"op\":\"revoke\",\"admin_token\":\"guess\",\"resource\":\"acct:1\""), Code::kAuth},
  };
  RawClient raw(ctx_, daemon_.endpoint(), Encoding::kJson);
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    raw.SendFrame(c.frame);
    // Frames too broken to carry an id are answered with id 0.
    std::optional<protocol::Reply> reply = raw.NextReply(milliseconds(3000));
    ASSERT_TRUE(reply.has_value()) << "no answer";
    EXPECT_TRUE(reply->id == 7 || reply->id == 0) << reply->id;
    // A reclaim is answered item by item.
    const protocol::Reply& answer = reply->ok() && reply->results.size() == 1 ? reply->results[0] : *reply;
    EXPECT_EQ(graph::CodeName(answer.code), graph::CodeName(c.code)) << answer.message;
    EXPECT_FALSE(answer.message.empty());
    EXPECT_EQ(state(), before) << "state changed";
  }
  // Still serving, and the bad frames were counted.
  auto stats = raw.Call(QueryReq(Op::kStats));
  ASSERT_TRUE(stats.has_value());
  EXPECT_NE(stats->listing_json.find("\"bad_frames\":"), std::string::npos);
  EXPECT_EQ(stats->listing_json.find("\"bad_frames\":0,"), std::string::npos);
  ASSERT_TRUE(owner.Call(ReleaseReq(*lease->lease))->ok());
  // The "another session's lease" frame proved other's session from raw's
  // connection, so the session's events now go there; other's next request moves
  // them back and brings the unacknowledged grant again.
  protocol::Request hb;
  hb.op = Op::kHeartbeat;
  hb.id = 100;  // above the id 7 that the bad frame used in other's session
  ASSERT_TRUE(other.Call(hb)->ok());
  auto granted = other.WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kGranted; });
  EXPECT_TRUE(granted.has_value());
}

TEST_F(LockgraphdBadInputTest, FramesFarOverTheLimitDropTheConnectionNotTheDaemon) {
  RawClient raw(ctx_, daemon_.endpoint(), Encoding::kJson);
  raw.SendFrame(std::string(64 * 1024, '{'));
  RawClient fresh(ctx_, daemon_.endpoint(), Encoding::kJson);
  EXPECT_TRUE(fresh.Hello().ok());
}

// ------------------------------------------------------------------ process

TEST(LockgraphdProcess, ListensOnIpcToo) {
  const std::string path = ::testing::TempDir() + "/lockgraphd." + std::to_string(getpid()) + ".sock";
  Daemon d({"--listen", "ipc://" + path});
  ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
  zmq::context_t ctx;
  RawClient c(ctx, "ipc://" + path, Encoding::kJson);
  EXPECT_TRUE(c.Hello().ok());
}

TEST(LockgraphdProcess, SigtermStopsCleanly) {
  Daemon d;
  ASSERT_FALSE(d.endpoint().empty());
  d.process().Signal(SIGTERM);
  ASSERT_TRUE(d.process().Exited(milliseconds(5000)));
  EXPECT_EQ(d.process().exit_code(), 0) << d.process().Output();
}

// Under fsync always with a clean journal, a resource that no restored lease awaits
// is served during the grace; its token is of the new epoch.
TEST(LockgraphdProcess, TokensKeepIncreasingAcrossRestarts) {
  std::string data_dir;
  graph::Token before = 0;
  {
    Daemon d({"--fsync", "always"});
    ASSERT_FALSE(d.endpoint().empty());
    data_dir = d.data_dir();
    zmq::context_t ctx;
    RawClient c(ctx, d.endpoint(), Encoding::kJson);
    ASSERT_TRUE(c.Hello().ok());
    for (int i = 0; i < 3; ++i) {
      auto l = c.Call(AcquireReq("t", "k:" + std::to_string(i), Mode::kExclusive, 0));
      ASSERT_TRUE(l && l->granted);
      before = *l->token;
    }
    d.process().Signal(SIGKILL);
    ASSERT_TRUE(d.process().Exited(milliseconds(5000)));
  }
  Daemon again({"--fsync", "always"}, data_dir);
  ASSERT_FALSE(again.endpoint().empty()) << again.process().Output();
  zmq::context_t ctx;
  RawClient c(ctx, again.endpoint(), Encoding::kJson);
  auto hello = c.Hello();
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello.epoch.value_or(0), 2u);
  auto restored = c.Call(AcquireReq("t", "k:0", Mode::kExclusive, 0));
  ASSERT_TRUE(restored.has_value());
  EXPECT_EQ(restored->code, Code::kGrace) << "k:0 awaits its holder's reclaim";
  auto l = c.Call(AcquireReq("t", "k:9", Mode::kExclusive, 0));
  ASSERT_TRUE(l && l->granted) << (l ? l->message : "no reply");
  EXPECT_GT(*l->token, before);
  EXPECT_EQ(*l->token >> graph::kSeqBits, 2u);
}

TEST(LockgraphdProcess, CorruptEpochFileStopsTheDaemon) {
  const std::string dir = ::testing::TempDir() + "/lockgraphd.corrupt." + std::to_string(getpid());
  std::filesystem::remove_all(dir);  // a reused pid must not find an old run's files
  std::filesystem::create_directories(dir);
  FILE* f = std::fopen((dir + "/epoch").c_str(), "w");
  std::fputs("seven\n", f);
  std::fclose(f);
  Process p({LOCKGRAPHD_PATH, "--listen", "tcp://127.0.0.1:*", "--data-dir", dir});
  ASSERT_TRUE(p.Exited(milliseconds(5000)));
  EXPECT_NE(p.exit_code(), 0);
  EXPECT_NE(p.Output().find("corrupt"), std::string::npos) << p.Output();
}

TEST(LockgraphdProcess, HelpAndBadFlags) {
  Process help({LOCKGRAPHD_PATH, "--help"});
  ASSERT_TRUE(help.Exited(milliseconds(5000)));
  EXPECT_EQ(help.exit_code(), 0);
  EXPECT_NE(help.Output().find("--listen"), std::string::npos);
  EXPECT_NE(help.Output().find("--config"), std::string::npos);
  Process bad({LOCKGRAPHD_PATH, "--victim-policy", "oldest"});
  ASSERT_TRUE(bad.Exited(milliseconds(5000)));
  EXPECT_NE(bad.exit_code(), 0);
  EXPECT_NE(bad.Output().find("oldest"), std::string::npos) << bad.Output();
  const std::string busy_dir = ::testing::TempDir() + "/lockgraphd_test.busy." + std::to_string(getpid());
  std::filesystem::remove_all(busy_dir);
  Process busy({LOCKGRAPHD_PATH, "--listen", "tcp://256.0.0.1:1", "--data-dir", busy_dir});
  ASSERT_TRUE(busy.Exited(milliseconds(5000)));
  EXPECT_NE(busy.exit_code(), 0);
  EXPECT_NE(busy.Output().find("cannot listen"), std::string::npos) << busy.Output();
}

TEST(LockgraphdProcess, ConfigFileIsReadAndErrorsNameTheKey) {
  const std::string path = ::testing::TempDir() + "/lockgraphd_test.toml";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("admin_token = \"tok\"\n[detection]\nconfirm_ms = \"soon\"\n", f);
  std::fclose(f);
  Process bad({LOCKGRAPHD_PATH, "--config", path});
  ASSERT_TRUE(bad.Exited(milliseconds(5000)));
  EXPECT_EQ(bad.exit_code(), 2);
  EXPECT_NE(bad.Output().find("detection.confirm_ms"), std::string::npos) << bad.Output();
  // A segment size out of range, in the file and as a flag.
  f = std::fopen(path.c_str(), "w");
  std::fputs("[journal]\nsegment_kb = 0\n", f);
  std::fclose(f);
  Process zero({LOCKGRAPHD_PATH, "--config", path});
  ASSERT_TRUE(zero.Exited(milliseconds(5000)));
  EXPECT_EQ(zero.exit_code(), 2);
  EXPECT_NE(zero.Output().find("journal.segment_kb"), std::string::npos) << zero.Output();
  Process flag({LOCKGRAPHD_PATH, "--segment-kb", "-5"});
  ASSERT_TRUE(flag.Exited(milliseconds(5000)));
  EXPECT_NE(flag.exit_code(), 0);
  EXPECT_NE(flag.Output().find("--segment-kb"), std::string::npos) << flag.Output();

  f = std::fopen(path.c_str(), "w");
  std::fputs("admin_token = \"tok\"\n[classes.account]\nrevoke = \"immediate\"\n", f);
  std::fclose(f);
  Daemon d({"--config", path});
  ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
  zmq::context_t ctx;
  RawClient c(ctx, d.endpoint(), Encoding::kJson);
  ASSERT_TRUE(c.Hello().ok());
  auto l = c.Call(AcquireReq("t", "account:1", Mode::kExclusive, 0));
  ASSERT_TRUE(l && l->granted);
  protocol::Request revoke;
  revoke.op = Op::kRevoke;
  revoke.admin_token = "tok";
  revoke.resource = "account:1";
  auto r = c.Call(revoke);
  ASSERT_TRUE(r && r->ok()) << (r ? r->message : "");
  ASSERT_TRUE(r->revoked.has_value());
  EXPECT_EQ(r->revoked->size(), 1u);
  auto ev = c.WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kRevoked; });
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->reason, graph::RevokeReason::kOperator);
}

// Each session's reply cache is bounded in bytes too: large batch replies push out
// older replies sooner, the newest is always kept, and an evicted id is refused.
TEST(LockgraphdProcess, ReplyCacheIsBoundedInBytes) {
  const std::string path = ::testing::TempDir() + "/lockgraphd_reply_cache.toml";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("reply_cache_bytes = 4096\n", f);
  std::fclose(f);
  Daemon d({"--config", path});
  ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
  zmq::context_t ctx;
  RawClient c(ctx, d.endpoint(), Encoding::kJson);
  ASSERT_TRUE(c.Hello().ok());
  auto batch_of = [](std::uint64_t id) {
    protocol::Request b;
    b.op = Op::kBatch;
    b.id = id;
    for (int i = 0; i < 200; ++i) {  // 200 item replies: well over 4096 bytes
      protocol::Request item;
      item.op = Op::kHeartbeat;
      item.id = static_cast<std::uint64_t>(i + 1);
      b.items.push_back(item);
    }
    return b;
  };
  for (std::uint64_t id : {10, 11}) {
    auto r = c.Call(batch_of(id));
    ASSERT_TRUE(r && r->ok() && r->results.size() == 200u);
  }
  auto old = c.Call(batch_of(10));
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(old->code, Code::kBadRequest);
  EXPECT_NE(old->message.find("too old"), std::string::npos) << old->message;
  auto newest = c.Call(batch_of(11));
  ASSERT_TRUE(newest && newest->ok());
  EXPECT_EQ(newest->results.size(), 200u);
  auto stats = RawClient(ctx, d.endpoint(), Encoding::kJson).Call(QueryReq(Op::kStats));
  ASSERT_TRUE(stats.has_value());
  EXPECT_NE(stats->listing_json.find("\"cache_hits\":1"), std::string::npos) << stats->listing_json;
  // Out of range: refused at start, naming the key.
  f = std::fopen(path.c_str(), "w");
  std::fputs("reply_cache_bytes = 10\n", f);
  std::fclose(f);
  Process bad({LOCKGRAPHD_PATH, "--config", path});
  ASSERT_TRUE(bad.Exited(milliseconds(5000)));
  EXPECT_EQ(bad.exit_code(), 2);
  EXPECT_NE(bad.Output().find("reply_cache_bytes"), std::string::npos) << bad.Output();
}

TEST(Examples, TransferRunsAgainstARealDaemon) {
  Daemon d;
  ASSERT_FALSE(d.endpoint().empty());
  Process p({LOCKGRAPH_EXAMPLE_TRANSFER, d.endpoint(), "7", "3"});
  ASSERT_TRUE(p.Exited(milliseconds(10'000)));
  EXPECT_EQ(p.exit_code(), 0) << p.Output();
  EXPECT_NE(p.Output().find("transferring with tokens"), std::string::npos) << p.Output();
}

#ifdef LOCKGRAPH_COMPARE_PATH
// scripts/bench is a benchmark, not a test; this runs its lockgraph part (lockgraphd and
// the echo floor, every workload once, tiny) so that the harness cannot rot.
TEST(BenchHarness, QuickLockgraphPartRunsEveryWorkloadAndWritesTheRatios) {
  const std::string out = ::testing::TempDir() + "/lockgraph_bench_latest.json";
  std::remove(out.c_str());
  Process p({LOCKGRAPH_SOURCE_DIR "/scripts/bench", "--tiny", "--only", "lockgraph",
             "--no-pin", "--build-dir", LOCKGRAPH_BUILD_DIR, "--out", out});
  ASSERT_TRUE(p.Exited(milliseconds(120'000))) << p.Output();
  ASSERT_EQ(p.exit_code(), 0) << p.Output();
  // The Markdown table, with every lockgraph workload and the targets.
  for (const char* row : {"| lock | 16 | lockgraph, fsync never |", "| pipeline | 16 | lockgraph, fsync never |",
                          "| handover | 16 |", "| deadlock | 16 |", "| ingest | 4 |", "| scale | 16 | lockgraph, filled |",
                          "| lock_ops_16_vs_floor |", "| lock_ops_50_vs_redis | – | ≥ 1 | not run |"}) {
    EXPECT_NE(p.Output().find(row), std::string::npos) << row << "\n" << p.Output();
  }
  // The JSON: every ratio the issue names, numbers where lockgraph ran, null for peers.
  std::ifstream in(out);
  const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(json.empty()) << p.Output();
  for (const char* key : {"lock_ops_16_vs_floor", "lock_ops_50_vs_floor", "rtt_p50_vs_floor",
                          "deadlock_p99_vs_floor_p99", "handover_p50_vs_floor_p50", "scale_1m_vs_empty",
                          "always_vs_never_50", "ingest_events_per_s", "rss_bytes_per_lease"}) {
    const std::string k = std::string("\"") + key + "\": ";
    const auto at = json.find(k);
    ASSERT_NE(at, std::string::npos) << key;
    const char next = json[at + k.size()];
    EXPECT_TRUE(next >= '0' && next <= '9') << key << " is not a number: " << json.substr(at, 60);
  }
  for (const char* key : {"lock_ops_50_vs_redis", "lock_ops_16_vs_etcd"}) {
    EXPECT_NE(json.find(std::string("\"") + key + "\": null"), std::string::npos) << key;
  }
}
#endif

TEST(LockgraphctlProcess, CommandsAndExitCodes) {
  Daemon d;
  ASSERT_FALSE(d.endpoint().empty());
  zmq::context_t ctx;
  RawClient c(ctx, d.endpoint(), Encoding::kBinary);
  ASSERT_TRUE(c.Hello().ok());
  ASSERT_TRUE(c.Call(AcquireReq("t", "acct:1", Mode::kExclusive, 0))->granted);
  auto ctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {LOCKGRAPHCTL_PATH, "--endpoint", d.endpoint()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = std::make_unique<Process>(argv);
    p->Exited(milliseconds(10'000));
    return p;
  };
  auto status = ctl({"status"});
  EXPECT_EQ(status->exit_code(), 0) << status->Output();
  EXPECT_NE(status->Output().find("leases 1"), std::string::npos) << status->Output();
  auto leases = ctl({"leases"});
  EXPECT_EQ(leases->exit_code(), 0);
  EXPECT_NE(leases->Output().find("acct:1"), std::string::npos) << leases->Output();
  auto dot = ctl({"graph", "--format", "dot"});
  EXPECT_EQ(dot->exit_code(), 0);
  EXPECT_NE(dot->Output().find("digraph"), std::string::npos) << dot->Output();
  auto text = ctl({"graph"});
  EXPECT_NE(text->Output().find("holds acct:1"), std::string::npos) << text->Output();
  auto deadlocks = ctl({"deadlocks"});
  EXPECT_EQ(deadlocks->exit_code(), 0);
  EXPECT_NE(deadlocks->Output().find("no deadlocks"), std::string::npos);
  auto revoke = ctl({"revoke", "--admin-token", "x", "--resource", "acct:1"});
  EXPECT_EQ(revoke->exit_code(), 1) << revoke->Output();  // the daemon refuses: AUTH
  auto usage = ctl({"frobnicate"});
  EXPECT_EQ(usage->exit_code(), 2);
  auto unreachable = std::make_unique<Process>(
      std::vector<std::string>{LOCKGRAPHCTL_PATH, "--endpoint", "tcp://127.0.0.1:1", "--timeout-ms", "200", "status"});
  ASSERT_TRUE(unreachable->Exited(milliseconds(5000)));
  EXPECT_EQ(unreachable->exit_code(), 3);
}

}  // namespace
}  // namespace lockgraph::testing

namespace lockgraph::testing {
namespace {

// Segments of earlier boots go once over journal.keep_mb; the last one stays, since
// a restart replays it.
TEST(LockgraphdProcess, OldJournalSegmentsArePrunedTheLastIsKept) {
  const std::string dir = ::testing::TempDir() + "/lockgraphd_test.prune." + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  const std::string config = dir + ".toml";
  FILE* f = std::fopen(config.c_str(), "w");
  std::fputs("[journal]\nkeep_mb = 0\n", f);
  std::fclose(f);
  for (int boot = 0; boot < 3; ++boot) {
    Daemon d({"--config", config}, dir);
    ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
    d.process().Signal(SIGTERM);
    ASSERT_TRUE(d.process().Exited(milliseconds(10'000)));
  }
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/journal")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"00000002.lgj", "00000003.lgj"}));
}

// With tiny segments the daemon starts a new one from a snapshot every KiB or so: the
// stats and `lockgraphctl status` count them, old segments are pruned after each, and
// a restart restores from the newest (a lease granted before every snapshot included).
TEST(LockgraphdProcess, SnapshotsStartNewSegmentsAndAreRestoredFrom) {
  const std::string dir = ::testing::TempDir() + "/lockgraphd_test.snapshots." + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  const std::string config = dir + ".toml";
  FILE* f = std::fopen(config.c_str(), "w");
  std::fputs("[journal]\nkeep_mb = 0\nsegment_kb = 1\nfsync = \"always\"\n", f);
  std::fclose(f);
  auto d = std::make_unique<Daemon>(std::vector<std::string>{"--config", config}, dir);
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  zmq::context_t ctx;
  RawClient c(ctx, d->endpoint(), Encoding::kBinary);
  ASSERT_TRUE(c.Hello(60'000).ok());
  auto kept = c.Call(AcquireReq("keeper", "keep:1", Mode::kExclusive, 0, 60'000));
  ASSERT_TRUE(kept && kept->granted);
  for (int i = 0; i < 60; ++i) {
    auto r = c.Call(AcquireReq("churn", "churn:" + std::to_string(i), Mode::kExclusive, 0));
    ASSERT_TRUE(r && r->granted);
    ASSERT_TRUE(c.Call(ReleaseReq(*r->lease))->ok());
  }
  auto stats = c.Call(QueryReq(Op::kStats));
  ASSERT_TRUE(stats && stats->ok());
  const std::string& json = stats->listing_json;
  const auto at = json.find("\"snapshots\":");
  ASSERT_NE(at, std::string::npos) << json;
  const int snapshots = std::atoi(json.c_str() + at + 12);
  EXPECT_GE(snapshots, 3) << json;
  const std::string last = "00000001_" + std::string(6 - std::to_string(snapshots).size(), '0') +
                           std::to_string(snapshots) + ".lgj";
  EXPECT_NE(json.find(last), std::string::npos) << json;
  auto status = std::make_unique<Process>(
      std::vector<std::string>{LOCKGRAPHCTL_PATH, "--endpoint", d->endpoint(), "status"});
  ASSERT_TRUE(status->Exited(milliseconds(10'000)));
  EXPECT_NE(status->Output().find("snapshots " + std::to_string(snapshots) + " (last "), std::string::npos)
      << status->Output();
  // keep_mb = 0: only the newest segment is left, and no unfinished one.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/journal")) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{last});

  d->process().Signal(SIGKILL);
  ASSERT_TRUE(d->process().Exited(milliseconds(10'000)));
  d = std::make_unique<Daemon>(std::vector<std::string>{"--config", config, "--listen", d->endpoint()}, dir);
  ASSERT_FALSE(d->endpoint().empty()) << d->process().Output();
  EXPECT_NE(d->process().Output().find("restored 1 session(s) and 1 lease(s) from " + dir + "/journal/" + last),
            std::string::npos)
      << d->process().Output();
  RawClient again(ctx, d->endpoint(), Encoding::kJson);
  auto listing = again.Call(QueryReq(Op::kLeases));
  ASSERT_TRUE(listing && listing->ok());
  EXPECT_NE(listing->listing_json.find("\"token\":\"" + std::to_string(*kept->token) + "\""), std::string::npos)
      << listing->listing_json;
  EXPECT_EQ(listing->listing_json.find("churn:"), std::string::npos) << listing->listing_json;
  d.reset();
  std::filesystem::remove_all(dir);
  std::filesystem::remove(config);
}

}  // namespace
}  // namespace lockgraph::testing

namespace lockgraph::testing {
namespace {

// Under fsync always, a journal that cannot be written stops the daemon before the
// replies that its records should have covered; what reached the disk is restored.
TEST(LockgraphdProcess, JournalWriteFailureUnderAlwaysStopsBeforeReplying) {
  std::string dir = ::testing::TempDir() + "/lockgraphd.efbig.XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  // The file-size limit makes the journal's writes fail with EFBIG after about 4 KiB.
  Process p({"/usr/bin/prlimit", "--fsize=4096", "--", LOCKGRAPHD_PATH, "--listen", "tcp://127.0.0.1:*",
             "--data-dir", dir, "--fsync", "always", "--log-level", "warn"});
  ASSERT_TRUE(p.WaitForOutput("listening on ", milliseconds(10'000))) << p.Output();
  const std::string& out = p.Output();
  const auto at = out.find("listening on ") + 13;
  const std::string endpoint = out.substr(at, out.find('\n', at) - at);
  zmq::context_t ctx;
  RawClient c(ctx, endpoint, Encoding::kJson);
  ASSERT_TRUE(c.Hello().ok());
  int answered = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = c.Call(AcquireReq("t" + std::to_string(i), "r:" + std::to_string(i), Mode::kExclusive, 0, 60'000),
                    milliseconds(1000));
    if (!r) break;
    ASSERT_TRUE(r->granted) << r->message;
    ++answered;
  }
  ASSERT_TRUE(p.Exited(milliseconds(5000))) << "the daemon kept serving without its journal";
  EXPECT_EQ(p.exit_code(), 1);
  EXPECT_NE(p.Output().find("stopping without sending"), std::string::npos) << p.Output();
  ASSERT_GT(answered, 0);
  ASSERT_LT(answered, 200);

  // Every grant that was answered is on disk and comes back.
  Daemon again({}, dir);
  ASSERT_FALSE(again.endpoint().empty()) << again.process().Output();
  RawClient q(ctx, again.endpoint(), Encoding::kJson);
  auto stats = q.Call(QueryReq(Op::kStats));
  ASSERT_TRUE(stats && stats->ok());
  rapidjson::Document d;
  d.Parse(stats->listing_json.c_str());
  ASSERT_TRUE(d.IsObject());
  EXPECT_GE(d["restored_leases"].GetUint64(), static_cast<std::uint64_t>(answered));
}

}  // namespace
}  // namespace lockgraph::testing

namespace lockgraph::testing {
namespace {

// --no-journal: nothing is written but the epoch, and a restart starts empty (tokens
// still increase: the epoch is stored either way).
TEST(LockgraphdProcess, WithoutAJournalARestartStartsEmpty) {
  std::string dir;
  graph::Token before = 0;
  zmq::context_t ctx;
  {
    Daemon d({"--no-journal"});
    ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
    dir = d.data_dir();
    RawClient c(ctx, d.endpoint(), Encoding::kJson);
    ASSERT_TRUE(c.Hello().ok());
    auto l = c.Call(AcquireReq("t", "r:1", Mode::kExclusive, 0, 60'000));
    ASSERT_TRUE(l && l->granted);
    before = *l->token;
    d.process().Signal(SIGKILL);
    ASSERT_TRUE(d.process().Exited(milliseconds(5000)));
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/journal"));
  Daemon again({"--no-journal"}, dir);
  ASSERT_FALSE(again.endpoint().empty()) << again.process().Output();
  RawClient c(ctx, again.endpoint(), Encoding::kJson);
  ASSERT_TRUE(c.Hello().ok());
  auto l = c.Call(AcquireReq("u", "r:1", Mode::kExclusive, 0, 60'000));
  ASSERT_TRUE(l.has_value());
  EXPECT_TRUE(l->granted) << "nothing was restored, so there is no grace: " << l->message;
  EXPECT_GT(l->token.value_or(0), before);
}

}  // namespace
}  // namespace lockgraph::testing
