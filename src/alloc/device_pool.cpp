// DevicePool: TLSF + slabs over an on-demand mapped range or plain segments.
// See device_pool.hpp for the policies; this file is their mechanics.
#include "alloc/device_pool.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <unordered_map>

#include "core/flat_map.hpp"
#include "core/page_map.hpp"
#include "core/placement.hpp"
#include "core/slab.hpp"
#include "core/spin_lock.hpp"
#include "core/tlsf.hpp"

namespace memd {
namespace {

constexpr std::uint64_t kUnit = 256;

std::uint64_t round_up(std::uint64_t v, std::uint64_t to) { return (v + to - 1) / to * to; }

}  // namespace

struct DevicePool::Impl {
  struct Huge {
    VirtualRange range;  // Virtual mode
    Segment segment;     // Segments mode
    std::uint64_t size = 0;
  };
  struct Pending {
    std::uint64_t address = 0;
    std::uint64_t size = 0;
  };
  struct Batch {
    Event event;
    std::vector<Pending> blocks;
  };
  struct StreamState {
    Stream stream;
    std::vector<Pending> open;  // freed, not yet fenced by an event
    std::deque<Batch> fenced;   // fenced, waiting for their event
  };

  Impl(Backend& b, const PoolOptions& o) : backend(b), opt(o) {}

  Backend& backend;
  PoolOptions opt;
  std::uint64_t page = 0;  // mapping granularity (Virtual) or 2 MiB rounding (Segments)
  mutable SpinLock mu;

  Tlsf tlsf{kUnit};
  SlabAllocator slab;
  std::optional<VirtualRange> arena;
  std::unique_ptr<PageMap> pages;
  std::map<std::uint64_t, Segment> segments;  // Segments mode: base → segment
  std::unordered_map<std::uint64_t, Huge> huge_live;
  std::vector<Huge> huge_cache;
  std::vector<StreamState> streams;
  FlatMap pending;  // address → 1 while a stream-ordered free is in flight
  UnitIndex units;  // Virtual mode: mapped units, offset → size
  // The last freed large TLSF block, kept whole (pages still counted live)
  // for an immediate re-allocation of exactly its size, the common pattern
  // of inference loops; any other allocation, trim or statistic returns it
  // to TLSF first, so placement and footprint are as if it had been freed.
  // Saves the page-map work of a large block (1 GiB pair on an H200:
  // 120-130 ns -> 40-43 ns).
  struct Stash {
    std::uint64_t address = 0, size = 0;
  } stash;
  static constexpr std::uint64_t kStashMin = 64 * kMiB;

  std::uint64_t allocated = 0, peak_allocated = 0, peak_active = 0;
  std::uint64_t live = 0, peak_live = 0, total_allocs = 0, total_frees = 0, failed = 0;
  std::uint64_t device_calls = 0, map_calls = 0, unmap_calls = 0, mapped_units = 0, unmapped_units = 0;
  std::uint64_t mapping_ns = 0;  // wall time inside backend map/unmap: what the mapping policy trades

  std::uint64_t huge_live_bytes = 0, huge_cache_bytes = 0, segment_bytes = 0;
  std::uint64_t peak_busy = 0, peak_reserved = 0;

  // Runs one backend map/unmap call, counting it and its time.
  template <typename F>
  auto mapping_call(F&& f) {
    ++device_calls;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = f();
    mapping_ns += static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    return r;
  }

  // ----- accounting -----------------------------------------------------------
  std::uint64_t reserved() const {
    if (opt.mode == PoolMode::Virtual) return pages->mapped_bytes() + huge_live_bytes + huge_cache_bytes;
    return segment_bytes + huge_live_bytes + huge_cache_bytes;
  }
  std::uint64_t busy() const {
    return (pages ? pages->busy_bytes() : 0) + huge_live_bytes;
  }
  std::uint64_t allowed() const {
    auto slack = static_cast<std::uint64_t>(static_cast<double>(peak_busy) * opt.retain_fraction);
    return std::max(busy() + opt.retain_min_pages * page, peak_busy + round_up(slack, page));
  }
  void note_peaks() {
    peak_busy = std::max(peak_busy, busy());
    peak_reserved = std::max(peak_reserved, reserved());
    peak_allocated = std::max(peak_allocated, allocated);
    peak_active = std::max(peak_active, tlsf.used_bytes() + huge_live_bytes);
    peak_live = std::max(peak_live, live);
  }

