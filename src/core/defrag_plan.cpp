// The compaction plan; see defrag_plan.hpp.
#include "core/defrag_plan.hpp"

#include <algorithm>
#include <iterator>
#include <map>
#include <numeric>
#include <optional>

namespace memd {
namespace {

using Intervals = std::map<std::uint64_t, std::uint64_t>;  // start → end

std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

// Mapped memory as maximal runs: adjacent units join (the page map's view).
std::vector<DefragRange> mapped_runs(const DefragSpace& s) {
  if (s.page == 0) return s.regions;
  std::vector<DefragRange> out;
  for (const auto& u : s.units) {
    if (!out.empty() && out.back().offset + out.back().size == u.offset) out.back().size += u.size;
    else out.push_back(u);
  }
  return out;
}

// Index of the region holding `at`, or -1.
int region_of(const std::vector<DefragRange>& regions, std::uint64_t at) {
  auto it = std::upper_bound(regions.begin(), regions.end(), at,
                             [](std::uint64_t v, const DefragRange& r) { return v < r.offset; });
  if (it == regions.begin()) return -1;
  --it;
  return at < it->offset + it->size ? static_cast<int>(it - regions.begin()) : -1;
}

// Free ranges of the space split by whether pages are mapped: [mapped, unmapped].
std::pair<Intervals, Intervals> free_ranges(const DefragSpace& s) {
  Intervals mapped, unmapped;
  const auto runs = mapped_runs(s);
  auto add_gap = [&](std::uint64_t a, std::uint64_t b) {
    std::uint64_t cur = a;
    for (const auto& m : runs) {
      const std::uint64_t lo = std::max(a, m.offset), hi = std::min(b, m.offset + m.size);
      if (lo >= hi) continue;
      if (cur < lo) unmapped.emplace(cur, lo);
      mapped.emplace(lo, hi);
      cur = hi;
    }
    if (cur < b) unmapped.emplace(cur, b);
  };
  std::size_t bi = 0;
  for (const auto& r : s.regions) {
    std::uint64_t cur = r.offset;
    const std::uint64_t end = r.offset + r.size;
    while (bi < s.blocks.size() && s.blocks[bi].offset < end) {
      if (s.blocks[bi].offset > cur) add_gap(cur, s.blocks[bi].offset);
      cur = std::max(cur, s.blocks[bi].offset + s.blocks[bi].size);
      ++bi;
    }
    if (cur < end) add_gap(cur, end);
  }
  if (s.page == 0) unmapped.clear();
  return {std::move(mapped), std::move(unmapped)};
}

// Adds [a, b), joining neighbours of the same region.
void insert(Intervals& set, const std::vector<DefragRange>& regions, std::uint64_t a, std::uint64_t b) {
  if (a >= b) return;
  const int region = region_of(regions, a);
  auto next = set.lower_bound(a);
  if (next != set.begin()) {
    auto prev = std::prev(next);
    if (prev->second == a && region_of(regions, prev->first) == region) {
      a = prev->first;
      set.erase(prev);
    }
  }
  next = set.lower_bound(a);
  if (next != set.end() && next->first == b && region_of(regions, next->first) == region) {
    b = next->second;
    set.erase(next);
  }
  set.emplace(a, b);
}

// Removes [a, b), which must lie inside one interval; false when it does not.
bool erase(Intervals& set, std::uint64_t a, std::uint64_t b) {
  if (a >= b) return true;
  auto it = set.upper_bound(a);
  if (it == set.begin()) return false;
  --it;
  const auto [lo, hi] = *it;
  if (a < lo || b > hi) return false;
  set.erase(it);
  if (lo < a) set.emplace(lo, a);
  if (b < hi) set.emplace(b, hi);
  return true;
}

bool covered(const Intervals& set, std::uint64_t a, std::uint64_t b) {
  auto it = set.upper_bound(a);
  if (it == set.begin()) return false;
  --it;
  return a >= it->first && b <= it->second;
}

// Units (offset → bytes) that exactly tile [a, b), or nullopt.
std::optional<std::vector<DefragRange>> tiling(const std::map<std::uint64_t, std::uint64_t>& units, std::uint64_t a,
                                               std::uint64_t b) {
  std::vector<DefragRange> out;
  auto it = units.find(a);
  for (std::uint64_t at = a; at < b; ++it) {
    if (it == units.end() || it->first != at || it->first + it->second > b) return std::nullopt;
    out.push_back({it->first, it->second});
    at += it->second;
  }
  return out;
}

bool overlaps_block(const std::map<std::uint64_t, DefragBlock>& blocks, std::uint64_t a, std::uint64_t b,
                    std::uint64_t except) {
  auto it = blocks.lower_bound(a);
  if (it != blocks.begin()) {
    auto prev = std::prev(it);
    if (prev->first != except && prev->first + prev->second.size > a) return true;
  }
  for (; it != blocks.end() && it->first < b; ++it)
    if (it->first != except) return true;
  return false;
}

bool overlaps_unit(const std::map<std::uint64_t, std::uint64_t>& units, std::uint64_t a, std::uint64_t b) {
  auto it = units.lower_bound(a);
  if (it != units.begin() && std::prev(it)->first + std::prev(it)->second > a) return true;
  return it != units.end() && it->first < b;
}

}  // namespace

std::string_view to_string(DefragMoveKind kind) noexcept {
  switch (kind) {
    case DefragMoveKind::Copy: return "copy";
    case DefragMoveKind::Slide: return "slide";
    case DefragMoveKind::Remap: return "remap";
  }
  return "copy";
}

Result<void> validate(const DefragSpace& s) {
  if (s.page != 0 && (s.page & (s.page - 1)) != 0)
    return fail(ErrorCode::invalid_argument, "defrag space: page {} is not a power of two", s.page);
  for (std::size_t i = 0; i < s.regions.size(); ++i) {
    const auto& r = s.regions[i];
    if (r.size == 0) return fail(ErrorCode::invalid_argument, "defrag space: region {:#x} is empty", r.offset);
    if (i > 0 && s.regions[i - 1].offset + s.regions[i - 1].size > r.offset)
      return fail(ErrorCode::invalid_argument, "defrag space: regions at {:#x} and {:#x} overlap or are unsorted",
                  s.regions[i - 1].offset, r.offset);
  }
  if (s.page != 0)
    for (std::size_t i = 0; i < s.units.size(); ++i) {
      const auto& u = s.units[i];
      if (u.size == 0 || u.offset % s.page != 0 || u.size % s.page != 0)
        return fail(ErrorCode::invalid_argument, "defrag space: unit [{:#x}, +{}) is not whole pages", u.offset, u.size);
      if (i > 0 && s.units[i - 1].offset + s.units[i - 1].size > u.offset)
        return fail(ErrorCode::invalid_argument, "defrag space: units at {:#x} overlap or are unsorted", u.offset);
      const int r = region_of(s.regions, u.offset);
      if (r < 0 || region_of(s.regions, u.offset + u.size - 1) != r)
        return fail(ErrorCode::invalid_argument, "defrag space: unit [{:#x}, +{}) is outside a region", u.offset,
                    u.size);
    }
  const auto runs = mapped_runs(s);
  for (std::size_t i = 0; i < s.blocks.size(); ++i) {
    const auto& b = s.blocks[i];
    if (b.size == 0) return fail(ErrorCode::invalid_argument, "defrag space: block {:#x} is empty", b.offset);
    if (i > 0 && s.blocks[i - 1].offset + s.blocks[i - 1].size > b.offset)
      return fail(ErrorCode::invalid_argument, "defrag space: blocks at {:#x} overlap or are unsorted", b.offset);
    const int r = region_of(s.regions, b.offset);
    if (r < 0 || region_of(s.regions, b.offset + b.size - 1) != r)
      return fail(ErrorCode::invalid_argument, "defrag space: block [{:#x}, +{}) is outside a region", b.offset,
                  b.size);
    const bool on_mapped = std::any_of(runs.begin(), runs.end(), [&](const DefragRange& m) {
      return b.offset >= m.offset && b.offset + b.size <= m.offset + m.size;
    });
    if (!on_mapped)
      return fail(ErrorCode::invalid_argument, "defrag space: block [{:#x}, +{}) lies on unmapped pages", b.offset,
                  b.size);
  }
  return {};
}

Result<DefragPlan> plan_defrag(const DefragSpace& s, const DefragPlanOptions& options) {
  if (auto ok = validate(s); !ok) return fail(ok.error());
  const auto& regions = s.regions;
  // Rank: densest region first; a region's rank orders where blocks go.
  std::vector<std::uint64_t> live(regions.size(), 0);
  for (const auto& b : s.blocks) live[static_cast<std::size_t>(region_of(regions, b.offset))] += b.size;
  std::vector<std::size_t> order(regions.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    // x denser than y (long double holds both ratios exactly enough to rank).
    const auto dx = static_cast<long double>(live[x]) / static_cast<long double>(regions[x].size);
    const auto dy = static_cast<long double>(live[y]) / static_cast<long double>(regions[y].size);
    return dx > dy;
  });
  std::vector<std::size_t> rank(regions.size());
  for (std::size_t i = 0; i < order.size(); ++i) rank[order[i]] = i;

