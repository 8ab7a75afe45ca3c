// load/sse_subscribers.hpp — N subscribers of GET /api/memory/events held
// open while the load runs, each checking the scripted sequence.
//
// One thread and io_context of their own (like the status probe), so a
// thousand streams neither wait behind the bulk client's sockets nor take
// more than one core from the load. start() opens the subscriptions, at most
// `concurrency` connecting at once; a subscriber counts as connected once
// the daemon's response header (200, text/event-stream) has arrived — the
// daemon subscribes before it answers, so from then on it misses nothing.
// The body (chunked or read to the end) goes through memd::SseReader into
// the subscriber's ScriptCheck. The owner's thread polls the counters (the
// bulk client polls every 20 ms instead of blocking its own thread) and the
// script tells when it sent each request (note_sent), for the delivery
// latency. stop() closes every stream and joins; summary() after that.
//
// Thread safety: start, stop and summary from the owner's thread; the
// counters and note_sent from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "http_client.hpp"
#include "sse_script.hpp"

namespace memd::load {

struct SubscriberOptions {
  tcp::endpoint endpoint;
  std::string target = "/api/memory/events?kinds=limit_reached";
  std::uint64_t count = 1;
  std::uint64_t concurrency = 256;  // connections being opened at once
  Millis timeout{10'000};           // connect + response header, per subscriber
  ScriptSpec script;
};

class SseSubscribers {
 public:
  explicit SseSubscribers(SubscriberOptions options);
  ~SseSubscribers();
  SseSubscribers(const SseSubscribers&) = delete;
  SseSubscribers& operator=(const SseSubscribers&) = delete;

  // Starts the thread and opens the subscriptions; returns at once.
  void start();
  // Every subscriber either connected or failed.
  bool settled() const noexcept { return connected() + failed() == options_.count; }
  std::uint64_t connected() const noexcept { return connected_.load(); }
  std::uint64_t failed() const noexcept { return failed_.load(); }
  // The first non-200 status a subscription got (0: none): 404 means the
  // daemon has no event stream.
  unsigned refused_status() const noexcept { return refused_status_.load(); }
  // Connected subscribers that have every script event, or whose stream
  // ended (nothing more will come to them).
  std::uint64_t finished() const noexcept { return finished_.load(); }
  // The script sent request i now (steady clock).
  void note_sent(std::uint64_t i);
  // Closes every stream and joins the thread (idempotent).
  void stop();
  // After stop().
  SseSummary summary() const;

 private:
  struct Subscriber;
  boost::asio::awaitable<void> launcher();
  boost::asio::awaitable<void> open(Subscriber& s);
  boost::asio::awaitable<void> stream(Subscriber& s);
  void finish(Subscriber& s);

  const SubscriberOptions options_;
  boost::asio::io_context ioc_{1};
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::vector<std::unique_ptr<Subscriber>> subs_;
  std::vector<std::atomic<std::int64_t>> sent_ns_;
  std::size_t next_ = 0;  // the thread's: the next subscriber to open
  bool stopping_ = false;  // the thread's
  std::atomic<std::uint64_t> connected_{0}, failed_{0}, finished_{0};
  std::atomic<unsigned> refused_status_{0};
  std::string first_failure_;  // the thread's; read after join
};

}  // namespace memd::load
