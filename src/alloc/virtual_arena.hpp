// alloc/virtual_arena.hpp — an arena over one reserved address range whose
// physical pages are mapped on demand.
//
// The range is the pool's capacity; TLSF carves it as if it were all there,
// and the page map (core/page_map.hpp) tracks which pages live blocks touch
// and which are mapped. A block whose pages are all mapped costs no backend
// call. Where good fit would need pages mapped, placement looks for the free
// block that needs fewest (core/placement.hpp; usually a mapped hole
// elsewhere), since each map costs tens of microseconds. Physical memory is
// mapped in units (alloc/retention.hpp: one backend allocation each) and only
// whole units are unmapped, when the retention budget asks for slack.
//
// The last block a user freed (>= kKeepMin) is kept whole, pages still
// counted live, for an immediate re-allocation of exactly its size — the
// common pattern of inference loops; any other allocation, trim or
// statistic returns it to TLSF first. It saves the TLSF and page-map work of
// the pair (docs/benchmarks.md, "Placement costs less; the exact-size keep
// from 16 KiB").
//
// Thread safety: none; used under the pool lock.
#pragma once

#include <memory>
#include <vector>

#include "alloc/arena.hpp"
#include "alloc/pool_options.hpp"
#include "alloc/pool_stats.hpp"
#include "backends/backend.hpp"
#include "core/page_map.hpp"

namespace memd {

class VirtualArena final : public Arena {
 public:
  static constexpr std::uint64_t kKeepMin = 16 * 1024;

  // Address space per byte of capacity. The capacity bounds physical bytes
  // (checked before every map); the addresses are twice as many, so that a
  // fragmented address space never refuses what physical memory could hold
  // (repeated jittered work exhausted a range the size of the capacity while
  // half of it was unmapped: docs/benchmarks.md, "address space").
  static constexpr std::uint64_t kAddressSpaceFactor = 2;
  static std::uint64_t address_space(const PoolOptions& options) noexcept {
    return options.capacity * kAddressSpaceFactor;
  }
  // Reserves address_space(options) bytes on the device, for the arena to
  // take over.
  static Result<VirtualRange> reserve(Backend& backend, const PoolOptions& options);
  // Takes over `range` (released with the arena); counts its reservation.
  VirtualArena(Backend& backend, const PoolOptions& options, std::uint64_t page, PoolCounters& counters,
               VirtualRange range);
  ~VirtualArena() override;

  Result<std::uint64_t> take(std::uint64_t size, std::uint64_t alignment, Footprint& footprint) override;
  std::optional<std::uint64_t> give_back(std::uint64_t address) override;
  std::optional<std::uint64_t> release(std::uint64_t address) override;
  std::optional<std::uint64_t> take_kept(std::uint64_t size) override;
  void flush_kept() override;
  bool is_kept(std::uint64_t address) const override { return kept_.size != 0 && address == kept_.address; }
  std::uint64_t kept_bytes() const override { return kept_.size; }

  std::uint64_t held_bytes() const override { return pages_.mapped_bytes(); }
  std::uint64_t busy_bytes() const override { return pages_.busy_bytes(); }
  std::uint64_t release_free(std::uint64_t bytes) override;
  std::uint64_t release_empty() override { return 0; }
  std::uint64_t releasable_bytes() const override;

  void free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const override;
  std::string region_kind() const override { return "arena"; }
  std::uint64_t region_backed_bytes(std::uint64_t) const override { return pages_.mapped_bytes(); }
  std::uint64_t regions_held() const override { return 1; }
  Result<void> validate() const override;
  void units(std::vector<DefragRange>& out) const override;
  Result<std::uint64_t> take_at(std::uint64_t address, std::uint64_t size) override;
  Result<void> move_units(std::uint64_t from, std::uint64_t to) override;

  const VirtualRange& range() const noexcept { return range_; }
  const PageMap& pages() const noexcept { return pages_; }

 private:
  // Maps the runs `block` needs (after placement), cut into units; rolls
  // back and returns the error if any map fails.
  Result<void> map_runs(const TlsfBlock& block, std::uint64_t size, std::vector<PageRun>& runs, bool trimmed,
                        Footprint& footprint);
  PageRun growth_ahead(const TlsfBlock& block, std::uint64_t size, const PageRun& last_run, std::uint64_t need,
                       const Footprint& footprint) const;
  template <typename F>
  auto mapping_call(F&& f);

  Backend& backend_;
  const PoolOptions& options_;
  const std::uint64_t page_;
  PoolCounters& counters_;
  VirtualRange range_;
  PageMap pages_;
  struct Kept {
    std::uint64_t address = 0, size = 0;
  } kept_;
};

}  // namespace memd
