// lockgraphd: the deadlock-detection and lock daemon.
#include <CLI/CLI.hpp>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "config.h"
#include "epoch_file.h"
#include "server.h"

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

}  // namespace

int main(int argc, char** argv) {
  // Blocks of 1 MiB and more (tables as they double, snapshot images) come from mmap
  // and go back to the system when freed. By default glibc raises this threshold after
  // the first such block is freed, and later ones then stay resident in the heap once
  // freed: with a million leases that kept 50-60 MB more than the leases need.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  using lockgraph::daemon::DaemonConfig;
  DaemonConfig config;
  CLI::App app{
      "lockgraphd: keeps the global ownership and wait-for graph of named resources, finds\n"
      "deadlocks the moment they close, picks a victim and revokes its lease; can also be the\n"
      "lock service itself, granting leases with fencing tokens.\n\n"
      "With no arguments it listens on tcp://127.0.0.1:7790 with the embedded defaults.\n"
      "Flags override the --config file, which overrides the defaults.",
      "lockgraphd"};
  std::string config_file;
  std::vector<std::string> listen;
  std::string data_dir, admin_token, log_level, victim_policy, rules_file, order_mode, fsync;
  std::int64_t confirm_ms = -1, victim_grace_ms = -1, revoke_grace_ms = -1, max_frame_bytes = -1,
               max_name_bytes = -1;
  app.add_option("--config", config_file, "TOML configuration file (see docs/configuration.md)")
      ->check(CLI::ExistingFile);
  app.add_option("--listen", listen,
                 "endpoint to listen on, repeatable (default tcp://127.0.0.1:7790; "
                 "tcp://127.0.0.1:* picks a free port; ipc://PATH works too)");
  app.add_option("--data-dir", data_dir, "directory for persistent state (default ./var/lockgraph)");
  app.add_option("--admin-token", admin_token, "token that authorises the revoke operation (default: revoke disabled)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off (default info)");
  app.add_option("--confirm-ms", confirm_ms, "report-mode cycles are acted on if they still stand after this (default 10; 0 acts at once)")
      ->check(CLI::Range(0, 86'400'000));
  app.add_option("--victim-grace-ms", victim_grace_ms, "a report-mode victim must release within this (default 2000)")
      ->check(CLI::Range(1, 86'400'000));
  app.add_option("--revoke-grace-ms", revoke_grace_ms, "revoked leases pass to waiters after this (default 1000)")
      ->check(CLI::Range(0, 86'400'000));
  app.add_option("--victim-policy", victim_policy,
                 "comma-separated steps, first decisive wins (default lowest_priority,youngest,fewest_leases,lowest_id)");
  app.add_option("--max-frame-bytes", max_frame_bytes, "largest accepted request frame (default 1048576)")
      ->check(CLI::Range(1024, 64 << 20));
  app.add_option("--max-name-bytes", max_name_bytes, "longest owner, resource or site name (default 1024)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--rules", rules_file,
                 "lock-ordering rules: a TOML file with an [ordering] table, read over the config's "
                 "(see docs/ordering.md)")
      ->check(CLI::ExistingFile);
  app.add_option("--order-mode", order_mode,
                 "lock-ordering mode for classes without their own: off, warn or enforce (default warn)")
      ->check(CLI::IsMember({"off", "warn", "enforce"}));
  app.add_option("--fsync", fsync,
                 "journal durability: always (a reply waits for its record's fsync), interval (fsync every "
                 "10 ms; the default) or never")
      ->check(CLI::IsMember({"always", "interval", "never"}));
  std::int64_t segment_kb = -1;
  app.add_option("--segment-kb", segment_kb,
                 "start a new journal segment from a snapshot once the current one has grown by this many KiB "
                 "and by its snapshot's size (default 65536)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 30));
  bool no_journal = false;
  app.add_flag("--no-journal", no_journal, "write no journal (no history, no replay)");
  CLI11_PARSE(app, argc, argv);

  if (!config_file.empty()) {
    if (std::string err = lockgraph::daemon::LoadConfigFile(config_file, config); !err.empty()) {
      std::cerr << "lockgraphd: " << err << "\n";
      return 2;
    }
  }
  if (!rules_file.empty()) {
    if (std::string err = lockgraph::daemon::LoadOrderRulesFile(rules_file, config); !err.empty()) {
      std::cerr << "lockgraphd: " << err << "\n";
      return 2;
    }
  }
  if (!order_mode.empty()) config.core.order.mode = *lockgraph::graph::ParseOrderMode(order_mode);
  if (!fsync.empty()) config.fsync = *lockgraph::daemon::ParseFsyncPolicy(fsync);
  if (no_journal) config.journal = false;
  if (segment_kb > 0) config.journal_segment_kb = segment_kb;
  if (!listen.empty()) config.listen = listen;
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (!admin_token.empty()) config.admin_token = admin_token;
  if (!log_level.empty()) config.log_level = log_level;
  if (confirm_ms >= 0) config.core.confirm_us = confirm_ms * 1000;
  if (victim_grace_ms >= 0) config.core.victim_grace_us = victim_grace_ms * 1000;
  if (revoke_grace_ms >= 0) config.core.revoke_grace_us = revoke_grace_ms * 1000;
  if (max_frame_bytes >= 0) config.max_frame_bytes = static_cast<std::size_t>(max_frame_bytes);
  if (max_name_bytes >= 0) config.core.max_name_bytes = static_cast<std::uint32_t>(max_name_bytes);
  if (!victim_policy.empty()) {
    std::vector<std::string> steps;
    std::string::size_type start = 0;
    for (;;) {
      auto comma = victim_policy.find(',', start);
      steps.push_back(victim_policy.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    auto parsed = lockgraph::daemon::ParseVictimPolicy(steps);
    if (auto* e = std::get_if<std::string>(&parsed)) {
      std::cerr << "lockgraphd: --victim-policy: " << *e << "\n";
      return 2;
    }
    config.core.victim_policy = std::get<0>(parsed);
  }
  if (std::string err = lockgraph::daemon::Validate(config); !err.empty()) {
    std::cerr << "lockgraphd: " << err << "\n";
    return 2;
  }
  // A journal write past a file-size limit fails with EFBIG (handled) instead of
  // killing the process with SIGXFSZ.
  std::signal(SIGXFSZ, SIG_IGN);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");

  // The epoch is on disk before anything is served: tokens never go backwards.
  auto epoch = lockgraph::daemon::AdvanceEpoch(config.data_dir);
  if (auto* err = std::get_if<std::string>(&epoch)) {
    std::cerr << "lockgraphd: " << *err << "\n";
    return 1;
  }
  config.epoch = std::get<std::uint32_t>(epoch);

  lockgraph::daemon::Server server(config);
  if (std::string err = server.Bind(); !err.empty()) {
    std::cerr << "lockgraphd: " << err << "\n";
    return 1;
  }
  // Endpoints go to stdout, one per line, so scripts and tests can find a wildcard port.
  for (const std::string& e : server.endpoints()) std::printf("listening on %s\n", e.c_str());
  std::fflush(stdout);
  spdlog::info("lockgraphd serving epoch {} on {} endpoint(s)", config.epoch, server.endpoints().size());

  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  server.Run(g_stop);
  spdlog::info("lockgraphd stopped");
  return 0;
}
