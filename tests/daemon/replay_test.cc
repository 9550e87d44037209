// The post-mortem tools over lockgraphd's journal: daemon/replay.h and lockgraphctl's
// replay, history and check-order (on journal segments).
//
// - Units: the TIME parser and printer; ReplaySegment over segments written by hand
//   with JournalWriter (a deadlock, a hand-over, a release by id, a cut-off), its
//   book of leases and waits, its cross-check against the journal's own reports,
//   and the TraceOps it gives check-order.
// - Against a real lockgraphd (a temporary --data-dir, --fsync always, stopped with
//   SIGTERM before the journal is read): replay at a moment prints the graph the
//   daemon answered at that moment; history lists a resource's and an owner's events
//   in order; a flipped byte is reported (and replayed up to the last good record),
//   and a restarted daemon truncates it; check-order finds the AB-BA inversion in a
//   segment; bad arguments exit 2 with a message.
// Every wait has a deadline; nothing sleeps for a fixed time.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/daemon_harness.h"
#include "journal.h"
#include "lockgraph/graph/report.h"
#include "replay.h"

namespace lockgraph::testing {
namespace {

using daemon::EndHow;
using daemon::JournalRecord;
using daemon::ParseTime;
using daemon::FormatTime;
using graph::Code;
using graph::Mode;
using protocol::Encoding;
using protocol::Op;

// ---------------------------------------------------------------- helpers

std::string TempDir(const std::string& name) {
  static int counter = 0;
  const std::string dir = ::testing::TempDir() + "/replay_test." + std::to_string(getpid()) + "." +
                          std::to_string(++counter) + "." + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::int64_t WallNowUs() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

struct CtlResult {
  int code = -1;
  std::string output;  // stdout and stderr
};

CtlResult Ctl(std::vector<std::string> args) {
  args.insert(args.begin(), LOCKGRAPHCTL_PATH);
  Process p(args);
  CtlResult r;
  if (!p.Exited(milliseconds(30'000))) return r;
  r.code = p.exit_code();
  r.output = p.Output();
  return r;
}

// The graph JSON without waiting_ms (which moves with the clock), re-serialized.
std::string WithoutWaitingMs(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("waits")) return "unparsable: " + json;
  for (auto& w : d["waits"].GetArray()) w.RemoveMember("waiting_ms");
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buf);
  d.Accept(writer);
  return buf.GetString();
}

// Positions of `needles` in `text`, in order; fails the test naming the first missing
// or out-of-order one.
void ExpectInOrder(const std::string& text, const std::vector<std::string>& needles) {
  std::size_t at = 0;
  for (const std::string& n : needles) {
    const std::size_t found = text.find(n, at);
    ASSERT_NE(found, std::string::npos) << "missing (or out of order): \"" << n << "\" in\n" << text;
    at = found + n.size();
  }
}

std::string LineWith(const std::string& text, const std::string& needle) {
  const auto at = text.find(needle);
  if (at == std::string::npos) return "";
  const auto start = text.rfind('\n', at);
  const auto end = text.find('\n', at);
  return text.substr(start == std::string::npos ? 0 : start + 1,
                     (end == std::string::npos ? text.size() : end) - (start == std::string::npos ? 0 : start + 1));
}

bool StopDaemon(Daemon& d) {
  d.process().Signal(SIGTERM);
  return d.process().Exited(milliseconds(10'000));
}

std::string OnlySegment(const std::string& data_dir) {
  const auto segments = daemon::ListSegments(data_dir);
  return segments.size() == 1 ? segments[0] : "";
}

// ---------------------------------------------------------------- time

TEST(ReplayTime, ParsesMicrosecondsAndIso) {
  auto v = [](std::string_view s) {
    auto r = ParseTime(s);
    return std::holds_alternative<std::int64_t>(r) ? std::get<std::int64_t>(r) : -42;
  };
  EXPECT_EQ(v("0"), 0);
  EXPECT_EQ(v("1700000000123456"), 1700000000123456);
  EXPECT_EQ(v("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(v("1970-01-01T00:00:00"), 0);
  EXPECT_EQ(v("2024-02-29T12:34:56.5Z"), 1709210096500000);
  EXPECT_EQ(v("2024-02-29T12:34:56.500000"), 1709210096500000);
  EXPECT_EQ(v("2023-11-14T22:13:20.123456Z"), 1700000000123456);
  EXPECT_EQ(v("2000-03-01T00:00:00Z"), 951868800000000);
}

TEST(ReplayTime, RefusesGarbageWithAMessage) {
  auto error = [](std::string_view s) {
    auto r = ParseTime(s);
    return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : std::string("accepted");
  };
  EXPECT_NE(error("").find("empty"), std::string::npos);
  EXPECT_NE(error("yesterday").find("bad TIME \"yesterday\": expected Unix microseconds"), std::string::npos);
  EXPECT_NE(error("99999999999999999999").find("too large"), std::string::npos);
  EXPECT_NE(error("-5").find("expected"), std::string::npos);
  EXPECT_NE(error("2023-02-29T00:00:00Z").find("day 29 does not exist in 2023-02"), std::string::npos);
  EXPECT_NE(error("2024-13-01T00:00:00Z").find("month 13"), std::string::npos);
  EXPECT_NE(error("2024-01-01T24:00:00Z").find("hour 24"), std::string::npos);
  EXPECT_NE(error("2024-01-01T00:60:00Z").find("minute 60"), std::string::npos);
  EXPECT_NE(error("2024-01-01T00:00:60Z").find("second 60"), std::string::npos);
  EXPECT_NE(error("2024-01-01T00:00:00.1234567Z").find("1 to 6 digits"), std::string::npos);
  EXPECT_NE(error("2024-01-01T00:00:00.Z").find("1 to 6 digits"), std::string::npos);
  EXPECT_NE(error("2024-01-01T00:00:00+01:00").find("only UTC"), std::string::npos);
  EXPECT_NE(error("2024-01-01T00:00:00ZZ").find("only UTC"), std::string::npos);
  EXPECT_NE(error("2024-01-01 00:00:00").find("expected"), std::string::npos);
  EXPECT_NE(error("2024-1-01T00:00:00Z").find("expected"), std::string::npos);
}

TEST(ReplayTime, PrintsIsoUtcWithMicrosecondsAndRoundTrips) {
  EXPECT_EQ(FormatTime(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(FormatTime(1700000000123456), "2023-11-14T22:13:20.123456Z");
  EXPECT_EQ(FormatTime(-1), "1969-12-31T23:59:59.999999Z");
  for (std::int64_t t : {std::int64_t{0}, std::int64_t{1709210096500000}, std::int64_t{951868799999999},
                         std::int64_t{4102444800000000}, WallNowUs()}) {
    auto back = ParseTime(FormatTime(t));
    ASSERT_TRUE(std::holds_alternative<std::int64_t>(back)) << FormatTime(t);
    EXPECT_EQ(std::get<std::int64_t>(back), t) << FormatTime(t);
  }
}

// ---------------------------------------------------------------- ReplaySegment

constexpr std::uint32_t kEpoch = 3;
constexpr graph::Token Tok(std::uint64_t seq) { return (std::uint64_t{kEpoch} << graph::kSeqBits) | seq; }

// Builds a segment by hand: records at wall = now = 1000 + 1000 * i microseconds.
class SegmentBuilder {
 public:
  SegmentBuilder() {
    daemon::BootInfo boot;
    boot.epoch = kEpoch;
    boot.server = "test";
    boot.config.revoke_grace_us = 1'000'000;
    Add(boot);
  }
  template <typename Body>
  SegmentBuilder& Add(Body body, std::int64_t at = -1) {
    JournalRecord r;
    r.boot = 77;
    r.now_us = r.wall_us = at >= 0 ? at : 1000 + 1000 * static_cast<std::int64_t>(records_.size());
    r.body = std::move(body);
    records_.push_back(std::move(r));
    return *this;
  }
  SegmentBuilder& Command(graph::Command c, std::int64_t at = -1) { return Add(std::move(c), at); }
  std::int64_t wall_of(std::size_t number) const { return records_[number - 1].wall_us; }

  // Writes the segment; returns its path.
  std::string Write() {
    const std::string dir = TempDir("segment");
    daemon::JournalWriter w;
    EXPECT_EQ(w.Open(dir, "00000003"), "");
    for (const auto& r : records_) w.Append(r);
    EXPECT_EQ(w.Sync(), "");
    return w.path();
  }
  daemon::SegmentScan Scan() {
    auto scan = daemon::ScanSegment(Write());
    EXPECT_TRUE(std::holds_alternative<daemon::SegmentScan>(scan));
    return std::get<daemon::SegmentScan>(std::move(scan));
  }

 private:
  std::vector<JournalRecord> records_;
};

graph::Auth AuthOf(const std::string& s) { return graph::Auth{s, "secret-" + s}; }
graph::Hello HelloOf(const std::string& s) { return graph::Hello{s, "secret-" + s, "test", 600'000, 0}; }
graph::Acquire AcquireOf(const std::string& s, const std::string& owner, const std::string& resource,
                         std::uint64_t request_id, const std::string& site = "") {
  graph::Acquire a;
  a.auth = AuthOf(s);
  a.request_id = request_id;
  a.owner = owner;
  a.resource = resource;
  a.ttl_ms = 600'000;
  a.wait_ms = -1;
  a.site = site;
  return a;
}

// s1/o1 takes account:1 then waits for order:1; s2/o2 takes order:1 then asks for
// account:1 and closes the cycle (records 1..7).
SegmentBuilder AbBa() {
  SegmentBuilder b;
  b.Command(HelloOf("s1"))                                               // 2
      .Command(HelloOf("s2"))                                            // 3
      .Command(AcquireOf("s1", "o1", "account:1", 1, "pay.cc:1"))        // 4: granted, Tok(1)
      .Command(AcquireOf("s2", "o2", "order:1", 1, "refund.cc:1"))       // 5: granted, Tok(2)
      .Command(AcquireOf("s1", "o1", "order:1", 2, "pay.cc:2"))          // 6: queued
      .Command(AcquireOf("s2", "o2", "account:1", 2, "refund.cc:2"));    // 7: DEADLOCK, o2 the youngest
  return b;
}

TEST(ReplaySegment, RebuildsADeadlockAndItsHandOver) {
  SegmentBuilder b = AbBa();
  b.Command(graph::Tick{}, 10'000'000);  // 8: the grace is over: order:1 passes to o1
  const daemon::SegmentScan scan = b.Scan();
  std::vector<std::string> replies;  // the step's pointers live only during the call
  std::vector<std::vector<graph::TraceOp>> ops;
  std::vector<std::string> ended;
  auto replayed = daemon::ReplaySegment(scan, std::nullopt, [&](const daemon::ReplayStep& step) {
    replies.push_back(step.effects ? std::string(graph::CodeName(step.effects->reply.code)) : "-");
    ops.push_back(daemon::TraceOpsOf(step));
    for (const auto& e : step.ended_leases) {
      ended.push_back(std::to_string(step.number) + " lease " + e.lease.full_owner() + " " + e.lease.resource + " " +
                      std::string(daemon::EndHowName(e.how)));
    }
    for (const auto& e : step.ended_waits) {
      ended.push_back(std::to_string(step.number) + " wait " + e.wait.full_owner() + " " + e.wait.resource + " " +
                      std::string(daemon::EndHowName(e.how)));
    }
  });
  ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(replayed)) << std::get<std::string>(replayed);
  const auto& r = std::get<daemon::ReplayResult>(replayed);
  EXPECT_EQ(r.records_applied, 8u);
  EXPECT_EQ(r.records_total, 8u);
  EXPECT_FALSE(r.stopped_early());
  EXPECT_EQ(r.boot.epoch, kEpoch);
  EXPECT_EQ(r.last_now_us, 10'000'000);
  ASSERT_EQ(r.deadlocks.size(), 1u);
  EXPECT_EQ(r.deadlocks[0]->victim, "s2/o2");
  // No report records in this segment: the cross-check says the journal lacks one.
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("no report record"), std::string::npos) << r.warnings[0];
  EXPECT_EQ(replies, (std::vector<std::string>{"-", "OK", "OK", "OK", "OK", "OK", "DEADLOCK", "OK"}));
  // The victim's lease stays, revoked, until the grace ends; then it is handed over
  // without an event of its own (the book finds it gone), and o1's wait is granted.
  EXPECT_EQ(ended, (std::vector<std::string>{"8 lease s2/o2 order:1 revoked and gone", "8 wait s1/o1 order:1 granted"}));
  ASSERT_EQ(r.leases.size(), 2u);
  EXPECT_EQ(r.leases.at(Tok(1)).resource, "account:1");
  EXPECT_EQ(r.leases.at(Tok(3)).full_owner(), "s1/o1");
  EXPECT_EQ(r.leases.at(Tok(3)).resource, "order:1");
  EXPECT_TRUE(r.waits.empty());
  EXPECT_EQ(r.coordinator->CheckInvariants(), "");

  // What check-order sees: acquire, acquire, a wait (queued), a wait then unwait
  // (the victim), and at the hand-over the release before the grant.
  auto describe = [](const std::vector<graph::TraceOp>& v) {
    std::string s;
    for (const auto& op : v) {
      static const char* kNames[] = {"hold", "wait", "acquire", "release", "unwait"};
      s += std::string(kNames[static_cast<int>(op.kind)]) + " " + op.session + "/" + op.owner + " " + op.resource + ";";
    }
    return s;
  };
  EXPECT_EQ(describe(ops[3]), "acquire s1/o1 account:1;");
  EXPECT_EQ(describe(ops[4]), "acquire s2/o2 order:1;");
  EXPECT_EQ(describe(ops[5]), "wait s1/o1 order:1;");
  EXPECT_EQ(describe(ops[6]), "wait s2/o2 account:1;unwait s2/o2 account:1;");
  EXPECT_EQ(describe(ops[7]), "release s2/o2 order:1;hold s1/o1 order:1;");
  graph::TraceChecker checker;
  std::vector<std::string> found;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    for (const auto& op : ops[i]) {
      for (const auto& report : checker.Apply(op)) {
        found.push_back(std::to_string(i + 1) + " " + std::string(graph::OrderKindName(report->kind)) + " " +
                        report->from + "->" + report->to + " at " + report->site);
      }
    }
  }
  EXPECT_EQ(found, (std::vector<std::string>{"7 inversion order->account at refund.cc:2"}));
}

TEST(ReplaySegment, StopsAtTheMomentAsked) {
  SegmentBuilder b = AbBa();
  const daemon::SegmentScan scan = b.Scan();
  // Just before the deadlock: o1 waits for order:1, no victim yet.
  auto replayed = daemon::ReplaySegment(scan, b.wall_of(7) - 1);
  ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(replayed));
  const auto& r = std::get<daemon::ReplayResult>(replayed);
  EXPECT_EQ(r.records_applied, 6u);
  EXPECT_TRUE(r.stopped_early());
  EXPECT_EQ(r.last_wall_us, b.wall_of(6));
  EXPECT_TRUE(r.deadlocks.empty());
  EXPECT_TRUE(r.warnings.empty());
  const auto waits = r.coordinator->Waits();
  ASSERT_EQ(waits.size(), 1u);
  EXPECT_EQ(waits[0].owner, "o1");
  EXPECT_EQ(waits[0].resource, "order:1");
  ASSERT_EQ(r.waits.size(), 1u);
  EXPECT_EQ(r.waits[0].site, "pay.cc:2");
  EXPECT_EQ(r.coordinator->WaitForEdges().size(), 1u);

  // At the deadlock's own record, inclusive.
  auto at_deadlock = daemon::ReplaySegment(scan, b.wall_of(7));
  ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(at_deadlock));
  EXPECT_EQ(std::get<daemon::ReplayResult>(at_deadlock).deadlocks.size(), 1u);
}

TEST(ReplaySegment, NamesTheLeaseAReleaseByIdEnds) {
  SegmentBuilder b = AbBa();
  graph::Release release;
  release.auth = AuthOf("s2");
  release.lease = Tok(2);
  b.Command(release);  // 8: the victim lets go of order:1; o1 gets it at once
  const daemon::SegmentScan scan = b.Scan();
  std::optional<daemon::ReplayStep> last;
  std::vector<graph::TraceOp> ops;
  auto replayed = daemon::ReplaySegment(scan, std::nullopt, [&](const daemon::ReplayStep& s) {
    last = s;
    ops = daemon::TraceOpsOf(s);
  });
  ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(replayed));
  ASSERT_TRUE(last && last->named_lease);
  EXPECT_EQ(last->named_lease->full_owner(), "s2/o2");
  EXPECT_EQ(last->named_lease->resource, "order:1");
  EXPECT_TRUE(last->named_lease->revoked);
  ASSERT_EQ(last->ended_leases.size(), 1u);
  EXPECT_EQ(last->ended_leases[0].how, EndHow::kReleased);
  ASSERT_EQ(last->ended_waits.size(), 1u);
  EXPECT_EQ(last->ended_waits[0].how, EndHow::kGranted);
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0].kind, graph::TraceOp::Kind::kRelease);
  EXPECT_EQ(ops[0].owner, "o2");
  EXPECT_EQ(ops[1].kind, graph::TraceOp::Kind::kHold);
  EXPECT_EQ(ops[1].site, "pay.cc:2");
}

TEST(ReplaySegment, ClosingASessionEndsItsLeasesAndWaits) {
  SegmentBuilder b = AbBa();
  b.Command(graph::Bye{AuthOf("s1")});  // 8
  std::optional<daemon::ReplayStep> last;
  auto replayed = daemon::ReplaySegment(b.Scan(), std::nullopt, [&](const daemon::ReplayStep& s) { last = s; });
  ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(replayed));
  ASSERT_TRUE(last);
  ASSERT_EQ(last->ended_waits.size(), 1u);
  EXPECT_EQ(last->ended_waits[0].how, EndHow::kSessionClosed);
  ASSERT_EQ(last->ended_leases.size(), 1u);
  EXPECT_EQ(last->ended_leases[0].lease.resource, "account:1");
  EXPECT_EQ(last->ended_leases[0].how, EndHow::kSessionClosed);
  EXPECT_EQ(std::get<daemon::ReplayResult>(replayed).leases.size(), 1u);  // the victim's, revoked
}

TEST(ReplaySegment, LeasesRestoredAtARestartAppearAndAreHeld) {
  graph::Restore restore;
  restore.sessions.push_back(graph::RestoredSession{"s1", "secret-s1", "test", 600'000, 0});
  graph::RestoredLease lease;
  lease.session = "s1";
  lease.owner = "o1";
  lease.resource = "account:1";
  lease.lease = lease.token = (std::uint64_t{kEpoch - 1} << graph::kSeqBits) | 7;
  lease.ttl_ms = 600'000;
  restore.leases.push_back(lease);
  restore.grace_ms = 1000;
  SegmentBuilder b;
  b.Command(restore);
  std::vector<daemon::LeaseRef> appeared;
  std::vector<graph::TraceOp> ops;
  auto replayed = daemon::ReplaySegment(b.Scan(), std::nullopt, [&](const daemon::ReplayStep& s) {
    appeared.insert(appeared.end(), s.appeared_leases.begin(), s.appeared_leases.end());
    for (auto& op : daemon::TraceOpsOf(s)) ops.push_back(op);
  });
  ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(replayed)) << std::get<std::string>(replayed);
  ASSERT_EQ(appeared.size(), 1u);
  EXPECT_EQ(appeared[0].lease, lease.lease);
  EXPECT_EQ(appeared[0].full_owner(), "s1/o1");
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].kind, graph::TraceOp::Kind::kHold);
  EXPECT_EQ(ops[0].resource, "account:1");
  EXPECT_EQ(std::get<daemon::ReplayResult>(replayed).leases.count(lease.lease), 1u);
}

TEST(ReplaySegment, CrossChecksTheJournalsDeadlockReports) {
  // The report the core makes, journaled after its command: no warning.
  {
    SegmentBuilder probe = AbBa();
    auto first = daemon::ReplaySegment(probe.Scan(), std::nullopt);
    ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(first));
    const std::string json = graph::RenderJson(*std::get<daemon::ReplayResult>(first).deadlocks.at(0));
    SegmentBuilder b = AbBa();
    b.Add(daemon::ReportInfo{daemon::ReportInfo::Type::kDeadlock, json});
    auto replayed = daemon::ReplaySegment(b.Scan(), std::nullopt);
    ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(replayed));
    EXPECT_TRUE(std::get<daemon::ReplayResult>(replayed).warnings.empty());
  }
  // A report the replay does not make: a warning naming the record.
  SegmentBuilder b;
  b.Command(HelloOf("s1")).Add(daemon::ReportInfo{daemon::ReportInfo::Type::kDeadlock, "{\"victim\":\"x/y\"}"});
  auto replayed = daemon::ReplaySegment(b.Scan(), std::nullopt);
  ASSERT_TRUE(std::holds_alternative<daemon::ReplayResult>(replayed));
  const auto& warnings = std::get<daemon::ReplayResult>(replayed).warnings;
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("record 3: the journal reports a deadlock that the replay did not reproduce"),
            std::string::npos)
      << warnings[0];
}

