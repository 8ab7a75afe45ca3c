// A program that uses memd in its own process: open an engine with one
// host-backed device, allocate on it, write bytes, read them back, print the
// device's statistics, free. Every call returns memd::Result; nothing throws.
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include <memd/engine.hpp>
#include <memd/size.hpp>
#include <memd/version.hpp>

namespace {

int fail(std::string_view what, const memd::Error& error) {
  std::fprintf(stderr, "%.*s: %.*s (%.*s)\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(error.message.size()), error.message.data(),
               static_cast<int>(memd::to_string(error.code).size()), memd::to_string(error.code).data());
  return 1;
}

}  // namespace

int main() {
  memd::EngineOptions options;
  options.host_device_sizes = {64 * memd::kMiB};  // host:0, a 64 MiB stand-in for a GPU
  options.enable_cuda = false;
  options.owner = "example";
  auto engine = memd::Engine::open(options);
  if (!engine) return fail("open", engine.error());
  std::printf("memd %.*s: %zu devices\n", static_cast<int>(memd::version().size()), memd::version().data(),
              engine->devices().size());

  memd::AllocateOptions request;
  request.size_bytes = 1 * memd::kMiB;
  request.device = memd::DeviceId::host(0);  // VRAM (the default type) of host:0
  auto allocation = engine->allocate(request);
  if (!allocation) return fail("allocate", allocation.error());

  const char message[] = "hello from libmemd";
  if (auto ok = engine->write(allocation->id, 4096, std::as_bytes(std::span(message))); !ok)
    return fail("write", ok.error());
  std::vector<std::byte> back(sizeof message);
  if (auto ok = engine->read(allocation->id, 4096, back); !ok) return fail("read", ok.error());
  std::printf("read back: %s\n", reinterpret_cast<const char*>(back.data()));

  auto stats = engine->stats(memd::DeviceId::host(0));
  if (!stats) return fail("stats", stats.error());
  const memd::DeviceStats& s = stats->front();
  std::printf("%s: %llu allocation(s), %s allocated, %s reserved of %s\n", s.device.to_string().c_str(),
              static_cast<unsigned long long>(s.allocations), memd::format_size(s.allocated_bytes).c_str(),
              memd::format_size(s.reserved_bytes).c_str(), memd::format_size(s.total_bytes).c_str());

  if (auto ok = engine->free(allocation->id); !ok) return fail("free", ok.error());
  // A second free is an error value, not a crash.
  auto again = engine->free(allocation->id);
  std::printf("second free: %.*s\n", static_cast<int>(memd::to_string(again.error().code).size()),
              memd::to_string(again.error().code).data());
  return std::memcmp(back.data(), message, sizeof message) == 0 && !again ? 0 : 1;
}