  auto [mapped_free, unmapped_free] = free_ranges(s);
  std::map<std::uint64_t, std::uint64_t> units;
  if (s.page != 0)
    for (const auto& u : s.units) units.emplace(u.offset, u.size);

  // Where each block is now (moves update it), and the blocks by place, so
  // "owns whole units" looks at today's neighbours, not the first picture.
  std::vector<std::uint64_t> at(s.blocks.size());
  std::map<std::uint64_t, std::uint64_t> placed;  // offset → bytes
  for (std::size_t i = 0; i < s.blocks.size(); ++i) {
    at[i] = s.blocks[i].offset;
    placed.emplace(at[i], s.blocks[i].size);
  }
  auto home_of = [&](std::size_t i) { return static_cast<std::size_t>(region_of(regions, at[i])); };
  // A block owns whole units: it starts on a page, the units exactly tile
  // its pages, and no other block starts inside them.
  auto owns_units = [&](std::size_t i) -> bool {
    if (s.page == 0 || at[i] % s.page != 0) return false;
    const std::uint64_t span = round_up(s.blocks[i].size, s.page);
    auto next = placed.upper_bound(at[i]);
    if (next != placed.end() && next->first < at[i] + span) return false;
    return tiling(units, at[i], at[i] + span).has_value();
  };
  // Compaction order of two places: region rank, then address.
  auto before = [&](std::uint64_t x, std::uint64_t y) {
    const auto rx = rank[static_cast<std::size_t>(region_of(regions, x))];
    const auto ry = rank[static_cast<std::size_t>(region_of(regions, y))];
    return rx != ry ? rx < ry : x < y;
  };

