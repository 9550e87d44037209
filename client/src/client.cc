// lockgraph::Client: one session with lockgraphd, kept alive by a background thread.
//
// Threads. The background thread (the "I/O thread") alone owns the ZeroMQ DEALER
// socket. API threads never touch a ZeroMQ socket: they put a PendingCall into `calls_`
// (guarded by `mu_`), ask for a scan of the table, and wake the I/O thread by writing a
// byte into a pipe that the thread polls next to the socket. The scan sends in id
// order: the daemon refuses an id below one it has answered unless it cached that
// reply, so a call must never overtake an older unsent one. Each call carries its own
// condition variable; the I/O thread fills in the reply (or a failure) and notifies it.
// A pipe rather than an inproc socket: an inproc socket's sending end would have to be
// shared by every API thread, while write(2) on a pipe is safe from any thread.
//
// Retries. A call is sent at once, resent with the same id after resend_after (the
// daemon's reply cache answers repeats), and when it has been sent twice on one
// connection without any message from the daemon since, the connection is dropped
// and the next endpoint is tried after an exponential, jittered backoff. A new
// connection resends every unanswered call. The caller alone decides when to stop
// waiting (request_timeout); a call whose late reply would leave state behind in the
// daemon (an acquire granted or queued for nobody) keeps an "orphan" handler that
// undoes it when the reply finally arrives.
//
// Session. Heartbeats go out every heartbeat_ms (a third of the session TTL) and, like
// every session-scoped request, acknowledge the highest event seq delivered. When the
// daemon answers UNKNOWN_SESSION, every lease the client believes it holds is reported
// lost by a synthetic `revoked` event (seq 0, reason expired), queued acquires and
// calls already sent under the old session fail with UNKNOWN_SESSION, and the client
// says hello again; session-scoped calls not yet sent wait for the new session
// (within their own timeout).
//
// Restarts. The daemon's epoch (from hello, then from every heartbeat reply) grows at
// each start. A larger one means the daemon restarted, restored this session and its
// arbitrate leases from its journal, and serves a grace period: the client sends one
// `reclaim` naming every arbitrate lease it tracks (OnRestart, StartReclaim), batched
// behind a heartbeat so that the reply names the epoch of the boot that answered it,
// and applies the per-item results in FinishReclaim. A reclaimed lease's advisory
// deadline restarts from the reclaim's first send, but only when the answering boot is
// later than the one that last granted, renewed or reclaimed it: the daemon restarts
// the TTL of a restored lease at its reclaim, while reclaiming a live lease (a reclaim
// repeated after a second restart was noticed) extends nothing. A refused lease is
// reported lost like the leases of a lost session. Waits do not survive a restart:
// for each acquire queued before it an unwait asks the daemon what became of it (a
// lease the owner holds there completes the acquire; otherwise it fails with GRACE
// and Acquire asks again). One reclaim is in
// flight at a time; an epoch seen meanwhile asks for another when it is answered. Any
// GRACE reply brings the next heartbeat forward, so that the restart is noticed at
// once rather than a heartbeat interval later.
//
// Events. Replies and events arrive on the same socket. Events with a seq already
// delivered are dropped; granted/denied events complete the queued Acquire with their
// id; every event then goes to the callback (on the I/O thread, without `mu_` held)
// or, with no callback, to the queue that PollEvent reads. A blocking Client method
// called from the callback would wait for the very thread that runs it, so it fails
// at once with kInternal instead.
//
// Lease deadlines (DESIGN.md "Time, durability, fail-over") are advisory:
// valid_until = (a lower bound of when the daemon granted or renewed it) + ttl -
// safety_margin. For a reply that lower bound is the first send of its request. For a
// granted event it is the latest first-send among the requests answered on the same
// connection before the event arrived (the daemon answered them before granting,
// since one connection delivers in order), or the acquire's own first send when the
// connection changed since.
//
// Recording and offline mode (client.h has the contract). A Recorder owns the trace
// file; it is created by Connect and never changes, so the API threads test it
// without a lock, and each line goes out in one write(2) of its own, never under
// `mu_`, so that a slow disk cannot stall the I/O thread. Offline, Start installs a
// local session and starts no thread; the report-mode calls return before anything
// would be submitted, so nothing ever waits for the I/O thread that is not there.
#include "lockgraph/client.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <zmq.hpp>

namespace lockgraph {
namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using protocol::Event;
using protocol::EventKind;
using protocol::Op;
using protocol::Reply;
using protocol::Request;

// Events wait here for PollEvent; beyond this the oldest are dropped.
constexpr std::size_t kMaxQueuedEvents = 1 << 16;
// The I/O thread looks at its timers at least this often.
constexpr Millis kMaxPollWait{100};
// Messages read per loop turn before the timers get a look.
constexpr int kMaxReadsPerWake = 1024;
// Large enough that a burst of calls never meets the send high-water mark.
constexpr int kSendHighWater = 100'000;

std::int64_t ToMillis(Clock::duration d) {
  return std::chrono::duration_cast<Millis>(d).count();
}

Error ErrorOf(const Reply& reply) {
  Error error;
  error.code = reply.code;
  error.message = reply.message.empty() ? std::string(graph::CodeName(reply.code)) : reply.message;
  error.deadlock = reply.deadlock;
  error.order_json = reply.order_json;
  return error;
}

Error ErrorOfDenial(const Event& event) {
  Error error;
  error.code = event.code;
  error.message = "acquire of " + event.resource + " by " + event.owner + " denied: " +
                  std::string(graph::CodeName(event.code));
  if (event.deadlock != nullptr) {
    error.message += " (victim " + event.deadlock->victim;
    if (!event.deadlock->why.empty()) error.message += ": " + event.deadlock->why;
    error.message += ")";
  }
  error.deadlock = event.deadlock;
  if (event.code == Code::kOrderViolation) error.order_json = event.report_json;
  return error;
}

Error CallbackThreadError() {
  return Error{Code::kInternal,
               "lockgraph::Client called from its own event callback: it would block the thread "
               "that reads the replies",
               nullptr};
}

Error OfflineError(std::string_view what) {
  return Error{Code::kInternal,
               "offline: " + std::string(what) +
                   " needs lockgraphd; offline recording covers report mode (hold/wait/release)",
               nullptr};
}

// The trace file of client.h's "Recording": JSON lines, appended whole.
// Thread safety: Record may be called from any thread.
class Recorder {
 public:
  // Opens (creating it if need be) `path` for appending.
  static Result<std::unique_ptr<Recorder>> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      return Error{Code::kInternal,
                   "cannot open the lockgraph recording " + path + ": " + std::strerror(errno),
                   nullptr};
    }
    return std::unique_ptr<Recorder>(new Recorder(path, fd));
  }
  ~Recorder() { ::close(fd_); }
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Appends the line for request `r` (op hold, wait, acquire, release or unwait)
  // sent under `session`. A malformed request (see Format) writes nothing.
  void Record(Op op, std::string_view session, const Request& r) {
    if (auto line = Format(op, session, r)) Append(*line);
  }

  // The line, newline included, for request `r` as `op` under `session`; nullopt
  // when the daemon would refuse the request as malformed (an empty owner or
  // resource, a string that is not UTF-8): that is not something an owner did, and
  // no JSON line could carry it.
  static std::optional<std::string> Format(Op op, std::string_view session, const Request& r) {
    if (r.owner.empty() || r.resource.empty()) return std::nullopt;
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>, rapidjson::CrtAllocator,
                      rapidjson::kWriteValidateEncodingFlag>
        w(buffer);
    bool valid = true;
    auto string = [&](std::string_view key, std::string_view value) {
      w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
      valid = w.String(value.data(), static_cast<rapidjson::SizeType>(value.size())) && valid;
    };
    const bool has_mode = op == Op::kHold || op == Op::kWait || op == Op::kAcquire;
    w.StartObject();
    w.Key("v");
    w.Int(protocol::kVersion);
    string("op", protocol::OpName(op));
    string("session", session);
    string("owner", r.owner);
    string("resource", r.resource);
    if (has_mode) {
      string("mode", graph::ModeName(r.mode));
      if (!r.site.empty()) string("site", r.site);
    }
    if ((op == Op::kHold || op == Op::kAcquire) && r.ttl_ms) {
      w.Key("ttl_ms");
      w.Int64(*r.ttl_ms);
    }
    if (op == Op::kAcquire) {
      w.Key("wait_ms");
      w.Int64(r.wait_ms);
    }
    if (!valid) return std::nullopt;
    w.EndObject();
    std::string line(buffer.GetString(), buffer.GetSize());
    line += '\n';
    return line;
  }

  void Append(std::string_view line) {
    // One write(2): with O_APPEND the line lands whole after whatever other writers
    // appended. A short write (a full disk) is finished as well as it can be.
    while (!line.empty()) {
      const ssize_t n = ::write(fd_, line.data(), line.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (!failed_.exchange(true)) {
          std::fprintf(stderr, "lockgraph: writing the recording %s failed: %s; the trace is incomplete\n",
                       path_.c_str(), n < 0 ? std::strerror(errno) : "nothing written");
        }
        return;
      }
      line.remove_prefix(static_cast<std::size_t>(n));
    }
  }

 private:
  Recorder(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  const std::string path_;
  const int fd_;
  std::atomic<bool> failed_{false};  // reported on stderr once
};

