// Redis's workloads for lockgraph_compare: the single-instance lock recipe of the Redis
// documentation — SET key owner NX PX ttl to acquire, a check-and-delete script to
// release — over hiredis, one connection per client thread. The release script is
// loaded once per connection and called by its SHA (EVALSHA), as real clients do.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "harness.h"

namespace lockgraph::bench {
namespace {

constexpr const char* kReleaseScript =
    "if redis.call('get',KEYS[1]) == ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

struct FreeReply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, FreeReply>;

struct FreeContext {
  void operator()(redisContext* c) const { redisFree(c); }
};

std::string Key(std::uint64_t n) { return Numbered("k:", n); }

// An error kind for a reply: the server's error message, shortened.
std::string ErrorKind(const redisReply& r) {
  if (r.type == REDIS_REPLY_ERROR) return std::string(r.str, std::min<std::size_t>(r.len, 60));
  return "unexpected reply type " + std::to_string(r.type);
}

bool IsNoScript(const redisReply& r) {
  return r.type == REDIS_REPLY_ERROR && std::string_view(r.str, r.len).starts_with("NOSCRIPT");
}

// What an acquire (SET NX) got.
enum class Acquired { kGranted, kBusy, kError };

Acquired ClassifyAcquire(const redisReply& r) {
  if (r.type == REDIS_REPLY_STATUS && std::string_view(r.str, r.len) == "OK") return Acquired::kGranted;
  if (r.type == REDIS_REPLY_NIL) return Acquired::kBusy;
  return Acquired::kError;
}

// Counts a counted acquire's outcome in `res`.
void CountAcquire(ClientResult& res, Acquired a, const redisReply& r) {
  if (a == Acquired::kGranted) ++res.counters["granted"];
  else if (a == Acquired::kBusy) ++res.counters["busy"];
  else res.Error(ErrorKind(r));
}

// Counts a counted release's outcome in `res`: the script returns 1 when it deleted our
// key, 0 when the key was gone or someone else's (the lease expired: a lost lock).
void CountRelease(ClientResult& res, const redisReply& r) {
  if (r.type == REDIS_REPLY_INTEGER && r.integer == 1) return;
  if (r.type == REDIS_REPLY_INTEGER && r.integer == 0) res.Error("release lost");
  else res.Error(ErrorKind(r));
}

// One hiredis connection. Transport failures (a broken connection, no reply within
// o.reply_timeout_ms) throw, which stops the client and sets its `fatal`; the
// connection's state is unknown after them.
class RedisConn {
 public:
  RedisConn(const Options& o, int index, std::mt19937_64& rng) {
    const auto colon = o.endpoint.rfind(':');
    if (colon == std::string::npos) throw std::runtime_error("redis endpoint is not host:port: " + o.endpoint);
    const std::string host = o.endpoint.substr(0, colon);
    const int port = std::stoi(o.endpoint.substr(colon + 1));
    const timeval timeout{o.reply_timeout_ms / 1000, (o.reply_timeout_ms % 1000) * 1000};
    ctx_.reset(redisConnectWithTimeout(host.c_str(), port, timeout));
    if (!ctx_) throw std::runtime_error("redis: cannot allocate a context");
    if (ctx_->err) throw std::runtime_error("redis connect " + o.endpoint + ": " + ctx_->errstr);
    if (redisSetTimeout(ctx_.get(), timeout) != REDIS_OK) throw Broken("set timeout");

    char buf[24];
    std::snprintf(buf, sizeof buf, "-%016llx", static_cast<unsigned long long>(rng()));
    owner_ = Numbered("c", static_cast<std::uint64_t>(index)) + buf;

    ReplyPtr sha = Call({"SCRIPT", "LOAD", kReleaseScript});
    if (sha->type != REDIS_REPLY_STRING) throw std::runtime_error("SCRIPT LOAD: " + ErrorKind(*sha));
    sha_.assign(sha->str, sha->len);
  }

  // This client's owner token: the value of the keys it holds.
  const std::string& owner() const { return owner_; }

