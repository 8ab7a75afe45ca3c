// models/content_hash.hpp — the content hash of a model component, the cache
// that spares a second load from rehashing, and the byte-for-byte check that
// confirms a hash hit.
//
// Identical components (an SDXL VAE or text encoder shared by two fine-tunes)
// are stored once per device (issue 15, item 6). Whether two components are
// identical is decided by an XXH3-128 hash of the component's bytes and, on a
// hit, by comparing the bytes themselves: XXH3 is not a cryptographic hash and
// the files come from users, so a crafted collision must not make one model
// run with another's weights.
//
// What is hashed: a component is a list of HashRanges over a list of open
// ModelFiles; the hash covers the bytes of the ranges in the order given,
// concatenated with no padding and nothing else (no names, no lengths). So
// the same tensor bytes hash the same whether they sit in one file or two,
// at any offset, split into ranges any way — the caller decides what a
// component's bytes are and must list them in a canonical order (by tensor
// name, say) for two layouts of one component to match.
//
// The cache is keyed by what was read: each file's path and identity as seen
// at open (device, inode, size, modification time) and the ranges. A file
// rewritten or replaced gets a new identity and so misses; a rewrite that
// keeps size and modification time (to the filesystem's clock resolution)
// in place is not seen — that is the price of not rereading, and why a hit
// between two components is still confirmed byte for byte. With a state
// directory the cache is kept in a JSON-lines file, one entry a line:
//   {"v":1,"hash":"<32 hex>","files":[{"path":"/m/a.safetensors","dev":2049,
//    "ino":131,"size":1000,"mtimeNs":1700000000123456789}],"ranges":[[0,8,992]]}
// saved atomically (state/atomic_file.hpp: temporary file, fsync, rename,
// fsync of the directory); a corrupt or cut-off file costs only its bad lines.
//
// Thread safety: ContentHash, HashRange and the free functions are values /
// reentrant; ContentHashCache is safe to share between threads (one mutex;
// the hashing itself runs outside it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "memd/error.hpp"
#include "models/model_file.hpp"

namespace memd {

struct ContentHash {
  std::uint64_t high = 0;
  std::uint64_t low = 0;

  // 32 lowercase hex digits, high half first (XXH128's canonical form).
  std::string to_string() const;
  // Exactly 32 hex digits, either case; invalid_argument otherwise.
  static Result<ContentHash> parse(std::string_view text);
  bool operator==(const ContentHash&) const = default;
};

// `bytes` bytes at `offset` of files[file].
struct HashRange {
  std::size_t file = 0;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
  bool operator==(const HashRange&) const = default;
};

// What a cached hash was computed from.
struct HashCacheKey {
  struct File {
    std::string path;
    FileIdentity identity;
    bool operator==(const File&) const = default;
  };
  std::vector<File> files;
  std::vector<HashRange> ranges;
  bool operator==(const HashCacheKey&) const = default;
};

struct HashCacheEntry {
  HashCacheKey key;
  ContentHash hash;
  bool operator==(const HashCacheEntry&) const = default;
};

// The key for `ranges` over `files` (their paths and identities at open).
HashCacheKey make_hash_cache_key(std::span<const ModelFile* const> files, std::span<const HashRange> ranges);

// Bounds on one persisted line, so a hostile or corrupt cache file cannot
// make load() allocate without limit.
inline constexpr std::size_t kMaxHashCacheLineBytes = 1 << 20;
inline constexpr std::size_t kMaxHashCacheFiles = 256;
inline constexpr std::size_t kMaxHashCacheRanges = 16384;
inline constexpr std::string_view kHashCacheFileName = "content_hashes.jsonl";

// One persisted line (without its newline) and back. parse refuses, with
// invalid_argument, anything but a well-formed version-1 entry within the
// bounds above; format's output always parses back to the same entry.
Result<HashCacheEntry> parse_hash_cache_line(std::string_view line);
std::string format_hash_cache_line(const HashCacheEntry& entry);

struct HashCacheLoadReport {
  std::size_t loaded = 0;
  std::size_t skipped = 0;  // lines that were corrupt, over-long or of another version
};

class ContentHashCache {
 public:
  static constexpr std::size_t kDefaultCapacity = 4096;

  // Holds at most `capacity` entries (at least 1); the least recently used
  // goes first.
  explicit ContentHashCache(std::size_t capacity = kDefaultCapacity);

  std::optional<ContentHash> lookup(const HashCacheKey& key);
  void store(const HashCacheKey& key, const ContentHash& hash);

  std::size_t size() const;
  std::size_t capacity() const noexcept { return capacity_; }
  std::uint64_t hits() const;
  std::uint64_t misses() const;

  // Adds the entries of a file written by save() (least recently used
  // first, so recency survives a restart). A missing file is an empty cache,
  // not an error; bad lines are skipped and counted.
  Result<HashCacheLoadReport> load(const std::filesystem::path& path);
  // Writes every entry, least recently used first, to `path` atomically.
  Result<void> save(const std::filesystem::path& path) const;

 private:
  struct KeyHash {
    std::size_t operator()(const HashCacheKey& key) const noexcept;
  };
  using Order = std::list<HashCacheEntry>;  // most recently used at the back

  const std::size_t capacity_;
  mutable std::mutex mutex_;
  Order order_;
  std::unordered_map<HashCacheKey, Order::iterator, KeyHash> index_;
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
};

// The XXH3-128 hash of the bytes of `ranges` (rules above). With a cache, a
// key it holds is answered without reading; a computed hash is stored. Each
// file's identity now (fstat) must still be its identity at open — after
// reading, and on a cache hit too — or the answer is invalid_file and nothing
// is cached: no hash is given for bytes that may have changed. invalid_argument
// for a range outside its file or naming a file not in the list.
Result<ContentHash> hash_component(std::span<const ModelFile* const> files, std::span<const HashRange> ranges,
                                   ContentHashCache* cache = nullptr);

// Whether the two lists cover the same bytes, compared in chunks and stopping
// at the first difference (lengths that differ are answered without reading).
Result<bool> same_bytes(std::span<const ModelFile* const> files_a, std::span<const HashRange> ranges_a,
                        std::span<const ModelFile* const> files_b, std::span<const HashRange> ranges_b);

}  // namespace memd