// Distinguishes the offline sessions of one process.
std::atomic<std::uint64_t> offline_sessions{0};

}  // namespace

class Client::Impl {
 public:
  // `recorder` may be null (no recording); `offline`: talk to no daemon.
  Impl(ClientOptions options, std::unique_ptr<Recorder> recorder, bool offline);
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // Starts the I/O thread and says hello.
  Status Start();

  const std::string& session() const;
  Result<Lease> Acquire(std::string_view owner, std::string_view resource, Mode mode, Millis ttl,
                        Millis wait, std::string_view site, std::optional<std::int64_t> started);
  Status Release(const Lease& lease);
  std::optional<Lease> Held(const Lease& lease) const;
  Result<Lease> Renew(const Lease& lease, std::optional<Millis> ttl);
  std::optional<std::int64_t> Started(std::string_view owner) const;
  Result<Lease> Hold(std::string_view owner, std::string_view resource, Mode mode, Millis ttl,
                     std::string_view site);
  Status Wait(std::string_view owner, std::string_view resource, Mode mode, std::string_view site);
  Status Unwait(std::string_view owner, std::string_view resource);
  Status ReleaseReported(std::string_view owner, std::string_view resource);
  void OnEvent(std::function<void(const Event&)> callback);
  std::optional<Event> PollEvent(Millis timeout);
  Result<Reply> Call(Request request);

 private:
  struct PendingCall;
  // Runs on the I/O thread with mu_ held when a call nobody waits for is answered.
  using Handler = std::function<void(PendingCall&, const Reply&)>;

  // One request in flight (or, for a queued acquire, waiting for its event).
  // Every field is guarded by mu_.
  struct PendingCall {
    Request request;              // id assigned; session fields stamped at each send
    bool session_scoped = false;  // carries session, secret and acked_seq
    bool waiter = true;           // a caller waits on `cv`; false: background or abandoned
    Handler orphan;               // takes the reply when no caller waits (may be empty)
    TimePoint give_up = TimePoint::max();  // a call nobody waits for is dropped then
    bool awaits_event = false;    // an Acquire: a `queued` reply is followed by an event
    bool restart_unwait = false;  // queued before a restart: an unwait decides its fate
    bool wait_forever = false;    // ... with wait < 0
    // Transport (written by the I/O thread).
    int sends = 0;                // sends on the current connection; 0: due now
    bool ever_sent = false;
    TimePoint first_sent;         // first send on any connection
    std::uint64_t first_connection = 0;  // connection_ at the first send
    TimePoint last_sent;
    std::string sent_session;     // the session its last send carried
    // Completion.
    bool replied = false;
    Reply reply;
    std::optional<Error> failure;     // the client gave up on the daemon's behalf
    bool queued = false;              // replied queued: waiting for `event`
    std::optional<Event> event;       // granted/denied for this acquire
    TimePoint grant_bound;            // lower bound of the grant time of `event`
    std::condition_variable cv;
  };

  struct TrackedLease {
    std::string owner;
    std::string resource;
    Mode mode = Mode::kExclusive;
    graph::Token token = 0;
    std::optional<Millis> ttl;
    bool reported = false;  // from hold: soft state, never restored nor reclaimed
    // The daemon epoch that last granted, renewed or reclaimed it: a reclaim at a
    // larger epoch restarts its TTL, a repeated one at the same epoch does not.
    std::uint32_t epoch = 0;
    std::optional<TimePoint> valid_until;  // advisory, as in client.h; unknown if unset
  };

  // What a completed exchange gives its caller.
  struct Answer {
    Reply reply;
    TimePoint sent_at;  // first send of the request
    std::string session;  // the session its last send carried (session-scoped ops)
  };

  // ---- API side
  bool OnIoThread() const { return std::this_thread::get_id() == io_thread_id_.load(); }
  std::shared_ptr<PendingCall> NewCall(Request request, Handler orphan = {});
  // Registers the call and wakes the I/O thread; false when the client is closing.
  bool Submit(const std::shared_ptr<PendingCall>& call);
  // Waits for the reply until `deadline`; on timeout abandons the call.
  Result<Answer> Await(const std::shared_ptr<PendingCall>& call, TimePoint deadline);
  Result<Answer> Exchange(Request request, Handler orphan = {});
  // Exchange for requests whose reply carries nothing but success or an error.
  Status ExchangeStatus(Request request) {
    auto answer = Exchange(std::move(request));
    if (!answer.ok()) return answer.error();
    if (!answer.value().reply.ok()) return ErrorOf(answer.value().reply);
    return Ok{};
  }
  // One acquire request (Acquire retries it while the daemon answers GRACE), queued
  // for `wait`; a grant is recorded with `recorded_wait_ms`, the caller's.
  // `learned_started` receives the owner's `started` when a reply carried one.
  Result<Lease> AcquireOnce(const Request& request, Millis ttl, Millis wait, std::int64_t recorded_wait_ms,
                            std::optional<std::int64_t>& learned_started);
  Result<Lease> CancelQueued(const Request& acquire, TimePoint acquire_sent, Millis ttl,
                             Millis waited);
  // Sleeps until `until` or until the client closes; false when it closes.
  bool SleepUntil(TimePoint until);
  // Offline report mode: the same calls, answered and recorded locally.
  Result<Lease> OfflineHold(const Request& request, Millis ttl);
  // Checks and records `request` as `op`.
  Status OfflineReport(Op op, const Request& request);
  Lease MakeLease(const Request& request, graph::LeaseId id, graph::Token token, TimePoint from,
                  Millis ttl, bool reported) const;
  void Wake();
  void Close();
  // REQUIRES: mu_ held.
  void Abandon(PendingCall& call);
  Error TimeoutError(Clock::duration waited) const;  // REQUIRES: mu_ held

  // ---- I/O thread
  void Run();
  void HandleFrame(const std::string& frame, TimePoint now, std::vector<Event>& events);
  void HandleReply(const Reply& reply, TimePoint now, std::vector<Event>& events);
  void HandleEvent(Event event, TimePoint now, std::vector<Event>& events);
  void TrackReply(const PendingCall& call, const Reply& reply, TimePoint now);
  // Starts tracking a lease the daemon granted or handed over, keeping what is known
  // of it already (an acquire of what the owner holds returns that lease unchanged).
  void Track(graph::LeaseId id, TrackedLease lease, TimePoint now);
  void Deliver(std::vector<Event>& events);
  void Tick(TimePoint now, std::vector<std::string>& frames);
  void SendCall(PendingCall& call, TimePoint now, std::vector<std::string>& frames);
  bool Sendable(const PendingCall& call) const;
  bool OpenSocket(TimePoint now);
  void DropConnection(TimePoint now);
  void LoseSession(TimePoint now, std::vector<Event>& events);
  void InstallSession(const Reply& reply, TimePoint now);
  void StartHello(TimePoint now);
  // A reply showed a larger daemon epoch: the daemon restarted.
  void OnRestart(std::uint32_t epoch, TimePoint now);
  void StartReclaim(TimePoint now);
  void FinishReclaim(const PendingCall& call, const Reply& reply, TimePoint now, std::vector<Event>& events);
  // The synthetic `revoked` event of a lease the client lost without the daemon saying so.
  static Event LostEvent(graph::LeaseId id, const TrackedLease& lease);
  // Background requests: sent by the I/O thread, answered to `orphan`.
  std::uint64_t Background(Request request, Handler orphan, TimePoint give_up);
  void BackgroundRelease(graph::LeaseId lease, TimePoint now);
  void BackgroundUnwait(const std::string& owner, const std::string& resource, TimePoint now);
  Millis Jittered(Millis base);
  const std::string& CurrentSession() const;  // REQUIRES: mu_ held

  const ClientOptions options_;
  const std::unique_ptr<Recorder> recorder_;  // null: not recording
  const bool offline_;
  std::atomic<graph::LeaseId> next_offline_lease_{1};  // offline Hold's lease ids
  zmq::context_t context_;
  int wake_read_ = -1;   // read end: polled by the I/O thread
  int wake_write_ = -1;  // write end: any thread
  std::thread thread_;
  std::atomic<std::thread::id> io_thread_id_{};

