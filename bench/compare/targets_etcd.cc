// etcd's workloads for lockgraph_compare: etcd's lock service (v3lock, the server side
// of clientv3/concurrency's Mutex) through the JSON gateway of etcd 3.4 (POST /v3/...),
// over cpp-httplib with one keep-alive connection per client thread. A lock belongs to
// a lease: each client grants itself one at start and revokes it at the end, which
// also deletes any lock key it still has.
//
// The gateway speaks HTTP/1.1 without pipelining, so there is no pipeline workload.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "harness.h"

namespace lockgraph::bench {
namespace {

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])); };
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {  // 1 or 2 bytes left: pad to 4
    const std::uint32_t v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// The value of the string field `name` in a JSON reply of the gateway, as written
// (escapes are not undone: the values read here are base64 or decimal, and error
// messages are only shown). nullopt when the field is absent or not a string. The
// fields read here do not occur in the replies' nested "header" object.
std::optional<std::string> StringField(std::string_view json, std::string_view name) {
  const std::string quoted = "\"" + std::string(name) + "\"";
  auto skip_space = [&](std::size_t p) {
    while (p < json.size() && (json[p] == ' ' || json[p] == '\n' || json[p] == '\r' || json[p] == '\t')) ++p;
    return p;
  };
  for (std::size_t at = json.find(quoted); at != std::string_view::npos; at = json.find(quoted, at + 1)) {
    std::size_t p = skip_space(at + quoted.size());
    if (p >= json.size() || json[p] != ':') continue;  // a string value that looks like the name
    p = skip_space(p + 1);
    if (p >= json.size() || json[p] != '"') return std::nullopt;
    const std::size_t from = ++p;
    while (p < json.size() && json[p] != '"') p += json[p] == '\\' ? 2u : 1u;
    if (p >= json.size()) return std::nullopt;
    return std::string(json.substr(from, p - from));
  }
  return std::nullopt;
}

// One keep-alive connection to the gateway and this client's lease. Transport failures
// (no connection, no reply within o.reply_timeout_ms) throw, which stops the client
// and sets its `fatal`; an HTTP error or an error body is an error kind.
class EtcdConn {
 public:
  EtcdConn(const Options& o, const std::string& endpoint)
      : endpoint_(HostPort(endpoint)), cli_(Host(endpoint), Port(endpoint)) {
    const std::chrono::milliseconds timeout(o.reply_timeout_ms);
    cli_.set_keep_alive(true);
    // httplib writes a request's headers and body in two sends: with Nagle's algorithm
    // on, the body waits for the server's delayed ACK, some 40 ms a request.
    cli_.set_tcp_nodelay(true);
    cli_.set_connection_timeout(timeout);
    cli_.set_read_timeout(timeout);
    cli_.set_write_timeout(timeout);

    // The lease must outlive the run, the lock keys being attached to it: 600 s more.
    const auto ttl_s = 600 + static_cast<std::int64_t>(o.seconds + o.warmup_ms / 1000.0);
    Reply r = Post("/v3/lease/grant", "{\"TTL\":" + std::to_string(ttl_s) + "}");
    if (!r.ok()) throw std::runtime_error("etcd lease grant: " + r.error);
    std::optional<std::string> id = StringField(r.body, "ID");
    if (!id || id->empty()) throw std::runtime_error("etcd lease grant: no ID in " + r.body.substr(0, 200));
    lease_ = std::move(*id);
  }

  // What a call got: an error kind, or (lock) the lock's key, base64, for the unlock.
  struct Reply {
    std::string body;
    std::string error;  // empty: success
    bool ok() const { return error.empty(); }
  };

  // Locks `name_b64` (base64) with this client's lease; blocks until granted.
  Reply Lock(const std::string& name_b64) {
    Reply r = Post("/v3/lock/lock", "{\"name\":\"" + name_b64 + "\",\"lease\":\"" + lease_ + "\"}");
    if (!r.ok()) return r;
    std::optional<std::string> key = StringField(r.body, "key");
    if (!key || key->empty()) return {{}, "lock reply without key"};
    r.body = std::move(*key);
    return r;
  }

  // Deletes the lock's key. The gateway answers an unlock of a key that is already gone
  // like any other, so a lost lock cannot be told here.
  Reply Unlock(const std::string& key_b64) { return Post("/v3/lock/unlock", "{\"key\":\"" + key_b64 + "\"}"); }

  void RevokeLease() {
    Reply r = Post("/v3/lease/revoke", "{\"ID\":\"" + lease_ + "\"}");
    if (!r.ok()) throw std::runtime_error("etcd lease revoke: " + r.error);
  }

 private:
  static std::string_view HostPort(std::string_view endpoint) {
    if (endpoint.starts_with("http://")) endpoint.remove_prefix(7);
    return endpoint;
  }
  static std::string Host(const std::string& endpoint) {
    const std::string_view hp = HostPort(endpoint);
    const auto colon = hp.rfind(':');
    if (colon == std::string_view::npos) throw std::runtime_error("etcd endpoint is not host:port: " + endpoint);
    return std::string(hp.substr(0, colon));
  }
  static int Port(const std::string& endpoint) {
    const std::string_view hp = HostPort(endpoint);
    return std::stoi(std::string(hp.substr(hp.rfind(':') + 1)));
  }

  std::string Failure(const char* path, httplib::Error e) const {
    return "etcd " + endpoint_ + path + ": httplib error " + httplib::to_string(e);
  }

  static std::string Shorten(std::string s) {
    if (s.size() > 60) s.resize(60);
    return s;
  }

  // POSTs `json` to `path`. The status and the body are taken by handlers, not from
  // httplib's Result: the gateway sends its error replies chunked with an HTTP trailer
  // (Grpc-Trailer-Content-Type), which httplib 0.11 does not parse — it fails the
  // request with Error::Read and drops the connection, after the status and the body
  // have arrived. The next request opens a new connection.
  Reply Post(const char* path, std::string json) {
    int status = 0;
    std::string body;
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = std::move(json);
    req.headers.emplace("Content-Type", "application/json");
    req.response_handler = [&](const httplib::Response& res) {
      status = res.status;
      return true;
    };
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      body.append(data, n);
      return true;
    };
    const httplib::Result res = cli_.send(req);
    if (status == 0) throw std::runtime_error(Failure(path, res.error()));
    if (status != 200) {
      std::optional<std::string> message = StringField(body, "message");
      return {{}, message && !message->empty() ? Shorten(std::move(*message)) : "http " + std::to_string(status)};
    }
    if (res.error() != httplib::Error::Success) {
      throw std::runtime_error(Failure(path, res.error()) + " after http 200");
    }
    if (std::optional<std::string> error = StringField(body, "error")) return {{}, Shorten(std::move(*error))};
    return {std::move(body), {}};
  }

  std::string endpoint_;  // host:port, for messages
  httplib::Client cli_;
  std::string lease_;  // decimal
};

