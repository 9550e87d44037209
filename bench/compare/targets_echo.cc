// The transport floor for lockgraph_compare: the lock and pipeline workloads' message
// pattern against lockgraph_echo. Each client sends frames of exactly the size of
// lockgraph's binary acquire and release requests, alternately, and waits for them to
// come back: the same sockets, concurrency and pinning as lockgraph's runs, with no
// service behind them.
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "harness.h"
#include "lockgraph/protocol.h"

namespace lockgraph::bench {
namespace {

using protocol::Op;
using protocol::Request;

// The two frames of one lock cycle, as lockgraph_compare's lock workload encodes them
// (a session id and secret of the daemon's lengths, a key of the 1M key space).
std::vector<std::string> LockFrames(const Options& o) {
  Request acquire;
  acquire.id = 123'456;
  acquire.op = Op::kAcquire;
  acquire.session = std::string(16, 's');
  acquire.secret = std::string(32, 'x');
  acquire.owner = "w";
  acquire.resource = Numbered("k:", o.keys / 2);
  acquire.ttl_ms = o.ttl_ms;
  acquire.wait_ms = 0;
  Request release;
  release.id = 123'457;
  release.op = Op::kRelease;
  release.session = acquire.session;
  release.secret = acquire.secret;
  release.lease = (std::uint64_t{1} << 40) | 123'456;
  return {protocol::EncodeRequest(acquire, protocol::Encoding::kBinary),
          protocol::EncodeRequest(release, protocol::Encoding::kBinary)};
}

class EchoConn {
 public:
  EchoConn(zmq::context_t& ctx, const Options& o) : sock_(ctx, zmq::socket_type::dealer), timeout_(o.reply_timeout_ms) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(o.endpoint);
  }
  void Send(const std::string& frame) { sock_.send(zmq::buffer(frame), zmq::send_flags::none); }
  void Receive(std::size_t expected_size) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_)) <= 0) {
      throw std::runtime_error("no echo within " + std::to_string(timeout_) + " ms");
    }
    if (!sock_.recv(msg_, zmq::recv_flags::dontwait)) throw std::runtime_error("readable socket had no message");
    if (msg_.size() != expected_size) throw std::runtime_error("echo of the wrong size");
  }

 private:
  zmq::socket_t sock_;
  int timeout_;
  zmq::message_t msg_;
};

// Hello-free: the echo has no sessions. A client connects, sends one frame and waits
// for it to come back before it reports ready, so connection set-up is not measured.
int Run(const Options& o, int in_flight) {
  zmq::context_t ctx(1);
  const std::vector<std::string> frames = LockFrames(o);
  auto merged = RunClients(o, [&](int index, Gate& gate, ClientResult& res) {
    EchoConn conn(ctx, o);
    conn.Send(frames[0]);
    conn.Receive(frames[0].size());
    gate.Ready();
    const Window w = gate.Wait();
    std::size_t next = 0;
    for (;;) {
      const auto t0 = Clock::now();
      if (w.Over(t0)) break;
      const std::string& frame = frames[next];
      next ^= 1;
      for (int i = 0; i < in_flight; ++i) conn.Send(frame);
      for (int i = 0; i < in_flight; ++i) {
        conn.Receive(frame.size());
        if (w.Counts(t0)) {
          ++res.ops;
          res.Latency(t0, Clock::now());
        }
      }
    }
  });
  return PrintResult(o, merged, "\"frame_bytes\":[" + std::to_string(frames[0].size()) + "," +
                                    std::to_string(frames[1].size()) + "]");
}

}  // namespace

int RunEcho(const Options& o) {
  if (o.workload == "lock") return Run(o, 1);
  if (o.workload == "pipeline") return Run(o, o.pipeline);
  std::fprintf(stderr,
               "lockgraph_compare: echo: workload %s has no floor of its own (scripts/bench compares it with "
               "the lock workload's)\n",
               o.workload.c_str());
  return 2;
}

}  // namespace lockgraph::bench