  mutable std::mutex mu_;
  bool stopping_ = false;                               // GUARDED_BY(mu_)
  std::uint64_t next_id_ = 1;                           // GUARDED_BY(mu_)
  std::map<std::uint64_t, std::shared_ptr<PendingCall>> calls_;  // GUARDED_BY(mu_)
  // Every session this client has had, the current one last. Elements never change
  // once added, so session() can hand out a reference.
  std::list<std::string> sessions_;                     // GUARDED_BY(mu_)
  std::string secret_;                                  // GUARDED_BY(mu_)
  bool session_ok_ = false;                             // GUARDED_BY(mu_)
  bool rehello_due_ = false;                            // GUARDED_BY(mu_)
  TimePoint rehello_at_;                                // GUARDED_BY(mu_)
  Millis heartbeat_interval_;                           // GUARDED_BY(mu_)
  TimePoint next_heartbeat_ = TimePoint::max();         // GUARDED_BY(mu_)
  std::uint64_t heartbeat_id_ = 0;                      // GUARDED_BY(mu_): 0: none out
  std::uint64_t hello_id_ = 0;                          // GUARDED_BY(mu_): re-hello out
  std::uint64_t last_seq_ = 0;                          // GUARDED_BY(mu_): highest delivered
  std::unordered_map<graph::LeaseId, TrackedLease> leases_;  // GUARDED_BY(mu_)
  std::uint32_t epoch_ = 0;                             // GUARDED_BY(mu_): the daemon's, last seen
  std::uint64_t reclaim_id_ = 0;                        // GUARDED_BY(mu_): 0: none out
  std::vector<graph::LeaseId> reclaim_leases_;          // GUARDED_BY(mu_): its items' leases
  bool reclaim_again_ = false;                          // GUARDED_BY(mu_): another one is due
  TimePoint reclaim_at_;                                // GUARDED_BY(mu_): ... not before this
  std::condition_variable reclaim_cv_;                  // signalled with mu_ when a reclaim ends
  std::condition_variable closing_cv_;                  // signalled with mu_ when closing
  std::unordered_map<std::string, std::int64_t> started_;   // GUARDED_BY(mu_)
  std::shared_ptr<std::function<void(const Event&)>> callback_;  // GUARDED_BY(mu_)
  std::deque<Event> events_;                            // GUARDED_BY(mu_)
  std::condition_variable events_cv_;                   // signalled with mu_
  std::string endpoint_;                                // GUARDED_BY(mu_): current or last
  std::string transport_error_;                         // GUARDED_BY(mu_): last, if any
  TimePoint last_heard_;                                // GUARDED_BY(mu_): any message
  TimePoint oldest_unanswered_ = TimePoint::max();      // GUARDED_BY(mu_)
  std::uint64_t connection_ = 0;                        // GUARDED_BY(mu_): generation
  TimePoint reply_bound_;                               // GUARDED_BY(mu_): see top
  TimePoint next_scan_;                                 // GUARDED_BY(mu_)
  bool reconnect_requested_ = false;                    // GUARDED_BY(mu_)
  std::string leader_hint_;                             // GUARDED_BY(mu_): NOT_LEADER
  std::size_t endpoint_index_ = 0;                      // GUARDED_BY(mu_)
  Millis backoff_;                                      // GUARDED_BY(mu_)
  TimePoint reconnect_at_;                              // GUARDED_BY(mu_)

  // I/O thread only.
  std::optional<zmq::socket_t> socket_;
  std::mt19937_64 rng_{std::random_device{}()};
};

// ------------------------------------------------------------------ setup

Client::Impl::Impl(ClientOptions options, std::unique_ptr<Recorder> recorder, bool offline)
    : options_(std::move(options)),
      recorder_(std::move(recorder)),
      offline_(offline),
      context_(1),
      heartbeat_interval_(std::max<Millis>(Millis{1}, options_.session_ttl / 3)),
      backoff_(options_.backoff_min) {}

Client::Impl::~Impl() { Close(); }

Status Client::Impl::Start() {
  if (offline_) {
    std::lock_guard lock(mu_);
    sessions_.push_back("offline-" + std::to_string(::getpid()) + "-" +
                        std::to_string(++offline_sessions));
    return Ok{};
  }
  int fds[2];
  if (::pipe(fds) != 0) return Error{Code::kInternal, "pipe: " + std::string(strerror(errno)), nullptr};
  wake_read_ = fds[0];
  wake_write_ = fds[1];
  for (int fd : fds) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  thread_ = std::thread([this] { Run(); });
  io_thread_id_ = thread_.get_id();

  Request hello;
  hello.op = Op::kHello;
  hello.client = options_.client_name;
  hello.ttl_ms = options_.session_ttl.count();
  hello.priority = options_.priority;
  auto answer = Exchange(std::move(hello));
  if (!answer.ok()) return answer.error();
  if (!answer.value().reply.ok()) return ErrorOf(answer.value().reply);
  std::lock_guard lock(mu_);
  if (!session_ok_) return Error{Code::kInternal, "hello reply without a session", nullptr};
  return Ok{};
}

void Client::Impl::Close() {
  if (!thread_.joinable()) {  // offline, or never started
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    events_cv_.notify_all();
    closing_cv_.notify_all();
    return;
  }
  bool say_bye;
  {
    std::lock_guard lock(mu_);
    say_bye = session_ok_ && !stopping_;
  }
  if (say_bye) {
    Request bye;
    bye.op = Op::kBye;
    (void)Exchange(std::move(bye));  // bounded by request_timeout; nothing to do on failure
  }
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [id, call] : calls_) {
      if (!call->waiter) continue;
      call->failure = Error{Code::kCancelled, "the client is closing", nullptr};
      call->cv.notify_all();
    }
    calls_.clear();
    session_ok_ = false;
    reclaim_id_ = 0;
    reclaim_again_ = false;
  }
  events_cv_.notify_all();
  closing_cv_.notify_all();
  reclaim_cv_.notify_all();
  Wake();
  thread_.join();
  ::close(wake_read_);
  ::close(wake_write_);
  wake_read_ = wake_write_ = -1;
}

void Client::Impl::Wake() {
  const char byte = 1;
  // EAGAIN means the pipe is full of wake-ups already: good enough.
  [[maybe_unused]] auto n = ::write(wake_write_, &byte, 1);
}

// ------------------------------------------------------------------ API side

std::shared_ptr<Client::Impl::PendingCall> Client::Impl::NewCall(Request request, Handler orphan) {
  auto call = std::make_shared<PendingCall>();
  call->session_scoped = protocol::IsSessionScoped(request.op);
  call->request = std::move(request);
  call->orphan = std::move(orphan);
  return call;
}

bool Client::Impl::Submit(const std::shared_ptr<PendingCall>& call) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    call->request.id = next_id_++;
    calls_.emplace(call->request.id, call);
    next_scan_ = TimePoint{};  // at once
  }
  Wake();
  return true;
}

Error Client::Impl::TimeoutError(Clock::duration waited) const {
  std::string message = "no reply from " + (endpoint_.empty() ? std::string("any endpoint") : endpoint_) +
                        " within " + std::to_string(ToMillis(waited)) + " ms";
  if (!transport_error_.empty()) message += " (" + transport_error_ + ")";
  return Error{Code::kTimeout, std::move(message), nullptr};
}

void Client::Impl::Abandon(PendingCall& call) {
  call.waiter = false;
  if (call.orphan && !call.replied) {
    // Stays registered (and resent) so that its late reply can be undone.
    call.give_up = Clock::now() + options_.session_ttl;
  } else {
    calls_.erase(call.request.id);
  }
}

Result<Client::Impl::Answer> Client::Impl::Await(const std::shared_ptr<PendingCall>& call,
                                                 TimePoint deadline) {
  std::unique_lock lock(mu_);
  call->cv.wait_until(lock, deadline, [&] { return call->replied || call->failure.has_value(); });
  if (call->failure) return *call->failure;
  if (!call->replied) {
    Abandon(*call);
    return TimeoutError(options_.request_timeout);
  }
  return Answer{call->reply, call->first_sent, call->sent_session};
}

Result<Client::Impl::Answer> Client::Impl::Exchange(Request request, Handler orphan) {
  const TimePoint deadline = Clock::now() + options_.request_timeout;
  auto call = NewCall(std::move(request), std::move(orphan));
  if (!Submit(call)) return Error{Code::kCancelled, "the client is closing", nullptr};
  return Await(call, deadline);
}

Lease Client::Impl::MakeLease(const Request& request, graph::LeaseId id, graph::Token token,
                              TimePoint from, Millis ttl, bool reported) const {
  Lease lease;
  lease.id = id;
  lease.token = token;
  lease.owner = request.owner;
  lease.resource = request.resource;
  lease.mode = request.mode;
  lease.reported = reported;
  lease.valid_until = from + ttl - options_.safety_margin;
  return lease;
}

const std::string& Client::Impl::session() const {
  static const std::string kNone;
  std::lock_guard lock(mu_);
  return sessions_.empty() ? kNone : sessions_.back();
}

