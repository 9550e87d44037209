#include "journal.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <boost/crc.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>

#include "lockgraph/portable_binary.h"

namespace lockgraph::daemon {

namespace {

std::uint32_t Crc32cTable(std::string_view data) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

#if defined(__x86_64__)
// SSE 4.2's crc32 instruction computes CRC-32C eight bytes at a time: restarts read
// and write the whole journal, and the table would be a tenth of their time.
__attribute__((target("sse4.2"))) std::uint32_t Crc32cSse42(std::string_view data) {
  std::uint64_t crc = 0xFFFFFFFF;
  const char* p = data.data();
  std::size_t n = data.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    crc = __builtin_ia32_crc32di(crc, v);
  }
  auto c = static_cast<std::uint32_t>(crc);
  for (; n > 0; ++p, --n) c = __builtin_ia32_crc32qi(c, static_cast<unsigned char>(*p));
  return c ^ 0xFFFFFFFF;
}
#endif

}  // namespace

std::uint32_t Crc32c(std::string_view data) {
#if defined(__x86_64__)
  static const bool kHardware = __builtin_cpu_supports("sse4.2");
  if (kHardware) return Crc32cSse42(data);
#endif
  return Crc32cTable(data);
}

RecordKind JournalRecord::kind() const {
  switch (body.index()) {
    case 0: return RecordKind::kBoot;
    case 1: return RecordKind::kCommand;
    case 2: return RecordKind::kReport;
    default: return RecordKind::kSnapshot;
  }
}

namespace {

// ---------------------------------------------------------------- payload codec

struct Bad {
  std::string what;
};

// The kind byte leads the payload, then cereal's portable binary layout through the
// codec the wire protocol uses too (lockgraph/portable_binary.h): the byte-order flag
// (1: little-endian), every number little-endian, every string as a u64 size and its
// bytes — what cereal's PortableBinaryOutputArchive writes (journal_test checks it
// against cereal itself), appended straight to the journal's buffer.
class Out : public portable::Writer {
 public:
  // Appends to `out`, which may already hold other records.
  Out(std::string& out, RecordKind kind) : portable::Writer(out) {
    U8(static_cast<std::uint8_t>(kind));
    U8(portable::kLittleEndian);
  }
  // Commands' auth is written without its secret (JournalSecretless, in place).
  bool secretless = false;
  template <typename T, typename F>
  void Opt(const std::optional<T>& v, F&& write) {
    Bool(v.has_value());
    if (v) write(*v);
  }
};

// Reads what Out wrote, in place: the kind byte, the byte-order flag, then the
// payload, every length checked against what the record holds before anything is
// allocated (restarts read millions of records). A short record throws
// portable::ShortInput, which DecodePayload words.
class In : public portable::Reader {
 public:
  explicit In(std::string_view data) : portable::Reader(Body(data), Order(data)), kind_(static_cast<std::uint8_t>(data[0])) {}
  std::uint8_t kind() const { return kind_; }
  bool Bool() {
    const std::uint8_t b = U8();
    if (b > 1) throw Bad{"a flag is " + std::to_string(b)};
    return b == 1;
  }
  template <typename E>
  E Enum(std::string_view what, unsigned lo, unsigned hi) {
    const std::uint8_t v = U8();
    if (v < lo || v > hi) throw Bad{"unknown " + std::string(what) + " " + std::to_string(v)};
    return static_cast<E>(v);
  }
  template <typename T, typename F>
  std::optional<T> Opt(F&& read) {
    if (!Bool()) return std::nullopt;
    return read();
  }
  void End() {
    if (left() != 0) throw Bad{"bytes after the record's body"};
  }

