#include "replay.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

#include "lockgraph/graph/report.h"

namespace lockgraph::daemon {

// ---------------------------------------------------------------- time

namespace {

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian, UTC).
std::int64_t DaysFromCivil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void CivilFromDays(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
}

bool IsLeap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned DaysIn(std::int64_t y, unsigned m) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

unsigned Digits(std::string_view s) {
  unsigned v = 0;
  for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
  return v;
}

}  // namespace

std::variant<std::int64_t, std::string> ParseTime(std::string_view text) {
  const std::string quoted = "bad TIME \"" + std::string(text) + "\": ";
  if (text.empty()) return quoted + "empty";
  if (AllDigits(text)) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size()) return quoted + "too large for Unix microseconds";
    return v;
  }
  // YYYY-MM-DDTHH:MM:SS[.ffffff][Z]
  const std::string expected =
      "expected Unix microseconds (digits only) or UTC ISO 8601 YYYY-MM-DDTHH:MM:SS[.ffffff][Z]";
  if (text.size() < 19) return quoted + expected;
  auto digits_at = [&](std::size_t at, std::size_t n) { return AllDigits(text.substr(at, n)); };
  if (!digits_at(0, 4) || text[4] != '-' || !digits_at(5, 2) || text[7] != '-' || !digits_at(8, 2) ||
      text[10] != 'T' || !digits_at(11, 2) || text[13] != ':' || !digits_at(14, 2) || text[16] != ':' ||
      !digits_at(17, 2)) {
    return quoted + expected;
  }
  std::int64_t micros = 0;
  std::size_t at = 19;
  if (at < text.size() && text[at] == '.') {
    std::size_t n = 0;
    while (at + 1 + n < text.size() && text[at + 1 + n] >= '0' && text[at + 1 + n] <= '9') ++n;
    if (n == 0 || n > 6) return quoted + "the fraction of a second takes 1 to 6 digits";
    micros = Digits(text.substr(at + 1, n));
    for (std::size_t i = n; i < 6; ++i) micros *= 10;
    at += 1 + n;
  }
  if (at < text.size() && text[at] == 'Z') ++at;
  if (at != text.size()) {
    return quoted + "unexpected \"" + std::string(text.substr(at)) + "\" (only UTC is accepted: end with Z or nothing)";
  }
  const std::int64_t year = Digits(text.substr(0, 4));
  const unsigned month = Digits(text.substr(5, 2)), day = Digits(text.substr(8, 2));
  const unsigned hour = Digits(text.substr(11, 2)), minute = Digits(text.substr(14, 2)),
                 second = Digits(text.substr(17, 2));
  if (month < 1 || month > 12) return quoted + "month " + std::to_string(month) + " is not 01 to 12";
  if (day < 1 || day > DaysIn(year, month)) {
    return quoted + "day " + std::to_string(day) + " does not exist in " + std::string(text.substr(0, 7));
  }
  if (hour > 23) return quoted + "hour " + std::to_string(hour) + " is not 00 to 23";
  if (minute > 59) return quoted + "minute " + std::to_string(minute) + " is not 00 to 59";
  if (second > 59) return quoted + "second " + std::to_string(second) + " is not 00 to 59";
  const std::int64_t seconds = DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
  return seconds * 1'000'000 + micros;
}

std::string FormatTime(std::int64_t unix_us) {
  // Floor division: times before 1970 print as the calendar says, not mirrored.
  std::int64_t secs = unix_us / 1'000'000, micros = unix_us % 1'000'000;
  if (micros < 0) {
    micros += 1'000'000;
    --secs;
  }
  std::int64_t days = secs / 86400, rest = secs % 86400;
  if (rest < 0) {
    rest += 86400;
    --days;
  }
  std::int64_t y = 0;
  unsigned m = 0, d = 0;
  CivilFromDays(days, y, m, d);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%06lldZ", static_cast<long long>(y), m, d,
                static_cast<long long>(rest / 3600), static_cast<long long>(rest / 60 % 60),
                static_cast<long long>(rest % 60), static_cast<long long>(micros));
  return buf;
}

// ---------------------------------------------------------------- the book

