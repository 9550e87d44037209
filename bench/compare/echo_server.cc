// lockgraph_echo: the transport floor. A ROUTER socket on one thread that sends every
// message straight back to its sender — the same sockets, framing and ZeroMQ I/O thread
// as lockgraphd, with no decoding, no state and no journal.
//
//   lockgraph_echo --listen tcp://127.0.0.1:7802
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <zmq.hpp>

namespace {
volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }
}  // namespace

int main(int argc, char** argv) {
  std::string listen = "tcp://127.0.0.1:7802";
  int io_threads = 1;
  CLI::App app{"lockgraph_echo: a bare ZeroMQ ROUTER that echoes every message to its sender;\n"
               "the transport floor that scripts/bench compares lockgraphd with.",
               "lockgraph_echo"};
  app.add_option("--listen", listen, "endpoint to bind")->capture_default_str();
  app.add_option("--io-threads", io_threads, "ZeroMQ I/O threads")->check(CLI::Range(1, 64))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  try {
    zmq::context_t ctx(io_threads);
    zmq::socket_t router(ctx, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.bind(listen);
    std::fprintf(stderr, "lockgraph_echo: listening on %s\n", listen.c_str());
    zmq::message_t identity, body;
    while (!g_stop) {
      try {
        if (!router.recv(identity)) continue;
        if (!identity.more()) continue;  // a ROUTER always prefixes the identity
        if (!router.recv(body)) continue;
        while (body.more()) {  // a DEALER of ours sends one frame; drain anything else
          zmq::message_t rest;
          if (!router.recv(rest)) break;
          if (!rest.more()) break;
        }
        router.send(identity, zmq::send_flags::sndmore);
        router.send(body, zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockgraph_echo: %s\n", e.what());
    return 1;
  }
  return 0;
}