 private:
  static std::string_view Body(std::string_view data) {
    if (data.size() < 2) throw Bad{"the record ends early (no kind and byte order)"};
    return data.substr(2);
  }
  static std::uint8_t Order(std::string_view data) {
    Body(data);  // the size check, whichever argument is evaluated first
    const auto order = static_cast<std::uint8_t>(data[1]);
    if (order > 1) throw Bad{"unknown byte order " + std::to_string(order)};
    return order;
  }
  std::uint8_t kind_;
};

constexpr unsigned kMaxMode = static_cast<unsigned>(graph::Mode::kExclusive);
constexpr unsigned kMaxStep = static_cast<unsigned>(graph::VictimStep::kLowestId);
constexpr unsigned kMaxOrderMode = static_cast<unsigned>(graph::OrderMode::kEnforce);
constexpr unsigned kMaxWithin = static_cast<unsigned>(graph::WithinRule::kDescending);

void WriteAuth(Out& o, const graph::Auth& a) {
  o.Str(a.session);
  if (o.secretless) o.U64(0);
  else o.Str(a.secret);
}
graph::Auth ReadAuth(In& in) {
  graph::Auth a;
  a.session = in.Str();
  a.secret = in.Str();
  return a;
}

void WriteConfig(Out& o, const graph::Config& c) {
  o.U32(c.max_name_bytes);
  o.U32(c.max_leases_per_session);
  o.U32(c.max_waits_per_owner);
  o.I64(c.confirm_us);
  o.I64(c.victim_grace_us);
  o.I64(c.revoke_grace_us);
  o.I64(c.max_ttl_ms);
  o.U8(static_cast<std::uint8_t>(c.class_separator));
  o.U32(static_cast<std::uint32_t>(c.classes.size()));
  for (const auto& [name, cc] : c.classes) {
    o.Str(name);
    o.Opt(cc.revoke_grace_us, [&](std::int64_t v) { o.I64(v); });
    o.Bool(cc.revoke_immediate);
  }
  o.U32(static_cast<std::uint32_t>(c.victim_policy.size()));
  for (graph::VictimStep s : c.victim_policy) o.U8(static_cast<std::uint8_t>(s));
  o.U64(c.epoch_low_water);
  const graph::OrderRules& r = c.order;
  o.U8(static_cast<std::uint8_t>(r.mode));
  o.U8(static_cast<std::uint8_t>(r.separator));
  o.U64(r.max_learned_edges);
  o.U32(static_cast<std::uint32_t>(r.classes.size()));
  for (const auto& [name, rule] : r.classes) {
    o.Str(name);
    o.Opt(rule.rank, [&](std::int64_t v) { o.I64(v); });
    o.U8(static_cast<std::uint8_t>(rule.within));
    o.Opt(rule.mode, [&](graph::OrderMode m) { o.U8(static_cast<std::uint8_t>(m)); });
  }
}

graph::Config ReadConfig(In& in) {
  graph::Config c;
  c.max_name_bytes = in.U32();
  c.max_leases_per_session = in.U32();
  c.max_waits_per_owner = in.U32();
  c.confirm_us = in.I64();
  c.victim_grace_us = in.I64();
  c.revoke_grace_us = in.I64();
  c.max_ttl_ms = in.I64();
  c.class_separator = static_cast<char>(in.U8());
  for (std::size_t n = in.Count(8 + 2); n > 0; --n) {
    std::string name = in.Str();
    graph::ClassConfig cc;
    cc.revoke_grace_us = in.Opt<std::int64_t>([&] { return in.I64(); });
    cc.revoke_immediate = in.Bool();
    c.classes[std::move(name)] = cc;
  }
  c.victim_policy.clear();
  for (std::size_t n = in.Count(1); n > 0; --n) {
    c.victim_policy.push_back(in.Enum<graph::VictimStep>("victim step", 0, kMaxStep));
  }
  c.epoch_low_water = in.U64();
  graph::OrderRules& r = c.order;
  r.mode = in.Enum<graph::OrderMode>("order mode", 0, kMaxOrderMode);
  r.separator = static_cast<char>(in.U8());
  r.max_learned_edges = in.U64();
  for (std::size_t n = in.Count(8 + 3); n > 0; --n) {
    std::string name = in.Str();
    graph::ClassOrderRule rule;
    rule.rank = in.Opt<std::int64_t>([&] { return in.I64(); });
    rule.within = in.Enum<graph::WithinRule>("within rule", 0, kMaxWithin);
    rule.mode = in.Opt<graph::OrderMode>([&] { return in.Enum<graph::OrderMode>("order mode", 0, kMaxOrderMode); });
    r.classes[std::move(name)] = rule;
  }
  return c;
}

void WriteCommand(Out& o, const graph::Command& command) {
  o.U8(static_cast<std::uint8_t>(command.index()));
  std::visit(
      [&](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, graph::Hello>) {
          o.Str(c.session);
          o.Str(c.secret);
          o.Str(c.client);
          o.I64(c.ttl_ms);
          o.I32(c.priority);
        } else if constexpr (std::is_same_v<T, graph::Heartbeat> || std::is_same_v<T, graph::Bye>) {
          WriteAuth(o, c.auth);
        } else if constexpr (std::is_same_v<T, graph::Acquire>) {
          WriteAuth(o, c.auth);
          o.U64(c.request_id);
          o.Str(c.owner);
          o.Str(c.resource);
          o.U8(static_cast<std::uint8_t>(c.mode));
          o.I64(c.ttl_ms);
          o.I64(c.wait_ms);
          o.Str(c.site);
          o.Opt(c.started, [&](std::int64_t v) { o.I64(v); });
        } else if constexpr (std::is_same_v<T, graph::Renew>) {
          WriteAuth(o, c.auth);
          o.U64(c.lease);
          o.Opt(c.ttl_ms, [&](std::int64_t v) { o.I64(v); });
        } else if constexpr (std::is_same_v<T, graph::Release>) {
          WriteAuth(o, c.auth);
          o.Opt(c.lease, [&](std::uint64_t v) { o.U64(v); });
          o.Str(c.owner);
          o.Str(c.resource);
        } else if constexpr (std::is_same_v<T, graph::Hold>) {
          WriteAuth(o, c.auth);
          o.Str(c.owner);
          o.Str(c.resource);
          o.U8(static_cast<std::uint8_t>(c.mode));
          o.I64(c.ttl_ms);
          o.Str(c.site);
        } else if constexpr (std::is_same_v<T, graph::Wait>) {
          WriteAuth(o, c.auth);
          o.Str(c.owner);
          o.Str(c.resource);
          o.U8(static_cast<std::uint8_t>(c.mode));
          o.Str(c.site);
        } else if constexpr (std::is_same_v<T, graph::Unwait>) {
          WriteAuth(o, c.auth);
          o.Str(c.owner);
          o.Str(c.resource);
        } else if constexpr (std::is_same_v<T, graph::Revoke>) {
          o.Opt(c.lease, [&](std::uint64_t v) { o.U64(v); });
          o.Str(c.resource);
        } else if constexpr (std::is_same_v<T, graph::SetEpoch>) {
          o.U32(c.epoch);
        } else if constexpr (std::is_same_v<T, graph::Restore>) {
          o.U32(static_cast<std::uint32_t>(c.sessions.size()));
          for (const graph::RestoredSession& x : c.sessions) {
            o.Str(x.session);
            o.Str(x.secret);
            o.Str(x.client);
            o.I64(x.ttl_ms);
            o.I32(x.priority);
          }
          o.U32(static_cast<std::uint32_t>(c.leases.size()));
          for (const graph::RestoredLease& x : c.leases) {
            o.Str(x.session);
            o.Str(x.owner);
            o.Str(x.resource);
            o.U8(static_cast<std::uint8_t>(x.mode));
            o.U64(x.lease);
            o.U64(x.token);
            o.I64(x.ttl_ms);
            o.Str(x.site);
            o.I64(x.started);
            o.Bool(x.revoked);
          }
          o.I64(c.grace_ms);
          o.Bool(c.grant_unclaimed);
        } else if constexpr (std::is_same_v<T, graph::Reclaim>) {
          WriteAuth(o, c.auth);
          o.U32(static_cast<std::uint32_t>(c.items.size()));
          for (const graph::ReclaimItem& x : c.items) {
            o.Str(x.owner);
            o.Str(x.resource);
            o.U8(static_cast<std::uint8_t>(x.mode));
            o.U64(x.token);
          }
        } else {
          static_assert(std::is_same_v<T, graph::Tick>);
        }
      },
      command);
}