std::string_view EndHowName(EndHow how) {
  switch (how) {
    case EndHow::kReleased: return "released";
    case EndHow::kExpired: return "expired";
    case EndHow::kHandedOver: return "handed over";
    case EndHow::kRevokedGone: return "revoked and gone";
    case EndHow::kSessionClosed: return "session closed";
    case EndHow::kSessionExpired: return "session expired";
    case EndHow::kGranted: return "granted";
    case EndHow::kDenied: return "denied";
    case EndHow::kCancelled: return "cancelled";
    case EndHow::kHeld: return "held";
    case EndHow::kGone: return "gone";
  }
  return "unknown";
}

bool EndsWithTime(const EndedLease& e) {
  return e.how == EndHow::kExpired || e.how == EndHow::kRevokedGone || e.how == EndHow::kSessionExpired ||
         e.how == EndHow::kGone;
}

bool EndsWithTime(const EndedWait& e) {
  return (e.how == EndHow::kDenied && e.code == graph::Code::kTimeout) || e.how == EndHow::kSessionExpired ||
         e.how == EndHow::kGone;
}

namespace {

using WaitKey = std::tuple<std::string, std::string, std::string>;  // session, owner, resource

std::string_view KindName(RecordKind k) {
  switch (k) {
    case RecordKind::kBoot: return "boot";
    case RecordKind::kCommand: return "command";
    case RecordKind::kReport: return "report";
    case RecordKind::kSnapshot: return "snapshot";
  }
  return "unknown";
}

// The live leases and waits, fed by replies and events, checked against the core.
class Book {
 public:
  const LeaseRef* FindLease(graph::LeaseId id) const {
    auto it = leases_.find(id);
    return it == leases_.end() ? nullptr : &it->second;
  }
  const LeaseRef* FindHold(const std::string& session, const std::string& owner, const std::string& resource) const {
    auto it = by_holder_.find(WaitKey{session, owner, resource});
    return it == by_holder_.end() ? nullptr : FindLease(it->second);
  }
  bool Waiting(const WaitKey& key) const { return waits_.count(key) > 0; }

  // A grant or hold of `ref.lease` (a new lease, the same one again, or an upgrade).
  void Hold(LeaseRef ref) {
    auto [it, fresh] = leases_.try_emplace(ref.lease, ref);
    if (!fresh) {
      LeaseRef& have = it->second;
      if (!graph::Covers(have.mode, ref.mode)) have.mode = ref.mode;
      return;
    }
    by_holder_[WaitKey{ref.session, ref.owner, ref.resource}] = ref.lease;
  }
  void EndLease(graph::LeaseId id, EndHow how, ReplayStep& step) {
    auto it = leases_.find(id);
    if (it == leases_.end()) return;
    step.ended_leases.push_back(EndedLease{it->second, how});
    by_holder_.erase(WaitKey{it->second.session, it->second.owner, it->second.resource});
    leases_.erase(it);
  }
  void Revoked(const graph::RevokedEvent& e, ReplayStep& step) {
    auto it = leases_.find(e.lease);
    if (it == leases_.end()) {
      // Not known (cannot happen unless the book drifted): learn it from the event.
      LeaseRef ref;
      ref.lease = e.lease;
      ref.session = e.session;
      ref.owner = e.owner;
      ref.resource = e.resource;
      Hold(ref);
      it = leases_.find(e.lease);
    }
    if (e.reason == graph::RevokeReason::kExpired) {
      EndLease(e.lease, EndHow::kExpired, step);
      return;
    }
    it->second.revoked = true;
    // A granted lease revoked with no grace is handed over at once; a reported one
    // stays, doomed, until its holder releases it.
    if (e.handover_in_ms == 0 && !it->second.reported) EndLease(e.lease, EndHow::kHandedOver, step);
  }

  void Wait(WaitRef ref) {
    WaitKey key{ref.session, ref.owner, ref.resource};
    waits_.try_emplace(std::move(key), std::move(ref));
  }
  void EndWait(const WaitKey& key, EndHow how, graph::Code code, ReplayStep& step) {
    auto it = waits_.find(key);
    if (it == waits_.end()) return;
    step.ended_waits.push_back(EndedWait{it->second, how, code});
    waits_.erase(it);
  }