Result<Lease> Client::Impl::Acquire(std::string_view owner, std::string_view resource, Mode mode,
                                    Millis ttl, Millis wait, std::string_view site,
                                    std::optional<std::int64_t> started) {
  if (offline_) return OfflineError("Acquire");
  if (OnIoThread()) return CallbackThreadError();
  const TimePoint start = Clock::now();
  // GRACE (the daemon restarted and is recovering) is retried within the budget: the
  // wait for a queued acquire, request_timeout for a try, no end for wait < 0.
  const bool forever = wait.count() < 0;
  const TimePoint budget_end = forever ? TimePoint::max()
                                       : start + (wait.count() > 0 ? wait : options_.request_timeout);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(0.5, 1.5);
  Millis backoff = options_.backoff_min;
  Request request;
  request.op = Op::kAcquire;
  request.owner = owner;
  request.resource = resource;
  request.mode = mode;
  request.ttl_ms = ttl.count();
  request.site = site;
  request.started = started;
  for (int attempt = 1;; ++attempt) {
    Millis this_wait = wait;
    if (attempt > 1 && wait.count() > 0) {
      // A retry queues for what is left of the caller's wait.
      this_wait = std::max(Millis{1}, std::chrono::ceil<Millis>(budget_end - Clock::now()));
    }
    request.wait_ms = this_wait.count() < 0 ? -1 : this_wait.count();
    std::optional<std::int64_t> learned_started;
    Result<Lease> result =
        AcquireOnce(request, ttl, this_wait, wait.count() < 0 ? -1 : wait.count(), learned_started);
    if (result.ok() || result.error().code != Code::kGrace) return result;
    // Keep the owner's age across the retries (wound-wait).
    if (learned_started) {
      request.started = request.started ? std::min(*request.started, *learned_started) : *learned_started;
    }
    const TimePoint now = Clock::now();
    const Millis pause{static_cast<std::int64_t>(static_cast<double>(backoff.count()) * jitter(rng))};
    backoff = std::min(backoff * 2, options_.backoff_max);
    if (now >= budget_end || !SleepUntil(std::min(now + pause, budget_end)) || Clock::now() >= budget_end) {
      Error error = result.error();
      error.message += " (acquire of " + request.resource + " by " + request.owner + ": " +
                       std::to_string(attempt) + " attempt(s) over " +
                       std::to_string(ToMillis(Clock::now() - start)) + " ms)";
      return error;
    }
  }
}

bool Client::Impl::SleepUntil(TimePoint until) {
  std::unique_lock lock(mu_);
  return !closing_cv_.wait_until(lock, until, [&] { return stopping_; });
}

Result<Lease> Client::Impl::AcquireOnce(const Request& sent, Millis ttl, Millis wait,
                                        std::int64_t recorded_wait_ms,
                                        std::optional<std::int64_t>& learned_started) {
  const TimePoint start = Clock::now();
  Request request = sent;
  Request recorded = sent;
  recorded.wait_ms = recorded_wait_ms;

  // A caller that gives up before the reply must not leave a grant or a queued wait
  // behind: the late reply is undone.
  auto call = NewCall(std::move(request), [this](PendingCall& c, const Reply& reply) {
    if (!reply.ok()) return;
    const TimePoint now = Clock::now();
    if (reply.granted && reply.lease) {
      BackgroundRelease(*reply.lease, now);
    } else if (reply.queued && !c.event) {
      BackgroundUnwait(c.request.owner, c.request.resource, now);
    }
  });
  call->awaits_event = true;
  call->wait_forever = wait.count() < 0;
  if (!Submit(call)) return Error{Code::kCancelled, "the client is closing", nullptr};

  std::unique_lock lock(mu_);
  call->cv.wait_until(lock, start + options_.request_timeout,
                      [&] { return call->replied || call->failure.has_value(); });
  if (call->failure) return *call->failure;
  if (!call->replied) {
    Abandon(*call);
    return TimeoutError(options_.request_timeout);
  }
  // The caller gets a lease: recorded (outside mu_) as it is handed over.
  auto granted = [&](Lease lease) -> Result<Lease> {
    // A lease the owner held already comes back unchanged: its deadline is the known one.
    auto tracked = leases_.find(lease.id);
    if (tracked != leases_.end() && tracked->second.token == lease.token && tracked->second.valid_until) {
      lease.valid_until = std::min(lease.valid_until, *tracked->second.valid_until);
    }
    if (recorder_) {
      const std::string session = call->sent_session;
      lock.unlock();
      recorder_->Record(Op::kAcquire, session, recorded);
    }
    return lease;
  };
  const Reply reply = call->reply;
  if (reply.started) learned_started = reply.started;
  if (!reply.ok()) return ErrorOf(reply);
  if (reply.granted) {
    if (!reply.lease || !reply.token) {
      return Error{Code::kInternal, "acquire granted without lease or token", nullptr};
    }
    return granted(MakeLease(sent, *reply.lease, *reply.token, call->first_sent, ttl, false));
  }
  if (!reply.queued) return Error{Code::kInternal, "acquire reply neither granted nor queued", nullptr};

  // Queued: the granted or denied event completes the call.
  auto done = [&] { return call->event.has_value() || call->failure.has_value(); };
  if (call->wait_forever) {
    call->cv.wait(lock, done);
  } else {
    call->cv.wait_until(lock, start + wait + options_.request_timeout, done);
  }
  if (call->event) {
    const Event event = *call->event;
    if (event.kind == EventKind::kGranted) {
      return granted(MakeLease(sent, event.lease, event.token, call->grant_bound, ttl, false));
    }
    return ErrorOfDenial(event);
  }
  if (call->failure) return *call->failure;
  // The deadline passed with no word from the daemon: cancel the wait ourselves.
  calls_.erase(call->request.id);
  const TimePoint acquire_sent = call->first_sent;
  lock.unlock();
  return CancelQueued(recorded, acquire_sent, ttl,
                      std::chrono::duration_cast<Millis>(Clock::now() - start));
}

Result<Lease> Client::Impl::CancelQueued(const Request& acquire, TimePoint acquire_sent, Millis ttl,
                                         Millis waited) {
  Request unwait;
  unwait.op = Op::kUnwait;
  unwait.owner = acquire.owner;
  unwait.resource = acquire.resource;
  auto answer = Exchange(std::move(unwait), [this](PendingCall&, const Reply& reply) {
    if (reply.ok() && reply.granted && reply.lease) BackgroundRelease(*reply.lease, Clock::now());
  });
  const std::string what = "acquire of " + acquire.resource + " by " + acquire.owner +
                           " not granted within " + std::to_string(waited.count()) + " ms";
  if (!answer.ok()) return Error{Code::kTimeout, what + "; cancelling it: " + answer.error().message, nullptr};
  const Reply& reply = answer.value().reply;
  if (reply.ok() && reply.granted && reply.lease && reply.token) {
    // The grant won the race. When it happened is unknown beyond "after the acquire
    // was sent", hence the conservative deadline.
    if (recorder_) recorder_->Record(Op::kAcquire, answer.value().session, acquire);
    return MakeLease(acquire, *reply.lease, *reply.token, acquire_sent, ttl, false);
  }
  if (!reply.ok()) return Error{Code::kTimeout, what + "; cancelling it: " + ErrorOf(reply).message, nullptr};
  return Error{Code::kTimeout, what, nullptr};
}

Status Client::Impl::Release(const Lease& lease) {
  if (offline_ && !lease.reported) return OfflineError("Release of an acquired lease");
  if (OnIoThread()) return CallbackThreadError();
  if (offline_ || recorder_) {
    // Recorded by owner and resource: a trace is read without the daemon's lease ids.
    Request released;
    released.owner = lease.owner;
    released.resource = lease.resource;
    if (offline_) return OfflineReport(Op::kRelease, released);
    recorder_->Record(Op::kRelease, session(), released);
  }
  Request request;
  request.op = Op::kRelease;
  request.lease = lease.id;
  return ExchangeStatus(std::move(request));
}

Result<Lease> Client::Impl::Renew(const Lease& lease, std::optional<Millis> ttl) {
  if (offline_) return OfflineError("Renew");
  if (OnIoThread()) return CallbackThreadError();
  Request request;
  request.op = Op::kRenew;
  request.lease = lease.id;
  if (ttl) request.ttl_ms = ttl->count();
  auto answer = Exchange(request);
  if (answer.ok() && answer.value().reply.code == Code::kGrace) {
    // The daemon restarted and the lease awaits its reclaim: reclaim first, then ask
    // once more. A heartbeat shows the new epoch, which starts the reclaim (unless one
    // is out already); its end is awaited within request_timeout.
    const TimePoint deadline = Clock::now() + options_.request_timeout;
    Request heartbeat;
    heartbeat.op = Op::kHeartbeat;
    (void)Exchange(std::move(heartbeat));
    {
      std::unique_lock lock(mu_);
      reclaim_cv_.wait_until(lock, deadline, [&] {
        return stopping_ || !session_ok_ || (reclaim_id_ == 0 && !reclaim_again_);
      });
    }
    answer = Exchange(std::move(request));
  }
  if (!answer.ok()) return answer.error();
  const Reply& reply = answer.value().reply;
  if (!reply.ok()) return ErrorOf(reply);
  Lease renewed = lease;
  if (reply.token) renewed.token = *reply.token;
  std::optional<Millis> lasts;
  if (reply.expires_in_ms) {
    lasts = Millis{*reply.expires_in_ms};
  } else if (ttl) {
    lasts = *ttl;
  } else {
    std::lock_guard lock(mu_);
    auto it = leases_.find(lease.id);
    if (it != leases_.end()) lasts = it->second.ttl;
  }
  if (lasts) {
    renewed.valid_until = answer.value().sent_at + *lasts - options_.safety_margin;
    std::lock_guard lock(mu_);
    auto it = leases_.find(lease.id);
    if (it != leases_.end() && it->second.token == renewed.token) {
      it->second.valid_until = renewed.valid_until;
      it->second.epoch = std::max(it->second.epoch, epoch_);
    }
  }
  return renewed;
}

