// lockgraph_restart_bench: how long lockgraphd takes to serve again after a restart
// with many live leases in its journal.
//
// Writes a journal segment into DIR as a daemon would have (a boot record, hellos,
// then one acquire per lease, all granted), starts lockgraphd on DIR, and measures
// the time from exec to its "listening on" line: reading the segment, replaying it,
// restoring every session and lease, and journaling the restore. Prints the time
// and the daemon's resident memory per restored lease.
//
// With --snapshot the segment is one that began mid-run: the boot record and a
// snapshot of the same state (built in-process through the core), no commands. It
// also prints how long taking that snapshot (Coordinator::SaveImage) took, which is
// most of the pause a running daemon makes when it starts a new segment.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "journal.h"

namespace {

using namespace lockgraph;

double image_s = 0;       // --snapshot: SaveImage's time
std::size_t image_bytes = 0;

std::string WriteJournal(const std::string& dir, std::int64_t leases, int sessions, int owners_per_session,
                         bool snapshot) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/epoch") << "1\n";
  daemon::JournalWriter w;
  if (std::string err = w.Open(dir, daemon::SegmentName(1, snapshot ? 1 : 0)); !err.empty()) return err;
  std::unique_ptr<graph::Coordinator> core;
  const graph::Config config;  // (named: GCC 12 warns, wrongly, about a braced temporary's map)
  if (snapshot) core = std::make_unique<graph::Coordinator>(config, 1);
  std::int64_t now = 1'000'000;
  daemon::JournalRecord r;
  r.boot = 1;
  r.now_us = now;
  daemon::BootInfo boot;
  boot.epoch = 1;
  boot.server = "restart-bench";
  r.body = std::move(boot);
  w.Append(r);
  for (int s = 0; s < sessions; ++s) {
    r.now_us = ++now;
    graph::Hello hello{"s" + std::to_string(s), "secret" + std::to_string(s), "bench", 600'000, 0};
    if (core) {
      core->Apply(hello, r.now_us);
      continue;
    }
    r.body = graph::Command{std::move(hello)};
    w.Append(r);
  }
  for (std::int64_t i = 0; i < leases; ++i) {
    const int s = static_cast<int>(i % sessions);
    graph::Acquire a;
    a.auth = {"s" + std::to_string(s), ""};  // as journaled: the secret is in the hello
    a.owner = "o" + std::to_string((i / sessions) % owners_per_session);
    a.resource = "r:" + std::to_string(i);
    a.ttl_ms = 600'000;
    a.wait_ms = 0;
    r.now_us = ++now;
    if (core) {
      a.auth.secret = "secret" + std::to_string(s);
      core->Apply(a, r.now_us);
      continue;
    }
    r.body = graph::Command{std::move(a)};
    w.Append(r);
    if (i % 65536 == 0) {
      if (std::string err = w.Write(); !err.empty()) return err;
    }
  }
  if (core) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string image = core->SaveImage();
    image_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    image_bytes = image.size();
    if (std::string err = w.AppendSnapshot(r, image); !err.empty()) return err;
  }
  return w.Sync();
}

long RssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long value = 0;
  while (in >> key) {
    if (key == "VmRSS:") {
      in >> value;
      return value;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lockgraph_restart_bench: time for lockgraphd to serve again with N live leases in its journal",
               "lockgraph_restart_bench"};
  std::string daemon_path, dir = "/tmp/lockgraph-restart-bench";
  std::int64_t leases = 1'000'000;
  int sessions = 1000, owners = 100;
  app.add_option("--lockgraphd", daemon_path, "path of the lockgraphd binary")->required();
  app.add_option("--dir", dir, "data directory to create (removed first)");
  app.add_option("--leases", leases, "live leases in the journal")->check(CLI::Range(std::int64_t{1}, std::int64_t{100'000'000}));
  app.add_option("--sessions", sessions, "sessions holding them")->check(CLI::Range(1, 1'000'000));
  app.add_option("--owners", owners, "owners per session")->check(CLI::Range(1, 1'000'000));
  bool snapshot = false;
  app.add_flag("--snapshot", snapshot, "the segment starts from a snapshot of the leases instead of their acquires");
  CLI11_PARSE(app, argc, argv);

  const auto t0 = std::chrono::steady_clock::now();
  if (std::string err = WriteJournal(dir, leases, sessions, owners, snapshot); !err.empty()) {
    std::cerr << "lockgraph_restart_bench: " << err << "\n";
    return 1;
  }
  const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto bytes = std::filesystem::file_size(daemon::ListSegments(dir).back());

  int out[2];
  if (pipe(out) != 0) return 1;
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(daemon_path.c_str(), daemon_path.c_str(), "--listen", "tcp://127.0.0.1:*", "--data-dir", dir.c_str(),
          "--log-level", "warn", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string seen;
  char buf[4096];
  while (seen.find("listening on") == std::string::npos) {
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<std::size_t>(n));
  }
  const double serve_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const long rss_kb = RssKb(pid);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  if (seen.find("listening on") == std::string::npos) {
    std::cerr << "lockgraph_restart_bench: lockgraphd did not start:\n" << seen << "\n";
    return 1;
  }
  std::printf("leases %lld  sessions %d  journal %.1f MB (written in %.2f s)\n", static_cast<long long>(leases),
              sessions, bytes / 1e6, write_s);
  if (snapshot) {
    std::printf("snapshot %.1f MB taken in %.3f s (%.0f bytes per lease)\n", image_bytes / 1e6, image_s,
                static_cast<double>(image_bytes) / static_cast<double>(leases));
  }
  std::printf("serving after %.3f s  rss %.1f MB  (%.0f bytes per lease)\n", serve_s, rss_kb / 1024.0,
              rss_kb * 1024.0 / static_cast<double>(leases));
  std::filesystem::remove_all(dir);
  return 0;
}
