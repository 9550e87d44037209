// The journal's format (daemon/journal.h): CRC-32C, the payload codec, segment files
// on disk, the writer.
//
// - Crc32c against published vectors; one record spelled out byte by byte (the worked
//   example of the grammar), little- and big-endian.
// - Round trips: every command type, boot records with a rich configuration and both
//   report types survive EncodePayload -> DecodePayload field for field. Describe()
//   renders every field, and unpacks each struct with a structured binding, so a field
//   added to a command or to the configuration stops this file compiling until the
//   codec and Describe know it. rapidcheck properties do the same over random commands
//   and configurations.
// - Bad payloads are refused with a message: every proper prefix, each enum out of
//   range, lengths and counts larger than the record, trailing bytes. A seeded mutation
//   fuzzer flips bytes of valid payloads; decoding must fail with a message or give a
//   record that re-encodes stably, and never allocate more than the payload justifies
//   (this binary counts operator new, see AllocationWatch).
// - ScanSegment over clean, cut, flipped and impossible segments; secrets journaled
//   once (JournalSecretless) and put back by the scan; TruncateSegment.
// - JournalWriter: mode 0600, O_EXCL, its counters, a write that fails half-way
//   (RLIMIT_FSIZE), the destructor's sync; staged segments (NAME.lgj.tmp until
//   Publish), Swap; SegmentName, ListSegments' (epoch, n) order, PruneSegments.
// - Snapshot parts: their layout, refusals (part/parts out of range, every prefix);
//   SnapshotLoader loads a real coordinator image cut into parts, and refuses parts
//   out of order, a changed part count, a second snapshot and a damaged image
//   without touching the coordinator.
//
// Replaying a property failure: rapidcheck prints the shrunk counterexample and
// "seed: S"; rerun with
//   RC_PARAMS="seed=S" build/mine/tests/daemon_journal_test --gtest_filter='JournalProperty.*'
// The mutation fuzzer's seed is kFuzzSeed; a failure names the payload and iteration.
#include "journal.h"

#include <cereal/archives/portable_binary.hpp>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

