// The trace decoder of check-order: every line is untrusted input.
#include <gtest/gtest.h>

#include "lockgraph/trace.h"

namespace lockgraph::protocol {
namespace {

std::string ErrorOf(std::string_view line) {
  auto r = ParseTraceLine(line);
  if (auto* e = std::get_if<std::string>(&r)) return *e;
  return "";
}

TEST(TraceLine, ReadsEveryFieldAndDefaults) {
  auto r = ParseTraceLine(
      R"({"v":1,"id":7,"op":"acquire","session":"s","owner":"t","resource":"account:7","mode":"S","site":"a.cc:3","wait_ms":0,"ttl_ms":5})");
  ASSERT_TRUE(std::holds_alternative<graph::TraceOp>(r)) << ErrorOf("");
  const auto& t = std::get<graph::TraceOp>(r);
  EXPECT_EQ(t.kind, graph::TraceOp::Kind::kAcquire);
  EXPECT_EQ(t.session, "s");
  EXPECT_EQ(t.owner, "t");
  EXPECT_EQ(t.resource, "account:7");
  EXPECT_EQ(t.mode, graph::Mode::kShared);
  EXPECT_EQ(t.site, "a.cc:3");
  EXPECT_EQ(t.wait_ms, 0);
  auto d = std::get<graph::TraceOp>(ParseTraceLine(R"({"op":"wait","owner":"t","resource":"r"})"));
  EXPECT_EQ(d.kind, graph::TraceOp::Kind::kWait);
  EXPECT_EQ(d.session, "");
  EXPECT_EQ(d.mode, graph::Mode::kExclusive);
  EXPECT_EQ(d.wait_ms, -1);
}

TEST(TraceLine, SkipsBlankCommentsAndOtherOps) {
  for (std::string_view line : {"", "   ", "\r", "# recorded by a test", R"({"op":"heartbeat","session":"s"})",
                                R"({"op":"hello","client":"c","ttl_ms":5})"}) {
    EXPECT_TRUE(std::holds_alternative<TraceSkip>(ParseTraceLine(line))) << line;
  }
}

TEST(TraceLine, BadLinesSayWhatIsWrong) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"garbage", "not JSON"},
      {R"({"op":"hold","owner":"t","resource":"r")", "not JSON"},  // truncated
      {"[1,2]", "expected a JSON object"},
      {R"({"owner":"t","resource":"r"})", "missing field \"op\""},
      {R"({"op":7,"owner":"t","resource":"r"})", "\"op\" must be a string"},
      {R"({"op":"lock","owner":"t","resource":"r"})", "unknown op \"lock\""},
      {R"({"op":"hold","resource":"r"})", "missing field \"owner\""},
      {R"({"op":"hold","owner":"","resource":"r"})", "\"owner\" is empty"},
      {R"({"op":"hold","owner":"t","resource":["r"]})", "\"resource\" must be a string"},
      {R"({"op":"hold","owner":"t","resource":"r","mode":"Z"})", "\"mode\" must be \"X\" or \"S\""},
      {R"({"op":"hold","owner":"t","resource":"r","site":3})", "\"site\" must be a string"},
      {R"({"op":"acquire","owner":"t","resource":"r","wait_ms":"soon"})", "\"wait_ms\" must be an integer"},
      {R"({"op":"acquire","owner":"t","resource":"r","wait_ms":1.5})", "\"wait_ms\" must be an integer"},
      {"{\"op\":\"hold\",\"owner\":\"\xff\",\"resource\":\"r\"}", "not JSON"},  // invalid UTF-8
  };
  for (const auto& [line, want] : cases) {
    const std::string err = ErrorOf(line);
    EXPECT_NE(err.find(want), std::string::npos) << line << " -> " << err;
  }
  const std::string huge = R"({"op":"hold","owner":"t","resource":")" + std::string(kMaxTraceLineBytes, 'r') + "\"}";
  EXPECT_NE(ErrorOf(huge).find("over the limit"), std::string::npos);
}

TEST(TraceLine, EveryPrefixOfAValidLineIsRefusedOrSkipped) {
  const std::string line = R"({"op":"hold","session":"s","owner":"t","resource":"account:1","mode":"X"})";
  for (std::size_t n = 1; n < line.size(); ++n) {
    auto r = ParseTraceLine(std::string_view(line).substr(0, n));
    EXPECT_FALSE(std::holds_alternative<graph::TraceOp>(r)) << line.substr(0, n);
  }
}

}  // namespace
}  // namespace lockgraph::protocol
