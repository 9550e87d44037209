// Moves money between two accounts under lockgraph leases, passing the fencing
// token to the (here imaginary) storage with every write.
//
//   transfer ENDPOINT FROM TO
//
// Locks are taken in a fixed order (lower account first) so that two transfers in
// opposite directions cannot deadlock; if they did, lockgraph would pick one of them
// as the victim and this program would retry it, passing back `started` so that it
// keeps its age and is not chosen again and again.
#include <cstdio>
#include <string>

#include "lockgraph/client.h"

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  if (argc != 4) {
    std::fprintf(stderr, "usage: transfer ENDPOINT FROM_ACCOUNT TO_ACCOUNT\n");
    return 2;
  }
  lockgraph::ClientOptions options;
  options.endpoints = {argv[1]};
  options.client_name = "transfer-example";
  auto connected = lockgraph::Client::Connect(options);
  if (!connected.ok()) {
    std::fprintf(stderr, "transfer: %s\n", connected.error().message.c_str());
    return 1;
  }
  lockgraph::Client& client = *connected.value();
  std::string first = std::string("account:") + argv[2];
  std::string second = std::string("account:") + argv[3];
  if (second < first) std::swap(first, second);

  std::optional<std::int64_t> started;
  for (int attempt = 1; attempt <= 5; ++attempt) {
    auto a = client.Acquire("transfer", first, lockgraph::Mode::kExclusive, 10s, 2s, "transfer.cc:first", started);
    if (!a.ok()) {
      std::fprintf(stderr, "transfer: %s: %s\n", first.c_str(), a.error().message.c_str());
      started = client.Started("transfer");
      continue;
    }
    lockgraph::LeaseGuard hold_first(client, a.value());
    auto b = client.Acquire("transfer", second, lockgraph::Mode::kExclusive, 10s, 2s, "transfer.cc:second", started);
    if (!b.ok()) {
      std::fprintf(stderr, "transfer: %s: %s (attempt %d)\n", second.c_str(), b.error().message.c_str(), attempt);
      started = client.Started("transfer");
      continue;  // the guard releases `first`
    }
    lockgraph::LeaseGuard hold_second(client, b.value());
    std::printf("transferring with tokens %llu and %llu\n", static_cast<unsigned long long>(a.value().token),
                static_cast<unsigned long long>(b.value().token));
    return 0;
  }
  return 1;
}
