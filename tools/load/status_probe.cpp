#include "status_probe.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "daemon_json.hpp"
#include "proc_stats.hpp"

namespace memd::load {
namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view kStatusTarget = "/api/memory/status";

std::int64_t since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void StatusProbe::start() {
  asio::co_spawn(ioc_, run(), asio::detached);
  thread_ = std::thread([this] { ioc_.run(); });
}

void StatusProbe::stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  asio::post(ioc_, [this] {
    if (kept_) kept_->cancel();
    if (fresh_) fresh_->cancel();
    if (timer_) timer_->cancel();
  });
  thread_.join();
}

void StatusProbe::sample_memory(const std::string& body) {
  const auto allocated = allocated_bytes(body);
  if (!allocated) {
    results_.errors.add("probe.body", "status answer without devices[].allocatedBytes");
    return;
  }
  results_.allocated_max = std::max(results_.allocated_max, *allocated);
  if (const auto mem = read_proc_memory(pid_)) {
    const auto over = static_cast<std::int64_t>(mem->rss_bytes) - static_cast<std::int64_t>(*allocated);
    if (results_.samples == 0 || over > results_.rss_minus_allocated_max) results_.rss_minus_allocated_max = over;
    ++results_.samples;
  }
}

asio::awaitable<void> StatusProbe::run() {
  auto executor = co_await asio::this_coro::executor;
  Connection kept(executor);
  asio::steady_timer timer(executor);
  kept_ = &kept;
  timer_ = &timer;
  RequestSpec status;
  status.target = kStatusTarget;
  status.body_limit = 16 << 20;
  RequestSpec closing = status;
  closing.close = true;
  auto count = [&](const char* which, const Reply& r) {
    if (stopping_ || r.failure == Failure::aborted) return;
    const std::string kind = r.failure == Failure::status ? "status_" + std::to_string(r.status)
                                                          : failure_name(r.failure);
    results_.errors.add(std::string("probe.") + which + "." + kind, r.detail);
  };

  while (!stopping_) {
    // Kept alive: reconnect (untimed) if the server closed it.
    if (!kept.is_open()) {
      if (!results_.keep_alive_ns.empty()) ++results_.reconnects;
      const Failure f = co_await kept.connect(endpoint_, timeout_);
      if (f != Failure::none) {
        Reply r;
        r.failure = f;
        count("keepalive", r);
      }
    }
    if (kept.is_open() && !stopping_) {
      const auto t0 = std::chrono::steady_clock::now();
      Reply r = co_await kept.request(status, timeout_);
      const auto ns = since(t0);
      if (r.failure == Failure::none && r.status != 200) r.failure = Failure::status;
      if (r.failure == Failure::none) {
        results_.keep_alive_ns.push_back(ns);
        sample_memory(r.body);
      } else {
        count("keepalive", r);
      }
    }
    if (stopping_) break;
    // Fresh: a new connection for one request, timed from connect().
    {
      Connection fresh(executor);
      fresh_ = &fresh;
      const auto t0 = std::chrono::steady_clock::now();
      Reply r;
      r.failure = co_await fresh.connect(endpoint_, timeout_);
      if (r.failure == Failure::none) r = co_await fresh.request(closing, timeout_);
      const auto ns = since(t0);
      if (r.failure == Failure::none && r.status != 200) r.failure = Failure::status;
      if (r.failure == Failure::none) {
        results_.fresh_ns.push_back(ns);
      } else {
        count("fresh", r);
      }
      // Let the server close first (its side keeps the TIME_WAIT).
      if (fresh.stream().socket().is_open()) {
        char byte = 0;
        fresh.stream().expires_after(std::chrono::seconds(1));
        co_await fresh.stream().async_read_some(asio::buffer(&byte, 1), kTuple);
      }
      fresh.close();
      fresh_ = nullptr;
    }
    if (stopping_) break;
    timer.expires_after(interval_);
    co_await timer.async_wait(kTuple);
  }
  kept.close();
  kept_ = nullptr;
  timer_ = nullptr;
}

}  // namespace memd::load
