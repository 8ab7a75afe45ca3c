// GET /metrics over the REST door (issue 16 item 4): Prometheus text with its
// content type, the values memory_status answers, the caller rule of every
// read route, and hostile requests answered with the server's own errors
// while it keeps serving. The strict parse of the whole exposition is
// tests/server/metrics_prometheus.py (prometheus_client's parser).
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "memd/size.hpp"
#include "protocol/metrics_text.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

std::string header_value(const std::string& response, std::string_view name) {
  const std::string lower = Socket::lowercase(response.substr(0, response.find("\r\n\r\n")));
  const auto at = lower.find("\r\n" + Socket::lowercase(std::string(name)) + ":");
  if (at == std::string::npos) return "";
  const auto start = at + 3 + name.size();
  std::string value = response.substr(start, response.find("\r\n", start) - start);
  while (!value.empty() && value.front() == ' ') value.erase(0, 1);
  return value;
}

std::string error_code_of(const std::string& response) {
  auto body = nlohmann::json::parse(body_of(response), nullptr, false);
  if (body.is_discarded() || !body.contains("error")) return "(no error body)";
  return body["error"]["code"];
}

// The value of the sample whose name and labels are written exactly as
// `series` (`memd_device_total_bytes{device="host:0"}`); nullopt if absent.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::size_t at = 0;
  while ((at = text.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
    at += series.size();
  }
  return std::nullopt;
}

std::string get(int port, std::string_view target, std::string_view extra_headers = "") {
  Socket client(port);
  client.send("GET " + std::string(target) + " HTTP/1.1\r\nHost: memd\r\n" + std::string(extra_headers) + "\r\n");
  return client.response().value_or("(no answer)");
}

