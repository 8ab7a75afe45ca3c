// DevicePool: TLSF + slabs over an on-demand mapped range or plain segments.
// See device_pool.hpp for the policies; this file is their mechanics.
#include "alloc/device_pool.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <deque>
#include <unordered_map>

#include "alloc/thread_cache.hpp"
#include "core/flat_map.hpp"
#include "core/live_blocks.hpp"
#include "core/live_slots.hpp"
#include "core/page_map.hpp"
#include "core/placement.hpp"
#include "core/slab.hpp"
#include "core/spin_lock.hpp"
#include "core/tlsf.hpp"

namespace memd {
namespace {

constexpr std::uint64_t kUnit = 256;

std::uint64_t round_up(std::uint64_t v, std::uint64_t to) { return (v + to - 1) / to * to; }

std::atomic<std::uint64_t> next_pool_id{1};

// This thread's caches, one per pool it used; pool ids are never reused, so
// an entry of a pool that is gone is never matched again (and is dropped when
// the thread next meets a new pool). At thread exit every cache goes back.
extern thread_local std::uint64_t tls_last_id;
extern thread_local ThreadCache* tls_last;
extern thread_local bool tls_gone;

struct TlsCaches {
  struct Entry {
    std::uint64_t pool_id = 0;
    std::shared_ptr<ThreadCache> cache;
  };
  std::vector<Entry> entries;
  ~TlsCaches() {
    // Thread-local destructors that run after this one may still free (or
    // allocate) pool memory: from now on this thread bypasses the caches.
    tls_gone = true;
    tls_last_id = 0;
    tls_last = nullptr;
    for (auto& e : entries) {
      std::lock_guard g(e.cache->mu);
      if (e.cache->pool != nullptr && e.cache->return_to_pool != nullptr) e.cache->return_to_pool(*e.cache);
      e.cache->exited = true;
    }
  }
};
thread_local TlsCaches tls_caches;
// The last cache this thread used, as trivially destructible thread-locals:
// reading them costs no TLS initialisation check (tls_caches, having a
// destructor, would on every access).
thread_local std::uint64_t tls_last_id = 0;
thread_local ThreadCache* tls_last = nullptr;
thread_local bool tls_gone = false;  // tls_caches is destroyed (thread exit)

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
  // The last freed TLSF block (not a slab span), kept whole (pages still
  // counted live) for an immediate re-allocation of exactly its size, the
  // common pattern of inference loops; any other allocation, trim or
  // statistic returns it to TLSF first. Saves the TLSF and page-map work of
  // the pair (1 GiB on an H200: 120-130 ns -> 40-43 ns; 64 KiB - 16 MiB on
  // the development machine: 70-96 -> 35 ns). At 64 MiB it moved no count;
  // at 16 KiB it changes some placements (a block comes back where good fit
  // might not have put it): over 28 traces the worst ratio stays 1.0412,
  // llama_generate 1.0092/96 -> 1.0081/101 units, scaled vision_mix x0.5
  // 1.0146 -> 1.0249, x1.1 1.0307/248 -> 1.0355/208 (docs/benchmarks.md).
  struct Stash {
    std::uint64_t address = 0, size = 0;
  } stash;
  static constexpr std::uint64_t kStashMin = 16 * 1024;

  std::uint64_t allocated = 0, peak_allocated = 0, peak_active = 0;
  std::uint64_t live = 0, peak_live = 0, total_allocs = 0, total_frees = 0, failed = 0;
  std::uint64_t device_calls = 0, map_calls = 0, unmap_calls = 0, mapped_units = 0, unmapped_units = 0;
  std::uint64_t mapping_ns = 0;  // wall time inside backend map/unmap: what the mapping policy trades

  std::uint64_t huge_live_bytes = 0, huge_cache_bytes = 0, segment_bytes = 0;
  std::uint64_t peak_busy = 0, peak_reserved = 0;
  unsigned unit_halvings = 0;  // see the trim in take()

