#include "config.h"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

#include "lockgraph/graph/order_rules.h"

namespace lockgraph::daemon {
namespace {

// Reads an integer key in [lo, hi] into `out` when present.
template <typename T>
std::string ReadInt(const toml::table& t, std::string_view key, std::string_view where, std::int64_t lo,
                    std::int64_t hi, T& out) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return "";
  auto v = n->value<std::int64_t>();
  if (!v || !n->is_integer()) return std::string(where) + std::string(key) + ": expected an integer";
  if (*v < lo || *v > hi) {
    return std::string(where) + std::string(key) + ": " + std::to_string(*v) + " is outside [" +
           std::to_string(lo) + ", " + std::to_string(hi) + "]";
  }
  out = static_cast<T>(*v);
  return "";
}

std::string ReadString(const toml::table& t, std::string_view key, std::string_view where, std::string& out) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return "";
  if (!n->is_string()) return std::string(where) + std::string(key) + ": expected a string";
  out = *n->value<std::string>();
  return "";
}

std::string ReadStrings(const toml::table& t, std::string_view key, std::string_view where,
                        std::vector<std::string>& out) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return "";
  const toml::array* a = n->as_array();
  if (a == nullptr) return std::string(where) + std::string(key) + ": expected an array of strings";
  std::vector<std::string> values;
  for (const toml::node& e : *a) {
    if (!e.is_string()) return std::string(where) + std::string(key) + ": expected an array of strings";
    values.push_back(*e.value<std::string>());
  }
  out = std::move(values);
  return "";
}

}  // namespace

std::variant<std::vector<graph::VictimStep>, std::string> ParseVictimPolicy(
    const std::vector<std::string>& steps) {
  std::vector<graph::VictimStep> out;
  for (const std::string& s : steps) {
    bool found = false;
    for (auto step : {graph::VictimStep::kLowestPriority, graph::VictimStep::kYoungest,
                      graph::VictimStep::kFewestLeases, graph::VictimStep::kLowestId}) {
      if (graph::VictimStepName(step) == s) {
        out.push_back(step);
        found = true;
      }
    }
    if (!found) {
      return "unknown victim policy step '" + s +
             "' (expected lowest_priority, youngest, fewest_leases or lowest_id)";
    }
  }
  if (out.empty()) return std::string("the victim policy needs at least one step");
  return out;
}