graph::Command ReadCommand(In& in) {
  const std::uint8_t tag = in.U8();
  switch (tag) {
    case 0: {
      graph::Hello c;
      c.session = in.Str();
      c.secret = in.Str();
      c.client = in.Str();
      c.ttl_ms = in.I64();
      c.priority = in.I32();
      return c;
    }
    case 1: return graph::Heartbeat{ReadAuth(in)};
    case 2: return graph::Bye{ReadAuth(in)};
    case 3: {
      graph::Acquire c;
      c.auth = ReadAuth(in);
      c.request_id = in.U64();
      c.owner = in.Str();
      c.resource = in.Str();
      c.mode = in.Enum<graph::Mode>("mode", 0, kMaxMode);
      c.ttl_ms = in.I64();
      c.wait_ms = in.I64();
      c.site = in.Str();
      c.started = in.Opt<std::int64_t>([&] { return in.I64(); });
      return c;
    }
    case 4: {
      graph::Renew c;
      c.auth = ReadAuth(in);
      c.lease = in.U64();
      c.ttl_ms = in.Opt<std::int64_t>([&] { return in.I64(); });
      return c;
    }
    case 5: {
      graph::Release c;
      c.auth = ReadAuth(in);
      c.lease = in.Opt<std::uint64_t>([&] { return in.U64(); });
      c.owner = in.Str();
      c.resource = in.Str();
      return c;
    }
    case 6: {
      graph::Hold c;
      c.auth = ReadAuth(in);
      c.owner = in.Str();
      c.resource = in.Str();
      c.mode = in.Enum<graph::Mode>("mode", 0, kMaxMode);
      c.ttl_ms = in.I64();
      c.site = in.Str();
      return c;
    }
    case 7: {
      graph::Wait c;
      c.auth = ReadAuth(in);
      c.owner = in.Str();
      c.resource = in.Str();
      c.mode = in.Enum<graph::Mode>("mode", 0, kMaxMode);
      c.site = in.Str();
      return c;
    }
    case 8: {
      graph::Unwait c;
      c.auth = ReadAuth(in);
      c.owner = in.Str();
      c.resource = in.Str();
      return c;
    }
    case 9: {
      graph::Revoke c;
      c.lease = in.Opt<std::uint64_t>([&] { return in.U64(); });
      c.resource = in.Str();
      return c;
    }
    case 10: return graph::Tick{};
    case 11: return graph::SetEpoch{in.U32()};
    case 12: {
      graph::Restore c;
      for (std::size_t n = in.Count(3 * 8 + 12); n > 0; --n) {
        graph::RestoredSession x;
        x.session = in.Str();
        x.secret = in.Str();
        x.client = in.Str();
        x.ttl_ms = in.I64();
        x.priority = in.I32();
        c.sessions.push_back(std::move(x));
      }
      for (std::size_t n = in.Count(4 * 8 + 1 + 3 * 8 + 8 + 1); n > 0; --n) {
        graph::RestoredLease x;
        x.session = in.Str();
        x.owner = in.Str();
        x.resource = in.Str();
        x.mode = in.Enum<graph::Mode>("mode", 0, kMaxMode);
        x.lease = in.U64();
        x.token = in.U64();
        x.ttl_ms = in.I64();
        x.site = in.Str();
        x.started = in.I64();
        x.revoked = in.Bool();
        c.leases.push_back(std::move(x));
      }
      c.grace_ms = in.I64();
      c.grant_unclaimed = in.Bool();
      return c;
    }
    case 13: {
      graph::Reclaim c;
      c.auth = ReadAuth(in);
      for (std::size_t n = in.Count(2 * 8 + 1 + 8); n > 0; --n) {
        graph::ReclaimItem x;
        x.owner = in.Str();
        x.resource = in.Str();
        x.mode = in.Enum<graph::Mode>("mode", 0, kMaxMode);
        x.token = in.U64();
        c.items.push_back(std::move(x));
      }
      return c;
    }
    default: throw Bad{"unknown command " + std::to_string(tag)};
  }
}

}  // namespace

