// A MemoryService on one host device, driven through the action table's
// dispatch (the path both doors take): the fixture the action tests share.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>

#include "memd/size.hpp"
#include "protocol/action_table.hpp"
#include "service/memory_service.hpp"

namespace memd::test {

class DispatchTest : public ::testing::Test {
 protected:
  // The service: host:0 of `host_bytes`, no CUDA, no session sweeper, the
  // monitor's thread off unless `monitor_interval` is set (samples are taken
  // when the test asks).
  void start(std::uint64_t host_bytes = 64 * kMiB,
             std::chrono::milliseconds monitor_interval = std::chrono::milliseconds(0)) {
    start(options(host_bytes, monitor_interval));
  }
  static ServiceOptions options(std::uint64_t host_bytes = 64 * kMiB,
                                std::chrono::milliseconds monitor_interval = std::chrono::milliseconds(0)) {
    ServiceOptions options;
    options.backends.host_device_sizes = {host_bytes};
    options.backends.enable_cuda = false;
    options.session_sweep_interval = std::chrono::milliseconds(0);
    options.monitor.interval = monitor_interval;
    return options;
  }
  void start(const ServiceOptions& options) {
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
  }

  Result<nlohmann::json> call(std::string_view action, const nlohmann::json& params,
                              const Caller& caller = Caller::as("t")) {
    auto out = dispatch(*service_, *find_action(action), params, CallContext{caller, {}, false, false});
    if (!out) return fail(out.error());
    return out->result;
  }
  // The refusal of a call that must be refused.
  Error refused(std::string_view action, const nlohmann::json& params) {
    auto r = call(action, params);
    EXPECT_FALSE(r) << action << " " << params.dump() << " was accepted";
    return r ? Error{ErrorCode::internal, "accepted"} : r.error();
  }

  std::unique_ptr<MemoryService> service_;
};

}  // namespace memd::test
