// libFuzzer target: arbitrary bytes as one `memd stdio` request line.
//
// Whatever the line, the answer must be one JSON object with "ok" (and an
// error code from the closed list when not ok), and the allocator must stay
// valid. Allocations a line makes persist across inputs (bounded by a 64 MiB
// host device), so sequences of requests are exercised too.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "server/stdio/stdio_server.hpp"
#include "service/memory_service.hpp"

namespace {

memd::MemoryService& service() {
  static auto created = [] {
    memd::ServiceOptions options;
    options.backends.host_device_sizes = {64 * memd::kMiB};
    options.backends.enable_cuda = false;
    auto s = memd::MemoryService::create(options);
    if (!s) std::abort();
    return std::move(*s);
  }();
  return *created;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::uint64_t runs = 0;
  std::string_view line(reinterpret_cast<const char*>(data), size);
  std::string reply = memd::handle_stdio_line(service(), line, "fuzz");
  auto parsed = nlohmann::json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("ok")) std::abort();
  if (!parsed["ok"].get<bool>()) {
    const auto& code = parsed["error"]["code"];
    if (!code.is_string() || !memd::parse_error_code(code.get<std::string>())) std::abort();
  }
  if (++runs % 256 == 0) {
    if (!service().manager().validate()) std::abort();
    // Keep the device from filling up over a long run.
    if (runs % 4096 == 0) service().release_owner("fuzz");
  }
  return 0;
}
