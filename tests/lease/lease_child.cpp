// memd_lease_child SOCKET OWNER BYTES — a client-mode process for the lease
// tests: opens an engine leasing from the daemon at SOCKET as OWNER,
// allocates BYTES on host:0 (stream-ordered, as the PyTorch shim does),
// writes them, prints "ready" and waits to be killed. Exit 1 on any failure,
// with the reason on stderr.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "memd/engine.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: memd_lease_child SOCKET OWNER BYTES\n");
    return 64;
  }
  memd::EngineOptions options;
  options.host_device_sizes = {256ull << 20};
  options.enable_cuda = false;
  options.owner = argv[2];
  options.lease_socket = argv[1];
  auto engine = memd::Engine::open(options);
  if (!engine) {
    std::fprintf(stderr, "open: %s\n", engine.error().message.c_str());
    return 1;
  }
  auto stream = engine->create_stream(memd::DeviceId::host(0));
  if (!stream) {
    std::fprintf(stderr, "stream: %s\n", stream.error().message.c_str());
    return 1;
  }
  const std::uint64_t bytes = std::strtoull(argv[3], nullptr, 10);
  auto block = engine->allocate_async(bytes, *stream);
  if (!block) {
    std::fprintf(stderr, "allocate: %s\n", block.error().message.c_str());
    return 1;
  }
  std::memset(*block, 0x5a, bytes);
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();
}
