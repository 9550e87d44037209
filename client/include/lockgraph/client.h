// The C++ client of lockgraphd: one session, its heartbeats and its events.
//
//   auto client = lockgraph::Client::Connect(options);       // hello
//   if (!client.ok()) ...;                                   // error says why
//   auto lease = client.value()->Acquire("tx-17", "account:7", Mode::kExclusive,
//                                        30s /*ttl*/, 2s /*wait*/);
//   if (lease.ok()) { use lease.value().token as the fencing token; }
//   client.value()->Release(lease.value());
//
// Threading: a Client is safe to use from many threads at once. It owns one
// background thread, which alone touches the ZeroMQ socket: it sends requests,
// heartbeats at a third of the session TTL (acknowledging events as it goes),
// reconnects with exponential backoff and jitter (trying each endpoint in turn), and
// resends unanswered requests with their ids so that the daemon's reply cache makes
// retries harmless. Event callbacks run on that thread: keep them short.
//
// Timeouts: no call blocks forever. A request waits at most
// ClientOptions::request_timeout for its reply; a queued Acquire waits at most its
// `wait` (plus request_timeout) for its grant, then cancels itself.
//
// Restarts. lockgraphd journals what it does and, when it starts again (or another
// daemon takes over), restores the sessions and the arbitrate leases (same ids, same
// tokens) and serves a grace period in which holders reclaim what they hold
// (PROTOCOL.md "Grace after a restart or fail-over"). The client does this by itself:
//   - It remembers the daemon's epoch from its hello. When a reply (every heartbeat
//     reply carries it) shows a larger one, the daemon has restarted: the client sends
//     one `reclaim` naming every arbitrate lease it holds (owner, resource, mode,
//     token), in a batch behind a heartbeat (whose epoch tells which boot answered).
//     A reclaimed lease stays; when that boot had restored it (the daemon restarts the
//     TTL of a restored lease at its reclaim), its advisory valid_until (see Held)
//     starts again from the send time of the reclaim. A refused one (NOT_OWNER:
//     expired, revoked, or not restored) is lost: it gets the same synthetic `revoked`
//     event (seq 0, reason expired) as the leases of a lost session, and the client
//     stops tracking it. A reclaim refused as a whole is retried later when the
//     refusal is temporary (LIMIT, INTERNAL), else its leases are reported lost the
//     same way. Report-mode holds (Hold) are soft state: the
//     daemon does not restore them and the client does not reclaim them.
//   - Any GRACE reply brings the next heartbeat forward, so the restart is noticed, and
//     the reclaim sent, at once.
//   - Acquire treats GRACE as "ask again": it backs off (exponential with jitter,
//     between backoff_min and backoff_max) and retries until its budget runs out — its
//     `wait` when positive (each retry queues for what is left of it), request_timeout
//     for a try (wait 0), no limit for wait < 0 — then returns the GRACE error. Waits do
//     not survive a restart: an acquire queued before it asks the daemon (unwait) what
//     became of its wait; a lease the owner holds there (granted before the crash)
//     completes it, otherwise it is retried the same way.
//   - Renew of a lease that awaits its reclaim is answered GRACE: the client reclaims
//     first (within request_timeout), then renews once more and returns that answer.
//   - Only arbitrate leases are restored. A session the daemon does not know after the
//     restart (it was never journaled) is lost as usual: UNKNOWN_SESSION, a `revoked`
//     event for every lease, a new hello.
// A restored lease may outlive the TTL it had when the daemon stopped (the daemon
// cannot renew a lease while it is down, so it gives every holder the grace to
// reclaim): as always, only the fencing token makes using it safe.
//
// Recording. When ClientOptions::record_path is non-empty, or else the environment
// variable LOCKGRAPH_RECORD names a file, the client appends a trace of what its
// owners did to that file, so that a project's own test suite produces traces for
// `lockgraphctl check-order TRACE...` in CI. The format is JSON lines: one request per
// line in the request shape of PROTOCOL.md, without "id" and "secret":
//
//   {"v":1,"op":"hold","session":"S","owner":"O","resource":"R","mode":"X","site":"f.cc:12","ttl_ms":30000}
//   {"v":1,"op":"wait","session":"S","owner":"O","resource":"R","mode":"S"}
//   {"v":1,"op":"acquire","session":"S","owner":"O","resource":"R","mode":"X","ttl_ms":5000,"wait_ms":-1}
//   {"v":1,"op":"unwait","session":"S","owner":"O","resource":"R"}
//   {"v":1,"op":"release","session":"S","owner":"O","resource":"R"}
//
// Every line carries session, owner and resource (a release names the lease's owner
// and resource, never its id); "mode" is on hold, wait and acquire; "site" only when
// it is non-empty; "ttl_ms" on hold and acquire; acquire also carries "wait_ms" as
// requested (0 a try, -1 forever). A line is written
//   - hold:    once the daemon accepted it (offline: at once);
//   - wait:    when Wait is called, before the request goes out (the owner is about to
//              block), whatever the daemon then answers;
//   - unwait:  when Unwait is called;
//   - acquire: when granted, at once or after queueing (also when a grant wins the
//              race against the client's own cancellation); an Acquire that returns
//              without a lease writes nothing;
//   - release: when Release or ReleaseReported is called.
// "session" is the session the call went out under. A request the daemon would
// refuse as malformed (an empty owner or resource, a string that is not UTF-8) is
// not recorded; offline it fails with kBadRequest. Each line is appended by one
// write(2) on a file opened with O_APPEND, so several clients and processes may share
// one file: lines interleave whole. The file is created (0644 before the umask) if
// missing; Connect fails with kInternal (naming the path and the reason) when it
// cannot be opened. A later write error is reported once on stderr and the trace is
// then incomplete. Without recording, the only cost is a branch per call.
//
// Offline. With ClientOptions::offline, or when recording is on and `endpoints` is
// empty, the client talks to no daemon: Connect succeeds without any socket or
// thread, session() is "offline-<pid>-<n>", and report mode works locally: Hold
// returns a Lease with a locally increasing id, token 0 and reported = true; Wait,
// Unwait, ReleaseReported and Release of a reported lease succeed. All of them are
// recorded as above. Acquire, Renew, Call and Release of a non-reported lease fail
// with kInternal ("offline: ... needs lockgraphd; offline recording covers report
// mode (hold/wait/release)"); no events ever arrive. An offline client detects no
// deadlock: the checking happens later, over the trace.
#ifndef LOCKGRAPH_CLIENT_H_
#define LOCKGRAPH_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "lockgraph/protocol.h"

