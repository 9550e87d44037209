// Lock ordering through the real lockgraphd and lockgraphctl: order_warning events,
// ORDER_VIOLATION under enforce, the learned order surviving a restart, its export
// as rules, and check-order over traces. Short TTLs; waits have deadlines.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "daemon/daemon_harness.h"
#include "lockgraph/graph/order_rules.h"

namespace lockgraph::testing {
namespace {

using graph::Code;
using graph::Mode;
using protocol::Encoding;
using protocol::Op;

// A fresh path: whatever an earlier run with the same pid left there is removed.
std::string TempPath(const std::string& name) {
  static int counter = 0;
  const std::string path = ::testing::TempDir() + "/ordering_test." + std::to_string(getpid()) + "." +
                           std::to_string(++counter) + "." + name;
  std::filesystem::remove_all(path);
  return path;
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = TempPath(name);
  std::ofstream(path) << text;
  return path;
}

protocol::Request Acquire(const std::string& owner, const std::string& resource, const std::string& site) {
  protocol::Request r = AcquireReq(owner, resource, Mode::kExclusive, -1);
  r.site = site;
  return r;
}

protocol::Request Hold(const std::string& owner, const std::string& resource, const std::string& site) {
  protocol::Request r;
  r.op = Op::kHold;
  r.owner = owner;
  r.resource = resource;
  r.mode = Mode::kExclusive;
  r.ttl_ms = 5000;
  r.site = site;
  return r;
}

rapidjson::Document Json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  return d;
}

// Takes `first` then `second` as one owner and lets both go: the class edge
// first -> second.
void Nest(RawClient& c, const std::string& owner, const std::string& first, const std::string& second,
          const std::string& site) {
  auto a = c.Call(Acquire(owner, first, site + ":1"));
  ASSERT_TRUE(a && a->granted) << (a ? a->message : "no reply");
  auto b = c.Call(Acquire(owner, second, site + ":2"));
  ASSERT_TRUE(b && b->granted) << (b ? b->message : "no reply");
  ASSERT_TRUE(c.Call(ReleaseReq(*b->lease))->ok());
  ASSERT_TRUE(c.Call(ReleaseReq(*a->lease))->ok());
}

class OrderingTest : public ::testing::TestWithParam<Encoding> {
 protected:
  zmq::context_t ctx_;
};

INSTANTIATE_TEST_SUITE_P(Encodings, OrderingTest, ::testing::Values(Encoding::kJson, Encoding::kBinary),
                         [](const auto& info) { return info.param == Encoding::kJson ? "Json" : "Binary"; });

TEST_P(OrderingTest, InversionWarnsTheOwnerOnceThenCounts) {
  Daemon d;
  ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
  RawClient a(ctx_, d.endpoint(), GetParam()), b(ctx_, d.endpoint(), GetParam());
  ASSERT_TRUE(a.Hello().ok());
  ASSERT_TRUE(b.Hello().ok());
  Nest(a, "t1", "account:1", "order:7", "bank.cc");
  EXPECT_TRUE(a.events().empty()) << "a consistent first order is no warning";
  Nest(b, "t2", "order:8", "account:2", "ship.cc");
  auto ev = b.WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kOrderWarning; });
  ASSERT_TRUE(ev.has_value()) << d.process().Output();
  auto report = Json(ev->report_json);
  ASSERT_TRUE(report.IsObject()) << ev->report_json;
  EXPECT_STREQ(report["kind"].GetString(), "inversion");
  EXPECT_STREQ(report["from"].GetString(), "order");
  EXPECT_STREQ(report["to"].GetString(), "account");
  EXPECT_STREQ(report["site"].GetString(), "ship.cc:2");
  ASSERT_EQ(report["chain"].Size(), 1u);
  EXPECT_STREQ(report["chain"][0]["site"].GetString(), "bank.cc:2");
  EXPECT_STREQ(report["chain"][0]["session"].GetString(), a.session().c_str());
  // The same inversion again: counted, not repeated.
  Nest(b, "t3", "order:9", "account:3", "ship.cc");
  EXPECT_FALSE(b.WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kOrderWarning; },
                           milliseconds(200)));
  auto stats = Json(a.Call(QueryReq(Op::kStats))->listing_json);
  EXPECT_EQ(stats["order"]["inversions"].GetUint64(), 1u);
  EXPECT_EQ(stats["order"]["reports"].GetUint64(), 1u);
  EXPECT_EQ(stats["order"]["repeats"].GetUint64(), 1u);
  EXPECT_NE(d.process().Output().find("possible circular locking dependency detected"), std::string::npos)
      << "the report is logged in lockdep's shape";
}