  // ----- releasing slack ------------------------------------------------------
  // Gives back at least `bytes` of slack: cached huge ranges first (largest
  // wins, one call each), then free arena pages from the top, in runs.
  std::uint64_t release_slack(std::uint64_t bytes) {
    flush_stash();
    std::uint64_t released = 0;
    std::sort(huge_cache.begin(), huge_cache.end(),
              [](const Huge& a, const Huge& b) { return a.size < b.size; });
    while (released < bytes && !huge_cache.empty()) {
      Huge h = huge_cache.back();
      huge_cache.pop_back();
      destroy_huge(h);
      huge_cache_bytes -= h.size;
      released += h.size;
    }
    if (released < bytes && pages && pages->free_mapped_bytes() > 0) {
      // Only whole units can go: walk free runs from the top and unmap the
      // units that lie entirely inside them.
      std::vector<PageRun> free_runs;
      pages->collect_free(pages->free_mapped_bytes(), free_runs);
      for (const auto& run : free_runs) {
        if (released >= bytes) break;
        auto it = units.lower_bound(run.offset);
        std::vector<std::pair<std::uint64_t, std::uint64_t>> inside;
        for (; it != units.end() && it->first + it->second <= run.offset + run.size; ++it) inside.push_back(*it);
        // From the top, as many units as needed; adjacent ones go in one
        // backend call (one cuMemUnmap covers several whole mappings).
        std::size_t take_n = 0;
        for (std::uint64_t sum = 0; take_n < inside.size() && released + sum < bytes; ++take_n)
          sum += inside[inside.size() - 1 - take_n].second;
        if (take_n == 0) continue;
        const std::uint64_t lo = inside[inside.size() - take_n].first;
        const std::uint64_t hi = inside.back().first + inside.back().second;
        ++unmap_calls;
        if (mapping_call([&] { return backend.unmap(*arena, lo - arena->base, hi - lo); })) {
          unmapped_units += take_n;
          pages->mark_unmapped({lo, hi - lo});
          units.erase(units.lower_bound(lo), units.lower_bound(hi));
          released += hi - lo;
        }
      }
    }
    return released;
  }

  void destroy_huge(const Huge& h) {
    ++device_calls;
    if (opt.mode == PoolMode::Virtual) (void)backend.release(h.range);
    else (void)backend.free(h.segment);
  }

  // ----- arena (Virtual) and segments (Segments) -------------------------------
  // A TLSF block of `size` bytes, backed by mapped memory.
  Result<std::uint64_t> take(std::uint64_t size, std::uint64_t alignment) {
    if (opt.mode == PoolMode::Segments) return take_segmented(size, alignment);
    auto block = tlsf.allocate(size, alignment);
    if (!block)
      return fail(ErrorCode::out_of_memory, "no free range of {} in the {} address space of {}",
                  format_size(size), format_size(opt.capacity), opt.device.to_string());
    std::vector<PageRun> runs;  // stays empty (no allocation) when all pages are mapped
    pages->acquire(block->offset, block->size, runs);
    if (runs.empty()) return block->offset;
    // Slow path: good fit chose pages that are not mapped, and mapping costs
    // tens of microseconds a unit. Undo it and place the block where the
    // fewest pages need mapping (often none: a mapped hole elsewhere).
    pages->release(block->offset, block->size);
    (void)tlsf.free(block->offset);
    block = place_over_mapped(tlsf, *pages, units, round_up(size, kUnit), alignment);
    if (!block) return fail(ErrorCode::internal, "placement lost a block that good fit had found");
    runs.clear();
    pages->acquire(block->offset, block->size, runs);
    if (runs.empty()) return block->offset;
    std::uint64_t need = 0;
    for (const auto& r : runs) need += r.size;
    // Keep mapped bytes within the retention budget: unmap slack first, with
    // 1% of the peak as hysteresis so the next allocations do not trim again.
    peak_busy = std::max(peak_busy, busy());
    bool trimmed = false;
    if (std::uint64_t limit = allowed(); reserved() + need > limit) {
      release_slack(reserved() + need - limit + round_up(peak_busy / 100, page));
      trimmed = true;
    }
    const PageRun ahead = trimmed ? PageRun{} : growth_ahead(*block, size, runs.back(), need);
    // Each run is one backend call, cut into units (see PoolOptions::map_unit_*);
    // the pages mapped ahead are a unit of their own.
    const std::uint64_t unit = unit_bytes();
    if (ahead.size != 0) runs.push_back(ahead);
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const PageRun run = runs[i];
      const std::uint64_t run_unit = ahead.size != 0 && i + 1 == runs.size() ? 0 : unit;
      ++map_calls;
      auto map_run = [&] { return backend.map(*arena, run.offset - arena->base, run.size, run_unit); };
      auto mapped = mapping_call(map_run);
      if (!mapped && ahead.size != 0 && i + 1 == runs.size()) break;  // mapping ahead is optional
      if (!mapped && mapped.error().code == ErrorCode::out_of_memory) {
        // The device is full: give back every byte of slack, then try once more.
        release_slack(~std::uint64_t{0} / 2);
        ++map_calls;
        mapped = mapping_call(map_run);
      }
      if (!mapped) {
        // Roll back: unmap the runs this call mapped (whole units), forget the block.
        for (std::size_t j = 0; j < i; ++j) {
          (void)mapping_call([&] { return backend.unmap(*arena, runs[j].offset - arena->base, runs[j].size); });
          pages->mark_unmapped(runs[j]);
          units.erase(units.lower_bound(runs[j].offset), units.lower_bound(runs[j].offset + runs[j].size));
        }
        pages->release(block->offset, block->size);
        (void)tlsf.free(block->offset);
        Error e = mapped.error();
        e.message = fmt::format("mapping {} for a {} block on {}: {}", format_size(run.size),
                                format_size(size), opt.device.to_string(), e.message);
        return fail(std::move(e));
      }
      Backend::for_each_map_unit(run.size, run_unit, [&](std::uint64_t at, std::uint64_t n) {
        units.emplace(run.offset + at, n);
        ++mapped_units;
      });
      pages->mark_mapped(run);
    }
    return block->offset;
  }