  std::vector<std::size_t> sources;
  for (std::size_t i = 0; i < s.blocks.size(); ++i)
    if (s.blocks[i].movable && s.blocks[i].size <= options.max_block_bytes) sources.push_back(i);
  auto in_order = [&] {
    std::stable_sort(sources.begin(), sources.end(), [&](std::size_t x, std::size_t y) { return before(at[x], at[y]); });
  };
  in_order();

  DefragPlan plan;
  auto record = [&](std::size_t i, const DefragMove& move) {
    const std::uint64_t size = s.blocks[i].size;
    switch (move.kind) {
      case DefragMoveKind::Copy:
        (void)erase(mapped_free, move.to, move.to + size);
        insert(mapped_free, regions, move.from, move.from + size);
        plan.copy_bytes += size;
        break;
      case DefragMoveKind::Slide:
        (void)erase(mapped_free, move.to, move.from);
        insert(mapped_free, regions, move.to + size, move.from + size);
        plan.copy_bytes += size;
        break;
      case DefragMoveKind::Remap: {
        const std::uint64_t span = move.remap_bytes;
        (void)erase(unmapped_free, move.to, move.to + span);
        insert(mapped_free, regions, move.to + size, move.to + span);
        (void)erase(mapped_free, move.from + size, move.from + span);
        insert(unmapped_free, regions, move.from, move.from + span);
        auto tiles = tiling(units, move.from, move.from + span);
        for (const auto& u : *tiles) {
          units.erase(u.offset);
          units.emplace(move.to + (u.offset - move.from), u.size);
        }
        plan.remap_bytes += span;
        break;
      }
    }
    placed.erase(move.from);
    placed.emplace(move.to, size);
    at[i] = move.to;
    plan.moves.push_back(move);
  };

