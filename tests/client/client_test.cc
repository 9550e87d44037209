// The C++ client against a real lockgraphd.
#include "lockgraph/client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "daemon/daemon_harness.h"

namespace lockgraph {
namespace {

using testing::Daemon;
using namespace std::chrono_literals;

class ClientTest : public ::testing::TestWithParam<protocol::Encoding> {
 protected:
  void SetUp() override { ASSERT_FALSE(daemon_.endpoint().empty()) << daemon_.process().Output(); }

  std::unique_ptr<Client> Connect(std::int32_t priority = 0) {
    ClientOptions options;
    options.endpoints = {daemon_.endpoint()};
    options.session_ttl = 3000ms;
    options.priority = priority;
    options.encoding = GetParam();
    options.request_timeout = 3000ms;
    auto c = Client::Connect(options);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c).value() : nullptr;
  }

  zmq::context_t ctx_;
  Daemon daemon_{{"--revoke-grace-ms", "100", "--confirm-ms", "5"}};
};

INSTANTIATE_TEST_SUITE_P(Encodings, ClientTest,
                         ::testing::Values(protocol::Encoding::kBinary, protocol::Encoding::kJson),
                         [](const auto& info) { return info.param == protocol::Encoding::kJson ? "Json" : "Binary"; });

TEST_P(ClientTest, AcquireReleaseWithIncreasingTokens) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->session().empty());
  auto first = c->Acquire("t", "acct:1", Mode::kExclusive, 5s, 0ms);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_GT(first.value().valid_until, std::chrono::steady_clock::now());
  ASSERT_TRUE(c->Release(first.value()).ok());
  auto second = c->Acquire("t", "acct:1", Mode::kExclusive, 5s, 0ms);
  ASSERT_TRUE(second.ok());
  EXPECT_GT(second.value().token, first.value().token);
  auto renewed = c->Renew(second.value(), 10s);
  ASSERT_TRUE(renewed.ok()) << renewed.error().message;
}

TEST_P(ClientTest, BusyResourceTryIsTimeoutAndGuardReleases) {
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(a && b);
  {
    auto lease = a->Acquire("t", "row:1", Mode::kExclusive, 5s, 0ms);
    ASSERT_TRUE(lease.ok());
    LeaseGuard guard(*a, lease.value());
    auto busy = b->Acquire("u", "row:1", Mode::kExclusive, 5s, 0ms);
    ASSERT_FALSE(busy.ok());
    EXPECT_EQ(busy.error().code, Code::kTimeout);
    auto waited = b->Acquire("u", "row:1", Mode::kExclusive, 5s, 50ms);
    ASSERT_FALSE(waited.ok());
    EXPECT_EQ(waited.error().code, Code::kTimeout);
  }
  auto free_now = b->Acquire("u", "row:1", Mode::kExclusive, 5s, 0ms);
  EXPECT_TRUE(free_now.ok()) << "the guard released the lease";
}

TEST_P(ClientTest, QueuedAcquireIsGrantedOnRelease) {
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(a && b);
  auto held = a->Acquire("t", "row:2", Mode::kExclusive, 5s, 0ms);
  ASSERT_TRUE(held.ok());
  auto waiting = std::async(std::launch::async, [&] { return b->Acquire("u", "row:2", Mode::kExclusive, 5s, 3000ms); });
  // Release once b is queued (visible in the graph), not after a fixed sleep.
  testing::RawClient watcher(ctx_, daemon_.endpoint(), protocol::Encoding::kJson);
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  bool queued = false;
  while (!queued && std::chrono::steady_clock::now() < deadline) {
    auto g = watcher.Call(testing::QueryReq(protocol::Op::kGraph));
    queued = g && g->listing_json.find("\"waits\":[{") != std::string::npos;
  }
  ASSERT_TRUE(queued);
  ASSERT_TRUE(a->Release(held.value()).ok());
  auto got = waiting.get();
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_GT(got.value().token, held.value().token);
}

TEST_P(ClientTest, AbBaGivesOneDeadlockAndOneGrant) {
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Acquire("t1", "acct:A", Mode::kExclusive, 5s, 0ms).ok());
  auto b_first = b->Acquire("t2", "acct:B", Mode::kExclusive, 5s, 0ms);
  ASSERT_TRUE(b_first.ok());
  std::mutex mu;
  std::vector<protocol::Event> b_events;
  b->OnEvent([&](const protocol::Event& e) {
    std::lock_guard<std::mutex> lock(mu);
    b_events.push_back(e);
  });
  auto a_second = std::async(std::launch::async, [&] { return a->Acquire("t1", "acct:B", Mode::kExclusive, 5s, 3000ms); });
  // b's request closes the cycle once a's is queued; b/t2 is younger: the victim.
  Result<Lease> b_second = Error{};
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  do {
    b_second = b->Acquire("t2", "acct:A", Mode::kExclusive, 5s, 1000ms);
  } while (!b_second.ok() && b_second.error().code == Code::kTimeout && std::chrono::steady_clock::now() < deadline);
  ASSERT_FALSE(b_second.ok());
  EXPECT_EQ(b_second.error().code, Code::kDeadlock) << b_second.error().message;
  ASSERT_NE(b_second.error().deadlock, nullptr);
  EXPECT_EQ(b_second.error().deadlock->victim, b->session() + "/t2");
  ASSERT_TRUE(b->Release(b_first.value()).ok());
  auto granted = a_second.get();
  ASSERT_TRUE(granted.ok()) << granted.error().message;
  EXPECT_GT(granted.value().token, b_first.value().token);
  std::lock_guard<std::mutex> lock(mu);
  bool revoked = false;
  for (const auto& e : b_events) revoked = revoked || (e.kind == protocol::EventKind::kRevoked && e.deadlock);
  EXPECT_TRUE(revoked) << "the victim's lease on the cycle was revoked with the report";
}

TEST_P(ClientTest, ReportModeDeadlockIsDeniedToTheVictim) {
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Hold("t1", "pg:row7", Mode::kExclusive, 5s, "a.cc:1").ok());
  ASSERT_TRUE(b->Hold("t2", "redis:order17", Mode::kExclusive, 5s, "b.cc:1").ok());
  ASSERT_TRUE(a->Wait("t1", "redis:order17", Mode::kExclusive, "a.cc:2").ok());
  ASSERT_TRUE(b->Wait("t2", "pg:row7", Mode::kExclusive, "b.cc:2").ok());
  std::optional<protocol::Event> ev;
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline) {
    ev = b->PollEvent(200ms);
    if (ev && ev->kind == protocol::EventKind::kDenied) break;
  }
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->code, Code::kDeadlock);
  ASSERT_NE(ev->deadlock, nullptr);
  EXPECT_EQ(ev->deadlock->victim, b->session() + "/t2");
  ASSERT_TRUE(b->ReleaseReported("t2", "redis:order17").ok());
  ASSERT_TRUE(a->Unwait("t1", "redis:order17").ok());
}

TEST(ClientConnect, UnreachableDaemonTimesOut) {
  ClientOptions options;
  options.endpoints = {"tcp://127.0.0.1:1"};
  options.request_timeout = 300ms;
  const auto start = std::chrono::steady_clock::now();
  auto c = Client::Connect(options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, Code::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

}  // namespace
}  // namespace lockgraph
