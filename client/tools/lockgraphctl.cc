// lockgraphctl: the operator's view of a running lockgraphd, the post-mortem tools
// over its journal (replay, history), and the offline lock-order checker
// (check-order) for CI.
//
//   status, graph, leases, deadlocks, revoke, order   ask a running daemon
//   replay DATA-DIR|SEGMENT [--at TIME]               the wait graph as it was at TIME,
//                                                     with every deadlock up to then
//   history RESOURCE|OWNER [--since TIME]             grants, waits, revocations,
//                                                     deadlocks of one resource or owner
//   check-order TRACE|SEGMENT...                      lock order over recorded traces
//                                                     or journal segments
// The post-mortem tools replay the journal (daemon/replay.h) through the same core
// the daemon runs, so what they show is what the daemon did, not a reconstruction.
// TIME is Unix microseconds or UTC ISO 8601 (2024-05-01T12:00:00[.123456][Z]).
//
// Exit codes: 0 success; 1 the daemon answered with an error (check-order: a
// violation or inversion was found); 2 bad usage or unreadable input; 3 the daemon
// did not answer within --timeout-ms.
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <zmq.hpp>

#include "check_order.h"
#include "journal.h"
#include "lockgraph/graph/coordinator.h"
#include "lockgraph/graph/report.h"
#include "lockgraph/protocol.h"
#include "replay.h"

namespace {

using lockgraph::protocol::Op;
using lockgraph::protocol::Reply;
using lockgraph::protocol::Request;

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;  // bad usage or unreadable input
constexpr int kExitUnreachable = 3;

struct Target {
  std::string endpoint = "tcp://127.0.0.1:7790";
  int timeout_ms = 3000;
};

// Sends one request and waits for its reply. Returns the exit code on failure.
int Call(const Target& t, Request req, Reply& reply) {
  zmq::context_t ctx;
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  try {
    sock.connect(t.endpoint);
  } catch (const zmq::error_t& e) {
    std::cerr << "lockgraphctl: cannot connect to " << t.endpoint << ": " << e.what() << "\n";
    return 2;
  }
  req.id = 1;
  const std::string frame = lockgraph::protocol::EncodeRequest(req, lockgraph::protocol::Encoding::kJson);
  sock.send(zmq::buffer(frame), zmq::send_flags::none);
  zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(t.timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      std::cerr << "lockgraphctl: no answer from " << t.endpoint << " within " << t.timeout_ms << " ms\n";
      return kExitUnreachable;
    }
    zmq::poll(items, 1, left);
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    zmq::message_t msg;
    if (!sock.recv(msg, zmq::recv_flags::dontwait)) continue;
    auto decoded = lockgraph::protocol::DecodeServerMessage(msg.to_string_view());
    if (auto* err = std::get_if<lockgraph::protocol::DecodeError>(&decoded)) {
      std::cerr << "lockgraphctl: unreadable answer: " << err->message << "\n";
      return kExitError;
    }
    auto& message = std::get<lockgraph::protocol::ServerMessage>(decoded);
    if (auto* r = std::get_if<Reply>(&message); r != nullptr && r->id == 1) {
      reply = std::move(*r);
      if (!reply.ok()) {
        std::cerr << "lockgraphctl: " << lockgraph::graph::CodeName(reply.code) << ": " << reply.message << "\n";
        return kExitError;
      }
      return kExitOk;
    }
  }
}

void PrintPretty(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError()) {
    std::cout << json << "\n";
    return;
  }
  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
  d.Accept(w);
  std::cout << buf.GetString() << "\n";
}

std::string S(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject() || !v.HasMember(key)) return "";
  const auto& m = v[key];
  if (m.IsString()) return m.GetString();
  if (m.IsBool()) return m.GetBool() ? "true" : "false";
  if (m.IsInt64()) return std::to_string(m.GetInt64());
  if (m.IsUint64()) return std::to_string(m.GetUint64());
  return "";
}

