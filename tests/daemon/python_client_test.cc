// A deadlock between the Python client (client/python/lockgraph.py, JSON) and a C++
// client (binary), through a real lockgraphd.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "daemon/daemon_harness.h"

namespace lockgraph::testing {
namespace {

using graph::Mode;
using protocol::Encoding;

constexpr const char* kScript = R"PY(
import json, sys
sys.path.insert(0, sys.argv[1] + "/client/python")
import lockgraph

endpoint = sys.argv[2]
with lockgraph.Client([endpoint], client_name="python-test", session_ttl_ms=3000) as c:
    b = c.acquire("py", "res:B", mode="X", ttl_ms=5000, wait_ms=0)
    print(json.dumps({"step": "holding", "resource": "res:B", "token": b.token}), flush=True)
    try:
        a = c.acquire("py", "res:A", mode="X", ttl_ms=5000, wait_ms=5000)
        print(json.dumps({"step": "granted", "resource": "res:A", "token": a.token}), flush=True)
    except lockgraph.LockgraphError as e:
        victim = (e.deadlock or {}).get("victim", "")
        print(json.dumps({"step": "error", "code": e.code, "victim": victim}), flush=True)
        c.release(b)
)PY";

TEST(PythonClient, DeadlockBetweenPythonAndCppHasOneVictim) {
  Daemon daemon({"--revoke-grace-ms", "2000"});
  ASSERT_FALSE(daemon.endpoint().empty()) << daemon.process().Output();
  zmq::context_t ctx;
  RawClient cpp(ctx, daemon.endpoint(), Encoding::kBinary);
  ASSERT_TRUE(cpp.Hello().ok());
  auto a = cpp.Call(AcquireReq("cpp", "res:A", Mode::kExclusive, 0));
  ASSERT_TRUE(a && a->granted);

  const std::string script = ::testing::TempDir() + "/lockgraph_python_test.py";
  FILE* f = std::fopen(script.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(kScript, f);
  std::fclose(f);
  Process py({"/usr/bin/python3", script, LOCKGRAPH_SOURCE_DIR, daemon.endpoint()});
  ASSERT_TRUE(py.WaitForOutput("\"step\": \"holding\"", milliseconds(10'000))) << py.Output();
  // The Python owner queues for res:A behind the C++ owner: wait until it shows.
  RawClient watcher(ctx, daemon.endpoint(), Encoding::kJson);
  const auto deadline = Clock::now() + milliseconds(10'000);
  bool queued = false;
  while (!queued && Clock::now() < deadline) {
    auto g = watcher.Call(QueryReq(protocol::Op::kGraph));
    queued = g && g->listing_json.find("\"waits\":[{") != std::string::npos;
    if (!queued) py.WaitForOutput("\"step\": \"granted\"", milliseconds(20));
  }
  ASSERT_TRUE(queued) << py.Output();
  // The C++ owner is older: closing the cycle makes the Python owner the victim.
  auto b = cpp.Call(AcquireReq("cpp", "res:B", Mode::kExclusive, 5000));
  ASSERT_TRUE(b.has_value());
  ASSERT_TRUE(b->ok()) << b->message;
  ASSERT_TRUE(py.WaitForOutput("\"step\": \"error\"", milliseconds(10'000))) << py.Output();
  EXPECT_NE(py.Output().find("\"code\": \"DEADLOCK\""), std::string::npos) << py.Output();
  EXPECT_NE(py.Output().find("/py\""), std::string::npos) << "the Python owner is the victim: " << py.Output();
  // The victim released res:B: the C++ owner gets it, before the 2 s grace.
  if (!b->granted) {
    auto granted = cpp.WaitEvent(
        [](const protocol::Event& e) { return e.kind == protocol::EventKind::kGranted && e.resource == "res:B"; },
        milliseconds(1500));
    ASSERT_TRUE(granted.has_value()) << py.Output();
  }
  ASSERT_TRUE(py.Exited(milliseconds(10'000)));
  EXPECT_EQ(py.exit_code(), 0) << py.Output();
}

// A client process killed with SIGKILL (no bye, no more heartbeats): its lease
// expires with its session and the waiter is granted with a larger token.
TEST(PythonClient, KilledClientsLeaseExpiresAndTheWaiterGetsALargerToken) {
  Daemon daemon;
  ASSERT_FALSE(daemon.endpoint().empty());
  Process holder({"/usr/bin/python3", std::string(LOCKGRAPH_SOURCE_DIR) + "/client/python/lockgraph.py", "--endpoint",
                  daemon.endpoint(), "--session-ttl-ms", "300", "acquire", "worker", "row:1", "--ttl-ms", "60000",
                  "--hold-ms", "60000"});
  ASSERT_TRUE(holder.WaitForOutput("\"token\"", milliseconds(10'000))) << holder.Output();
  const std::string out = holder.Output();
  const auto at = out.find("\"token\": \"") != std::string::npos ? out.find("\"token\": \"") + 10 : out.find("\"token\":\"") + 9;
  const graph::Token held_token = std::stoull(out.substr(at, out.find('"', at) - at));
  zmq::context_t ctx;
  RawClient waiter(ctx, daemon.endpoint(), Encoding::kBinary);
  ASSERT_TRUE(waiter.Hello().ok());
  auto q = waiter.Call(AcquireReq("w", "row:1", Mode::kExclusive, 5000));
  ASSERT_TRUE(q && q->queued);
  holder.Signal(SIGKILL);
  auto granted = waiter.WaitEvent(
      [&](const protocol::Event& e) { return e.kind == protocol::EventKind::kGranted && e.id == q->id; },
      milliseconds(3000));
  ASSERT_TRUE(granted.has_value());
  EXPECT_GT(granted->token, held_token);
}

// The daemon is killed and restarted on its data directory while the Python client
// holds a lease and has an acquire queued: it reclaims the lease (renew answered GRACE
// reclaims first), retries GRACE within an acquire's wait, and asks a queued acquire
// again. b's lease is never reclaimed, so the grace lasts its 2 s TTL.
constexpr const char* kRestartScript = R"PY(
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1] + "/client/python")
import lockgraph

endpoint, go = sys.argv[2], sys.argv[3]
def say(**kw):
    print(json.dumps(kw), flush=True)
with lockgraph.Client([endpoint], client_name="python-restart", session_ttl_ms=3000,
                      request_timeout_ms=3000) as c:
    mine = c.acquire("t1", "mine", ttl_ms=1500)
    queued = {}
    def wait_for_b():
        try:
            queued["lease"] = c.acquire("q", "held-by-b", ttl_ms=1000, wait_ms=8000)
        except lockgraph.LockgraphError as e:
            queued["error"] = e
    t = threading.Thread(target=wait_for_b)
    t.start()
    say(step="holding", token=str(mine.token), epoch=c.epoch)
    deadline = time.monotonic() + 20
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    renewed = c.renew(mine, ttl_ms=5000)
    held = c.held(mine)
    say(step="renewed", same_token=renewed.token == mine.token, held=held is not None,
        later=held is not None and held.valid_until > mine.valid_until)
    start = time.monotonic()
    try:
        c.acquire("t2", "fresh", ttl_ms=1000, wait_ms=150)
        say(step="short", code="granted")
    except lockgraph.LockgraphError as e:
        say(step="short", code=e.code, retried="attempt" in e.message,
            ms=int((time.monotonic() - start) * 1000))
    fresh = c.acquire("t3", "fresh", ttl_ms=1000, wait_ms=6000)
    say(step="granted", new_epoch=fresh.token >> 40 > mine.token >> 40,
        ms=int((time.monotonic() - start) * 1000))
    t.join()
    q = queued.get("lease")
    say(step="queued", ok=q is not None, token=str(q.token) if q else "",
        error=str(queued.get("error", "")))
    say(step="done", still_held=c.held(mine) is not None, epoch=c.epoch)
)PY";

TEST(PythonClient, ReclaimsAfterARestartAndRetriesGrace) {
  auto daemon = std::make_unique<Daemon>(std::vector<std::string>{"--fsync", "interval"});
  ASSERT_FALSE(daemon->endpoint().empty()) << daemon->process().Output();
  const std::string endpoint = daemon->endpoint();
  const std::string dir = daemon->data_dir();
  zmq::context_t ctx;
  RawClient b(ctx, endpoint, Encoding::kBinary);
  ASSERT_TRUE(b.Hello(10'000).ok());
  auto lb = b.Call(AcquireReq("other", "held-by-b", Mode::kExclusive, 0, 2000));
  ASSERT_TRUE(lb && lb->granted);

  const std::string script = ::testing::TempDir() + "/lockgraph_python_restart_test.py";
  const std::string go = ::testing::TempDir() + "/lockgraph_python_restart_test.go." + std::to_string(getpid());
  std::remove(go.c_str());
  FILE* f = std::fopen(script.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(kRestartScript, f);
  std::fclose(f);
  Process py({"/usr/bin/python3", script, LOCKGRAPH_SOURCE_DIR, endpoint, go});
  ASSERT_TRUE(py.WaitForOutput("\"step\": \"holding\"", milliseconds(10'000))) << py.Output();
  // The queued acquire shows in the graph before the daemon dies.
  const auto deadline = Clock::now() + milliseconds(10'000);
  bool queued = false;
  while (!queued && Clock::now() < deadline) {
    auto g = b.Call(QueryReq(protocol::Op::kGraph));
    queued = g && g->listing_json.find("\"waits\":[{") != std::string::npos;
    if (!queued) py.WaitForOutput("\"step\": \"renewed\"", milliseconds(20));
  }
  ASSERT_TRUE(queued) << py.Output();

  daemon->process().Signal(SIGKILL);
  ASSERT_TRUE(daemon->process().Exited(milliseconds(5000)));
  daemon = std::make_unique<Daemon>(std::vector<std::string>{"--fsync", "interval", "--listen", endpoint}, dir);
  ASSERT_TRUE(daemon->process().WaitForOutput("listening on " + endpoint, milliseconds(10'000)))
      << daemon->process().Output();
  FILE* g = std::fopen(go.c_str(), "w");
  ASSERT_NE(g, nullptr);
  std::fclose(g);

  ASSERT_TRUE(py.Exited(milliseconds(20'000))) << py.Output();
  std::remove(go.c_str());
  const std::string out = py.Output();
  EXPECT_EQ(py.exit_code(), 0) << out;
  EXPECT_NE(out.find(R"("step": "renewed", "same_token": true, "held": true, "later": true)"), std::string::npos)
      << out;
  EXPECT_NE(out.find(R"("step": "short", "code": "GRACE", "retried": true)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("step": "granted", "new_epoch": true)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("step": "queued", "ok": true)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("step": "done", "still_held": true)"), std::string::npos) << out;
}

TEST(PythonClient, ScriptHelpWorks) {
  Process help({"/usr/bin/python3", std::string(LOCKGRAPH_SOURCE_DIR) + "/client/python/lockgraph.py", "--help"});
  ASSERT_TRUE(help.Exited(milliseconds(10'000)));
  EXPECT_EQ(help.exit_code(), 0) << help.Output();
  EXPECT_NE(help.Output().find("acquire"), std::string::npos) << help.Output();
}

}  // namespace
}  // namespace lockgraph::testing
