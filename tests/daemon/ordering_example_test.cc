// Keeps examples/ordering/ and docs/ordering.md honest: runs `lockgraphctl
// check-order` over the example traces, with and without the example rules, and
// checks that the report pasted in the doc is what the tool prints today.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/daemon_harness.h"

namespace lockgraph::testing {
namespace {

const std::string kSource = LOCKGRAPH_SOURCE_DIR;
const std::string kTransfer = "examples/ordering/transfer.jsonl";
const std::string kClean = "examples/ordering/clean.jsonl";
const std::string kRules = "examples/ordering/rules.toml";

struct CtlResult {
  int code = -1;
  std::string output;  // stdout and stderr, source paths shown relative to the tree
};

// Runs check-order on files named relative to the source tree.
CtlResult CheckOrder(const std::vector<std::string>& files, const std::vector<std::string>& flags = {}) {
  std::vector<std::string> argv = {LOCKGRAPHCTL_PATH, "check-order"};
  for (const std::string& f : files) argv.push_back(kSource + "/" + f);
  argv.insert(argv.end(), flags.begin(), flags.end());
  Process p(argv);
  CtlResult run;
  if (!p.Exited(milliseconds(20'000))) return run;
  run.code = p.exit_code();
  run.output = p.Output();
  const std::string prefix = kSource + "/";
  for (auto at = run.output.find(prefix); at != std::string::npos; at = run.output.find(prefix, at)) {
    run.output.erase(at, prefix.size());
  }
  return run;
}

std::string ReadSource(const std::string& path) { return ReadFile(kSource + "/" + path); }

std::size_t Count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(OrderingExample, TransferTraceShowsTheInversionWithBothSites) {
  const CtlResult r = CheckOrder({kTransfer});
  EXPECT_EQ(r.code, 1) << r.output;
  // The refund's wait for the account (line 8) closes account -> order, learned from
  // the payment.
  EXPECT_NE(r.output.find(kTransfer + ":8: possible circular locking dependency: order -> account"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("  account:7 (class account) at orders/refund.py:36\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  order:17 (class order) at orders/refund.py:30\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("account:7 held at billing/pay.cc:88 while asking for order:17 at billing/pay.cc:95"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("first seen: billing/pay-41"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("check-order: 1 report(s)"), std::string::npos) << r.output;
}

TEST(OrderingExample, RulesAddTheRankViolation) {
  const CtlResult r = CheckOrder({kTransfer}, {"--rules", kSource + "/" + kRules});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find(kTransfer + ":8: rank rule broken: order -> account"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("class 'account' (rank 10) must be taken before class 'order' (rank 20)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(kTransfer + ":8: possible circular locking dependency: order -> account"),
            std::string::npos)
      << "the learned inversion is still reported: " << r.output;
  EXPECT_NE(r.output.find("check-order: 2 report(s)"), std::string::npos) << r.output;
  // The refund is reported, not refused: enforce acts as warn on hold and wait.
  const CtlResult enforced = CheckOrder({kTransfer}, {"--rules", kSource + "/" + kRules, "--mode", "enforce", "-q"});
  EXPECT_EQ(enforced.code, 1) << enforced.output;
  EXPECT_NE(enforced.output.find("check-order: 2 report(s)"), std::string::npos) << enforced.output;
}

TEST(OrderingExample, CleanTracePassesTheRules) {
  const CtlResult r = CheckOrder({kClean}, {"--rules", kSource + "/" + kRules});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("check-order: 0 report(s)"), std::string::npos) << r.output;
  // Without the within-class rule, the transfer between two accounts is lockdep's AA.
  const CtlResult bare = CheckOrder({kClean});
  EXPECT_EQ(bare.code, 1) << bare.output;
  EXPECT_NE(bare.output.find(kClean + ":8: possible recursive locking: account nested in itself"),
            std::string::npos)
      << bare.output;
}

TEST(OrderingExample, JUnitNamesEachReport) {
  const std::string junit = ::testing::TempDir() + "/ordering_example." + std::to_string(getpid()) + ".xml";
  const CtlResult r = CheckOrder({kTransfer, kClean}, {"--rules", kSource + "/" + kRules, "--junit", junit, "-q"});
  EXPECT_EQ(r.code, 1) << r.output;
  std::ifstream in(junit);
  std::stringstream xml;
  xml << in.rdbuf();
  EXPECT_NE(xml.str().find("tests=\"2\" failures=\"1\" errors=\"0\""), std::string::npos) << xml.str();
  EXPECT_EQ(Count(xml.str(), "<failure "), 2u) << xml.str();
  EXPECT_NE(xml.str().find("<failure type=\"rank\""), std::string::npos) << xml.str();
  std::remove(junit.c_str());
}

// docs/ordering.md pastes the output of `lockgraphctl check-order
// examples/ordering/transfer.jsonl`; it must be what the tool prints.
TEST(OrderingExample, DocShowsTheRealReport) {
  const CtlResult r = CheckOrder({kTransfer});
  ASSERT_EQ(r.code, 1) << r.output;
  const std::string doc = ReadSource("docs/ordering.md");
  ASSERT_FALSE(doc.empty());
  EXPECT_NE(doc.find(r.output), std::string::npos)
      << "docs/ordering.md no longer shows what check-order prints; paste this:\n"
      << r.output;
}

}  // namespace
}  // namespace lockgraph::testing