namespace {

void AppendPayload(std::string& out, const JournalRecord& r) {
  Out o(out, r.kind());
  o.U64(r.boot);
  o.I64(r.wall_us);
  o.I64(r.now_us);
  if (const auto* b = std::get_if<BootInfo>(&r.body)) {
    o.U32(b->epoch);
    o.U64(b->first_seq);
    o.Str(b->server);
    o.Bool(b->fsync_always);
    WriteConfig(o, b->config);
  } else if (const auto* c = std::get_if<graph::Command>(&r.body)) {
    WriteCommand(o, *c);
  } else if (const auto* rep = std::get_if<ReportInfo>(&r.body)) {
    o.U8(static_cast<std::uint8_t>(rep->type));
    o.Str(rep->json);
  } else {
    const auto& part = std::get<SnapshotPart>(r.body);
    o.U32(part.part);
    o.U32(part.parts);
    o.Str(part.bytes);
  }
}

}  // namespace

std::string EncodePayload(const JournalRecord& r) {
  std::string out;
  out.reserve(64);
  AppendPayload(out, r);
  return out;
}

std::variant<JournalRecord, std::string> DecodePayload(std::string_view payload) {
  try {
    In in(payload);
    JournalRecord r;
    if (in.kind() < 1 || in.kind() > 4) throw Bad{"unknown record kind " + std::to_string(in.kind())};
    const auto kind = static_cast<RecordKind>(in.kind());
    r.boot = in.U64();
    r.wall_us = in.I64();
    r.now_us = in.I64();
    switch (kind) {
      case RecordKind::kBoot: {
        BootInfo b;
        b.epoch = in.U32();
        b.first_seq = in.U64();
        b.server = in.Str();
        b.fsync_always = in.Bool();
        b.config = ReadConfig(in);
        r.body = std::move(b);
        break;
      }
      case RecordKind::kCommand: r.body = ReadCommand(in); break;
      case RecordKind::kReport: {
        ReportInfo rep;
        rep.type = in.Enum<ReportInfo::Type>("report type", 1, 2);
        rep.json = in.Str();
        r.body = std::move(rep);
        break;
      }
      case RecordKind::kSnapshot: {
        SnapshotPart part;
        part.part = in.U32();
        part.parts = in.U32();
        if (part.parts == 0 || part.part >= part.parts) {
          throw Bad{"snapshot part " + std::to_string(part.part) + " of " + std::to_string(part.parts)};
        }
        part.bytes = in.Str();
        r.body = std::move(part);
        break;
      }
    }
    in.End();
    return r;
  } catch (const Bad& b) {
    return b.what;
  } catch (const portable::ShortInput& e) {
    switch (e.kind) {
      case portable::ShortInput::Kind::kString:
        return "a string claims " + std::to_string(e.size) + " bytes, more than the record holds";
      case portable::ShortInput::Kind::kCount: return "a count of " + std::to_string(e.size) + " is too large";
      case portable::ShortInput::Kind::kShort: break;
    }
    return "the record ends early";
  } catch (const std::exception& e) {
    return std::string("the record ends early (") + e.what() + ")";
  }
}