  // Phase 1, from the back: the last block in compaction order goes to the
  // first hole that was free BEFORE any move and holds it. These moves never
  // land on what another move freed, so the executor runs them as one batch
  // of copies with one wait (a plan where each target is the previous
  // block's old place forces a wait per move: ~30 us each on an H100, which
  // is what kept session 10's move rate at 0.15-0.22 of a plain copy). From
  // the back also moves fewer bytes: every-other-freed packs by moving the
  // top half into the bottom half's holes, not every block down one place.
  {
    Intervals pristine = mapped_free;
    for (auto it = sources.rbegin(); it != sources.rend(); ++it) {
      const std::size_t i = *it;
      const DefragBlock& b = s.blocks[i];
      const std::size_t home = home_of(i);
      for (std::size_t k = 0; k <= rank[home]; ++k) {
        const auto& r = regions[order[k]];
        std::optional<std::uint64_t> to;
        for (auto h = pristine.lower_bound(r.offset); h != pristine.end() && h->first < r.offset + r.size; ++h) {
          const auto [lo, hi] = *h;
          if (order[k] == home && lo + b.size > at[i]) break;  // only before the block, never over it
          if (hi - lo >= b.size) {
            to = lo;
            break;
          }
        }
        if (!to) continue;
        (void)erase(pristine, *to, *to + b.size);
        record(i, DefragMove{b.key, at[i], *to, b.size, DefragMoveKind::Copy, 0});
        break;
      }
    }
  }

  // Phase 2, from the front, on what phase 1 left: each block to the first
  // free mapped range before it that holds it (now including what phase 1
  // freed), a slide over the range just below it, or a remap. These may
  // depend on the moves before them; the executor settles as it must.
  in_order();
  for (const std::size_t i : sources) {
    const DefragBlock& b = s.blocks[i];
    const std::uint64_t from = at[i];
    const std::size_t home = home_of(i);
    std::optional<DefragMove> move;
    // First fit in compaction order: regions by rank, then addresses, up to
    // the block itself.
    for (std::size_t k = 0; k <= rank[home] && !move; ++k) {
      const auto& r = regions[order[k]];
      for (auto it = mapped_free.lower_bound(r.offset); it != mapped_free.end() && it->first < r.offset + r.size;
           ++it) {
        const auto [lo, hi] = *it;
        if (order[k] == home && lo >= from) break;
        if (hi - lo >= b.size && (order[k] != home || lo + b.size <= from)) {
          move = DefragMove{b.key, from, lo, b.size, DefragMoveKind::Copy, 0};
          break;
        }
        if (order[k] == home && hi == from) {
          const std::uint64_t distance = hi - lo;
          if ((b.size + distance - 1) / distance <= options.max_slide_chunks)
            move = DefragMove{b.key, from, lo, b.size, DefragMoveKind::Slide, 0};
          break;
        }
      }
    }
    if (!move && options.allow_remap && owns_units(i)) {
      const std::uint64_t span = round_up(b.size, s.page);
      const auto& r = regions[home];
      for (auto it = unmapped_free.lower_bound(r.offset); it != unmapped_free.end() && it->first < from; ++it) {
        const std::uint64_t p = round_up(it->first, s.page);
        if (p + span <= it->second && p + span <= from) {
          move = DefragMove{b.key, from, p, b.size, DefragMoveKind::Remap, span};
          break;
        }
      }
    }
    if (move) record(i, *move);
  }
  return plan;
}

