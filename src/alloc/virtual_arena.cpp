// The on-demand mapped arena; see virtual_arena.hpp.
#include "alloc/virtual_arena.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

#include "alloc/footprint.hpp"
#include "alloc/retention.hpp"
#include "core/placement.hpp"

namespace memd {

using retention::round_up;

Result<VirtualRange> VirtualArena::reserve(Backend& backend, const PoolOptions& options) {
  return backend.reserve(options.device, address_space(options));
}

VirtualArena::VirtualArena(Backend& backend, const PoolOptions& options, std::uint64_t page,
                           PoolCounters& counters, VirtualRange range)
    : backend_(backend),
      options_(options),
      page_(page),
      counters_(counters),
      range_(range),
      pages_(range.base, range.size, page) {
  ++counters_.device_calls;  // the reservation
  // A fresh TLSF takes any non-empty region; create() checks it is there.
  (void)tlsf_.add_region(range.base, range.size);
}

VirtualArena::~VirtualArena() { (void)backend_.release(range_); }

// One backend map/unmap call, counted with its time: what the mapping
// policy trades.
template <typename F>
auto VirtualArena::mapping_call(F&& f) {
  ++counters_.device_calls;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = f();
  counters_.mapping_ns += static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  return r;
}

Result<std::uint64_t> VirtualArena::take(std::uint64_t size, std::uint64_t alignment, Footprint& footprint) {
  auto block = tlsf_.allocate(size, alignment);
  if (!block)
    return fail(ErrorCode::out_of_memory, "no free range of {} in the {} address space of {}", format_size(size),
                format_size(range_.size), options_.device.to_string());
  std::vector<PageRun> runs;  // stays empty (no allocation) when all pages are mapped
  const std::uint64_t peak_busy = footprint.state().peak_busy;
  const bool pins = retention::near_trim(footprint.reserved(), peak_busy, footprint.allowed()) &&
                    pages_.free_unit_bytes(block->offset, block->size) != 0;
  pages_.acquire(block->offset, block->size, runs);
  if (runs.empty() && !pins) return block->offset;
  // Slow path: good fit chose pages that are not mapped (or, near a trim,
  // pinned a wholly free unit). Undo it and place the block where the fewest
  // pages need mapping (often none: a mapped hole elsewhere).
  pages_.release(block->offset, block->size);
  (void)tlsf_.free(block->offset);
  block = place_over_mapped(tlsf_, pages_, round_up(size, kUnit), alignment);
  if (!block) return fail(ErrorCode::internal, "placement lost a block that good fit had found");
  runs.clear();
  pages_.acquire(block->offset, block->size, runs);
  if (runs.empty()) return block->offset;
  std::uint64_t need = 0;
  for (const auto& r : runs) need += r.size;
  // Keep the footprint within the budget: give slack back first, with the
  // hysteresis so the next allocations do not trim again. A request that
  // fails leaves the peak where it was (it never became busy).
  const std::uint64_t peak_before = footprint.state().peak_busy;
  footprint.note_busy();
  bool trimmed = false;
  if (const std::uint64_t limit = footprint.allowed(); footprint.reserved() + need > limit) {
    footprint.release_slack(footprint.reserved() + need - limit +
                            retention::trim_hysteresis(footprint.state().peak_busy, page_));
    trimmed = true;
    // Still short: partly used units pin free pages (the layout fragments),
    // so later maps use units half as large (retention::unit_bytes). A steady
    // workload never gets here and keeps its units.
    if (footprint.reserved() + need > limit &&
        retention::unit_bytes(options_, page_, footprint.state()) > retention::fragmented_unit_min(options_, page_))
      ++footprint.state().unit_halvings;
  }
  if (footprint.reserved() + need > options_.capacity) {
    // The capacity bounds physical bytes; the address space is larger.
    pages_.release(block->offset, block->size);
    (void)tlsf_.free(block->offset);
    footprint.state().peak_busy = peak_before;
    return fail(ErrorCode::out_of_memory, "a {} block needs {} mapped on {}, which holds {} of its capacity {}",
                format_size(size), format_size(need), options_.device.to_string(),
                format_size(footprint.reserved()), format_size(options_.capacity));
  }
  if (auto mapped = map_runs(*block, size, runs, trimmed, footprint); !mapped) {
    footprint.state().peak_busy = peak_before;
    return fail(mapped.error());
  }
  return block->offset;
}

Result<void> VirtualArena::map_runs(const TlsfBlock& block, std::uint64_t size, std::vector<PageRun>& runs,
                                    bool trimmed, Footprint& footprint) {
  std::uint64_t need = 0;
  for (const auto& r : runs) need += r.size;
  // The pages mapped ahead start where the block's last run ends and join it
  // in ONE unit: the two were always mapped one after the other, and a unit
  // costs the same whatever its size, so loading a model's small tensors
  // costs half the calls. What is lost is handing back the ahead alone while
  // the block lives.
  const PageRun ahead = trimmed ? PageRun{} : growth_ahead(block, size, runs.back(), need, footprint);
  const std::uint64_t unit = retention::unit_bytes(options_, page_, footprint.state());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    PageRun run = runs[i];
    std::uint64_t run_unit = retention::run_unit(run.size, unit);
    if (ahead.size != 0 && i + 1 == runs.size()) {
      run.size += ahead.size;
      run_unit = 0;
    }
    auto map_run = [&] { return backend_.map(range_, run.offset - range_.base, run.size, run_unit); };
    ++counters_.map_calls;
    auto mapped = mapping_call(map_run);
    if (!mapped && run.size != runs[i].size) {
      // Mapping ahead is optional: ask for the block's own pages alone (not
      // a retry of the same request; out of memory is the ladder's).
      run = runs[i];
      run_unit = retention::run_unit(run.size, unit);
      ++counters_.map_calls;
      mapped = mapping_call(map_run);
    }
    if (!mapped) {
      // Roll back: unmap the runs this call mapped (whole units), forget the block.
      for (std::size_t j = 0; j < i; ++j) {
        ++counters_.unmap_calls;
        (void)mapping_call([&] { return backend_.unmap(range_, runs[j].offset - range_.base, runs[j].size); });
        pages_.for_each_unit(runs[j].offset, runs[j].offset + runs[j].size,
                             [&](std::uint64_t, std::uint64_t) { ++counters_.unmapped_units; });
        pages_.mark_unmapped(runs[j]);
      }
      pages_.release(block.offset, block.size);
      (void)tlsf_.free(block.offset);
      Error e = mapped.error();
      e.message = fmt::format("mapping {} for a {} block on {}: {}", format_size(run.size), format_size(size),
                              options_.device.to_string(), e.message);
      return fail(std::move(e));
    }
    Backend::for_each_map_unit(run.size, run_unit, [&](std::uint64_t at, std::uint64_t n) {
      pages_.mark_mapped({run.offset + at, n});
      ++counters_.mapped_units;
    });
  }
  return {};
}

