// A deadlock between the Python client (client/python/lockgraph.py, JSON) and a C++
// client (binary), through a real lockgraphd.
#include <gtest/gtest.h>

#include <cstdio>

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

TEST(PythonClient, ScriptHelpWorks) {
  Process help({"/usr/bin/python3", std::string(LOCKGRAPH_SOURCE_DIR) + "/client/python/lockgraph.py", "--help"});
  ASSERT_TRUE(help.Exited(milliseconds(10'000)));
  EXPECT_EQ(help.exit_code(), 0) << help.Output();
  EXPECT_NE(help.Output().find("acquire"), std::string::npos) << help.Output();
}

}  // namespace
}  // namespace lockgraph::testing
