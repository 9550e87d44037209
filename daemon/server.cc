#include "server.h"

#include <unistd.h>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <random>
#include <thread>
#include <unordered_map>
#include <zmq.hpp>

#include "epoch_file.h"
#include "journal.h"
#include "recovery.h"
#include "order_file.h"
#include "lockgraph/protocol.h"

namespace lockgraph::daemon {
namespace {

using protocol::Encoding;
using protocol::Op;
using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr const char* kServerName = "lockgraphd 0.1.0";

// The core's clock: monotonic, but anchored at the wall clock of the daemon's start,
// so that `started` and `detected_at_us` in reports read as Unix microseconds.
graph::TimeUs MonotonicNowUs() {
  using namespace std::chrono;
  static const auto steady_start = steady_clock::now();
  static const auto wall_start = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
  return wall_start + duration_cast<microseconds>(steady_clock::now() - steady_start).count();
}

graph::TimeUs WallNowUs() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

void Key(JsonWriter& w, const char* k) { w.Key(k); }
void Str(JsonWriter& w, const std::string& s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); }
void U64Str(JsonWriter& w, std::uint64_t v) { Str(w, std::to_string(v)); }

}  // namespace

class Server::Impl {
 public:
  explicit Impl(DaemonConfig config)
      : config_(std::move(config)),
        core_(config_.core, config_.epoch),
        router_(context_, zmq::socket_type::router),
        rng_(std::random_device{}()) {
    limits_.max_frame_bytes = config_.max_frame_bytes;
    limits_.max_name_bytes = config_.core.max_name_bytes;
    limits_.max_batch_items = config_.max_batch_items;
    RestoreOrder();
  }

  ~Impl() { StopSyncer(); }

  std::string Bind();
  void Run(const std::atomic<bool>& stop);

  std::vector<std::string> endpoints_;

 private:
  // Per session: where to send, and what to send again.
  struct Peer {
    std::string routing_id;  // the connection its latest request came from
    std::string secret;      // cached replies go only to requests that prove the session
    Encoding encoding = Encoding::kJson;  // of its hello: events use it
    std::uint64_t max_id = 0;             // highest request id answered
    std::uint64_t evicted_max = 0;        // highest id whose reply left the cache
    std::deque<std::uint64_t> cached_ids;  // oldest first
    std::unordered_map<std::uint64_t, std::string> cached;  // id -> encoded reply
    std::size_t cached_bytes = 0;                            // of the replies in `cached`
    // Event seqs start at epoch << 32, so they keep increasing across restarts and a
    // client never takes a new event for one it has seen.
    std::uint64_t next_seq = 1;
    bool encoding_known = true;  // false for a session restored after a restart
    std::deque<std::pair<std::uint64_t, std::string>> unacked;  // (seq, encoded event)
  };

  struct Counters {
    std::uint64_t frames = 0;
    std::uint64_t bad_frames = 0;
    std::uint64_t bad_frames_without_id = 0;
    std::uint64_t cache_hits = 0;
    std::uint64_t events_sent = 0;
    std::uint64_t events_resent = 0;
    std::uint64_t events_dropped = 0;
  };

  // Sends the held events when the request is done, to each session's latest
  // connection; a session that just moved got them with its resend already.
  struct FlushOutbox {
    Impl* impl;
    const std::string* moved_session;
    ~FlushOutbox() {
      for (const auto& [session, event] : impl->outbox_) {
        if (session == *moved_session) continue;
        auto it = impl->peers_.find(session);
        if (it != impl->peers_.end()) impl->Send(it->second.routing_id, event);
      }
      impl->outbox_.clear();
    }
  };
  void HandleFrame(const std::string& routing_id, std::string_view frame);
  // `batch`: the batch that `req` is an item of, whose session it acts for.
  protocol::Reply Dispatch(const protocol::Request& req, Encoding encoding, const std::string& routing_id,
                           const protocol::Request* batch = nullptr);
  protocol::Reply ApplyCommand(const graph::Command& command, const protocol::Request& req);
  protocol::Reply FromCore(const graph::Reply& r, std::uint64_t id);
  void Deliver(std::vector<graph::Event>& events);
  void SendEvent(const std::string& session, protocol::Event event);
  // Sends at the end of the loop turn when there is a journal (FinishTurn), else now.
  void Send(const std::string& routing_id, const std::string& payload);
  void SendNow(const std::string& routing_id, const std::string& payload);
  void Acknowledge(Peer& peer, std::uint64_t acked_seq);
  std::string RandomHex(int bytes);

  // The learned lock order: loaded from the data directory at start, saved when it
  // grows (new edges are rare: each is learned once) and at exit.
  void RestoreOrder();
  void SaveOrderIfChanged(bool force = false);
  std::string OrderJson();
  // Applies a command to the core at the monotonic clock's now and journals it.
  graph::Effects Core(const graph::Command& command);
  // Opens this boot's journal segment after checking the previous one's tail.
  std::string OpenJournal();
  void Journal(const graph::Command& command, graph::TimeUs now);
  void JournalReport(ReportInfo::Type type, std::string json);
  // End of a loop turn: hand the journal to the kernel, fsync by policy, and (under
  // `always`) only then send what the turn produced (group commit).
  void FinishTurn();
  // After a turn: once the segment has grown by journal_segment_kb and by as much
  // as its snapshot, start a new one from a snapshot (Rotate) and prune old ones.
  void MaybeRotate();
  std::string Rotate();
  void StartSyncer();
  std::string StatsJson();
  std::string LeasesJson(const protocol::Request& req);
  std::string GraphJson();
  std::string DeadlocksJson(const protocol::Request& req);

