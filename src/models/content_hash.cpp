// models/content_hash.cpp — see content_hash.hpp.
#include "models/content_hash.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <memory>

#include <nlohmann/json.hpp>

#include "state/atomic_file.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;

// Large enough that a read is a few large preads, small enough that hashing
// several components at once stays modest next to the staging buffers.
constexpr std::size_t kHashChunk = std::size_t{8} << 20;
constexpr std::size_t kCompareChunk = std::size_t{4} << 20;

// Every range names a file in the list and lies inside the size that file
// had at open; returns the total byte count.
Result<std::uint64_t> total_bytes(std::span<const ModelFile* const> files, std::span<const HashRange> ranges) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const auto& r = ranges[i];
    if (r.file >= files.size() || files[r.file] == nullptr)
      return fail(ErrorCode::invalid_argument, "hash range {} names file {} of {}", i, r.file, files.size());
    const std::uint64_t size = files[r.file]->size();
    if (r.offset > size || r.bytes > size - r.offset)
      return fail(ErrorCode::invalid_argument, "hash range {} ({} bytes at {}) is outside {} ({} bytes)", i, r.bytes,
                  r.offset, files[r.file]->path().string(), size);
    if (total + r.bytes < total) return fail(ErrorCode::invalid_argument, "hash ranges add up past 2^64 bytes");
    total += r.bytes;
  }
  return total;
}

// Reads the concatenation of a range list front to back.
class RangeReader {
 public:
  RangeReader(std::span<const ModelFile* const> files, std::span<const HashRange> ranges)
      : files_(files), ranges_(ranges) {}

  // Fills `out` as far as the ranges go; the count is short only at the end.
  Result<std::size_t> read(std::span<std::byte> out) {
    std::size_t done = 0;
    while (done < out.size() && index_ < ranges_.size()) {
      const auto& r = ranges_[index_];
      if (pos_ == r.bytes) {
        ++index_;
        pos_ = 0;
        continue;
      }
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(r.bytes - pos_, out.size() - done));
      if (auto ok = files_[r.file]->read_at(r.offset + pos_, out.subspan(done, n)); !ok) return fail(ok.error());
      done += n;
      pos_ += n;
    }
    return done;
  }

 private:
  std::span<const ModelFile* const> files_;
  std::span<const HashRange> ranges_;
  std::size_t index_ = 0;
  std::uint64_t pos_ = 0;
};

// A file read from must still be what was opened: otherwise the bytes read
// may mix two versions and the hash names neither.
Result<void> check_unchanged(std::span<const ModelFile* const> files, std::span<const HashRange> ranges) {
  std::vector<bool> checked(files.size(), false);
  for (const auto& r : ranges) {
    if (checked[r.file]) continue;
    checked[r.file] = true;
    const ModelFile& f = *files[r.file];
    auto now = f.current_identity();
    if (!now) return fail(now.error());
    if (*now != f.identity())
      return fail(ErrorCode::invalid_file, "model file {} changed since it was opened", f.path().string());
  }
  return {};
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// An unsigned JSON integer (nlohmann keeps non-negative integers unsigned).
std::optional<std::uint64_t> as_u64(const nlohmann::json& j) {
  if (!j.is_number_unsigned()) return std::nullopt;
  return j.get<std::uint64_t>();
}

std::optional<std::int64_t> as_i64(const nlohmann::json& j) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }
  if (j.is_number_integer()) return j.get<std::int64_t>();
  return std::nullopt;
}

}  // namespace

// --- ContentHash ------------------------------------------------------------

std::string ContentHash::to_string() const { return fmt::format("{:016x}{:016x}", high, low); }

Result<ContentHash> ContentHash::parse(std::string_view text) {
  if (text.size() != 32 || !std::all_of(text.begin(), text.end(), is_hex))
    return fail(ErrorCode::invalid_argument, "a content hash is 32 hex digits");
  ContentHash h;
  std::from_chars(text.data(), text.data() + 16, h.high, 16);
  std::from_chars(text.data() + 16, text.data() + 32, h.low, 16);
  return h;
}