// Growth (nothing had to be trimmed) of a small block at the end of mapped
// memory: the idle pages after it that the budget leaves room for, to be
// mapped in one unit with the block's last run, so the small blocks that
// follow (a model's tensors, one after another) find their pages mapped.
// Empty when not.
PageRun VirtualArena::growth_ahead(const TlsfBlock& block, std::uint64_t size, const PageRun& last_run,
                                   std::uint64_t need, const Footprint& footprint) const {
  if (!retention::maps_ahead(options_, page_, size)) return {};
  const std::uint64_t block_end = round_up(block.offset + block.size, page_);
  if (last_run.offset + last_run.size != block_end) return {};
  const std::uint64_t used = footprint.reserved() + need;
  if (used >= options_.capacity) return {};
  const std::uint64_t room = std::min(retention::ahead_room(options_, footprint.allowed(), used, footprint.busy()),
                                      options_.capacity - used);
  if (room == 0) return {};
  const std::uint64_t n = pages_.idle_unmapped_pages(block_end, room / page_);
  return n == 0 ? PageRun{} : PageRun{block_end, n * page_};
}

std::optional<std::uint64_t> VirtualArena::give_back(std::uint64_t address) {
  auto freed = tlsf_.free(address);
  if (!freed) return std::nullopt;
  pages_.release(address, freed->size);
  return freed->size;
}

