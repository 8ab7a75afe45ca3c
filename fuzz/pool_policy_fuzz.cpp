// libFuzzer target: arbitrary bytes as a `--pool-policy DEVICE=POLICY` flag.
// Parsing must return a (device, policy) pair or invalid_argument, never
// crash; an accepted flag must name a policy that prints back as itself.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "alloc/pool_options.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = memd::parse_device_pool_policy(text);
  if (r) {
    if (memd::parse_pool_policy(memd::to_string(r->second)) != r->second) std::abort();
  } else if (r.error().code != memd::ErrorCode::invalid_argument) {
    std::abort();
  }
  return 0;
}
