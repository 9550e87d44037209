// lockgraphd's loop: one ROUTER socket, one thread, one Coordinator.
//
// Each frame is decoded, turned into a core command, applied at the monotonic
// clock's `now`, and answered in the request's encoding; the command's events go to
// their sessions in the encoding of each session's hello. Between frames the loop
// sleeps until the core's next deadline. The transport keeps, per session, the
// latest connection, the last replies (for retried request ids) and the events not
// yet acknowledged (resent to the latest connection).
//
// Thread safety: a Server is driven by one thread (Run); Stop may be called from
// any thread or a signal handler through the flag it is given.
#ifndef LOCKGRAPH_DAEMON_SERVER_H_
#define LOCKGRAPH_DAEMON_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace lockgraph::daemon {

class Server {
 public:
  explicit Server(DaemonConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every endpoint. Returns an error message, or empty on success; then
  // endpoints() holds the bound addresses (wildcard ports resolved).
  std::string Bind();
  const std::vector<std::string>& endpoints() const;

  // Serves until `stop` becomes true; then stops accepting, answers the frames
  // already received, and returns.
  void Run(const std::atomic<bool>& stop);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockgraph::daemon

#endif  // LOCKGRAPH_DAEMON_SERVER_H_
