// The C++ client's local trace (client.h, "Recording" and "Offline"): what is written,
// when, in which shape, offline and against a real lockgraphd.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rapidjson/document.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/daemon_harness.h"
#include "lockgraph/client.h"

namespace lockgraph {
namespace {

using namespace std::chrono_literals;

// One trace line as parsed back: every member, its value a string or an integer.
using Value = std::variant<std::int64_t, std::string>;
using Fields = std::map<std::string, Value>;

// A fresh path in the test's temp dir; the file is removed when it goes away.
class TempFile {
 public:
  TempFile() {
    static int counter = 0;
    path_ = ::testing::TempDir() + "/record_test." + std::to_string(::getpid()) + "." +
            std::to_string(++counter) + ".jsonl";
    ::unlink(path_.c_str());
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }
  bool Exists() const {
    struct stat st;
    return ::stat(path_.c_str(), &st) == 0;
  }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The file's lines; a file that does not end with a newline fails the test.
std::vector<std::string> Lines(const std::string& path) {
  const std::string text = ReadAll(path);
  std::vector<std::string> lines;
  if (text.empty()) return lines;
  EXPECT_EQ(text.back(), '\n') << "the last line is cut short";
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return lines;
}

// Parses one line: a JSON object of strings and integers, no member twice.
std::optional<Fields> Parse(const std::string& line) {
  rapidjson::Document doc;
  doc.Parse(line.data(), line.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  Fields fields;
  for (const auto& member : doc.GetObject()) {
    std::string key(member.name.GetString(), member.name.GetStringLength());
    if (member.value.IsInt64()) {
      fields[key] = member.value.GetInt64();
    } else if (member.value.IsString()) {
      fields[key] = std::string(member.value.GetString(), member.value.GetStringLength());
    } else {
      return std::nullopt;
    }
  }
  if (fields.size() != doc.MemberCount()) return std::nullopt;
  return fields;
}

std::vector<Fields> ParsedLines(const std::string& path) {
  std::vector<Fields> out;
  for (const std::string& line : Lines(path)) {
    auto fields = Parse(line);
    EXPECT_TRUE(fields.has_value()) << "not a trace line: " << line;
    if (fields) out.push_back(std::move(*fields));
  }
  return out;
}

std::string Describe(const Fields& fields) {
  std::string s = "{";
  for (const auto& [key, value] : fields) {
    if (s.size() > 1) s += ", ";
    s += key + "=";
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
      s += std::to_string(*i);
    } else {
      s += "\"" + std::get<std::string>(value) + "\"";
    }
  }
  return s + "}";
}

// Compares traces field by field, with readable output on a mismatch.
void ExpectTrace(const std::vector<Fields>& actual, const std::vector<Fields>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < std::max(actual.size(), expected.size()); ++i) {
    const std::string got = i < actual.size() ? Describe(actual[i]) : "(none)";
    const std::string want = i < expected.size() ? Describe(expected[i]) : "(none)";
    EXPECT_EQ(got, want) << "line " << i + 1;
  }
}

// The line of a report-mode or arbitrate request, as client.h documents it.
Fields Line(const std::string& op, const std::string& session, const std::string& owner,
            const std::string& resource) {
  return Fields{{"v", std::int64_t{1}}, {"op", op}, {"session", session}, {"owner", owner},
                {"resource", resource}};
}
Fields With(Fields fields, const std::string& key, Value value) {
  fields[key] = std::move(value);
  return fields;
}

ClientOptions OfflineOptions(const std::string& record_path) {
  ClientOptions options;
  options.endpoints.clear();  // with a recording: offline
  options.record_path = record_path;
  return options;
}

std::unique_ptr<Client> MustConnect(ClientOptions options) {
  auto c = Client::Connect(std::move(options));
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? std::move(c).value() : nullptr;
}

// Sets LOCKGRAPH_RECORD for its lifetime, restoring what was there.
class ScopedRecordEnv {
 public:
  explicit ScopedRecordEnv(const char* value) {
    if (const char* old = std::getenv("LOCKGRAPH_RECORD")) old_ = old;
    if (value != nullptr) {
      ::setenv("LOCKGRAPH_RECORD", value, 1);
    } else {
      ::unsetenv("LOCKGRAPH_RECORD");
    }
  }
  ~ScopedRecordEnv() {
    if (old_) {
      ::setenv("LOCKGRAPH_RECORD", old_->c_str(), 1);
    } else {
      ::unsetenv("LOCKGRAPH_RECORD");
    }
  }