std::optional<std::uint64_t> VirtualArena::release(std::uint64_t address) {
  if (is_kept(address)) return std::nullopt;  // freed already
  std::uint64_t kept = 0;
  if (auto freed = tlsf_.free_below(address, kKeepMin, kept)) {
    pages_.release(address, freed->size);
    return freed->size;
  }
  if (kept == 0) return std::nullopt;
  flush_kept();
  kept_ = {address, kept};
  return kept;
}

std::optional<std::uint64_t> VirtualArena::take_kept(std::uint64_t size) {
  if (kept_.size == 0) return std::nullopt;
  if (size == kept_.size) return std::exchange(kept_, {}).address;
  flush_kept();
  return std::nullopt;
}

void VirtualArena::flush_kept() {
  if (kept_.size == 0) return;
  (void)tlsf_.free(kept_.address);
  pages_.release(kept_.address, kept_.size);
  kept_ = {};
}

std::uint64_t VirtualArena::release_free(std::uint64_t bytes) {
  std::uint64_t released = 0;
  if (bytes == 0 || pages_.free_mapped_bytes() == 0) return 0;
  // Only whole units can go: walk free runs from the top and unmap the units
  // that lie entirely inside them.
  std::vector<PageRun> free_runs;
  pages_.collect_free(pages_.free_mapped_bytes(), free_runs);
  for (const auto& run : free_runs) {
    if (released >= bytes) break;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> inside;
    pages_.for_each_unit(run.offset, run.offset + run.size, [&](std::uint64_t at, std::uint64_t n) {
      if (at >= run.offset && at + n <= run.offset + run.size) inside.emplace_back(at, n);
    });
    // From the top, as many units as needed; adjacent ones go in one backend
    // call (one cuMemUnmap covers several whole mappings).
    std::size_t take_n = 0;
    for (std::uint64_t sum = 0; take_n < inside.size() && released + sum < bytes; ++take_n)
      sum += inside[inside.size() - 1 - take_n].second;
    if (take_n == 0) continue;
    const std::uint64_t lo = inside[inside.size() - take_n].first;
    const std::uint64_t hi = inside.back().first + inside.back().second;
    ++counters_.unmap_calls;
    if (mapping_call([&] { return backend_.unmap(range_, lo - range_.base, hi - lo); })) {
      counters_.unmapped_units += take_n;
      pages_.mark_unmapped({lo, hi - lo});
      released += hi - lo;
    }
  }
  return released;
}

// Free bytes that are mapped: free blocks intersected with mapped pages
// (O(pages): a statistics call, never on the allocation path).
std::uint64_t VirtualArena::releasable_bytes() const {
  // release_free's walk without the unmapping: every whole unit inside a
  // free mapped run.
  std::uint64_t bytes = 0;
  if (pages_.free_mapped_bytes() == 0) return 0;
  std::vector<PageRun> free_runs;
  pages_.collect_free(pages_.free_mapped_bytes(), free_runs);
  for (const auto& run : free_runs)
    pages_.for_each_unit(run.offset, run.offset + run.size, [&](std::uint64_t at, std::uint64_t n) {
      if (at >= run.offset && at + n <= run.offset + run.size) bytes += n;
    });
  return bytes;
}

void VirtualArena::free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const {
  free_bytes = 0;
  largest = 0;
  // The mapped runs inside each free block, not every page of it: the top
  // free block spans the unmapped rest of the reservation (tens of GiB on a
  // GPU), and a walk page by page made one stats() cost 0.8 ms on an H100
  // (docs/benchmarks.md, session 12's defragmentation figures).
  tlsf_.for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
    if (!is_free) return;
    pages_.for_each_mapped_run(off, off + size, [&](std::uint64_t, std::uint64_t n) {
      free_bytes += n;
      largest = std::max(largest, n);
    });
  });
}

