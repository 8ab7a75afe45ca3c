// models/model_roots.hpp — the directories model files may be loaded from,
// and the one check every model path goes through.
//
// A load names a path; memd reads it with the daemon's own rights, so without
// confinement any client could make memd read /etc/shadow into a buffer it
// can export. The rules (issue 15, item 9):
//
//   - model loading is off unless roots were given (--model-root DIR, more
//     than once for several); the refusal says how to turn it on;
//   - a relative path is tried under each root in the order given; an
//     absolute one must lie inside a root as written (canonical or as
//     configured: ./models may be a link to a bigger disk);
//   - no `..` component at all, even one that would stay inside: a path is
//     judged by what it names, not by arithmetic on components;
//   - symbolic links are followed, and the canonical result (every link
//     resolved) must still lie inside a root — any root, since all of them
//     are allowed; a link out (file or directory) is refused;
//   - the final target must be a regular file or a directory (a model
//     folder): FIFOs, sockets and devices are refused, so /dev/zero cannot be
//     "loaded" as an endless model and a FIFO cannot hang a reader;
//   - malformed requests (empty, a NUL byte, over kMaxPathBytes) are
//     invalid_argument; refusals are permission_denied; a path that is
//     allowed but absent is not_found. An absolute path outside every root is
//     refused before the filesystem is asked, so the answer does not reveal
//     whether something exists there.
//
// What resolve() returns is canonical (no links left), so the later open with
// O_NOFOLLOW succeeds on it. Between the check and the open a writer of the
// root could still swap a directory component for a link out; open_file()
// closes that window by asking the kernel where the opened descriptor
// really is (/proc/self/fd) and refusing it when that is outside the roots.
// What remains: a hard link inside a root to a file outside it looks like any
// other file (fs.protected_hardlinks stops a user making one to a file they
// cannot read), and without /proc the after-open check falls back to
// comparing the descriptor's identity with a fresh stat of the path, which a
// swap-and-swap-back can pass. Whoever can write a root decides what memd
// loads from it anyway; the rules stop a client reaching outside the roots.
//
// Thread safety: immutable after create(); every method is const and may be
// called from any number of threads.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string_view>
#include <vector>

#include "memd/error.hpp"
#include "models/model_file.hpp"

namespace memd {

class ModelRoots {
 public:
  // PATH_MAX: a longer request cannot name a file anyway.
  static constexpr std::size_t kMaxPathBytes = 4096;

  // Each root must exist and be a directory (after following links); it is
  // kept canonical. An empty list is allowed and gives the same object as
  // the default constructor: loading off.
  static Result<ModelRoots> create(std::vector<std::filesystem::path> roots);

  // No roots: every load is refused with the message that says how to set one.
  ModelRoots() = default;

  bool enabled() const noexcept { return !roots_.empty(); }
  // Canonical, in the order given.
  const std::vector<std::filesystem::path>& roots() const noexcept { return roots_; }

  // The canonical path a load's `requested` path names: a regular file or a
  // directory inside a root (rules above).
  Result<std::filesystem::path> resolve(std::string_view requested) const;

  // Re-checks a path found inside a model folder (a shard named by an index,
  // a diffusers subfolder's file): absolute, no `..`, canonical form inside a
  // root, a regular file. Returns the canonical path, which is the one to
  // open (a link that stays inside is allowed and resolved here).
  Result<std::filesystem::path> check_file(const std::filesystem::path& path) const;

  // check_file(), then ModelFile::open() on the canonical path, then the
  // after-open check described above. The one way the model manager opens a
  // model file.
  Result<ModelFile> open_file(const std::filesystem::path& path) const;

  // The after-open check on its own: whether an open file lies inside the
  // roots, judged by where the kernel says its descriptor is (or, without
  // /proc, by its identity matching a fresh stat of its path).
  Result<void> check_opened(const ModelFile& file) const;

 private:
  ModelRoots(std::vector<std::filesystem::path> roots, std::vector<std::filesystem::path> spelled)
      : roots_(std::move(roots)), spelled_(std::move(spelled)) {}

  // The refusal when no root is set.
  static Error loading_off();
  // Whether `canonical` is a root or lies inside one.
  bool inside_a_root(const std::filesystem::path& canonical) const;
  // The lexical test for an absolute request: inside a root as canonical or
  // as configured (./models may be a link to a bigger disk).
  bool written_inside_a_root(const std::filesystem::path& normal) const;
  // Canonicalises an absolute, `..`-free path and applies the link and type
  // rules; `shown` is what the messages call it.
  Result<std::filesystem::path> confine(const std::filesystem::path& path, std::string_view shown,
                                        bool regular_only) const;

  std::vector<std::filesystem::path> roots_;
  std::vector<std::filesystem::path> spelled_;  // absolute, lexically normal, as configured
};

}  // namespace memd