 private:
  std::optional<std::string> old_;
};

// ------------------------------------------------------------------ offline

TEST(RecordOffline, ReportModeSequenceGivesExactlyTheseLines) {
  ScopedRecordEnv no_env(nullptr);
  TempFile trace;
  auto c = MustConnect(OfflineOptions(trace.path()));
  ASSERT_NE(c, nullptr);
  const std::string session = c->session();
  EXPECT_EQ(session.rfind("offline-" + std::to_string(::getpid()) + "-", 0), 0u) << session;

  const std::string odd = "acct:\"7\"\nline2\\ \x01 caf\xc3\xa9";  // quotes, newline, backslash, control
  auto held = c->Hold("tx-1", odd, Mode::kExclusive, 30s, "file.cc:12");
  ASSERT_TRUE(held.ok()) << held.error().message;
  EXPECT_TRUE(held.value().reported);
  EXPECT_EQ(held.value().token, 0u);
  EXPECT_EQ(held.value().owner, "tx-1");
  EXPECT_EQ(held.value().resource, odd);
  auto second = c->Hold("tx-1", "order:1", Mode::kShared, 1500ms);
  ASSERT_TRUE(second.ok());
  EXPECT_GT(second.value().id, held.value().id) << "offline lease ids increase";

  ASSERT_TRUE(c->Wait("tx-2", "order:1", Mode::kExclusive, "other.cc:3").ok());
  ASSERT_TRUE(c->Unwait("tx-2", "order:1").ok());
  ASSERT_TRUE(c->Release(held.value()).ok());
  ASSERT_TRUE(c->ReleaseReported("tx-1", "order:1").ok());
  // A malformed report is refused as the daemon would, and leaves no line.
  auto bad = c->Wait("", "order:1", Mode::kExclusive);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Code::kBadRequest);
  auto not_utf8 = c->Hold("tx-1", "acct:\xff", Mode::kExclusive, 1s);
  ASSERT_FALSE(not_utf8.ok());
  EXPECT_EQ(not_utf8.error().code, Code::kBadRequest);
  EXPECT_NE(not_utf8.error().message.find("UTF-8"), std::string::npos) << not_utf8.error().message;

