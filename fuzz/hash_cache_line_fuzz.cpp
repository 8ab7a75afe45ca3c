// libFuzzer target: arbitrary text as one line of the persisted content hash
// cache (parse_hash_cache_line: models/content_hash.hpp), the file memd reads
// back from its state directory at start.
//
// Invariants: no crash and no unbounded allocation; a refusal is
// invalid_argument with a short message; an accepted entry stays within the
// line's bounds (files, ranges, each range naming a listed file) and formats
// to a line that parses back to the same entry.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "models/content_hash.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  auto entry = memd::parse_hash_cache_line(line);
  if (!entry) {
    if (entry.error().code != memd::ErrorCode::invalid_argument) std::abort();
    if (entry.error().message.size() > 256) std::abort();
    return 0;
  }
  if (entry->key.files.size() > memd::kMaxHashCacheFiles) std::abort();
  if (entry->key.ranges.size() > memd::kMaxHashCacheRanges) std::abort();
  for (const auto& r : entry->key.ranges)
    if (r.file >= entry->key.files.size()) std::abort();
  for (const auto& f : entry->key.files)
    if (f.path.empty() || f.path.find('\0') != std::string::npos) std::abort();
  auto again = memd::parse_hash_cache_line(memd::format_hash_cache_line(*entry));
  if (!again || *again != *entry) std::abort();
  return 0;
}