  void CloseSession(const std::string& session, bool expired, ReplayStep& step) {
    const EndHow how = expired ? EndHow::kSessionExpired : EndHow::kSessionClosed;
    for (auto it = waits_.lower_bound(WaitKey{session, "", ""});
         it != waits_.end() && std::get<0>(it->first) == session;) {
      step.ended_waits.push_back(EndedWait{it->second, how, graph::Code::kOk});
      it = waits_.erase(it);
    }
    std::vector<graph::LeaseId> ids;
    for (auto it = by_holder_.lower_bound(WaitKey{session, "", ""});
         it != by_holder_.end() && std::get<0>(it->first) == session; ++it) {
      ids.push_back(it->second);
    }
    std::sort(ids.begin(), ids.end());
    for (graph::LeaseId id : ids) EndLease(id, how, step);
  }

  // Makes the book agree with the core when their counts differ: what the core ended
  // without an event (hand-over of a revoked lease) or started without a grant
  // (restored leases).
  void Resync(const graph::Coordinator& core, ReplayStep& step) {
    const graph::Stats& s = core.stats();
    if (leases_.size() != s.live_leases) {
      std::map<graph::LeaseId, graph::LeaseInfo> live;
      for (graph::LeaseInfo& l : core.Leases()) live.emplace(l.lease, std::move(l));
      std::vector<graph::LeaseId> gone;
      for (const auto& [id, ref] : leases_) {
        if (!live.count(id)) gone.push_back(id);
      }
      for (graph::LeaseId id : gone) EndLease(id, leases_[id].revoked ? EndHow::kRevokedGone : EndHow::kGone, step);
      for (const auto& [id, l] : live) {
        if (leases_.count(id)) continue;
        LeaseRef ref;
        ref.lease = id;
        ref.session = l.session;
        ref.owner = l.owner;
        ref.resource = l.resource;
        ref.mode = l.mode;
        ref.reported = l.reported;
        ref.revoked = l.revoked;
        Hold(ref);
        step.appeared_leases.push_back(ref);
      }
    }
    if (waits_.size() != s.live_waits) {
      std::map<WaitKey, graph::WaitInfo> live;
      for (graph::WaitInfo& w : core.Waits()) {
        WaitKey key{w.session, w.owner, w.resource};
        live.emplace(std::move(key), std::move(w));
      }
      for (auto it = waits_.begin(); it != waits_.end();) {
        if (live.count(it->first)) {
          ++it;
          continue;
        }
        step.ended_waits.push_back(EndedWait{it->second, EndHow::kGone, graph::Code::kOk});
        it = waits_.erase(it);
      }
      for (const auto& [key, w] : live) {
        if (waits_.count(key)) continue;
        WaitRef ref;
        ref.session = w.session;
        ref.owner = w.owner;
        ref.resource = w.resource;
        ref.mode = w.mode;
        ref.reported = w.reported;
        ref.site = w.site;
        Wait(ref);
      }
    }
  }

  std::map<graph::LeaseId, LeaseRef> leases() const { return leases_; }
  std::vector<WaitRef> waits() const {
    std::vector<WaitRef> out;
    for (const auto& [key, w] : waits_) out.push_back(w);
    return out;
  }