  // The raw text escapes what JSON must: no line is split by the newline in the name.
  const std::vector<std::string> raw = Lines(trace.path());
  ASSERT_EQ(raw.size(), 6u) << ReadAll(trace.path());
  EXPECT_NE(raw[0].find(R"("resource":"acct:\"7\"\nline2\\ \u0001 caf)"), std::string::npos) << raw[0];
  EXPECT_EQ(raw[0].rfind(R"({"v":1,"op":"hold","session":")", 0), 0u) << raw[0];

  ExpectTrace(
      ParsedLines(trace.path()),
      {
          With(With(With(Line("hold", session, "tx-1", odd), "mode", "X"), "site", "file.cc:12"),
               "ttl_ms", std::int64_t{30000}),
          With(With(Line("hold", session, "tx-1", "order:1"), "mode", "S"), "ttl_ms", std::int64_t{1500}),
          With(With(Line("wait", session, "tx-2", "order:1"), "mode", "X"), "site", "other.cc:3"),
          Line("unwait", session, "tx-2", "order:1"),
          Line("release", session, "tx-1", odd),
          Line("release", session, "tx-1", "order:1"),
      });
}

TEST(RecordOffline, ArbitrateModeFailsClearlyAndRecordsNothing) {
  ScopedRecordEnv no_env(nullptr);
  TempFile trace;
  auto c = MustConnect(OfflineOptions(trace.path()));
  ASSERT_NE(c, nullptr);
  auto acquired = c->Acquire("tx", "acct:1", Mode::kExclusive, 5s, 0ms);
  ASSERT_FALSE(acquired.ok());
  EXPECT_EQ(acquired.error().code, Code::kInternal);
  EXPECT_NE(acquired.error().message.find("offline"), std::string::npos) << acquired.error().message;
  EXPECT_NE(acquired.error().message.find("needs lockgraphd"), std::string::npos) << acquired.error().message;
  EXPECT_NE(acquired.error().message.find("report mode"), std::string::npos) << acquired.error().message;

  Lease arbitrated;  // not reported: only a daemon could have granted it
  arbitrated.id = 7;
  arbitrated.owner = "tx";
  arbitrated.resource = "acct:1";
  auto renewed = c->Renew(arbitrated);
  ASSERT_FALSE(renewed.ok());
  EXPECT_EQ(renewed.error().code, Code::kInternal);
  EXPECT_NE(renewed.error().message.find("offline"), std::string::npos);
  auto released = c->Release(arbitrated);
  ASSERT_FALSE(released.ok());
  EXPECT_EQ(released.error().code, Code::kInternal);
  protocol::Request stats;
  stats.op = protocol::Op::kStats;
  auto called = c->Call(stats);
  ASSERT_FALSE(called.ok());
  EXPECT_EQ(called.error().code, Code::kInternal);
  EXPECT_NE(called.error().message.find("needs lockgraphd"), std::string::npos);

  EXPECT_FALSE(c->PollEvent(1ms).has_value());
  EXPECT_EQ(ReadAll(trace.path()), "") << "nothing but report mode is recorded";
}

TEST(RecordOffline, OfflineFlagWorksWithoutRecordingAndIgnoresEndpoints) {
  ScopedRecordEnv no_env(nullptr);
  ClientOptions options;
  options.endpoints = {"tcp://127.0.0.1:1"};  // nothing listens: offline never tries
  options.request_timeout = 200ms;
  options.offline = true;
  auto c = MustConnect(options);
  ASSERT_NE(c, nullptr);
  auto held = c->Hold("tx", "acct:1", Mode::kExclusive, 1s);
  ASSERT_TRUE(held.ok()) << held.error().message;
  EXPECT_TRUE(c->Release(held.value()).ok());
  auto other = MustConnect(options);
  ASSERT_NE(other, nullptr);
  EXPECT_NE(other->session(), c->session()) << "offline sessions of one process differ";

  // Without recording and without endpoints, the client is not offline: it needs one.
  ClientOptions none;
  none.endpoints.clear();
  auto refused = Client::Connect(none);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Code::kBadRequest);
}

TEST(RecordOffline, UnwritablePathFailsConnectNamingThePath) {
  ScopedRecordEnv no_env(nullptr);
  const std::string missing_dir = ::testing::TempDir() + "/record_test.no-such-dir." +
                                  std::to_string(::getpid()) + "/trace.jsonl";
  auto c = Client::Connect(OfflineOptions(missing_dir));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, Code::kInternal);
  EXPECT_NE(c.error().message.find(missing_dir), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find(std::strerror(ENOENT)), std::string::npos) << c.error().message;

  // A directory cannot be appended to, whoever runs the test (root included).
  auto dir = Client::Connect(OfflineOptions(::testing::TempDir()));
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().code, Code::kInternal);
  EXPECT_NE(dir.error().message.find(std::strerror(EISDIR)), std::string::npos) << dir.error().message;
}

TEST(RecordOffline, EnvironmentVariableRecordsAndTheOptionWins) {
  TempFile from_env;
  TempFile from_option;
  {
    ScopedRecordEnv env(from_env.path().c_str());
    ClientOptions options;
    options.endpoints.clear();
    auto c = MustConnect(options);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->Hold("tx", "acct:1", Mode::kExclusive, 1s).ok());
    ASSERT_TRUE(c->ReleaseReported("tx", "acct:1").ok());

    auto o = MustConnect(OfflineOptions(from_option.path()));
    ASSERT_NE(o, nullptr);
    ASSERT_TRUE(o->Wait("tx", "acct:2", Mode::kShared).ok());

    ExpectTrace(ParsedLines(from_env.path()),
                {With(With(Line("hold", c->session(), "tx", "acct:1"), "mode", "X"), "ttl_ms", std::int64_t{1000}),
                 Line("release", c->session(), "tx", "acct:1")});
    ExpectTrace(ParsedLines(from_option.path()),
                {With(Line("wait", o->session(), "tx", "acct:2"), "mode", "S")});
  }
  // Once the variable is gone, a client records nothing anywhere.
  ScopedRecordEnv unset(nullptr);
  const std::string before = ReadAll(from_env.path());
  ClientOptions options;
  options.offline = true;
  auto quiet = MustConnect(options);
  ASSERT_NE(quiet, nullptr);
  ASSERT_TRUE(quiet->Hold("tx", "acct:3", Mode::kExclusive, 1s).ok());
  ASSERT_TRUE(quiet->Wait("tx", "acct:4", Mode::kExclusive).ok());
  ASSERT_TRUE(quiet->ReleaseReported("tx", "acct:3").ok());
  EXPECT_EQ(ReadAll(from_env.path()), before);
}

