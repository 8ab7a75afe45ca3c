// backends/shareable_table.hpp — the live shareable segments of one backend.
//
// Purpose: what SegmentTable is for allocate()/free(), this is for
// allocate_shareable()/free_shareable()/export_fd(): each live
// ShareableSegment under its handle with the backend's own payload (the memfd,
// the CUDA physical handle), and the bytes held on `cpu`. Both backends refuse
// an unknown or freed segment with the same not_found message.
//
// export_fd() must not dup a descriptor that a concurrent free closes (its
// number may already belong to another file by then), so with() runs the
// export under the table's lock: a free waits for it, and an export after the
// free finds nothing.
//
// Thread safety: all methods are thread-safe; an internal mutex guards the
// table. No method calls out while holding it except with(), whose function
// must be short (one syscall or driver call) and take no lock of the backend's;
// callers may hold any of their own locks when calling in.
#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backends/backend.hpp"

namespace memd {

template <typename Payload>
class ShareableTable {
 public:
  struct Entry {
    ShareableSegment shareable;
    Payload payload;
  };

  // Records a live shareable segment under shareable.segment.handle; a cpu
  // segment's size counts towards cpu_bytes().
  void add(const ShareableSegment& shareable, Payload payload) {
    std::lock_guard lock(mutex_);
    if (shareable.segment.device.kind() == DeviceKind::Cpu) cpu_bytes_ += shareable.segment.size;
    entries_.emplace(shareable.segment.handle, Entry{shareable, std::move(payload)});
  }

  // Removes and returns the entry `shareable` names (same handle, pointer and
  // device); not_found when there is none.
  Result<Entry> remove(const ShareableSegment& shareable) {
    std::lock_guard lock(mutex_);
    auto it = find(shareable);
    if (it == entries_.end()) return missing(shareable);
    Entry found = std::move(it->second);
    entries_.erase(it);
    if (found.shareable.segment.device.kind() == DeviceKind::Cpu)
      cpu_bytes_ -= std::min(cpu_bytes_, found.shareable.segment.size);
    return found;
  }

  // f(const Entry&) under the table's lock, its result passed on; not_found
  // when `shareable` names no live entry.
  template <typename F>
  auto with(const ShareableSegment& shareable, F&& f) -> decltype(f(std::declval<const Entry&>())) {
    std::lock_guard lock(mutex_);
    auto it = find(shareable);
    if (it == entries_.end()) return missing(shareable);
    return f(std::as_const(it->second));
  }

  // Bytes held in live shareable segments on `cpu`.
  std::uint64_t cpu_bytes() const {
    std::lock_guard lock(mutex_);
    return cpu_bytes_;
  }

  // Empties the table and returns what it held, for a backend's destructor.
  std::vector<Entry> take_all() {
    std::lock_guard lock(mutex_);
    std::vector<Entry> out;
    out.reserve(entries_.size());
    for (auto& [handle, entry] : entries_) out.push_back(std::move(entry));
    entries_.clear();
    cpu_bytes_ = 0;
    return out;
  }

 private:
  using Map = std::unordered_map<std::uint64_t, Entry>;

  typename Map::iterator find(const ShareableSegment& shareable) {
    auto it = entries_.find(shareable.segment.handle);
    if (it == entries_.end() || it->second.shareable.segment.ptr != shareable.segment.ptr ||
        it->second.shareable.segment.device != shareable.segment.device)
      return entries_.end();
    return it;
  }
  static std::unexpected<Error> missing(const ShareableSegment& shareable) {
    return fail(ErrorCode::not_found, "no shareable segment {} on {}", shareable.segment.ptr,
                shareable.segment.device.to_string());
  }

  mutable std::mutex mutex_;
  Map entries_;
  std::uint64_t cpu_bytes_ = 0;
};

}  // namespace memd