int Status(const Target& t, bool json) {
  Request req;
  req.op = Op::kStats;
  Reply reply;
  if (int rc = Call(t, req, reply)) return rc;
  if (json) {
    PrintPretty(reply.listing_json);
    return kExitOk;
  }
  rapidjson::Document d;
  d.Parse(reply.listing_json.c_str());
  std::printf("%s at %s, epoch %s\n", S(d, "server").c_str(), t.endpoint.c_str(), S(d, "epoch").c_str());
  std::printf("sessions %s  owners %s  resources %s  leases %s  waits %s  wait edges %s\n",
              S(d, "live_sessions").c_str(), S(d, "live_owners").c_str(), S(d, "live_resources").c_str(),
              S(d, "live_leases").c_str(), S(d, "live_waits").c_str(), S(d, "wait_edges").c_str());
  std::printf("requests %s  errors %s  bad frames %s  grants %s  queued %s  timeouts %s\n",
              S(d, "requests").c_str(), S(d, "errors").c_str(), S(d, "bad_frames").c_str(), S(d, "grants").c_str(),
              S(d, "queued").c_str(), S(d, "timeouts").c_str());
  std::printf("deadlocks %s  reordered %s  revocations %s  expiries %s  unresponsive victims %s\n",
              S(d, "deadlocks").c_str(), S(d, "cycles_reordered").c_str(), S(d, "revocations").c_str(),
              S(d, "expiries").c_str(), S(d, "victims_unresponsive").c_str());
  if (d.HasMember("journal") && d["journal"].IsObject()) {
    const auto& j = d["journal"];
    std::printf("journal fsync %s  %s bytes  %s fsyncs%s\n", S(j, "fsync").c_str(), S(j, "bytes").c_str(),
                S(j, "syncs").c_str(), S(j, "failed") == "true" ? "  WRITE ERRORS (see the log)" : "");
    std::printf("segment %s  %s bytes  snapshots %s (last %s bytes in %s ms)%s\n", S(j, "segment").c_str(),
                S(j, "segment_bytes").c_str(), S(j, "snapshots").c_str(), S(j, "last_snapshot_bytes").c_str(),
                S(j, "last_snapshot_ms").c_str(),
                S(j, "snapshot_failures") != "0" ? ("  " + S(j, "snapshot_failures") + " FAILED (see the log)").c_str() : "");
  }
  std::printf("restart: restored %s lease(s), reclaimed %s, refused %s%s\n", S(d, "restored_leases").c_str(),
              S(d, "reclaimed").c_str(), S(d, "reclaims_refused").c_str(),
              S(d, "in_grace") == "true" ? "  IN GRACE (acquires answered GRACE)" : "");
  if (d.HasMember("order") && d["order"].IsObject()) {
    const auto& o = d["order"];
    std::printf("ordering: %s warning(s), %s denied, %s distinct report(s), %s learned edge(s)\n",
                S(o, "warnings").c_str(), S(o, "denied").c_str(), S(o, "reports").c_str(),
                S(o, "learned_edges").c_str());
  }
  return kExitOk;
}

// The text rendering of the graph JSON (graph::GraphJson): holds, waits, edges.
bool PrintGraphText(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsObject()) return false;
  for (const char* key : {"holds", "waits", "edges"}) {
    if (!d.HasMember(key) || !d[key].IsArray()) return false;
  }
  std::printf("holds:\n");
  for (const auto& h : d["holds"].GetArray()) {
    std::printf("  %-24s holds %-24s %s%s\n", S(h, "owner").c_str(), S(h, "resource").c_str(), S(h, "mode").c_str(),
                S(h, "revoked") == "true" ? " (revoked)" : "");
  }
  std::printf("waits:\n");
  for (const auto& w : d["waits"].GetArray()) {
    std::printf("  %-24s waits %-24s %s for %s ms%s%s\n", S(w, "owner").c_str(), S(w, "resource").c_str(),
                S(w, "mode").c_str(), S(w, "waiting_ms").c_str(), S(w, "reported") == "true" ? " (reported)" : "",
                S(w, "site").empty() ? "" : (" at " + S(w, "site")).c_str());
  }
  std::printf("wait-for edges:\n");
  for (const auto& e : d["edges"].GetArray()) {
    std::printf("  %s -> %s (%s)\n", S(e, "from").c_str(), S(e, "to").c_str(), S(e, "kind").c_str());
  }
  return true;
}

int Graph(const Target& t, const std::string& format) {
  Request req;
  req.op = Op::kGraph;
  req.format = format == "dot" ? "dot" : "json";
  Reply reply;
  if (int rc = Call(t, req, reply)) return rc;
  if (format == "dot") {
    std::cout << reply.graph_dot.value_or("");
    return kExitOk;
  }
  if (format == "json") {
    PrintPretty(reply.listing_json);
    return kExitOk;
  }
  return PrintGraphText(reply.listing_json) ? kExitOk : kExitError;
}

// Runs a listing query; prints it raw with --json, else parses it into `d` (an array)
// and returns -1 so the caller renders it.
int FetchList(const Target& t, Request req, Op op, bool json, rapidjson::Document& d) {
  req.op = op;
  Reply reply;
  if (int rc = Call(t, req, reply)) return rc;
  if (json) {
    PrintPretty(reply.listing_json);
    return kExitOk;
  }
  d.Parse(reply.listing_json.c_str());
  if (d.HasParseError() || !d.IsArray()) {
    std::cerr << "lockgraphctl: the daemon's listing is not a JSON array\n";
    return kExitError;
  }
  return -1;
}

int Leases(const Target& t, const Request& filters, bool json) {
  rapidjson::Document d;
  if (int rc = FetchList(t, filters, Op::kLeases, json, d); rc >= 0) return rc;
  std::printf("%-20s %-22s %-28s %-4s %10s  %s\n", "LEASE", "OWNER", "RESOURCE", "MODE", "EXPIRES", "FLAGS");
  for (const auto& l : d.GetArray()) {
    std::string flags;
    if (S(l, "reported") == "true") flags += "reported ";
    if (S(l, "revoked") == "true") flags += "revoked ";
    std::printf("%-20s %-22s %-28s %-4s %8sms  %s\n", S(l, "lease").c_str(),
                (S(l, "session") + "/" + S(l, "owner")).c_str(), S(l, "resource").c_str(), S(l, "mode").c_str(),
                S(l, "expires_in_ms").c_str(), flags.c_str());
  }
  return kExitOk;
}

int Deadlocks(const Target& t, const Request& filters, bool json) {
  rapidjson::Document d;
  if (int rc = FetchList(t, filters, Op::kDeadlocks, json, d); rc >= 0) return rc;
  if (d.Empty()) std::printf("no deadlocks\n");
  for (const auto& r : d.GetArray()) {
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    r.Accept(w);
    auto report = lockgraph::protocol::ParseDeadlockJson(buf.GetString());
    if (report) std::cout << lockgraph::graph::RenderText(*report) << "\n";
  }
  return kExitOk;
}