// Many whole lines from two clients in two threads and a second process, all in one
// file: every line parses, and each writer's lines come in its own order. Lines are
// longer than stdio's buffers, so any writer that split a line would show here.
TEST(RecordOffline, ClientsAndProcessesAppendWholeLinesOnly) {
  ScopedRecordEnv no_env(nullptr);
  TempFile trace;
  constexpr int kLines = 400;
  const std::string padding(6000, 'p');
  auto write_lines = [&](const std::string& owner) {
    auto c = Client::Connect(OfflineOptions(trace.path()));
    if (!c.ok()) return false;
    for (int i = 0; i < kLines; ++i) {
      if (!c.value()->Wait(owner, "res:" + std::to_string(i) + ":" + padding, Mode::kExclusive).ok()) {
        return false;
      }
    }
    return true;
  };

  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) _exit(write_lines("child") ? 0 : 1);
  auto a = std::async(std::launch::async, write_lines, "a");
  auto b = std::async(std::launch::async, write_lines, "b");
  EXPECT_TRUE(a.get());
  EXPECT_TRUE(b.get());
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  std::map<std::string, int> next;  // per owner: the index its next line must carry
  std::map<std::string, std::string> session_of;
  int parsed = 0;
  for (const std::string& line : Lines(trace.path())) {
    auto fields = Parse(line);
    ASSERT_TRUE(fields.has_value()) << "a broken line: " << line.substr(0, 200);
    ++parsed;
    const std::string owner = std::get<std::string>(fields->at("owner"));
    const std::string resource = std::get<std::string>(fields->at("resource"));
    const std::string expected = "res:" + std::to_string(next[owner]++) + ":" + padding;
    ASSERT_EQ(resource, expected) << "owner " << owner;
    const std::string session = std::get<std::string>(fields->at("session"));
    auto [it, fresh] = session_of.emplace(owner, session);
    EXPECT_EQ(it->second, session);
  }
  EXPECT_EQ(parsed, 3 * kLines);
  EXPECT_EQ(next["a"], kLines);
  EXPECT_EQ(next["b"], kLines);
  EXPECT_EQ(next["child"], kLines);
  EXPECT_NE(session_of["a"], session_of["b"]);
  EXPECT_NE(session_of["a"], session_of["child"]);
}

// What the client records is what `lockgraphctl check-order` reads: two clients of a
// test suite, offline, take a:* and b:* in opposite orders; the shared trace fails the
// check, and one client's half alone passes it.
TEST(RecordOffline, TraceFeedsCheckOrder) {
  ScopedRecordEnv no_env(nullptr);
  TempFile both;
  TempFile one;
  {
    auto first = MustConnect(OfflineOptions(both.path()));
    auto second = MustConnect(OfflineOptions(both.path()));
    auto alone = MustConnect(OfflineOptions(one.path()));
    ASSERT_TRUE(first && second && alone);
    auto nest = [](Client& c, const std::string& owner, const std::string& outer, const std::string& inner) {
      ASSERT_TRUE(c.Wait(owner, outer, Mode::kExclusive, "t.cc:1").ok());
      auto o = c.Hold(owner, outer, Mode::kExclusive, 1s, "t.cc:1");
      ASSERT_TRUE(o.ok());
      ASSERT_TRUE(c.Wait(owner, inner, Mode::kExclusive, "t.cc:2").ok());
      auto i = c.Hold(owner, inner, Mode::kExclusive, 1s, "t.cc:2");
      ASSERT_TRUE(i.ok());
      ASSERT_TRUE(c.Release(i.value()).ok());
      ASSERT_TRUE(c.Release(o.value()).ok());
    };
    nest(*first, "t1", "a:1", "b:1");
    nest(*second, "t2", "b:2", "a:2");
    nest(*alone, "t1", "a:1", "b:1");
  }
  auto check = [](const std::string& path) {
    testing::Process ctl({LOCKGRAPHCTL_PATH, "check-order", path});
    if (!ctl.Exited(std::chrono::milliseconds(20'000))) return std::pair<int, std::string>(-1, ctl.Output());
    return std::pair<int, std::string>(ctl.exit_code(), ctl.Output());
  };
  auto [bad_code, bad_output] = check(both.path());
  EXPECT_EQ(bad_code, 1) << bad_output;
  EXPECT_NE(bad_output.find("b -> a"), std::string::npos) << bad_output;
  auto [ok_code, ok_output] = check(one.path());
  EXPECT_EQ(ok_code, 0) << ok_output;
}

// ------------------------------------------------------------------ with lockgraphd

class RecordDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(daemon_.endpoint().empty()) << daemon_.process().Output(); }

  std::unique_ptr<Client> Connect(const std::string& record_path) {
    ClientOptions options;
    options.endpoints = {daemon_.endpoint()};
    options.session_ttl = 3000ms;
    options.request_timeout = 3000ms;
    options.record_path = record_path;
    return MustConnect(options);
  }

  // Waits (with a deadline) until the daemon's graph shows a queued wait.
  bool WaitUntilQueued() {
    testing::RawClient watcher(ctx_, daemon_.endpoint(), protocol::Encoding::kJson);
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto g = watcher.Call(testing::QueryReq(protocol::Op::kGraph));
      if (g && g->listing_json.find("\"waits\":[{") != std::string::npos) return true;
    }
    return false;
  }

  zmq::context_t ctx_;
  testing::Daemon daemon_{{"--revoke-grace-ms", "100", "--confirm-ms", "5"}};
};