  // Sends one command and waits for its reply.
  ReplyPtr Call(std::initializer_list<std::string_view> args) {
    Args a(args);
    ReplyPtr r(static_cast<redisReply*>(redisCommandArgv(ctx_.get(), a.n, a.argv, a.len)));
    if (!r) throw Broken(a.name);
    return r;
  }

  // Queues one command (written by the next Read).
  void Append(std::initializer_list<std::string_view> args) {
    Args a(args);
    if (redisAppendCommandArgv(ctx_.get(), a.n, a.argv, a.len) != REDIS_OK) throw Broken(a.name);
  }

  // Sends what is queued, if anything, and waits for the next reply.
  ReplyPtr Read() {
    void* reply = nullptr;
    if (redisGetReply(ctx_.get(), &reply) != REDIS_OK || !reply) throw Broken("read");
    return ReplyPtr(static_cast<redisReply*>(reply));
  }

  // The check-and-delete of `key` by its SHA; falls back to EVAL when the server has
  // lost the script (NOSCRIPT: a SCRIPT FLUSH or a restart).
  ReplyPtr Release(const std::string& key) {
    ReplyPtr r = Call({"EVALSHA", sha_, "1", key, owner_});
    if (IsNoScript(*r)) r = ReleaseByEval(key);
    return r;
  }
  ReplyPtr ReleaseByEval(const std::string& key) { return Call({"EVAL", kReleaseScript, "1", key, owner_}); }
  void AppendRelease(const std::string& key) { Append({"EVALSHA", sha_, "1", key, owner_}); }

 private:
  // The argv form of a command: binary-safe, no format string.
  struct Args {
    static constexpr int kMax = 8;
    std::string_view name;  // the command, for error messages
    int n = 0;
    const char* argv[kMax];
    std::size_t len[kMax];
    explicit Args(std::initializer_list<std::string_view> args) : name(*args.begin()) {
      if (args.size() > kMax) throw std::logic_error("redis: too many arguments for " + std::string(name));
      for (std::string_view s : args) {
        argv[n] = s.data();
        len[n] = s.size();
        ++n;
      }
    }
  };

  std::runtime_error Broken(std::string_view what) const {
    return std::runtime_error("redis " + std::string(what) + ": " +
                              (ctx_->errstr[0] ? ctx_->errstr : "connection lost"));
  }

  std::unique_ptr<redisContext, FreeContext> ctx_;
  std::string owner_;
  std::string sha_;
};

// Workload 1: SET NX PX of a random key, then the check-and-delete release when
// granted; one request in flight. A SET answered nil (held by another client) is an op
// counted as "busy" and is not followed by a release.
int Lock(const Options& o) {
  const std::string ttl = std::to_string(o.ttl_ms);
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    std::mt19937_64 rng(ClientSeed(o, index));
    std::uniform_int_distribution<std::uint64_t> pick(0, o.keys - 1);
    RedisConn conn(o, index, rng);
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      const std::string key = Key(pick(rng));
      const auto a0 = Clock::now();
      if (w.Over(a0)) break;
      ReplyPtr r = conn.Call({"SET", key, conn.owner(), "NX", "PX", ttl});
      const auto a1 = Clock::now();
      const Acquired a = ClassifyAcquire(*r);
      if (w.Counts(a0)) {
        ++res.ops;
        res.Latency(a0, a1);
        CountAcquire(res, a, *r);
      }
      if (a != Acquired::kGranted) continue;
      // Release always, even past the window, so that nothing stays held.
      const auto r0 = Clock::now();
      ReplyPtr rr = conn.Release(key);
      if (w.Counts(r0)) {
        ++res.ops;
        res.Latency(r0, Clock::now());
        CountRelease(res, *rr);
      }
    }
  });
  return PrintResult(o, merged);
}