namespace {

// The header's place first, then the payload written in place behind it by
// `write_payload`: the daemon journals every command, so no record is built apart
// and copied.
template <typename WritePayload>
void AppendFramed(std::string& out, WritePayload&& write_payload) {
  const std::size_t at = out.size();
  out.append(kRecordHeaderBytes, '\0');
  write_payload(out);
  const std::string_view payload(out.data() + at + kRecordHeaderBytes, out.size() - at - kRecordHeaderBytes);
  const auto n = static_cast<std::uint32_t>(payload.size());
  const std::uint32_t crc = Crc32c(payload);
  for (int i = 0; i < 4; ++i) {
    out[at + i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    out[at + 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xFF);
  }
}

}  // namespace

void AppendFramedRecord(std::string& out, const JournalRecord& record) {
  AppendFramed(out, [&](std::string& o) { AppendPayload(o, record); });
}

std::string FrameRecord(const JournalRecord& record) {
  std::string out;
  AppendFramedRecord(out, record);
  return out;
}

std::string SnapshotLoader::Add(SnapshotPart&& part, graph::Coordinator& core, bool& loaded) {
  loaded = false;
  if (done_) return "a second snapshot in one segment";
  if (part.parts == 0 || part.part >= part.parts) {
    return "snapshot part " + std::to_string(part.part) + " of " + std::to_string(part.parts);
  }
  if (part.part != next_ || (next_ > 0 && part.parts != parts_)) {
    return "snapshot part " + std::to_string(part.part + 1) + " of " + std::to_string(part.parts) +
           " where part " + std::to_string(next_ + 1) + (next_ > 0 ? " of " + std::to_string(parts_) : "") +
           " was due";
  }
  parts_ = part.parts;
  ++next_;
  if (bytes_.empty()) bytes_ = std::move(part.bytes);
  else bytes_ += part.bytes;
  if (next_ < parts_) return "";
  done_ = true;
  std::string err = core.LoadImage(bytes_);
  std::string().swap(bytes_);
  if (!err.empty()) return err;
  loaded = true;
  return "";
}

// ---------------------------------------------------------------- reading

namespace {

std::uint32_t Le32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

namespace {

// The secret of a session is journaled once, in its hello; other commands carry
// only the session id (JournalSecretless), and get the secret back here.
void RestoreSecret(JournalRecord& record, std::unordered_map<std::string, std::string>& secrets) {
  auto* command = std::get_if<graph::Command>(&record.body);
  if (command == nullptr) return;
  if (const auto* hello = std::get_if<graph::Hello>(command)) {
    secrets[hello->session] = hello->secret;
    return;
  }
  if (const auto* restore = std::get_if<graph::Restore>(command)) {
    for (const graph::RestoredSession& x : restore->sessions) secrets[x.session] = x.secret;
    return;
  }
  std::visit(
      [&](auto& c) {
        if constexpr (requires { c.auth; }) {
          if (!c.auth.secret.empty()) return;
          if (auto it = secrets.find(c.auth.session); it != secrets.end()) c.auth.secret = it->second;
        }
      },
      *command);
}

}  // namespace

void RestoreSecretFrom(graph::Command& command, const graph::Coordinator& core) {
  std::visit(
      [&](auto& c) {
        if constexpr (requires { c.auth; }) {
          if (!c.auth.secret.empty()) return;
          if (auto secret = core.SecretOf(c.auth.session)) c.auth.secret = std::move(*secret);
        }
      },
      command);
}

graph::Command JournalSecretless(graph::Command command) {
  std::visit(
      [](auto& c) {
        if constexpr (requires { c.auth; }) c.auth.secret.clear();
      },
      command);
  return command;
}

std::variant<SegmentScan, std::string> ScanSegment(const std::string& path) {
  std::vector<JournalRecord> records;
  auto scan = ScanSegment(path, [&](JournalRecord&& r) { records.push_back(std::move(r)); });
  if (auto* s = std::get_if<SegmentScan>(&scan)) s->records = std::move(records);
  return scan;
}

std::variant<SegmentScan, std::string> ScanSegment(const std::string& path,
                                                  const std::function<void(JournalRecord&&)>& each) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot open " + path + ": " + std::strerror(errno);
  in.seekg(0, std::ios::end);
  std::string data(static_cast<std::size_t>(std::max<std::streamoff>(0, in.tellg())), '\0');
  in.seekg(0);
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (!in) return "cannot read " + path + ": " + std::strerror(errno);
  if (data.size() < kJournalMagic.size() || std::string_view(data).substr(0, kJournalMagic.size()) != kJournalMagic) {
    return path + " is not a lockgraph journal segment (no " + std::string(kJournalMagic) + " magic)";
  }
  SegmentScan scan;
  std::unordered_map<std::string, std::string> secrets;  // by session, from its hello
  scan.file_bytes = data.size();
  std::size_t at = kJournalMagic.size();
  scan.good_bytes = at;
  while (at < data.size()) {
    const std::string where = path + " at byte " + std::to_string(at);
    if (data.size() - at < kRecordHeaderBytes) {
      scan.problem = where + ": torn record header (" + std::to_string(data.size() - at) + " bytes)";
      break;
    }
    const std::uint32_t n = Le32(data.data() + at);
    const std::uint32_t crc = Le32(data.data() + at + 4);
    if (n == 0 || n > kMaxRecordBytes) {
      scan.problem = where + ": impossible record length " + std::to_string(n);
      break;
    }
    if (data.size() - at - kRecordHeaderBytes < n) {
      scan.problem = where + ": torn record (" + std::to_string(n) + " bytes announced, " +
                     std::to_string(data.size() - at - kRecordHeaderBytes) + " present)";
      break;
    }
    const std::string_view payload(data.data() + at + kRecordHeaderBytes, n);
    if (Crc32c(payload) != crc) {
      scan.problem = where + ": checksum mismatch";
      break;
    }
    auto decoded = DecodePayload(payload);
    if (auto* err = std::get_if<std::string>(&decoded)) {
      scan.problem = where + ": undecodable record: " + *err;
      break;
    }
    JournalRecord& record = std::get<JournalRecord>(decoded);
    RestoreSecret(record, secrets);
    ++scan.count;
    each(std::move(record));
    at += kRecordHeaderBytes + n;
    scan.good_bytes = at;
  }
  if (scan.torn()) {
    scan.problem += "; " + std::to_string(scan.file_bytes - scan.good_bytes) + " bytes after the last good record";
  }
  return scan;
}

std::string SegmentName(std::uint32_t epoch, std::uint32_t n) {
  char name[32];
  if (n == 0) std::snprintf(name, sizeof name, "%08u", epoch);
  else std::snprintf(name, sizeof name, "%08u_%06u", epoch, n);
  return name;
}

namespace {

// (epoch, n) of a segment's file name, as SegmentName makes them.
std::optional<std::pair<std::uint64_t, std::uint64_t>> ParseSegmentName(const std::string& stem) {
  auto number = [](std::string_view digits) -> std::optional<std::uint64_t> {
    if (digits.empty() || digits.size() > 10) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
  };
  const std::size_t dash = stem.find('_');
  auto epoch = number(std::string_view(stem).substr(0, dash));
  auto n = dash == std::string::npos ? std::optional<std::uint64_t>(0) : number(std::string_view(stem).substr(dash + 1));
  if (!epoch || !n) return std::nullopt;
  return std::make_pair(*epoch, *n);
}

}  // namespace

std::vector<std::string> ListSegments(const std::string& data_dir) {
  struct Entry {
    bool ours;
    std::uint64_t epoch, n;
    std::string path;
  };
  std::vector<Entry> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(data_dir + "/journal", ec)) {
    if (entry.path().extension() != ".lgj") continue;
    const auto key = ParseSegmentName(entry.path().stem().string());
    found.push_back({key.has_value(), key ? key->first : 0, key ? key->second : 0, entry.path().string()});
  }
  std::sort(found.begin(), found.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.ours, a.epoch, a.n, a.path) < std::tie(b.ours, b.epoch, b.n, b.path);
  });
  std::vector<std::string> out;
  for (Entry& e : found) out.push_back(std::move(e.path));
  return out;
}