// ---------------------------------------------------------------- counting allocations
//
// This test binary replaces the global operator new/delete (all non-aligned forms, so
// that they pair up under sanitizers too) to learn the largest single allocation made
// while an AllocationWatch is alive. A request above kRefuseAbove is refused outright
// (std::bad_alloc) so that a decoder that trusts a length field fails the test instead
// of the machine.
namespace {

std::atomic<bool> g_watching{false};
std::atomic<std::size_t> g_largest{0};
constexpr std::size_t kRefuseAbove = std::size_t{64} << 20;

void* Allocate(std::size_t n) {
  if (g_watching.load(std::memory_order_relaxed)) {
    std::size_t seen = g_largest.load(std::memory_order_relaxed);
    while (n > seen && !g_largest.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
    if (n > kRefuseAbove) throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}

}  // namespace

void* operator new(std::size_t n) { return Allocate(n); }
void* operator new[](std::size_t n) { return Allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return Allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return Allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace lockgraph::daemon {
namespace {

using graph::Mode;
using graph::OrderMode;
using graph::VictimStep;
using graph::WithinRule;

constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();
constexpr std::uint32_t kU32Max = std::numeric_limits<std::uint32_t>::max();

class AllocationWatch {
 public:
  AllocationWatch() {
    g_largest.store(0);
    g_watching.store(true);
  }
  ~AllocationWatch() { g_watching.store(false); }
  std::size_t largest() const { return g_largest.load(); }
};

// ---------------------------------------------------------------- rendering as text

std::string Quote(std::string_view s) {
  static const char* const kHex = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s) {
    const auto b = static_cast<unsigned char>(ch);
    if (b >= 0x20 && b < 0x7F && b != '"' && b != '\\') {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[b >> 4];
      out += kHex[b & 15];
    }
  }
  return out + "\"";
}

// "key=value " pieces; optionals print as "none".
class Text {
 public:
  Text& S(std::string_view key, std::string_view v) { return Put(key, Quote(v)); }
  Text& I(std::string_view key, std::int64_t v) { return Put(key, std::to_string(v)); }
  Text& U(std::string_view key, std::uint64_t v) { return Put(key, std::to_string(v)); }
  template <typename Enum>
  Text& E(std::string_view key, Enum v) {
    return U(key, static_cast<std::uint64_t>(v));
  }
  Text& OI(std::string_view key, const std::optional<std::int64_t>& v) {
    return v ? I(key, *v) : Put(key, "none");
  }
  Text& OU(std::string_view key, const std::optional<std::uint64_t>& v) {
    return v ? U(key, *v) : Put(key, "none");
  }
  Text& Raw(std::string_view key, const std::string& v) { return Put(key, v); }
  std::string str() const { return out_; }

 private:
  Text& Put(std::string_view key, std::string_view v) {
    out_ += key;
    out_ += '=';
    out_ += v;
    out_ += ' ';
    return *this;
  }
  std::string out_;
};

// Each Describe unpacks its struct completely: adding a field breaks the build here.
std::string Describe(const graph::Auth& a) {
  const auto& [session, secret] = a;
  return "{" + Text().S("session", session).S("secret", secret).str() + "}";
}
std::string Describe(const graph::Hello& c) {
  const auto& [session, secret, client, ttl_ms, priority] = c;
  return "Hello " +
         Text().S("session", session).S("secret", secret).S("client", client).I("ttl_ms", ttl_ms).I("priority", priority).str();
}
std::string Describe(const graph::Heartbeat& c) {
  const auto& [auth] = c;
  return "Heartbeat " + Text().Raw("auth", Describe(auth)).str();
}
std::string Describe(const graph::Bye& c) {
  const auto& [auth] = c;
  return "Bye " + Text().Raw("auth", Describe(auth)).str();
}
std::string Describe(const graph::Acquire& c) {
  const auto& [auth, request_id, owner, resource, mode, ttl_ms, wait_ms, site, started] = c;
  return "Acquire " + Text()
                          .Raw("auth", Describe(auth))
                          .U("request_id", request_id)
                          .S("owner", owner)
                          .S("resource", resource)
                          .E("mode", mode)
                          .I("ttl_ms", ttl_ms)
                          .I("wait_ms", wait_ms)
                          .S("site", site)
                          .OI("started", started)
                          .str();
}
std::string Describe(const graph::Renew& c) {
  const auto& [auth, lease, ttl_ms] = c;
  return "Renew " + Text().Raw("auth", Describe(auth)).U("lease", lease).OI("ttl_ms", ttl_ms).str();
}
std::string Describe(const graph::Release& c) {
  const auto& [auth, lease, owner, resource] = c;
  return "Release " +
         Text().Raw("auth", Describe(auth)).OU("lease", lease).S("owner", owner).S("resource", resource).str();
}
std::string Describe(const graph::Hold& c) {
  const auto& [auth, owner, resource, mode, ttl_ms, site] = c;
  return "Hold " + Text()
                       .Raw("auth", Describe(auth))
                       .S("owner", owner)
                       .S("resource", resource)
                       .E("mode", mode)
                       .I("ttl_ms", ttl_ms)
                       .S("site", site)
                       .str();
}
std::string Describe(const graph::Wait& c) {
  const auto& [auth, owner, resource, mode, site] = c;
  return "Wait " +
         Text().Raw("auth", Describe(auth)).S("owner", owner).S("resource", resource).E("mode", mode).S("site", site).str();
}
std::string Describe(const graph::Unwait& c) {
  const auto& [auth, owner, resource] = c;
  return "Unwait " + Text().Raw("auth", Describe(auth)).S("owner", owner).S("resource", resource).str();
}
std::string Describe(const graph::Revoke& c) {
  const auto& [lease, resource] = c;
  return "Revoke " + Text().OU("lease", lease).S("resource", resource).str();
}
std::string Describe(const graph::Tick&) {
  static_assert(std::is_empty_v<graph::Tick>, "Tick gained a field: journal it and describe it");
  return "Tick";
}
std::string Describe(const graph::RestoredSession& x) {
  const auto& [session, secret, client, ttl_ms, priority] = x;
  return "{" +
         Text().S("session", session).S("secret", secret).S("client", client).I("ttl_ms", ttl_ms).I("priority", priority).str() +
         "}";
}
std::string Describe(const graph::RestoredLease& x) {
  const auto& [session, owner, resource, mode, lease, token, ttl_ms, site, started, revoked] = x;
  return "{" + Text()
                   .S("session", session)
                   .S("owner", owner)
                   .S("resource", resource)
                   .E("mode", mode)
                   .U("lease", lease)
                   .U("token", token)
                   .I("ttl_ms", ttl_ms)
                   .S("site", site)
                   .I("started", started)
                   .U("revoked", revoked)
                   .str() +
         "}";
}
std::string Describe(const graph::Restore& c) {
  const auto& [sessions, leases, grace_ms, grant_unclaimed] = c;
  Text t;
  for (const auto& x : sessions) t.Raw("session", Describe(x));
  for (const auto& x : leases) t.Raw("lease", Describe(x));
  return "Restore " + t.I("grace_ms", grace_ms).U("grant_unclaimed", grant_unclaimed).str();
}
std::string Describe(const graph::Reclaim& c) {
  const auto& [auth, items] = c;
  Text t;
  t.Raw("auth", Describe(auth));
  for (const graph::ReclaimItem& x : items) {
    const auto& [owner, resource, mode, token] = x;
    t.Raw("item", "{" + Text().S("owner", owner).S("resource", resource).E("mode", mode).U("token", token).str() + "}");
  }
  return "Reclaim " + t.str();
}
std::string Describe(const graph::SetEpoch& c) {
  const auto& [epoch] = c;
  return "SetEpoch " + Text().U("epoch", epoch).str();
}
std::string Describe(const graph::Command& c) {
  static_assert(std::variant_size_v<graph::Command> == 14, "a new command: journal it and describe it");
  return std::visit([](const auto& x) { return Describe(x); }, c);
}

std::string Describe(const graph::Config& c) {
  const auto& [max_name_bytes, max_leases_per_session, max_waits_per_owner, confirm_us, victim_grace_us,
               revoke_grace_us, max_ttl_ms, class_separator, order, classes, victim_policy, epoch_low_water] = c;
  Text t;
  t.U("max_name_bytes", max_name_bytes)
      .U("max_leases_per_session", max_leases_per_session)
      .U("max_waits_per_owner", max_waits_per_owner)
      .I("confirm_us", confirm_us)
      .I("victim_grace_us", victim_grace_us)
      .I("revoke_grace_us", revoke_grace_us)
      .I("max_ttl_ms", max_ttl_ms)
      .S("class_separator", std::string(1, class_separator));
  const auto& [order_mode, separator, order_classes, max_learned_edges] = order;
  t.E("order.mode", order_mode).S("order.separator", std::string(1, separator)).U("order.max_learned_edges", max_learned_edges);
  for (const auto& [name, rule] : order_classes) {
    const auto& [rank, within, mode] = rule;
    t.Raw("order.class", Quote(name) + "{" +
                             Text()
                                 .OI("rank", rank)
                                 .E("within", within)
                                 .OU("mode", mode ? std::optional<std::uint64_t>(static_cast<std::uint64_t>(*mode))
                                                  : std::nullopt)
                                 .str() +
                             "}");
  }
  for (const auto& [name, cc] : classes) {
    const auto& [revoke_grace, revoke_immediate] = cc;
    t.Raw("class", Quote(name) + "{" + Text().OI("revoke_grace_us", revoke_grace).U("revoke_immediate", revoke_immediate).str() + "}");
  }
  std::string steps;
  for (VictimStep s : victim_policy) steps += std::to_string(static_cast<int>(s)) + ",";
  t.Raw("victim_policy", "[" + steps + "]").U("epoch_low_water", epoch_low_water);
  return t.str();
}

std::string Describe(const JournalRecord& r) {
  const auto& [boot, wall_us, now_us, body] = r;
  std::string out = Text().U("boot", boot).I("wall_us", wall_us).I("now_us", now_us).E("kind", r.kind()).str();
  if (const auto* b = std::get_if<BootInfo>(&body)) {
    const auto& [epoch, first_seq, server, fsync_always, config] = *b;
    out += "Boot " +
           Text().U("epoch", epoch).U("first_seq", first_seq).S("server", server).U("fsync_always", fsync_always).str() +
           Describe(config);
  } else if (const auto* c = std::get_if<graph::Command>(&body)) {
    out += Describe(*c);
  } else if (const auto* rep = std::get_if<ReportInfo>(&body)) {
    const auto& [type, json] = *rep;
    out += "Report " + Text().E("type", type).S("json", json).str();
  } else {
    const auto& [part, parts, bytes] = std::get<SnapshotPart>(body);
    out += "Snapshot " + Text().U("part", part).U("parts", parts).S("bytes", bytes).str();
  }
  return out;
}

std::string Describe(const std::variant<JournalRecord, std::string>& decoded) {
  if (const auto* err = std::get_if<std::string>(&decoded)) return "error: " + *err;
  return Describe(std::get<JournalRecord>(decoded));
}

// ---------------------------------------------------------------- samples

// A NUL, two-byte and three-byte UTF-8, and a byte no UTF-8 text contains.
const std::string kOdd = std::string("a\0b", 3) + "\xC3\xA9\xE2\x9C\x93\xFF";
std::string Odd(std::string_view s) { return std::string(s) + kOdd; }

graph::Auth RichAuth(std::string_view tag) { return graph::Auth{Odd(std::string(tag) + "-session"), Odd(std::string(tag) + "-secret")}; }

// Every command type with every field away from its default; optionals both ways.
std::vector<graph::Command> RichCommands() {
  std::vector<graph::Command> out;
  out.push_back(graph::Hello{Odd("session"), Odd("secret"), Odd("client 1.0"), kI64Max, std::numeric_limits<std::int32_t>::min()});
  out.push_back(graph::Hello{"", "", "", -1, std::numeric_limits<std::int32_t>::max()});
  out.push_back(graph::Heartbeat{RichAuth("hb")});
  out.push_back(graph::Bye{RichAuth("bye")});
  out.push_back(graph::Acquire{RichAuth("acq"), kU64Max, Odd("owner"), Odd("db:42"), Mode::kShared, kI64Min,
                               -123'456'789'012, Odd("app.cc:17"), kI64Min});
  out.push_back(graph::Acquire{RichAuth("acq2"), 7, "o", std::string(70'000, 'r'), Mode::kExclusive, 0, 0, "", std::nullopt});
  out.push_back(graph::Renew{RichAuth("renew"), kU64Max - 1, -1});
  out.push_back(graph::Renew{RichAuth("renew2"), 0, std::nullopt});
  out.push_back(graph::Release{RichAuth("rel"), std::uint64_t{1} << 63, Odd("owner"), Odd("res")});
  out.push_back(graph::Release{RichAuth("rel2"), std::nullopt, Odd("o2"), Odd("r2")});
  out.push_back(graph::Hold{RichAuth("hold"), Odd("owner"), Odd("res"), Mode::kShared, -7, Odd("site")});
  out.push_back(graph::Wait{RichAuth("wait"), Odd("owner"), Odd("res"), Mode::kShared, Odd("site")});
  out.push_back(graph::Unwait{RichAuth("unwait"), Odd("owner"), Odd("res")});
  out.push_back(graph::Unwait{});
  out.push_back(graph::Revoke{std::uint64_t{42}, Odd("res")});
  out.push_back(graph::Revoke{std::nullopt, Odd("all of it")});
  out.push_back(graph::Tick{});
  out.push_back(graph::SetEpoch{kU32Max});
  graph::Restore restore;
  restore.sessions.push_back(graph::RestoredSession{Odd("s1"), Odd("secret1"), Odd("client"), kI64Min, -3});
  restore.sessions.push_back(graph::RestoredSession{"", "", "", 0, std::numeric_limits<std::int32_t>::max()});
  restore.leases.push_back(graph::RestoredLease{Odd("s1"), Odd("o"), Odd("db:1"), Mode::kShared, kU64Max, kU64Max - 1,
                                                kI64Max, Odd("site"), kI64Min, true});
  restore.leases.push_back(graph::RestoredLease{"", "", "", Mode::kExclusive, 0, 0, -1, "", 0, false});
  restore.grace_ms = kI64Min;
  restore.grant_unclaimed = true;
  out.push_back(restore);
  out.push_back(graph::Restore{});
  out.push_back(graph::Reclaim{RichAuth("reclaim"),
                               {graph::ReclaimItem{Odd("o"), Odd("db:1"), Mode::kShared, kU64Max},
                                graph::ReclaimItem{"", "", Mode::kExclusive, 0}}});
  out.push_back(graph::Reclaim{RichAuth("reclaim2"), {}});
  return out;
}

graph::Config RichConfig() {
  graph::Config c;
  c.max_name_bytes = kU32Max;
  c.max_leases_per_session = 3;
  c.max_waits_per_owner = 0;
  c.confirm_us = 0;
  c.victim_grace_us = kI64Max;
  c.revoke_grace_us = -1;
  c.max_ttl_ms = kI64Min;
  c.class_separator = '/';
  c.classes["db"] = graph::ClassConfig{0, true};
  c.classes[Odd("queue")] = graph::ClassConfig{std::nullopt, true};
  c.classes["slow"] = graph::ClassConfig{kI64Min, false};
  c.victim_policy = {VictimStep::kLowestId, VictimStep::kFewestLeases, VictimStep::kLowestId, VictimStep::kYoungest,
                     VictimStep::kLowestPriority};
  c.epoch_low_water = kU64Max;
  c.order.mode = OrderMode::kEnforce;
  c.order.separator = '\xFF';
  c.order.max_learned_edges = std::numeric_limits<std::size_t>::max();
  c.order.classes["db"] = graph::ClassOrderRule{-5, WithinRule::kAscending, OrderMode::kOff};
  c.order.classes[Odd("queue")] = graph::ClassOrderRule{std::nullopt, WithinRule::kDescending, std::nullopt};
  c.order.classes["cache"] = graph::ClassOrderRule{kI64Max, WithinRule::kNone, OrderMode::kWarn};
  c.order.classes[""] = graph::ClassOrderRule{kI64Min, WithinRule::kAscending, OrderMode::kEnforce};
  return c;
}

JournalRecord Record(std::uint64_t boot, std::int64_t wall_us, std::int64_t now_us,
                     decltype(JournalRecord::body) body) {
  JournalRecord r;
  r.boot = boot;
  r.wall_us = wall_us;
  r.now_us = now_us;
  r.body = std::move(body);
  return r;
}

// (Built field by field: GCC 12 warns, wrongly, about a braced temporary's map.)
BootInfo Boot(std::uint32_t epoch, std::uint64_t first_seq, std::string server, bool fsync_always) {
  BootInfo b;
  b.epoch = epoch;
  b.first_seq = first_seq;
  b.server = std::move(server);
  b.fsync_always = fsync_always;
  return b;
}
BootInfo Boot(std::uint32_t epoch, std::uint64_t first_seq, std::string server, bool fsync_always,
              graph::Config config) {
  BootInfo b = Boot(epoch, first_seq, std::move(server), fsync_always);
  b.config = std::move(config);
  return b;
}

JournalRecord RichBoot() {
  return Record(kU64Max, kI64Min, kI64Max, Boot(kU32Max, kU64Max, Odd("lockgraphd 0.1.0"), true, RichConfig()));
}

// Boot records (rich, default, empty victim policy), every rich command, both
// reports, snapshot parts.
std::vector<JournalRecord> RichRecords() {
  std::vector<JournalRecord> out;
  out.push_back(RichBoot());
  out.push_back(Record(1, 2, 3, Boot(0, 1, "", false)));
  graph::Config empty_policy;
  empty_policy.victim_policy.clear();
  out.push_back(Record(0, 0, 0, Boot(0, 0, "", false, empty_policy)));
  std::int64_t i = 0;
  for (graph::Command& c : RichCommands()) {
    ++i;
    out.push_back(Record(kU64Max - i, kI64Min + i, -i, std::move(c)));
  }
  out.push_back(Record(0xDEADBEEF, 1'700'000'000'000'000, 5,
                       ReportInfo{ReportInfo::Type::kDeadlock,
                                  R"({"cycle":[{"owner":"s/a","waits_for":"r2"}],"victim":"s/a"})"}));
  out.push_back(Record(0xDEADBEEF, 1'700'000'000'000'001, 6, ReportInfo{ReportInfo::Type::kOrder, Odd("{\"kind\":\"rank\"}")}));
  out.push_back(Record(0xDEADBEEF, 1'700'000'000'000'002, 7, ReportInfo{ReportInfo::Type::kOrder, ""}));
  // Snapshot parts: empty, binary, the last of the most parts there can be.
  out.push_back(Record(0xFEED, 1'700'000'000'000'003, 8, SnapshotPart{0, 1, ""}));
  out.push_back(Record(0xFEED, 1'700'000'000'000'004, 9, SnapshotPart{1, 3, Odd("image") + std::string(5, '\0')}));
  out.push_back(Record(kU64Max, kI64Min, kI64Max, SnapshotPart{kU32Max - 1, kU32Max, std::string("\0", 1)}));
  return out;
}

JournalRecord CommandRecord(graph::Command c) { return Record(11, 22, 33, std::move(c)); }

// Decodes with the allocation watch on: no single allocation may exceed what the
// payload's own size justifies.
std::variant<JournalRecord, std::string> WatchedDecode(std::string_view payload) {
  std::variant<JournalRecord, std::string> out;
  std::size_t largest = 0;
  {
    AllocationWatch watch;
    out = DecodePayload(payload);
    largest = watch.largest();
  }
  EXPECT_LE(largest, 4 * payload.size() + 4096) << "decoding " << payload.size() << " bytes allocated " << largest
                                                << " at once; " << Describe(out);
  return out;
}

std::string DecodeError(std::string_view payload) {
  auto d = WatchedDecode(payload);
  if (const auto* err = std::get_if<std::string>(&d)) return *err;
  return "(decoded: " + Describe(std::get<JournalRecord>(d)) + ")";
}

// The one byte where two payloads of equal length differ (they must differ in one).
std::size_t OnlyDifference(const std::string& a, const std::string& b) {
  EXPECT_EQ(a.size(), b.size());
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] != b[i]) at.push_back(i);
  }
  EXPECT_EQ(at.size(), 1u);
  return at.empty() ? 0 : at.front();
}

std::string WithByte(std::string s, std::size_t at, std::uint8_t v) {
  s[at] = static_cast<char>(v);
  return s;
}

std::string WithLe(std::string s, std::size_t at, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

std::string Le32(std::uint32_t v) { return WithLe(std::string(4, '\0'), 0, v, 4); }

std::string Hex(std::string_view s) {
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  for (char ch : s) {
    const auto b = static_cast<unsigned char>(ch);
    if (!out.empty()) out += ' ';
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// ---------------------------------------------------------------- files

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = ::testing::TempDir() + "/journal_test." + std::to_string(::getpid()) + "." + std::to_string(++counter) + "." +
            (info ? info->name() : "x");
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A new file each time: rewriting one in place makes ext4 flush it at close
// (auto_da_alloc), which would make the byte-by-byte tests slow.
void WriteFile(const std::string& path, std::string_view bytes) {
  std::filesystem::remove(path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

SegmentScan Scan(const std::string& path) {
  auto s = ScanSegment(path);
  if (const auto* err = std::get_if<std::string>(&s)) {
    ADD_FAILURE() << "ScanSegment(" << path << "): " << *err;
    return SegmentScan{};
  }
  return std::get<SegmentScan>(std::move(s));
}

std::string ScanError(const std::string& path) {
  auto s = ScanSegment(path);
  if (const auto* err = std::get_if<std::string>(&s)) return *err;
  return "(scanned " + std::to_string(std::get<SegmentScan>(s).records.size()) + " records)";
}

// A segment written by JournalWriter, and where each record starts.
struct Written {
  std::string path;
  std::vector<JournalRecord> records;
  std::vector<std::uint64_t> offsets;
  std::uint64_t size = 0;
};

Written WriteSegment(const TempDir& dir, const std::string& name, std::vector<JournalRecord> records) {
  Written w;
  JournalWriter writer;
  const std::string err = writer.Open(dir.path(), name);
  EXPECT_EQ(err, "");
  w.path = writer.path();
  std::uint64_t at = kJournalMagic.size();
  for (const JournalRecord& r : records) {
    w.offsets.push_back(at);
    at += FrameRecord(r).size();
    writer.Append(r);
  }
  EXPECT_EQ(writer.Sync(), "");
  w.size = at;
  w.records = std::move(records);
  return w;
}

// A few small records of each kind: a boot, commands, a report.
std::vector<JournalRecord> SmallRecords() {
  std::vector<JournalRecord> out;
  out.push_back(Record(9, 100, 1, Boot(3, 1, "lockgraphd test", true)));
  out.push_back(Record(9, 101, 2, graph::Hello{"s1", "k1", "c", 1000, 0}));
  out.push_back(Record(9, 102, 3, graph::Acquire{{"s1", "k1"}, 1, "o", "db:1", Mode::kExclusive, 500, -1, "x.cc:1", 7}));
  out.push_back(Record(9, 103, 4, ReportInfo{ReportInfo::Type::kDeadlock, R"({"victim":"s1/o"})"}));
  out.push_back(Record(9, 104, 5, graph::Release{{"s1", "k1"}, 12, "o", "db:1"}));
  return out;
}

std::string DescribeAll(const std::vector<JournalRecord>& records) {
  std::string out;
  for (const JournalRecord& r : records) out += Describe(r) + "\n";
  return out;
}

// ================================================================ CRC-32C

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);  // RFC 3720 B.4
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);  // RFC 3720 B.4
}

// ================================================================ the payload, spelled out

// The grammar's worked example: kind, cereal's byte-order byte (1: little-endian),
// boot, wall_us, now_us, then the body (SetEpoch: command tag 11, epoch u32).
TEST(JournalPayloadTest, SetEpochByteByByte) {
  const JournalRecord r = Record(0x0102030405060708, -1, 2, graph::SetEpoch{7});
  const std::string expected = std::string("\x02\x01", 2) + "\x08\x07\x06\x05\x04\x03\x02\x01" +
                               std::string(8, '\xFF') + std::string("\x02\0\0\0\0\0\0\0", 8) + "\x0B" +
                               std::string("\x07\0\0\0", 4);
  const std::string payload = EncodePayload(r);
  EXPECT_EQ(Hex(payload), Hex(expected));
  EXPECT_EQ(Hex(FrameRecord(r)), Hex(Le32(31) + Le32(Crc32c(expected)) + expected));
  EXPECT_EQ(Describe(WatchedDecode(expected)), Describe(r));

  // The same record as a big-endian host's cereal would write it reads the same.
  const std::string big = std::string("\x02\x00", 2) + "\x01\x02\x03\x04\x05\x06\x07\x08" + std::string(8, '\xFF') +
                          std::string("\0\0\0\0\0\0\0\x02", 8) + "\x0B" + std::string("\0\0\0\x07", 4);
  EXPECT_EQ(Describe(WatchedDecode(big)), Describe(r));
}

TEST(JournalPayloadTest, KindLeadsEveryPayload) {
  for (const JournalRecord& r : RichRecords()) {
    const std::string payload = EncodePayload(r);
    ASSERT_GE(payload.size(), 2u);
    EXPECT_EQ(static_cast<unsigned>(static_cast<unsigned char>(payload[0])), static_cast<unsigned>(r.kind())) << Describe(r);
    EXPECT_EQ(payload[1], '\x01') << "cereal's byte order: little-endian on every host; " << Describe(r);
  }
  EXPECT_EQ(Record(0, 0, 0, Boot(0, 1, "", false)).kind(), RecordKind::kBoot);
  EXPECT_EQ(Record(0, 0, 0, graph::Tick{}).kind(), RecordKind::kCommand);
  EXPECT_EQ(Record(0, 0, 0, ReportInfo{}).kind(), RecordKind::kReport);
  EXPECT_EQ(Record(0, 0, 0, SnapshotPart{}).kind(), RecordKind::kSnapshot);
  EXPECT_EQ(static_cast<unsigned>(RecordKind::kSnapshot), 4u);
  std::set<RecordKind> kinds;
  for (const JournalRecord& r : RichRecords()) kinds.insert(r.kind());
  EXPECT_EQ(kinds.size(), std::variant_size_v<decltype(JournalRecord::body)>) << "a record kind has no sample";
}

// ================================================================ round trips

TEST(JournalPayloadTest, EveryCommandTypeRoundTrips) {
  std::set<std::size_t> types;
  for (const graph::Command& c : RichCommands()) types.insert(c.index());
  EXPECT_EQ(types.size(), std::variant_size_v<graph::Command>) << "a command type has no sample";

  for (const JournalRecord& r : RichRecords()) {
    SCOPED_TRACE(Describe(r).substr(0, 300));
    const std::string payload = EncodePayload(r);
    const auto decoded = WatchedDecode(payload);
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(decoded)) << std::get<std::string>(decoded);
    EXPECT_EQ(Describe(decoded), Describe(r));
    EXPECT_EQ(EncodePayload(std::get<JournalRecord>(decoded)), payload);
  }
  // Samples differ from each other (Describe sees what makes them differ).
  std::set<std::string> seen;
  for (const JournalRecord& r : RichRecords()) EXPECT_TRUE(seen.insert(Describe(r)).second) << Describe(r);
}

TEST(JournalPayloadTest, FieldsSurviveExactly) {
  {
    const auto d = WatchedDecode(EncodePayload(CommandRecord(RichCommands()[4])));
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(d)) << std::get<std::string>(d);
    const auto& a = std::get<graph::Acquire>(std::get<graph::Command>(std::get<JournalRecord>(d).body));
    EXPECT_EQ(a.owner, Odd("owner"));
    ASSERT_EQ(a.owner.size(), 14u);  // the NUL is kept ...
    EXPECT_EQ(a.owner[6], '\0');
    EXPECT_EQ(a.owner.substr(8), "\xC3\xA9\xE2\x9C\x93\xFF");  // ... and so are the bytes after it
    EXPECT_EQ(a.auth.secret, Odd("acq-secret"));
    EXPECT_EQ(a.request_id, kU64Max);
    EXPECT_EQ(a.mode, Mode::kShared);
    EXPECT_EQ(a.ttl_ms, kI64Min);
    EXPECT_EQ(a.wait_ms, -123'456'789'012);
    EXPECT_EQ(a.started, std::optional<std::int64_t>(kI64Min));
  }
  {
    const auto d = WatchedDecode(EncodePayload(CommandRecord(graph::Release{{"s", "k"}, std::nullopt, "o", "r"})));
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(d)) << std::get<std::string>(d);
    const auto& r = std::get<graph::Release>(std::get<graph::Command>(std::get<JournalRecord>(d).body));
    EXPECT_FALSE(r.lease.has_value());
    const auto d2 = WatchedDecode(EncodePayload(CommandRecord(graph::Release{{"s", "k"}, 0, "o", "r"})));
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(d2));
    EXPECT_EQ(std::get<graph::Release>(std::get<graph::Command>(std::get<JournalRecord>(d2).body)).lease,
              std::optional<std::uint64_t>(0));  // a lease of 0 is not "no lease"
  }
  {
    const auto d = WatchedDecode(EncodePayload(RichBoot()));
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(d)) << std::get<std::string>(d);
    const JournalRecord& r = std::get<JournalRecord>(d);
    EXPECT_EQ(r.boot, kU64Max);
    EXPECT_EQ(r.wall_us, kI64Min);
    EXPECT_EQ(r.now_us, kI64Max);
    const BootInfo& b = std::get<BootInfo>(r.body);
    EXPECT_EQ(b.epoch, kU32Max);
    EXPECT_EQ(b.first_seq, kU64Max);
    EXPECT_EQ(b.server, Odd("lockgraphd 0.1.0"));
    EXPECT_TRUE(b.fsync_always);
    const graph::Config& c = b.config;
    EXPECT_EQ(c.class_separator, '/');
    EXPECT_EQ(c.revoke_grace_us, -1);
    ASSERT_EQ(c.classes.size(), 3u);
    EXPECT_TRUE(c.classes.at("db").revoke_immediate);
    EXPECT_EQ(c.classes.at("db").revoke_grace_us, std::optional<std::int64_t>(0));
    EXPECT_FALSE(c.classes.at(Odd("queue")).revoke_grace_us.has_value());
    EXPECT_EQ(c.victim_policy, RichConfig().victim_policy);
    EXPECT_EQ(c.order.mode, OrderMode::kEnforce);
    EXPECT_EQ(c.order.separator, '\xFF');
    EXPECT_EQ(c.order.max_learned_edges, std::numeric_limits<std::size_t>::max());
    ASSERT_EQ(c.order.classes.size(), 4u);
    EXPECT_EQ(c.order.classes.at("db").rank, std::optional<std::int64_t>(-5));
    EXPECT_EQ(c.order.classes.at("db").within, WithinRule::kAscending);
    EXPECT_EQ(c.order.classes.at("db").mode, std::optional<OrderMode>(OrderMode::kOff));
    EXPECT_FALSE(c.order.classes.at(Odd("queue")).rank.has_value());
    EXPECT_FALSE(c.order.classes.at(Odd("queue")).mode.has_value());
    EXPECT_EQ(c.order.classes.at("").rank, std::optional<std::int64_t>(kI64Min));
  }
  {
    const auto d = WatchedDecode(EncodePayload(Record(1, 2, 3, ReportInfo{ReportInfo::Type::kOrder, Odd("{}")})));
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(d)) << std::get<std::string>(d);
    const auto& rep = std::get<ReportInfo>(std::get<JournalRecord>(d).body);
    EXPECT_EQ(rep.type, ReportInfo::Type::kOrder);
    EXPECT_EQ(rep.json, Odd("{}"));
  }
}

// ---------------------------------------------------------------- properties

rc::Gen<std::string> GenBytes() {
  return rc::gen::oneOf(
      rc::gen::string<std::string>(),
      rc::gen::container<std::string>(rc::gen::map(rc::gen::arbitrary<std::uint8_t>(), [](std::uint8_t b) {
        return static_cast<char>(b);
      })));
}

template <typename T>
rc::Gen<T> GenNumber() {
  return rc::gen::weightedOneOf<T>({{4, rc::gen::arbitrary<T>()},
                                    {1, rc::gen::element(std::numeric_limits<T>::min(), std::numeric_limits<T>::max(),
                                                         T{0}, static_cast<T>(-1))}});
}

template <typename T>
std::optional<T> MaybeOf(const rc::Gen<T>& g) {
  if (*rc::gen::arbitrary<bool>()) return *g;
  return std::nullopt;
}

graph::Auth GenAuth() { return graph::Auth{*GenBytes(), *GenBytes()}; }
Mode GenMode() { return *rc::gen::element(Mode::kShared, Mode::kExclusive); }

// A random command: its type, then every field at random.
graph::Command GenCommand() {
  static_assert(std::variant_size_v<graph::Command> == 14, "a new command: generate it");
  switch (*rc::gen::inRange(0, 14)) {
    case 0: return graph::Hello{*GenBytes(), *GenBytes(), *GenBytes(), *GenNumber<std::int64_t>(), *GenNumber<std::int32_t>()};
    case 1: return graph::Heartbeat{GenAuth()};
    case 2: return graph::Bye{GenAuth()};
    case 3: {
      graph::Acquire a;
      a.auth = GenAuth();
      a.request_id = *GenNumber<std::uint64_t>();
      a.owner = *GenBytes();
      a.resource = *GenBytes();
      a.mode = GenMode();
      a.ttl_ms = *GenNumber<std::int64_t>();
      a.wait_ms = *GenNumber<std::int64_t>();
      a.site = *GenBytes();
      a.started = MaybeOf(GenNumber<std::int64_t>());
      return a;
    }
    case 4: return graph::Renew{GenAuth(), *GenNumber<std::uint64_t>(), MaybeOf(GenNumber<std::int64_t>())};
    case 5: return graph::Release{GenAuth(), MaybeOf(GenNumber<std::uint64_t>()), *GenBytes(), *GenBytes()};
    case 6: return graph::Hold{GenAuth(), *GenBytes(), *GenBytes(), GenMode(), *GenNumber<std::int64_t>(), *GenBytes()};
    case 7: return graph::Wait{GenAuth(), *GenBytes(), *GenBytes(), GenMode(), *GenBytes()};
    case 8: return graph::Unwait{GenAuth(), *GenBytes(), *GenBytes()};
    case 9: return graph::Revoke{MaybeOf(GenNumber<std::uint64_t>()), *GenBytes()};
    case 10: return graph::Tick{};
    case 11: return graph::SetEpoch{*GenNumber<std::uint32_t>()};
    case 12: {
      graph::Restore c;
      for (int n = *rc::gen::inRange(0, 3); n > 0; --n) {
        c.sessions.push_back(
            graph::RestoredSession{*GenBytes(), *GenBytes(), *GenBytes(), *GenNumber<std::int64_t>(), *GenNumber<std::int32_t>()});
      }
      for (int n = *rc::gen::inRange(0, 3); n > 0; --n) {
        c.leases.push_back(graph::RestoredLease{*GenBytes(), *GenBytes(), *GenBytes(), GenMode(), *GenNumber<std::uint64_t>(),
                                                *GenNumber<std::uint64_t>(), *GenNumber<std::int64_t>(), *GenBytes(),
                                                *GenNumber<std::int64_t>(), *rc::gen::arbitrary<bool>()});
      }
      c.grace_ms = *GenNumber<std::int64_t>();
      c.grant_unclaimed = *rc::gen::arbitrary<bool>();
      return c;
    }
    default: {
      graph::Reclaim c;
      c.auth = GenAuth();
      for (int n = *rc::gen::inRange(0, 4); n > 0; --n) {
        c.items.push_back(graph::ReclaimItem{*GenBytes(), *GenBytes(), GenMode(), *GenNumber<std::uint64_t>()});
      }
      return c;
    }
  }
}

OrderMode GenOrderMode() { return *rc::gen::element(OrderMode::kOff, OrderMode::kWarn, OrderMode::kEnforce); }

graph::Config GenConfig() {
  graph::Config c;
  c.max_name_bytes = *GenNumber<std::uint32_t>();
  c.max_leases_per_session = *GenNumber<std::uint32_t>();
  c.max_waits_per_owner = *GenNumber<std::uint32_t>();
  c.confirm_us = *GenNumber<std::int64_t>();
  c.victim_grace_us = *GenNumber<std::int64_t>();
  c.revoke_grace_us = *GenNumber<std::int64_t>();
  c.max_ttl_ms = *GenNumber<std::int64_t>();
  c.class_separator = *rc::gen::arbitrary<char>();
  const int classes = *rc::gen::inRange(0, 4);
  for (int i = 0; i < classes; ++i) {
    c.classes[*GenBytes()] = graph::ClassConfig{MaybeOf(GenNumber<std::int64_t>()), *rc::gen::arbitrary<bool>()};
  }
  c.victim_policy = *rc::gen::container<std::vector<VictimStep>>(
      rc::gen::element(VictimStep::kLowestPriority, VictimStep::kYoungest, VictimStep::kFewestLeases, VictimStep::kLowestId));
  c.epoch_low_water = *GenNumber<std::uint64_t>();
  c.order.mode = GenOrderMode();
  c.order.separator = *rc::gen::arbitrary<char>();
  c.order.max_learned_edges = *GenNumber<std::uint64_t>();
  const int rules = *rc::gen::inRange(0, 4);
  for (int i = 0; i < rules; ++i) {
    c.order.classes[*GenBytes()] = graph::ClassOrderRule{
        MaybeOf(GenNumber<std::int64_t>()),
        *rc::gen::element(WithinRule::kNone, WithinRule::kAscending, WithinRule::kDescending),
        MaybeOf(rc::gen::element(OrderMode::kOff, OrderMode::kWarn, OrderMode::kEnforce))};
  }
  return c;
}

void CheckRoundTrip(const JournalRecord& r) {
  const std::string payload = EncodePayload(r);
  const auto decoded = DecodePayload(payload);
  if (const auto* err = std::get_if<std::string>(&decoded)) RC_FAIL("refused: " + *err);
  RC_ASSERT(EncodePayload(std::get<JournalRecord>(decoded)) == payload);
  RC_ASSERT(Describe(decoded) == Describe(r));
}

RC_GTEST_PROP(JournalProperty, RandomCommandsReencodeToTheSameBytes, ()) {
  JournalRecord r = Record(*GenNumber<std::uint64_t>(), *GenNumber<std::int64_t>(), *GenNumber<std::int64_t>(), GenCommand());
  RC_TAG(std::get<graph::Command>(r.body).index());
  CheckRoundTrip(r);
}

RC_GTEST_PROP(JournalProperty, RandomBootRecordsReencodeToTheSameBytes, ()) {
  CheckRoundTrip(Record(*GenNumber<std::uint64_t>(), *GenNumber<std::int64_t>(), *GenNumber<std::int64_t>(),
                        Boot(*GenNumber<std::uint32_t>(), *GenNumber<std::uint64_t>(), *GenBytes(), *rc::gen::arbitrary<bool>(), GenConfig())));
}

RC_GTEST_PROP(JournalProperty, RandomReportsReencodeToTheSameBytes, ()) {
  CheckRoundTrip(Record(*GenNumber<std::uint64_t>(), *GenNumber<std::int64_t>(), *GenNumber<std::int64_t>(),
                        ReportInfo{*rc::gen::element(ReportInfo::Type::kDeadlock, ReportInfo::Type::kOrder), *GenBytes()}));
}

// ================================================================ bad payloads

TEST(JournalPayloadTest, EveryProperPrefixIsRefused) {
  for (JournalRecord& r : RichRecords()) {
    if (const auto* c = std::get_if<graph::Command>(&r.body); c && std::holds_alternative<graph::Acquire>(*c) &&
                                                               std::get<graph::Acquire>(*c).resource.size() > 1000) {
      continue;  // the 70 kB resource: its prefixes are the same story, 70 000 times
    }
    const std::string payload = EncodePayload(r);
    for (std::size_t n = 0; n < payload.size(); ++n) {
      const std::string err = DecodeError(std::string_view(payload).substr(0, n));
      EXPECT_FALSE(err.empty() || err[0] == '(') << n << " of " << payload.size() << " bytes: " << err;
    }
  }
}

TEST(JournalPayloadTest, UnknownKindAndByteOrder) {
  const std::string tick = EncodePayload(CommandRecord(graph::Tick{}));
  for (std::uint8_t kind : {0, 5, 255}) {
    EXPECT_EQ(DecodeError(WithByte(tick, 0, kind)), "unknown record kind " + std::to_string(kind));
  }
  EXPECT_EQ(DecodeError(WithByte(tick, 1, 2)), "unknown byte order 2");
  EXPECT_EQ(DecodeError(WithByte(tick, 1, 0xFF)), "unknown byte order 255");
  EXPECT_NE(DecodeError(""), "");
  EXPECT_NE(DecodeError("\x02"), "");
}

TEST(JournalPayloadTest, UnknownCommandTag) {
  const std::string tick = EncodePayload(CommandRecord(graph::Tick{}));
  ASSERT_EQ(tick.back(), '\x0A');  // Tick is command 10 and has no body
  for (std::uint8_t tag : {14, 200, 255}) {
    EXPECT_EQ(DecodeError(WithByte(tick, tick.size() - 1, tag)), "unknown command " + std::to_string(tag));
  }
}

TEST(JournalPayloadTest, EnumsOutOfRange) {
  // Each pair differs in one enum; that byte is then set out of range.
  auto expect_refused = [](const JournalRecord& a, const JournalRecord& b, std::uint8_t bad, const std::string& message) {
    const std::string pa = EncodePayload(a);
    const std::size_t at = OnlyDifference(pa, EncodePayload(b));
    EXPECT_EQ(DecodeError(WithByte(pa, at, bad)), message) << Describe(a);
  };
  graph::Acquire acquire{{"s", "k"}, 1, "o", "r", Mode::kShared, 1, 1, "site", 5};
  graph::Acquire acquire_x = acquire;
  acquire_x.mode = Mode::kExclusive;
  expect_refused(CommandRecord(acquire), CommandRecord(acquire_x), 7, "unknown mode 7");
  expect_refused(CommandRecord(acquire), CommandRecord(acquire_x), 2, "unknown mode 2");
  graph::Hold hold{{"s", "k"}, "o", "r", Mode::kShared, 1, "site"};
  graph::Hold hold_x = hold;
  hold_x.mode = Mode::kExclusive;
  expect_refused(CommandRecord(hold), CommandRecord(hold_x), 7, "unknown mode 7");
  graph::Wait wait{{"s", "k"}, "o", "r", Mode::kShared, "site"};
  graph::Wait wait_x = wait;
  wait_x.mode = Mode::kExclusive;
  expect_refused(CommandRecord(wait), CommandRecord(wait_x), 7, "unknown mode 7");

  graph::Restore restore{{}, {graph::RestoredLease{"s", "o", "r", Mode::kShared, 1, 2, 3, "site", 4, false}}, 5, false};
  graph::Restore restore_x = restore;
  restore_x.leases[0].mode = Mode::kExclusive;
  expect_refused(CommandRecord(restore), CommandRecord(restore_x), 7, "unknown mode 7");
  graph::Restore restore_revoked = restore;
  restore_revoked.leases[0].revoked = true;
  expect_refused(CommandRecord(restore), CommandRecord(restore_revoked), 2, "a flag is 2");
  graph::Reclaim reclaim{{"s", "k"}, {graph::ReclaimItem{"o", "r", Mode::kShared, 9}}};
  graph::Reclaim reclaim_x = reclaim;
  reclaim_x.items[0].mode = Mode::kExclusive;
  expect_refused(CommandRecord(reclaim), CommandRecord(reclaim_x), 7, "unknown mode 7");

  expect_refused(Record(1, 2, 3, Boot(1, 1, "srv", false)), Record(1, 2, 3, Boot(1, 1, "srv", true)), 2,
                 "a flag is 2");
  auto boot = [](auto change) {
    BootInfo b = Boot(1, 1, "srv", false, RichConfig());
    change(b.config);
    return Record(1, 2, 3, b);
  };
  expect_refused(boot([](graph::Config& c) { c.victim_policy[2] = VictimStep::kLowestId; }),
                 boot([](graph::Config& c) { c.victim_policy[2] = VictimStep::kYoungest; }), 9, "unknown victim step 9");
  expect_refused(boot([](graph::Config& c) { c.victim_policy[2] = VictimStep::kLowestId; }),
                 boot([](graph::Config& c) { c.victim_policy[2] = VictimStep::kYoungest; }), 4, "unknown victim step 4");
  expect_refused(boot([](graph::Config& c) { c.order.mode = OrderMode::kWarn; }),
                 boot([](graph::Config& c) { c.order.mode = OrderMode::kOff; }), 5, "unknown order mode 5");
  expect_refused(boot([](graph::Config& c) { c.order.mode = OrderMode::kWarn; }),
                 boot([](graph::Config& c) { c.order.mode = OrderMode::kOff; }), 3, "unknown order mode 3");
  expect_refused(boot([](graph::Config& c) { c.order.classes["db"].mode = OrderMode::kWarn; }),
                 boot([](graph::Config& c) { c.order.classes["db"].mode = OrderMode::kOff; }), 5, "unknown order mode 5");
  expect_refused(boot([](graph::Config& c) { c.order.classes["db"].within = WithinRule::kNone; }),
                 boot([](graph::Config& c) { c.order.classes["db"].within = WithinRule::kAscending; }), 3,
                 "unknown within rule 3");
  // Flags (a bool, an optional's presence) are 0 or 1.
  expect_refused(boot([](graph::Config& c) { c.classes["db"].revoke_immediate = false; }),
                 boot([](graph::Config& c) { c.classes["db"].revoke_immediate = true; }), 2, "a flag is 2");

  const JournalRecord deadlock = Record(1, 2, 3, ReportInfo{ReportInfo::Type::kDeadlock, "{}"});
  const JournalRecord order = Record(1, 2, 3, ReportInfo{ReportInfo::Type::kOrder, "{}"});
  expect_refused(deadlock, order, 0, "unknown report type 0");
  expect_refused(deadlock, order, 3, "unknown report type 3");
}

TEST(JournalPayloadTest, StringLongerThanThePayload) {
  // A report's json is the last field: its u64 length sits 8 + 3 bytes from the end.
  const std::string p = EncodePayload(Record(1, 2, 3, ReportInfo{ReportInfo::Type::kOrder, "abc"}));
  const std::size_t at = p.size() - 3 - 8;
  ASSERT_EQ(WithLe(p, at, 3, 8), p);
  for (std::uint64_t n : {std::uint64_t{4}, std::uint64_t{1} << 20, std::uint64_t{1} << 32, std::uint64_t{1} << 63, kU64Max}) {
    const std::string err = DecodeError(WithLe(p, at, n, 8));
    EXPECT_NE(err.find("claims " + std::to_string(n) + " bytes"), std::string::npos) << err;
  }
  // Shorter than the payload leaves trailing bytes.
  EXPECT_EQ(DecodeError(WithLe(p, at, 2, 8)), "bytes after the record's body");
}

TEST(JournalPayloadTest, HugeCounts) {
  // A boot record with no classes, no victim steps and no order rules ends with
  //   classes:u32 steps:u32 epoch_low_water:u64 order.mode:u8 separator:u8
  //   max_learned_edges:u64 order.classes:u32
  graph::Config c;
  c.victim_policy.clear();
  c.order.mode = OrderMode::kEnforce;
  const std::string p = EncodePayload(Record(1, 2, 3, Boot(1, 1, "srv", false, c)));
  const std::size_t n = p.size();
  ASSERT_EQ(p.substr(n - 4), std::string(4, '\0'));
  ASSERT_EQ(p[n - 14], '\x02');  // order.mode kEnforce: the offsets below are right
  ASSERT_EQ(p.substr(n - 26, 4), std::string(4, '\0'));
  ASSERT_EQ(p.substr(n - 30, 4), std::string(4, '\0'));
  for (std::uint32_t count : {std::uint32_t{1} << 16, kU32Max}) {
    const std::string too_large = "a count of " + std::to_string(count) + " is too large";
    EXPECT_EQ(DecodeError(WithLe(p, n - 4, count, 4)), too_large) << "order classes";
    EXPECT_EQ(DecodeError(WithLe(p, n - 26, count, 4)), too_large) << "victim steps";
    EXPECT_EQ(DecodeError(WithLe(p, n - 30, count, 4)), too_large) << "classes";
  }
  // A count that fits the bytes left but whose elements are not there.
  EXPECT_NE(DecodeError(WithLe(p, n - 26, 20, 4)), "");

  // Restore: sessions:u32 ... leases:u32 ... grace_ms:i64 grant_unclaimed:u8, and
  // Reclaim: auth items:u32 ...; all empty here, so the counts sit at the end.
  const std::string restore = EncodePayload(CommandRecord(graph::Restore{}));
  const std::size_t r = restore.size();
  ASSERT_EQ(restore.substr(r - 17), std::string(17, '\0'));
  const std::string reclaim = EncodePayload(CommandRecord(graph::Reclaim{{"s", "k"}, {}}));
  ASSERT_EQ(reclaim.substr(reclaim.size() - 4), std::string(4, '\0'));
  for (std::uint32_t count : {std::uint32_t{1} << 16, kU32Max}) {
    const std::string too_large = "a count of " + std::to_string(count) + " is too large";
    EXPECT_EQ(DecodeError(WithLe(restore, r - 17, count, 4)), too_large) << "restored sessions";
    EXPECT_EQ(DecodeError(WithLe(restore, r - 13, count, 4)), too_large) << "restored leases";
    EXPECT_EQ(DecodeError(WithLe(reclaim, reclaim.size() - 4, count, 4)), too_large) << "reclaimed items";
  }
}

TEST(JournalPayloadTest, TrailingBytes) {
  for (const JournalRecord& r : RichRecords()) {
    EXPECT_EQ(DecodeError(EncodePayload(r) + '\0'), "bytes after the record's body") << Describe(r).substr(0, 200);
    EXPECT_EQ(DecodeError(EncodePayload(r) + "xyz"), "bytes after the record's body") << Describe(r).substr(0, 200);
  }
}

// Random damage to valid payloads: decoding gives a message or a record, and a record
// it gives re-encodes to a payload that decodes to itself. WatchedDecode bounds the
// largest allocation; a hang would time the test out.
TEST(JournalPayloadTest, MutatedPayloadsNeverCrash) {
  constexpr std::uint64_t kFuzzSeed = 0x10c6'9a9d;
  std::mt19937_64 rng(kFuzzSeed);
  std::vector<std::string> payloads;
  for (const JournalRecord& r : RichRecords()) {
    const std::string p = EncodePayload(r);
    if (p.size() < 4096) payloads.push_back(p);
  }
  int decoded = 0;
  int refused = 0;
  for (std::size_t which = 0; which < payloads.size(); ++which) {
    for (int iteration = 0; iteration < 1500; ++iteration) {
      std::string m = payloads[which];
      const int changes = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < changes; ++k) {
        const std::size_t at = rng() % m.size();
        switch (rng() % 4) {
          case 0: m[at] = static_cast<char>(m[at] ^ (1 << (rng() % 8))); break;
          case 1: m[at] = static_cast<char>(rng()); break;
          case 2: m[at] = static_cast<char>(rng() % 2 ? 0xFF : 0x00); break;
          default: m.resize(m.size() - rng() % std::min<std::size_t>(m.size(), 3)); break;
        }
        if (m.empty()) m = "\x02";
      }
      SCOPED_TRACE("payload " + std::to_string(which) + " iteration " + std::to_string(iteration) + ": " + Hex(m));
      const auto d = WatchedDecode(m);
      if (const auto* err = std::get_if<std::string>(&d)) {
        ASSERT_FALSE(err->empty());
        ++refused;
        continue;
      }
      ++decoded;
      const std::string again = EncodePayload(std::get<JournalRecord>(d));
      const auto d2 = WatchedDecode(again);
      ASSERT_TRUE(std::holds_alternative<JournalRecord>(d2)) << std::get<std::string>(d2);
      ASSERT_EQ(EncodePayload(std::get<JournalRecord>(d2)), again);
    }
    if (HasFatalFailure()) return;
  }
  // Both outcomes happen, or the mutations are not reaching the interesting places.
  EXPECT_GT(decoded, 100);
  EXPECT_GT(refused, 100);
}

// ================================================================ ScanSegment

TEST(ScanSegmentTest, CleanSegmentReadsBack) {
  TempDir dir;
  const Written w = WriteSegment(dir, "0001", SmallRecords());
  EXPECT_EQ(FileSize(w.path), w.size);
  const SegmentScan scan = Scan(w.path);
  EXPECT_EQ(scan.problem, "");
  EXPECT_FALSE(scan.torn());
  EXPECT_EQ(scan.good_bytes, w.size);
  EXPECT_EQ(scan.file_bytes, w.size);
  EXPECT_EQ(DescribeAll(scan.records), DescribeAll(w.records));

  // Just the magic: a clean, empty segment.
  WriteFile(dir.File("empty.lgj"), kJournalMagic);
  const SegmentScan empty = Scan(dir.File("empty.lgj"));
  EXPECT_EQ(empty.problem, "");
  EXPECT_TRUE(empty.records.empty());
  EXPECT_EQ(empty.good_bytes, kJournalMagic.size());
}

TEST(ScanSegmentTest, RichRecordsReadBack) {
  TempDir dir;
  const Written w = WriteSegment(dir, "rich", RichRecords());
  const SegmentScan scan = Scan(w.path);
  EXPECT_EQ(scan.problem, "");
  EXPECT_EQ(scan.good_bytes, FileSize(w.path));
  EXPECT_EQ(DescribeAll(scan.records), DescribeAll(w.records));
}

TEST(ScanSegmentTest, CutAnywhereInTheLastRecord) {
  TempDir dir;
  const Written w = WriteSegment(dir, "0001", SmallRecords());
  const std::string bytes = ReadFile(w.path);
  const std::uint64_t last = w.offsets.back();
  const std::vector<JournalRecord> before(w.records.begin(), w.records.end() - 1);
  const std::string cut = dir.File("cut.lgj");
  for (std::uint64_t n = last + 1; n < bytes.size(); ++n) {
    SCOPED_TRACE("cut at " + std::to_string(n) + " of " + std::to_string(bytes.size()));
    WriteFile(cut, std::string_view(bytes).substr(0, n));
    const SegmentScan scan = Scan(cut);
    EXPECT_TRUE(scan.torn());
    EXPECT_NE(scan.problem.find(cut + " at byte " + std::to_string(last) + ": "), std::string::npos) << scan.problem;
    EXPECT_NE(scan.problem.find(n - last < kRecordHeaderBytes ? "torn record header" : "torn record ("), std::string::npos)
        << scan.problem;
    EXPECT_NE(scan.problem.find(std::to_string(n - last) + " bytes after the last good record"), std::string::npos)
        << scan.problem;
    EXPECT_EQ(scan.good_bytes, last);
    EXPECT_EQ(scan.file_bytes, n);
    EXPECT_EQ(DescribeAll(scan.records), DescribeAll(before));
  }
  // Cut exactly between records: clean, one fewer record.
  WriteFile(cut, std::string_view(bytes).substr(0, last));
  const SegmentScan clean = Scan(cut);
  EXPECT_EQ(clean.problem, "");
  EXPECT_EQ(clean.records.size(), before.size());
}

TEST(ScanSegmentTest, AnyFlippedByteOfPayloadOrCrcIsCaught) {
  TempDir dir;
  const Written w = WriteSegment(dir, "0001", SmallRecords());
  const std::string bytes = ReadFile(w.path);
  const std::string bad = dir.File("bad.lgj");
  // The last record, and one in the middle (what follows it is lost with it).
  for (std::size_t index : {w.records.size() - 1, std::size_t{2}}) {
    const std::uint64_t start = w.offsets[index];
    const std::uint64_t end = index + 1 < w.offsets.size() ? w.offsets[index + 1] : w.size;
    for (std::uint64_t at = start + 4; at < end; ++at) {  // crc and payload
      for (std::uint8_t mask : {0x01, 0x80, 0xFF}) {
        SCOPED_TRACE("record " + std::to_string(index) + " byte " + std::to_string(at) + " ^ " + std::to_string(mask));
        std::string damaged = bytes;
        damaged[at] = static_cast<char>(damaged[at] ^ mask);
        WriteFile(bad, damaged);
        const SegmentScan scan = Scan(bad);
        EXPECT_EQ(scan.problem.substr(0, scan.problem.find(';')),
                  bad + " at byte " + std::to_string(start) + ": checksum mismatch");
        EXPECT_EQ(scan.good_bytes, start);
        EXPECT_EQ(scan.records.size(), index);
        if (::testing::Test::HasFailure()) return;
      }
    }
    // A damaged length ends the segment there too (torn, impossible or a mismatch).
    for (std::uint64_t at = start; at < start + 4; ++at) {
      std::string damaged = bytes;
      damaged[at] = static_cast<char>(damaged[at] ^ 0x10);
      WriteFile(bad, damaged);
      const SegmentScan scan = Scan(bad);
      EXPECT_TRUE(scan.torn()) << at;
      EXPECT_EQ(scan.good_bytes, start) << at << ": " << scan.problem;
      EXPECT_EQ(scan.records.size(), index) << at;
    }
  }
}

TEST(ScanSegmentTest, ImpossibleLengthsAndUndecodableRecords) {
  TempDir dir;
  const std::string first = FrameRecord(SmallRecords()[0]);
  const std::uint64_t at = kJournalMagic.size() + first.size();
  const std::string path = dir.File("x.lgj");
  auto scan_with = [&](const std::string& tail) {
    WriteFile(path, std::string(kJournalMagic) + first + tail);
    SegmentScan scan = Scan(path);
    EXPECT_EQ(scan.records.size(), 1u);
    EXPECT_EQ(scan.good_bytes, at);
    EXPECT_EQ(scan.file_bytes, at + tail.size());
    return scan.problem;
  };
  const std::string where = path + " at byte " + std::to_string(at) + ": ";
  EXPECT_EQ(scan_with(Le32(0) + Le32(0) + "xxxx"), where + "impossible record length 0; 12 bytes after the last good record");
  EXPECT_EQ(scan_with(Le32(kMaxRecordBytes + 1) + Le32(0) + "xxxx"),
            where + "impossible record length " + std::to_string(kMaxRecordBytes + 1) +
                "; 12 bytes after the last good record");
  EXPECT_EQ(scan_with(Le32(kU32Max) + Le32(0)), where + "impossible record length 4294967295; 8 bytes after the last good record");
  // The largest possible length is only torn.
  EXPECT_NE(scan_with(Le32(kMaxRecordBytes) + Le32(0) + "xxxx").find("torn record ("), std::string::npos);
  // A good checksum over a payload that does not decode.
  const std::string junk = "\x09\x01garbage";
  EXPECT_EQ(scan_with(Le32(junk.size()) + Le32(Crc32c(junk)) + junk),
            where + "undecodable record: unknown record kind 9; " + std::to_string(8 + junk.size()) +
                " bytes after the last good record");
}

TEST(ScanSegmentTest, NotASegment) {
  TempDir dir;
  const std::string missing = dir.File("missing.lgj");
  const std::string err = ScanError(missing);
  EXPECT_NE(err.find("cannot open " + missing), std::string::npos) << err;

  const std::string path = dir.File("x.lgj");
  for (std::string content : {std::string(), std::string("LGJ"), std::string("LGJRNL0"), std::string("LGJRNL02"),
                              std::string("lgjrnl01") + FrameRecord(SmallRecords()[0])}) {
    WriteFile(path, content);
    EXPECT_EQ(ScanError(path), path + " is not a lockgraph journal segment (no LGJRNL01 magic)") << Quote(content);
  }
}

// The writer journals commands without their secrets; a scan puts back the secret of
// the session's latest hello earlier in the segment.
TEST(ScanSegmentTest, SecretsComeBackFromTheHello) {
  for (const graph::Command& c : RichCommands()) {
    const graph::Command stripped = JournalSecretless(c);
    std::visit(
        [&](const auto& x) {
          if constexpr (requires { x.auth; }) {
            EXPECT_EQ(x.auth.secret, "") << Describe(c);
            auto with_secret = x;
            with_secret.auth.secret = std::get<std::decay_t<decltype(x)>>(c).auth.secret;
            EXPECT_EQ(Describe(with_secret), Describe(c)) << "only the secret goes";
          } else {
            EXPECT_EQ(Describe(stripped), Describe(c)) << "no auth, nothing to strip";
          }
        },
        stripped);
  }
  EXPECT_EQ(std::get<graph::Hello>(JournalSecretless(graph::Hello{"s", "k", "", 1, 0})).secret, "k");

  TempDir dir;
  std::vector<JournalRecord> records;
  records.push_back(CommandRecord(graph::Hello{"s1", "k1", "", 1, 0}));
  records.push_back(CommandRecord(JournalSecretless(graph::Acquire{{"s1", "k1"}, 1, "o", "r", Mode::kExclusive, 1, -1, "", std::nullopt})));
  records.push_back(CommandRecord(JournalSecretless(graph::Heartbeat{{"s2", "k2"}})));  // no hello for s2 here
  records.push_back(CommandRecord(graph::Hello{"s1", Odd("k9"), "", 1, 0}));
  records.push_back(CommandRecord(JournalSecretless(graph::Release{{"s1", "k1"}, 5, "o", "r"})));
  records.push_back(CommandRecord(graph::Bye{{"s1", "explicit"}}));  // a secret written out stays
  const Written w = WriteSegment(dir, "0001", records);
  const SegmentScan scan = Scan(w.path);
  ASSERT_EQ(scan.problem, "");
  ASSERT_EQ(scan.records.size(), records.size());
  auto command = [&](std::size_t i) -> const graph::Command& { return std::get<graph::Command>(scan.records[i].body); };
  EXPECT_EQ(std::get<graph::Acquire>(command(1)).auth.secret, "k1");
  EXPECT_EQ(std::get<graph::Heartbeat>(command(2)).auth.secret, "");
  EXPECT_EQ(std::get<graph::Release>(command(4)).auth.secret, Odd("k9"));
  EXPECT_EQ(std::get<graph::Bye>(command(5)).auth.secret, "explicit");
}

TEST(ScanSegmentTest, TruncateToTheGoodPartRescansClean) {
  TempDir dir;
  const Written w = WriteSegment(dir, "0001", SmallRecords());
  std::string bytes = ReadFile(w.path);
  bytes[w.offsets[3] + 10] ^= 0x20;  // record 3 is damaged: records 0..2 stay
  bytes += "torn tail";
  WriteFile(w.path, bytes);
  const SegmentScan torn = Scan(w.path);
  ASSERT_TRUE(torn.torn());
  ASSERT_EQ(torn.good_bytes, w.offsets[3]);

  EXPECT_EQ(TruncateSegment(w.path, torn.good_bytes), "");
  EXPECT_EQ(FileSize(w.path), w.offsets[3]);
  EXPECT_EQ(ReadFile(w.path), bytes.substr(0, w.offsets[3]));
  const SegmentScan clean = Scan(w.path);
  EXPECT_EQ(clean.problem, "");
  EXPECT_EQ(clean.good_bytes, w.offsets[3]);
  EXPECT_EQ(clean.file_bytes, w.offsets[3]);
  EXPECT_EQ(DescribeAll(clean.records), DescribeAll({w.records.begin(), w.records.begin() + 3}));

  const std::string missing = dir.File("missing.lgj");
  const std::string err = TruncateSegment(missing, 8);
  EXPECT_NE(err.find(missing), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(missing));
}

// ================================================================ JournalWriter

TEST(JournalWriterTest, SegmentIsPrivate) {
  TempDir dir;
  JournalWriter w;
  const mode_t old_umask = ::umask(0);  // 0600 must come from the writer, not the umask
  const std::string err = w.Open(dir.path(), "0001");
  ::umask(old_umask);
  ASSERT_EQ(err, "");
  EXPECT_TRUE(w.is_open());
  EXPECT_EQ(w.path(), dir.path() + "/journal/0001.lgj");
  struct stat st {};
  ASSERT_EQ(::stat(w.path().c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(ReadFile(w.path()), kJournalMagic);  // written at Open
}

TEST(JournalWriterTest, ASegmentIsNeverReopened) {
  TempDir dir;
  JournalWriter first;
  ASSERT_EQ(first.Open(dir.path(), "0001"), "");
  first.Append(SmallRecords()[1]);
  ASSERT_EQ(first.Sync(), "");
  const std::string before = ReadFile(first.path());

  JournalWriter second;
  const std::string err = second.Open(dir.path(), "0001");
  EXPECT_NE(err.find(dir.path() + "/journal/0001.lgj"), std::string::npos) << err;
  EXPECT_FALSE(second.is_open());
  second.Append(SmallRecords()[2]);
  EXPECT_EQ(second.Sync(), "");
  EXPECT_EQ(ReadFile(first.path()), before);  // untouched

  // A data directory whose journal/ cannot be made.
  WriteFile(dir.File("file"), "x");
  JournalWriter third;
  const std::string err3 = third.Open(dir.File("file"), "0001");
  EXPECT_NE(err3.find("cannot create " + dir.File("file") + "/journal"), std::string::npos) << err3;
  EXPECT_FALSE(third.is_open());
}

TEST(JournalWriterTest, CountersAndDirtiness) {
  TempDir dir;
  JournalWriter w;
  ASSERT_EQ(w.Open(dir.path(), "0001"), "");
  EXPECT_EQ(w.bytes(), kJournalMagic.size());
  EXPECT_EQ(w.syncs(), 1u);  // the magic is synced at Open
  EXPECT_FALSE(w.unsynced());

  const JournalRecord r = SmallRecords()[2];
  const std::uint64_t framed = FrameRecord(r).size();
  w.Append(r);
  w.Append(r);
  EXPECT_EQ(w.bytes(), kJournalMagic.size()) << "Append only buffers";
  EXPECT_EQ(FileSize(w.path()), kJournalMagic.size());
  EXPECT_TRUE(w.unsynced());

  EXPECT_EQ(w.Write(), "");
  EXPECT_EQ(w.bytes(), kJournalMagic.size() + 2 * framed);
  EXPECT_EQ(FileSize(w.path()), w.bytes());
  EXPECT_EQ(w.syncs(), 1u) << "Write does not fsync";
  EXPECT_TRUE(w.unsynced());

  EXPECT_EQ(w.Sync(), "");
  EXPECT_EQ(w.syncs(), 2u);
  EXPECT_FALSE(w.unsynced());
  EXPECT_EQ(w.Sync(), "");
  EXPECT_EQ(w.Write(), "");
  EXPECT_EQ(w.syncs(), 2u) << "nothing new, no fsync";

  w.Append(r);
  EXPECT_EQ(w.Sync(), "") << "Sync writes first";
  EXPECT_EQ(w.syncs(), 3u);
  EXPECT_EQ(w.bytes(), kJournalMagic.size() + 3 * framed);
  EXPECT_EQ(FileSize(w.path()), w.bytes());
  EXPECT_EQ(Scan(w.path()).records.size(), 3u);
}

TEST(JournalWriterTest, NeverOpenedDoesNothing) {
  JournalWriter w;
  EXPECT_FALSE(w.is_open());
  w.Append(SmallRecords()[1]);
  EXPECT_FALSE(w.unsynced());
  EXPECT_EQ(w.Write(), "");
  EXPECT_EQ(w.Sync(), "");
  EXPECT_EQ(w.bytes(), 0u);
  EXPECT_EQ(w.syncs(), 0u);
}

TEST(JournalWriterTest, DestructorSyncsWhatWasAppended) {
  TempDir dir;
  std::string path;
  {
    JournalWriter w;
    ASSERT_EQ(w.Open(dir.path(), "0001"), "");
    path = w.path();
    for (const JournalRecord& r : SmallRecords()) w.Append(r);
  }
  const SegmentScan scan = Scan(path);
  EXPECT_EQ(scan.problem, "");
  EXPECT_EQ(DescribeAll(scan.records), DescribeAll(SmallRecords()));
}

// The file size limit makes write(2) stop part-way through the buffer, then fail with
// EFBIG: what reached the file is counted, the rest stays buffered for the next try.
TEST(JournalWriterTest, WriteThatFailsHalfWayResumes) {
  TempDir dir;
  JournalWriter w;
  ASSERT_EQ(w.Open(dir.path(), "0001"), "");
  const JournalRecord r = Record(1, 2, 3, ReportInfo{ReportInfo::Type::kOrder, std::string(200, 'j')});
  w.Append(r);
  const std::uint64_t limit = kJournalMagic.size() + 50;

  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  if (old_limit.rlim_cur != RLIM_INFINITY && old_limit.rlim_cur < 1u << 20) GTEST_SKIP() << "RLIMIT_FSIZE is already low";
  rlimit low = old_limit;
  low.rlim_cur = limit;
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  const int set = ::setrlimit(RLIMIT_FSIZE, &low);
  const std::string err = set == 0 ? w.Write() : "";
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_EQ(set, 0) << std::strerror(errno);

  EXPECT_EQ(err, "cannot write " + w.path() + ": " + std::strerror(EFBIG));
  EXPECT_EQ(FileSize(w.path()), limit);
  EXPECT_EQ(w.bytes(), limit) << "bytes() counts what reached the file";
  EXPECT_TRUE(w.unsynced());
  const SegmentScan half = Scan(w.path());
  EXPECT_TRUE(half.torn());
  EXPECT_EQ(half.good_bytes, kJournalMagic.size());

  EXPECT_EQ(w.Sync(), "");
  EXPECT_EQ(w.bytes(), kJournalMagic.size() + FrameRecord(r).size());
  EXPECT_EQ(FileSize(w.path()), w.bytes());
  const SegmentScan whole = Scan(w.path());
  EXPECT_EQ(whole.problem, "");
  EXPECT_EQ(DescribeAll(whole.records), DescribeAll({r}));
}

TEST(JournalWriterTest, ListSegmentsOldestFirstAndOnlySegments) {
  TempDir dir;
  EXPECT_TRUE(ListSegments(dir.path()).empty()) << "no journal directory yet";
  {
    JournalWriter b, a, c;
    ASSERT_EQ(b.Open(dir.path(), "20240102-000002"), "");
    ASSERT_EQ(a.Open(dir.path(), "20240102-000001"), "");
    ASSERT_EQ(c.Open(dir.path(), "20240103-000000"), "");
  }
  const std::string j = dir.path() + "/journal/";
  WriteFile(j + "notes.txt", "x");
  WriteFile(j + "20240101.lgj.tmp", "x");
  WriteFile(j + "20240101.lgjx", "x");
  WriteFile(dir.File("stray.lgj"), "x");  // not in journal/
  EXPECT_EQ(ListSegments(dir.path()),
            (std::vector<std::string>{j + "20240102-000001.lgj", j + "20240102-000002.lgj", j + "20240103-000000.lgj"}));
  EXPECT_TRUE(ListSegments(dir.File("nowhere")).empty());
}

TEST(JournalWriterTest, FsyncPolicyNames) {
  for (FsyncPolicy p : {FsyncPolicy::kAlways, FsyncPolicy::kInterval, FsyncPolicy::kNever}) {
    EXPECT_EQ(ParseFsyncPolicy(FsyncPolicyName(p)), p);
  }
  EXPECT_EQ(FsyncPolicyName(FsyncPolicy::kAlways), "always");
  EXPECT_EQ(FsyncPolicyName(FsyncPolicy::kInterval), "interval");
  EXPECT_EQ(FsyncPolicyName(FsyncPolicy::kNever), "never");
  EXPECT_FALSE(ParseFsyncPolicy("Always").has_value());
  EXPECT_FALSE(ParseFsyncPolicy("").has_value());
}

// The payload is cereal's portable binary archive after the kind byte: what the
// journal writes by hand is byte for byte what cereal writes for the same values.
TEST(JournalPayloadTest, BytesAreCerealsPortableBinary) {
  JournalRecord r;
  r.boot = 0x0102030405060708ULL;
  r.wall_us = -5;
  r.now_us = 1'795'700'000'000'000;
  graph::Acquire a;
  a.auth = {"s1", ""};
  a.request_id = 42;
  a.owner = "tx\0one";
  a.resource = "account:7";
  a.mode = graph::Mode::kShared;
  a.ttl_ms = 30'000;
  a.wait_ms = -1;
  a.site = "";
  a.started = 77;
  r.body = graph::Command{a};
  std::ostringstream expected;
  expected.put(static_cast<char>(RecordKind::kCommand));
  {
    cereal::PortableBinaryOutputArchive ar(expected, cereal::PortableBinaryOutputArchive::Options::LittleEndian());
    auto str = [&](const std::string& v) {
      ar(static_cast<std::uint64_t>(v.size()));
      ar(cereal::binary_data(v.data(), v.size()));
    };
    ar(r.boot, r.wall_us, r.now_us, std::uint8_t{3});
    str(a.auth.session);
    str(a.auth.secret);
    ar(a.request_id);
    str(a.owner);
    str(a.resource);
    ar(std::uint8_t{0}, a.ttl_ms, a.wait_ms);
    str(a.site);
    ar(std::uint8_t{1}, std::int64_t{77});
  }
  EXPECT_EQ(EncodePayload(r), expected.str());
}

// ================================================================ snapshot parts

// Snapshot: part u32, parts u32, then the bytes as a string (u64 size, bytes).
TEST(JournalPayloadTest, SnapshotByteByByte) {
  const JournalRecord r = Record(0x0102030405060708, -1, 2, SnapshotPart{1, 3, std::string("a\0b", 3)});
  const std::string expected = std::string("\x04\x01", 2) + "\x08\x07\x06\x05\x04\x03\x02\x01" +
                               std::string(8, '\xFF') + std::string("\x02\0\0\0\0\0\0\0", 8) +
                               std::string("\x01\0\0\0", 4) + std::string("\x03\0\0\0", 4) +
                               std::string("\x03\0\0\0\0\0\0\0", 8) + std::string("a\0b", 3);
  ASSERT_EQ(expected.size(), 45u);
  const std::string payload = EncodePayload(r);
  EXPECT_EQ(Hex(payload), Hex(expected));
  EXPECT_EQ(Hex(FrameRecord(r)), Hex(Le32(45) + Le32(Crc32c(expected)) + expected));
  EXPECT_EQ(Describe(WatchedDecode(expected)), Describe(r));

  // As a big-endian host's cereal would write it.
  const std::string big = std::string("\x04\x00", 2) + "\x01\x02\x03\x04\x05\x06\x07\x08" + std::string(8, '\xFF') +
                          std::string("\0\0\0\0\0\0\0\x02", 8) + std::string("\0\0\0\x01", 4) +
                          std::string("\0\0\0\x03", 4) + std::string("\0\0\0\0\0\0\0\x03", 8) + std::string("a\0b", 3);
  EXPECT_EQ(Describe(WatchedDecode(big)), Describe(r));

  // And what cereal itself writes for the same values.
  std::ostringstream cereal_bytes;
  cereal_bytes.put(static_cast<char>(RecordKind::kSnapshot));
  {
    cereal::PortableBinaryOutputArchive ar(cereal_bytes, cereal::PortableBinaryOutputArchive::Options::LittleEndian());
    const auto& part = std::get<SnapshotPart>(r.body);
    ar(r.boot, r.wall_us, r.now_us, part.part, part.parts, static_cast<std::uint64_t>(part.bytes.size()));
    ar(cereal::binary_data(part.bytes.data(), part.bytes.size()));
  }
  EXPECT_EQ(Hex(payload), Hex(cereal_bytes.str()));
}

TEST(JournalPayloadTest, SnapshotPartsRoundTrip) {
  std::string binary;
  for (int i = 0; i < 512; ++i) binary += static_cast<char>(i);  // two NULs, every byte value twice
  std::string megabyte(std::size_t{1} << 20, '\0');
  std::mt19937_64 rng(0x5a17);
  for (char& ch : megabyte) ch = static_cast<char>(rng());
  const std::vector<SnapshotPart> parts = {SnapshotPart{0, 1, ""}, SnapshotPart{0, 2, binary},
                                           SnapshotPart{1, 2, std::string(7, '\0')}, SnapshotPart{6, 7, megabyte},
                                           SnapshotPart{kU32Max - 1, kU32Max, binary}};
  for (const SnapshotPart& p : parts) {
    SCOPED_TRACE("part " + std::to_string(p.part) + " of " + std::to_string(p.parts) + ", " +
                 std::to_string(p.bytes.size()) + " bytes");
    const JournalRecord r = Record(kU64Max - 3, -17, kI64Max, p);
    const std::string payload = EncodePayload(r);
    EXPECT_EQ(payload.size(), 2 + 3 * 8 + 4 + 4 + 8 + p.bytes.size());
    const auto d = WatchedDecode(payload);
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(d)) << std::get<std::string>(d);
    const JournalRecord& got = std::get<JournalRecord>(d);
    EXPECT_EQ(got.kind(), RecordKind::kSnapshot);
    EXPECT_EQ(got.boot, kU64Max - 3);
    EXPECT_EQ(got.wall_us, -17);
    EXPECT_EQ(got.now_us, kI64Max);
    const auto& part = std::get<SnapshotPart>(got.body);
    EXPECT_EQ(part.part, p.part);
    EXPECT_EQ(part.parts, p.parts);
    EXPECT_EQ(part.bytes.size(), p.bytes.size());
    EXPECT_TRUE(part.bytes == p.bytes) << "the bytes differ";
    EXPECT_TRUE(EncodePayload(got) == payload) << "re-encoding differs";
  }
  // The largest part the daemon writes fits in a record.
  const std::string largest = EncodePayload(Record(kU64Max, kI64Min, kI64Max, SnapshotPart{0, 1, std::string(kSnapshotPartBytes, 'i')}));
  EXPECT_LE(largest.size(), kMaxRecordBytes);
}

TEST(JournalPayloadTest, EveryPrefixOfASnapshotIsRefused) {
  std::string bytes(300, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  for (const SnapshotPart& p : {SnapshotPart{0, 1, ""}, SnapshotPart{2, 5, bytes}}) {
    const std::string payload = EncodePayload(Record(5, 6, 7, p));
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(WatchedDecode(payload)));
    for (std::size_t n = 0; n < payload.size(); ++n) {
      const std::string err = DecodeError(std::string_view(payload).substr(0, n));
      EXPECT_FALSE(err.empty() || err[0] == '(') << n << " of " << payload.size() << " bytes: " << err;
    }
  }
}

TEST(JournalPayloadTest, SnapshotPartOutOfRange) {
  const std::string p = EncodePayload(Record(1, 2, 3, SnapshotPart{0, 1, "xy"}));
  constexpr std::size_t kPartAt = 2 + 3 * 8;
  constexpr std::size_t kPartsAt = kPartAt + 4;
  constexpr std::size_t kSizeAt = kPartsAt + 4;
  ASSERT_EQ(Hex(p.substr(kPartAt)), Hex(Le32(0) + Le32(1) + std::string("\x02\0\0\0\0\0\0\0", 8) + "xy"));
  auto with = [&](std::uint32_t part, std::uint32_t parts) { return WithLe(WithLe(p, kPartAt, part, 4), kPartsAt, parts, 4); };
  const std::pair<std::uint32_t, std::uint32_t> bad[] = {{0, 0}, {1, 0}, {kU32Max, 0}, {1, 1}, {3, 3}, {5, 3}, {kU32Max, kU32Max}};
  for (const auto& [part, parts] : bad) {
    EXPECT_EQ(DecodeError(with(part, parts)), "snapshot part " + std::to_string(part) + " of " + std::to_string(parts));
  }
  // Nothing stops encoding such a part; reading it back refuses it.
  EXPECT_EQ(DecodeError(EncodePayload(Record(1, 2, 3, SnapshotPart{3, 3, "xy"}))), "snapshot part 3 of 3");
  EXPECT_EQ(DecodeError(EncodePayload(Record(1, 2, 3, SnapshotPart{0, 0, ""}))), "snapshot part 0 of 0");
  // The edges of the range are fine.
  const std::pair<std::uint32_t, std::uint32_t> good[] = {{0, 1}, {0, kU32Max}, {kU32Max - 1, kU32Max}, {4, 5}};
  for (const auto& [part, parts] : good) {
    const auto d = WatchedDecode(with(part, parts));
    ASSERT_TRUE(std::holds_alternative<JournalRecord>(d)) << part << " of " << parts << ": " << std::get<std::string>(d);
    EXPECT_EQ(std::get<SnapshotPart>(std::get<JournalRecord>(d).body).part, part);
    EXPECT_EQ(std::get<SnapshotPart>(std::get<JournalRecord>(d).body).parts, parts);
  }
  // The bytes' size is checked against the record like any string's.
  for (std::uint64_t n : {std::uint64_t{3}, std::uint64_t{1} << 40, kU64Max}) {
    const std::string err = DecodeError(WithLe(p, kSizeAt, n, 8));
    EXPECT_NE(err.find("claims " + std::to_string(n) + " bytes"), std::string::npos) << err;
  }
  EXPECT_EQ(DecodeError(WithLe(p, kSizeAt, 1, 8)), "bytes after the record's body");
}

RC_GTEST_PROP(JournalProperty, RandomSnapshotPartsReencodeToTheSameBytes, ()) {
  const std::uint32_t parts = *rc::gen::suchThat(GenNumber<std::uint32_t>(), [](std::uint32_t n) { return n > 0; });
  const std::uint32_t part =
      *rc::gen::oneOf(rc::gen::inRange<std::uint32_t>(0, parts), rc::gen::just(parts - 1), rc::gen::just(std::uint32_t{0}));
  CheckRoundTrip(Record(*GenNumber<std::uint64_t>(), *GenNumber<std::int64_t>(), *GenNumber<std::int64_t>(),
                        SnapshotPart{part, parts, *GenBytes()}));
}

RC_GTEST_PROP(JournalProperty, SnapshotPartsOutOfRangeAreRefused, ()) {
  const std::uint32_t part = *GenNumber<std::uint32_t>();
  const auto parts = static_cast<std::uint32_t>(*rc::gen::inRange<std::uint64_t>(0, std::uint64_t{part} + 1));  // <= part
  const auto decoded = DecodePayload(EncodePayload(Record(1, 2, 3, SnapshotPart{part, parts, *GenBytes()})));
  RC_ASSERT(std::holds_alternative<std::string>(decoded));
  RC_ASSERT(std::get<std::string>(decoded) == "snapshot part " + std::to_string(part) + " of " + std::to_string(parts));
}

TEST(ScanSegmentTest, SnapshotPartsReadBack) {
  TempDir dir;
  std::string image(std::size_t{3} << 20, '\0');
  std::mt19937_64 rng(0x1a6e);
  for (char& ch : image) ch = static_cast<char>(rng());
  std::vector<JournalRecord> records;
  records.push_back(Record(9, 100, 1, Boot(3, 1, "lockgraphd test", true)));
  constexpr std::size_t kEach = std::size_t{1} << 20;
  for (std::uint32_t i = 0; i < 3; ++i) records.push_back(Record(9, 101 + i, 2, SnapshotPart{i, 3, image.substr(i * kEach, kEach)}));
  records.push_back(Record(9, 104, 3, graph::Tick{}));
  const Written w = WriteSegment(dir, "00000003_000001", records);
  const SegmentScan scan = Scan(w.path);
  EXPECT_EQ(scan.problem, "");
  EXPECT_EQ(scan.good_bytes, w.size);
  ASSERT_EQ(scan.records.size(), records.size());
  std::string joined;
  for (std::size_t i = 1; i <= 3; ++i) {
    const auto& part = std::get<SnapshotPart>(scan.records[i].body);
    EXPECT_EQ(part.part, i - 1);
    EXPECT_EQ(part.parts, 3u);
    joined += part.bytes;
  }
  EXPECT_TRUE(joined == image) << "the image does not come back whole";
  EXPECT_EQ(scan.records.back().kind(), RecordKind::kCommand);
}

// The writer's own split: parts of at most kSnapshotPartBytes, stamped like the
// header, in order; an empty image is one empty part.
TEST(ScanSegmentTest, AppendSnapshotSplitsAnImageIntoParts) {
  for (const std::size_t size : {std::size_t{0}, kSnapshotPartBytes, 2 * kSnapshotPartBytes + 5}) {
    TempDir dir;
    std::string image(size, '\0');
    for (std::size_t i = 0; i < size; ++i) image[i] = static_cast<char>(i * 131 + (i >> 20));
    JournalWriter w;
    ASSERT_EQ(w.Open(dir.path(), "00000003_000001"), "");
    w.Append(Record(9, 100, 1, Boot(3, 1, "lockgraphd test", true)));
    ASSERT_EQ(w.AppendSnapshot(Record(9, 101, 2, graph::Tick{}), image), "");
    ASSERT_EQ(w.Sync(), "");
    const SegmentScan scan = Scan(w.path());
    EXPECT_EQ(scan.problem, "");
    const std::size_t parts = size == 0 ? 1 : (size + kSnapshotPartBytes - 1) / kSnapshotPartBytes;
    ASSERT_EQ(scan.records.size(), 1 + parts) << size;
    std::string joined;
    for (std::size_t i = 0; i < parts; ++i) {
      const JournalRecord& rec = scan.records[1 + i];
      EXPECT_EQ(rec.boot, 9u);
      EXPECT_EQ(rec.wall_us, 101);
      const auto& part = std::get<SnapshotPart>(rec.body);
      EXPECT_EQ(part.part, i);
      EXPECT_EQ(part.parts, parts);
      EXPECT_LE(part.bytes.size(), kSnapshotPartBytes);
      joined += part.bytes;
    }
    EXPECT_TRUE(joined == image) << size << ": the image does not come back whole";
  }
}

// The daemon's path: AppendCommand writes, without building a record, exactly the
// bytes of Append(record) with the command's secret taken out.
TEST(JournalWriterTest, AppendCommandWritesTheSecretlessRecord) {
  TempDir a, b;
  JournalWriter direct, via_record;
  ASSERT_EQ(direct.Open(a.path(), "00000001"), "");
  ASSERT_EQ(via_record.Open(b.path(), "00000001"), "");
  std::size_t n = 0;
  for (const graph::Command& c : RichCommands()) {
    const auto wall = static_cast<graph::TimeUs>(1'000 + n), now = static_cast<graph::TimeUs>(7 * n);
    direct.AppendCommand(0xfeed + n, wall, now, c);
    via_record.Append(Record(0xfeed + n, wall, now, JournalSecretless(c)));
    ++n;
  }
  ASSERT_EQ(direct.Sync(), "");
  ASSERT_EQ(via_record.Sync(), "");
  const std::string bytes = ReadFile(direct.path());
  EXPECT_EQ(Hex(bytes), Hex(ReadFile(via_record.path())));
  // And a secret given to AppendCommand is not in the file (the hello's excepted).
  const SegmentScan scan = Scan(direct.path());
  ASSERT_EQ(scan.records.size(), n);
  for (const JournalRecord& r : scan.records) {
    std::visit(
        [](const auto& c) {
          if constexpr (requires { c.auth; }) {
            EXPECT_EQ(c.auth.secret, "");
          }
        },
        std::get<graph::Command>(r.body));
  }
}

// ================================================================ SnapshotLoader

// The cores' configuration: the default. (One object: GCC 12 warns, wrongly, about a
// braced temporary's map.)
const graph::Config& CoreConfig() {
  static const graph::Config config;
  return config;
}

// A coordinator with two sessions, a lease each, and an acquire queued behind s1's.
void BuildState(graph::Coordinator& core) {
  core.Apply(graph::Hello{"s1", "k1", "client one", 60'000, 0}, 1'000);
  core.Apply(graph::Hello{"s2", "k2", "client two", 60'000, 5}, 1'000);
  core.Apply(graph::Acquire{{"s1", "k1"}, 1, "o1", "db:1", Mode::kExclusive, 30'000, -1, "a.cc:1", std::nullopt}, 2'000);
  core.Apply(graph::Acquire{{"s2", "k2"}, 2, "o2", "db:2", Mode::kShared, 30'000, -1, "b.cc:2", std::nullopt}, 3'000);
  core.Apply(graph::Acquire{{"s2", "k2"}, 3, "o2", "db:1", Mode::kExclusive, 30'000, 20'000, "b.cc:3", std::nullopt}, 4'000);
}

// Leases, waits and sessions, every field (unpacked: a new field breaks the build).
std::string DescribeCore(const graph::Coordinator& core) {
  Text t;
  for (const graph::LeaseInfo& l : core.Leases()) {
    const auto& [lease, token, session, owner, resource, mode, expires_at_us, reported, revoked, handover_at_us, site] = l;
    t.Raw("lease", "{" +
                       Text()
                           .U("lease", lease)
                           .U("token", token)
                           .S("session", session)
                           .S("owner", owner)
                           .S("resource", resource)
                           .E("mode", mode)
                           .I("expires_at_us", expires_at_us)
                           .U("reported", reported)
                           .U("revoked", revoked)
                           .I("handover_at_us", handover_at_us)
                           .S("site", site)
                           .str() +
                       "}");
  }
  for (const graph::WaitInfo& x : core.Waits()) {
    const auto& [session, owner, resource, mode, reported, upgrade, request_id, since_us, deadline_us, site] = x;
    t.Raw("wait", "{" +
                      Text()
                          .S("session", session)
                          .S("owner", owner)
                          .S("resource", resource)
                          .E("mode", mode)
                          .U("reported", reported)
                          .U("upgrade", upgrade)
                          .U("request_id", request_id)
                          .I("since_us", since_us)
                          .I("deadline_us", deadline_us)
                          .S("site", site)
                          .str() +
                      "}");
  }
  for (const std::string& s : core.Sessions()) t.S("session", s);
  return t.str();
}

// `image` cut into `parts` pieces of (nearly) equal size.
std::vector<SnapshotPart> SplitImage(const std::string& image, std::uint32_t parts) {
  std::vector<SnapshotPart> out;
  const std::size_t each = (image.size() + parts - 1) / parts;
  for (std::uint32_t i = 0; i < parts; ++i) {
    const std::size_t at = std::min(image.size(), std::size_t{i} * each);
    out.push_back(SnapshotPart{i, parts, image.substr(at, each)});
  }
  return out;
}

class SnapshotLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BuildState(source_);
    ASSERT_EQ(source_.Leases().size(), 2u);
    ASSERT_EQ(source_.Waits().size(), 1u) << "s2's acquire of db:1 is queued";
    image_ = source_.SaveImage();
    ASSERT_GT(image_.size(), 7 * 16u);
    // The target has a state of its own, which a failed load must leave alone.
    target_.Apply(graph::Hello{"s9", "k9", "other", 60'000, 0}, 500);
    target_.Apply(graph::Acquire{{"s9", "k9"}, 9, "o9", "db:9", Mode::kExclusive, 30'000, -1, "", std::nullopt}, 600);
    before_ = target_.SaveImage();
    before_text_ = DescribeCore(target_);
    ASSERT_NE(before_, image_);
  }
  // The target is as it was before the snapshot.
  void ExpectUnchanged() {
    EXPECT_TRUE(target_.SaveImage() == before_) << "the target's image changed";
    EXPECT_EQ(DescribeCore(target_), before_text_);
  }
  std::string Add(SnapshotLoader& loader, SnapshotPart part, bool expect_loaded = false) {
    bool loaded = !expect_loaded;  // Add must set it either way
    std::string err = loader.Add(std::move(part), target_, loaded);
    EXPECT_EQ(loaded, expect_loaded) << err;
    return err;
  }

  graph::Coordinator source_{CoreConfig(), 1};
  graph::Coordinator target_{CoreConfig(), 1};
  std::string image_;
  std::string before_;
  std::string before_text_;
};

TEST_F(SnapshotLoaderTest, ImageInOneTwoAndSevenPartsLoads) {
  for (std::uint32_t parts : {1u, 2u, 7u}) {
    SCOPED_TRACE(std::to_string(parts) + " parts");
    graph::Coordinator target(CoreConfig(), 1);
    const std::string empty = target.SaveImage();
    std::vector<SnapshotPart> pieces = SplitImage(image_, parts);
    std::string joined;
    for (const SnapshotPart& p : pieces) {
      EXPECT_FALSE(p.bytes.empty());
      joined += p.bytes;
    }
    ASSERT_TRUE(joined == image_);

    SnapshotLoader loader;
    EXPECT_FALSE(loader.pending());
    EXPECT_FALSE(loader.done());
    for (std::uint32_t i = 0; i < parts; ++i) {
      const bool last = i + 1 == parts;
      bool loaded = !last;
      EXPECT_EQ(loader.Add(std::move(pieces[i]), target, loaded), "") << "part " << i;
      EXPECT_EQ(loaded, last) << "part " << i;
      EXPECT_EQ(loader.pending(), !last) << "part " << i;
      EXPECT_EQ(loader.done(), last) << "part " << i;
      if (!last) {
        EXPECT_TRUE(target.SaveImage() == empty) << "loaded before part " << i + 1 << " of " << parts;
      }
    }
    EXPECT_TRUE(target.SaveImage() == image_) << "the loaded image differs";
    EXPECT_EQ(DescribeCore(target), DescribeCore(source_));
    EXPECT_EQ(target.CheckInvariants(), "");

    // It goes on as the source does: s1 lets db:1 go and the queued acquire gets it.
    graph::Coordinator& source = source_;
    std::uint64_t lease = 0;
    for (const graph::LeaseInfo& l : source.Leases()) {
      if (l.owner == "o1") lease = l.lease;
    }
    ASSERT_NE(lease, 0u);
    const std::string source_before = source.SaveImage();
    const graph::Command release = graph::Release{{"s1", "k1"}, lease, "", ""};
    source.Apply(release, 5'000);
    target.Apply(release, 5'000);
    EXPECT_TRUE(source.Waits().empty()) << DescribeCore(source);
    EXPECT_EQ(DescribeCore(target), DescribeCore(source));
    EXPECT_TRUE(target.SaveImage() == source.SaveImage());
    // Back to the image for the next round.
    ASSERT_EQ(source.LoadImage(source_before), "");
    ASSERT_TRUE(source.SaveImage() == image_);
  }
}

TEST_F(SnapshotLoaderTest, PartOutOfOrderIsRefused) {
  const std::vector<SnapshotPart> pieces = SplitImage(image_, 3);
  {
    SnapshotLoader loader;
    EXPECT_EQ(Add(loader, pieces[1]), "snapshot part 2 of 3 where part 1 was due");
    EXPECT_FALSE(loader.pending());
    EXPECT_FALSE(loader.done());
    ExpectUnchanged();
  }
  {
    SnapshotLoader loader;
    EXPECT_EQ(Add(loader, pieces[0]), "");
    EXPECT_TRUE(loader.pending());
    EXPECT_EQ(Add(loader, pieces[2]), "snapshot part 3 of 3 where part 2 of 3 was due");
    EXPECT_EQ(Add(loader, pieces[0]), "snapshot part 1 of 3 where part 2 of 3 was due");
    EXPECT_TRUE(loader.pending());
    EXPECT_FALSE(loader.done());
    ExpectUnchanged();
  }
}

TEST_F(SnapshotLoaderTest, PartsChangedMidwayIsRefused) {
  const std::vector<SnapshotPart> pieces = SplitImage(image_, 3);
  SnapshotLoader loader;
  EXPECT_EQ(Add(loader, pieces[0]), "");
  EXPECT_EQ(Add(loader, SnapshotPart{1, 4, pieces[1].bytes}), "snapshot part 2 of 4 where part 2 of 3 was due");
  // Claiming two parts now would make this one the last: still refused, nothing loaded.
  EXPECT_EQ(Add(loader, SnapshotPart{1, 2, pieces[1].bytes + pieces[2].bytes}),
            "snapshot part 2 of 2 where part 2 of 3 was due");
  EXPECT_TRUE(loader.pending());
  EXPECT_FALSE(loader.done());
  ExpectUnchanged();
}

TEST_F(SnapshotLoaderTest, SecondSnapshotIsRefused) {
  SnapshotLoader loader;
  std::vector<SnapshotPart> pieces = SplitImage(image_, 2);
  EXPECT_EQ(Add(loader, pieces[0]), "");
  EXPECT_EQ(Add(loader, pieces[1], /*expect_loaded=*/true), "");
  ASSERT_TRUE(target_.SaveImage() == image_);
  ASSERT_TRUE(loader.done());

  // Another image, valid on its own (the target's old state), is not loaded over it.
  EXPECT_EQ(Add(loader, SnapshotPart{0, 1, before_}), "a second snapshot in one segment");
  EXPECT_EQ(Add(loader, SnapshotPart{0, 2, before_}), "a second snapshot in one segment");
  EXPECT_TRUE(loader.done());
  EXPECT_FALSE(loader.pending());
  EXPECT_TRUE(target_.SaveImage() == image_) << "the second snapshot changed the state";
  EXPECT_EQ(DescribeCore(target_), DescribeCore(source_));
}

TEST_F(SnapshotLoaderTest, CorruptedImageIsRefusedAndChangesNothing) {
  // The image starts with its magic (a string); one byte of it changed.
  const std::size_t magic = image_.find("lockgraph-image");
  ASSERT_NE(magic, std::string::npos);
  ASSERT_LT(magic, 16u) << "the magic leads the image";
  std::string bad_magic = image_;
  bad_magic[magic] ^= 0x01;
  std::string bad_tail = image_ + '\0';
  std::string cut = image_.substr(0, image_.size() - 1);
  for (const std::string* bad : {&bad_magic, &bad_tail, &cut}) {
    SCOPED_TRACE(bad == &bad_magic ? "magic" : bad == &bad_tail ? "a byte too many" : "a byte short");
    SnapshotLoader loader;
    std::vector<SnapshotPart> pieces = SplitImage(*bad, 2);
    EXPECT_EQ(Add(loader, pieces[0]), "");
    ExpectUnchanged();
    const std::string err = Add(loader, pieces[1]);
    EXPECT_NE(err.find("bad coordinator image"), std::string::npos) << err;
    if (bad == &bad_magic) {
      EXPECT_NE(err.find("not a lockgraph image"), std::string::npos) << err;
    }
    EXPECT_FALSE(loader.pending()) << "every part was read";
    EXPECT_TRUE(loader.done());
    ExpectUnchanged();
    EXPECT_EQ(target_.CheckInvariants(), "");
    // The segment had its snapshot: a good one after it is not loaded either.
    EXPECT_EQ(Add(loader, SnapshotPart{0, 1, image_}), "a second snapshot in one segment");
    ExpectUnchanged();
  }
  // An empty image.
  SnapshotLoader loader;
  EXPECT_NE(Add(loader, SnapshotPart{0, 1, ""}), "");
  ExpectUnchanged();
}

// ================================================================ segment names

TEST(JournalWriterTest, SegmentNames) {
  EXPECT_EQ(SegmentName(0, 0), "00000000");
  EXPECT_EQ(SegmentName(2, 0), "00000002");
  EXPECT_EQ(SegmentName(2, 1), "00000002_000001");
  EXPECT_EQ(SegmentName(2, 10), "00000002_000010");
  EXPECT_EQ(SegmentName(16'777'214, 999'999), "16777214_999999");
  EXPECT_EQ(SegmentName(3, 1'000'000), "00000003_1000000");  // wider, not cut
  EXPECT_EQ(SegmentName(kU32Max, kU32Max), "4294967295_4294967295");
}

TEST(JournalWriterTest, ListSegmentsOrdersByEpochThenN) {
  TempDir dir;
  const std::string j = dir.path() + "/journal/";
  std::filesystem::create_directories(j);
  // Written out of order, with sizes of their own (PruneSegments below).
  const std::vector<std::string> names = {"00000010.lgj",        "00000002_000010.lgj", "junk.lgj",
                                          "00000003_000002.lgj", "00000002.lgj",        "9.lgj",
                                          "00000002_000001.lgj", "00000003_x.lgj",      SegmentName(3, 1'000'000) + ".lgj"};
  for (const std::string& name : names) WriteFile(j + name, "LGJRNL01" + name);
  // Not segments: a rotation that died half-way, other extensions.
  WriteFile(j + "00000003_000001.lgj.tmp", "LGJRNL01");
  WriteFile(j + "00000011.lgjx", "x");
  WriteFile(j + "00000011", "x");
  const std::vector<std::string> expected = {
      j + "00000003_x.lgj",        j + "junk.lgj",  // names that do not parse first, by name
      j + "00000002.lgj",          j + "00000002_000001.lgj", j + "00000002_000010.lgj", j + "00000003_000002.lgj",
      j + "00000003_1000000.lgj",  j + "9.lgj",  // numerically: 9 < 10
      j + "00000010.lgj"};
  EXPECT_EQ(ListSegments(dir.path()), expected);
  // A segment name sorts where its (epoch, n) says, whatever the spelling.
  std::vector<std::string> made;
  for (const auto& [epoch, n] : std::vector<std::pair<std::uint32_t, std::uint32_t>>{{2, 0}, {2, 1}, {2, 10}, {3, 2}, {10, 0}}) {
    made.push_back(j + SegmentName(epoch, n) + ".lgj");
  }
  std::vector<std::string> listed;
  for (const std::string& path : ListSegments(dir.path())) {
    if (std::find(made.begin(), made.end(), path) != made.end()) listed.push_back(path);
  }
  EXPECT_EQ(listed, made);

  // Pruning everything it may keeps the last of that order, not the last by name.
  const std::vector<std::string> removed = PruneSegments(ListSegments(dir.path()), 0, std::chrono::hours(24));
  EXPECT_EQ(std::set<std::string>(removed.begin(), removed.end()),
            std::set<std::string>(expected.begin(), expected.end() - 1));
  EXPECT_EQ(ListSegments(dir.path()), (std::vector<std::string>{j + "00000010.lgj"}));
  EXPECT_TRUE(std::filesystem::exists(j + "00000003_000001.lgj.tmp")) << "not a segment, not pruned";
}

TEST(JournalWriterTest, PruneSegmentsKeepsTheLastOne) {
  TempDir dir;
  const std::string j = dir.path() + "/journal/";
  std::filesystem::create_directories(j);
  std::vector<std::string> segments;
  for (std::uint32_t epoch = 1; epoch <= 4; ++epoch) {
    segments.push_back(j + SegmentName(epoch, 0) + ".lgj");
    WriteFile(segments.back(), std::string(100 * epoch, 'x'));  // 100, 200, 300, 400 bytes
  }
  ASSERT_EQ(ListSegments(dir.path()), segments);
  const auto day = std::chrono::hours(24);
  EXPECT_TRUE(PruneSegments(segments, 10'000, day).empty()) << "all young and small";
  EXPECT_EQ(ListSegments(dir.path()), segments);

  // A byte budget for the newest two: the older two go.
  auto removed = PruneSegments(segments, 700, day);
  EXPECT_EQ(std::set<std::string>(removed.begin(), removed.end()), std::set<std::string>(segments.begin(), segments.begin() + 2));
  EXPECT_EQ(ListSegments(dir.path()), std::vector<std::string>(segments.begin() + 2, segments.end()));

  // All older than the age limit: the last one stays anyway.
  const auto old = std::filesystem::file_time_type::clock::now() - std::chrono::hours(48);
  for (std::size_t i = 2; i < segments.size(); ++i) std::filesystem::last_write_time(segments[i], old);
  removed = PruneSegments(ListSegments(dir.path()), 10'000, day);
  EXPECT_EQ(removed, std::vector<std::string>{segments[2]});
  EXPECT_EQ(ListSegments(dir.path()), std::vector<std::string>{segments[3]});
  // No budget at all: still there.
  EXPECT_TRUE(PruneSegments(ListSegments(dir.path()), 0, std::chrono::hours(0)).empty());
  EXPECT_TRUE(std::filesystem::exists(segments[3]));
}

// ================================================================ staged segments

TEST(JournalWriterTest, StagedSegmentAppearsWhenPublished) {
  TempDir dir;
  const std::string j = dir.path() + "/journal/";
  JournalWriter w;
  const mode_t old_umask = ::umask(0);
  const std::string err = w.Open(dir.path(), SegmentName(4, 1), /*staged=*/true);
  ::umask(old_umask);
  ASSERT_EQ(err, "");
  const std::string tmp = j + "00000004_000001.lgj.tmp";
  EXPECT_EQ(w.path(), j + "00000004_000001.lgj");
  EXPECT_TRUE(w.is_open());
  struct stat st {};
  ASSERT_EQ(::stat(tmp.c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(ReadFile(tmp), kJournalMagic);
  EXPECT_FALSE(std::filesystem::exists(w.path()));
  EXPECT_TRUE(ListSegments(dir.path()).empty()) << "a staged segment is not listed";

  // A boot and its snapshot, as a rotation writes them: one part handed to the
  // kernel, the other only buffered when Publish comes.
  std::vector<JournalRecord> records;
  records.push_back(Record(9, 100, 1, Boot(4, 7, "lockgraphd test", false)));
  records.push_back(Record(9, 100, 1, SnapshotPart{0, 2, std::string("image\0one", 9)}));
  records.push_back(Record(9, 100, 1, SnapshotPart{1, 2, "image two"}));
  w.Append(records[0]);
  w.Append(records[1]);
  ASSERT_EQ(w.Write(), "");
  w.Append(records[2]);
  EXPECT_TRUE(ListSegments(dir.path()).empty());
  const std::uint64_t syncs = w.syncs();

  ASSERT_EQ(w.Publish(), "");
  EXPECT_FALSE(std::filesystem::exists(tmp));
  EXPECT_TRUE(std::filesystem::exists(w.path()));
  EXPECT_FALSE(w.unsynced()) << "Publish syncs";
  EXPECT_EQ(w.syncs(), syncs + 1);
  ASSERT_EQ(::stat(w.path().c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(ListSegments(dir.path()), std::vector<std::string>{w.path()});
  EXPECT_EQ(DescribeAll(Scan(w.path()).records), DescribeAll(records));

  // The writer goes on in the published file.
  records.push_back(Record(9, 101, 2, graph::Hello{"s1", "k1", "c", 1000, 0}));
  records.push_back(Record(9, 102, 3, graph::Tick{}));
  w.Append(records[3]);
  ASSERT_EQ(w.Write(), "");
  EXPECT_EQ(DescribeAll(Scan(w.path()).records), DescribeAll(std::vector<JournalRecord>(records.begin(), records.end() - 1)));
  w.Append(records[4]);
  ASSERT_EQ(w.Sync(), "");
  const SegmentScan scan = Scan(w.path());
  EXPECT_EQ(scan.problem, "");
  EXPECT_EQ(DescribeAll(scan.records), DescribeAll(records));
  EXPECT_EQ(FileSize(w.path()), w.bytes());

  // Publishing again, or a segment that was never staged, does nothing.
  EXPECT_EQ(w.Publish(), "");
  EXPECT_EQ(ListSegments(dir.path()), std::vector<std::string>{w.path()});
  EXPECT_FALSE(std::filesystem::exists(tmp));
  JournalWriter plain;
  ASSERT_EQ(plain.Open(dir.path(), SegmentName(5, 0)), "");
  EXPECT_TRUE(std::filesystem::exists(plain.path())) << "an unstaged segment is there at once";
  EXPECT_EQ(plain.Publish(), "");
  EXPECT_TRUE(std::filesystem::exists(plain.path()));
  EXPECT_FALSE(std::filesystem::exists(plain.path() + ".tmp"));
}

TEST(JournalWriterTest, StagedOpenReplacesALeftoverTmp) {
  TempDir dir;
  const std::string j = dir.path() + "/journal/";
  std::filesystem::create_directories(j);
  const std::string tmp = j + "00000004_000002.lgj.tmp";
  // What a rotation that died half-way leaves: the magic, a record, a torn one.
  const std::string leftover = std::string(kJournalMagic) + FrameRecord(SmallRecords()[0]) + "torn";
  WriteFile(tmp, leftover);
  ASSERT_EQ(::chmod(tmp.c_str(), 0644), 0);
  EXPECT_TRUE(ListSegments(dir.path()).empty());

  JournalWriter w;
  ASSERT_EQ(w.Open(dir.path(), SegmentName(4, 2), /*staged=*/true), "");
  EXPECT_EQ(ReadFile(tmp), kJournalMagic) << "the leftover is gone";
  EXPECT_EQ(w.bytes(), kJournalMagic.size());
  struct stat st {};
  ASSERT_EQ(::stat(tmp.c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "a new file, not the leftover";
  const JournalRecord r = Record(1, 2, 3, SnapshotPart{0, 1, "whole"});
  w.Append(r);
  ASSERT_EQ(w.Publish(), "");
  const SegmentScan scan = Scan(w.path());
  EXPECT_EQ(scan.problem, "");
  EXPECT_EQ(DescribeAll(scan.records), DescribeAll({r}));
  EXPECT_EQ(ListSegments(dir.path()), std::vector<std::string>{w.path()});
}

TEST(JournalWriterTest, SwapExchangesWriters) {
  TempDir dir;
  const std::vector<JournalRecord> small = SmallRecords();
  JournalWriter current;
  ASSERT_EQ(current.Open(dir.path(), SegmentName(6, 0)), "");
  current.Append(small[1]);
  current.Append(small[2]);
  ASSERT_EQ(current.Sync(), "");
  JournalWriter next;
  ASSERT_EQ(next.Open(dir.path(), SegmentName(6, 1), /*staged=*/true), "");
  next.Append(small[0]);
  ASSERT_EQ(next.Write(), "");
  next.Append(small[3]);  // still buffered: goes with the writer

  const std::string current_path = current.path();
  const std::string next_path = next.path();
  const std::uint64_t current_bytes = current.bytes();
  const std::uint64_t next_bytes = next.bytes();
  const std::uint64_t current_syncs = current.syncs();
  const std::uint64_t next_syncs = next.syncs();
  const int current_fd = current.fd();
  const int next_fd = next.fd();
  ASSERT_NE(current_bytes, next_bytes);
  ASSERT_FALSE(current.unsynced());
  ASSERT_TRUE(next.unsynced());

  current.Swap(next);
  EXPECT_EQ(current.path(), next_path);
  EXPECT_EQ(next.path(), current_path);
  EXPECT_EQ(current.bytes(), next_bytes);
  EXPECT_EQ(next.bytes(), current_bytes);
  EXPECT_EQ(current.syncs(), next_syncs);
  EXPECT_EQ(next.syncs(), current_syncs);
  EXPECT_EQ(current.fd(), next_fd);
  EXPECT_EQ(next.fd(), current_fd);
  EXPECT_TRUE(current.unsynced());
  EXPECT_FALSE(next.unsynced());

  // `current` now has the staged segment (and its buffer): Publish is its to do.
  ASSERT_EQ(current.Publish(), "");
  EXPECT_TRUE(std::filesystem::exists(next_path));
  EXPECT_FALSE(std::filesystem::exists(next_path + ".tmp"));
  EXPECT_EQ(DescribeAll(Scan(next_path).records), DescribeAll({small[0], small[3]}));
  // `next` writes to the old one, and syncs it when it goes.
  next.Append(small[4]);
  {
    JournalWriter gone;
    gone.Swap(next);
    EXPECT_FALSE(next.is_open());
    EXPECT_EQ(gone.path(), current_path);
  }
  EXPECT_EQ(DescribeAll(Scan(current_path).records), DescribeAll({small[1], small[2], small[4]}));
  EXPECT_EQ(FileSize(current_path), current_bytes + FrameRecord(small[4]).size());
}

}  // namespace
}  // namespace lockgraph::daemon