  // Mapping unit now: peak_busy / map_unit_divisor within [map_unit_min,
  // map_unit_max], whole pages, at least one.
  std::uint64_t unit_bytes() const {
    const std::uint64_t lo = opt.map_unit_min, hi = std::max(opt.map_unit_min, opt.map_unit_max);
    const std::uint64_t want = std::clamp(peak_busy / std::max<std::uint64_t>(1, opt.map_unit_divisor), lo, hi);
    return std::max<std::uint64_t>(1, want / page) * page;
  }

  // Growth (nothing had to be trimmed) of a small block at the end of mapped
  // memory: the idle pages after it, within the budget, retain_fraction of
  // the busy bytes and map_ahead_max, to be mapped as a unit of their own, so
  // the small blocks that follow (a model's tensors, one after another) find
  // their pages mapped. Its own unit: it can go back whole if nothing lands
  // there. Empty when not.
  PageRun growth_ahead(const TlsfBlock& block, std::uint64_t size, const PageRun& last_run, std::uint64_t need) const {
    if (opt.map_ahead_max < page || size > opt.map_ahead_max / 8) return {};
    const std::uint64_t block_end = round_up(block.offset + block.size, page);
    if (last_run.offset + last_run.size != block_end) return {};
    const std::uint64_t limit = allowed(), used = reserved() + need;
    if (limit <= used) return {};
    // At most retain_fraction of the busy bytes: below an old peak the budget
    // would allow more, but the footprint should follow the live bytes there.
    const auto share = static_cast<std::uint64_t>(static_cast<double>(busy()) * opt.retain_fraction);
    const std::uint64_t room = std::min({limit - used, share, opt.map_ahead_max});
    const std::uint64_t n = pages->idle_unmapped_pages(block_end, room / page);
    return n == 0 ? PageRun{} : PageRun{block_end, n * page};
  }

  Result<std::uint64_t> take_segmented(std::uint64_t size, std::uint64_t alignment) {
    if (auto block = tlsf.allocate(size, alignment)) return block->offset;
    std::uint64_t want = round_up(std::max(size + alignment, opt.segment_size), page);
    if (opt.capacity != 0 && reserved() + want > opt.capacity) {
      release_empty_segments();
      if (reserved() + want > opt.capacity)
        return fail(ErrorCode::out_of_memory, "pool capacity {} reached on {}", format_size(opt.capacity),
                    opt.device.to_string());
    }
    ++device_calls;
    auto seg = backend.allocate(opt.device, opt.memory_type, want);
    if (!seg && seg.error().code == ErrorCode::out_of_memory) {
      release_empty_segments();
      ++device_calls;
      seg = backend.allocate(opt.device, opt.memory_type, want);
    }
    if (!seg) return fail(seg.error());
    auto base = reinterpret_cast<std::uint64_t>(seg->ptr);
    if (auto added = tlsf.add_region(base, seg->size / kUnit * kUnit); !added) {
      (void)backend.free(*seg);
      return fail(added.error());
    }
    segments.emplace(base, *seg);
    segment_bytes += seg->size;
    auto block = tlsf.allocate(size, alignment);
    if (!block) return fail(ErrorCode::internal, "fresh segment did not fit its request");
    return block->offset;
  }