int Revoke(const Target& t, const std::string& token, std::optional<std::uint64_t> lease, const std::string& resource) {
  Request req;
  req.op = Op::kRevoke;
  req.admin_token = token;
  req.lease = lease;
  req.resource = resource;
  Reply reply;
  if (int rc = Call(t, req, reply)) return rc;
  const auto revoked = reply.revoked.value_or(std::vector<std::uint64_t>{});
  std::printf("revoked %zu lease(s)", revoked.size());
  for (auto id : revoked) std::printf(" %llu", static_cast<unsigned long long>(id));
  std::printf("\n");
  return kExitOk;
}

// `order`: the learned class order and the reports; `order export`: the rules file.
int Order(const Target& t, bool json, bool export_rules, const std::string& out_path) {
  Request req;
  req.op = Op::kOrder;
  Reply reply;
  if (int rc = Call(t, req, reply)) return rc;
  if (json && !export_rules) {
    PrintPretty(reply.listing_json);
    return kExitOk;
  }
  rapidjson::Document d;
  d.Parse(reply.listing_json.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("edges") || !d["edges"].IsArray() ||
      !d.HasMember("reports") || !d["reports"].IsArray()) {
    std::cerr << "lockgraphctl: the daemon's order listing is not the expected object\n";
    return kExitError;
  }
  if (export_rules) {
    const std::string rules = S(d, "rules");
    if (out_path.empty() || out_path == "-") {
      std::cout << rules;
      return kExitOk;
    }
    std::ofstream out(out_path, std::ios::trunc);
    out << rules;
    if (!out) {
      std::cerr << "lockgraphctl: cannot write " << out_path << "\n";
      return 2;
    }
    return kExitOk;
  }
  std::printf("ordering mode %s; %zu learned class edge(s):\n", S(d, "mode").c_str(), static_cast<std::size_t>(d["edges"].Size()));
  for (const auto& e : d["edges"].GetArray()) {
    const std::string site = S(e, "site");
    std::printf("  %-16s -> %-16s seen %6s time(s)%s, first by %s/%s%s\n", S(e, "from").c_str(), S(e, "to").c_str(),
                S(e, "count").c_str(), S(e, "inversion") == "true" ? " INVERSION" : "", S(e, "session").c_str(),
                S(e, "owner").c_str(), site.empty() ? "" : (" at " + site).c_str());
  }
  if (d["reports"].Empty()) std::printf("no ordering reports\n");
  for (const auto& r : d["reports"].GetArray()) {
    std::printf("\nreport seen %s time(s):\n%s", S(r, "count").c_str(), S(r, "text").c_str());
  }
  return kExitOk;
}

// ---------------------------------------------------------------- post-mortem

namespace journal = lockgraph::daemon;

void Warn(const std::string& what) { std::cerr << "lockgraphctl: warning: " << what << "\n"; }
int Unreadable(const std::string& what) {
  std::cerr << "lockgraphctl: " << what << "\n";
  return kExitUsage;
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The segment of `path` (a data directory or a segment file) that covers `at`: the
// last one that started at or before it (the last one without `at`). Sets `error`
// and returns "" when there is none.
std::string ChooseSegment(const std::string& path, std::optional<std::int64_t> at, std::string& error) {
  if (!IsDirectory(path)) {
    if (at) {
      auto boot = journal::ReadBootRecord(path);
      if (auto* err = std::get_if<std::string>(&boot)) {
        error = *err;
        return "";
      }
      const auto& rec = std::get<journal::JournalRecord>(boot);
      if (rec.wall_us > *at) {
        error = path + " starts at " + journal::FormatTime(rec.wall_us) + ", after " + journal::FormatTime(*at) +
                "; nothing of it had happened yet";
        return "";
      }
    }
    return path;
  }
  const std::vector<std::string> segments = journal::ListSegments(path);
  if (segments.empty()) {
    error = "no journal segments in " + path + "/journal (is it a lockgraphd data directory with its journal on?)";
    return "";
  }
  if (!at) {
    // The last segment that has a boot record (a daemon that died while creating one
    // leaves an empty segment behind).
    for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
      auto boot = journal::ReadBootRecord(*it);
      if (std::holds_alternative<journal::JournalRecord>(boot)) return *it;
      Warn(std::get<std::string>(boot) + "; skipped");
    }
    error = "no journal segment of " + path + " has a readable boot record";
    return "";
  }
  std::string chosen;
  std::optional<std::int64_t> first_start;
  for (const std::string& segment : segments) {
    auto boot = journal::ReadBootRecord(segment);
    if (auto* err = std::get_if<std::string>(&boot)) {
      Warn(*err + "; skipped");
      continue;
    }
    const std::int64_t start = std::get<journal::JournalRecord>(boot).wall_us;
    if (!first_start) first_start = start;
    if (start <= *at) chosen = segment;
  }
  if (chosen.empty()) {
    error = "no journal segment of " + path + " starts at or before " + journal::FormatTime(*at) +
            (first_start ? " (the first starts at " + journal::FormatTime(*first_start) + ")" : "");
  }
  return chosen;
}

