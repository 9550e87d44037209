// Test harness for integration tests: a real lockgraphd process on a free loopback
// port, and a raw protocol client (one DEALER socket) that waits for replies and
// events with deadlines, never with fixed sleeps.
#ifndef LOCKGRAPH_TESTS_DAEMON_DAEMON_HARNESS_H_
#define LOCKGRAPH_TESTS_DAEMON_DAEMON_HARNESS_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "lockgraph/protocol.h"

namespace lockgraph::testing {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Runs `argv` with stdout and stderr captured; not a shell.
class Process {
 public:
  Process(std::vector<std::string> argv) {
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(out[1], 2);
      close(out[0]);
      close(out[1]);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    fd_ = out[0];
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
  }
  ~Process() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) close(fd_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  // Everything the process printed so far.
  const std::string& Output() {
    char buf[4096];
    for (;;) {
      ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      output_.append(buf, static_cast<std::size_t>(n));
    }
    return output_;
  }

  // Waits until the output contains `text`; returns whether it did in time.
  bool WaitForOutput(const std::string& text, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (Output().find(text) != std::string::npos) return true;
      if (Exited(milliseconds(0))) return Output().find(text) != std::string::npos;
      usleep(2000);
    }
    return false;
  }

  // Waits for the process to end; returns whether it did. Then exit_code() is valid.
  bool Exited(milliseconds timeout) {
    if (exited_) return true;
    const auto deadline = Clock::now() + timeout;
    do {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        Output();
        return true;
      }
      if (timeout.count() > 0) usleep(2000);
    } while (Clock::now() < deadline);
    return false;
  }
  int exit_code() const { return exit_code_; }
  void Signal(int sig) { kill(pid_, sig); }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string output_;
};

// A lockgraphd on a free loopback port.
class Daemon {
 public:
  // A fresh data directory unless `data_dir` names one (to restart on it).
  explicit Daemon(std::vector<std::string> extra_args = {}, std::string data_dir = "") {
    // A directory of its own (mkdtemp): a reused pid must not find an old journal.
    data_dir_ = data_dir;
    if (data_dir_.empty()) {
      std::string tmpl = ::testing::TempDir() + "/lockgraphd.XXXXXX";
      if (mkdtemp(tmpl.data()) != nullptr) data_dir_ = tmpl;
    }
    std::vector<std::string> argv = {LOCKGRAPHD_PATH, "--listen", "tcp://127.0.0.1:*", "--log-level", "warn",
                                     "--data-dir", data_dir_};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    process_ = std::make_unique<Process>(argv);
    if (process_->WaitForOutput("listening on ", milliseconds(10'000))) {
      const std::string& out = process_->Output();
      auto at = out.find("listening on ") + 13;
      endpoint_ = out.substr(at, out.find('\n', at) - at);
    }
  }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& data_dir() const { return data_dir_; }
  Process& process() { return *process_; }

 private:
  std::string data_dir_;
  std::unique_ptr<Process> process_;
  std::string endpoint_;
};

// One DEALER socket speaking the protocol directly.
class RawClient {
 public:
  RawClient(zmq::context_t& ctx, const std::string& endpoint, protocol::Encoding encoding)
      : socket_(ctx, zmq::socket_type::dealer), encoding_(encoding) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }

  protocol::Encoding encoding() const { return encoding_; }
  void set_encoding(protocol::Encoding e) { encoding_ = e; }

  // Sends raw bytes.
  void SendFrame(const std::string& frame) { socket_.send(zmq::buffer(frame), zmq::send_flags::none); }

  // Sends `req` (id assigned unless set, session filled when open) and waits for
  // the reply with that id. Events that arrive meanwhile are kept.
  std::optional<protocol::Reply> Call(protocol::Request req, milliseconds timeout = milliseconds(3000)) {
    if (req.id == 0) req.id = ++next_id_;
    else next_id_ = std::max(next_id_, req.id);
    if (protocol::IsSessionScoped(req.op) && req.session.empty()) {
      req.session = session_;
      req.secret = secret_;
    }
    SendFrame(protocol::EncodeRequest(req, encoding_));
    return WaitReply(req.id, timeout);
  }

  std::optional<protocol::Reply> WaitReply(std::uint64_t id, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      for (auto it = replies_.begin(); it != replies_.end(); ++it) {
        if (it->id == id) {
          protocol::Reply r = std::move(*it);
          replies_.erase(it);
          return r;
        }
      }
      if (!Receive(deadline)) return std::nullopt;
    }
  }