  std::uint64_t release_empty_segments() {
    std::uint64_t released = 0;
    for (auto it = segments.begin(); it != segments.end();) {
      if (tlsf.remove_region(it->first)) {
        ++device_calls;
        (void)backend.free(it->second);
        segment_bytes -= it->second.size;
        released += it->second.size;
        it = segments.erase(it);
      } else {
        ++it;
      }
    }
    return released;
  }

  // Returns a TLSF block (a span or a large block) and its pages.
  void give_back(std::uint64_t address) {
    auto freed = tlsf.free(address);
    if (freed && pages) pages->release(address, freed->size);
  }

  // ----- huge ------------------------------------------------------------------
  Result<std::uint64_t> take_huge(std::uint64_t size) {
    std::uint64_t need = round_up(size, page);
    // Reuse a cached range that is big enough but not wastefully so.
    auto best = huge_cache.end();
    for (auto it = huge_cache.begin(); it != huge_cache.end(); ++it)
      if (it->size >= need && it->size <= need + need / 8 && (best == huge_cache.end() || it->size < best->size))
        best = it;
    if (best != huge_cache.end()) {
      Huge h = *best;
      huge_cache.erase(best);
      huge_cache_bytes -= h.size;
      huge_live_bytes += h.size;
      auto addr = opt.mode == PoolMode::Virtual ? h.range.base : reinterpret_cast<std::uint64_t>(h.segment.ptr);
      huge_live.emplace(addr, h);
      return addr;
    }
    huge_live_bytes += need;  // count it as busy so the budget sees the growth
    peak_busy = std::max(peak_busy, busy());
    if (reserved() + need > allowed()) release_slack(reserved() + need - allowed());
    huge_live_bytes -= need;
    Huge h;
    h.size = need;
    std::uint64_t addr = 0;
    auto attempt = [&]() -> Result<void> {
      if (opt.mode == PoolMode::Virtual) {
        ++device_calls;
        auto r = backend.reserve(opt.device, need);
        if (!r) return fail(r.error());
        ++device_calls;
        if (auto m = backend.map(*r, 0, need); !m) {
          (void)backend.release(*r);
          return fail(m.error());
        }
        h.range = *r;
        addr = r->base;
      } else {
        ++device_calls;
        auto s = backend.allocate(opt.device, opt.memory_type, need);
        if (!s) return fail(s.error());
        h.segment = *s;
        addr = reinterpret_cast<std::uint64_t>(s->ptr);
      }
      return {};
    };
    auto ok = attempt();
    if (!ok && ok.error().code == ErrorCode::out_of_memory) {
      release_slack(~std::uint64_t{0} / 2);
      if (opt.mode == PoolMode::Segments) release_empty_segments();
      ok = attempt();
    }
    if (!ok) return fail(ok.error());
    huge_live.emplace(addr, h);
    huge_live_bytes += need;
    return addr;
  }

  // ----- user-level allocate/free ----------------------------------------------
  std::uint64_t block_bytes_for(std::uint64_t size) const {
    if (size >= opt.huge_threshold) return round_up(size, page);
    if (SlabAllocator::is_small(size)) return SlabAllocator::class_size(size);
    return round_up(size, kUnit);
  }

  Result<std::uint64_t> allocate_block(std::uint64_t size, std::uint64_t& block_bytes) {
    if (stash.size != 0) {
      if (round_up(size, kUnit) == stash.size) {
        block_bytes = stash.size;
        return std::exchange(stash, {}).address;
      }
      flush_stash();
    }
    if (size >= opt.huge_threshold) {
      auto r = take_huge(size);
      if (r) block_bytes = huge_live.at(*r).size;
      return r;
    }
    if (SlabAllocator::is_small(size)) {
      std::optional<Error> span_error;
      auto source = [&]() -> std::optional<std::uint64_t> {
        auto span = take(SlabAllocator::kSpanSize, SlabAllocator::kSpanSize);
        if (!span) {
          span_error = span.error();
          return std::nullopt;
        }
        return *span;
      };
      auto slot = slab.allocate(size, source);
      if (!slot) return fail(span_error.value_or(Error{ErrorCode::out_of_memory, "no span"}));
      block_bytes = SlabAllocator::class_size(size);
      return *slot;
    }
    block_bytes = round_up(size, kUnit);
    return take(size, kUnit);
  }

  bool stashed(std::uint64_t address) const { return stash.size != 0 && address == stash.address; }
  // Returns the kept block to TLSF and the page map, as a free would have.
  void flush_stash() {
    if (stash.size == 0) return;
    (void)tlsf.free(stash.address);
    pages->release(stash.address, stash.size);
    stash = {};
  }