namespace lockgraph {

using graph::Code;
using graph::Mode;
using Millis = std::chrono::milliseconds;

// An error as the daemon (or the client, for TIMEOUT of a lost daemon) reported it.
struct Error {
  Code code = Code::kInternal;
  std::string message;
  std::shared_ptr<const graph::DeadlockReport> deadlock;  // with kDeadlock
  // With kOrderViolation: the ordering report as a JSON object (PROTOCOL.md
  // "Reports": the new edge and the chain it closes, each edge with its site);
  // empty otherwise.
  std::string order_json = {};
};

// A value or an error.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}       // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}   // NOLINT
  bool ok() const { return v_.index() == 0; }
  const T& value() const& { return std::get<0>(v_); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;

struct ClientOptions {
  std::vector<std::string> endpoints = {"tcp://127.0.0.1:7790"};
  std::string client_name = "liblockgraph";
  Millis session_ttl{10'000};
  std::int32_t priority = 0;
  protocol::Encoding encoding = protocol::Encoding::kBinary;
  Millis request_timeout{5'000};  // per request, across resends
  Millis resend_after{500};       // resend an unanswered request after this
  Millis backoff_min{50};         // reconnect backoff, doubled up to backoff_max, with jitter
  Millis backoff_max{2'000};
  // A lease is treated as lost this long before the deadline computed from the
  // send time of its last acknowledged grant or renewal.
  Millis safety_margin{250};
  // Appends a trace of this client's requests to this file (see "Recording" above).
  // Empty: the environment variable LOCKGRAPH_RECORD, if set and non-empty, is used.
  std::string record_path;
  // Talks to no daemon (see "Offline" above). Also implied when recording is on and
  // `endpoints` is empty.
  bool offline = false;
};

struct Lease {
  graph::LeaseId id = 0;
  graph::Token token = 0;  // fencing token: pass it to the storage you protect
  std::string owner;
  std::string resource;
  Mode mode = Mode::kExclusive;
  bool reported = false;  // from Hold (report mode)
  // Advisory: after this the lease may be gone. Only fencing tokens make it safe.
  std::chrono::steady_clock::time_point valid_until;
};

class Client {
 public:
  // Connects and says hello. Fails with the daemon's error, kTimeout when no
  // endpoint answers within request_timeout, kBadRequest for unusable options (no
  // endpoints while not offline), or kInternal when the recording file cannot be
  // opened. Offline, only the last can fail.
  static Result<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();  // says bye (bounded by request_timeout) and stops the thread
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The current session id ("offline-<pid>-<n>" offline). The reference stays valid
  // for the client's lifetime; after a re-hello session() returns the new one.
  const std::string& session() const;

  // ---- arbitrate mode
  // wait: 0 tries once (kTimeout if busy), a positive time queues that long, a
  // negative one queues forever (the call still returns by request_timeout after
  // the daemon stops answering). GRACE is retried within that budget (see
  // "Restarts"). `started` from an earlier attempt keeps the owner's age across
  // retries; the result carries the owner's `started`.
  Result<Lease> Acquire(std::string_view owner, std::string_view resource, Mode mode, Millis ttl,
                        Millis wait, std::string_view site = {},
                        std::optional<std::int64_t> started = std::nullopt);
  Status Release(const Lease& lease);
  // Renews the lease (its TTL restarts); the result carries the new valid_until.
  // Answered GRACE after a restart, it reclaims first and renews once more (see
  // "Restarts").
  Result<Lease> Renew(const Lease& lease, std::optional<Millis> ttl = std::nullopt);
  // `lease` as the client holds it now, with valid_until brought up to date by
  // renewals and by the reclaim after a restart; nullopt once the client no longer
  // holds it (released, revoked, refused at reclaim, lost with its session) or holds
  // it under another token. Offline: a reported lease as given, else nullopt.
  std::optional<Lease> Held(const Lease& lease) const;
  // The owner's `started` as last returned by the daemon, if known.
  std::optional<std::int64_t> Started(std::string_view owner) const;

  // ---- report mode
  Result<Lease> Hold(std::string_view owner, std::string_view resource, Mode mode, Millis ttl,
                     std::string_view site = {});
  Status Wait(std::string_view owner, std::string_view resource, Mode mode, std::string_view site = {});
  Status Unwait(std::string_view owner, std::string_view resource);
  Status ReleaseReported(std::string_view owner, std::string_view resource);

  // ---- events: revocations (with the deadlock report), denials, grants
  // The callback runs on the client's thread; set it before acquiring.
  void OnEvent(std::function<void(const protocol::Event&)> callback);
  // Without a callback, events queue here; waits up to `timeout` for one.
  std::optional<protocol::Event> PollEvent(Millis timeout);

  // Any request (queries, revoke, batch). Session fields are filled in for
  // session-scoped ops; the id is assigned by the client.
  Result<protocol::Reply> Call(protocol::Request request);

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Releases its lease when it goes out of scope (unless released or moved from).
class LeaseGuard {
 public:
  LeaseGuard(Client& client, Lease lease) : client_(&client), lease_(std::move(lease)) {}
  LeaseGuard(LeaseGuard&& other) noexcept : client_(other.client_), lease_(std::move(other.lease_)) {
    other.client_ = nullptr;
  }
  LeaseGuard& operator=(LeaseGuard&&) = delete;
  LeaseGuard(const LeaseGuard&) = delete;
  ~LeaseGuard() { Release(); }
  const Lease& lease() const { return lease_; }
  Status Release() {
    if (client_ == nullptr) return Ok{};
    Client* c = client_;
    client_ = nullptr;
    return c->Release(lease_);
  }

 private:
  Client* client_;
  Lease lease_;
};

}  // namespace lockgraph

#endif  // LOCKGRAPH_CLIENT_H_