TEST(MetricsRest, AnswersPrometheusTextWithItsContentType) {
  Server server;
  ASSERT_NE(server.port(), 0);
  // A pool and a device limit, so that every row has a sample.
  AllocationRequest request;
  request.size_bytes = kMiB;
  request.device = DeviceId::host(0);
  request.memory_type = MemoryType::VRAM;
  ASSERT_TRUE(server.service().allocate(Caller::as("alice"), request));
  ASSERT_TRUE(server.service().update_limits(Caller::host("admin"),
                                             LimitUpdate{.device = DeviceId::host(0), .bytes = 32 * kMiB}));
  const std::string answer = get(server.port(), "/metrics");
  ASSERT_TRUE(answer.starts_with("HTTP/1.1 200")) << answer;
  EXPECT_EQ(header_value(answer, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(header_value(answer, "Content-Type"), kMetricsContentType);
  const std::string text = body_of(answer);
  // Every row of the table that has samples now is announced with its type
  // and help (prometheus-cpp leaves out a family without samples: no pool
  // before the first allocation, no device limit unless one is set).
  auto snapshot = gather_metrics(server.service());
  ASSERT_TRUE(snapshot);
  std::size_t announced = 0;
  for (const auto& m : metric_table()) {
    std::vector<MetricSample> samples;
    m.read(*snapshot, samples);
    if (samples.empty()) {
      EXPECT_EQ(text.find("# TYPE " + m.name + " "), std::string::npos) << m.name;
      continue;
    }
    ++announced;
    EXPECT_NE(text.find("# TYPE " + m.name + " " + std::string(to_string(m.type)) + "\n"), std::string::npos)
        << m.name;
    EXPECT_NE(text.find("# HELP " + m.name + " "), std::string::npos) << m.name;
  }
  EXPECT_EQ(announced, metric_table().size());
  EXPECT_EQ(sample(text, R"(memd_device_total_bytes{device="host:0"})"), 64.0 * kMiB);
  // HEAD: the same header, no body.
  Socket client(server.port());
  ASSERT_TRUE(client.send("HEAD /metrics HTTP/1.1\r\nHost: memd\r\n\r\n"));
  const auto head = client.header_only();
  ASSERT_TRUE(head);
  EXPECT_TRUE(head->starts_with("HTTP/1.1 200")) << *head;
  EXPECT_EQ(header_value(*head, "Content-Type"), kMetricsContentType);
}

// The numbers are memory_status's, and move with allocations and frees.
TEST(MetricsRest, ValuesAreWhatStatusReports) {
  Server server;
  ASSERT_NE(server.port(), 0);
  auto& service = server.service();
  AllocationRequest request;
  request.size_bytes = 3 * kMiB;
  request.device = DeviceId::host(0);
  request.memory_type = MemoryType::VRAM;
  auto a = service.allocate(Caller::as("alice"), request);
  ASSERT_TRUE(a) << a.error().message;
  // Not a small block: a small one's free waits in this thread's cache and
  // reaches the pool's counters (and memory_status) only when the cache
  // gives it back.
  request.size_bytes = 1 * kMiB;
  auto b = service.allocate(Caller::as("alice"), request);
  ASSERT_TRUE(b) << b.error().message;
  ASSERT_TRUE(service.deallocate(Caller::as("alice"), b->id));

  const std::string text = body_of(get(server.port(), "/metrics"));
  auto status = service.status(DeviceId::host(0));
  ASSERT_TRUE(status);
  const auto& d = status->devices.at(0);
  const std::string dev = R"({device="host:0"})";
  EXPECT_EQ(sample(text, "memd_device_allocations" + dev), 1.0);
  EXPECT_EQ(sample(text, "memd_device_allocations" + dev), static_cast<double>(d.allocations));
  EXPECT_EQ(sample(text, "memd_device_allocated_bytes" + dev), static_cast<double>(d.allocated_bytes));
  EXPECT_GE(d.allocated_bytes, 3 * kMiB);
  const std::string pool = R"({device="host:0",memory_type="VRAM"})";
  EXPECT_EQ(sample(text, "memd_pool_allocations_total" + pool), 2.0);
  EXPECT_EQ(sample(text, "memd_pool_frees_total" + pool), 1.0);
  EXPECT_EQ(sample(text, "memd_pool_live_allocations" + pool), 1.0);
  EXPECT_EQ(sample(text, R"(memd_allocation_failures_total{code="out_of_memory",device="host:0"})"), 0.0);

  // A refusal is counted under its code.
  request.size_bytes = 1 * kGiB;  // over the 64 MiB device
  EXPECT_FALSE(service.allocate(Caller::as("alice"), request));
  const std::string after = body_of(get(server.port(), "/metrics"));
  EXPECT_EQ(sample(after, R"(memd_allocation_failures_total{code="out_of_memory",device="host:0"})"), 1.0);
}

TEST(MetricsRest, HostileRequestsGetTheServersErrorsAndItKeepsServing) {
  Server server;
  ASSERT_NE(server.port(), 0);
  Socket client(server.port());
  // Another method: 405 with Allow and the JSON error body; the connection stays.
  ASSERT_TRUE(client.send("POST /metrics HTTP/1.1\r\nHost: memd\r\nContent-Length: 0\r\n\r\n"));
  auto answer = client.response();
  ASSERT_TRUE(answer);
  EXPECT_TRUE(answer->starts_with("HTTP/1.1 405")) << *answer;
  EXPECT_EQ(header_value(*answer, "Allow"), "GET, HEAD");
  EXPECT_EQ(error_code_of(*answer), "method_not_allowed");
  ASSERT_TRUE(client.send("DELETE /metrics HTTP/1.1\r\nHost: memd\r\n\r\n"));
  answer = client.response();
  ASSERT_TRUE(answer);
  EXPECT_TRUE(answer->starts_with("HTTP/1.1 405")) << *answer;
  // The query rule of every route: unknown keys (a malformed escape
  // included) are ignored, as /api/memory/status ignores them.
  const std::string odd = get(server.port(), "/metrics?x=%zz&%%=1");
  EXPECT_TRUE(odd.starts_with("HTTP/1.1 200")) << odd;
  EXPECT_TRUE(get(server.port(), "/api/memory/status?x=%zz&%%=1").starts_with("HTTP/1.1 200"));
  // An over-long target: 414 before any work.
  const std::string long_target = get(server.port(), "/metrics?x=" + std::string(9000, 'a'));
  EXPECT_TRUE(long_target.starts_with("HTTP/1.1 414")) << long_target.substr(0, 200);
  EXPECT_EQ(error_code_of(long_target), "uri_too_long");
  // A near miss is another path: 404.
  const std::string near = get(server.port(), "/metrics/");
  EXPECT_TRUE(near.starts_with("HTTP/1.1 404")) << near;
  // Still serving, on the first connection too.
  ASSERT_TRUE(client.send("GET /metrics HTTP/1.1\r\nHost: memd\r\n\r\n"));
  EXPECT_TRUE(answered_ok(client.response()));
}

// The caller rule of every read route: with a token configured, /metrics
// needs one (401 with WWW-Authenticate otherwise), any valid token will do.
TEST(MetricsRest, NeedsABearerTokenWhereEveryRouteDoes) {
  HttpOptions options;
  options.token = "metrics-admin-token";
  Server server(options);
  ASSERT_NE(server.port(), 0);
  const std::string refused = get(server.port(), "/metrics");
  EXPECT_TRUE(refused.starts_with("HTTP/1.1 401")) << refused;
  EXPECT_EQ(header_value(refused, "WWW-Authenticate"), "Bearer");
  EXPECT_EQ(error_code_of(refused), "unauthenticated");
  const std::string allowed = get(server.port(), "/metrics", "Authorization: Bearer metrics-admin-token\r\n");
  EXPECT_TRUE(allowed.starts_with("HTTP/1.1 200")) << allowed;
  EXPECT_TRUE(get(server.port(), "/healthz").starts_with("HTTP/1.1 200"));
}

}  // namespace
}  // namespace memd::testing