  DaemonConfig config_;
  protocol::Limits limits_;
  graph::Coordinator core_;
  zmq::context_t context_;
  zmq::socket_t router_;
  std::mt19937_64 rng_;
  std::unordered_map<std::string, Peer> peers_;  // by session id
  std::deque<std::shared_ptr<const graph::DeadlockReport>> deadlocks_;
  std::uint64_t replies_by_code_[13] = {};
  Counters counters_;
  // Events produced while a request is handled wait here, so that the request's
  // reply goes out first: (session, encoded event).
  bool hold_events_ = false;
  graph::TimeUs frame_now_ = 0, frame_wall_ = 0;  // the clocks of the frame being served, or 0
  std::string_view holding_session_;  // whose events wait in outbox_ while hold_events_ (the request's)
  std::vector<std::pair<std::string, std::string>> outbox_;
  // Hello has no session yet: its retries are recognised by connection and id.
  std::unordered_map<std::string, std::string> hello_replies_;
  std::deque<std::string> hello_order_;
  std::uint64_t saved_order_version_ = 0;
  JournalWriter journal_;
  std::uint64_t boot_id_ = 0;
  // fsync `interval`: a thread of its own fsyncs the journal every interval, so the
  // loop never waits for the disk. It shares only the file descriptor and counters.
  std::thread syncer_;
  std::atomic<bool> syncer_stop_{false};
  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> synced_{0};
  std::atomic<bool> sync_failed_{false};
  std::atomic<std::uint64_t> background_syncs_{0};
  void RunSyncer();
  void StopSyncer() {
    syncer_stop_.store(true);
    if (syncer_.joinable()) syncer_.join();
  }
  bool journal_failed_ = false;
  std::uint32_t segment_n_ = 0;             // SegmentName's N of the current segment
  std::uint64_t segment_start_bytes_ = 0;   // journal_.bytes() after its snapshot
  std::uint64_t last_image_bytes_ = 0;
  std::uint64_t snapshots_ = 0;
  std::uint64_t snapshot_failures_ = 0;
  std::uint64_t earlier_bytes_ = 0;  // journaled by this boot in segments it left
  std::uint64_t earlier_syncs_ = 0;
  long last_snapshot_ms_ = 0;
  // Messages of the current loop turn, waiting for its journal records (FinishTurn).
  std::vector<std::pair<std::string, std::string>> deferred_;
};

// ------------------------------------------------------------------ transport

std::string Server::Impl::Bind() {
  if (std::string err = OpenJournal(); !err.empty()) return err;
  // Frames up to twice the limit reach the decoder and get LIMIT; ZeroMQ drops the
  // connection of a peer that sends more, before the frame is read into memory.
  const std::int64_t hard_cap = static_cast<std::int64_t>(config_.max_frame_bytes) * 2 + 4096;
  router_.set(zmq::sockopt::maxmsgsize, hard_cap);
  router_.set(zmq::sockopt::linger, 1000);
  router_.set(zmq::sockopt::router_mandatory, 0);
  for (const std::string& endpoint : config_.listen) {
    try {
      router_.bind(endpoint);
    } catch (const zmq::error_t& e) {
      return "cannot listen on " + endpoint + ": " + e.what();
    }
    endpoints_.push_back(router_.get(zmq::sockopt::last_endpoint));
  }
  return "";
}

void Server::Impl::Send(const std::string& routing_id, const std::string& payload) {
  // With a journal, what a turn sends waits for the turn's records: written to the
  // kernel (a killed process loses nothing a client was told) and, under `always`,
  // fsynced (a power failure does not either).
  if (journal_.is_open()) {
    deferred_.emplace_back(routing_id, payload);
    return;
  }
  SendNow(routing_id, payload);
}