  // Per-thread caches of small slots (Virtual mode, PoolOptions::thread_cache).
  // live_slots says which slots the user holds, lock-free; caches_mu guards
  // the registry. Lock order: caches_mu, then a cache's mu, then mu.
  std::unique_ptr<LiveSlots> live_slots;
  // Medium blocks go through the thread caches too once the pool lock has
  // been found held kContendedToCache times (a single thread never turns it
  // on, so replays keep exact sizes); live_blocks tracks those blocks.
  static constexpr std::uint32_t kContendedToCache = 64;
  std::unique_ptr<LiveBlocks> live_blocks;
  std::atomic<bool> medium_caching{false};
  std::atomic<std::uint32_t> contended{0};
  // Slab spans opened so far (written under the pool lock): a free that found
  // no slot without the lock re-checks under it only if a span opened since.
  std::atomic<std::uint64_t> spans_opened{0};
  const std::uint64_t id = next_pool_id.fetch_add(1, std::memory_order_relaxed);
  std::mutex caches_mu;
  std::vector<std::shared_ptr<ThreadCache>> caches;

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
    peak_active = std::max(peak_active, tlsf.used_bytes() + huge_live_bytes);
    // allocated and live wrap below zero for a moment when a thread's cache
    // folds in frees of blocks another thread's cache handed out and has not
    // folded yet; such a moment is no peak.
    if (static_cast<std::int64_t>(allocated) >= 0) peak_allocated = std::max(peak_allocated, allocated);
    if (static_cast<std::int64_t>(live) >= 0) peak_live = std::max(peak_live, live);
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
        std::vector<std::pair<std::uint64_t, std::uint64_t>> inside;
        pages->for_each_unit(run.offset, run.offset + run.size, [&](std::uint64_t at, std::uint64_t n) {
          if (at >= run.offset && at + n <= run.offset + run.size) inside.emplace_back(at, n);
        });
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
    // Within 2% of the peak below the retention budget, a trim is near and
    // a good-fit block that lands in a wholly free unit would keep that unit
    // from going back: place it like a growing block instead (mapped pages
    // first, then fewest free units pinned). Scaled vision_mix traces
    // (sizes x0.5..x2): worst ratio 1.0922 -> 1.0570; at every margin tried
    // (0, 1, 2, 3, 5%) the five reference traces kept their ratios only at
    // 1% and 2% (always on: llama 1.0279, vision_mix 1.0329).
    const bool near_trim = reserved() + peak_busy / 50 > allowed();
    const bool pins = near_trim && pages->free_unit_bytes(block->offset, block->size) != 0;
    pages->acquire(block->offset, block->size, runs);
    if (runs.empty() && !pins) return block->offset;
    // Slow path: good fit chose pages that are not mapped, and mapping costs
    // tens of microseconds a unit. Undo it and place the block where the
    // fewest pages need mapping (often none: a mapped hole elsewhere).
    pages->release(block->offset, block->size);
    (void)tlsf.free(block->offset);
    block = place_over_mapped(tlsf, *pages, round_up(size, kUnit), alignment);
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
      // Short of the budget even so: partly used units pin free pages (the
      // layout fragments), so later maps use units half as large, down to
      // kFragmentedUnitMin. A steady workload never gets here and keeps its
      // units. With the placement above, over the reference, scaled vision
      // and extra synthetic traces: worst ratio 1.0570 -> 1.0412 for units
      // 3739 -> 4206 (vision_mix 99 -> 141, the other four unchanged); an
      // 8 MiB floor from the start gives 1.0397 for 4758 (llama 96 -> 147),
      // halving down to 2 MiB 1.0483 for 4944.
      if (reserved() + need > limit && unit_bytes() > fragmented_unit_min()) ++unit_halvings;
    }
    const PageRun ahead = trimmed ? PageRun{} : growth_ahead(*block, size, runs.back(), need);
    // Each run is one backend call, cut into units (see PoolOptions::map_unit_*).
    // A run of up to 1.5 units is one unit: a 22 MiB block at 16 MiB units
    // was a 16 + 6 MiB pair (llama_generate 126 -> 96 units, no ratio moved
    // on any trace measured). The pages mapped ahead start where the block's
    // last run ends and join it in ONE unit: the two were always mapped one
    // after the other, and a unit costs the same whatever its size, so this
    // halves the cost of loading a model's small tensors (units:
    // synth_segmentation 238 -> 184, synth_bert_random 129 -> 88,
    // synth_model_swap 375 -> 296, llama_generate 148 -> 126, vision_mix
    // 102 -> 102; every ratio the same). What is lost is handing back the
    // ahead alone while the block lives.
    const std::uint64_t unit = unit_bytes();
    auto unit_for = [&](const PageRun& r) { return r.size <= unit + unit / 2 ? 0 : unit; };
    for (std::size_t i = 0; i < runs.size(); ++i) {
      PageRun run = runs[i];
      std::uint64_t run_unit = unit_for(run);
      if (ahead.size != 0 && i + 1 == runs.size()) {
        run.size += ahead.size;
        run_unit = 0;
      }
      ++map_calls;
      auto map_run = [&] { return backend.map(*arena, run.offset - arena->base, run.size, run_unit); };
      auto mapped = mapping_call(map_run);
      if (!mapped && run.size != runs[i].size) {
        // Mapping ahead is optional: map the block's own pages alone.
        run = runs[i];
        run_unit = unit_for(run);
        ++map_calls;
        mapped = mapping_call(map_run);
      }
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
          pages->for_each_unit(runs[j].offset, runs[j].offset + runs[j].size,
                               [&](std::uint64_t, std::uint64_t) { ++unmapped_units; });
          pages->mark_unmapped(runs[j]);
        }
        pages->release(block->offset, block->size);
        (void)tlsf.free(block->offset);
        Error e = mapped.error();
        e.message = fmt::format("mapping {} for a {} block on {}: {}", format_size(run.size),
                                format_size(size), opt.device.to_string(), e.message);
        return fail(std::move(e));
      }
      Backend::for_each_map_unit(run.size, run_unit, [&](std::uint64_t at, std::uint64_t n) {
        pages->mark_mapped({run.offset + at, n});
        ++mapped_units;
      });
    }
    return block->offset;
  }

  // Mapping unit now: peak_busy / map_unit_divisor within [map_unit_min,
  // map_unit_max], whole pages, at least one.
  std::uint64_t unit_bytes() const {
    const std::uint64_t lo = opt.map_unit_min, hi = std::max(opt.map_unit_min, opt.map_unit_max);
    const std::uint64_t want = std::clamp(peak_busy / std::max<std::uint64_t>(1, opt.map_unit_divisor), lo, hi);
    if (unit_halvings == 0) return std::max<std::uint64_t>(1, want / page) * page;
    return std::max(fragmented_unit_min(), (want >> std::min(unit_halvings, 63u)) / page * page);
  }
  // Floor of units once the layout fragments (see take()): 8 MiB, or
  // map_unit_min when lower, whole pages.
  static constexpr std::uint64_t kFragmentedUnitMin = 8 * kMiB;
  std::uint64_t fragmented_unit_min() const {
    return std::max<std::uint64_t>(1, std::min(kFragmentedUnitMin, opt.map_unit_min) / page) * page;
  }

  // Growth (nothing had to be trimmed) of a small block at the end of mapped
  // memory: the idle pages after it, within the budget, retain_fraction of
  // the busy bytes and map_ahead_max, to be mapped in one unit with the
  // block's last run (see take()), so the small blocks that follow (a
  // model's tensors, one after another) find their pages mapped. Empty when
  // not.
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
  // Returns an empty slab span.
  void drop_span(std::uint64_t span) {
    if (live_slots) live_slots->close_span(span);
    give_back(span);
  }

  // ----- thread caches (see thread_cache.hpp) ------------------------------------
  ThreadCache& my_cache() {
    if (tls_last_id == id) return *tls_last;
    return find_my_cache();
  }
  ThreadCache& find_my_cache() {
    auto& t = tls_caches;
    for (auto& e : t.entries)
      if (e.pool_id == id) {
        tls_last_id = id;
        tls_last = e.cache.get();
        return *tls_last;
      }
    std::erase_if(t.entries, [](const TlsCaches::Entry& e) {
      std::lock_guard g(e.cache->mu);
      return e.cache->pool == nullptr;
    });
    auto c = std::make_shared<ThreadCache>();
    c->pool = this;
    c->return_to_pool = [](ThreadCache& tc) {
      auto* m = static_cast<Impl*>(tc.pool);
      std::lock_guard lock(m->mu);
      m->absorb(tc);
    };
    {
      std::lock_guard g(caches_mu);
      std::erase_if(caches, [](const std::shared_ptr<ThreadCache>& x) {
        std::lock_guard cg(x->mu);
        return x->exited;
      });
      caches.push_back(c);
    }
    t.entries.push_back({id, c});
    tls_last_id = id;
    tls_last = c.get();
    return *c;
  }

  // The pool lock, for the calls users make: counts the times it was found
  // held, and turns medium caching on at kContendedToCache (see live_blocks).
  std::unique_lock<SpinLock> lock_pool() {
    if (mu.try_lock()) return std::unique_lock<SpinLock>(mu, std::adopt_lock);
    // Counted only until caching is on: the counter shares a line with what
    // every cached call reads, and a write per contended lock would bounce it.
    if (live_blocks && !medium_caching.load(std::memory_order_relaxed) &&
        contended.fetch_add(1, std::memory_order_relaxed) + 1 == kContendedToCache)
      medium_caching.store(true, std::memory_order_release);
    return std::unique_lock<SpinLock>(mu);
  }

  // Pool lock held: moves a cache's counters into the pool's. A thread's
  // deltas can be negative (it frees what another allocated); note_peaks()
  // skips the moments the sum dips below zero.
  void fold(ThreadCache& c) {
    // The cache's own high point since the last fold, on top of the pool's
    // count now: exact with one thread; with several, an estimate (other
    // threads' unfolded operations are not in `allocated` yet).
    const auto high_allocated = static_cast<std::int64_t>(allocated) + c.allocated_high;
    const auto high_live = static_cast<std::int64_t>(live) + c.live_high;
    if (high_allocated >= 0) peak_allocated = std::max(peak_allocated, static_cast<std::uint64_t>(high_allocated));
    if (high_live >= 0) peak_live = std::max(peak_live, static_cast<std::uint64_t>(high_live));
    allocated += static_cast<std::uint64_t>(c.allocated_delta);
    live += static_cast<std::uint64_t>(c.live_delta);
    total_allocs += c.allocs;
    total_frees += c.frees;
    c.allocated_delta = c.live_delta = c.allocated_high = c.live_high = 0;
    c.allocs = c.frees = 0;
    note_peaks();
  }
  // Pool lock held: returns a bin's slots above `keep` to the slab.
  void flush_bin(ThreadCache& c, int cls, std::uint32_t keep) {
    auto& b = c.bins[static_cast<std::size_t>(cls)];
    while (b.count > keep) {
      auto r = slab.free(b.slots[--b.count]);
      if (r.released_span) drop_span(*r.released_span);
    }
  }
  // Pool lock held: takes everything a cache holds.
  void absorb(ThreadCache& c) {
    fold(c);
    for (int cls = 0; cls < SlabAllocator::kClassCount; ++cls) flush_bin(c, cls, 0);
    for (int cls = 0; cls < ThreadCache::kMediumClasses; ++cls) flush_medium(c, cls, 0);
  }
  // Pool lock held: returns a medium bin's blocks above `keep` to TLSF (their
  // counts left the pool when they were cached: release_block, not a free).
  void flush_medium(ThreadCache& c, int cls, std::uint32_t keep) {
    auto& b = c.medium[static_cast<std::size_t>(cls)];
    while (b.count > keep) {
      const std::uint64_t address = b.blocks[--b.count];
      c.medium_cached -= ThreadCache::medium_bytes(cls);
      // A binned block's word is "cached" and only its owner (holding the
      // cache lock, as here) changes it; anything else is a broken table,
      // and the block is then leaked rather than freed twice.
      auto e = live_blocks->find(address);
      if (!e || !e.cached() || !live_blocks->erase(e)) continue;
      (void)release_block(address);
    }
  }
  // No lock held: every cache gives its slots and counts back (statistics,
  // trim and snapshots see cached slots as free). Caches stay registered.
  // Returns the bytes the caches held.
  std::uint64_t drain_caches() {
    if (!live_slots) return 0;
    std::uint64_t taken = 0;
    std::lock_guard g(caches_mu);
    for (auto& c : caches) {
      std::lock_guard cg(c->mu);
      if (c->pool == nullptr) continue;
      taken += c->cached_bytes();
      std::lock_guard lock(mu);
      absorb(*c);
    }
    return taken;
  }
  // Cache lock held: one slot for the user, counted like any allocation (with
  // the pressure ladder when it fails), plus up to half a bin more from spans
  // already open (no new span, so a refill never maps memory for the cache).
  Result<std::uint64_t> refill(ThreadCache& c, std::uint64_t size) {
    auto lock = lock_pool();
    fold(c);
    auto r = allocate_locked(size);
    if (!r) return r;
    const int cls = ThreadCache::class_of(size);
    auto& b = c.bins[static_cast<std::size_t>(cls)];
    const std::uint32_t want = ThreadCache::capacity(cls) / 2;
    auto no_new_span = []() -> std::optional<std::uint64_t> { return std::nullopt; };
    while (b.count < want) {
      auto slot = slab.allocate(size, no_new_span);
      if (!slot) break;
      b.slots[b.count++] = *slot;
    }
    return r;
  }
  Result<std::uint64_t> cached_allocate(std::uint64_t size) {
    ThreadCache& c = my_cache();
    std::lock_guard g(c.mu);
    const int cls = ThreadCache::class_of(size);
    auto& b = c.bins[static_cast<std::size_t>(cls)];
    std::uint64_t address = 0;
    if (b.count != 0) {
      address = b.slots[--b.count];
      c.count_allocate(ThreadCache::slot_bytes(cls));
    } else {
      auto r = refill(c, size);
      if (!r) return r;
      address = *r;
    }
    if (!live_slots->set_live(address))
      return fail(ErrorCode::internal, "slot {:#x} handed out twice on {}", address, opt.device.to_string());
    return address;
  }
  // Small blocks of a thread whose caches are gone (its thread-local
  // destructors are running): through the pool lock, live bits kept.
  Result<std::uint64_t> uncached_small_allocate(std::uint64_t size) {
    std::lock_guard lock(mu);
    auto r = allocate_locked(size);
    if (r && !live_slots->set_live(*r))
      return fail(ErrorCode::internal, "slot {:#x} handed out twice on {}", *r, opt.device.to_string());
    return r;
  }
  Result<void> uncached_small_free(std::uint64_t address, const LiveSlots::Slot& slot) {
    std::lock_guard lock(mu);
    if (!take_back(address, slot)) return refuse_double_free(address);
    return free_locked(address);
  }
  // Clears the live bit of a slot the user gives back; false (and nothing
  // changed) when it was not live, or when the address is a stale pointer
  // whose span was closed and reopened for another class between find() and
  // the clear (the bit then belonged to someone else's slot, and goes back).
  bool take_back(std::uint64_t address, const LiveSlots::Slot& slot) {
    if (!LiveSlots::clear_live(slot)) return false;
    if (live_slots->slot_size(address) == slot.size()) return true;
    (void)LiveSlots::set_live(slot);
    return false;
  }

  Result<void> refuse_double_free(std::uint64_t address) const {
    return fail(ErrorCode::invalid_argument, "double free of {:#x} (a small block that is not live)", address);
  }
  // A small slot back from the user. The live bit is cleared under the cache
  // lock, so validate() (which holds every cache lock) never sees a slot
  // that is neither live nor cached.
  Result<void> cached_free(std::uint64_t address, const LiveSlots::Slot& slot) {
    ThreadCache& c = my_cache();
    std::lock_guard g(c.mu);
    if (!take_back(address, slot)) return refuse_double_free(address);
    const std::uint64_t slot_size = slot.size();
    const int cls = ThreadCache::class_of(slot_size);
    auto& b = c.bins[static_cast<std::size_t>(cls)];
    if (b.count == ThreadCache::capacity(cls)) {
      auto lock = lock_pool();
      fold(c);
      flush_bin(c, cls, b.count / 2);
    }
    b.slots[b.count++] = address;
    c.count_free(slot_size);
    return {};
  }

  // A medium block (contended pools only): from this thread's bin of its
  // class or of the next one up, else through the pool lock at the class
  // size, tracked so that its free can come back to a cache. The next class
  // (up to a quarter larger) took the misses of the 512 B – 2 MiB thread
  // benchmark from 9 % to 2.5 % of medium allocations and the flushes from
  // 8 % to 2 % of frees (development machine, 1-8 threads).
  Result<std::uint64_t> cached_medium_allocate(std::uint64_t size) {
    ThreadCache& c = my_cache();
    std::lock_guard g(c.mu);
    const int cls = ThreadCache::medium_class(size);
    int use = cls;
    if (c.medium[static_cast<std::size_t>(cls)].count == 0 && cls + 1 < ThreadCache::kMediumClasses) use = cls + 1;
    auto& b = c.medium[static_cast<std::size_t>(use)];
    if (b.count != 0) {
      const std::uint64_t bytes = ThreadCache::medium_bytes(use);
      const std::uint64_t address = b.blocks[--b.count];
      c.medium_cached -= bytes;
      auto e = live_blocks->find(address);
      if (!LiveBlocks::to_live(e))
        return fail(ErrorCode::internal, "cached block {:#x} is not cached in the live table", address);
      c.count_allocate(bytes);
      return address;
    }
    const std::uint64_t bytes = ThreadCache::medium_bytes(cls);
    auto lock = lock_pool();
    fold(c);
    auto r = allocate_locked(bytes);  // out of memory: DevicePool::allocate drains the caches and retries
    // Tracked only as the TLSF block of exactly its class size it should be;
    // untracked (the table is full) its free takes the pool lock.
    if (r && tlsf.allocated_size(*r) == bytes) (void)live_blocks->insert(*r, bytes);
    return r;
  }
  // A tracked medium block back from the user: into this thread's bin. The
  // swap to "cached" happens under the cache lock, so validate() (which holds
  // every cache lock) sees each tracked block either live or in a bin.
  Result<void> cached_medium_free(std::uint64_t address, LiveBlocks::Entry e) {
    ThreadCache& c = my_cache();
    std::lock_guard g(c.mu);
    if (!LiveBlocks::to_cached(e)) {
      // Cached already (a double free), or the entry changed since find():
      // the pool lock decides.
      auto lock = lock_pool();
      return free_tracked_locked(address, kRecheckSlot);
    }
    const std::uint64_t bytes = e.size();
    const int cls = ThreadCache::medium_class(bytes);
    auto& b = c.medium[static_cast<std::size_t>(cls)];
    if (b.count == ThreadCache::kMediumPerBin || c.medium_cached + bytes > ThreadCache::kMediumBytes) {
      auto lock = lock_pool();
      fold(c);
      if (b.count == ThreadCache::kMediumPerBin) flush_medium(c, cls, b.count / 2);
      for (int k = ThreadCache::kMediumClasses; k-- > 0 && c.medium_cached + bytes > ThreadCache::kMediumBytes;)
        flush_medium(c, k, 0);
    }
    b.blocks[b.count++] = address;
    c.medium_cached += bytes;
    c.count_free(bytes);
    return {};
  }
  // Pool lock held: a free that did not go through a cache. A tracked block
  // is live (its entry goes) or cached (a double free, refused).
  // `spans_seen`: spans_opened when the caller's lock-free slot lookup found
  // nothing (kRecheckSlot: look again regardless).
  static constexpr std::uint64_t kRecheckSlot = ~std::uint64_t{0};
  Result<void> free_tracked_locked(std::uint64_t address, std::uint64_t spans_seen) {
    // The table is empty until medium caching first tracks a block: no
    // lookup on the free path of a pool that never did (every replay).
    if (live_blocks && live_blocks->size() != 0)
      if (auto e = live_blocks->find(address)) {
        if (e.cached() || !live_blocks->erase(e))
          return fail(ErrorCode::invalid_argument, "double free of {:#x} (a medium block that is not live)",
                      address);
        auto r = free_locked(address);
        if (!r) (void)live_blocks->insert(address, e.size());
        return r;
      }
    // A slot address here missed the lock-free lookup (its span was not
    // open then): a stale pointer. If a span opened there since, the slot
    // must still be live to be freed, or a cached slot would be freed too.
    // (Only if any span opened since: a lookup on every large free cost
    // llama_generate 7 % more instructions.)
    if (live_slots && spans_opened.load(std::memory_order_relaxed) != spans_seen)
      if (const auto slot = live_slots->find(address); slot && !take_back(address, slot))
        return refuse_double_free(address);
    return free_locked(address);
  }

  // A block of `size` by whichever path serves it: the thread caches (small;
  // medium when contended) or the pool lock.
  [[gnu::always_inline]] Result<std::uint64_t> allocate_any(std::uint64_t size) {
    if (live_slots && size != 0 && SlabAllocator::is_small(size))
      return tls_gone ? uncached_small_allocate(size) : cached_allocate(size);
    if (ThreadCache::is_medium(size) && medium_caching.load(std::memory_order_acquire) && !tls_gone &&
        ThreadCache::medium_bytes(ThreadCache::medium_class(size)) < opt.huge_threshold)
      return cached_medium_allocate(size);
    auto lock = lock_pool();
    return allocate_locked(size);
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
        if (live_slots) {
          live_slots->open_span(*span, SlabAllocator::class_size(size));
          spans_opened.fetch_add(1, std::memory_order_release);
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
      if (r.released_span) drop_span(*r.released_span);
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
  {
    // Threads that still hold a cache of this pool find it orphaned.
    std::lock_guard g(m.caches_mu);
    for (auto& c : m.caches) {
      std::lock_guard cg(c->mu);
      c->pool = nullptr;
      c->bins = {};
    }
  }
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
    if (options.thread_cache) {
      m.live_slots = std::make_unique<LiveSlots>(range->base, m.opt.capacity);
      if (options.medium_cache != PoolOptions::MediumCache::Never) {
        m.live_blocks = std::make_unique<LiveBlocks>(range->base);
        m.medium_caching.store(options.medium_cache == PoolOptions::MediumCache::Always);
      }
    }
  } else {
    m.page = info.granularity != 0 ? info.granularity : 2 * kMiB;
  }
  if (m.opt.huge_threshold == 0)
    m.opt.huge_threshold = options.mode == PoolMode::Segments ? kGiB : ~std::uint64_t{0};
  if (m.opt.huge_threshold < 2 * SlabAllocator::kMaxSize) m.opt.huge_threshold = 2 * SlabAllocator::kMaxSize;
  return pool;
}