  // Size of the live (not pending) block at address; nullopt if none.
  std::optional<std::uint64_t> live_block_size(std::uint64_t address) const {
    if (stashed(address)) return std::nullopt;
    if (auto s = slab.slot_size(address)) return s;
    if (auto t = tlsf.allocated_size(address)) {
      if (slab.owns_span(address)) return std::nullopt;
      return t;
    }
    if (auto it = huge_live.find(address); it != huge_live.end()) return it->second.size;
    return std::nullopt;
  }

  // Really frees a live block (no stream semantics) and returns its size;
  // nullopt (and nothing changed) when address is not a live block. One
  // lookup per structure, in the order sizes are most common.
  std::optional<std::uint64_t> release_block(std::uint64_t address) {
    if (stashed(address)) return std::nullopt;  // freed already
    auto r = slab.free(address);
    if (r.outcome == SlabAllocator::FreeOutcome::Freed) {
      if (r.released_span) give_back(*r.released_span);
      return r.slot_size;
    }
    if (r.outcome == SlabAllocator::FreeOutcome::DoubleFree) return std::nullopt;
    // NotSlab: the address's span base is no span, so it is no span itself
    // either, and TLSF can free it directly.
    std::uint64_t kept = 0;
    if (auto freed = tlsf.free_below(address, pages ? kStashMin : ~std::uint64_t{0}, kept)) {
      if (pages) pages->release(address, freed->size);
      return freed->size;
    }
    if (kept != 0) {  // large: keep it whole for an immediate re-allocation
      flush_stash();
      stash = {address, kept};
      return kept;
    }
    if (auto it = huge_live.find(address); it != huge_live.end()) {
      Huge h = it->second;
      huge_live.erase(it);
      huge_live_bytes -= h.size;
      huge_cache.push_back(h);  // kept as slack; the budget decides when it goes
      huge_cache_bytes += h.size;
      if (reserved() > allowed()) release_slack(reserved() - allowed());
      return h.size;
    }
    return std::nullopt;
  }

  Result<std::uint64_t> allocate_locked(std::uint64_t size) {
    if (size == 0) return fail(ErrorCode::invalid_argument, "allocation size must be positive");
    if (size > kMaxRequestBytes || (opt.capacity != 0 && size > opt.capacity)) {
      ++failed;
      return fail(ErrorCode::out_of_memory, "requested {} exceeds the capacity {} of {}", format_size(size),
                  format_size(opt.capacity), opt.device.to_string());
    }
    std::uint64_t bytes = 0;
    auto r = allocate_block(size, bytes);
    if (!r && !streams.empty()) {
      // Blocks parked for stream-ordered reuse may be what is missing.
      drain_streams(/*wait=*/true);
      r = allocate_block(size, bytes);
    }
    if (!r) {
      ++failed;
      return r;
    }
    allocated += bytes;
    ++live;
    ++total_allocs;
    note_peaks();
    return r;
  }

  Result<void> free_locked(std::uint64_t address) {
    if (pending.size() != 0 && pending.find(address))
      return fail(ErrorCode::invalid_argument, "double free of {:#x} (a stream-ordered free is pending)", address);
    auto size = release_block(address);
    if (!size) return fail(ErrorCode::invalid_argument, "{:#x} is not a live block of this pool", address);
    allocated -= *size;
    --live;
    ++total_frees;
    return {};
  }

  // ----- streams ---------------------------------------------------------------
  StreamState& state_for(const Stream& s) {
    for (auto& st : streams)
      if (st.stream == s) return st;
    streams.push_back(StreamState{s, {}, {}});
    return streams.back();
  }

  void fence(StreamState& st) {
    if (st.open.empty()) return;
    ++device_calls;
    auto ev = backend.record(st.stream);
    if (!ev) {
      // Cannot fence: make the stream's work complete instead, then release.
      (void)backend.synchronize(st.stream);
      for (const auto& p : st.open) finish_pending(p);
      st.open.clear();
      return;
    }
    st.fenced.push_back(Batch{*ev, std::move(st.open)});
    st.open.clear();
  }

  void finish_pending(const Pending& p) {
    pending.erase(p.address);
    (void)release_block(p.address);
  }