Result<void> VirtualArena::validate() const {
  if (auto r = tlsf_.validate(); !r) return r;
  if (auto r = pages_.validate(); !r) return r;
  if (pages_.live_bytes() != tlsf_.used_bytes())
    return fail(ErrorCode::internal, "arena: page map holds {} live bytes, tlsf {}", pages_.live_bytes(),
                tlsf_.used_bytes());
  // The page map checks its units itself; here, that they are the units
  // this arena mapped and has not unmapped.
  std::uint64_t units = 0;
  pages_.for_each_unit(pages_.base(), pages_.base() + pages_.size(), [&](std::uint64_t, std::uint64_t) { ++units; });
  if (units != counters_.mapped_units - counters_.unmapped_units)
    return fail(ErrorCode::internal, "arena: page map holds {} units, the pool mapped {} and unmapped {}", units,
                counters_.mapped_units, counters_.unmapped_units);
  return {};
}

void VirtualArena::units(std::vector<DefragRange>& out) const {
  pages_.for_each_unit(pages_.base(), pages_.base() + pages_.size(),
                       [&](std::uint64_t at, std::uint64_t n) { out.push_back({at, n}); });
}

Result<std::uint64_t> VirtualArena::take_at(std::uint64_t address, std::uint64_t size) {
  flush_kept();
  const std::uint64_t bytes = round_up(size, kUnit);
  if (address < range_.base || address + bytes > range_.base + range_.size ||
      pages_.unmapped_pages(address, bytes) != 0)
    return fail(ErrorCode::conflict, "[{:#x}, +{}) is not mapped memory of {}", address, bytes,
                options_.device.to_string());
  auto block = tlsf_.allocate_at(address, bytes);
  if (!block)
    return fail(ErrorCode::conflict, "[{:#x}, +{}) is not free on {}", address, bytes, options_.device.to_string());
  std::vector<PageRun> runs;
  pages_.acquire(block->offset, block->size, runs);  // all mapped: no runs
  return block->offset;
}

// The block's units go to the target pages whole (Backend::remap), and the
// page map follows: the target pages become live and mapped in the same
// units, the old ones free and unmapped. The unit counts do not change (the
// same units, elsewhere), so validate()'s tally holds.
Result<void> VirtualArena::move_units(std::uint64_t from, std::uint64_t to) {
  flush_kept();
  const auto size = tlsf_.allocated_size(from);
  if (!size) return fail(ErrorCode::conflict, "no live block at {:#x} on {}", from, options_.device.to_string());
  const std::uint64_t span = round_up(*size, page_);
  if (from % page_ != 0 || to % page_ != 0)
    return fail(ErrorCode::invalid_argument, "a remap moves whole pages: {:#x} -> {:#x}", from, to);
  std::vector<DefragRange> moving;
  pages_.for_each_unit(from, from + span, [&](std::uint64_t at, std::uint64_t n) { moving.push_back({at, n}); });
  std::uint64_t covered = 0;
  for (const auto& u : moving)
    if (u.offset >= from && u.offset + u.size <= from + span) covered += u.size;
  if (covered != span || pages_.live_bytes() == 0)
    return fail(ErrorCode::conflict, "the block at {:#x} does not own whole units", from);
  // Nothing else on its pages: the bytes past the block in its last page are free.
  if (span != *size) {
    auto tail = tlsf_.free_block_at(from + *size);
    if (!tail || tail->offset + tail->size < from + span)
      return fail(ErrorCode::conflict, "the last page of the block at {:#x} holds another block", from);
  }
  auto target = tlsf_.free_block_at(to);
  if (!target || target->offset + target->size < to + span || pages_.unmapped_pages(to, span) != span / page_)
    return fail(ErrorCode::conflict, "[{:#x}, +{}) is not free unmapped space on {}", to, span,
                options_.device.to_string());
  ++counters_.map_calls;
  auto moved = mapping_call([&] { return backend_.remap(range_, from - range_.base, to - range_.base, span); });
  if (!moved) return fail(moved.error());
  (void)tlsf_.allocate_at(to, *size);
  std::vector<PageRun> runs;
  pages_.acquire(to, *size, runs);
  for (const auto& u : moving) pages_.mark_mapped({to + (u.offset - from), u.size});
  (void)tlsf_.free(from);
  pages_.release(from, *size);
  pages_.mark_unmapped({from, span});
  return {};
}

}  // namespace memd