HashCacheKey make_hash_cache_key(std::span<const ModelFile* const> files, std::span<const HashRange> ranges) {
  HashCacheKey key;
  key.files.reserve(files.size());
  for (const ModelFile* f : files) {
    if (f == nullptr)
      key.files.push_back({});
    else
      key.files.push_back({f->path().string(), f->identity()});
  }
  key.ranges.assign(ranges.begin(), ranges.end());
  return key;
}

// --- persisted lines ----------------------------------------------------------

Result<HashCacheEntry> parse_hash_cache_line(std::string_view line) {
  if (line.size() > kMaxHashCacheLineBytes)
    return fail(ErrorCode::invalid_argument, "hash cache line of {} bytes is over the limit of {}", line.size(),
                kMaxHashCacheLineBytes);
  // No exceptions: a bad line is a value, and nlohmann's parser keeps its own
  // stack (no recursion), so nesting within the line cap is harmless.
  const auto j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail(ErrorCode::invalid_argument, "hash cache line is not a JSON object");
  const auto v = j.find("v");
  if (v == j.end() || as_u64(*v) != std::optional<std::uint64_t>(1))
    return fail(ErrorCode::invalid_argument, "hash cache line is not version 1");

  HashCacheEntry entry;
  const auto hash = j.find("hash");
  if (hash == j.end() || !hash->is_string()) return fail(ErrorCode::invalid_argument, "hash cache line has no hash");
  auto parsed = ContentHash::parse(hash->get_ref<const std::string&>());
  if (!parsed) return fail(parsed.error());
  entry.hash = *parsed;

  const auto files = j.find("files");
  if (files == j.end() || !files->is_array() || files->size() > kMaxHashCacheFiles)
    return fail(ErrorCode::invalid_argument, "hash cache line needs a files array of at most {}", kMaxHashCacheFiles);
  for (const auto& f : *files) {
    if (!f.is_object()) return fail(ErrorCode::invalid_argument, "hash cache file is not an object");
    const auto path = f.find("path");
    if (path == f.end() || !path->is_string())
      return fail(ErrorCode::invalid_argument, "hash cache file has no path");
    const auto& p = path->get_ref<const std::string&>();
    if (p.empty() || p.size() > 4096 || p.find('\0') != std::string::npos)
      return fail(ErrorCode::invalid_argument, "hash cache file path is empty, over-long or has a NUL byte");
    HashCacheKey::File file{p, {}};
    const auto dev = f.find("dev"), ino = f.find("ino"), size = f.find("size"), mtime = f.find("mtimeNs");
    std::optional<std::uint64_t> d, i, s;
    std::optional<std::int64_t> m;
    if (dev != f.end()) d = as_u64(*dev);
    if (ino != f.end()) i = as_u64(*ino);
    if (size != f.end()) s = as_u64(*size);
    if (mtime != f.end()) m = as_i64(*mtime);
    if (!d || !i || !s || !m)
      return fail(ErrorCode::invalid_argument, "hash cache file needs dev, ino, size and mtimeNs integers");
    file.identity = {*d, *i, *s, *m};
    entry.key.files.push_back(std::move(file));
  }

  const auto ranges = j.find("ranges");
  if (ranges == j.end() || !ranges->is_array() || ranges->size() > kMaxHashCacheRanges)
    return fail(ErrorCode::invalid_argument, "hash cache line needs a ranges array of at most {}", kMaxHashCacheRanges);
  for (const auto& r : *ranges) {
    if (!r.is_array() || r.size() != 3)
      return fail(ErrorCode::invalid_argument, "hash cache range is not [file, offset, bytes]");
    const auto file = as_u64(r[0]), offset = as_u64(r[1]), bytes = as_u64(r[2]);
    if (!file || !offset || !bytes || *file >= entry.key.files.size())
      return fail(ErrorCode::invalid_argument, "hash cache range is not [file, offset, bytes] of a listed file");
    entry.key.ranges.push_back({static_cast<std::size_t>(*file), *offset, *bytes});
  }
  return entry;
}

