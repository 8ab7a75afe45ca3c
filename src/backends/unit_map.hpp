// backends/unit_map.hpp — the mapping units of one reserved range.
//
// Both backends keep the same book of what map() created: the units of each
// map() call (Backend::for_each_map_unit), [offset, offset + bytes), with backend payload (the CUDA physical
// handle; nothing on host). map() may only create a unit over pages no unit
// covers; unmap() may only remove a run that is exactly a union of whole,
// adjacent units. Checking both in one place keeps the error codes and
// messages of the two backends identical, which the conformance suite relies
// on, and lets the host backend catch allocator bugs that would break on CUDA
// (where cuMemUnmap cannot cut through a cuMemMap).
//
// Thread safety: none; the owning range's mutex guards it.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <utility>
#include <vector>

#include "memd/error.hpp"

namespace memd {

template <typename Payload>
class UnitMap {
 public:
  struct Unit {
    std::uint64_t bytes = 0;
    Payload payload{};
  };
  using Units = std::map<std::uint64_t, Unit>;  // offset -> unit

  // conflict when [offset, offset + bytes) overlaps any unit. base only
  // names the range in the message.
  Result<void> check_unmapped(std::uint64_t offset, std::uint64_t bytes, std::uintptr_t base) const {
    auto it = units_.lower_bound(offset);
    if (it != units_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second.bytes > offset)
        return overlap(prev->first, prev->second.bytes, offset, bytes, base);
    }
    if (it != units_.end() && it->first < offset + bytes)
      return overlap(it->first, it->second.bytes, offset, bytes, base);
    return {};
  }

  void insert(std::uint64_t offset, std::uint64_t bytes, Payload payload) {
    units_.emplace(offset, Unit{bytes, std::move(payload)});
    mapped_bytes_ += bytes;
  }

  // The units that exactly tile [offset, offset + bytes), in address order;
  // conflict when the run cuts through a unit or covers an unmapped page.
  Result<std::vector<std::pair<std::uint64_t, Unit>>> tiling(std::uint64_t offset,
                                                            std::uint64_t bytes,
                                                            std::uintptr_t base) const {
    const auto end = offset + bytes;
    std::vector<std::pair<std::uint64_t, Unit>> out;
    auto it = units_.lower_bound(offset);
    if (it == units_.end() || it->first != offset) {
      if (it != units_.begin()) {
        auto prev = std::prev(it);
        if (prev->first + prev->second.bytes > offset)
          return fail(ErrorCode::conflict,
                      "unmap of [{}, +{}) in range {:#x} cuts through the unit mapped at [{}, +{}): "
                      "only whole units can be unmapped",
                      offset, bytes, base, prev->first, prev->second.bytes);
      }
      return fail(ErrorCode::conflict, "page at offset {} of range {:#x} is not mapped", offset,
                  base);
    }
    auto at = offset;
    while (at < end) {
      if (it == units_.end() || it->first != at)
        return fail(ErrorCode::conflict, "page at offset {} of range {:#x} is not mapped", at,
                    base);
      if (it->first + it->second.bytes > end)
        return fail(ErrorCode::conflict,
                    "unmap of [{}, +{}) in range {:#x} cuts through the unit mapped at [{}, +{}): "
                    "only whole units can be unmapped",
                    offset, bytes, base, it->first, it->second.bytes);
      out.emplace_back(it->first, it->second);
      at += it->second.bytes;
      ++it;
    }
    return out;
  }

  // Removes the units tiling() returned for the same run.
  void erase(std::uint64_t offset, std::uint64_t bytes) {
    auto first = units_.lower_bound(offset);
    auto last = units_.lower_bound(offset + bytes);
    for (auto it = first; it != last; ++it) mapped_bytes_ -= it->second.bytes;
    units_.erase(first, last);
  }

  void clear() {
    units_.clear();
    mapped_bytes_ = 0;
  }

  const Units& units() const noexcept { return units_; }
  std::uint64_t mapped_bytes() const noexcept { return mapped_bytes_; }

 private:
  static std::unexpected<Error> overlap(std::uint64_t unit_offset, std::uint64_t unit_bytes,
                                        std::uint64_t offset, std::uint64_t bytes,
                                        std::uintptr_t base) {
    const auto page = unit_offset > offset ? unit_offset : offset;
    return fail(ErrorCode::conflict,
                "page at offset {} of range {:#x} is already mapped (unit [{}, +{})); map of "
                "[{}, +{}) refused",
                page, base, unit_offset, unit_bytes, offset, bytes);
  }

  Units units_;
  std::uint64_t mapped_bytes_ = 0;
};

}  // namespace memd