Result<void*> DevicePool::allocate(std::uint64_t size) {
  auto& m = *impl_;
  auto r = m.allocate_any(size);
  if (!r && r.error().code == ErrorCode::out_of_memory) [[unlikely]] {
    if (m.drain_caches() != 0) {
      // What the thread caches held (up to 2 MiB of slots and 16 MiB of
      // medium blocks a thread) may be what was missing: it is back, try
      // once more. The first attempt counted a failure the call may not end with.
      {
        std::lock_guard lock(m.mu);
        --m.failed;
      }
      r = m.allocate_any(size);
    }
  }
  if (!r) return fail(r.error());
  return reinterpret_cast<void*>(*r);
}

Result<void*> DevicePool::allocate(std::uint64_t size, const Stream& stream) {
  auto& m = *impl_;
  std::lock_guard lock(m.mu);
  auto r = m.allocate_on(size, stream);
  if (!r) return fail(r.error());
  if (const auto slot = m.live_slots ? m.live_slots->find(*r) : LiveSlots::Slot{}; slot && !LiveSlots::set_live(slot))
    return fail(ErrorCode::internal, "slot {:#x} handed out twice on {}", *r, m.opt.device.to_string());
  return reinterpret_cast<void*>(*r);
}

Result<void> DevicePool::deallocate(void* ptr) {
  auto& m = *impl_;
  const auto address = reinterpret_cast<std::uint64_t>(ptr);
  // Read before the lookup: a span opening after it makes the locked path look again.
  const std::uint64_t spans_seen = m.spans_opened.load(std::memory_order_acquire);
  if (m.live_slots)
    if (auto slot = m.live_slots->find(address))
      return tls_gone ? m.uncached_small_free(address, slot) : m.cached_free(address, slot);
  if (m.medium_caching.load(std::memory_order_acquire) && !tls_gone)
    if (auto e = m.live_blocks->find(address)) return m.cached_medium_free(address, e);
  auto lock = m.lock_pool();
  return m.free_tracked_locked(address, spans_seen);
}