std::string format_hash_cache_line(const HashCacheEntry& entry) {
  // Insertion order, so the file reads like the header's example.
  nlohmann::ordered_json j;
  j["v"] = 1;
  j["hash"] = entry.hash.to_string();
  auto files = nlohmann::ordered_json::array();
  for (const auto& f : entry.key.files)
    files.push_back({{"path", f.path},
                     {"dev", f.identity.device},
                     {"ino", f.identity.inode},
                     {"size", f.identity.size},
                     {"mtimeNs", f.identity.mtime_ns}});
  j["files"] = std::move(files);
  auto ranges = nlohmann::ordered_json::array();
  for (const auto& r : entry.key.ranges) ranges.push_back({r.file, r.offset, r.bytes});
  j["ranges"] = std::move(ranges);
  // A path that is not UTF-8 is written with replacement characters rather
  // than throwing; save() leaves such an entry out (it would not parse back).
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// --- ContentHashCache -------------------------------------------------------

ContentHashCache::ContentHashCache(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

std::size_t ContentHashCache::KeyHash::operator()(const HashCacheKey& key) const noexcept {
  std::string bytes;
  for (const auto& f : key.files) {
    bytes += f.path;
    bytes.push_back('\0');
    bytes.append(reinterpret_cast<const char*>(&f.identity.device), sizeof f.identity.device);
    bytes.append(reinterpret_cast<const char*>(&f.identity.inode), sizeof f.identity.inode);
    bytes.append(reinterpret_cast<const char*>(&f.identity.size), sizeof f.identity.size);
    bytes.append(reinterpret_cast<const char*>(&f.identity.mtime_ns), sizeof f.identity.mtime_ns);
  }
  for (const auto& r : key.ranges) {
    const std::uint64_t words[3] = {r.file, r.offset, r.bytes};
    bytes.append(reinterpret_cast<const char*>(words), sizeof words);
  }
  return static_cast<std::size_t>(XXH3_64bits(bytes.data(), bytes.size()));
}

std::optional<ContentHash> ContentHashCache::lookup(const HashCacheKey& key) {
  std::lock_guard lock(mutex_);
  const auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  order_.splice(order_.end(), order_, it->second);
  return it->second->hash;
}

void ContentHashCache::store(const HashCacheKey& key, const ContentHash& hash) {
  std::lock_guard lock(mutex_);
  if (const auto it = index_.find(key); it != index_.end()) {
    it->second->hash = hash;
    order_.splice(order_.end(), order_, it->second);
    return;
  }
  order_.push_back({key, hash});
  index_.emplace(key, std::prev(order_.end()));
  while (order_.size() > capacity_) {
    index_.erase(order_.front().key);
    order_.pop_front();
  }
}

std::size_t ContentHashCache::size() const {
  std::lock_guard lock(mutex_);
  return order_.size();
}

std::uint64_t ContentHashCache::hits() const {
  std::lock_guard lock(mutex_);
  return hits_;
}

std::uint64_t ContentHashCache::misses() const {
  std::lock_guard lock(mutex_);
  return misses_;
}

Result<HashCacheLoadReport> ContentHashCache::load(const fs::path& path) {
  HashCacheLoadReport report;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return report;  // first start: nothing cached yet
    return fail(errno == EACCES ? ErrorCode::permission_denied : ErrorCode::backend_error, "open {}: {}",
                path.string(), std::strerror(errno));
  }
  const std::unique_ptr<int, void (*)(int*)> closer(new int(fd), [](int* p) {
    ::close(*p);
    delete p;
  });

  // Lines are gathered up to the cap and no further: an over-long line is
  // dropped as it streams past, so memory stays bounded whatever the file.
  std::string line;
  bool overlong = false;
  auto finish_line = [&] {
    if (overlong) {
      ++report.skipped;
    } else if (!line.empty()) {
      if (auto entry = parse_hash_cache_line(line)) {
        store(entry->key, entry->hash);
        ++report.loaded;
      } else {
        ++report.skipped;
      }
    }
    line.clear();
    overlong = false;
  };
  std::vector<char> buf(64 * 1024);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::backend_error, "read {}: {}", path.string(), std::strerror(errno));
    }
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<std::size_t>(n));
    while (!chunk.empty()) {
      const auto nl = chunk.find('\n');
      const auto part = chunk.substr(0, nl);
      if (!overlong) {
        if (line.size() + part.size() > kMaxHashCacheLineBytes) {
          overlong = true;
          line.clear();
          line.shrink_to_fit();
        } else {
          line.append(part);
        }
      }
      if (nl == std::string_view::npos) break;
      finish_line();
      chunk.remove_prefix(nl + 1);
    }
  }
  finish_line();  // a last line without its newline (a cut-off copy)
  return report;
}