// Workload 2: the same with o.pipeline requests in flight: o.pipeline SETs of distinct
// random keys, then the releases of those granted. A request's latency runs from the
// start of its group (formatting and sending it) to its reply.
int Pipeline(const Options& o) {
  const std::string ttl = std::to_string(o.ttl_ms);
  // Distinct keys: a group cannot be larger than the key space.
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(static_cast<std::uint64_t>(o.pipeline), o.keys));
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    std::mt19937_64 rng(ClientSeed(o, index));
    std::uniform_int_distribution<std::uint64_t> pick(0, o.keys - 1);
    RedisConn conn(o, index, rng);
    std::vector<std::string> keys(n);
    std::vector<std::size_t> held;  // indices into keys of the granted ones
    std::vector<std::size_t> no_script;
    std::unordered_set<std::uint64_t> chosen;
    held.reserve(n);
    chosen.reserve(2 * n);
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      const auto t0 = Clock::now();
      if (w.Over(t0)) break;
      const bool counted = w.Counts(t0);
      chosen.clear();
      for (std::size_t i = 0; i < n; ++i) {
        std::uint64_t k = pick(rng);
        while (!chosen.insert(k).second) k = pick(rng);
        keys[i] = Key(k);
        conn.Append({"SET", keys[i], conn.owner(), "NX", "PX", ttl});
      }
      held.clear();
      for (std::size_t i = 0; i < n; ++i) {
        ReplyPtr r = conn.Read();
        const auto t = Clock::now();
        const Acquired a = ClassifyAcquire(*r);
        if (a == Acquired::kGranted) held.push_back(i);
        if (!counted) continue;
        ++res.ops;
        res.Latency(t0, t);
        CountAcquire(res, a, *r);
      }
      if (held.empty()) continue;

      // The releases of the group's grants, always (see Lock).
      const auto t1 = Clock::now();
      const bool counted_release = w.Counts(t1);
      for (std::size_t i : held) conn.AppendRelease(keys[i]);
      no_script.clear();
      for (std::size_t i : held) {
        ReplyPtr r = conn.Read();
        if (IsNoScript(*r)) {  // redone one by one once the pipeline is drained
          no_script.push_back(i);
          continue;
        }
        if (!counted_release) continue;
        ++res.ops;
        res.Latency(t1, Clock::now());
        CountRelease(res, *r);
      }
      for (std::size_t i : no_script) {
        ReplyPtr r = conn.ReleaseByEval(keys[i]);
        if (!counted_release) continue;
        ++res.ops;
        res.Latency(t1, Clock::now());
        CountRelease(res, *r);
      }
    }
  });
  return PrintResult(o, merged, "\"pipeline\":" + std::to_string(n));
}

// Workload 3: every client on the one key "h". Redis has no queue: a client spins on
// SET NX (each refusal counted in "retries"), releases as soon as it has the lock, and
// spins again. An op is a hand-over; its latency runs from the release's send to the
// next holder's grant. "same_client" counts the hand-overs where the releaser got the
// lock straight back (nothing makes the spinning fair).
int Handover(const Options& o) {
  const std::string ttl = std::to_string(o.ttl_ms);
  HandoverClock clock;
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    std::mt19937_64 rng(ClientSeed(o, index));
    RedisConn conn(o, index, rng);
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      // Spin until granted or the window is over.
      bool granted = false;
      Clock::time_point at;
      for (;;) {
        const auto a0 = Clock::now();
        if (w.Over(a0)) break;
        ReplyPtr r = conn.Call({"SET", "h", conn.owner(), "NX", "PX", ttl});
        at = Clock::now();
        const Acquired a = ClassifyAcquire(*r);
        if (a == Acquired::kGranted) {
          granted = true;
          break;
        }
        if (!w.Counts(a0)) continue;
        if (a == Acquired::kBusy) ++res.counters["retries"];
        else res.Error(ErrorKind(*r));
      }
      if (!granted) break;

      clock.Granted(index, at, w, res);
      clock.Releasing(index);
      ReplyPtr rr = conn.Release("h");
      if (w.Counts(at)) CountRelease(res, *rr);
    }
  });
  return PrintResult(o, merged);
}

}  // namespace

int RunRedis(const Options& o) {
  if (o.workload == "lock") return Lock(o);
  if (o.workload == "pipeline") return Pipeline(o);
  if (o.workload == "handover") return Handover(o);
  std::fprintf(stderr, "lockgraph_compare: redis: workload %s is not supported (lock, pipeline, handover)\n",
               o.workload.c_str());
  return 2;
}

}  // namespace lockgraph::bench
