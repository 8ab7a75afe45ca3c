// backends/segment_table.hpp — the live segments of one backend.
//
// Purpose: both backends keep the same book of what allocate() handed out:
// each live Segment under its handle, and the bytes held in segments on `cpu`
// (what physical_bytes(cpu) reports). free() must find a segment by handle and
// refuse one whose pointer or device does not match with the same not_found
// error on every backend, which the conformance suite relies on. Keeping that
// book in one place keeps the lookup, the message and the cpu accounting
// identical; the backends keep what differs (how memory is obtained and given
// back, and any per-device accounting).
//
// Handles are not made here: the caller passes one from its own counter, so a
// backend's ranges, segments, streams and events keep sharing one handle space.
//
// Thread safety: all methods are thread-safe; an internal mutex guards the
// table and the cpu byte counter. It is a leaf lock: no method calls out while
// holding it, so callers may hold any of their own locks when calling in.
#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "backends/backend.hpp"

namespace memd {

class SegmentTable {
 public:
  // Records a live segment under segment.handle; a cpu segment's size counts
  // towards cpu_bytes().
  void add(const Segment& segment) {
    std::lock_guard lock(mutex_);
    if (segment.device.kind() == DeviceKind::Cpu) cpu_bytes_ += segment.size;
    segments_.emplace(segment.handle, segment);
  }

  // Removes and returns the recorded segment that `segment` names (same
  // handle, pointer and device); not_found when there is none.
  Result<Segment> remove(const Segment& segment) {
    std::lock_guard lock(mutex_);
    auto it = segments_.find(segment.handle);
    if (it == segments_.end() || it->second.ptr != segment.ptr ||
        it->second.device != segment.device)
      return fail(ErrorCode::not_found, "no segment {} on {}", segment.ptr,
                  segment.device.to_string());
    const Segment found = it->second;
    segments_.erase(it);
    if (found.device.kind() == DeviceKind::Cpu) cpu_bytes_ -= std::min(cpu_bytes_, found.size);
    return found;
  }

  // Bytes held in live segments on `cpu`.
  std::uint64_t cpu_bytes() const {
    std::lock_guard lock(mutex_);
    return cpu_bytes_;
  }

  // Empties the table and returns what it held, for a backend's destructor.
  std::vector<Segment> take_all() {
    std::lock_guard lock(mutex_);
    std::vector<Segment> out;
    out.reserve(segments_.size());
    for (auto& [handle, segment] : segments_) out.push_back(segment);
    segments_.clear();
    cpu_bytes_ = 0;
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, Segment> segments_;
  std::uint64_t cpu_bytes_ = 0;
};

}  // namespace memd