TEST(ReplaySegment, RefusesASegmentThatDoesNotStartWithItsBoot) {
  daemon::SegmentScan scan;
  auto empty = daemon::ReplaySegment(scan, std::nullopt);
  ASSERT_TRUE(std::holds_alternative<std::string>(empty));
  EXPECT_NE(std::get<std::string>(empty).find("no records"), std::string::npos);

  JournalRecord command;
  command.body = graph::Command{graph::Tick{}};
  scan.records.push_back(command);
  auto headless = daemon::ReplaySegment(scan, std::nullopt);
  ASSERT_TRUE(std::holds_alternative<std::string>(headless));
  EXPECT_NE(std::get<std::string>(headless).find("record 1 is a command record"), std::string::npos)
      << std::get<std::string>(headless);

  SegmentBuilder b;
  daemon::BootInfo second;
  second.epoch = kEpoch;
  b.Add(second);
  auto twice = daemon::ReplaySegment(b.Scan(), std::nullopt);
  ASSERT_TRUE(std::holds_alternative<std::string>(twice));
  EXPECT_NE(std::get<std::string>(twice).find("record 2 is a second boot record"), std::string::npos);
}

TEST(ReplaySegment, ReadBootRecordReadsOnlyTheFirstRecord) {
  SegmentBuilder b = AbBa();
  const std::string path = b.Write();
  auto boot = daemon::ReadBootRecord(path);
  ASSERT_TRUE(std::holds_alternative<JournalRecord>(boot)) << std::get<std::string>(boot);
  EXPECT_EQ(std::get<JournalRecord>(boot).wall_us, b.wall_of(1));
  const std::string other = TempDir("notjournal") + "/x.lgj";
  std::ofstream(other) << "hello, world\n";
  auto bad = daemon::ReadBootRecord(other);
  ASSERT_TRUE(std::holds_alternative<std::string>(bad));
  EXPECT_NE(std::get<std::string>(bad).find("not a lockgraph journal segment"), std::string::npos);
}