TEST_F(RecordDaemonTest, GrantsHoldsWaitsAndReleasesAreRecordedWhenTheyHappen) {
  ScopedRecordEnv no_env(nullptr);
  TempFile trace;
  auto a = Connect(trace.path());
  auto b = Connect(trace.path());
  ASSERT_TRUE(a && b);
  const std::string sa = a->session();
  const std::string sb = b->session();
  ASSERT_FALSE(sa.empty());
  ASSERT_NE(sa, sb);

  // Granted at once.
  auto first = a->Acquire("t1", "row:1", Mode::kExclusive, 2s, 0ms, "a.cc:1");
  ASSERT_TRUE(first.ok()) << first.error().message;
  // Busy: an acquire that ends without a grant writes nothing.
  auto busy = b->Acquire("t2", "row:1", Mode::kExclusive, 2s, 0ms);
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code, Code::kTimeout);
  // Queued, then granted once t1 releases: its line comes after the release.
  auto queued = std::async(std::launch::async,
                           [&] { return b->Acquire("t2", "row:1", Mode::kExclusive, 2s, 3000ms, "b.cc:2"); });
  ASSERT_TRUE(WaitUntilQueued());
  ASSERT_TRUE(a->Release(first.value()).ok());
  auto second = queued.get();
  ASSERT_TRUE(second.ok()) << second.error().message;

  // Report mode against the daemon.
  auto held = a->Hold("t3", "ext:9", Mode::kShared, 2s, "c.cc:3");
  ASSERT_TRUE(held.ok()) << held.error().message;
  ASSERT_TRUE(b->Wait("t4", "ext:9", Mode::kExclusive).ok());
  ASSERT_TRUE(b->Unwait("t4", "ext:9").ok());
  ASSERT_TRUE(a->Release(held.value()).ok());
  ASSERT_TRUE(b->Release(second.value()).ok());
  auto forever = a->Acquire("t5", "row:2", Mode::kShared, 2s, -1s);
  ASSERT_TRUE(forever.ok()) << forever.error().message;
  ASSERT_TRUE(a->Release(forever.value()).ok());

  ExpectTrace(
      ParsedLines(trace.path()),
      {
          With(With(With(With(Line("acquire", sa, "t1", "row:1"), "mode", "X"), "site", "a.cc:1"), "ttl_ms",
                    std::int64_t{2000}),
               "wait_ms", std::int64_t{0}),
          Line("release", sa, "t1", "row:1"),
          With(With(With(With(Line("acquire", sb, "t2", "row:1"), "mode", "X"), "site", "b.cc:2"), "ttl_ms",
                    std::int64_t{2000}),
               "wait_ms", std::int64_t{3000}),
          With(With(With(Line("hold", sa, "t3", "ext:9"), "mode", "S"), "site", "c.cc:3"), "ttl_ms",
               std::int64_t{2000}),
          With(Line("wait", sb, "t4", "ext:9"), "mode", "X"),
          Line("unwait", sb, "t4", "ext:9"),
          Line("release", sa, "t3", "ext:9"),
          Line("release", sb, "t2", "row:1"),
          With(With(With(Line("acquire", sa, "t5", "row:2"), "mode", "S"), "ttl_ms", std::int64_t{2000}),
               "wait_ms", std::int64_t{-1}),
          Line("release", sa, "t5", "row:2"),
      });
}

