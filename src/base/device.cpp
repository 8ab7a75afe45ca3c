// Device names: the parser is strict because device ids arrive from the wire.
#include "memd/device.hpp"

#include <charconv>

namespace memd {

std::string_view to_string(DeviceKind kind) noexcept {
  switch (kind) {
    case DeviceKind::Cuda: return "cuda";
    case DeviceKind::Host: return "host";
    case DeviceKind::Cpu: return "cpu";
  }
  return "cpu";
}

std::string_view to_string(PeerAccess access) noexcept {
  switch (access) {
    case PeerAccess::Direct: return "direct";
    case PeerAccess::Staged: return "staged";
  }
  return "staged";
}

Result<DeviceId> DeviceId::parse(std::string_view text) {
  if (text == "cpu") return DeviceId::cpu();
  auto colon = text.find(':');
  if (colon == std::string_view::npos)
    return fail(ErrorCode::invalid_argument, "invalid device id: expected cuda:N, host:N or cpu");
  auto prefix = text.substr(0, colon);
  auto digits = text.substr(colon + 1);
  DeviceKind kind;
  if (prefix == "cuda") kind = DeviceKind::Cuda;
  else if (prefix == "host") kind = DeviceKind::Host;
  else return fail(ErrorCode::invalid_argument, "invalid device id: expected cuda:N, host:N or cpu");
  if (digits.empty() || digits.size() > 4 || digits[0] == '+' || digits[0] == '-')
    return fail(ErrorCode::invalid_argument, "invalid device id: bad index");
  int index = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (ec != std::errc{} || end != digits.data() + digits.size() || index < 0 || index > 1023)
    return fail(ErrorCode::invalid_argument, "invalid device id: bad index");
  return DeviceId(kind, index);
}

std::string DeviceId::to_string() const {
  if (kind_ == DeviceKind::Cpu) return "cpu";
  return std::string(memd::to_string(kind_)) + ":" + std::to_string(index_);
}

}  // namespace memd