Result<void> DevicePool::deallocate(void* ptr, const Stream& stream) {
  auto& m = *impl_;
  const auto address = reinterpret_cast<std::uint64_t>(ptr);
  std::lock_guard lock(m.mu);  // before the live bit, so validate() sees no half-done free
  // Looked up under the lock: spans open and close under it, so a stale
  // pointer cannot miss a span that opens between lookup and free.
  const LiveSlots::Slot slot = m.live_slots ? m.live_slots->find(address) : LiveSlots::Slot{};
  if (slot && !m.take_back(address, slot)) return m.refuse_double_free(address);
  // A tracked medium block leaves the table (a cached one is not the user's).
  LiveBlocks::Entry tracked =
      m.live_blocks && m.live_blocks->size() != 0 ? m.live_blocks->find(address) : LiveBlocks::Entry{};
  if (tracked && (tracked.cached() || !m.live_blocks->erase(tracked)))
    return fail(ErrorCode::invalid_argument, "double free of {:#x} (a medium block that is not live)", address);
  auto r = m.free_on(address, stream);
  if (!r && slot) (void)LiveSlots::set_live(slot);  // refused: the user still holds it
  if (!r && tracked) (void)m.live_blocks->insert(address, tracked.size());
  return r;
}

std::optional<std::uint64_t> DevicePool::block_size(const void* ptr) const {
  auto addr = reinterpret_cast<std::uint64_t>(ptr);
  if (impl_->live_slots) {
    if (auto slot = impl_->live_slots->find(addr))
      return LiveSlots::is_live(slot) ? std::optional<std::uint64_t>(slot.size()) : std::nullopt;
  }
  if (impl_->live_blocks)
    if (auto e = impl_->live_blocks->find(addr))
      return e.cached() ? std::nullopt : std::optional<std::uint64_t>(e.size());
  std::lock_guard lock(impl_->mu);
  if (impl_->pending.find(addr)) return std::nullopt;
  return impl_->live_block_size(addr);
}