Result<void> ContentHashCache::save(const fs::path& path) const {
  std::vector<HashCacheEntry> entries;
  {
    std::lock_guard lock(mutex_);
    entries.assign(order_.begin(), order_.end());
  }
  std::string text;
  for (const auto& e : entries) {
    auto line = format_hash_cache_line(e);
    // Only what load() will take back (a path that is not UTF-8, say, is not).
    auto back = parse_hash_cache_line(line);
    if (!back || *back != e) continue;
    text += line;
    text.push_back('\n');
  }

  // Temporary, fsync, rename, fsync of the directory (state/atomic_file.hpp):
  // a crash leaves the old cache or the new one.
  return write_file_atomically(path, text);
}

// --- hashing and comparing ------------------------------------------------------

Result<ContentHash> hash_component(std::span<const ModelFile* const> files, std::span<const HashRange> ranges,
                                   ContentHashCache* cache) {
  auto total = total_bytes(files, ranges);
  if (!total) return fail(total.error());
  HashCacheKey key;
  if (cache != nullptr) {
    key = make_hash_cache_key(files, ranges);
    if (auto hit = cache->lookup(key)) {
      // The same rule as after a read: no hash for a file that changed since open.
      if (auto ok = check_unchanged(files, ranges); !ok) return fail(ok.error());
      return *hit;
    }
  }

  const std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(), &XXH3_freeState);
  if (!state || XXH3_128bits_reset(state.get()) != XXH_OK)
    return fail(ErrorCode::internal, "cannot start an XXH3 hash");
  std::vector<std::byte> buf(static_cast<std::size_t>(std::min<std::uint64_t>(*total, kHashChunk)));
  RangeReader reader(files, ranges);
  for (;;) {
    auto n = reader.read(buf);
    if (!n) return fail(n.error());
    if (*n == 0) break;
    (void)XXH3_128bits_update(state.get(), buf.data(), *n);
  }
  const XXH128_hash_t digest = XXH3_128bits_digest(state.get());
  if (auto ok = check_unchanged(files, ranges); !ok) return fail(ok.error());
  const ContentHash hash{digest.high64, digest.low64};
  if (cache != nullptr) cache->store(key, hash);
  return hash;
}

Result<bool> same_bytes(std::span<const ModelFile* const> files_a, std::span<const HashRange> ranges_a,
                        std::span<const ModelFile* const> files_b, std::span<const HashRange> ranges_b) {
  auto total_a = total_bytes(files_a, ranges_a);
  if (!total_a) return fail(total_a.error());
  auto total_b = total_bytes(files_b, ranges_b);
  if (!total_b) return fail(total_b.error());
  if (*total_a != *total_b) return false;
  const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(*total_a, kCompareChunk));
  std::vector<std::byte> a(chunk), b(chunk);
  RangeReader ra(files_a, ranges_a), rb(files_b, ranges_b);
  for (;;) {
    auto na = ra.read(a);
    if (!na) return fail(na.error());
    auto nb = rb.read(b);
    if (!nb) return fail(nb.error());
    // Equal totals and reads that fill to the end keep the two in step.
    if (*na != *nb) return fail(ErrorCode::internal, "same_bytes: readers out of step ({} and {})", *na, *nb);
    if (*na == 0) return true;
    if (std::memcmp(a.data(), b.data(), *na) != 0) return false;
  }
}

}  // namespace memd
