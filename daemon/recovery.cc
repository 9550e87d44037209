#include "recovery.h"

#include <memory>

#include "journal.h"

namespace lockgraph::daemon {

std::variant<Recovered, std::string> RecoverFromSegment(const std::string& segment) {
  Recovered out;
  std::unique_ptr<graph::Coordinator> before;
  std::string replay_error;
  std::size_t records = 0;
  bool commands = false;
  SnapshotLoader snapshot;
  auto scanned = ScanSegment(segment, [&](JournalRecord&& r) {
    ++records;
    if (!replay_error.empty()) return;
    if (auto* boot = std::get_if<BootInfo>(&r.body)) {
      if (before) replay_error = "record " + std::to_string(records) + " is a second boot record";
      out.previous_always = boot->fsync_always;
      graph::Config config = boot->config;
      config.order.mode = graph::OrderMode::kOff;
      config.order.classes.clear();
      before = std::make_unique<graph::Coordinator>(config, boot->epoch, boot->first_seq);
    } else if (auto* command = std::get_if<graph::Command>(&r.body)) {
      if (!before) replay_error = "the segment does not start with a boot record";
      else if (snapshot.pending()) replay_error = "record " + std::to_string(records) + " comes before the snapshot is whole";
      else {
        RestoreSecretFrom(*command, *before);
        before->Apply(*command, r.now_us);
      }
      commands = true;
    } else if (auto* part = std::get_if<SnapshotPart>(&r.body)) {
      bool loaded = false;
      if (!before || commands) replay_error = "record " + std::to_string(records) + ": a snapshot must follow the boot record";
      else if (std::string err = snapshot.Add(std::move(*part), *before, loaded); !err.empty()) {
        replay_error = "record " + std::to_string(records) + ": " + err;
      }
    }
  });
  if (auto* err = std::get_if<std::string>(&scanned)) return "cannot restore from the journal: " + *err;
  const SegmentScan& scan = std::get<SegmentScan>(scanned);
  if (replay_error.empty() && snapshot.pending()) replay_error = "the segment ends inside its snapshot";
  if (!replay_error.empty() || !before) {
    return "cannot restore from " + segment + ": " +
           (!replay_error.empty() ? replay_error
                                  : "it holds no readable boot record" +
                                        (scan.problem.empty() ? std::string() : " (" + scan.problem + ")"));
  }
  if (scan.torn()) {
    out.clean_tail = false;
    out.problem = scan.problem;
    if (std::string err = TruncateSegment(segment, scan.good_bytes); !err.empty()) return err;
  }
  out.records = scan.count;
  out.point = before->RestorePoint();
  return out;
}

}  // namespace lockgraph::daemon