Result<DefragSpace> apply_moves(const DefragSpace& space, const std::vector<DefragMove>& moves) {
  if (auto ok = validate(space); !ok) return fail(ok.error());
  std::map<std::uint64_t, DefragBlock> blocks;
  for (const auto& b : space.blocks) blocks.emplace(b.offset, b);
  std::map<std::uint64_t, std::uint64_t> units;
  for (const auto& u : space.units) units.emplace(u.offset, u.size);
  auto mapped = [&](std::uint64_t a, std::uint64_t b) {
    if (space.page == 0) return true;
    Intervals runs;
    DefragSpace probe{space.page, space.regions, {}, {}};
    for (const auto& [o, n] : units) probe.units.push_back({o, n});
    for (const auto& r : mapped_runs(probe)) runs.emplace(r.offset, r.offset + r.size);
    return covered(runs, a, b);
  };
  for (std::size_t n = 0; n < moves.size(); ++n) {
    const auto& m = moves[n];
    auto it = blocks.find(m.from);
    if (it == blocks.end() || it->second.size != m.size || it->second.key != m.key)
      return fail(ErrorCode::internal, "move {}: no block of {} bytes (key {}) at {:#x}", n, m.size, m.key, m.from);
    if (!it->second.movable) return fail(ErrorCode::internal, "move {}: block {:#x} is not movable", n, m.from);
    const int region = region_of(space.regions, m.from);
    if (region_of(space.regions, m.to) < 0 || region_of(space.regions, m.to + m.size - 1) < 0 ||
        (m.kind != DefragMoveKind::Copy && region_of(space.regions, m.to) != region))
      return fail(ErrorCode::internal, "move {}: target [{:#x}, +{}) is outside a region", n, m.to, m.size);
    switch (m.kind) {
      case DefragMoveKind::Copy:
        if (m.to < m.from + m.size && m.from < m.to + m.size)
          return fail(ErrorCode::internal, "move {}: a copy overlaps its own block", n);
        if (overlaps_block(blocks, m.to, m.to + m.size, ~std::uint64_t{0}) || !mapped(m.to, m.to + m.size))
          return fail(ErrorCode::internal, "move {}: target [{:#x}, +{}) is not free mapped memory", n, m.to, m.size);
        break;
      case DefragMoveKind::Slide:
        if (!(m.to < m.from && m.from < m.to + m.size))
          return fail(ErrorCode::internal, "move {}: a slide must move down over part of its own block", n);
        if (overlaps_block(blocks, m.to, m.from, m.from) || !mapped(m.to, m.from))
          return fail(ErrorCode::internal, "move {}: slide gap [{:#x}, {:#x}) is not free mapped memory", n, m.to,
                      m.from);
        break;
      case DefragMoveKind::Remap: {
        const std::uint64_t span = space.page == 0 ? 0 : round_up(m.size, space.page);
        if (span == 0 || m.remap_bytes != span || m.from % space.page != 0 || m.to % space.page != 0)
          return fail(ErrorCode::internal, "move {}: a remap moves whole pages", n);
        auto tiles = tiling(units, m.from, m.from + span);
        if (!tiles || overlaps_block(blocks, m.from, m.from + span, m.from))
          return fail(ErrorCode::internal, "move {}: block {:#x} does not own whole units", n, m.from);
        if (overlaps_block(blocks, m.to, m.to + span, ~std::uint64_t{0}) || overlaps_unit(units, m.to, m.to + span))
          return fail(ErrorCode::internal, "move {}: remap target [{:#x}, +{}) is not free unmapped space", n, m.to,
                      span);
        for (const auto& u : *tiles) {
          units.erase(u.offset);
          units.emplace(m.to + (u.offset - m.from), u.size);
        }
        break;
      }
    }
    DefragBlock b = it->second;
    blocks.erase(it);
    b.offset = m.to;
    blocks.emplace(b.offset, b);
  }
  DefragSpace out{space.page, space.regions, {}, {}};
  for (const auto& [o, n] : units) out.units.push_back({o, n});
  for (const auto& [o, b] : blocks) out.blocks.push_back(b);
  return out;
}

DefragSpace trimmed(const DefragSpace& space) {
  DefragSpace out = space;
  auto busy = [&](const DefragRange& r) {
    return std::any_of(space.blocks.begin(), space.blocks.end(), [&](const DefragBlock& b) {
      return b.offset < r.offset + r.size && r.offset < b.offset + b.size;
    });
  };
  if (space.page != 0) {
    out.units.clear();
    for (const auto& u : space.units)
      if (busy(u)) out.units.push_back(u);
  } else {
    out.regions.clear();
    for (const auto& r : space.regions)
      if (busy(r)) out.regions.push_back(r);
  }
  return out;
}

double fragmentation(const DefragSpace& space) {
  auto [mapped, unmapped] = free_ranges(space);
  std::uint64_t free_bytes = 0, largest = 0;
  for (const auto& [a, b] : mapped) {
    free_bytes += b - a;
    largest = std::max(largest, b - a);
  }
  return free_bytes == 0 ? 0.0 : 1.0 - static_cast<double>(largest) / static_cast<double>(free_bytes);
}

std::uint64_t mapped_bytes(const DefragSpace& space) {
  std::uint64_t n = 0;
  for (const auto& r : space.page != 0 ? space.units : space.regions) n += r.size;
  return n;
}

}  // namespace memd