std::uint64_t DevicePool::reserved_bytes() const {
  std::lock_guard lock(impl_->mu);
  return impl_->reserved();
}

PoolStats DevicePool::stats() const {
  impl_->drain_caches();
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

PoolStats DevicePool::counters() const {
  std::lock_guard lock(impl_->mu);
  const auto& m = *impl_;
  PoolStats s;
  s.allocated_bytes = m.allocated;
  s.active_bytes = m.tlsf.used_bytes() + m.huge_live_bytes;
  s.reserved_bytes = m.reserved();
  s.peak_allocated_bytes = m.peak_allocated;
  s.peak_active_bytes = m.peak_active;
  s.peak_reserved_bytes = m.peak_reserved;
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
  return s;
}

std::uint64_t DevicePool::trim() {
  impl_->drain_caches();
  std::lock_guard lock(impl_->mu);
  impl_->flush_stash();  // views and trims see it freed
  auto& m = *impl_;
  if (!m.streams.empty()) m.drain_streams(/*wait=*/true);
  std::uint64_t released = 0;
  for (auto span : m.slab.release_empty_spans()) m.drop_span(span);
  released += m.release_slack(~std::uint64_t{0} / 2);
  if (m.opt.mode == PoolMode::Segments) released += m.release_empty_segments();
  released += m.backend.trim();
  return released;
}

std::vector<SegmentInfo> DevicePool::snapshot() const {
  impl_->drain_caches();
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
  // Freeze every thread cache (registry, caches, then the pool: the lock
  // order), so the check is exact even while other threads use the pool.
  std::unique_lock<std::mutex> registry(impl_->caches_mu, std::defer_lock);
  std::vector<std::unique_lock<SpinLock>> frozen;
  if (impl_->live_slots) {
    registry.lock();
    for (auto& c : impl_->caches) frozen.emplace_back(c->mu);
  }
  std::lock_guard lock(impl_->mu);
  impl_->flush_stash();  // views and trims see it freed
  std::unordered_map<std::uint64_t, std::uint64_t> cached;  // slot → size, every cache
  for (auto& c : impl_->caches) {
    if (c->pool == nullptr) continue;
    impl_->fold(*c);
    for (int cls = 0; cls < SlabAllocator::kClassCount; ++cls)
      for (std::uint32_t i = 0; i < c->bins[static_cast<std::size_t>(cls)].count; ++i)
        if (!cached.emplace(c->bins[static_cast<std::size_t>(cls)].slots[i], ThreadCache::slot_bytes(cls)).second)
          return fail(ErrorCode::internal, "pool: a slot sits in two thread caches");
    std::uint64_t medium_bytes = 0;
    for (int cls = 0; cls < ThreadCache::kMediumClasses; ++cls)
      for (std::uint32_t i = 0; i < c->medium[static_cast<std::size_t>(cls)].count; ++i) {
        medium_bytes += ThreadCache::medium_bytes(cls);
        if (!cached.emplace(c->medium[static_cast<std::size_t>(cls)].blocks[i], ThreadCache::medium_bytes(cls)).second)
          return fail(ErrorCode::internal, "pool: a medium block sits in two thread caches");
      }
    if (medium_bytes != c->medium_cached)
      return fail(ErrorCode::internal, "pool: a cache counts {} medium bytes, its bins hold {}", c->medium_cached,
                  medium_bytes);
  }
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
  std::uint64_t cached_bytes = 0;
  for (const auto& [slot, size] : cached) cached_bytes += size;
  std::uint64_t expect = m.slab.used_bytes() + (m.tlsf.used_bytes() - m.slab.span_bytes()) + m.huge_live_bytes;
  if (expect != m.allocated + pending_bytes + cached_bytes)
    return fail(ErrorCode::internal, "pool: allocated {} + pending {} + cached {} != blocks {}", m.allocated,
                pending_bytes, cached_bytes, expect);
  if (m.live_slots) {
    // Each slot the slab holds is exactly one of: held by the user (live
    // bit), cached by a thread, or pending a stream-ordered free; no live bit
    // is set anywhere else.
    std::optional<Error> bad;
    std::uint64_t user_slots = 0, user_bits = 0;
    m.slab.for_each_slot([&](std::uint64_t off, std::uint64_t size) {
      const bool user = m.live_slots->is_live(off), in_cache = cached.contains(off);
      const bool pend = m.pending.find(off).has_value();
      if (int(user) + int(in_cache) + int(pend) != 1 && !bad)
        bad = Error{ErrorCode::internal, fmt::format("pool: slot {:#x} is live {} / cached {} / pending {}", off,
                                                     user, in_cache, pend)};
      if (m.live_slots->slot_size(off) != size && !bad)
        bad = Error{ErrorCode::internal, fmt::format("pool: slot {:#x} has size {} in the live table", off, size)};
      user_slots += user ? 1 : 0;
    });
    if (bad) return fail(std::move(*bad));
    m.tlsf.for_each_block([&](std::uint64_t off, std::uint64_t, bool is_free) {
      if (is_free || !m.slab.owns_span(off)) return;
      for (auto w : m.live_slots->live_bits(off)) user_bits += static_cast<std::uint64_t>(std::popcount(w));
    });
    if (user_bits != user_slots)
      return fail(ErrorCode::internal, "pool: {} live bits set, {} slots held by users", user_bits, user_slots);
  }
  if (m.live_blocks) {
    if (auto r = m.live_blocks->validate(); !r) return r;
    // Each tracked medium block is a live TLSF block of its size, cached
    // exactly when it sits in a thread's bin, and never pending.
    std::optional<Error> bad;
    std::size_t entries = 0, cached_entries = 0, medium_in_bins = 0;
    for (const auto& [address, size] : cached) medium_in_bins += ThreadCache::is_medium(size) ? 1 : 0;
    m.live_blocks->for_each([&](std::uint64_t address, std::uint64_t size, bool is_cached) {
      ++entries;
      cached_entries += is_cached ? 1 : 0;
      const auto in_cache = cached.find(address);
      if (bad) return;
      if (m.tlsf.allocated_size(address) != size)
        bad = Error{ErrorCode::internal, fmt::format("pool: tracked block {:#x} of {} is no TLSF block of that size",
                                                     address, size)};
      else if (is_cached != (in_cache != cached.end() && in_cache->second == size))
        bad = Error{ErrorCode::internal,
                    fmt::format("pool: tracked block {:#x} cached {} but in a bin {}", address, is_cached,
                                in_cache != cached.end())};
      else if (m.pending.find(address))
        bad = Error{ErrorCode::internal, fmt::format("pool: tracked block {:#x} is pending", address)};
    });
    if (bad) return fail(std::move(*bad));
    if (cached_entries != medium_in_bins)
      return fail(ErrorCode::internal, "pool: {} medium blocks in bins, {} cached in the table", medium_in_bins,
                  cached_entries);
    if (entries != m.live_blocks->size())
      return fail(ErrorCode::internal, "pool: live table counts {} entries, holds {}", m.live_blocks->size(), entries);
  }
  if (m.pages) {
    // The page map checks its units itself; here, that they are the units
    // the pool mapped and has not unmapped.
    std::uint64_t units = 0;
    m.pages->for_each_unit(m.pages->base(), m.pages->base() + m.pages->size(),
                           [&](std::uint64_t, std::uint64_t) { ++units; });
    if (units != m.mapped_units - m.unmapped_units)
      return fail(ErrorCode::internal, "pool: page map holds {} units, pool mapped {} and unmapped {}", units,
                  m.mapped_units, m.unmapped_units);
  }
  std::uint64_t huge_cached = 0;
  for (const auto& h : m.huge_cache) huge_cached += h.size;
  if (huge_cached != m.huge_cache_bytes) return fail(ErrorCode::internal, "pool: huge cache bytes disagree");
  return {};
}

const PoolOptions& DevicePool::options() const noexcept { return impl_->opt; }
Backend& DevicePool::backend() noexcept { return impl_->backend; }

}  // namespace memd
