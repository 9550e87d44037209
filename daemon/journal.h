// The journal: what lockgraphd did, append-only, one segment file per boot.
//
// The core is deterministic (coordinator.h), so the journal records its inputs: a
// boot record (the core's configuration, epoch and first sequence number), then
// every command the daemon applied, with the core's clock (`now_us`) and the wall
// clock. Replaying a segment through a fresh Coordinator rebuilds the state at any
// moment, with every grant, wait, revocation and deadlock on the way. Deadlock and
// ordering reports are also written as they happened (JSON), so the history stays
// readable by a later version whose core would decide differently.
//
// On disk (docs/operations.md has the grammar and a worked example):
//
//   segment = magic record*                  magic = "LGJRNL01"
//   record  = length:u32le crc:u32le payload  crc = CRC-32C of payload,
//                                             0 < length <= kMaxRecordBytes
//   payload = kind:u8 then cereal portable binary of boot:u64 wall_us:i64
//             now_us:i64 body
//
// A record is only trusted whole: a short or mismatching tail (a torn write, a bad
// byte) ends the readable part of the segment at the last good record.
//
// Thread safety: none; one thread writes.
#ifndef LOCKGRAPH_DAEMON_JOURNAL_H_
#define LOCKGRAPH_DAEMON_JOURNAL_H_

#include <cstddef>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "lockgraph/graph/coordinator.h"

namespace lockgraph::daemon {

inline constexpr std::string_view kJournalMagic = "LGJRNL01";
inline constexpr std::size_t kMaxRecordBytes = 16u << 20;
inline constexpr std::size_t kRecordHeaderBytes = 8;

// CRC-32C (Castagnoli), as iSCSI, ext4 and LevelDB use it.
std::uint32_t Crc32c(std::string_view data);

enum class RecordKind : std::uint8_t {
  kBoot = 1,     // body: BootInfo
  kCommand = 2,  // body: a graph::Command
  kReport = 3,   // body: ReportInfo
  kSnapshot = 4, // body: SnapshotPart
};

struct BootInfo {
  std::uint32_t epoch = 0;
  std::uint64_t first_seq = 1;
  std::string server;  // "lockgraphd VERSION"
  // The boot journals under fsync `always`: a reply never got ahead of its record,
  // so a clean tail means nothing granted is missing (grace may serve new acquires).
  bool fsync_always = false;
  graph::Config config;
};

struct ReportInfo {
  enum class Type : std::uint8_t { kDeadlock = 1, kOrder = 2 };
  Type type = Type::kDeadlock;
  std::string json;  // graph::RenderJson or graph::RenderOrderJson
};

// A piece of a coordinator image (graph::Coordinator::SaveImage): the state a
// segment that is not a boot's first starts from. The parts follow the boot record,
// in order; the image is loaded when the last one is read.
struct SnapshotPart {
  std::uint32_t part = 0;   // 0-based
  std::uint32_t parts = 1;  // how many make the image
  std::string bytes;
};
inline constexpr std::size_t kSnapshotPartBytes = 8u << 20;

struct JournalRecord {
  std::uint64_t boot = 0;    // random per boot
  std::int64_t wall_us = 0;  // Unix time, microseconds
  std::int64_t now_us = 0;   // the core's clock
  std::variant<BootInfo, graph::Command, ReportInfo, SnapshotPart> body;
  RecordKind kind() const;
};

// The payload of a record (what the CRC covers), and back. Decoding never trusts its
// input: an error names the problem.
std::string EncodePayload(const JournalRecord& record);
std::variant<JournalRecord, std::string> DecodePayload(std::string_view payload);
// length, crc, payload.
std::string FrameRecord(const JournalRecord& record);
// The same, appended to `out`.
void AppendFramedRecord(std::string& out, const JournalRecord& record);

// A session's secret is journaled once, in its hello: the command without its
// secret, as the writer journals it. ScanSegment puts the secret back from the
// hello earlier in the segment.
graph::Command JournalSecretless(graph::Command command);
// A segment that starts from a snapshot has no hello of the sessions in it: their
// commands get the secret from the core that loaded the snapshot. Replayers call
// this before applying a command; it fills only a missing secret.
void RestoreSecretFrom(graph::Command& command, const graph::Coordinator& core);

// Collects a segment's snapshot parts, in order, and loads the image into `core`
// when the last one arrives. Recovery and replay share it.
class SnapshotLoader {
 public:
  // "" or what is wrong (parts out of order, a second snapshot, a bad image).
  // `loaded` is set when this part completed the image and it was loaded.
  std::string Add(SnapshotPart&& part, graph::Coordinator& core, bool& loaded);
  bool pending() const { return next_ > 0 && !done_; }  // parts read, image not yet whole
  bool done() const { return done_; }