TEST_P(OrderingTest, EnforcedRankRefusesBeforeAnythingChanges) {
  const std::string rules = WriteFile("rules.toml",
                                      "[ordering]\nmode = \"enforce\"\n[ordering.rank]\naccount = 10\norder = 20\n");
  Daemon d({"--rules", rules});
  ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
  RawClient c(ctx_, d.endpoint(), GetParam()), other(ctx_, d.endpoint(), GetParam());
  ASSERT_TRUE(c.Hello().ok());
  ASSERT_TRUE(other.Hello().ok());
  auto held = c.Call(Acquire("t", "order:1", "a.cc:1"));
  ASSERT_TRUE(held && held->granted);
  ASSERT_TRUE(other.Call(Acquire("u", "account:5", "b.cc:1"))->granted);  // so that t would queue
  const std::string before = c.Call(QueryReq(Op::kLeases))->listing_json + c.Call(QueryReq(Op::kGraph))->listing_json;
  for (int i = 0; i < 2; ++i) {
    auto r = c.Call(Acquire("t", "account:5", "a.cc:2"));
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->code, Code::kOrderViolation) << r->message;
    EXPECT_NE(r->message.find("rank"), std::string::npos) << r->message;
    auto report = Json(r->order_json);
    ASSERT_TRUE(report.IsObject()) << r->order_json;
    EXPECT_STREQ(report["kind"].GetString(), "rank");
    EXPECT_TRUE(report["denied"].GetBool());
  }
  const std::string after = c.Call(QueryReq(Op::kLeases))->listing_json + c.Call(QueryReq(Op::kGraph))->listing_json;
  auto strip = [](std::string s) {
    for (const char* key : {"\"expires_in_ms\":", "\"waiting_ms\":"}) {
      for (auto at = s.find(key); at != std::string::npos; at = s.find(key, at)) s.erase(at, s.find_first_of(",}", at) - at);
    }
    return s;
  };
  EXPECT_EQ(strip(before), strip(after));
  // The right order is granted; report-mode holds against the rule only warn.
  EXPECT_TRUE(c.Call(Acquire("t2", "account:6", "a.cc:3"))->granted);
  EXPECT_TRUE(c.Call(Acquire("t2", "order:2", "a.cc:4"))->granted);
  auto hold = c.Call(Hold("t3", "order:3", "r.cc:1"));
  ASSERT_TRUE(hold && hold->ok());
  auto late = c.Call(Hold("t3", "account:7", "r.cc:2"));
  ASSERT_TRUE(late.has_value());
  EXPECT_TRUE(late->ok()) << "enforce acts as warn in report mode: " << late->message;
  auto stats = Json(c.Call(QueryReq(Op::kStats))->listing_json);
  EXPECT_EQ(stats["order"]["denied"].GetUint64(), 2u);
  EXPECT_EQ(stats["replies_by_code"]["ORDER_VIOLATION"].GetUint64(), 2u);
}