std::variant<journal::SegmentScan, std::string> ScanWithWarning(const std::string& path) {
  auto scan = journal::ScanSegment(path);
  if (auto* s = std::get_if<journal::SegmentScan>(&scan); s != nullptr && s->torn()) {
    Warn(s->problem + "; read up to the last good record (" + std::to_string(s->records.size()) + " records)");
  }
  return scan;
}

int Replay(const std::string& path, const std::string& at_text, const std::string& format) {
  std::optional<std::int64_t> at;
  if (!at_text.empty()) {
    auto parsed = journal::ParseTime(at_text);
    if (auto* err = std::get_if<std::string>(&parsed)) return Unreadable("--at: " + *err);
    at = std::get<std::int64_t>(parsed);
  }
  std::string error;
  const std::string segment = ChooseSegment(path, at, error);
  if (segment.empty()) return Unreadable(error);
  auto scanned = ScanWithWarning(segment);
  if (auto* err = std::get_if<std::string>(&scanned)) return Unreadable(*err);
  auto replayed = journal::ReplaySegment(std::get<journal::SegmentScan>(scanned), at);
  if (auto* err = std::get_if<std::string>(&replayed)) return Unreadable(segment + ": " + *err);
  const journal::ReplayResult& r = std::get<journal::ReplayResult>(replayed);
  for (const std::string& w : r.warnings) Warn(segment + ": " + w);
  // Waits are measured at the moment asked for while the daemon was still running
  // then (later records exist), else at the last record.
  std::int64_t now = r.last_now_us;
  if (at && r.stopped_early()) now += std::max<std::int64_t>(0, *at - r.last_wall_us);
  const std::string graph_json = lockgraph::graph::GraphJson(*r.coordinator, now);
  if (format == "json") {
    std::cout << graph_json << "\n";
    return kExitOk;
  }
  if (format == "dot") {
    std::cout << r.coordinator->ToDot();
    return kExitOk;
  }
  std::printf("journal %s: boot %s (epoch %u, %s)\n", segment.c_str(), journal::FormatTime(r.boot_wall_us).c_str(),
              r.boot.epoch, r.boot.server.c_str());
  std::printf("replayed %zu of %zu records, up to %s%s\n", r.records_applied, r.records_total,
              journal::FormatTime(r.last_wall_us).c_str(),
              at ? (" (as of " + journal::FormatTime(*at) + ")").c_str() : "");
  PrintGraphText(graph_json);
  // A segment that starts from a snapshot continues earlier ones of the same boot:
  // their deadlocks came before it.
  std::vector<std::shared_ptr<const lockgraph::graph::DeadlockReport>> deadlocks;
  if (IsDirectory(path)) {
    auto boot_of = [](const std::string& s) -> std::optional<std::uint64_t> {
      auto boot = journal::ReadBootRecord(s);
      auto* rec = std::get_if<journal::JournalRecord>(&boot);
      return rec ? std::optional<std::uint64_t>(rec->boot) : std::nullopt;
    };
    const std::vector<std::string> segments = journal::ListSegments(path);
    std::vector<std::string> earlier;
    auto it = std::find(segments.begin(), segments.end(), segment);
    while (it != segments.begin() && boot_of(*std::prev(it)) == r.boot_id) earlier.insert(earlier.begin(), *--it);
    for (const std::string& e : earlier) {
      auto scan = ScanWithWarning(e);
      if (auto* err = std::get_if<std::string>(&scan)) {
        Warn(*err + "; its deadlocks are not shown");
        continue;
      }
      auto before = journal::ReplaySegment(std::get<journal::SegmentScan>(scan), std::nullopt);
      if (auto* err = std::get_if<std::string>(&before)) {
        Warn(e + ": " + *err + "; its deadlocks are not shown");
        continue;
      }
      const auto& b = std::get<journal::ReplayResult>(before);
      deadlocks.insert(deadlocks.end(), b.deadlocks.begin(), b.deadlocks.end());
    }
  }
  deadlocks.insert(deadlocks.end(), r.deadlocks.begin(), r.deadlocks.end());
  if (deadlocks.empty()) {
    std::printf("deadlocks up to then: none\n");
  } else {
    std::printf("deadlocks up to then: %zu\n", deadlocks.size());
    for (const auto& report : deadlocks) {
      std::string text = lockgraph::graph::RenderText(*report);
      if (text.empty() || text.back() != '\n') text += '\n';
      std::printf("\ndeadlock #%llu at %s:\n%s", static_cast<unsigned long long>(report->id),
                  journal::FormatTime(report->detected_at_us).c_str(), text.c_str());
    }
  }
  return kExitOk;
}

// ---- history

class History {
 public:
  History(std::string what, std::optional<std::int64_t> since) : what_(std::move(what)), since_(since) {}

  // Whether the segment about to be replayed continues the previous one (the same
  // boot, started from a snapshot): what its snapshot holds was told already.
  void set_continues(bool continues) { continues_ = continues; }