 private:
  std::string bytes_;
  std::uint32_t next_ = 0;
  std::uint32_t parts_ = 0;
  bool done_ = false;
};

// ---------------------------------------------------------------- reading

struct SegmentScan {
  std::vector<JournalRecord> records;
  std::size_t count = 0;         // good records read
  std::uint64_t good_bytes = 0;  // the magic and every good record: where a writer may resume
  std::uint64_t file_bytes = 0;
  std::string problem;           // empty when the segment ends cleanly; else what and where
  bool torn() const { return !problem.empty(); }
};

// Reads a whole segment. An unreadable file or a bad magic is an error; a bad tail
// is not (see SegmentScan::problem).
std::variant<SegmentScan, std::string> ScanSegment(const std::string& path);
// The same, handing each good record to `each` in order instead of keeping it
// (SegmentScan::records stays empty): a long segment is read in constant memory.
std::variant<SegmentScan, std::string> ScanSegment(const std::string& path,
                                                  const std::function<void(JournalRecord&&)>& each);

// A segment's file name (without .lgj): EPOCH for the first segment of a boot,
// EPOCH_N for the N-th one it started later (each beginning with a snapshot), both
// zero-padded so that names sort by time ('_' sorts after the '.' of ".lgj", so a
// shell's `journal/*.lgj` lists them in order too).
std::string SegmentName(std::uint32_t epoch, std::uint32_t n);

// Segment files of a data directory (DATA_DIR/journal/*.lgj), oldest first: by
// epoch, then by N (see SegmentName); other names come first, by name.
std::vector<std::string> ListSegments(const std::string& data_dir);

// Removes segments (oldest first in `segments`, as ListSegments gives them) of
// earlier boots: keeping the newest, then older ones while their sizes add up to at
// most `keep_bytes` and none is older than `max_age`. The last one always stays (a
// restart replays it). Returns the paths removed.
std::vector<std::string> PruneSegments(const std::vector<std::string>& segments, std::uint64_t keep_bytes,
                                       std::chrono::hours max_age);

// Cuts `path` to `bytes` and makes that durable (a torn tail found at start).
std::string TruncateSegment(const std::string& path, std::uint64_t bytes);

// ---------------------------------------------------------------- writing

enum class FsyncPolicy : std::uint8_t {
  kAlways,    // replies wait for their records' fsync (group commit per loop turn)
  kInterval,  // fsync every interval; replies do not wait
  kNever,     // the kernel writes back when it will
};
std::string_view FsyncPolicyName(FsyncPolicy p);
std::optional<FsyncPolicy> ParseFsyncPolicy(std::string_view s);

// Appends records to a new segment. Append only buffers; Write hands the buffer to
// the kernel (one write(2)), which survives the process being killed; Sync makes it
// durable (fdatasync), which survives the machine losing power.
class JournalWriter {
 public:
  JournalWriter() = default;
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  // Creates DATA_DIR/journal/NAME.lgj (see SegmentName) with mode 0600: the
  // records hold session secrets. The magic is written and synced with the directory.
  // `staged`: the file is NAME.lgj.tmp until Publish renames it, so that a segment
  // that starts with a snapshot appears whole or not at all (a crash half-way leaves
  // a .tmp file, which ListSegments ignores and the next Open of it replaces).
  std::string Open(const std::string& data_dir, const std::string& name, bool staged = false);
  // Staged: syncs what was appended, renames the file to its name (refused when a
  // file of that name exists) and syncs the directory. Nothing to do otherwise.
  // After an error, staged() says whether the rename happened.
  std::string Publish();
  bool staged() const { return staged_; }
  // Exchanges the files and state of two writers (the old segment's is closed when
  // its writer is destroyed).
  void Swap(JournalWriter& other) noexcept;
  bool is_open() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

  void Append(const JournalRecord& record);
  // A command record, written as Append(JournalRecord{boot, wall_us, now_us,
  // JournalSecretless(command)}) would write it, without building the record.
  void AppendCommand(std::uint64_t boot, graph::TimeUs wall_us, graph::TimeUs now_us, const graph::Command& command);
  // Appends `image` as snapshot records (parts of at most kSnapshotPartBytes, each
  // stamped like `header`, whose body is replaced) and writes each part as it goes,
  // so the buffer never holds more than one part. "" or the write error.
  std::string AppendSnapshot(JournalRecord header, std::string_view image);
  bool unsynced() const { return unsynced_ || !buffer_.empty(); }
  std::string Write();
  std::string Sync();  // writes first
  std::uint64_t bytes() const { return bytes_; }
  std::uint64_t syncs() const { return syncs_; }

  // For a background syncer (fsync `interval`): the file descriptor, which stays
  // open until the writer is destroyed; fdatasync on it from another thread is safe
  // while this one writes.
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string dir_;
  std::string path_;
  bool staged_ = false;
  std::string buffer_;
  bool unsynced_ = false;
  std::uint64_t bytes_ = 0;
  std::uint64_t syncs_ = 0;
};

}  // namespace lockgraph::daemon

#endif  // LOCKGRAPH_DAEMON_JOURNAL_H_