// Workload 1: lock a random key, then unlock it; one request in flight. etcd's lock
// waits until granted, so there is no "busy": with a large key space the lock is
// nearly always free.
int Lock(const Options& o) {
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    std::mt19937_64 rng(ClientSeed(o, index));
    std::uniform_int_distribution<std::uint64_t> pick(0, o.keys - 1);
    EtcdConn conn(o, o.endpoint);
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      const std::string name = Base64(Numbered("k:", pick(rng)));
      const auto a0 = Clock::now();
      if (w.Over(a0)) break;
      EtcdConn::Reply r = conn.Lock(name);
      const auto a1 = Clock::now();
      if (w.Counts(a0)) {
        ++res.ops;
        res.Latency(a0, a1);
        if (r.ok()) ++res.counters["granted"];
        else res.Error(r.error);
      }
      if (!r.ok()) continue;
      // Unlock always, even past the window, so that nothing stays held.
      const auto r0 = Clock::now();
      EtcdConn::Reply u = conn.Unlock(r.body);
      if (w.Counts(r0)) {
        ++res.ops;
        res.Latency(r0, Clock::now());
        if (!u.ok()) res.Error(u.error);
      }
    }
    conn.RevokeLease();
  });
  return PrintResult(o, merged);
}

// Workload 3: every client on the one lock "h". etcd queues the waiters (in the order
// of their keys' creation), so a lock call returns when the lock is handed over. A
// client unlocks as soon as it has the lock and asks again. An op is a hand-over; its
// latency runs from the unlock's send to the next holder's grant. A client blocked when
// the window closes still gets through: every holder goes on to unlock. "same_client"
// counts the hand-overs where the releaser got the lock straight back.
int Handover(const Options& o) {
  const std::string name = Base64("h");
  HandoverClock clock;
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    EtcdConn conn(o, o.endpoint);
    gate.Ready();
    const Window w = gate.Wait();
    for (;;) {
      const auto a0 = Clock::now();
      if (w.Over(a0)) break;
      EtcdConn::Reply r = conn.Lock(name);
      const auto at = Clock::now();
      if (!r.ok()) {
        if (w.Counts(a0)) res.Error(r.error);
        continue;
      }
      clock.Granted(index, at, w, res);
      clock.Releasing(index);
      EtcdConn::Reply u = conn.Unlock(r.body);
      if (!u.ok() && w.Counts(at)) res.Error(u.error);
    }
    conn.RevokeLease();
  });
  return PrintResult(o, merged);
}

}  // namespace

int RunEtcd(const Options& o) {
  if (o.workload == "lock") return Lock(o);
  if (o.workload == "handover") return Handover(o);
  if (o.workload == "pipeline") {
    std::fprintf(stderr,
                 "lockgraph_compare: etcd: workload pipeline is not supported (the JSON gateway speaks HTTP/1.1 "
                 "without pipelining)\n");
    return 2;
  }
  std::fprintf(stderr, "lockgraph_compare: etcd: workload %s is not supported (lock, handover)\n", o.workload.c_str());
  return 2;
}

}  // namespace lockgraph::bench