  // Releases batches whose event completed; with wait, fences and waits for all.
  void drain_streams(bool wait) {
    for (auto& st : streams) {
      if (wait) fence(st);
      while (!st.fenced.empty()) {
        Batch& b = st.fenced.front();
        auto done = wait ? Result<bool>(backend.wait(b.event).has_value()) : backend.query(b.event);
        if (!done || !*done) {
          if (!wait) break;
        }
        (void)backend.destroy_event(b.event);
        for (const auto& p : b.blocks) finish_pending(p);
        st.fenced.pop_front();
      }
    }
  }

  Result<std::uint64_t> allocate_on(std::uint64_t size, const Stream& stream) {
    if (size == 0) return fail(ErrorCode::invalid_argument, "allocation size must be positive");
    StreamState& st = state_for(stream);
    std::uint64_t want = size > kMaxRequestBytes ? 0 : block_bytes_for(size);
    // Same-stream reuse needs no event: the stream's order protects it.
    auto reuse = [&](std::vector<Pending>& list) -> std::optional<std::uint64_t> {
      for (std::size_t i = list.size(); i-- > 0;)
        if (list[i].size == want) {
          auto addr = list[i].address;
          list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
          pending.erase(addr);
          return addr;
        }
      return std::nullopt;
    };
    std::optional<std::uint64_t> hit = reuse(st.open);
    for (auto it = st.fenced.rbegin(); !hit && it != st.fenced.rend(); ++it) hit = reuse(it->blocks);
    if (hit) {
      allocated += want;
      ++live;
      ++total_allocs;
      note_peaks();
      return *hit;
    }
    drain_streams(/*wait=*/false);
    return allocate_locked(size);
  }

  Result<void> free_on(std::uint64_t address, const Stream& stream) {
    if (pending.find(address))
      return fail(ErrorCode::invalid_argument, "double free of {:#x} (a stream-ordered free is pending)", address);
    auto size = live_block_size(address);
    if (!size) return fail(ErrorCode::invalid_argument, "{:#x} is not a live block of this pool", address);
    StreamState& st = state_for(stream);
    st.open.push_back({address, *size});
    pending.insert(address, 1);
    allocated -= *size;
    --live;
    ++total_frees;
    if (st.open.size() >= opt.stream_batch) fence(st);
    return {};
  }

  // ----- statistics ------------------------------------------------------------
  void free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const {
    free_bytes = 0;
    largest = 0;
    if (opt.mode == PoolMode::Segments) {
      free_bytes = tlsf.free_bytes();
      largest = tlsf.largest_free();
      return;
    }
    // Free bytes that are mapped: walk free blocks and intersect with pages
    // (O(pages), fine for a statistics call, never on the allocation path).
    tlsf.for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
      if (!is_free) return;
      std::uint64_t run = 0;
      for (std::uint64_t cur = off, end = off + size; cur < end;) {
        std::uint64_t p = cur / page * page;
        std::uint64_t hi = std::min(end, p + page);
        if (pages->is_mapped(p)) {
          run += hi - cur;
          free_bytes += hi - cur;
          largest = std::max(largest, run);
        } else {
          run = 0;
        }
        cur = hi;
      }
    });
    free_bytes += huge_cache_bytes;
    for (const auto& h : huge_cache) largest = std::max(largest, h.size);
  }
};

DevicePool::DevicePool() = default;

DevicePool::~DevicePool() {
  if (!impl_) return;
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  for (auto& st : m.streams) {
    for (auto& b : st.fenced) {
      (void)m.backend.wait(b.event);
      (void)m.backend.destroy_event(b.event);
    }
  }
  for (auto& [addr, h] : m.huge_live) m.destroy_huge(h);
  for (auto& h : m.huge_cache) m.destroy_huge(h);
  if (m.arena) (void)m.backend.release(*m.arena);
  for (auto& [base, seg] : m.segments) (void)m.backend.free(seg);
}