  void Step(const journal::ReplayStep& step) {
    wall_us_ = step.record->wall_us;
    if (step.snapshot && !continues_) {
      // The segments before it are gone (pruned): start from what it holds.
      for (const auto& l : step.appeared_leases) {
        if (Concerns(l.full_owner(), l.resource)) {
          Line(l.full_owner() + " held " + Mode(l.mode) + " " + l.resource + " (lease " + std::to_string(l.lease) +
               (l.revoked ? ", revoked" : "") + ") when the journal's oldest segment began");
        }
      }
    }
    if (const auto* report = std::get_if<journal::ReportInfo>(&step.record->body)) {
      if (report->type == journal::ReportInfo::Type::kOrder) OrderReport(report->json);
      return;
    }
    const auto* command = std::get_if<lockgraph::graph::Command>(&step.record->body);
    if (command == nullptr || step.effects == nullptr) return;
    for (const auto& e : step.ended_leases) {
      if (journal::EndsWithTime(e)) Ended(e);
    }
    for (const auto& e : step.ended_waits) {
      if (journal::EndsWithTime(e)) Ended(e);
    }
    // The command, what it ended itself (a release, a closing session), then what
    // followed from it (grants to waiters, revocations, deadlocks).
    Command(*command, step);
    for (const auto& e : step.ended_leases) {
      if (!journal::EndsWithTime(e)) Ended(e);
    }
    for (const auto& e : step.ended_waits) {
      if (!journal::EndsWithTime(e)) Ended(e);
    }
    for (const auto& ev : step.effects->events) Event(ev);
    for (const auto& l : step.appeared_leases) {
      if (Concerns(l.full_owner(), l.resource)) {
        Line(l.full_owner() + " holds " + Mode(l.mode) + " " + l.resource + ": lease " + std::to_string(l.lease) +
             " restored at a restart");
      }
    }
  }

  // What was still live when the segment ended: the daemon stopped there (a next
  // boot's restored leases show up as such in its own segment).
  void SegmentEnd(const journal::ReplayResult& r, const std::string& segment, bool continued) {
    if (continued) return;  // the next segment goes on from a snapshot of this state
    wall_us_ = r.last_wall_us;
    for (const auto& [id, l] : r.leases) {
      if (Concerns(l.full_owner(), l.resource)) {
        Line(l.full_owner() + " still held " + l.resource + " (lease " + std::to_string(id) +
             (l.revoked ? ", revoked" : "") + ") at the end of " + segment);
      }
    }
    for (const auto& w : r.waits) {
      if (Concerns(w.full_owner(), w.resource)) {
        Line(w.full_owner() + " still waited for " + w.resource + " at the end of " + segment);
      }
    }
  }

  std::size_t lines() const { return lines_; }

 private:
  static std::string Mode(lockgraph::graph::Mode m) { return std::string(lockgraph::graph::ModeName(m)); }
  static std::string Code(lockgraph::graph::Code c) { return std::string(lockgraph::graph::CodeName(c)); }

  bool OwnerIs(const std::string& full) const {
    if (full == what_) return true;
    const auto slash = full.find('/');
    return slash != std::string::npos && full.compare(slash + 1, std::string::npos, what_) == 0;
  }
  bool Concerns(const std::string& full_owner, const std::string& resource) const {
    return resource == what_ || OwnerIs(full_owner);
  }
  void Line(const std::string& text) {
    if (since_ && wall_us_ < *since_) return;
    std::printf("%s  %s\n", journal::FormatTime(wall_us_).c_str(), text.c_str());
    ++lines_;
  }

  void Ended(const journal::EndedLease& e) {
    const journal::LeaseRef& l = e.lease;
    if (!Concerns(l.full_owner(), l.resource)) return;
    const std::string lease = "lease " + std::to_string(l.lease) + " on " + l.resource;
    switch (e.how) {
      case journal::EndHow::kReleased: Line(l.full_owner() + " released " + l.resource + " (lease " + std::to_string(l.lease) + ")"); break;
      case journal::EndHow::kExpired: Line(l.full_owner() + " " + lease + " expired (its TTL ran out)"); break;
      case journal::EndHow::kHandedOver: break;  // the revocation said so
      case journal::EndHow::kRevokedGone: Line(l.full_owner() + " revoked " + lease + " is gone (handed over or expired)"); break;
      case journal::EndHow::kSessionClosed: Line(l.full_owner() + " " + lease + " ended: its session closed"); break;
      case journal::EndHow::kSessionExpired: Line(l.full_owner() + " " + lease + " ended: its session expired"); break;
      default: Line(l.full_owner() + " " + lease + " ended"); break;
    }
  }
  void Ended(const journal::EndedWait& e) {
    const journal::WaitRef& w = e.wait;
    if (!Concerns(w.full_owner(), w.resource)) return;
    const std::string what = w.full_owner() + (w.reported ? " reported wait for " : " queued acquire of ") + w.resource;
    switch (e.how) {
      case journal::EndHow::kDenied:
        if (e.code == lockgraph::graph::Code::kTimeout) Line(what + " timed out (TIMEOUT)");
        break;  // other denials: the event's line
      case journal::EndHow::kSessionClosed: Line(what + " ended: its session closed"); break;
      case journal::EndHow::kSessionExpired: Line(what + " ended: its session expired"); break;
      case journal::EndHow::kGone: Line(what + " ended"); break;
      default: break;  // granted, cancelled, held: said by their own lines
    }
  }