std::optional<Lease> Client::Impl::Held(const Lease& lease) const {
  if (offline_) return lease.reported ? std::optional<Lease>(lease) : std::nullopt;
  std::lock_guard lock(mu_);
  auto it = leases_.find(lease.id);
  if (it == leases_.end() || it->second.token != lease.token) return std::nullopt;
  Lease held = lease;
  if (it->second.valid_until) held.valid_until = *it->second.valid_until;
  return held;
}

std::optional<std::int64_t> Client::Impl::Started(std::string_view owner) const {
  std::lock_guard lock(mu_);
  auto it = started_.find(std::string(owner));
  if (it == started_.end()) return std::nullopt;
  return it->second;
}

Result<Lease> Client::Impl::Hold(std::string_view owner, std::string_view resource, Mode mode,
                                 Millis ttl, std::string_view site) {
  if (OnIoThread()) return CallbackThreadError();
  Request request;
  request.op = Op::kHold;
  request.owner = owner;
  request.resource = resource;
  request.mode = mode;
  request.ttl_ms = ttl.count();
  request.site = site;
  if (offline_) return OfflineHold(request, ttl);
  const Request sent = request;
  auto answer = Exchange(std::move(request));
  if (!answer.ok()) return answer.error();
  const Reply& reply = answer.value().reply;
  if (!reply.ok()) return ErrorOf(reply);
  if (recorder_) recorder_->Record(Op::kHold, answer.value().session, sent);
  return MakeLease(sent, reply.lease.value_or(0), reply.token.value_or(0), answer.value().sent_at,
                   ttl, true);
}

Status Client::Impl::Wait(std::string_view owner, std::string_view resource, Mode mode,
                          std::string_view site) {
  if (OnIoThread()) return CallbackThreadError();
  Request request;
  request.op = Op::kWait;
  request.owner = owner;
  request.resource = resource;
  request.mode = mode;
  request.site = site;
  if (offline_) return OfflineReport(Op::kWait, request);
  // Before it goes out: the owner is about to block, whatever the daemon answers.
  if (recorder_) recorder_->Record(Op::kWait, session(), request);
  return ExchangeStatus(std::move(request));
}

Status Client::Impl::Unwait(std::string_view owner, std::string_view resource) {
  if (OnIoThread()) return CallbackThreadError();
  Request request;
  request.op = Op::kUnwait;
  request.owner = owner;
  request.resource = resource;
  if (offline_) return OfflineReport(Op::kUnwait, request);
  if (recorder_) recorder_->Record(Op::kUnwait, session(), request);
  return ExchangeStatus(std::move(request));
}

Status Client::Impl::ReleaseReported(std::string_view owner, std::string_view resource) {
  if (OnIoThread()) return CallbackThreadError();
  Request request;
  request.op = Op::kRelease;
  request.owner = owner;
  request.resource = resource;
  if (offline_) return OfflineReport(Op::kRelease, request);
  if (recorder_) recorder_->Record(Op::kRelease, session(), request);
  return ExchangeStatus(std::move(request));
}

Result<Lease> Client::Impl::OfflineHold(const Request& request, Millis ttl) {
  Status reported = OfflineReport(Op::kHold, request);
  if (!reported.ok()) return reported.error();
  return MakeLease(request, next_offline_lease_++, 0, Clock::now(), ttl, true);
}

Status Client::Impl::OfflineReport(Op op, const Request& request) {
  // What the daemon would refuse as malformed is refused here too.
  auto line = Recorder::Format(op, session(), request);
  if (!line) {
    return Error{Code::kBadRequest,
                 std::string(protocol::OpName(op)) +
                     " needs a non-empty owner and resource, and valid UTF-8 in owner, resource and site",
                 nullptr};
  }
  if (recorder_) recorder_->Append(*line);
  return Ok{};
}

void Client::Impl::OnEvent(std::function<void(const Event&)> callback) {
  std::lock_guard lock(mu_);
  if (callback) {
    callback_ = std::make_shared<std::function<void(const Event&)>>(std::move(callback));
  } else {
    callback_.reset();
  }
}

std::optional<Event> Client::Impl::PollEvent(Millis timeout) {
  // Offline no event ever comes: this waits out `timeout` like an idle session.
  std::unique_lock lock(mu_);
  if (!OnIoThread()) {
    events_cv_.wait_for(lock, timeout, [&] { return !events_.empty() || stopping_; });
  }
  if (events_.empty()) return std::nullopt;
  Event event = std::move(events_.front());
  events_.pop_front();
  return event;
}

Result<Reply> Client::Impl::Call(Request request) {
  if (offline_) return OfflineError("Call");
  if (OnIoThread()) return CallbackThreadError();
  if (request.op == Op::kHello || request.op == Op::kBye) {
    return Error{Code::kBadRequest,
                 "the client manages its own session: hello and bye are not available through Call",
                 nullptr};
  }
  auto answer = Exchange(std::move(request));
  if (!answer.ok()) return answer.error();
  if (!answer.value().reply.ok()) return ErrorOf(answer.value().reply);
  return std::move(answer.value().reply);
}

// ------------------------------------------------------------------ I/O thread

void Client::Impl::Run() {
  std::vector<std::string> inbound;
  std::vector<std::string> frames;
  std::vector<Event> events;
  {
    std::lock_guard lock(mu_);
    OpenSocket(Clock::now());
  }
  for (;;) {
    // Sleep until the socket or the pipe has something, or the next timer.
    Millis timeout = kMaxPollWait;
    {
      std::lock_guard lock(mu_);
      const TimePoint now = Clock::now();
      TimePoint next = std::min(next_scan_, now + kMaxPollWait);
      if (session_ok_) next = std::min(next, next_heartbeat_);
      if (!socket_) next = std::min(next, reconnect_at_);
      if (rehello_due_) next = std::min(next, rehello_at_);
      if (reclaim_again_ && reclaim_id_ == 0) next = std::min(next, reclaim_at_);
      timeout = std::clamp(std::chrono::ceil<Millis>(next - now), Millis{0}, kMaxPollWait);
    }
    std::array<zmq::pollitem_t, 2> items{};
    items[0] = {nullptr, wake_read_, ZMQ_POLLIN, 0};
    std::size_t count = 1;
    if (socket_) {
      items[1] = {socket_->handle(), 0, ZMQ_POLLIN, 0};
      count = 2;
    }
    try {
      zmq::poll(items.data(), count, timeout);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) {
        std::lock_guard lock(mu_);
        transport_error_ = std::string("poll: ") + e.what();
      }
    }
    char drain[64];
    while (::read(wake_read_, drain, sizeof drain) > 0) {
    }

    inbound.clear();
    bool broken = false;
    try {
      // Bounded, so that a flood of events cannot starve the timers.
      for (int read = 0; socket_ && read < kMaxReadsPerWake; ++read) {
        zmq::message_t message;
        if (!socket_->recv(message, zmq::recv_flags::dontwait)) break;
        std::string frame = message.to_string();
        while (message.more()) {  // a multi-part message: the payload is its last part
          if (!socket_->recv(message, zmq::recv_flags::none)) break;
          frame = message.to_string();
        }
        inbound.push_back(std::move(frame));
      }
    } catch (const zmq::error_t& e) {
      broken = true;
      std::lock_guard lock(mu_);
      transport_error_ = std::string("receive: ") + e.what();
    }

    events.clear();
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
      const TimePoint now = Clock::now();
      for (const std::string& frame : inbound) HandleFrame(frame, now, events);
      if (broken) reconnect_requested_ = true;
    }
    // Delivered before the next request goes out, so that acked_seq never runs ahead
    // of the callback.
    Deliver(events);

    frames.clear();
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
      Tick(Clock::now(), frames);
    }
    for (const std::string& frame : frames) {
      if (!socket_) break;
      try {
        // EAGAIN (high-water mark) loses the frame; it is resent like a lost one.
        (void)socket_->send(zmq::buffer(frame), zmq::send_flags::dontwait);
      } catch (const zmq::error_t& e) {
        std::lock_guard lock(mu_);
        transport_error_ = std::string("send: ") + e.what();
        reconnect_requested_ = true;
        break;
      }
    }
  }
  socket_.reset();  // linger 0: nothing waits for the peer
}

void Client::Impl::HandleFrame(const std::string& frame, TimePoint now, std::vector<Event>& events) {
  auto decoded = protocol::DecodeServerMessage(frame);
  if (std::holds_alternative<protocol::DecodeError>(decoded)) return;  // not ours to fix
  last_heard_ = now;
  backoff_ = options_.backoff_min;
  transport_error_.clear();
  auto& message = std::get<protocol::ServerMessage>(decoded);
  if (auto* reply = std::get_if<Reply>(&message)) {
    HandleReply(*reply, now, events);
  } else {
    HandleEvent(std::move(std::get<Event>(message)), now, events);
  }
}