 private:
  std::map<graph::LeaseId, LeaseRef> leases_;
  std::map<WaitKey, graph::LeaseId> by_holder_;  // an owner holds one lease per resource
  std::map<WaitKey, WaitRef> waits_;             // an owner waits once per resource
};

// Feeds the book with what one command did: events first (time advancing comes
// before the command acts), then the reply.
void Follow(Book& book, const graph::Command& command, const graph::Effects& fx, ReplayStep& step,
            std::vector<std::shared_ptr<const graph::DeadlockReport>>& deadlocks) {
  for (const graph::Event& ev : fx.events) {
    if (const auto* g = std::get_if<graph::GrantedEvent>(&ev)) {
      book.EndWait(WaitKey{g->session, g->owner, g->resource}, EndHow::kGranted, graph::Code::kOk, step);
      book.Hold(LeaseRef{g->lease, g->session, g->owner, g->resource, g->mode, false, false});
    } else if (const auto* d = std::get_if<graph::DeniedEvent>(&ev)) {
      book.EndWait(WaitKey{d->session, d->owner, d->resource}, EndHow::kDenied, d->code, step);
    } else if (const auto* r = std::get_if<graph::RevokedEvent>(&ev)) {
      book.Revoked(*r, step);
    } else if (const auto* c = std::get_if<graph::SessionClosedEvent>(&ev)) {
      book.CloseSession(c->session, c->expired, step);
    } else if (const auto* k = std::get_if<graph::DeadlockEvent>(&ev)) {
      deadlocks.push_back(k->report);
    }
  }
  const graph::Reply& reply = fx.reply;
  if (!reply.ok()) return;
  if (const auto* a = std::get_if<graph::Acquire>(&command)) {
    if (reply.granted && reply.lease != 0) {
      book.Hold(LeaseRef{reply.lease, a->auth.session, a->owner, a->resource, a->mode, false, false});
    } else if (reply.queued) {
      book.Wait(WaitRef{a->auth.session, a->owner, a->resource, a->mode, false, a->site});
    }
  } else if (const auto* h = std::get_if<graph::Hold>(&command)) {
    book.EndWait(WaitKey{h->auth.session, h->owner, h->resource}, EndHow::kHeld, graph::Code::kOk, step);
    if (reply.lease != 0) book.Hold(LeaseRef{reply.lease, h->auth.session, h->owner, h->resource, h->mode, true, false});
  } else if (const auto* w = std::get_if<graph::Wait>(&command)) {
    // Holding S and waiting for S is nothing to wait for; a re-sent wait is one wait.
    const LeaseRef* held = book.FindHold(w->auth.session, w->owner, w->resource);
    if (!(held != nullptr && w->mode == graph::Mode::kShared)) {
      book.Wait(WaitRef{w->auth.session, w->owner, w->resource, w->mode, true, w->site});
    }
  } else if (const auto* u = std::get_if<graph::Unwait>(&command)) {
    if (reply.cancelled) {
      book.EndWait(WaitKey{u->auth.session, u->owner, u->resource}, EndHow::kCancelled, graph::Code::kCancelled,
                   step);
    }
  } else if (std::holds_alternative<graph::Release>(command)) {
    book.EndLease(reply.lease, EndHow::kReleased, step);
  }
}

std::optional<graph::LeaseId> NamedLease(const graph::Command& command) {
  if (const auto* r = std::get_if<graph::Release>(&command)) return r->lease;
  if (const auto* r = std::get_if<graph::Renew>(&command)) return r->lease;
  if (const auto* r = std::get_if<graph::Revoke>(&command)) return r->lease;
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------- replay

std::variant<ReplayResult, std::string> ReplaySegment(const SegmentScan& scan,
                                                      std::optional<std::int64_t> until_wall_us,
                                                      const std::function<void(const ReplayStep&)>& on_step) {
  if (scan.records.empty()) {
    return std::string("the segment has no records, not even its boot record") +
           (scan.torn() ? " (" + scan.problem + ")" : "");
  }
  const JournalRecord& first = scan.records.front();
  const auto* boot = std::get_if<BootInfo>(&first.body);
  if (boot == nullptr) {
    return "record 1 is a " + std::string(KindName(first.kind())) +
           " record; a segment starts with its boot record";
  }
  if (boot->epoch >= graph::kEpochLimit || boot->first_seq == 0 || boot->first_seq >= graph::kSeqLimit) {
    return "the boot record's epoch " + std::to_string(boot->epoch) + " or first sequence number " +
           std::to_string(boot->first_seq) + " is impossible";
  }
  ReplayResult res;
  res.boot = *boot;
  res.boot_id = first.boot;
  res.boot_wall_us = first.wall_us;
  res.last_now_us = first.now_us;
  res.last_wall_us = first.wall_us;
  res.records_total = scan.records.size();
  res.problem = scan.problem;
  res.coordinator = std::make_unique<graph::Coordinator>(boot->config, boot->epoch, boot->first_seq);

  Book book;
  // The journal's deadlock reports against the replay's: a report record follows the
  // command record that made it, so every journaled report must be replayed first.
  std::unordered_multiset<std::string> replayed_reports;
  std::size_t deadlocks_seen = 0;
  SnapshotLoader snapshot;
  bool commands = false;

  for (std::size_t i = 0; i < scan.records.size(); ++i) {
    const JournalRecord& rec = scan.records[i];
    if (until_wall_us && rec.wall_us > *until_wall_us && i > 0) break;
    ReplayStep step;
    step.number = i + 1;
    step.record = &rec;
    step.coordinator = res.coordinator.get();
    graph::Effects effects;
    if (i > 0 && std::holds_alternative<BootInfo>(rec.body)) {
      return "record " + std::to_string(i + 1) + " is a second boot record; a segment holds one boot";
    }
    if (const auto* part = std::get_if<SnapshotPart>(&rec.body)) {
      if (commands) return "record " + std::to_string(i + 1) + ": a snapshot must follow the boot record";
      if (std::string err = snapshot.Add(SnapshotPart(*part), *res.coordinator, step.snapshot); !err.empty()) {
        return "record " + std::to_string(i + 1) + ": " + err;
      }
      if (step.snapshot) {
        book.Resync(*res.coordinator, step);
        res.last_now_us = std::max(res.last_now_us, rec.now_us);
      }
    } else if (const auto* command = std::get_if<graph::Command>(&rec.body)) {
      if (snapshot.pending()) return "record " + std::to_string(i + 1) + " comes before the snapshot is whole";
      commands = true;
      if (auto id = NamedLease(*command)) {
        if (const LeaseRef* l = book.FindLease(*id)) step.named_lease = *l;
      }
      graph::Command with_secret = *command;
      RestoreSecretFrom(with_secret, *res.coordinator);
      effects = res.coordinator->Apply(with_secret, rec.now_us);
      step.effects = &effects;
      Follow(book, *command, effects, step, res.deadlocks);
      book.Resync(*res.coordinator, step);
      res.last_now_us = std::max(res.last_now_us, rec.now_us);
      res.last_wall_us = rec.wall_us;
      for (; deadlocks_seen < res.deadlocks.size(); ++deadlocks_seen) {
        replayed_reports.insert(graph::RenderJson(*res.deadlocks[deadlocks_seen]));
      }
    } else if (const auto* report = std::get_if<ReportInfo>(&rec.body)) {
      if (report->type == ReportInfo::Type::kDeadlock) {
        if (auto it = replayed_reports.find(report->json); it != replayed_reports.end()) {
          replayed_reports.erase(it);
        } else {
          res.warnings.push_back("record " + std::to_string(i + 1) +
                                 ": the journal reports a deadlock that the replay did not reproduce "
                                 "(was the journal written by a different version of the core?): " +
                                 report->json);
        }
      }
    }
    res.records_applied = i + 1;
    if (on_step) on_step(step);
  }
  if (!res.stopped_early() && !scan.torn()) {
    for (const auto& report : res.deadlocks) {
      if (replayed_reports.count(graph::RenderJson(*report)) == 0) continue;
      res.warnings.push_back("the replay chose victim " + report->victim + " (deadlock #" +
                             std::to_string(report->id) + "), but the journal has no report record of it");
      replayed_reports.erase(replayed_reports.find(graph::RenderJson(*report)));
    }
  }
  res.leases = book.leases();
  res.waits = book.waits();
  return res;
}

std::variant<JournalRecord, std::string> ReadBootRecord(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot open " + path + ": " + std::strerror(errno);
  std::string head(kJournalMagic.size() + kRecordHeaderBytes, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  const auto got = static_cast<std::size_t>(in.gcount());
  if (got < kJournalMagic.size() || std::string_view(head).substr(0, kJournalMagic.size()) != kJournalMagic) {
    return path + " is not a lockgraph journal segment (no " + std::string(kJournalMagic) + " magic)";
  }
  if (got < head.size()) return path + ": no boot record (the segment ends after its magic)";
  auto le32 = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(head[at + static_cast<std::size_t>(i)]);
    return v;
  };
  const std::uint32_t n = le32(kJournalMagic.size());
  const std::uint32_t crc = le32(kJournalMagic.size() + 4);
  if (n == 0 || n > kMaxRecordBytes) return path + ": the boot record has an impossible length " + std::to_string(n);
  std::string payload(n, '\0');
  in.read(payload.data(), n);
  if (static_cast<std::size_t>(in.gcount()) != n) return path + ": the boot record is torn";
  if (Crc32c(payload) != crc) return path + ": the boot record's checksum does not match";
  auto decoded = DecodePayload(payload);
  if (auto* err = std::get_if<std::string>(&decoded)) return path + ": undecodable boot record: " + *err;
  auto& rec = std::get<JournalRecord>(decoded);
  if (!std::holds_alternative<BootInfo>(rec.body)) {
    return path + ": the first record is a " + std::string(KindName(rec.kind())) + " record, not a boot record";
  }
  return std::move(rec);
}

// ---------------------------------------------------------------- check-order

std::vector<graph::TraceOp> TraceOpsOf(const ReplayStep& step) {
  std::vector<graph::TraceOp> ops;
  if (step.effects == nullptr) return ops;
  const auto* command = std::get_if<graph::Command>(&step.record->body);
  if (command == nullptr) return ops;
  using Kind = graph::TraceOp::Kind;
  auto op = [&](Kind kind, const std::string& session, const std::string& owner, const std::string& resource,
                graph::Mode mode = graph::Mode::kExclusive, const std::string& site = "", std::int64_t wait_ms = -1) {
    graph::TraceOp o;
    o.kind = kind;
    o.session = session;
    o.owner = owner;
    o.resource = resource;
    o.mode = mode;
    o.site = site;
    o.wait_ms = wait_ms;
    ops.push_back(std::move(o));
  };
  auto ends = [&](bool with_time) {
    for (const EndedLease& e : step.ended_leases) {
      if (EndsWithTime(e) == with_time) op(Kind::kRelease, e.lease.session, e.lease.owner, e.lease.resource);
    }
    for (const EndedWait& e : step.ended_waits) {
      if (EndsWithTime(e) != with_time || e.how == EndHow::kGranted || e.how == EndHow::kHeld) continue;
      op(Kind::kUnwait, e.wait.session, e.wait.owner, e.wait.resource);
    }
  };
  ends(/*with_time=*/true);
  const graph::Reply& reply = step.effects->reply;
  const bool deadlock = reply.code == graph::Code::kDeadlock;
  if (const auto* a = std::get_if<graph::Acquire>(command)) {
    if (reply.ok() && reply.granted) {
      op(Kind::kAcquire, a->auth.session, a->owner, a->resource, a->mode, a->site, a->wait_ms);
    } else if ((reply.ok() && reply.queued) || deadlock) {
      op(Kind::kWait, a->auth.session, a->owner, a->resource, a->mode, a->site);
      if (deadlock) op(Kind::kUnwait, a->auth.session, a->owner, a->resource);
    }
  } else if (const auto* h = std::get_if<graph::Hold>(command)) {
    if (reply.ok()) op(Kind::kHold, h->auth.session, h->owner, h->resource, h->mode, h->site);
  } else if (const auto* w = std::get_if<graph::Wait>(command)) {
    if (reply.ok() || deadlock) op(Kind::kWait, w->auth.session, w->owner, w->resource, w->mode, w->site);
    if (deadlock) op(Kind::kUnwait, w->auth.session, w->owner, w->resource);
  } else if (const auto* u = std::get_if<graph::Unwait>(command)) {
    if (reply.ok()) op(Kind::kUnwait, u->auth.session, u->owner, u->resource);
  }
  ends(/*with_time=*/false);
  for (const EndedWait& e : step.ended_waits) {
    if (e.how == EndHow::kGranted) op(Kind::kHold, e.wait.session, e.wait.owner, e.wait.resource, e.wait.mode, e.wait.site);
  }
  // Restored at a restart: held from here on, in the order they were granted.
  for (const LeaseRef& l : step.appeared_leases) op(Kind::kHold, l.session, l.owner, l.resource, l.mode);
  return ops;
}

}  // namespace lockgraph::daemon