std::string LoadConfigFile(const std::string& path, DaemonConfig& c) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return path + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " +
           std::string(e.description());
  }
  const std::string file = path + ": ";
  std::string err;
  auto step = [&](std::string e) {
    if (err.empty() && !e.empty()) err = std::move(e);
  };
  constexpr std::int64_t kDay = 24LL * 3600 * 1000;
  step(ReadStrings(root, "listen", file, c.listen));
  step(ReadString(root, "data_dir", file, c.data_dir));
  step(ReadString(root, "admin_token", file, c.admin_token));
  step(ReadString(root, "log_level", file, c.log_level));
  step(ReadInt(root, "max_frame_bytes", file, 1024, 64LL << 20, c.max_frame_bytes));
  step(ReadInt(root, "max_batch_items", file, 1, 1 << 20, c.max_batch_items));
  step(ReadInt(root, "reply_cache", file, 1, 1 << 20, c.reply_cache));
  step(ReadInt(root, "reply_cache_bytes", file, 1024, 1LL << 30, c.reply_cache_bytes));
  step(ReadInt(root, "max_unacked_events", file, 1, 1 << 24, c.max_unacked_events));
  step(ReadInt(root, "deadlock_history", file, 0, 1 << 20, c.deadlock_history));
  if (const toml::table* t = root["journal"].as_table()) {
    const std::string where = file + "journal.";
    if (const toml::node* n = t->get("enabled")) {
      if (!n->is_boolean()) step(where + "enabled: expected true or false");
      else c.journal = *n->value<bool>();
    }
    std::string fsync(FsyncPolicyName(c.fsync));
    step(ReadString(*t, "fsync", where, fsync));
    if (auto p = ParseFsyncPolicy(fsync)) c.fsync = *p;
    else step(where + "fsync: expected \"always\", \"interval\" or \"never\"");
    step(ReadInt(*t, "fsync_interval_ms", where, 1, 60'000, c.fsync_interval_ms));
    step(ReadInt(*t, "keep_mb", where, 0, std::int64_t{1} << 30, c.journal_keep_mb));
    step(ReadInt(*t, "keep_days", where, 0, 36'500, c.journal_keep_days));
    step(ReadInt(*t, "segment_kb", where, 1, std::int64_t{1} << 30, c.journal_segment_kb));
  }
  if (const toml::table* t = root["limits"].as_table()) {
    const std::string where = file + "limits.";
    step(ReadInt(*t, "max_name_bytes", where, 1, 1 << 20, c.core.max_name_bytes));
    step(ReadInt(*t, "max_leases_per_session", where, 1, 1LL << 30, c.core.max_leases_per_session));
    step(ReadInt(*t, "max_waits_per_owner", where, 1, 1 << 20, c.core.max_waits_per_owner));
    step(ReadInt(*t, "max_ttl_ms", where, 1, 365 * kDay, c.core.max_ttl_ms));
  }
  if (const toml::table* t = root["detection"].as_table()) {
    const std::string where = file + "detection.";
    std::int64_t ms = c.core.confirm_us / 1000;
    step(ReadInt(*t, "confirm_ms", where, 0, kDay, ms));
    c.core.confirm_us = ms * 1000;
    ms = c.core.victim_grace_us / 1000;
    step(ReadInt(*t, "victim_grace_ms", where, 1, kDay, ms));
    c.core.victim_grace_us = ms * 1000;
    ms = c.core.revoke_grace_us / 1000;
    step(ReadInt(*t, "revoke_grace_ms", where, 0, kDay, ms));
    c.core.revoke_grace_us = ms * 1000;
    std::vector<std::string> policy;
    step(ReadStrings(*t, "victim_policy", where, policy));
    if (!policy.empty()) {
      auto parsed = ParseVictimPolicy(policy);
      if (auto* e = std::get_if<std::string>(&parsed)) step(where + "victim_policy: " + *e);
      else c.core.victim_policy = std::get<0>(parsed);
    }
  }
  if (const toml::table* t = root["classes"].as_table()) {
    for (const auto& [name, node] : *t) {
      const std::string where = file + "classes." + std::string(name.str()) + ".";
      const toml::table* ct = node.as_table();
      if (ct == nullptr) {
        step(where + " expected a table");
        continue;
      }
      graph::ClassConfig cc;
      std::string revoke = "grace";
      step(ReadString(*ct, "revoke", where, revoke));
      if (revoke != "grace" && revoke != "immediate") step(where + "revoke: expected \"grace\" or \"immediate\"");
      cc.revoke_immediate = revoke == "immediate";
      if (ct->get("revoke_grace_ms")) {
        std::int64_t ms = 0;
        step(ReadInt(*ct, "revoke_grace_ms", where, 0, kDay, ms));
        cc.revoke_grace_us = ms * 1000;
      }
      c.core.classes[std::string(name.str())] = cc;
    }
  }
  if (err.empty()) err = LoadOrderRulesFile(path, c, /*whole_file_is_rules=*/false);
  return err;
}

std::string LoadOrderRulesFile(const std::string& path, DaemonConfig& c, bool whole_file_is_rules) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot read " + path;
  std::stringstream text;
  text << in.rdbuf();
  if (std::string err = graph::ParseOrderRules(text.str(), path, c.core.order, whole_file_is_rules); !err.empty()) {
    return err;
  }
  c.core.class_separator = c.core.order.separator;
  return "";
}

std::string Validate(const DaemonConfig& c) {
  if (c.listen.empty()) return "at least one --listen endpoint is needed";
  for (const std::string& e : c.listen) {
    if (e.rfind("tcp://", 0) != 0 && e.rfind("ipc://", 0) != 0 && e.rfind("inproc://", 0) != 0) {
      return "listen endpoint '" + e + "' must start with tcp://, ipc:// or inproc://";
    }
  }
  if (c.core.max_name_bytes >= c.max_frame_bytes) return "limits.max_name_bytes must be below max_frame_bytes";
  if (c.epoch == 0 || c.epoch >= graph::kEpochLimit) return "epoch must be in [1, 2^24-2]";
  static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  for (const char* l : kLevels) {
    if (c.log_level == l) return "";
  }
  return "log level '" + c.log_level + "' is not one of trace, debug, info, warn, error, critical, off";
}

}  // namespace lockgraph::daemon