std::vector<std::string> PruneSegments(const std::vector<std::string>& segments, std::uint64_t keep_bytes,
                                       std::chrono::hours max_age) {
  std::vector<std::string> removed;
  std::uintmax_t kept = 0;
  const auto now = std::filesystem::file_time_type::clock::now();
  for (std::size_t i = segments.size(); i-- > 0;) {
    std::error_code ec;
    const std::uintmax_t size = std::filesystem::file_size(segments[i], ec);
    const auto written = std::filesystem::last_write_time(segments[i], ec);
    kept += ec ? 0 : size;
    if (i + 1 == segments.size() || (kept <= keep_bytes && now - written <= max_age)) continue;
    if (std::filesystem::remove(segments[i], ec)) removed.push_back(segments[i]);
  }
  return removed;
}

std::string TruncateSegment(const std::string& path, std::uint64_t bytes) {
  if (::truncate(path.c_str(), static_cast<off_t>(bytes)) != 0) {
    return "cannot truncate " + path + ": " + std::strerror(errno);
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const std::string err = "cannot fsync " + path + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return err;
  }
  ::close(fd);
  return "";
}

// ---------------------------------------------------------------- writing

std::string_view FsyncPolicyName(FsyncPolicy p) {
  switch (p) {
    case FsyncPolicy::kAlways: return "always";
    case FsyncPolicy::kInterval: return "interval";
    case FsyncPolicy::kNever: return "never";
  }
  return "unknown";
}

