// libFuzzer target: arbitrary bytes as the daemon's answer to memory_lease,
// as a leasing process reads it (lease/lease_client.hpp: parse_lease_answer).
//
// Invariants: no crash or throw whatever the JSON; a refusal is
// invalid_argument; an accepted answer has a lease id, positive sizes with
// mapSize >= sizeBytes, a known handle type, and came with "fds": 1.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lease/lease_client.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  auto grant = memd::parse_lease_answer(json);
  if (!grant) {
    if (grant.error().code != memd::ErrorCode::invalid_argument) std::abort();
    return 0;
  }
  if (grant->size_bytes == 0 || grant->map_size < grant->size_bytes) std::abort();
  if (grant->kind != memd::ShareableKind::Memfd && grant->kind != memd::ShareableKind::CudaPosixFd) std::abort();
  if (!json.is_object() || json.value("fds", 0) != 1) std::abort();
  if (grant->fd != -1) std::abort();  // a descriptor comes from the socket, never from the text
  return 0;
}