// ---------------------------------------------------------------- with a real daemon

class ReplayDaemonTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--fsync", "always", "--revoke-grace-ms", "600000"};
    args.insert(args.end(), extra.begin(), extra.end());
    daemon_ = std::make_unique<Daemon>(args);
    ASSERT_FALSE(daemon_->endpoint().empty()) << daemon_->process().Output();
  }
  std::unique_ptr<RawClient> Client() {
    auto c = std::make_unique<RawClient>(ctx_, daemon_->endpoint(), Encoding::kJson);
    EXPECT_TRUE(c->Hello(600'000).ok());
    return c;
  }
  protocol::Reply Call(RawClient& c, const protocol::Request& req) {
    auto r = c.Call(req);
    EXPECT_TRUE(r.has_value()) << "no reply";
    return r.value_or(protocol::Reply{});
  }
  protocol::Request Acquire(const std::string& owner, const std::string& resource, const std::string& site) {
    protocol::Request r = AcquireReq(owner, resource, Mode::kExclusive, -1, 600'000);
    r.site = site;
    return r;
  }
  protocol::Request Report(Op op, const std::string& owner, const std::string& resource) {
    protocol::Request r;
    r.op = op;
    r.owner = owner;
    r.resource = resource;
    r.mode = Mode::kExclusive;
    r.ttl_ms = 600'000;
    return r;
  }
  std::string Owner(RawClient& c, const std::string& owner) { return c.session() + "/" + owner; }

  // The AB-BA deadlock: a/pay holds account:1 and waits for order:1; b/refund holds
  // order:1, asks for account:1 and is the victim. Its order:1 stays revoked (a long
  // revoke grace), so a/pay keeps waiting.
  void AbBa(RawClient& a, RawClient& b, graph::LeaseId& victim_lease) {
    auto r1 = Call(a, Acquire("pay", "account:1", "pay.cc:10"));
    ASSERT_TRUE(r1.ok() && r1.granted) << r1.message;
    auto r2 = Call(b, Acquire("refund", "order:1", "refund.cc:20"));
    ASSERT_TRUE(r2.ok() && r2.granted) << r2.message;
    victim_lease = r2.lease.value_or(0);
    auto r3 = Call(a, Acquire("pay", "order:1", "pay.cc:11"));
    ASSERT_TRUE(r3.ok() && r3.queued) << r3.message;
    auto r4 = Call(b, Acquire("refund", "account:1", "refund.cc:21"));
    ASSERT_EQ(r4.code, Code::kDeadlock) << r4.message;
  }

  zmq::context_t ctx_;
  std::unique_ptr<Daemon> daemon_;
};

// The post-mortem tools over one segment, and over many that start from snapshots
// (a new segment every KiB: each moment below falls in a different one).
class ReplayAcrossSegmentsTest : public ReplayDaemonTest, public ::testing::WithParamInterface<bool> {
 protected:
  void StartDaemon() {
    ReplayDaemonTest::StartDaemon(GetParam() ? std::vector<std::string>{"--segment-kb", "1"}
                                             : std::vector<std::string>{});
  }
  // With snapshots on: enough journal (acquires and releases of a resource of its
  // own) that the daemon starts a new segment before the next step.
  void Churn(RawClient& c) {
    if (!GetParam()) return;
    for (int i = 0; i < 24; ++i) {
      auto r = Call(c, Acquire("churn", "churn:" + std::to_string(i), "churn.cc:1"));
      ASSERT_TRUE(r.granted) << r.message;
      ASSERT_TRUE(Call(c, ReleaseReq(r.lease.value_or(0))).ok());
    }
  }
  // With snapshots on, several segments must have begun from one.
  void ExpectSegments(const std::string& dir) {
    std::size_t from_snapshots = 0;
    for (const std::string& segment : daemon::ListSegments(dir)) {
      from_snapshots += std::filesystem::path(segment).stem().string().find('_') != std::string::npos;
    }
    if (GetParam()) EXPECT_GE(from_snapshots, 3u);
    else EXPECT_EQ(from_snapshots, 0u);
  }
};
INSTANTIATE_TEST_SUITE_P(Segments, ReplayAcrossSegmentsTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "SnapshotEveryKiB" : "OneSegment"; });

TEST_P(ReplayAcrossSegmentsTest, ReplayAtAMomentShowsTheGraphTheDaemonReportedThen) {
  StartDaemon();
  auto a = Client(), b = Client(), c = Client();
  graph::LeaseId victim_lease = 0;
  ASSERT_NO_FATAL_FAILURE(AbBa(*a, *b, victim_lease));
  // More waits: an acquire queued behind a holder, and a reported hold and wait.
  auto held = Call(*c, Acquire("stock", "inventory:1", "stock.cc:1"));
  ASSERT_TRUE(held.granted);
  ASSERT_TRUE(Call(*a, Acquire("audit", "inventory:1", "audit.cc:1")).queued);
  ASSERT_TRUE(Call(*c, Report(Op::kHold, "ext", "pg:row:9")).ok());
  ASSERT_TRUE(Call(*b, Report(Op::kWait, "ext2", "pg:row:9")).ok());
  ASSERT_NO_FATAL_FAILURE(Churn(*c));

  auto graph_then = Call(*c, QueryReq(Op::kGraph));
  ASSERT_TRUE(graph_then.ok()) << graph_then.message;
  const std::int64_t then = WallNowUs();
  ASSERT_NO_FATAL_FAILURE(Churn(*c));
  // Later: the victim releases (a/pay gets order:1), stock lets go (audit gets it).
  ASSERT_TRUE(Call(*b, ReleaseReq(victim_lease)).ok());
  ASSERT_TRUE(a->WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kGranted && e.resource == "order:1"; }).has_value());
  ASSERT_TRUE(Call(*c, ReleaseReq(held.lease.value_or(0))).ok());
  ASSERT_TRUE(a->WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kGranted && e.resource == "inventory:1"; }).has_value());
  auto graph_later = Call(*c, QueryReq(Op::kGraph));
  ASSERT_TRUE(StopDaemon(*daemon_)) << daemon_->process().Output();

  const std::string dir = daemon_->data_dir();
  ExpectSegments(dir);
  const CtlResult json = Ctl({"replay", dir, "--at", std::to_string(then), "--format", "json"});
  ASSERT_EQ(json.code, 0) << json.output;
  EXPECT_EQ(WithoutWaitingMs(json.output), WithoutWaitingMs(graph_then.listing_json));
  // The same moment in ISO 8601 gives the same graph.
  const CtlResult iso = Ctl({"replay", dir, "--at", FormatTime(then), "--format", "json"});
  EXPECT_EQ(iso.output, json.output);
  // Without --at: the end, which is what the daemon answered last, and differs.
  const CtlResult end = Ctl({"replay", dir, "--format", "json"});
  ASSERT_EQ(end.code, 0) << end.output;
  EXPECT_EQ(WithoutWaitingMs(end.output), WithoutWaitingMs(graph_later.listing_json));
  EXPECT_NE(WithoutWaitingMs(end.output), WithoutWaitingMs(json.output));

  // Text: the graph and the deadlock, with its victim and why.
  const CtlResult text = Ctl({"replay", dir, "--at", std::to_string(then)});
  ASSERT_EQ(text.code, 0) << text.output;
  const std::string pay = Owner(*a, "pay"), refund = Owner(*b, "refund");
  EXPECT_NE(text.output.find(pay + " -> " + refund + " (hard)"), std::string::npos) << text.output;
  EXPECT_NE(LineWith(text.output, refund + " ").find("order:1"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("(revoked)"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("deadlocks up to then: 1"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("deadlock #1 at "), std::string::npos) << text.output;
  EXPECT_NE(text.output.find(refund), std::string::npos) << text.output;
  EXPECT_EQ(text.output.find("warning"), std::string::npos) << text.output;
  // DOT at that moment.
  const CtlResult dot = Ctl({"replay", dir, "--at", std::to_string(then), "--format", "dot"});
  ASSERT_EQ(dot.code, 0) << dot.output;
  EXPECT_EQ(dot.output.rfind("digraph", 0), 0u) << dot.output;
  // Before the daemon started: nothing to show.
  const CtlResult early = Ctl({"replay", dir, "--at", "1000"});
  EXPECT_EQ(early.code, 2) << early.output;
  EXPECT_NE(early.output.find("starts at or before 1970-01-01T00:00:00.001000Z"), std::string::npos) << early.output;
}

TEST_P(ReplayAcrossSegmentsTest, HistoryListsAResourcesAndAnOwnersEventsInOrder) {
  StartDaemon();
  auto a = Client(), b = Client();
  graph::LeaseId victim_lease = 0;
  ASSERT_NO_FATAL_FAILURE(AbBa(*a, *b, victim_lease));
  ASSERT_NO_FATAL_FAILURE(Churn(*a));
  ASSERT_TRUE(Call(*b, ReleaseReq(victim_lease)).ok());
  auto granted = a->WaitEvent([](const protocol::Event& e) { return e.kind == protocol::EventKind::kGranted && e.resource == "order:1"; });
  ASSERT_TRUE(granted.has_value());
  ASSERT_NO_FATAL_FAILURE(Churn(*a));
  const std::int64_t middle = WallNowUs();
  ASSERT_NO_FATAL_FAILURE(Churn(*a));
  ASSERT_TRUE(Call(*a, ReleaseReq(granted->lease)).ok());
  ASSERT_TRUE(StopDaemon(*daemon_)) << daemon_->process().Output();
  const std::string dir = daemon_->data_dir();
  ExpectSegments(dir);
  const std::string pay = Owner(*a, "pay"), refund = Owner(*b, "refund");

  const CtlResult order = Ctl({"history", "order:1", "--data-dir", dir});
  ASSERT_EQ(order.code, 0) << order.output;
  ExpectInOrder(order.output, {
                                  refund + " acquire X order:1: granted, lease ",
                                  pay + " acquire X order:1: queued (waits forever)",
                                  "deadlock #1: victim " + refund,
                                  refund + " lease " + std::to_string(victim_lease) +
                                      " on order:1 revoked (deadlock, deadlock #1)",
                                  refund + " released order:1 (lease " + std::to_string(victim_lease) + ")",
                                  pay + " granted X order:1 after waiting: lease ",
                                  pay + " released order:1",
                              });
  EXPECT_EQ(order.output.find("account:1: granted"), std::string::npos) << order.output;  // not about order:1
  // A segment that starts from a snapshot continues the story: no restart, no end.
  EXPECT_EQ(order.output.find("restored"), std::string::npos) << order.output;
  EXPECT_EQ(order.output.find("still held"), std::string::npos) << order.output;
  // Every line starts with its time.
  std::istringstream lines(order.output);
  for (std::string line; std::getline(lines, line);) {
    ASSERT_GE(line.size(), 28u) << line;
    EXPECT_TRUE(std::holds_alternative<std::int64_t>(ParseTime(line.substr(0, 27)))) << line;
  }

  // The victim by its owner name alone.
  const CtlResult owner = Ctl({"history", "refund", "--data-dir", dir});
  ASSERT_EQ(owner.code, 0) << owner.output;
  ExpectInOrder(owner.output, {
                                  refund + " acquire X order:1: granted",
                                  refund + " acquire X account:1: refused, DEADLOCK: this owner is the victim (deadlock #1)",
                                  "deadlock #1: victim " + refund,
                                  refund + " lease " + std::to_string(victim_lease) + " on order:1 revoked",
                                  refund + " released order:1",
                              });
  EXPECT_EQ(owner.output.find(pay + " acquire"), std::string::npos) << owner.output;
  // session/owner works too, and --since cuts the beginning.
  const CtlResult since = Ctl({"history", pay, "--data-dir", dir, "--since", FormatTime(middle)});
  ASSERT_EQ(since.code, 0) << since.output;
  EXPECT_EQ(since.output.find("acquire"), std::string::npos) << since.output;
  EXPECT_NE(since.output.find(pay + " released order:1"), std::string::npos) << since.output;
  // Nothing about a stranger.
  const CtlResult none = Ctl({"history", "nobody:0", "--data-dir", dir});
  EXPECT_EQ(none.code, 0) << none.output;
  EXPECT_EQ(none.output, "no events for nobody:0\n");
}

TEST_F(ReplayDaemonTest, ACorruptedByteIsReportedAndTruncatedByTheNextStart) {
  StartDaemon();
  {
    auto a = Client(), b = Client();
    graph::LeaseId victim_lease = 0;
    ASSERT_NO_FATAL_FAILURE(AbBa(*a, *b, victim_lease));
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(Call(*a, Acquire("bulk" + std::to_string(i), "bulk:" + std::to_string(i), "")).ok());
  }
  ASSERT_TRUE(StopDaemon(*daemon_)) << daemon_->process().Output();
  const std::string dir = daemon_->data_dir();
  const std::string segment = OnlySegment(dir);
  ASSERT_FALSE(segment.empty());
  const auto size = std::filesystem::file_size(segment);
  {
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size / 2));
    char byte = 0;
    f.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x5A);
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.write(&byte, 1);
  }
  auto scanned = daemon::ScanSegment(segment);
  ASSERT_TRUE(std::holds_alternative<daemon::SegmentScan>(scanned));
  const auto& scan = std::get<daemon::SegmentScan>(scanned);
  ASSERT_TRUE(scan.torn());
  ASSERT_LT(scan.good_bytes, size);

  const CtlResult text = Ctl({"replay", dir});
  ASSERT_EQ(text.code, 0) << text.output;
  EXPECT_NE(text.output.find("lockgraphctl: warning: " + scan.problem), std::string::npos) << text.output;
  const std::string n = std::to_string(scan.records.size());
  EXPECT_NE(text.output.find("replayed " + n + " of " + n + " records"), std::string::npos) << text.output;
  const CtlResult history = Ctl({"history", "account:1", "--data-dir", dir});
  EXPECT_EQ(history.code, 0) << history.output;
  EXPECT_NE(history.output.find("warning: " + scan.problem), std::string::npos) << history.output;

  // The next start cuts the damaged tail off, and says so.
  Daemon again({"--fsync", "always"}, dir);
  ASSERT_FALSE(again.endpoint().empty()) << again.process().Output();
  EXPECT_TRUE(again.process().WaitForOutput("truncating to the last good record", milliseconds(5000)))
      << again.process().Output();
  EXPECT_EQ(std::filesystem::file_size(segment), scan.good_bytes);
  ASSERT_TRUE(StopDaemon(again));
  // Now both segments read cleanly, and history runs over both.
  const CtlResult clean = Ctl({"replay", segment});
  EXPECT_EQ(clean.code, 0) << clean.output;
  EXPECT_EQ(clean.output.find("warning"), std::string::npos) << clean.output;
  EXPECT_EQ(daemon::ListSegments(dir).size(), 2u);
  const CtlResult both = Ctl({"history", "account:1", "--data-dir", dir});
  EXPECT_EQ(both.code, 0) << both.output;
  EXPECT_EQ(both.output.find("warning"), std::string::npos) << both.output;
  EXPECT_NE(both.output.find("account:1: granted"), std::string::npos) << both.output;
}