void Server::Impl::SendNow(const std::string& routing_id, const std::string& payload) {
  try {
    router_.send(zmq::buffer(routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    router_.send(zmq::buffer(payload), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    spdlog::debug("send failed: {}", e.what());
  }
}

void Server::Impl::Run(const std::atomic<bool>& stop) {
  zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
  auto receive_all = [&] {
    for (;;) {
      std::vector<zmq::message_t> parts;
      zmq::message_t part;
      try {
        if (!router_.recv(part, zmq::recv_flags::dontwait)) return;
        parts.push_back(std::move(part));
        while (parts.back().more()) {
          zmq::message_t next;
          if (!router_.recv(next, zmq::recv_flags::dontwait)) break;
          parts.push_back(std::move(next));
        }
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) return;
        throw;
      }
      if (parts.size() != 2) {
        // A DEALER sends one frame; anything else is not our protocol.
        ++counters_.bad_frames;
        ++counters_.bad_frames_without_id;
        spdlog::warn("dropped a message of {} frames (expected 1 after the routing id)", parts.size() - 1);
        continue;
      }
      HandleFrame(parts[0].to_string(), std::string_view(static_cast<const char*>(parts[1].data()), parts[1].size()));
    }
  };
  while (!stop.load(std::memory_order_relaxed)) {
    // Sleep until a frame arrives, the core's next deadline, or 100 ms (to notice stop).
    const graph::TimeUs now = MonotonicNowUs();
    const graph::TimeUs deadline = core_.NextDeadline();
    long timeout_ms = 100;
    if (deadline != graph::kNever) timeout_ms = std::clamp<long>((deadline - now + 999) / 1000, 0, 100);
    try {
      zmq::poll(items, 1, std::chrono::milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    if (items[0].revents & ZMQ_POLLIN) receive_all();
    if (core_.NextDeadline() <= MonotonicNowUs()) {
      graph::Effects effects = Core(graph::Tick{});
      Deliver(effects.events);
    }
    FinishTurn();
    SaveOrderIfChanged();
  }
  // Stop accepting, answer what has arrived.
  for (const std::string& e : endpoints_) {
    try {
      router_.unbind(e);
    } catch (const zmq::error_t&) {
    }
  }
  receive_all();
  FinishTurn();
  StopSyncer();
  if (std::string err = journal_.Sync(); !err.empty()) spdlog::error("journal: {}", err);
  SaveOrderIfChanged(/*force=*/true);
}

// ------------------------------------------------------------------ journal

graph::Effects Server::Impl::Core(const graph::Command& command) {
  const graph::TimeUs now = frame_now_ != 0 ? frame_now_ : MonotonicNowUs();
  graph::Effects effects = core_.Apply(command, now);
  // An error changes nothing but the time (DEADLOCK excepted: the requester is the
  // victim), so it is journaled as the Tick it amounts to: replay stays exact and
  // refused secrets stay out of the journal.
  if (effects.reply.ok() || effects.reply.code == graph::Code::kDeadlock) Journal(command, now);
  else Journal(graph::Tick{}, now);
  return effects;
}

void Server::Impl::Journal(const graph::Command& command, graph::TimeUs now) {
  if (!journal_.is_open()) return;
  journal_.AppendCommand(boot_id_, frame_wall_ != 0 ? frame_wall_ : WallNowUs(), now, command);
}

void Server::Impl::JournalReport(ReportInfo::Type type, std::string json) {
  if (!journal_.is_open()) return;
  JournalRecord r;
  r.boot = boot_id_;
  r.wall_us = WallNowUs();
  r.now_us = MonotonicNowUs();
  r.body = ReportInfo{type, std::move(json)};
  journal_.Append(r);
}

std::string Server::Impl::OpenJournal() {
  if (!config_.journal) return "";
  const auto segments = ListSegments(config_.data_dir);
  const auto started = std::chrono::steady_clock::now();
  auto ms_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
  };
  long replay_ms = 0;
  std::optional<graph::Restore> point;
  bool clean_tail = true;
  bool previous_always = false;
  std::string previous;
  if (!segments.empty()) {
    previous = segments.back();
    auto recovered = RecoverFromSegment(previous);
    if (auto* err = std::get_if<std::string>(&recovered)) return *err + " (move the file aside to start empty)";
    Recovered& r = std::get<Recovered>(recovered);
    if (!r.clean_tail) {
      spdlog::error("journal: {}; truncating to the last good record ({} records kept)", r.problem, r.records);
    }
    clean_tail = r.clean_tail;
    previous_always = r.previous_always;
    point = std::move(r.point);
    replay_ms = ms_since(started);
  }
  for (const std::string& removed :
       PruneSegments(segments, static_cast<std::uint64_t>(config_.journal_keep_mb) << 20,
                     std::chrono::hours(24 * config_.journal_keep_days))) {
    spdlog::info("journal: removed old segment {}", removed);
  }
  // A new segment that a crash interrupted before it was whole: never published.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(config_.data_dir + "/journal", ec)) {
    if (entry.path().extension() == ".tmp" && entry.path().stem().extension() == ".lgj") {
      spdlog::warn("journal: removing {}, a segment left unfinished", entry.path().string());
      std::filesystem::remove(entry.path(), ec);
    }
  }
  if (std::string err = journal_.Open(config_.data_dir, SegmentName(config_.epoch, 0)); !err.empty()) return err;
  boot_id_ = rng_();
  JournalRecord r;
  r.boot = boot_id_;
  r.wall_us = WallNowUs();
  r.now_us = MonotonicNowUs();
  r.body = BootInfo{config_.epoch, 1, kServerName, config_.fsync == FsyncPolicy::kAlways, config_.core};
  journal_.Append(r);
  if (std::string err = journal_.Sync(); !err.empty()) return err;
  spdlog::info("journal {} (fsync {})", journal_.path(), FsyncPolicyName(config_.fsync));
  StartSyncer();
  if (point && !point->sessions.empty()) {
    // Grace: at least the longest restored TTL, so that no lease a client may still
    // be using passes to someone else before its holder could have reclaimed it.
    std::int64_t grace_ms = 0;
    for (const graph::RestoredLease& l : point->leases) grace_ms = std::max(grace_ms, l.ttl_ms);
    point->grace_ms = grace_ms;
    point->grant_unclaimed = clean_tail && previous_always && config_.fsync == FsyncPolicy::kAlways;
    const std::size_t sessions = point->sessions.size(), leases = point->leases.size();
    std::vector<std::pair<std::string, std::string>> secrets;  // for the transport's peers
    for (const graph::RestoredSession& x : point->sessions) secrets.emplace_back(x.session, x.secret);
    // In pieces, so that every journal record stays far below kMaxRecordBytes.
    constexpr std::size_t kChunk = 4096;
    for (std::size_t at = 0; at == 0 || at < sessions + leases; at += kChunk) {
      graph::Restore chunk;
      chunk.grace_ms = point->grace_ms;
      chunk.grant_unclaimed = point->grant_unclaimed;
      for (std::size_t i = at; i < std::min(at + kChunk, sessions + leases); ++i) {
        if (i < sessions) chunk.sessions.push_back(std::move(point->sessions[i]));
        else chunk.leases.push_back(std::move(point->leases[i - sessions]));
      }
      graph::Effects fx = Core(std::move(chunk));
      if (!fx.reply.ok()) return "cannot restore from " + previous + ": " + fx.reply.message;
      journal_.Write();
    }
    for (const auto& [id, secret] : secrets) {
      Peer& peer = peers_[id];
      peer.secret = secret;
      peer.next_seq = (std::uint64_t{core_.epoch()} << 32) + 1;
      peer.encoding_known = false;
    }
    if (std::string err = journal_.Sync(); !err.empty()) return err;
    spdlog::warn("restored {} session(s) and {} lease(s) from {} (replayed in {} ms, restored in {} ms); grace {} ms{}",
                 sessions, leases, previous, replay_ms, ms_since(started) - replay_ms, grace_ms,
                 point->grant_unclaimed ? " (leases not awaiting reclaim may be granted)" : "");
  }
  // What a restore wrote counts as this segment's snapshot.
  segment_start_bytes_ = journal_.bytes();
  last_image_bytes_ = journal_.bytes();
  return "";
}

void Server::Impl::StartSyncer() {
  if (config_.fsync != FsyncPolicy::kInterval || syncer_.joinable()) return;
  written_.store(journal_.bytes(), std::memory_order_relaxed);
  synced_.store(journal_.bytes(), std::memory_order_relaxed);
  syncer_stop_.store(false);
  syncer_ = std::thread([this] { RunSyncer(); });
}

void Server::Impl::MaybeRotate() {
  if (!journal_.is_open() || journal_failed_) return;
  const std::uint64_t grown = journal_.bytes() - segment_start_bytes_;
  if (grown < std::max<std::uint64_t>(static_cast<std::uint64_t>(config_.journal_segment_kb) << 10, last_image_bytes_)) {
    return;
  }
  if (std::string err = Rotate(); !err.empty()) {
    // Keep journaling where we are; try again after as much growth again.
    ++snapshot_failures_;
    segment_start_bytes_ = journal_.bytes();
    spdlog::error("journal: cannot start a new segment: {}; continuing in {}", err, journal_.path());
  }
}

std::string Server::Impl::Rotate() {
  const auto started = std::chrono::steady_clock::now();
  // The old segment is complete and durable before the new one can replace it.
  if (std::string err = journal_.Sync(); !err.empty()) return err;
  StopSyncer();
  struct Restart {
    Impl* impl;
    ~Restart() { impl->StartSyncer(); }
  } restart{this};
  JournalWriter next;
  if (std::string err = next.Open(config_.data_dir, SegmentName(config_.epoch, segment_n_ + 1), /*staged=*/true);
      !err.empty()) {
    return err;
  }
  JournalRecord r;
  r.boot = boot_id_;
  r.wall_us = WallNowUs();
  r.now_us = MonotonicNowUs();
  const std::uint64_t seq = (core_.last_token() & (graph::kSeqLimit - 1)) + 1;
  r.body = BootInfo{core_.epoch(), std::min(seq, graph::kSeqLimit - 1), kServerName,
                    config_.fsync == FsyncPolicy::kAlways, config_.core};
  next.Append(r);
  const std::string image = core_.SaveImage();
  if (std::string err = next.AppendSnapshot(r, image); !err.empty()) return err;
  if (std::string err = next.Publish(); !err.empty()) {
    // Renamed, but the directory's sync failed: the new segment is listed last, so it
    // is the one to go on in (a restart would read it); the error is logged.
    if (next.staged()) return err;
    spdlog::error("journal: {}", err);
  }
  journal_.Swap(next);  // `next` now holds the old segment, closed when it goes
  earlier_bytes_ += next.bytes();
  earlier_syncs_ += next.syncs();
  ++segment_n_;
  segment_start_bytes_ = journal_.bytes();
  last_image_bytes_ = image.size();
  ++snapshots_;
  last_snapshot_ms_ = static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
  const graph::Stats& s = core_.stats();
  spdlog::info("journal: new segment {} from a snapshot of {} lease(s), {} wait(s), {} session(s) ({} bytes) in {} ms",
               journal_.path(), s.live_leases, s.live_waits, s.live_sessions, image.size(), last_snapshot_ms_);
  for (const std::string& removed :
       PruneSegments(ListSegments(config_.data_dir), static_cast<std::uint64_t>(config_.journal_keep_mb) << 20,
                     std::chrono::hours(24 * config_.journal_keep_days))) {
    spdlog::info("journal: removed old segment {}", removed);
  }
  return "";
}

void Server::Impl::RunSyncer() {
  const auto interval = std::chrono::milliseconds(config_.fsync_interval_ms);
  while (!syncer_stop_.load(std::memory_order_relaxed)) {
    std::this_thread::sleep_for(interval);
    const std::uint64_t written = written_.load(std::memory_order_acquire);
    if (written == synced_.load(std::memory_order_relaxed)) continue;
    if (::fdatasync(journal_.fd()) != 0) {
      sync_failed_.store(true, std::memory_order_relaxed);
      continue;
    }
    synced_.store(written, std::memory_order_release);
    background_syncs_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Server::Impl::FinishTurn() {
  if (!journal_.is_open()) return;
  std::string err;
  switch (config_.fsync) {
    case FsyncPolicy::kAlways:
      if (journal_.unsynced()) err = journal_.Sync();
      break;
    case FsyncPolicy::kInterval:
      err = journal_.Write();
      written_.store(journal_.bytes(), std::memory_order_release);
      if (sync_failed_.load(std::memory_order_relaxed) && err.empty()) err = "fdatasync failed in the syncer";
      break;
    case FsyncPolicy::kNever:
      err = journal_.Write();
      break;
  }
  if (!err.empty() && config_.fsync == FsyncPolicy::kAlways) {
    // The replies of this turn promise durability the disk did not give, and after a
    // failed fsync the kernel may have dropped the dirty pages: stop before sending
    // them (as PostgreSQL does), so that a restart replays only what is on disk.
    spdlog::critical("journal: {}; stopping without sending this turn's replies (fsync always)", err);
    std::_Exit(1);
  }
  if (!err.empty() && !journal_failed_) spdlog::error("journal: {} (further errors are not logged)", err);
  journal_failed_ = journal_failed_ || !err.empty();
  if (!deferred_.empty()) {
    std::vector<std::pair<std::string, std::string>> out;
    out.swap(deferred_);
    for (const auto& [routing_id, payload] : out) SendNow(routing_id, payload);
  }
  MaybeRotate();
}

void Server::Impl::RestoreOrder() {
  auto loaded = LoadLearnedOrder(config_.data_dir);
  if (auto* err = std::get_if<std::string>(&loaded)) {
    // The learned order is advice, not state that locks depend on: keep the file
    // for inspection and start learning afresh rather than refuse to serve.
    const std::string path = config_.data_dir + "/" + kOrderFileName;
    const std::string aside = path + ".corrupt";
    std::error_code ec;
    std::filesystem::rename(path, aside, ec);
    spdlog::error("{}; moved it to {} and starting with an empty learned order", *err, aside);
    return;
  }
  const auto& edges = std::get<0>(loaded);
  core_.order().Restore(edges);
  saved_order_version_ = core_.order().version();
  if (!edges.empty()) {
    spdlog::info("restored {} learned lock-order edges from {}/{}", edges.size(), config_.data_dir, kOrderFileName);
  }
}

void Server::Impl::SaveOrderIfChanged(bool force) {
  const std::uint64_t version = core_.order().version();
  if (version == saved_order_version_ && !(force && core_.order().stats().learned_edges > 0)) return;
  if (std::string err = SaveLearnedOrder(config_.data_dir, core_.order().Learned()); !err.empty()) {
    spdlog::error("cannot save the learned lock order: {}", err);
  }
  saved_order_version_ = version;  // a failed save is retried at the next new edge
}

// ------------------------------------------------------------------ requests

void Server::Impl::HandleFrame(const std::string& routing_id, std::string_view frame) {
  ++counters_.frames;
  // A frame is served at one moment: the commands of a batch share its clock readings.
  frame_now_ = MonotonicNowUs();
  frame_wall_ = WallNowUs();
  struct ClearFrameClock {
    Impl* impl;
    ~ClearFrameClock() { impl->frame_now_ = impl->frame_wall_ = 0; }
  } clear_clock{this};
  const Encoding encoding = protocol::EncodingOf(frame);
  auto decoded = protocol::DecodeRequest(frame, limits_);
  if (auto* err = std::get_if<protocol::DecodeError>(&decoded)) {
    ++counters_.bad_frames;
    if (err->id == 0) {
      ++counters_.bad_frames_without_id;
      spdlog::warn("bad frame of {} bytes without a request id: {}", frame.size(), err->message);
    } else {
      spdlog::debug("bad request {}: {}", err->id, err->message);
    }
    protocol::Reply reply;
    reply.id = err->id;
    reply.code = err->code;
    reply.message = err->message;
    ++replies_by_code_[static_cast<int>(reply.code)];
    Send(routing_id, protocol::EncodeReply(reply, encoding));
    return;
  }
  const protocol::Request& req = std::get<protocol::Request>(decoded);

  // Retries: a repeated id is answered from the session's cache.
  Peer* peer = nullptr;
  if (protocol::IsSessionScoped(req.op)) {
    auto it = peers_.find(req.session);
    if (it != peers_.end() && it->second.secret == req.secret) {
      peer = &it->second;
      if (!peer->encoding_known) {
        peer->encoding = encoding;
        peer->encoding_known = true;
      }
      if (req.id != 0 && req.id <= peer->max_id) {
        auto cached = peer->cached.find(req.id);
        if (cached != peer->cached.end()) {
          ++counters_.cache_hits;
          Send(routing_id, cached->second);
          return;
        }
      }
      // An id below the last one that was never answered (its frame was lost while
      // a later one got through) is served; one whose reply was evicted is refused,
      // since it may have been applied already.
      if (req.id != 0 && req.id <= peer->evicted_max) {
        protocol::Reply reply;
        reply.id = req.id;
        reply.code = graph::Code::kBadRequest;
        reply.message = "request id " + std::to_string(req.id) + " is too old: replies up to id " +
                        std::to_string(peer->evicted_max) + " are no longer cached, and request ids must increase";
        Send(routing_id, protocol::EncodeReply(reply, encoding));
        return;
      }
    }
  }

  const std::string hello_key = req.op == Op::kHello ? routing_id + "/" + std::to_string(req.id) : std::string();
  if (req.op == Op::kHello) {
    if (auto cached = hello_replies_.find(hello_key); cached != hello_replies_.end()) {
      ++counters_.cache_hits;
      Send(routing_id, cached->second);
      return;
    }
  }

  // The requester's own events follow its reply; other sessions' go first (a release
  // that hands a lock over tells the next holder before it answers the releaser).
  hold_events_ = true;
  holding_session_ = req.session;
  protocol::Reply reply = Dispatch(req, encoding, routing_id);
  hold_events_ = false;
  ++replies_by_code_[static_cast<int>(reply.code)];
  const std::string encoded = protocol::EncodeReply(reply, encoding);
  Send(routing_id, encoded);
  std::string moved_session;
  FlushOutbox flush{this, &moved_session};

  if (req.op == Op::kHello && reply.ok()) {
    hello_replies_.emplace(hello_key, encoded);
    hello_order_.push_back(hello_key);
    while (hello_order_.size() > config_.reply_cache) {
      hello_replies_.erase(hello_order_.front());
      hello_order_.pop_front();
    }
  }
  // Cache after the auth check: a session that exists (and, for hello, the new one)
  // remembers the reply.
  auto it = peers_.find(req.op == Op::kHello ? reply.session.value_or("") : req.session);
  if (it == peers_.end() || reply.code == graph::Code::kUnknownSession || reply.code == graph::Code::kAuth) return;
  Peer& p = it->second;
  if (req.op != Op::kHello && req.id != 0) {
    p.max_id = std::max(p.max_id, req.id);
    if (p.cached.emplace(req.id, encoded).second) {
      p.cached_ids.push_back(req.id);
      p.cached_bytes += encoded.size();
    }
    // Bounded by count and by bytes (large batch replies), keeping the newest reply.
    while (p.cached_ids.size() > config_.reply_cache ||
           (p.cached_bytes > config_.reply_cache_bytes && p.cached_ids.size() > 1)) {
      p.evicted_max = std::max(p.evicted_max, p.cached_ids.front());
      auto old = p.cached.find(p.cached_ids.front());
      p.cached_bytes -= old->second.size();
      p.cached.erase(old);
      p.cached_ids.pop_front();
    }
  }
  // A request from a new connection: the session moved; send what it has not seen.
  if (p.routing_id != routing_id) {
    p.routing_id = routing_id;
    moved_session = it->first;
    for (const auto& [seq, event] : p.unacked) {
      ++counters_.events_resent;
      Send(routing_id, event);
    }
  }
}


void Server::Impl::Acknowledge(Peer& peer, std::uint64_t acked_seq) {
  while (!peer.unacked.empty() && peer.unacked.front().first <= acked_seq) peer.unacked.pop_front();
}

std::string Server::Impl::RandomHex(int bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    const auto b = static_cast<unsigned>(rng_() & 0xff);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

protocol::Reply Server::Impl::FromCore(const graph::Reply& r, std::uint64_t id) {
  protocol::Reply out;
  out.id = id;
  out.code = r.code;
  out.message = r.message;
  out.deadlock = r.deadlock;
  if (r.order) out.order_json = graph::RenderOrderJson(*r.order);
  if (!r.ok()) {
    if (r.started) out.started = *r.started;
    return out;
  }
  out.granted = r.granted;
  out.queued = r.queued;
  out.cancelled = r.cancelled;
  if (r.lease != 0) out.lease = r.lease;
  if (r.token != 0) out.token = r.token;
  if (r.started) out.started = *r.started;
  return out;
}

protocol::Reply Server::Impl::ApplyCommand(const graph::Command& command, const protocol::Request& req) {
  graph::Effects effects = Core(command);
  protocol::Reply reply = FromCore(effects.reply, req.id);
  if (req.op == Op::kRenew && effects.reply.ok()) reply.expires_in_ms = effects.reply.expires_in_ms;
  Deliver(effects.events);
  return reply;
}

protocol::Reply Server::Impl::Dispatch(const protocol::Request& req, Encoding encoding,
                                       const std::string& routing_id, const protocol::Request* batch) {
  // A batch item acts for the batch's session.
  const protocol::Request& scope = batch != nullptr ? *batch : req;
  const graph::Auth auth{scope.session, scope.secret};
  // Only a request that proves its session may acknowledge the session's events.
  auto ack_if_authentic = [&](const protocol::Reply& r) {
    if (!req.acked_seq || r.code == graph::Code::kUnknownSession || r.code == graph::Code::kAuth) return;
    if (auto it = peers_.find(scope.session); it != peers_.end()) Acknowledge(it->second, *req.acked_seq);
  };
  protocol::Reply reply;
  switch (req.op) {
    case Op::kHello: {
      graph::Hello h;
      h.session = RandomHex(8);
      h.secret = RandomHex(16);
      h.client = req.client;
      h.ttl_ms = req.ttl_ms.value_or(10'000);
      h.priority = req.priority;
      graph::Effects effects = Core(h);
      reply = FromCore(effects.reply, req.id);
      if (effects.reply.ok()) {
        reply.session = effects.reply.session;
        reply.secret = effects.reply.secret;
        reply.heartbeat_ms = effects.reply.heartbeat_ms;
        reply.epoch = effects.reply.epoch;
        reply.server = kServerName;
        Peer& peer = peers_[h.session];
        peer.next_seq = (std::uint64_t{core_.epoch()} << 32) + 1;
        peer.routing_id = routing_id;
        peer.secret = h.secret;
        peer.encoding = encoding;
        spdlog::info("session {} opened by '{}' (ttl {} ms, priority {})", h.session, h.client, h.ttl_ms, h.priority);
      }
      Deliver(effects.events);
      return reply;
    }
    case Op::kHeartbeat:
      reply = ApplyCommand(graph::Heartbeat{auth}, req);
      // A client learns from the epoch that the daemon restarted, and reclaims.
      if (reply.ok()) reply.epoch = core_.epoch();
      break;
    case Op::kBye:
      reply = ApplyCommand(graph::Bye{auth}, req);
      break;
    case Op::kAcquire: {
      graph::Acquire a;
      a.auth = auth;
      a.request_id = req.id;
      a.owner = req.owner;
      a.resource = req.resource;
      a.mode = req.mode;
      a.ttl_ms = req.ttl_ms.value_or(0);
      a.wait_ms = req.wait_ms;
      a.site = req.site;
      a.started = req.started;
      reply = ApplyCommand(std::move(a), req);
      break;
    }
    case Op::kRenew: {
      graph::Renew r;
      r.auth = auth;
      r.lease = req.lease.value_or(0);
      r.ttl_ms = req.ttl_ms;
      reply = ApplyCommand(std::move(r), req);
      break;
    }
    case Op::kRelease: {
      graph::Release r;
      r.auth = auth;
      r.lease = req.lease;
      r.owner = req.owner;
      r.resource = req.resource;
      reply = ApplyCommand(std::move(r), req);
      reply.lease.reset();
      break;
    }
    case Op::kHold: {
      graph::Hold h;
      h.auth = auth;
      h.owner = req.owner;
      h.resource = req.resource;
      h.mode = req.mode;
      h.ttl_ms = req.ttl_ms.value_or(0);
      h.site = req.site;
      reply = ApplyCommand(std::move(h), req);
      break;
    }
    case Op::kWait: {
      graph::Wait w;
      w.auth = auth;
      w.owner = req.owner;
      w.resource = req.resource;
      w.mode = req.mode;
      w.site = req.site;
      reply = ApplyCommand(std::move(w), req);
      break;
    }
    case Op::kUnwait:
      reply = ApplyCommand(graph::Unwait{auth, req.owner, req.resource}, req);
      break;
    case Op::kReclaim: {
      graph::Reclaim c;
      c.auth = auth;
      for (const protocol::ReclaimItem& h : req.holds) c.items.push_back({h.owner, h.resource, h.mode, h.token});
      graph::Effects effects = Core(c);
      reply = FromCore(effects.reply, req.id);
      for (const graph::Reply::ItemResult& x : effects.reply.items) {
        protocol::Reply item;
        item.code = x.code;
        item.message = x.message;
        if (x.code == graph::Code::kOk) item.expires_in_ms = x.expires_in_ms;
        reply.results.push_back(std::move(item));
      }
      Deliver(effects.events);
      break;
    }
    case Op::kBatch: {
      reply.id = req.id;
      reply.results.reserve(req.items.size());
      for (const protocol::Request& item : req.items) reply.results.push_back(Dispatch(item, encoding, routing_id, &req));
      break;
    }
    case Op::kRevoke: {
      reply.id = req.id;
      if (config_.admin_token.empty()) {
        reply.code = graph::Code::kAuth;
        reply.message = "revoke is disabled: the daemon has no admin_token configured";
        return reply;
      }
      if (req.admin_token != config_.admin_token) {
        reply.code = graph::Code::kAuth;
        reply.message = "wrong admin_token";
        return reply;
      }
      graph::Revoke r;
      r.lease = req.lease;
      r.resource = req.resource;
      graph::Effects effects = Core(r);
      reply = FromCore(effects.reply, req.id);
      if (effects.reply.ok()) {
        reply.revoked = effects.reply.revoked;
        spdlog::warn("operator revoked {} lease(s) ({})", effects.reply.revoked.size(),
                     req.lease ? "lease " + std::to_string(*req.lease) : "resource " + req.resource);
      }
      Deliver(effects.events);
      return reply;
    }
    case Op::kGraph:
      reply.id = req.id;
      if (req.format == "dot") {
        reply.graph_dot = core_.ToDot();
      } else if (req.format == "json") {
        reply.listing_key = "graph";
        reply.listing_json = GraphJson();
      } else {
        reply.code = graph::Code::kBadRequest;
        reply.message = "format must be \"json\" or \"dot\", got \"" + req.format + "\"";
      }
      return reply;
    case Op::kStats:
      reply.id = req.id;
      reply.listing_key = "stats";
      reply.listing_json = StatsJson();
      return reply;
    case Op::kLeases:
      reply.id = req.id;
      reply.listing_key = "leases";
      reply.listing_json = LeasesJson(req);
      return reply;
    case Op::kDeadlocks:
      reply.id = req.id;
      reply.listing_key = "deadlocks";
      reply.listing_json = DeadlocksJson(req);
      return reply;
    case Op::kOrder:
      reply.id = req.id;
      reply.listing_key = "order";
      reply.listing_json = OrderJson();
      return reply;
  }
  ack_if_authentic(reply);
  return reply;
}

// ------------------------------------------------------------------ events

void Server::Impl::SendEvent(const std::string& session, protocol::Event event) {
  auto it = peers_.find(session);
  if (it == peers_.end()) return;
  Peer& peer = it->second;
  event.seq = peer.next_seq++;
  std::string encoded = protocol::EncodeEvent(event, peer.encoding);
  if (hold_events_ && session == holding_session_) outbox_.emplace_back(session, encoded);
  else Send(peer.routing_id, encoded);
  ++counters_.events_sent;
  peer.unacked.emplace_back(event.seq, std::move(encoded));
  if (peer.unacked.size() > config_.max_unacked_events) {
    peer.unacked.pop_front();
    ++counters_.events_dropped;
  }
}

void Server::Impl::Deliver(std::vector<graph::Event>& events) {
  for (graph::Event& ev : events) {
    std::visit(
        [&](auto& e) {
          using T = std::decay_t<decltype(e)>;
          protocol::Event out;
          if constexpr (std::is_same_v<T, graph::GrantedEvent>) {
            out.kind = protocol::EventKind::kGranted;
            out.id = e.request_id;
            out.owner = e.owner;
            out.resource = e.resource;
            out.mode = e.mode;
            out.lease = e.lease;
            out.token = e.token;
            SendEvent(e.session, std::move(out));
          } else if constexpr (std::is_same_v<T, graph::DeniedEvent>) {
            out.kind = protocol::EventKind::kDenied;
            out.id = e.request_id;
            out.owner = e.owner;
            out.resource = e.resource;
            out.code = e.code;
            out.deadlock = e.deadlock;
            SendEvent(e.session, std::move(out));
          } else if constexpr (std::is_same_v<T, graph::RevokedEvent>) {
            out.kind = protocol::EventKind::kRevoked;
            out.owner = e.owner;
            out.resource = e.resource;
            out.lease = e.lease;
            out.token = e.token;
            out.reason = e.reason;
            out.handover_in_ms = e.handover_in_ms;
            out.deadlock = e.deadlock;
            SendEvent(e.session, std::move(out));
          } else if constexpr (std::is_same_v<T, graph::DeadlockEvent>) {
            spdlog::warn("deadlock #{}: victim {} ({})\n{}", e.report->id, e.report->victim, e.report->why,
                         graph::RenderText(*e.report));
            deadlocks_.push_back(e.report);
            JournalReport(ReportInfo::Type::kDeadlock, graph::RenderJson(*e.report));
            while (deadlocks_.size() > config_.deadlock_history) deadlocks_.pop_front();
          } else if constexpr (std::is_same_v<T, graph::VictimUnresponsiveEvent>) {
            spdlog::warn("deadlock #{}: victim {} did not release within the grace; choosing another",
                         e.report->id, e.report->victim);
          } else if constexpr (std::is_same_v<T, graph::ConflictingHoldEvent>) {
            spdlog::info("conflicting hold reported: {}/{} on {} while {} holds it", e.session, e.owner,
                         e.resource, e.held_by);
          } else if constexpr (std::is_same_v<T, graph::SessionClosedEvent>) {
            spdlog::info("session {} {}", e.session, e.expired ? "expired" : "closed");
            peers_.erase(e.session);
          } else if constexpr (std::is_same_v<T, graph::OrderReportEvent>) {
            JournalReport(ReportInfo::Type::kOrder, graph::RenderOrderJson(*e.report));
            spdlog::warn("lock order report #{} ({}{}): {} -> {}\n{}", e.report->id,
                         graph::OrderKindName(e.report->kind), e.report->denied ? ", denied" : "", e.report->from,
                         e.report->to, graph::RenderOrderText(*e.report));
            if (!e.report->denied) {
              out.kind = protocol::EventKind::kOrderWarning;
              out.owner = e.report->owner;
              out.resource = e.report->resource;
              out.report_json = graph::RenderOrderJson(*e.report);
              SendEvent(e.session, std::move(out));
            }
          } else if constexpr (std::is_same_v<T, graph::NeedEpochEvent>) {
            // The next epoch is on disk before any token of it is handed out.
            if (std::string err = StoreEpoch(config_.data_dir, e.next_epoch); !err.empty()) {
              spdlog::error("cannot persist epoch {}: {}; grants wait until it can be", e.next_epoch, err);
              return;
            }
            spdlog::warn("fencing sequence nearly used up: moving to epoch {}", e.next_epoch);
            graph::Effects fx = Core(graph::SetEpoch{e.next_epoch});
            Deliver(fx.events);
          }
        },
        ev);
  }
}

// ------------------------------------------------------------------ queries

std::string Server::Impl::StatsJson() {
  const graph::Stats& s = core_.stats();
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartObject();
  auto num = [&](const char* k, std::uint64_t v) {
    Key(w, k);
    w.Uint64(v);
  };
  Key(w, "server");
  Str(w, kServerName);
  num("epoch", core_.epoch());
  num("frames", counters_.frames);
  num("bad_frames", counters_.bad_frames);
  num("bad_frames_without_id", counters_.bad_frames_without_id);
  num("cache_hits", counters_.cache_hits);
  num("events_sent", counters_.events_sent);
  num("events_resent", counters_.events_resent);
  num("events_dropped", counters_.events_dropped);
  num("requests", s.commands);
  num("errors", s.errors);
  num("sessions_opened", s.sessions_opened);
  num("sessions_expired", s.sessions_expired);
  num("grants", s.grants);
  num("queued", s.queued);
  num("timeouts", s.timeouts);
  num("cancelled", s.cancelled);
  num("releases", s.releases);
  num("expiries", s.lease_expiries);
  num("revocations", s.revocations);
  num("deadlocks", s.deadlocks);
  num("cycles_reordered", s.cycles_reordered);
  num("cycles_vanished", s.cycles_vanished);
  num("victims_unresponsive", s.victims_unresponsive);
  num("conflicting_holds", s.conflicting_holds);
  Key(w, "victims_by_step");
  w.StartObject();
  for (int i = 0; i < 4; ++i) {
    const std::string_view name = graph::VictimStepName(static_cast<graph::VictimStep>(i));
    w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
    w.Uint64(s.victims_by_step[i]);
  }
  w.EndObject();
  Key(w, "replies_by_code");
  w.StartObject();
  for (int i = 0; i < 13; ++i) {
    const std::string_view name = graph::CodeName(static_cast<graph::Code>(i));
    w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
    w.Uint64(replies_by_code_[i]);
  }
  w.EndObject();
  num("live_sessions", s.live_sessions);
  num("live_owners", s.live_owners);
  num("live_resources", s.live_resources);
  num("live_leases", s.live_leases);
  num("live_waits", s.live_waits);
  num("wait_edges", s.wait_edges);
  num("restored_leases", s.restored_leases);
  num("reclaimed", s.reclaimed);
  num("reclaims_refused", s.reclaims_refused);
  num("grace_refusals", s.grace_refusals);
  Key(w, "in_grace");
  w.Bool(core_.in_grace());
  Key(w, "journal");
  w.StartObject();
  Key(w, "fsync");
  Str(w, std::string(FsyncPolicyName(config_.fsync)));
  num("bytes", earlier_bytes_ + journal_.bytes());
  num("syncs", earlier_syncs_ + journal_.syncs() + background_syncs_.load(std::memory_order_relaxed));
  Key(w, "failed");
  w.Bool(journal_failed_);
  Key(w, "segment");
  Str(w, journal_.path());
  num("segment_bytes", journal_.bytes());
  num("snapshots", snapshots_);
  num("snapshot_failures", snapshot_failures_);
  num("last_snapshot_ms", static_cast<std::uint64_t>(last_snapshot_ms_));
  num("last_snapshot_bytes", last_image_bytes_);
  w.EndObject();
  const graph::OrderStats& o = core_.order().stats();
  Key(w, "order");
  w.StartObject();
  num("checks", o.checks);
  num("warnings", o.warnings);
  num("denied", o.denied);
  num("reports", o.reports);
  num("repeats", o.repeats);
  num("inversions", o.inversions);
  num("learned_edges", o.learned_edges);
  num("edges_dropped", o.edges_dropped);
  w.EndObject();
  w.EndObject();
  return buf.GetString();
}

std::string Server::Impl::OrderJson() {
  const graph::OrderChecker& order = core_.order();
  std::string out = "{\"mode\":";
  graph::AppendJsonString(out, graph::OrderModeName(order.rules().mode));
  out += ",\"edges\":[";
  const auto edges = order.Learned();
  for (std::size_t i = 0; i < edges.size(); ++i) {
    if (i) out += ',';
    graph::AppendOrderEdgeJson(out, edges[i]);
  }
  out += "],\"reports\":[";
  const auto reports = order.Reports();
  for (std::size_t i = 0; i < reports.size(); ++i) {
    if (i) out += ',';
    out += "{\"count\":" + std::to_string(reports[i].second) + ",\"report\":" + graph::RenderOrderJson(*reports[i].first) +
           ",\"text\":";
    graph::AppendJsonString(out, graph::RenderOrderText(*reports[i].first));
    out += '}';
  }
  out += "],\"rules\":";
  graph::AppendJsonString(out, order.ExportRules());
  out += '}';
  return out;
}

std::string Server::Impl::LeasesJson(const protocol::Request& req) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  w.StartArray();
  const graph::TimeUs now = MonotonicNowUs();
  for (const graph::LeaseInfo& l : core_.Leases()) {
    if (!req.filter_session.empty() && l.session != req.filter_session) continue;
    if (!req.filter_owner.empty() && l.owner != req.filter_owner && l.session + "/" + l.owner != req.filter_owner) continue;
    if (!req.filter_resource.empty() && l.resource != req.filter_resource) continue;
    w.StartObject();
    Key(w, "lease");
    U64Str(w, l.lease);
    Key(w, "token");
    U64Str(w, l.token);
    Key(w, "session");
    Str(w, l.session);
    Key(w, "owner");
    Str(w, l.owner);
    Key(w, "resource");
    Str(w, l.resource);
    Key(w, "mode");
    Str(w, std::string(graph::ModeName(l.mode)));
    Key(w, "expires_in_ms");
    w.Int64(std::max<graph::TimeUs>(0, l.expires_at_us - now) / 1000);
    Key(w, "reported");
    w.Bool(l.reported);
    Key(w, "revoked");
    w.Bool(l.revoked);
    Key(w, "site");
    Str(w, l.site);
    w.EndObject();
  }
  w.EndArray();
  return buf.GetString();
}

std::string Server::Impl::GraphJson() { return graph::GraphJson(core_, MonotonicNowUs()); }

std::string Server::Impl::DeadlocksJson(const protocol::Request& req) {
  std::string out = "[";
  bool first = true;
  for (const auto& r : deadlocks_) {
    if (!req.filter_owner.empty()) {
      bool involved = false;
      for (const auto& e : r->cycle) involved = involved || e.owner == req.filter_owner;
      if (!involved) continue;
    }
    if (!req.filter_resource.empty()) {
      bool involved = false;
      for (const auto& e : r->cycle) involved = involved || e.waits_for == req.filter_resource;
      if (!involved) continue;
    }
    if (!first) out += ",";
    first = false;
    out += graph::RenderJson(*r);
  }
  return out + "]";
}

// ------------------------------------------------------------------ Server

Server::Server(DaemonConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Server::~Server() = default;
std::string Server::Bind() { return impl_->Bind(); }
const std::vector<std::string>& Server::endpoints() const { return impl_->endpoints_; }
void Server::Run(const std::atomic<bool>& stop) { impl_->Run(stop); }

}  // namespace lockgraph::daemon