std::optional<FsyncPolicy> ParseFsyncPolicy(std::string_view s) {
  for (auto p : {FsyncPolicy::kAlways, FsyncPolicy::kInterval, FsyncPolicy::kNever}) {
    if (FsyncPolicyName(p) == s) return p;
  }
  return std::nullopt;
}

JournalWriter::~JournalWriter() {
  if (fd_ >= 0) {
    Sync();
    ::close(fd_);
  }
}

namespace {

std::string SyncDirectory(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || ::fsync(dfd) != 0) {
    const std::string err = "cannot fsync " + dir + ": " + std::strerror(errno);
    if (dfd >= 0) ::close(dfd);
    return err;
  }
  ::close(dfd);
  return "";
}

}  // namespace

std::string JournalWriter::Open(const std::string& data_dir, const std::string& name, bool staged) {
  dir_ = data_dir + "/journal";
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return "cannot create " + dir_ + ": " + ec.message();
  path_ = dir_ + "/" + name + ".lgj";
  staged_ = staged;
  const std::string file = staged ? path_ + ".tmp" : path_;
  if (staged) std::filesystem::remove(file, ec);  // a rotation that died half-way
  fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) return "cannot create " + file + ": " + std::strerror(errno);
  buffer_.assign(kJournalMagic);
  if (std::string err = Sync(); !err.empty()) return err;
  return staged ? "" : SyncDirectory(dir_);
}