TEST(Ordering, LearnedOrderSurvivesARestartAndExportsAsRules) {
  zmq::context_t ctx;
  std::string dir;
  {
    Daemon d;
    ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
    dir = d.data_dir();
    RawClient c(ctx, d.endpoint(), Encoding::kJson);
    ASSERT_TRUE(c.Hello().ok());
    Nest(c, "t", "account:1", "order:1", "bank.cc");
    Nest(c, "t", "order:2", "item:1", "bank.cc");
    d.process().Signal(SIGTERM);
    ASSERT_TRUE(d.process().Exited(milliseconds(10'000)));
    EXPECT_EQ(d.process().exit_code(), 0) << d.process().Output();
  }
  ASSERT_NE(ReadFile(dir + "/order.json").find("\"item\""), std::string::npos);
  Daemon d({}, dir);
  ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
  Process listing({LOCKGRAPHCTL_PATH, "-e", d.endpoint(), "order"});
  ASSERT_TRUE(listing.Exited(milliseconds(10'000)));
  EXPECT_EQ(listing.exit_code(), 0) << listing.Output();
  EXPECT_NE(listing.Output().find("account"), std::string::npos) << listing.Output();
  EXPECT_NE(listing.Output().find("2 learned class edge"), std::string::npos) << listing.Output();

  const std::string rules_path = TempPath("exported.toml");
  Process exported({LOCKGRAPHCTL_PATH, "-e", d.endpoint(), "order", "export", "-o", rules_path});
  ASSERT_TRUE(exported.Exited(milliseconds(10'000)));
  ASSERT_EQ(exported.exit_code(), 0) << exported.Output();
  graph::OrderRules rules;
  ASSERT_EQ(graph::ParseOrderRules(ReadFile(rules_path), rules_path, rules), "") << ReadFile(rules_path);
  ASSERT_TRUE(rules.classes.count("account") && rules.classes.count("order") && rules.classes.count("item"));
  EXPECT_LT(*rules.classes["account"].rank, *rules.classes["order"].rank);
  EXPECT_LT(*rules.classes["order"].rank, *rules.classes["item"].rank);

  // What was learned before the restart still makes the reverse order an inversion.
  RawClient c(ctx, d.endpoint(), Encoding::kJson);
  ASSERT_TRUE(c.Hello().ok());
  Nest(c, "t", "item:2", "account:2", "late.cc");
  auto ev = c.WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kOrderWarning; });
  ASSERT_TRUE(ev.has_value());
  auto report = Json(ev->report_json);
  EXPECT_EQ(report["chain"].Size(), 2u) << ev->report_json;
}

TEST(Ordering, CorruptLearnedOrderIsSetAsideNotFatal) {
  const std::string dir = TempPath("datadir");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/order.json") << "{\"version\":1,\"edges\":[{\"from\":";
  Daemon d({}, dir);
  ASSERT_FALSE(d.endpoint().empty()) << d.process().Output();
  EXPECT_TRUE(std::filesystem::exists(dir + "/order.json.corrupt"));
  EXPECT_TRUE(d.process().WaitForOutput("corrupt", milliseconds(2000))) << d.process().Output();
}

TEST(Ordering, BadRulesStopTheDaemonWithTheKey) {
  const std::string rules = WriteFile("bad.toml", "[ordering]\nmode = \"strict\"\n");
  Process p({LOCKGRAPHD_PATH, "--listen", "tcp://127.0.0.1:*", "--data-dir", TempPath("dd"), "--rules", rules});
  ASSERT_TRUE(p.Exited(milliseconds(5000)));
  EXPECT_EQ(p.exit_code(), 2);
  EXPECT_NE(p.Output().find("ordering.mode"), std::string::npos) << p.Output();
  const std::string config = WriteFile("bad.toml", "[ordering.rank]\naccount = \"ten\"\n");
  Process q({LOCKGRAPHD_PATH, "--listen", "tcp://127.0.0.1:*", "--data-dir", TempPath("dd"), "--config", config});
  ASSERT_TRUE(q.Exited(milliseconds(5000)));
  EXPECT_EQ(q.exit_code(), 2);
  EXPECT_NE(q.Output().find("ordering.rank.account"), std::string::npos) << q.Output();
}

// ---------------------------------------------------------------- check-order

struct CtlRun {
  int code;
  std::string output;
};

CtlRun CheckOrder(std::vector<std::string> args) {
  args.insert(args.begin(), {LOCKGRAPHCTL_PATH, "check-order"});
  Process p(args);
  if (!p.Exited(milliseconds(20'000))) return {-1, p.Output()};
  return {p.exit_code(), p.Output()};
}

std::string Line(const std::string& op, const std::string& session, const std::string& owner,
                 const std::string& resource, const std::string& site = "") {
  std::string s = "{\"v\":1,\"op\":\"" + op + "\",\"session\":\"" + session + "\",\"owner\":\"" + owner +
                  "\",\"resource\":\"" + resource + "\"";
  if (!site.empty()) s += ",\"site\":\"" + site + "\"";
  return s + "}\n";
}

TEST(CheckOrder, ExitCodesAndJUnit) {
  const std::string clean = WriteFile("clean.jsonl", Line("hold", "s", "t", "a:1", "x.cc:1") +
                                                         Line("hold", "s", "t", "b:1", "x.cc:2") +
                                                         Line("release", "s", "t", "b:1") +
                                                         Line("release", "s", "t", "a:1"));
  auto ok = CheckOrder({clean});
  EXPECT_EQ(ok.code, 0) << ok.output;
  EXPECT_NE(ok.output.find("0 report(s)"), std::string::npos) << ok.output;

  const std::string inverted = WriteFile("inverted.jsonl", Line("wait", "s2", "u", "b:2", "y.cc:1") +
                                                               Line("hold", "s2", "u", "b:2", "y.cc:1") +
                                                               Line("wait", "s2", "u", "a:2", "y.cc:2"));
  const std::string junit = TempPath("junit.xml");
  auto bad = CheckOrder({clean, inverted, "--junit", junit});
  EXPECT_EQ(bad.code, 1) << bad.output;
  EXPECT_NE(bad.output.find(inverted + ":3: possible circular locking dependency: b -> a"), std::string::npos)
      << bad.output;
  const std::string xml = ReadFile(junit);
  EXPECT_NE(xml.find("tests=\"2\" failures=\"1\" errors=\"0\""), std::string::npos) << xml;
  EXPECT_NE(xml.find("<failure type=\"inversion\""), std::string::npos) << xml;

  // Declared rules: the clean trace breaks a rank.
  const std::string rules = WriteFile("rules.toml", "[ordering]\n[ordering.rank]\nb = 1\na = 2\n");
  auto ranked = CheckOrder({clean, "--rules", rules});
  EXPECT_EQ(ranked.code, 1) << ranked.output;
  EXPECT_NE(ranked.output.find("rank rule broken: a -> b"), std::string::npos) << ranked.output;
  auto off = CheckOrder({inverted, "--mode", "off"});
  EXPECT_EQ(off.code, 0) << off.output;
}

TEST(CheckOrder, UnreadableInputNamesFileAndLine) {
  const std::string trace = WriteFile("broken.jsonl", Line("hold", "s", "t", "a:1") + "\n# a comment\n" +
                                                          "{\"op\":\"hold\",\"owner\":\"t\"}\n");
  auto r = CheckOrder({trace});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find(trace + ":4: missing field \"resource\""), std::string::npos) << r.output;
  auto missing = CheckOrder({TempPath("absent.jsonl")});
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_NE(missing.output.find("cannot open"), std::string::npos) << missing.output;
  const std::string bad_rules = WriteFile("rules.toml", "[ordering.within]\na = \"sideways\"\n");
  auto rules = CheckOrder({trace, "--rules", bad_rules});
  EXPECT_EQ(rules.code, 2) << rules.output;
  EXPECT_NE(rules.output.find("ordering.within.a"), std::string::npos) << rules.output;
  const std::string no_table = WriteFile("rules.toml", "[classes.a]\nrevoke = \"immediate\"\n");
  auto empty_rules = CheckOrder({trace, "--rules", no_table});
  EXPECT_EQ(empty_rules.code, 2) << empty_rules.output;
  EXPECT_NE(empty_rules.output.find("no [ordering] table"), std::string::npos) << empty_rules.output;
  auto usage = CheckOrder({});
  EXPECT_EQ(usage.code, 2) << usage.output;
}

}  // namespace
}  // namespace lockgraph::testing