  void Command(const lockgraph::graph::Command& command, const journal::ReplayStep& step) {
    namespace g = lockgraph::graph;
    const g::Reply& reply = step.effects->reply;
    auto deadlock_note = [&] {
      return reply.deadlock ? " (deadlock #" + std::to_string(reply.deadlock->id) + ")" : std::string();
    };
    if (const auto* a = std::get_if<g::Acquire>(&command)) {
      const std::string who = a->auth.session + "/" + a->owner;
      if (!Concerns(who, a->resource)) return;
      const std::string head = who + " acquire " + Mode(a->mode) + " " + a->resource + ": ";
      if (reply.ok() && reply.granted) {
        Line(head + "granted, lease " + std::to_string(reply.lease) + ", token " + std::to_string(reply.token));
      } else if (reply.ok() && reply.queued) {
        Line(head + "queued" + (a->wait_ms < 0 ? " (waits forever)" : " (waits up to " + std::to_string(a->wait_ms) + " ms)"));
      } else if (!reply.ok()) {
        Line(head + "refused, " + Code(reply.code) +
             (reply.code == g::Code::kDeadlock ? ": this owner is the victim" + deadlock_note() : ": " + reply.message));
      }
    } else if (const auto* h = std::get_if<g::Hold>(&command)) {
      const std::string who = h->auth.session + "/" + h->owner;
      if (!Concerns(who, h->resource) || !reply.ok()) return;
      Line(who + " hold " + Mode(h->mode) + " " + h->resource + " reported: lease " + std::to_string(reply.lease));
    } else if (const auto* w = std::get_if<g::Wait>(&command)) {
      const std::string who = w->auth.session + "/" + w->owner;
      if (!Concerns(who, w->resource)) return;
      const std::string head = who + " wait " + Mode(w->mode) + " " + w->resource + " reported";
      if (reply.ok()) Line(head);
      else Line(head + ": refused, " + Code(reply.code) + (reply.code == g::Code::kDeadlock ? ": this owner is the victim" + deadlock_note() : ""));
    } else if (const auto* u = std::get_if<g::Unwait>(&command)) {
      const std::string who = u->auth.session + "/" + u->owner;
      if (!Concerns(who, u->resource) || !reply.ok()) return;
      if (reply.cancelled) Line(who + " unwait " + u->resource + ": the wait ended");
      else if (reply.granted) Line(who + " unwait " + u->resource + ": already granted (lease " + std::to_string(reply.lease) + ")");
      else Line(who + " unwait " + u->resource + ": nothing to end");
    } else if (const auto* rc = std::get_if<g::Reclaim>(&command)) {
      for (std::size_t i = 0; i < rc->items.size(); ++i) {
        const g::ReclaimItem& item = rc->items[i];
        const std::string who = rc->auth.session + "/" + item.owner;
        if (!Concerns(who, item.resource)) continue;
        std::string outcome = Code(reply.code);
        if (i < reply.items.size()) {
          outcome = Code(reply.items[i].code) + (reply.items[i].message.empty() ? "" : ": " + reply.items[i].message);
        }
        Line(who + " reclaim " + Mode(item.mode) + " " + item.resource + " (token " + std::to_string(item.token) +
             "): " + outcome);
      }
    } else if (const auto* r = std::get_if<g::Revoke>(&command)) {
      const bool concerns = (!r->resource.empty() && r->resource == what_) ||
                            (step.named_lease && Concerns(step.named_lease->full_owner(), step.named_lease->resource));
      if (!concerns || !reply.ok()) return;
      Line("operator revoke of " + (r->lease ? "lease " + std::to_string(*r->lease) : "every lease on " + r->resource) +
           ": " + std::to_string(reply.revoked.size()) + " lease(s) revoked");
    }
  }

  void Event(const lockgraph::graph::Event& ev) {
    namespace g = lockgraph::graph;
    if (const auto* e = std::get_if<g::GrantedEvent>(&ev)) {
      const std::string who = e->session + "/" + e->owner;
      if (Concerns(who, e->resource)) {
        Line(who + " granted " + Mode(e->mode) + " " + e->resource + " after waiting: lease " + std::to_string(e->lease) +
             ", token " + std::to_string(e->token));
      }
    } else if (const auto* e = std::get_if<g::DeniedEvent>(&ev)) {
      const std::string who = e->session + "/" + e->owner;
      if (!Concerns(who, e->resource) || e->code == g::Code::kTimeout) return;
      Line(who + (e->request_id != 0 ? " queued acquire of " : " reported wait for ") + e->resource + " denied: " +
           Code(e->code) +
           (e->deadlock ? " (victim of deadlock #" + std::to_string(e->deadlock->id) + ")" : std::string()));
    } else if (const auto* e = std::get_if<g::RevokedEvent>(&ev)) {
      const std::string who = e->session + "/" + e->owner;
      if (!Concerns(who, e->resource) || e->reason == g::RevokeReason::kExpired) return;
      std::string text = who + " lease " + std::to_string(e->lease) + " on " + e->resource + " revoked (" +
                         std::string(g::RevokeReasonName(e->reason));
      if (e->deadlock) text += ", deadlock #" + std::to_string(e->deadlock->id);
      text += "), token " + std::to_string(e->token) + " is stale; ";
      text += e->handover_in_ms > 0 ? "hand-over in " + std::to_string(e->handover_in_ms) + " ms" : "hand-over at once (or when a reported hold is released)";
      Line(text);
    } else if (const auto* e = std::get_if<g::DeadlockEvent>(&ev)) {
      Deadlock(*e->report, "");
    } else if (const auto* e = std::get_if<g::VictimUnresponsiveEvent>(&ev)) {
      Deadlock(*e->report, "unresponsive");
    } else if (const auto* e = std::get_if<g::ConflictingHoldEvent>(&ev)) {
      const std::string who = e->session + "/" + e->owner;
      if (Concerns(who, e->resource) || OwnerIs(e->held_by)) {
        Line(who + " hold of " + e->resource + " conflicts with " + e->held_by + "'s (both recorded)");
      }
    }
  }

