// A DEALER connection to lockgraphd (or to lockgraph_echo) for lockgraph_compare.
#pragma once

#include <deque>
#include <string>
#include <zmq.hpp>

#include "harness.h"
#include "lockgraph/protocol.h"

namespace lockgraph::bench {

// One session's socket. Transport failures throw std::runtime_error, which stops the
// client (RunClients records it as the client's failure).
class LockgraphConn {
 public:
  LockgraphConn(zmq::context_t& ctx, const Options& o);

  // Sends `req` with the next request id (and this connection's session, when it has
  // one and the op is session-scoped); returns the id.
  std::uint64_t Send(protocol::Request& req);
  // The next message from the daemon, waiting at most the reply timeout.
  protocol::ServerMessage Receive();
  // The reply to request `id`; events that arrive first are queued in events().
  protocol::Reply ReplyTo(std::uint64_t id);
  protocol::Reply Call(protocol::Request& req) { return ReplyTo(Send(req)); }
  // The next event, from the queue or the socket.
  protocol::Event NextEvent();
  // Waits up to `ms` for a message to read (true) or none (false).
  bool Readable(int ms);

  // hello: opens the session used by later requests.
  void Hello(const std::string& client, std::int64_t ttl_ms);
  // bye, when a session is open; errors are ignored (the run is over).
  void Bye();

  const std::string& session() const { return session_; }
  const std::string& secret() const { return secret_; }

 private:
  zmq::socket_t sock_;
  int timeout_ms_;
  std::uint64_t next_id_ = 0;
  std::string session_, secret_;
  std::deque<protocol::Event> events_;
};

}  // namespace lockgraph::bench