std::string JournalWriter::Publish() {
  if (!staged_) return "";
  if (std::string err = Sync(); !err.empty()) return err;
  const std::string file = path_ + ".tmp";
  // Never over an existing segment: its records would be lost.
  if (::renameat2(AT_FDCWD, file.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) != 0) {
    return "cannot rename " + file + " to " + path_ + ": " + std::strerror(errno);
  }
  staged_ = false;  // published, even if the directory's sync below fails
  return SyncDirectory(dir_);
}

void JournalWriter::Swap(JournalWriter& other) noexcept {
  std::swap(fd_, other.fd_);
  std::swap(dir_, other.dir_);
  std::swap(path_, other.path_);
  std::swap(buffer_, other.buffer_);
  std::swap(staged_, other.staged_);
  std::swap(unsynced_, other.unsynced_);
  std::swap(bytes_, other.bytes_);
  std::swap(syncs_, other.syncs_);
}

void JournalWriter::Append(const JournalRecord& record) {
  if (fd_ < 0) return;
  AppendFramedRecord(buffer_, record);
}

void JournalWriter::AppendCommand(std::uint64_t boot, graph::TimeUs wall_us, graph::TimeUs now_us,
                                  const graph::Command& command) {
  if (fd_ < 0) return;
  AppendFramed(buffer_, [&](std::string& out) {
    Out o(out, RecordKind::kCommand);
    o.secretless = true;
    o.U64(boot);
    o.I64(wall_us);
    o.I64(now_us);
    WriteCommand(o, command);
  });
}

std::string JournalWriter::AppendSnapshot(JournalRecord header, std::string_view image) {
  const auto parts =
      static_cast<std::uint32_t>(std::max<std::size_t>(1, (image.size() + kSnapshotPartBytes - 1) / kSnapshotPartBytes));
  for (std::uint32_t i = 0; i < parts; ++i) {
    header.body = SnapshotPart{i, parts, std::string(image.substr(std::size_t{i} * kSnapshotPartBytes, kSnapshotPartBytes))};
    Append(header);
    if (std::string err = Write(); !err.empty()) return err;
  }
  return "";
}

std::string JournalWriter::Write() {
  std::size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = "cannot write " + path_ + ": " + std::strerror(errno);
      // What did reach the file counts, and needs an fsync like the rest.
      bytes_ += done;
      if (done > 0) unsynced_ = true;
      buffer_.erase(0, done);
      return err;
    }
    done += static_cast<std::size_t>(n);
  }
  bytes_ += done;
  if (done > 0) unsynced_ = true;
  buffer_.clear();
  return "";
}

std::string JournalWriter::Sync() {
  if (fd_ < 0) return "";
  if (std::string err = Write(); !err.empty()) return err;
  if (!unsynced_) return "";
  if (::fdatasync(fd_) != 0) return "cannot fsync " + path_ + ": " + std::strerror(errno);
  unsynced_ = false;
  ++syncs_;
  return "";
}

}  // namespace lockgraph::daemon