  void Deadlock(const lockgraph::graph::DeadlockReport& r, const std::string& kind) {
    bool concerns = OwnerIs(r.victim);
    std::string cycle;
    for (const auto& e : r.cycle) {
      concerns = concerns || OwnerIs(e.owner) || OwnerIs(e.held_by) || e.waits_for == what_;
      cycle += e.owner + " waits for " + e.waits_for + (e.soft ? " queued behind " : " held by ") + e.held_by + "; ";
    }
    if (!concerns) return;
    if (!cycle.empty()) cycle.resize(cycle.size() - 2);
    if (kind == "unresponsive") {
      Line("deadlock #" + std::to_string(r.id) + ": victim " + r.victim +
           " did not release within the grace; another victim follows");
      return;
    }
    Line("deadlock #" + std::to_string(r.id) + ": victim " + r.victim + " (" + r.why + "); cycle: " + cycle);
  }

  void OrderReport(const std::string& json) {
    rapidjson::Document d;
    d.Parse(json.c_str());
    if (d.HasParseError() || !d.IsObject()) return;
    const std::string who = S(d, "session") + "/" + S(d, "owner");
    bool concerns = Concerns(who, S(d, "resource")) || S(d, "held_resource") == what_;
    if (!concerns) return;
    Line("lock order report #" + S(d, "id") + " (" + S(d, "kind") + (S(d, "denied") == "true" ? ", denied" : "") +
         "): " + who + " asked for " + S(d, "resource") + " while holding " + S(d, "held_resource") + " (" +
         S(d, "from") + " -> " + S(d, "to") + ")");
  }

  std::string what_;
  std::optional<std::int64_t> since_;
  std::int64_t wall_us_ = 0;
  std::size_t lines_ = 0;
  bool continues_ = false;
};

