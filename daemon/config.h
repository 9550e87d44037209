// lockgraphd's configuration: embedded defaults, then a TOML file, then flags.
#ifndef LOCKGRAPH_DAEMON_CONFIG_H_
#define LOCKGRAPH_DAEMON_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "journal.h"
#include "lockgraph/graph/coordinator.h"

namespace lockgraph::daemon {

struct DaemonConfig {
  std::vector<std::string> listen = {"tcp://127.0.0.1:7790"};
  std::string data_dir = "./var/lockgraph";
  std::string admin_token;  // empty: the revoke op is refused (AUTH)
  std::string log_level = "info";
  std::size_t max_frame_bytes = 1 << 20;  // larger frames get LIMIT
  std::size_t max_batch_items = 4096;
  std::size_t reply_cache = 1024;          // replies kept per session for retries
  std::size_t reply_cache_bytes = 1 << 20;  // and at most this many bytes of them
  std::size_t max_unacked_events = 10000;  // per session; the oldest are dropped beyond
  std::size_t deadlock_history = 1000;     // reports kept for the `deadlocks` query
  std::uint32_t epoch = 1;                 // set from DATA_DIR/epoch at start
  bool journal = true;                     // DATA_DIR/journal/EPOCH.lgj
  FsyncPolicy fsync = FsyncPolicy::kInterval;
  long fsync_interval_ms = 10;
  // Segments of earlier boots are kept for history while they fit in both limits
  // (the last one is always kept: a restart replays it).
  std::int64_t journal_keep_mb = 1024;
  std::int64_t journal_keep_days = 30;
  // A new segment, starting with a snapshot of the whole state, begins once the
  // current one has grown by this much and by as much as its own snapshot, so that
  // a restart replays a bounded tail and snapshots cost at most the journal's volume.
  std::int64_t journal_segment_kb = 64 * 1024;
  graph::Config core;
};

// Reads a TOML file over `config` (keys: docs/configuration.md). Returns an error
// message naming the file, key and problem, or an empty string.
std::string LoadConfigFile(const std::string& path, DaemonConfig& config);

// Reads the [ordering] table of a TOML file (a rules file, or the config itself)
// over config.core.order; the separator also names classes for [classes].
std::string LoadOrderRulesFile(const std::string& path, DaemonConfig& config, bool whole_file_is_rules = true);

// Checks values that no parser can: ranges and combinations. Empty when fine.
std::string Validate(const DaemonConfig& config);

// Parses "lowest_priority,youngest,..." (also used for the TOML array).
std::variant<std::vector<graph::VictimStep>, std::string> ParseVictimPolicy(
    const std::vector<std::string>& steps);

}  // namespace lockgraph::daemon

#endif  // LOCKGRAPH_DAEMON_CONFIG_H_
