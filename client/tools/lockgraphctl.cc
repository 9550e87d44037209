// lockgraphctl: the operator's view of a running lockgraphd, and the offline
// lock-order checker (check-order) for CI.
//
// Exit codes: 0 success; 1 the daemon answered with an error (check-order: a
// violation or inversion was found); 2 bad usage or unreadable input; 3 the daemon
// did not answer within --timeout-ms.
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <zmq.hpp>

#include <fstream>

#include "check_order.h"
#include "lockgraph/graph/report.h"
#include "lockgraph/protocol.h"

namespace {

using lockgraph::protocol::Op;
using lockgraph::protocol::Reply;
using lockgraph::protocol::Request;

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
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
  return kExitOk;
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
  rapidjson::Document d;
  d.Parse(reply.listing_json.c_str());
  if (d.HasParseError() || !d.IsObject()) return kExitError;
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
  return kExitOk;
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
  std::printf("ordering mode %s; %zu learned class edge(s):\n", S(d, "mode").c_str(), d["edges"].Size());
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "lockgraphctl: inspect and operate a running lockgraphd.\n\n"
      "Exit codes: 0 success, 1 the daemon answered with an error, 2 bad usage,\n"
      "3 the daemon did not answer in time.",
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

  lockgraph::tools::CheckOrderOptions check;
  std::string check_mode;
  auto* check_order = app.add_subcommand(
      "check-order",
      "check recorded lock traces (JSON lines, e.g. from LOCKGRAPH_RECORD) for lock-order violations and "
      "inversions, with no daemon. Exit 0: none; 1: some were found; 2: unreadable input");
  check_order->add_option("traces", check.traces, "trace files")->required();
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