Result<std::unique_ptr<DevicePool>> DevicePool::create(Backend& backend, const PoolOptions& options) {
  std::unique_ptr<DevicePool> pool(new DevicePool());
  pool->impl_ = std::make_unique<Impl>(backend, options);
  auto& m = *pool->impl_;
  DeviceInfo info;
  bool found = false;
  for (auto& d : backend.devices())
    if (d.id == options.device) {
      info = d;
      found = true;
    }
  if (!found && options.device.kind() != DeviceKind::Cpu)
    return fail(ErrorCode::not_found, "backend {} has no device {}", backend.name(), options.device.to_string());
  if (options.retain_fraction < 0 || options.retain_fraction > 10)
    return fail(ErrorCode::invalid_argument, "retain_fraction must be within [0, 10]");
  if (options.mode == PoolMode::Virtual) {
    if (!info.virtual_memory || info.granularity == 0)
      return fail(ErrorCode::invalid_argument, "{} has no virtual memory; use PoolMode::Segments",
                  options.device.to_string());
    m.page = info.granularity;
    if (m.opt.capacity == 0) m.opt.capacity = info.total_bytes;
    m.opt.capacity = m.opt.capacity / m.page * m.page;
    if (m.opt.capacity == 0) return fail(ErrorCode::invalid_argument, "pool capacity below one page");
    auto range = backend.reserve(options.device, m.opt.capacity);
    if (!range) return fail(range.error());
    ++m.device_calls;
    m.arena = *range;
    m.pages = std::make_unique<PageMap>(range->base, m.opt.capacity, m.page);
    if (auto r = m.tlsf.add_region(range->base, m.opt.capacity); !r) return fail(r.error());
  } else {
    m.page = info.granularity != 0 ? info.granularity : 2 * kMiB;
  }
  if (m.opt.huge_threshold == 0)
    m.opt.huge_threshold = options.mode == PoolMode::Segments ? kGiB : ~std::uint64_t{0};
  if (m.opt.huge_threshold < 2 * SlabAllocator::kMaxSize) m.opt.huge_threshold = 2 * SlabAllocator::kMaxSize;
  return pool;
}

Result<void*> DevicePool::allocate(std::uint64_t size) {
  std::lock_guard lock(impl_->mu);
  auto r = impl_->allocate_locked(size);
  if (!r) return fail(r.error());
  return reinterpret_cast<void*>(*r);
}

Result<void*> DevicePool::allocate(std::uint64_t size, const Stream& stream) {
  std::lock_guard lock(impl_->mu);
  auto r = impl_->allocate_on(size, stream);
  if (!r) return fail(r.error());
  return reinterpret_cast<void*>(*r);
}

Result<void> DevicePool::deallocate(void* ptr) {
  std::lock_guard lock(impl_->mu);
  return impl_->free_locked(reinterpret_cast<std::uint64_t>(ptr));
}

Result<void> DevicePool::deallocate(void* ptr, const Stream& stream) {
  std::lock_guard lock(impl_->mu);
  return impl_->free_on(reinterpret_cast<std::uint64_t>(ptr), stream);
}

std::optional<std::uint64_t> DevicePool::block_size(const void* ptr) const {
  std::lock_guard lock(impl_->mu);
  auto addr = reinterpret_cast<std::uint64_t>(ptr);
  if (impl_->pending.find(addr)) return std::nullopt;
  return impl_->live_block_size(addr);
}

std::uint64_t DevicePool::reserved_bytes() const {
  std::lock_guard lock(impl_->mu);
  return impl_->reserved();
}

PoolStats DevicePool::stats() const {
  std::lock_guard lock(impl_->mu);
  impl_->flush_stash();  // views and trims see it freed
  const auto& m = *impl_;
  PoolStats s;
  s.allocated_bytes = m.allocated;
  s.active_bytes = m.tlsf.used_bytes() + m.huge_live_bytes;
  s.reserved_bytes = m.reserved();
  s.peak_allocated_bytes = m.peak_allocated;
  s.peak_active_bytes = m.peak_active;
  s.peak_reserved_bytes = m.peak_reserved;
  m.free_space(s.free_bytes, s.largest_free_block);
  s.live_allocations = m.live;
  s.peak_live_allocations = m.peak_live;
  s.total_allocations = m.total_allocs;
  s.total_frees = m.total_frees;
  s.failed_allocations = m.failed;
  s.device_calls = m.device_calls;
  s.map_calls = m.map_calls;
  s.unmap_calls = m.unmap_calls;
  s.mapped_units = m.mapped_units;
  s.unmapped_units = m.unmapped_units;
  s.mapping_ns = m.mapping_ns;
  s.segments = (m.arena ? 1 : 0) + m.segments.size() + m.huge_live.size() + m.huge_cache.size();
  s.fragmentation = s.free_bytes == 0 ? 0.0
                                      : 1.0 - static_cast<double>(s.largest_free_block) /
                                                  static_cast<double>(s.free_bytes);
  s.footprint_ratio = m.allocated == 0 ? 0.0 : static_cast<double>(s.reserved_bytes) / static_cast<double>(m.allocated);
  return s;
}

std::uint64_t DevicePool::trim() {
  std::lock_guard lock(impl_->mu);
  impl_->flush_stash();  // views and trims see it freed
  auto& m = *impl_;
  if (!m.streams.empty()) m.drain_streams(/*wait=*/true);
  std::uint64_t released = 0;
  for (auto span : m.slab.release_empty_spans()) m.give_back(span);
  released += m.release_slack(~std::uint64_t{0} / 2);
  if (m.opt.mode == PoolMode::Segments) released += m.release_empty_segments();
  released += m.backend.trim();
  return released;
}