TEST_F(RecordDaemonTest, WithoutRecordingNothingIsWritten) {
  ScopedRecordEnv no_env(nullptr);
  // A directory of its own: after a session's worth of calls it is still empty.
  const std::string dir = ::testing::TempDir() + "/record_test.quiet." + std::to_string(::getpid());
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << std::strerror(errno);
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(::chdir(dir.c_str()), 0);
  {
    auto c = Connect("");
    ASSERT_NE(c, nullptr);
    auto lease = c->Acquire("t", "row:1", Mode::kExclusive, 2s, 0ms);
    ASSERT_TRUE(lease.ok());
    ASSERT_TRUE(c->Release(lease.value()).ok());
    auto held = c->Hold("t", "ext:1", Mode::kExclusive, 2s);
    ASSERT_TRUE(held.ok());
    ASSERT_TRUE(c->Wait("u", "ext:2", Mode::kExclusive).ok());
    ASSERT_TRUE(c->Unwait("u", "ext:2").ok());
    ASSERT_TRUE(c->ReleaseReported("t", "ext:1").ok());
  }
  ASSERT_EQ(::chdir(cwd), 0);
  EXPECT_EQ(::rmdir(dir.c_str()), 0) << "the directory is not empty: " << std::strerror(errno);
}

// An enforced rank refuses the acquire with ORDER_VIOLATION: the Error carries the
// ordering report, in both encodings, and an acquire not granted records nothing.
TEST(RecordOrder, OrderViolationCarriesTheReportAndRecordsNothing) {
  ScopedRecordEnv no_env(nullptr);
  TempFile rules;
  {
    std::ofstream(rules.path()) << "[ordering]\nmode = \"enforce\"\n[ordering.rank]\naccount = 10\norder = 20\n";
  }
  testing::Daemon daemon({"--rules", rules.path()});
  ASSERT_FALSE(daemon.endpoint().empty()) << daemon.process().Output();
  for (auto encoding : {protocol::Encoding::kBinary, protocol::Encoding::kJson}) {
    SCOPED_TRACE(encoding == protocol::Encoding::kJson ? "json" : "binary");
    TempFile trace;
    ClientOptions options;
    options.endpoints = {daemon.endpoint()};
    options.session_ttl = 3000ms;
    options.request_timeout = 3000ms;
    options.encoding = encoding;
    options.record_path = trace.path();
    auto c = MustConnect(options);
    ASSERT_NE(c, nullptr);
    auto outer = c->Acquire("t", "order:1", Mode::kExclusive, 2s, 0ms, "a.cc:1");
    ASSERT_TRUE(outer.ok()) << outer.error().message;
    auto inner = c->Acquire("t", "account:5", Mode::kExclusive, 2s, 0ms, "a.cc:2");
    ASSERT_FALSE(inner.ok());
    EXPECT_EQ(inner.error().code, Code::kOrderViolation) << inner.error().message;
    rapidjson::Document report;
    report.Parse(inner.error().order_json.c_str());
    ASSERT_TRUE(report.IsObject()) << "order_json: " << inner.error().order_json;
    ASSERT_TRUE(report.HasMember("kind") && report["kind"].IsString()) << inner.error().order_json;
    EXPECT_STREQ(report["kind"].GetString(), "rank");
    ASSERT_TRUE(c->Release(outer.value()).ok());
    ExpectTrace(ParsedLines(trace.path()),
                {With(With(With(With(Line("acquire", c->session(), "t", "order:1"), "mode", "X"), "site", "a.cc:1"),
                           "ttl_ms", std::int64_t{2000}),
                      "wait_ms", std::int64_t{0}),
                 Line("release", c->session(), "t", "order:1")});
  }
}

}  // namespace
}  // namespace lockgraph