void Client::Impl::HandleReply(const Reply& reply, TimePoint now, std::vector<Event>& events) {
  auto it = calls_.find(reply.id);
  if (it == calls_.end()) return;  // late, duplicate, or id 0 (unparseable request)
  std::shared_ptr<PendingCall> call = it->second;
  if (call->replied) return;  // a queued acquire, answered already
  if (reply.code == Code::kNotLeader) {
    // Not an answer: go where the leader is and ask again there.
    leader_hint_ = reply.leader;
    reconnect_requested_ = true;
    return;
  }
  if (call->ever_sent) reply_bound_ = std::max(reply_bound_, call->first_sent);
  if (call->request.op == Op::kHello) {
    if (call->request.id == hello_id_) hello_id_ = 0;
    if (reply.ok()) {
      InstallSession(reply, now);
    } else if (!call->waiter) {
      // A re-hello refused (LIMIT, GRACE, ...): try again later.
      rehello_due_ = true;
      rehello_at_ = now + Jittered(std::max(backoff_, heartbeat_interval_));
    }
  }
  if (call->request.op == Op::kHeartbeat && call->request.id == heartbeat_id_) heartbeat_id_ = 0;
  // After bye the session is gone on purpose: no heartbeat may find it missing.
  if (call->request.op == Op::kBye && reply.ok()) session_ok_ = false;
  TrackReply(*call, reply, now);
  if (call->request.id == reclaim_id_) FinishReclaim(*call, reply, now, events);
  if (reply.code == Code::kGrace && session_ok_ && heartbeat_id_ == 0) {
    next_heartbeat_ = std::min(next_heartbeat_, now);  // learn the new epoch now
  }
  if (reply.ok() && reply.epoch && call->request.op != Op::kHello && session_ok_ &&
      call->sent_session == CurrentSession() && *reply.epoch > epoch_) {
    OnRestart(*reply.epoch, now);
  }

  call->replied = true;
  call->reply = reply;
  const bool lost_session = call->session_scoped && reply.code == Code::kUnknownSession &&
                            session_ok_ && call->sent_session == CurrentSession();
  if (call->waiter && call->awaits_event && reply.ok() && reply.queued && !call->event) {
    call->queued = true;  // stays registered until its event
  } else {
    calls_.erase(it);
  }
  if (!call->waiter && call->orphan) call->orphan(*call, reply);
  call->cv.notify_all();
  if (lost_session) LoseSession(now, events);
}

void Client::Impl::TrackReply(const PendingCall& call, const Reply& reply, TimePoint now) {
  const Request& r = call.request;
  if (r.op == Op::kAcquire && reply.started) started_[r.owner] = *reply.started;
  if (!reply.ok()) {
    if (r.op == Op::kRelease && reply.code == Code::kNotOwner && r.lease) leases_.erase(*r.lease);
    return;
  }
  switch (r.op) {
    case Op::kAcquire:
    case Op::kHold:
    case Op::kUnwait:
      if ((r.op == Op::kHold || reply.granted) && reply.lease) {
        TrackedLease lease;
        lease.owner = r.owner;
        lease.resource = r.resource;
        lease.mode = r.mode;
        lease.token = reply.token.value_or(0);
        lease.reported = r.op == Op::kHold;
        if (r.ttl_ms) {
          lease.ttl = Millis{*r.ttl_ms};
          if (call.ever_sent) lease.valid_until = call.first_sent + *lease.ttl - options_.safety_margin;
        }
        Track(*reply.lease, std::move(lease), now);
      }
      break;
    case Op::kRenew:
      if (r.lease && r.ttl_ms) {
        auto it = leases_.find(*r.lease);
        if (it != leases_.end()) it->second.ttl = Millis{*r.ttl_ms};
      }
      break;
    case Op::kRelease:
      if (r.lease) {
        leases_.erase(*r.lease);
      } else {
        std::erase_if(leases_, [&](const auto& entry) {
          return entry.second.owner == r.owner && entry.second.resource == r.resource;
        });
      }
      break;
    default:
      break;
  }
}

void Client::Impl::HandleEvent(Event event, TimePoint now, std::vector<Event>& events) {
  if (event.seq <= last_seq_) return;  // seen before: resent after a reconnect
  last_seq_ = event.seq;
  switch (event.kind) {
    case EventKind::kGranted: {
      TrackedLease lease;
      lease.owner = event.owner;
      lease.resource = event.resource;
      lease.mode = event.mode;
      lease.token = event.token;
      Track(event.lease, std::move(lease), now);
      break;
    }
    case EventKind::kRevoked:
      leases_.erase(event.lease);
      break;
    default:
      break;
  }
  if ((event.kind == EventKind::kGranted || event.kind == EventKind::kDenied) && event.id != 0) {
    auto it = calls_.find(event.id);
    if (it != calls_.end() && it->second->restart_unwait && event.kind == EventKind::kDenied &&
        event.code == Code::kCancelled) {
      return;  // the unwait sent at a restart cancelled it: not news, and that unwait's reply decides
    }
    if (it != calls_.end() && it->second->awaits_event && !it->second->event) {
      std::shared_ptr<PendingCall> call = it->second;
      call->event = event;
      call->grant_bound = call->first_sent;
      if (call->first_connection == connection_) {
        call->grant_bound = std::max(call->grant_bound, reply_bound_);
      }
      // Pass the TTL on, so that Renew without one knows it.
      if (event.kind == EventKind::kGranted && call->request.ttl_ms) {
        TrackedLease& lease = leases_[event.lease];
        lease.ttl = Millis{*call->request.ttl_ms};
        lease.valid_until = call->grant_bound + *lease.ttl - options_.safety_margin;
      }
      if (call->waiter) {
        if (call->queued) calls_.erase(it);  // else its reply still has to come
        call->cv.notify_all();
      } else {
        // Its caller left: a grant nobody will use goes back at once.
        if (event.kind == EventKind::kGranted) BackgroundRelease(event.lease, now);
        if (call->replied) calls_.erase(it);
      }
    }
  }
  events.push_back(std::move(event));
}

void Client::Impl::Deliver(std::vector<Event>& events) {
  for (Event& event : events) {
    std::shared_ptr<std::function<void(const Event&)>> callback;
    {
      std::lock_guard lock(mu_);
      callback = callback_;
      if (!callback) {
        if (events_.size() >= kMaxQueuedEvents) events_.pop_front();
        events_.push_back(std::move(event));
        events_cv_.notify_one();
        continue;
      }
    }
    try {
      (*callback)(event);
    } catch (...) {
      // A throwing callback must not take the session down with it.
    }
  }
  events.clear();
}

bool Client::Impl::Sendable(const PendingCall& call) const {
  return socket_.has_value() && (!call.session_scoped || session_ok_);
}

void Client::Impl::SendCall(PendingCall& call, TimePoint now, std::vector<std::string>& frames) {
  if (call.session_scoped) {
    call.request.session = CurrentSession();
    call.request.secret = secret_;
    call.request.acked_seq = last_seq_;
    call.sent_session = call.request.session;
  }
  frames.push_back(protocol::EncodeRequest(call.request, options_.encoding));
  if (!call.ever_sent) {
    call.ever_sent = true;
    call.first_sent = now;
    call.first_connection = connection_;
  }
  ++call.sends;
  call.last_sent = now;
  next_scan_ = std::min(next_scan_, now + options_.resend_after);
}