int HistoryOf(const std::string& what, const std::string& since_text, const std::string& data_dir) {
  std::optional<std::int64_t> since;
  if (!since_text.empty()) {
    auto parsed = journal::ParseTime(since_text);
    if (auto* err = std::get_if<std::string>(&parsed)) return Unreadable("--since: " + *err);
    since = std::get<std::int64_t>(parsed);
  }
  if (what.empty()) return Unreadable("history needs a resource or an owner");
  if (!IsDirectory(data_dir)) return Unreadable("cannot read data directory " + data_dir);
  const std::vector<std::string> segments = journal::ListSegments(data_dir);
  if (segments.empty()) {
    return Unreadable("no journal segments in " + data_dir + "/journal (is --data-dir right, and was the journal on?)");
  }
  History history(what, since);
  bool unreadable = false;
  // Each segment's boot id: a segment with its predecessor's boot id started from a
  // snapshot of where that one ended.
  std::vector<std::optional<std::uint64_t>> boots;
  for (const std::string& segment : segments) {
    auto boot = journal::ReadBootRecord(segment);
    auto* rec = std::get_if<journal::JournalRecord>(&boot);
    boots.push_back(rec ? std::optional<std::uint64_t>(rec->boot) : std::nullopt);
  }
  auto same_boot = [&](std::size_t i, std::size_t j) { return boots[i] && boots[j] && *boots[i] == *boots[j]; };
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const std::string& segment = segments[i];
    history.set_continues(i > 0 && same_boot(i - 1, i));
    auto scanned = ScanWithWarning(segment);
    if (auto* err = std::get_if<std::string>(&scanned)) {
      std::cerr << "lockgraphctl: " << *err << "\n";
      unreadable = true;
      continue;
    }
    auto replayed = journal::ReplaySegment(std::get<journal::SegmentScan>(scanned), std::nullopt,
                                           [&](const journal::ReplayStep& step) { history.Step(step); });
    if (auto* err = std::get_if<std::string>(&replayed)) {
      std::cerr << "lockgraphctl: " << segment << ": " << *err << "\n";
      unreadable = true;
      continue;
    }
    const auto& r = std::get<journal::ReplayResult>(replayed);
    for (const std::string& w : r.warnings) Warn(segment + ": " + w);
    history.SegmentEnd(r, segment, i + 1 < segments.size() && same_boot(i, i + 1));
  }
  if (history.lines() == 0) {
    std::printf("no events for %s%s\n", what.c_str(), since ? (" since " + journal::FormatTime(*since)).c_str() : "");
  }
  return unreadable ? kExitUsage : kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "lockgraphctl: inspect and operate a running lockgraphd; replay its journal after the\n"
      "fact (replay, history); check lock order offline (check-order).\n\n"
      "TIME is Unix microseconds or UTC ISO 8601: 2024-05-01T12:00:00[.123456][Z].\n"
      "Exit codes: 0 success, 1 the daemon answered with an error (check-order: a report),\n"
      "2 bad usage or unreadable input, 3 the daemon did not answer in time.",
      "lockgraphctl"};
  app.require_subcommand(1);
  Target target;
  app.add_option("--endpoint,-e", target.endpoint, "daemon endpoint (default tcp://127.0.0.1:7790)");
  app.add_option("--timeout-ms", target.timeout_ms, "how long to wait for an answer (default 3000)")
      ->check(CLI::Range(1, 600'000));

  bool json = false;
  auto* status = app.add_subcommand("status", "counters and live totals");
  status->add_flag("--json", json, "print the raw JSON");

  std::string format = "text";
  auto* graph = app.add_subcommand("graph", "who holds what and who waits for whom");
  graph->add_option("--format,-f", format, "text, dot or json (default text)")
      ->check(CLI::IsMember({"text", "dot", "json"}));

  Request filters;
  auto* leases = app.add_subcommand("leases", "live leases");
  auto* deadlocks = app.add_subcommand("deadlocks", "recent deadlocks, with the victim and why");
  for (auto* sub : {leases, deadlocks}) {
    sub->add_option("--owner", filters.filter_owner, "only this owner (session/owner or owner)");
    sub->add_option("--resource", filters.filter_resource, "only this resource");
    sub->add_flag("--json", json, "print the raw JSON");
  }
  leases->add_option("--session", filters.filter_session, "only this session");

  std::string admin_token, resource;
  std::uint64_t lease = 0;
  auto* revoke = app.add_subcommand("revoke", "revoke a lease, or every lease on a resource (operator action)");
  revoke->add_option("--admin-token", admin_token, "the daemon's admin_token")->required();
  auto* lease_opt = revoke->add_option("--lease", lease, "lease id");
  auto* res_opt = revoke->add_option("--resource", resource, "resource name");
  lease_opt->excludes(res_opt);

  auto* order = app.add_subcommand("order", "the lock order learned so far, and its reports");
  order->add_flag("--json", json, "print the raw JSON");
  std::string export_out;
  auto* order_export = order->add_subcommand("export", "write the learned order as a rules file (TOML)");
  order_export->add_option("--output,-o", export_out, "file to write (default: standard output)");

  std::string replay_path, replay_at;
  auto* replay = app.add_subcommand(
      "replay",
      "the wait graph as it was at a moment, rebuilt from lockgraphd's journal with no daemon running, "
      "and every deadlock up to then (text; dot and json print the graph only, json as the daemon's "
      "`graph` query answers it). Exit 0; 2: unreadable input. A damaged journal tail is reported "
      "on stderr and replayed up to its last good record");
  replay->add_option("path", replay_path, "a data directory (its journal/*.lgj) or one journal segment (.lgj)")
      ->required();
  replay->add_option("--at", replay_at,
                     "TIME: the moment to show (default: the end of the last segment); in a data "
                     "directory, the segment of the daemon run that was live then");
  replay->add_option("--format,-f", format, "text, dot or json (default text)")
      ->check(CLI::IsMember({"text", "dot", "json"}));

  std::string history_what, history_since, data_dir = "./var/lockgraph";
  auto* history = app.add_subcommand(
      "history",
      "the audit trail of one resource or owner from lockgraphd's journal, one line per event: "
      "grants, queued and refused acquires, reported holds and waits, releases, expiries, "
      "revocations, deadlocks, ordering reports. Exit 0 (also when nothing matched); 2: unreadable input");
  history->add_option("what", history_what, "a resource name, or an owner as session/owner or owner")->required();
  history->add_option("--since", history_since, "TIME: only events at or after it");
  history->add_option("--data-dir", data_dir, "lockgraphd's data directory (default ./var/lockgraph)");

  lockgraph::tools::CheckOrderOptions check;
  std::string check_mode;
  auto* check_order = app.add_subcommand(
      "check-order",
      "check recorded lock traces (JSON lines, e.g. from LOCKGRAPH_RECORD) or lockgraphd journal "
      "segments (.lgj, recognised by their magic: the holds, waits and acquires the daemon applied) "
      "for lock-order violations and inversions, with no daemon. Exit 0: none; 1: some were found; "
      "2: unreadable input");
  check_order->add_option("traces", check.traces, "trace files or journal segments")->required();
  check_order->add_option("--rules", check.rules_file, "rules file with an [ordering] table (see docs/ordering.md)");
  check_order->add_option("--mode", check_mode, "override the rules' global mode: off, warn or enforce")
      ->check(CLI::IsMember({"off", "warn", "enforce"}));
  check_order->add_option("--junit", check.junit, "also write a JUnit XML report to this file");
  check_order->add_flag("--quiet,-q", check.quiet, "print only the summary line");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (check_order->parsed()) {
    if (!check_mode.empty()) check.mode = lockgraph::graph::ParseOrderMode(check_mode);
    return lockgraph::tools::CheckOrder(check);
  }
  if (replay->parsed()) return Replay(replay_path, replay_at, format);
  if (history->parsed()) return HistoryOf(history_what, history_since, data_dir);
  if (order->parsed()) return Order(target, json, order_export->parsed(), export_out);
  if (status->parsed()) return Status(target, json);
  if (graph->parsed()) return Graph(target, format);
  if (leases->parsed()) return Leases(target, filters, json);
  if (deadlocks->parsed()) return Deadlocks(target, filters, json);
  if (revoke->parsed()) {
    if (!lease_opt->count() && !res_opt->count()) {
      std::cerr << "lockgraphctl: revoke needs --lease or --resource\n";
      return 2;
    }
    return Revoke(target, admin_token, lease_opt->count() ? std::optional<std::uint64_t>(lease) : std::nullopt, resource);
  }
  return 2;
}
