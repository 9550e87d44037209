#include "harness.h"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>

namespace lockgraph::bench {

void ClientResult::Latency(Clock::time_point start, Clock::time_point end) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count();
  latency_ns.push_back(static_cast<std::uint32_t>(std::clamp<std::int64_t>(ns, 0, UINT32_MAX)));
}

namespace {

class ThreadGate final : public Gate {
 public:
  ThreadGate(int clients, std::chrono::milliseconds warmup, Clock::duration measured)
      : waiting_(clients), warmup_(warmup), measured_(measured) {}

  void Ready() override {
    std::lock_guard lock(mu_);
    if (--waiting_ == 0) {
      window_.from = Clock::now() + warmup_;
      window_.to = window_.from + measured_;
      cv_.notify_all();
    }
  }
  Window Wait() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return waiting_ == 0; });
    return window_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_;
  std::chrono::milliseconds warmup_;
  Clock::duration measured_;
  Window window_;
};

double Percentile(const std::vector<std::uint32_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(q * static_cast<double>(sorted.size()));  // nearest rank
  if (rank >= sorted.size()) rank = sorted.size() - 1;
  return sorted[rank] / 1000.0;
}

}  // namespace

void HandoverClock::Granted(int index, Clock::time_point at, const Window& w, ClientResult& res) const {
  const std::int64_t from = released_at_.load(std::memory_order_acquire);
  const int by = released_by_.load(std::memory_order_relaxed);
  if (from == 0 || !w.Counts(at)) return;
  ++res.ops;
  res.Latency(Clock::time_point(Clock::duration(from)), at);
  if (by == index) ++res.counters["same_client"];
}

void HandoverClock::Releasing(int index) {
  released_by_.store(index, std::memory_order_relaxed);
  released_at_.store(Clock::now().time_since_epoch().count(), std::memory_order_release);
}

std::uint64_t ClientSeed(const Options& o, int index) {
  if (o.seed != 0) return o.seed * 1'000'003 + static_cast<std::uint64_t>(index);
  return std::random_device{}() ^ (static_cast<std::uint64_t>(index) << 32);
}

Merged RunClients(const Options& o, const ClientBody& body) {
  const auto measured = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  ThreadGate gate(o.clients, std::chrono::milliseconds(o.warmup_ms), measured);
  std::vector<ClientResult> results(static_cast<std::size_t>(o.clients));
  std::vector<std::thread> threads;
  threads.reserve(results.size());
  for (int i = 0; i < o.clients; ++i) {
    threads.emplace_back([&, i] {
      ClientResult& r = results[static_cast<std::size_t>(i)];
      // A body that throws before Ready() must not leave the others waiting forever.
      struct ReadyOnce final : Gate {
        Gate& inner;
        bool done = false;
        explicit ReadyOnce(Gate& g) : inner(g) {}
        void Ready() override {
          if (!done) inner.Ready();
          done = true;
        }
        Window Wait() override { return inner.Wait(); }
      } once(gate);
      try {
        body(i, once, r);
      } catch (const std::exception& e) {
        if (r.fatal.empty()) r.fatal = e.what();
      }
      once.Ready();
    });
  }
  for (auto& t : threads) t.join();

  Merged m;
  std::size_t n = 0;
  for (const ClientResult& r : results) n += r.latency_ns.size();
  m.total.latency_ns.reserve(n);
  for (ClientResult& r : results) {
    m.total.ops += r.ops;
    m.total.errors += r.errors;
    for (const auto& [k, v] : r.error_kinds) m.total.error_kinds[k] += v;
    for (const auto& [k, v] : r.counters) m.total.counters[k] += v;
    m.total.latency_ns.insert(m.total.latency_ns.end(), r.latency_ns.begin(), r.latency_ns.end());
    std::vector<std::uint32_t>().swap(r.latency_ns);
    if (!r.fatal.empty()) {
      ++m.failed_clients;
      if (m.first_failure.empty()) m.first_failure = r.fatal;
    }
  }
  std::sort(m.total.latency_ns.begin(), m.total.latency_ns.end());
  return m;
}

std::string Numbered(std::string_view prefix, std::uint64_t n) {
  char digits[24];
  const int len = std::snprintf(digits, sizeof digits, "%" PRIu64, n);
  std::string out;
  out.reserve(prefix.size() + static_cast<std::size_t>(len));
  out.append(prefix);
  out.append(digits, static_cast<std::size_t>(len));
  return out;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

int PrintResult(const Options& o, const Merged& m, const std::string& extra) {
  const ClientResult& t = m.total;
  double mean_us = 0;
  for (std::uint32_t v : t.latency_ns) mean_us += v;
  if (!t.latency_ns.empty()) mean_us /= 1000.0 * static_cast<double>(t.latency_ns.size());
  std::printf("{\"target\":\"%s\",\"workload\":\"%s\",\"clients\":%d,\"seconds\":%g,\"ops\":%" PRIu64
              ",\"ops_per_s\":%.1f,\"samples\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f"
              ",\"mean_us\":%.1f,\"errors\":%" PRIu64 ",\"error_kinds\":{",
              JsonEscape(o.target).c_str(), JsonEscape(o.workload).c_str(), o.clients, o.seconds, t.ops,
              static_cast<double>(t.ops) / o.seconds, t.latency_ns.size(), Percentile(t.latency_ns, 0.50),
              Percentile(t.latency_ns, 0.99), Percentile(t.latency_ns, 0.999),
              t.latency_ns.empty() ? 0.0 : t.latency_ns.back() / 1000.0, mean_us, t.errors);
  const char* sep = "";
  for (const auto& [k, v] : t.error_kinds) {
    std::printf("%s\"%s\":%" PRIu64, sep, JsonEscape(k).c_str(), v);
    sep = ",";
  }
  std::printf("},\"counters\":{");
  sep = "";
  for (const auto& [k, v] : t.counters) {
    std::printf("%s\"%s\":%" PRIu64, sep, JsonEscape(k).c_str(), v);
    sep = ",";
  }
  std::printf("},\"failed_clients\":%d", m.failed_clients);
  if (!m.first_failure.empty()) std::printf(",\"first_failure\":\"%s\"", JsonEscape(m.first_failure).c_str());
  if (!extra.empty()) std::printf(",%s", extra.c_str());
  std::printf("}\n");
  std::fflush(stdout);
  return m.failed_clients == 0 ? 0 : 1;
}

}  // namespace lockgraph::bench
