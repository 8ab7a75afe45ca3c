// libFuzzer target: arbitrary bytes as a server-sent event stream, fed to
// SseReader (protocol/sse.hpp) in arbitrary splits.
//
// The first byte chooses a small line limit and the split points; the rest
// is the stream. Invariants: no crash; the reader's memory stays bounded
// (every message's data within 4 × the limit, every id within the limit,
// comments capped); a failed feed stays failed; and the same bytes fed
// whole or split give the same messages (a split never changes the parse).
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "protocol/sse.hpp"

namespace {

struct Parse {
  std::vector<memd::SseMessage> messages;
  bool failed = false;
};

Parse run(std::string_view stream, std::size_t limit, std::uint8_t seed, bool split) {
  memd::SseReader reader(limit);
  Parse out;
  std::size_t at = 0;
  std::uint32_t x = seed | 1u;
  while (at < stream.size()) {
    std::size_t n = stream.size() - at;
    if (split) {
      x = x * 1103515245u + 12345u;
      n = std::min<std::size_t>(n, 1 + (x >> 16) % 7);
    }
    auto fed = reader.feed(stream.substr(at, n), out.messages);
    at += n;
    if (!fed) {
      if (fed.error().code != memd::ErrorCode::invalid_argument) std::abort();
      out.failed = true;
      // Spent: every later feed fails too.
      if (reader.feed("data: x\n\n", out.messages)) std::abort();
      break;
    }
  }
  if (reader.comments().size() > 1024) std::abort();
  for (const auto& m : out.messages) {
    if (m.data.size() > 4 * limit || m.id.size() > limit || m.event.size() > limit) std::abort();
    if (m.event.empty()) std::abort();  // "message" when the frame names none
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t limit = 16 + (data[0] & 0x3f) * 8;  // 16..520 bytes
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Parse whole = run(stream, limit, data[0], false);
  const Parse pieces = run(stream, limit, data[0], true);
  // A split never changes the parse (up to where the limit stopped both).
  if (whole.failed != pieces.failed) std::abort();
  if (whole.messages.size() != pieces.messages.size()) std::abort();
  for (std::size_t i = 0; i < whole.messages.size(); ++i) {
    const auto &a = whole.messages[i], &b = pieces.messages[i];
    if (a.id != b.id || a.event != b.event || a.data != b.data) std::abort();
  }
  return 0;
}