TEST_F(ReplayDaemonTest, CheckOrderFindsTheInversionInAJournalSegment) {
  StartDaemon();
  {
    auto a = Client(), b = Client();
    graph::LeaseId victim_lease = 0;
    ASSERT_NO_FATAL_FAILURE(AbBa(*a, *b, victim_lease));
  }
  ASSERT_TRUE(StopDaemon(*daemon_)) << daemon_->process().Output();
  const std::string segment = OnlySegment(daemon_->data_dir());
  ASSERT_FALSE(segment.empty());
  const CtlResult r = Ctl({"check-order", segment});
  EXPECT_EQ(r.code, 1) << r.output;
  // refund asks for account:1 while holding order:1 (record 7: boot, 2 hellos,
  // 3 acquires before it), closing account -> order learned from pay.
  EXPECT_NE(r.output.find(segment + ": record 7: possible circular locking dependency: order -> account"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("account:1 held at pay.cc:10 while asking for order:1 at pay.cc:11"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("  order:1 (class order) at refund.cc:20\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("check-order: 1 report(s)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("journal record(s) in 1 file(s)"), std::string::npos) << r.output;
  // JUnit names the record too.
  const std::string junit = TempDir("junit") + "/out.xml";
  const CtlResult j = Ctl({"check-order", segment, "-q", "--junit", junit});
  EXPECT_EQ(j.code, 1) << j.output;
  std::ifstream in(junit);
  std::stringstream xml;
  xml << in.rdbuf();
  EXPECT_NE(xml.str().find(": record 7: possible circular locking dependency"), std::string::npos) << xml.str();
}

TEST(ReplayTool, BadArgumentsExitTwoWithAMessage) {
  const std::string dir = TempDir("bad");
  const std::string not_journal = dir + "/notes.lgj";
  std::ofstream(not_journal) << "{\"op\":\"hold\"}\n";

  auto expect = [](const CtlResult& r, const std::string& message) {
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << r.output;
  };
  expect(Ctl({"replay", dir, "--at", "yesterday"}), "--at: bad TIME \"yesterday\": expected Unix microseconds");
  expect(Ctl({"replay", dir, "--at", "2024-02-30T00:00:00Z"}), "day 30 does not exist in 2024-02");
  expect(Ctl({"replay", dir + "/missing.lgj"}), "cannot open " + dir + "/missing.lgj");
  expect(Ctl({"replay", dir}), "no journal segments in " + dir + "/journal");
  expect(Ctl({"replay", not_journal}), not_journal + " is not a lockgraph journal segment");
  expect(Ctl({"replay", not_journal, "--at", "5"}), not_journal + " is not a lockgraph journal segment");
  expect(Ctl({"replay"}), "path is required");
  expect(Ctl({"replay", dir, "--format", "svg"}), "svg");
  expect(Ctl({"history", "account:1", "--data-dir", dir + "/missing"}), "cannot read data directory");
  expect(Ctl({"history", "account:1", "--data-dir", dir}), "no journal segments in " + dir + "/journal");
  expect(Ctl({"history", "account:1", "--since", "noon"}), "--since: bad TIME \"noon\"");
  expect(Ctl({"history"}), "what is required");
  // A trace that is neither a journal nor JSON lines is still an unreadable trace.
  const std::string junk = dir + "/junk.bin";
  std::ofstream(junk) << "LGJRNL0";  // one byte short of the magic
  expect(Ctl({"check-order", junk}), junk + ":1: ");
  // A file with the magic and a torn first record: a journal with nothing to replay.
  const std::string torn = dir + "/torn.lgj";
  std::ofstream(torn) << "LGJRNL01" << std::string(3, '\x01');
  expect(Ctl({"check-order", torn}), "no records");
}

}  // namespace
}  // namespace lockgraph::testing