void Client::Impl::Tick(TimePoint now, std::vector<std::string>& frames) {
  if (reconnect_requested_) DropConnection(now);
  if (!socket_ && now >= reconnect_at_) OpenSocket(now);

  if (socket_) {
    if (rehello_due_ && now >= rehello_at_ && hello_id_ == 0) {
      rehello_due_ = false;
      StartHello(now);
    }
    if (session_ok_ && reclaim_again_ && reclaim_id_ == 0 && now >= reclaim_at_) StartReclaim(now);
    if (session_ok_ && now >= next_heartbeat_) {
      if (heartbeat_id_ == 0) {  // one at a time: an unanswered one is being resent
        Request heartbeat;
        heartbeat.op = Op::kHeartbeat;
        heartbeat_id_ = Background(std::move(heartbeat), {}, TimePoint::max());
      }
      next_heartbeat_ = now + heartbeat_interval_;
    }
  }

  // New calls, resends, held-back calls, reconnection and the unreachable check.
  if (now >= next_scan_) {
    next_scan_ = now + kMaxPollWait;
    oldest_unanswered_ = TimePoint::max();
    for (auto it = calls_.begin(); it != calls_.end();) {
      PendingCall& call = *it->second;
      if (!call.waiter && now >= call.give_up) {
        it = calls_.erase(it);
        continue;
      }
      ++it;
      if (call.replied) continue;
      if (call.ever_sent && (!call.session_scoped || session_ok_)) {
        oldest_unanswered_ = std::min(oldest_unanswered_, call.first_sent);
      }
      if (!Sendable(call)) continue;
      if (call.sends == 0) {
        SendCall(call, now, frames);
      } else if (now - call.last_sent >= options_.resend_after) {
        if (call.sends >= 2 && last_heard_ < call.last_sent) {
          reconnect_requested_ = true;  // two sends, not a word since: the link is dead
        } else {
          SendCall(call, now, frames);
        }
      } else {
        next_scan_ = std::min(next_scan_, call.last_sent + options_.resend_after);
      }
    }
    if (reconnect_requested_) {
      frames.clear();
      DropConnection(now);
    }
  }

  // A forever-queued acquire gives up once the daemon has been silent for
  // request_timeout while something waited for its answer.
  if (oldest_unanswered_ != TimePoint::max() &&
      now - std::max(last_heard_, oldest_unanswered_) >= options_.request_timeout) {
    for (auto it = calls_.begin(); it != calls_.end();) {
      PendingCall& call = *it->second;
      if (call.queued && call.wait_forever && call.waiter) {
        call.failure = TimeoutError(now - std::max(last_heard_, oldest_unanswered_));
        call.waiter = false;
        call.cv.notify_all();
        BackgroundUnwait(call.request.owner, call.request.resource, now);
        it = calls_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

bool Client::Impl::OpenSocket(TimePoint now) {
  const std::string endpoint =
      leader_hint_.empty() ? options_.endpoints[endpoint_index_ % options_.endpoints.size()]
                           : leader_hint_;
  leader_hint_.clear();
  endpoint_ = endpoint;
  try {
    socket_.emplace(context_, zmq::socket_type::dealer);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::sndhwm, kSendHighWater);
    socket_->connect(endpoint);
  } catch (const zmq::error_t& e) {
    socket_.reset();
    transport_error_ = "connect " + endpoint + ": " + e.what();
    endpoint_index_ = (endpoint_index_ + 1) % options_.endpoints.size();
    reconnect_at_ = now + Jittered(backoff_);
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    return false;
  }
  ++connection_;
  reply_bound_ = TimePoint{};
  // Everything unanswered goes out again on the new connection; a heartbeat with it
  // tells the daemon where to resend unacknowledged events.
  for (auto& [id, call] : calls_) {
    if (!call->replied) call->sends = 0;
  }
  next_scan_ = now;
  if (session_ok_ && heartbeat_id_ == 0) next_heartbeat_ = now;
  return true;
}

void Client::Impl::DropConnection(TimePoint now) {
  reconnect_requested_ = false;
  socket_.reset();
  if (leader_hint_.empty()) endpoint_index_ = (endpoint_index_ + 1) % options_.endpoints.size();
  reconnect_at_ = now + Jittered(backoff_);
  backoff_ = std::min(backoff_ * 2, options_.backoff_max);
}

Millis Client::Impl::Jittered(Millis base) {
  std::uniform_real_distribution<double> factor(0.5, 1.5);
  return Millis{static_cast<std::int64_t>(static_cast<double>(base.count()) * factor(rng_))};
}

void Client::Impl::LoseSession(TimePoint now, std::vector<Event>& events) {
  session_ok_ = false;
  // Whatever the client believed it held is gone with the session.
  for (const auto& [id, lease] : leases_) events.push_back(LostEvent(id, lease));
  leases_.clear();
  // A reclaim out under the old session is dropped below with the other background calls.
  reclaim_id_ = 0;
  reclaim_again_ = false;
  reclaim_cv_.notify_all();
  for (auto it = calls_.begin(); it != calls_.end();) {
    PendingCall& call = *it->second;
    if (call.queued) {
      call.failure = Error{Code::kUnknownSession,
                           "the session expired while " + call.request.owner + " waited for " +
                               call.request.resource,
                           nullptr};
      call.cv.notify_all();
      it = calls_.erase(it);
    } else if (call.session_scoped && !call.waiter) {
      it = calls_.erase(it);  // heartbeats and clean-ups of the old session
    } else if (call.session_scoped && call.ever_sent) {
      // Sent under the old session: it cannot be moved to the new one, since a late
      // UNKNOWN_SESSION for the old send could not be told from an answer to the new.
      call.failure = Error{Code::kUnknownSession, "the session expired", nullptr};
      call.cv.notify_all();
      it = calls_.erase(it);
    } else {
      ++it;
    }
  }
  heartbeat_id_ = 0;
  StartHello(now);
}

void Client::Impl::StartHello(TimePoint now) {
  if (hello_id_ != 0) return;
  Request hello;
  hello.op = Op::kHello;
  hello.client = options_.client_name;
  hello.ttl_ms = options_.session_ttl.count();
  hello.priority = options_.priority;
  hello_id_ = Background(std::move(hello), {}, TimePoint::max());
}

void Client::Impl::Track(graph::LeaseId id, TrackedLease lease, TimePoint now) {
  const auto granted_in = static_cast<std::uint32_t>(lease.token >> 40);
  lease.epoch = std::max(epoch_, granted_in);
  auto it = leases_.find(id);
  if (!lease.reported && it != leases_.end() && it->second.token == lease.token) {
    // The same grant again: it was not renewed by being handed out again.
    TrackedLease& known = it->second;
    if (known.valid_until) lease.valid_until = known.valid_until;
    if (!lease.ttl) lease.ttl = known.ttl;
    lease.epoch = std::max(lease.epoch, known.epoch);
    known = std::move(lease);
    return;
  }
  const bool reclaim = !lease.reported && granted_in < epoch_;
  leases_[id] = std::move(lease);
  // Granted by a boot before the newest one seen (its reply overtaken by the restart,
  // or handed over by the unwait sent at it): restored there, awaiting its reclaim.
  if (reclaim && session_ok_) StartReclaim(now);
}

Event Client::Impl::LostEvent(graph::LeaseId id, const TrackedLease& lease) {
  Event revoked;
  revoked.kind = EventKind::kRevoked;
  revoked.seq = 0;
  revoked.lease = id;
  revoked.owner = lease.owner;
  revoked.resource = lease.resource;
  revoked.mode = lease.mode;
  revoked.token = lease.token;
  revoked.reason = graph::RevokeReason::kExpired;
  return revoked;
}

void Client::Impl::OnRestart(std::uint32_t epoch, TimePoint now) {
  epoch_ = epoch;
  // The restarted daemon restored sessions and leases, not waits: an acquire queued
  // before the restart may wait for an event that never comes. Which it is, only the
  // daemon knows: the wait may have been queued again by the new daemon (if the
  // acquire went out again after the restart), or granted before the crash (the grant
  // journaled, its event lost). An unwait asks: a wait there is cancelled, a lease the
  // owner holds there is handed to the caller, and otherwise (or once cancelled) the
  // call fails with GRACE, which Acquire retries. Until then the call waits on.
  for (auto& [id, entry] : calls_) {
    std::shared_ptr<PendingCall> call = entry;
    if (!call->queued || !call->waiter || call->event || call->failure || call->restart_unwait) continue;
    call->restart_unwait = true;
    Request unwait;
    unwait.op = Op::kUnwait;
    unwait.owner = call->request.owner;
    unwait.resource = call->request.resource;
    Background(
        std::move(unwait),
        [this, call, epoch](PendingCall&, const Reply& reply) {
          // A grant that came first completed the call; an abandoned call's own
          // cancellation collects a grant.
          if (call->event || call->failure || !calls_.count(call->request.id)) return;
          if (reply.ok() && reply.granted && reply.lease && reply.token) {
            Event granted;
            granted.kind = EventKind::kGranted;
            granted.id = call->request.id;
            granted.owner = call->request.owner;
            granted.resource = call->request.resource;
            granted.mode = call->request.mode;
            granted.lease = *reply.lease;
            granted.token = *reply.token;
            call->event = std::move(granted);
            call->grant_bound = call->first_sent;  // granted after the acquire went out: no more is known
            // Tracked from this reply already (and reclaimed if an earlier boot granted it).
            TrackedLease& lease = leases_[*reply.lease];
            if (call->request.ttl_ms && !lease.ttl) {
              lease.ttl = Millis{*call->request.ttl_ms};
              lease.valid_until = call->grant_bound + *lease.ttl - options_.safety_margin;
            }
          } else {
            call->failure = Error{Code::kGrace,
                                  "the daemon restarted (epoch " + std::to_string(epoch) + ") while " +
                                      call->request.owner + " waited for " + call->request.resource +
                                      "; waits are not restored",
                                  nullptr};
          }
          calls_.erase(call->request.id);
          call->cv.notify_all();
        },
        now + options_.session_ttl);
  }
  StartReclaim(now);
}

void Client::Impl::StartReclaim(TimePoint now) {
  if (reclaim_id_ != 0) {
    reclaim_again_ = true;  // the one out may have reached the previous daemon
    reclaim_at_ = now;
    return;
  }
  reclaim_again_ = false;
  // A heartbeat and the reclaim in one batch: the daemon serves both in one turn, so
  // the heartbeat's epoch names the boot that answered the reclaim (see FinishReclaim).
  Request heartbeat;
  heartbeat.op = Op::kHeartbeat;
  Request reclaim;
  reclaim.op = Op::kReclaim;
  reclaim_leases_.clear();
  for (const auto& [id, lease] : leases_) {
    if (lease.reported) continue;  // report mode is soft state: never restored
    reclaim.holds.push_back(protocol::ReclaimItem{lease.owner, lease.resource, lease.mode, lease.token});
    reclaim_leases_.push_back(id);
  }
  if (reclaim.holds.empty()) {
    reclaim_cv_.notify_all();
    return;
  }
  Request batch;
  batch.op = Op::kBatch;
  batch.items.push_back(std::move(heartbeat));
  batch.items.push_back(std::move(reclaim));
  reclaim_id_ = Background(std::move(batch), {}, TimePoint::max());
}

void Client::Impl::FinishReclaim(const PendingCall& call, const Reply& reply, TimePoint now,
                                 std::vector<Event>& events) {
  reclaim_id_ = 0;
  reclaim_cv_.notify_all();
  static const std::vector<protocol::ReclaimItem> kNoHolds;
  const auto& holds = call.request.items.size() == 2 ? call.request.items[1].holds : kNoHolds;
  // Each item names its lease by position. A lease released, revoked or re-granted
  // meanwhile (another token) is no longer the one claimed: its result says nothing.
  auto claimed = [&](std::size_t i) {
    auto it = i < reclaim_leases_.size() ? leases_.find(reclaim_leases_[i]) : leases_.end();
    return it != leases_.end() && it->second.token == holds[i].token ? it : leases_.end();
  };
  auto lose_all = [&] {
    // Whether the daemon still has them is unknown, and a lease believed held but
    // not held is the dangerous mistake.
    for (std::size_t i = 0; i < holds.size(); ++i) {
      auto it = claimed(i);
      if (it == leases_.end()) continue;
      events.push_back(LostEvent(it->first, it->second));
      leases_.erase(it);
    }
  };
  auto retry_later = [&] {
    reclaim_again_ = true;  // refused for now, not for good: ask again after a pause
    reclaim_at_ = now + Jittered(std::max(backoff_, options_.backoff_min));
  };
  auto temporary = [](Code code) {
    return code == Code::kLimit || code == Code::kInternal || code == Code::kTimeout;
  };
  if (!reply.ok()) {
    // The batch as a whole (NOT_LEADER never gets here: it is asked again elsewhere).
    if (temporary(reply.code)) retry_later();
    else if (reply.code != Code::kUnknownSession) lose_all();
    return;
  }
  if (reply.results.size() != 2) {
    lose_all();
    return;
  }
  const Reply& beat = reply.results[0];
  const Reply& reclaimed = reply.results[1];
  if (beat.code == Code::kUnknownSession || reclaimed.code == Code::kUnknownSession) {
    // The session is gone: the next heartbeat finds that out, and loses it with every
    // lease (not from here: losing a session drops the very call being answered).
    next_heartbeat_ = now;
    return;
  }
  if (!reclaimed.ok()) {
    if (temporary(reclaimed.code)) retry_later();
    else lose_all();
    return;
  }
  const std::uint32_t answered_by = beat.ok() && beat.epoch ? *beat.epoch : 0;  // 0: unknown
  for (std::size_t i = 0; i < std::min(holds.size(), reclaimed.results.size()); ++i) {
    auto it = claimed(i);
    if (it == leases_.end()) continue;
    TrackedLease& lease = it->second;
    const Reply& result = reclaimed.results[i];
    if (!result.ok()) {
      events.push_back(LostEvent(it->first, lease));
      leases_.erase(it);
      continue;
    }
    // The daemon restarts a restored lease's TTL when it is reclaimed; reclaiming a
    // lease that is live already changes nothing. The reply does not say which
    // happened, but the epoch does: in a boot later than the one that last granted,
    // renewed or reclaimed the lease, it was restored and awaited this reclaim (a
    // reclaim answered earlier in that boot would have recorded that boot's epoch).
    if (result.expires_in_ms && call.ever_sent) {
      lease.valid_until = call.first_sent + Millis{*result.expires_in_ms} - options_.safety_margin;
    } else if (answered_by > lease.epoch && lease.ttl && call.ever_sent) {
      lease.valid_until = call.first_sent + *lease.ttl - options_.safety_margin;
    }
    lease.epoch = std::max(lease.epoch, answered_by);
  }
  // Answered by a boot later than the one that started it: another restart came
  // meanwhile. What was granted in between still needs reclaiming there.
  if (answered_by > epoch_) OnRestart(answered_by, now);
}

void Client::Impl::InstallSession(const Reply& reply, TimePoint now) {
  if (!reply.session || !reply.secret) return;
  sessions_.push_back(*reply.session);
  secret_ = *reply.secret;
  session_ok_ = true;
  rehello_due_ = false;
  heartbeat_interval_ = reply.heartbeat_ms && *reply.heartbeat_ms > 0
                            ? Millis{*reply.heartbeat_ms}
                            : std::max<Millis>(Millis{1}, options_.session_ttl / 3);
  next_heartbeat_ = now + heartbeat_interval_;
  if (reply.epoch) epoch_ = *reply.epoch;
  last_seq_ = 0;    // a new session numbers its events from the start
  next_scan_ = now;  // calls held back for the session go out now
}

std::uint64_t Client::Impl::Background(Request request, Handler orphan, TimePoint give_up) {
  auto call = std::make_shared<PendingCall>();
  call->session_scoped = protocol::IsSessionScoped(request.op);
  call->request = std::move(request);
  call->request.id = next_id_++;
  call->waiter = false;
  call->orphan = std::move(orphan);
  call->give_up = give_up;
  calls_.emplace(call->request.id, call);
  next_scan_ = TimePoint{};
  return call->request.id;
}

void Client::Impl::BackgroundRelease(graph::LeaseId lease, TimePoint now) {
  Request release;
  release.op = Op::kRelease;
  release.lease = lease;
  Background(std::move(release), {}, now + options_.session_ttl);
}

void Client::Impl::BackgroundUnwait(const std::string& owner, const std::string& resource,
                                    TimePoint now) {
  Request unwait;
  unwait.op = Op::kUnwait;
  unwait.owner = owner;
  unwait.resource = resource;
  Background(
      std::move(unwait),
      [this](PendingCall&, const Reply& reply) {
        if (reply.ok() && reply.granted && reply.lease) BackgroundRelease(*reply.lease, Clock::now());
      },
      now + options_.session_ttl);
}

const std::string& Client::Impl::CurrentSession() const {
  static const std::string kNone;
  return sessions_.empty() ? kNone : sessions_.back();
}

// ------------------------------------------------------------------ Client

Result<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.record_path.empty()) {
    const char* env = std::getenv("LOCKGRAPH_RECORD");
    if (env != nullptr) options.record_path = env;
  }
  const bool offline = options.offline || (!options.record_path.empty() && options.endpoints.empty());
  if (!offline) {
    if (options.endpoints.empty()) return Error{Code::kBadRequest, "no endpoints given", nullptr};
    if (options.session_ttl <= Millis{0}) {
      return Error{Code::kBadRequest, "session_ttl must be positive", nullptr};
    }
    if (options.request_timeout <= Millis{0}) {
      return Error{Code::kBadRequest, "request_timeout must be positive", nullptr};
    }
    options.resend_after = std::max(options.resend_after, Millis{1});
    options.backoff_min = std::max(options.backoff_min, Millis{1});
    options.backoff_max = std::max(options.backoff_max, options.backoff_min);
  }
  std::unique_ptr<Recorder> recorder;
  if (!options.record_path.empty()) {
    auto opened = Recorder::Open(options.record_path);
    if (!opened.ok()) return opened.error();
    recorder = std::move(opened).value();
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(recorder), offline);
  Status started = impl->Start();
  if (!started.ok()) return started.error();
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const std::string& Client::session() const { return impl_->session(); }

Result<Lease> Client::Acquire(std::string_view owner, std::string_view resource, Mode mode, Millis ttl,
                              Millis wait, std::string_view site, std::optional<std::int64_t> started) {
  return impl_->Acquire(owner, resource, mode, ttl, wait, site, started);
}
Status Client::Release(const Lease& lease) { return impl_->Release(lease); }
std::optional<Lease> Client::Held(const Lease& lease) const { return impl_->Held(lease); }
Result<Lease> Client::Renew(const Lease& lease, std::optional<Millis> ttl) {
  return impl_->Renew(lease, ttl);
}
std::optional<std::int64_t> Client::Started(std::string_view owner) const {
  return impl_->Started(owner);
}
Result<Lease> Client::Hold(std::string_view owner, std::string_view resource, Mode mode, Millis ttl,
                           std::string_view site) {
  return impl_->Hold(owner, resource, mode, ttl, site);
}
Status Client::Wait(std::string_view owner, std::string_view resource, Mode mode, std::string_view site) {
  return impl_->Wait(owner, resource, mode, site);
}
Status Client::Unwait(std::string_view owner, std::string_view resource) {
  return impl_->Unwait(owner, resource);
}
Status Client::ReleaseReported(std::string_view owner, std::string_view resource) {
  return impl_->ReleaseReported(owner, resource);
}
void Client::OnEvent(std::function<void(const protocol::Event&)> callback) {
  impl_->OnEvent(std::move(callback));
}
std::optional<protocol::Event> Client::PollEvent(Millis timeout) { return impl_->PollEvent(timeout); }
Result<protocol::Reply> Client::Call(protocol::Request request) { return impl_->Call(std::move(request)); }

}  // namespace lockgraph