  // The next reply, whatever its id (for frames whose id may not be readable).
  std::optional<protocol::Reply> NextReply(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (replies_.empty()) {
      if (!Receive(deadline)) return std::nullopt;
    }
    protocol::Reply r = std::move(replies_.front());
    replies_.pop_front();
    return r;
  }

  // Waits for an event matching `pred`; consumes and returns it.
  std::optional<protocol::Event> WaitEvent(const std::function<bool(const protocol::Event&)>& pred,
                                           milliseconds timeout = milliseconds(3000)) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      for (auto it = events_.begin(); it != events_.end(); ++it) {
        if (pred(*it)) {
          protocol::Event e = std::move(*it);
          events_.erase(it);
          return e;
        }
      }
      if (!Receive(deadline)) return std::nullopt;
    }
  }

  // Opens a session; returns the reply.
  protocol::Reply Hello(std::int64_t ttl_ms = 5000, std::int32_t priority = 0, const std::string& name = "test") {
    protocol::Request req;
    req.op = protocol::Op::kHello;
    req.client = name;
    req.ttl_ms = ttl_ms;
    req.priority = priority;
    auto r = Call(req);
    if (r && r->ok()) {
      session_ = r->session.value_or("");
      secret_ = r->secret.value_or("");
    }
    return r.value_or(protocol::Reply{});
  }

  void Adopt(const std::string& session, const std::string& secret) {
    session_ = session;
    secret_ = secret;
  }
  const std::string& session() const { return session_; }
  const std::string& secret() const { return secret_; }
  std::deque<protocol::Event>& events() { return events_; }
  std::uint64_t last_id() const { return next_id_; }

 private:
  bool Receive(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, left);
    if (!(items[0].revents & ZMQ_POLLIN)) return Clock::now() < deadline;
    zmq::message_t msg;
    if (!socket_.recv(msg, zmq::recv_flags::dontwait)) return true;
    auto decoded = protocol::DecodeServerMessage(msg.to_string_view());
    if (auto* m = std::get_if<protocol::ServerMessage>(&decoded)) {
      if (auto* r = std::get_if<protocol::Reply>(m)) replies_.push_back(std::move(*r));
      else events_.push_back(std::get<protocol::Event>(std::move(*m)));
    } else {
      undecodable_.push_back(msg.to_string());
    }
    return true;
  }

  zmq::socket_t socket_;
  protocol::Encoding encoding_;
  std::string session_;
  std::string secret_;
  std::uint64_t next_id_ = 0;
  std::deque<protocol::Reply> replies_;
  std::deque<protocol::Event> events_;
  std::vector<std::string> undecodable_;
};

// A whole file, bytes as they are ("" when it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline protocol::Request AcquireReq(const std::string& owner, const std::string& resource, graph::Mode mode,
                                    std::int64_t wait_ms, std::int64_t ttl_ms = 5000) {
  protocol::Request r;
  r.op = protocol::Op::kAcquire;
  r.owner = owner;
  r.resource = resource;
  r.mode = mode;
  r.wait_ms = wait_ms;
  r.ttl_ms = ttl_ms;
  return r;
}

inline protocol::Request ReleaseReq(graph::LeaseId lease) {
  protocol::Request r;
  r.op = protocol::Op::kRelease;
  r.lease = lease;
  return r;
}

inline protocol::Request QueryReq(protocol::Op op) {
  protocol::Request r;
  r.op = op;
  return r;
}

}  // namespace lockgraph::testing

#endif  // LOCKGRAPH_TESTS_DAEMON_DAEMON_HARNESS_H_