std::vector<SegmentInfo> DevicePool::snapshot() const {
  std::lock_guard lock(impl_->mu);
  impl_->flush_stash();  // views and trims see it freed
  const auto& m = *impl_;
  std::vector<SegmentInfo> out;
  auto region_kind = m.opt.mode == PoolMode::Virtual ? "arena" : "segment";
  for (const auto& [base, size] : m.tlsf.regions()) {
    SegmentInfo seg{base, size, m.pages ? m.pages->mapped_bytes() : size, region_kind, {}};
    out.push_back(std::move(seg));
  }
  m.tlsf.for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
    for (auto& seg : out)
      if (off >= seg.address && off < seg.address + seg.size) {
        std::string state = is_free ? "free" : (m.slab.owns_span(off) ? "slab" : "allocated");
        if (!is_free && m.pending.find(off)) state = "pending";
        seg.blocks.push_back({off, size, std::move(state)});
        break;
      }
  });
  for (const auto& [addr, h] : m.huge_live)
    out.push_back({addr, h.size, h.size, "huge", {{addr, h.size, m.pending.find(addr) ? "pending" : "allocated"}}});
  for (const auto& h : m.huge_cache) {
    auto addr = m.opt.mode == PoolMode::Virtual ? h.range.base : reinterpret_cast<std::uint64_t>(h.segment.ptr);
    out.push_back({addr, h.size, h.size, "huge", {{addr, h.size, "free"}}});
  }
  return out;
}

Result<void> DevicePool::validate() const {
  std::lock_guard lock(impl_->mu);
  impl_->flush_stash();  // views and trims see it freed
  const auto& m = *impl_;
  if (auto r = m.tlsf.validate(); !r) return r;
  if (auto r = m.slab.validate(); !r) return r;
  if (m.pages) {
    if (auto r = m.pages->validate(); !r) return r;
    if (m.pages->live_bytes() != m.tlsf.used_bytes())
      return fail(ErrorCode::internal, "pool: page map holds {} live bytes, tlsf {}", m.pages->live_bytes(),
                  m.tlsf.used_bytes());
  }
  // Every span is a live TLSF block of span size.
  std::uint64_t span_bytes = 0;
  m.tlsf.for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
    if (!is_free && m.slab.owns_span(off) && size == SlabAllocator::kSpanSize) span_bytes += size;
  });
  if (span_bytes != m.slab.span_bytes()) return fail(ErrorCode::internal, "pool: slab spans not all in tlsf");
  // allocated = live slab slots + live large blocks + live huge, minus pending.
  std::uint64_t pending_bytes = 0, pending_count = 0;
  for (const auto& st : m.streams) {
    for (const auto& p : st.open) pending_bytes += p.size, ++pending_count;
    for (const auto& b : st.fenced)
      for (const auto& p : b.blocks) pending_bytes += p.size, ++pending_count;
  }
  if (pending_count != m.pending.size()) return fail(ErrorCode::internal, "pool: pending index disagrees");
  std::uint64_t expect = m.slab.used_bytes() + (m.tlsf.used_bytes() - m.slab.span_bytes()) + m.huge_live_bytes;
  if (expect != m.allocated + pending_bytes)
    return fail(ErrorCode::internal, "pool: allocated {} + pending {} != blocks {}", m.allocated, pending_bytes,
                expect);
  if (m.pages) {
    std::uint64_t unit_bytes = 0, end = 0;
    for (const auto& [off, size] : m.units) {
      if (off < end) return fail(ErrorCode::internal, "pool: mapped units overlap at {:#x}", off);
      if (!m.pages->is_mapped(off) || !m.pages->is_mapped(off + size - m.page))
        return fail(ErrorCode::internal, "pool: unit {:#x} not mapped in the page map", off);
      unit_bytes += size;
      end = off + size;
    }
    if (unit_bytes != m.pages->mapped_bytes())
      return fail(ErrorCode::internal, "pool: units cover {} bytes, page map {}", unit_bytes, m.pages->mapped_bytes());
  }
  std::uint64_t cached = 0;
  for (const auto& h : m.huge_cache) cached += h.size;
  if (cached != m.huge_cache_bytes) return fail(ErrorCode::internal, "pool: huge cache bytes disagree");
  return {};
}

const PoolOptions& DevicePool::options() const noexcept { return impl_->opt; }
Backend& DevicePool::backend() noexcept { return impl_->backend; }

}  // namespace memd
