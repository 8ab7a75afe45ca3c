// PageMap units against a reference model: random whole-unit maps and
// unmaps and blocks on mapped pages, over page counts on either side of the
// 64-page words; for_each_unit and free_unit_bytes must agree with the model
// on random ranges (some starting inside a page). Written by the session-4
// review of the unit bits.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/page_map.hpp"

namespace memd {
namespace {

constexpr std::uint64_t kPage = 2 << 20;
constexpr std::uint64_t kBase = 1ull << 40;

using Units = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

// The model: a unit id per page (-1: unmapped), each unit's first page, and
// which pages a block holds.
struct Model {
  std::size_t npages;
  std::vector<int> unit;
  std::vector<std::size_t> start;
  std::vector<int> busy;
  explicit Model(std::size_t n) : npages(n), unit(n, -1), busy(n, 0) {}

  std::size_t unit_end(std::size_t p) const {
    std::size_t e = p;
    while (e < npages && unit[e] == unit[p]) ++e;
    return e;
  }
  bool unit_free(std::size_t s, std::size_t e) const {
    for (std::size_t i = s; i < e; ++i)
      if (busy[i]) return false;
    return true;
  }
  // Units overlapping pages [lo, hi), and the bytes of the wholly free ones.
  Units overlapping(std::size_t lo, std::size_t hi, std::uint64_t& free_bytes) const {
    Units out;
    free_bytes = 0;
    for (std::size_t i = 0; i < npages;) {
      if (unit[i] < 0) {
        ++i;
        continue;
      }
      const std::size_t e = unit_end(i);
      if (e > lo && i < hi) {
        out.emplace_back(kBase + i * kPage, (e - i) * kPage);
        if (unit_free(i, e)) free_bytes += (e - i) * kPage;
      }
      i = e;
    }
    return out;
  }
};

TEST(PageMapUnits, MatchAReferenceModelAcrossWordBoundaries) {
  for (std::size_t npages : {64u, 65u, 127u, 128u, 200u, 257u}) {
    PageMap m(kBase, npages * kPage, kPage);
    Model model(npages);
    struct Block {
      std::size_t p, n;
    };
    std::vector<Block> blocks;
    std::mt19937_64 rng(npages);
    for (int step = 0; step < 4000; ++step) {
      const int op = static_cast<int>(rng() % 4);
      if (op == 0) {  // map a run of unmapped pages as one unit
        const std::size_t p = rng() % npages;
        const std::size_t n = std::min<std::size_t>(1 + rng() % 70, npages - p);
        bool ok = true;
        for (std::size_t i = p; i < p + n; ++i) ok = ok && model.unit[i] < 0;
        if (!ok) continue;
        const int id = static_cast<int>(model.start.size());
        model.start.push_back(p);
        for (std::size_t i = p; i < p + n; ++i) model.unit[i] = id;
        m.mark_mapped({kBase + p * kPage, n * kPage});
      } else if (op == 1) {  // unmap a whole unit that holds no block
        const std::size_t p = rng() % npages;
        if (model.unit[p] < 0) continue;
        const std::size_t s = model.start[static_cast<std::size_t>(model.unit[p])], e = model.unit_end(s);
        if (!model.unit_free(s, e)) continue;
        for (std::size_t i = s; i < e; ++i) model.unit[i] = -1;
        m.mark_unmapped({kBase + s * kPage, (e - s) * kPage});
      } else if (op == 2) {  // a block of whole pages on mapped, free pages
        const std::size_t p = rng() % npages, n = 1 + rng() % 5;
        if (p + n > npages) continue;
        bool ok = true;
        for (std::size_t i = p; i < p + n; ++i) ok = ok && model.unit[i] >= 0 && model.busy[i] == 0;
        if (!ok) continue;
        std::vector<PageRun> runs;
        m.acquire(kBase + p * kPage, n * kPage, runs);
        ASSERT_TRUE(runs.empty());
        for (std::size_t i = p; i < p + n; ++i) model.busy[i] = 1;
        blocks.push_back({p, n});
      } else if (!blocks.empty()) {  // free a block
        const std::size_t k = rng() % blocks.size();
        m.release(kBase + blocks[k].p * kPage, blocks[k].n * kPage);
        for (std::size_t i = blocks[k].p; i < blocks[k].p + blocks[k].n; ++i) model.busy[i] = 0;
        blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(k));
      }
      ASSERT_TRUE(m.validate()) << "step " << step;
      for (int q = 0; q < 8; ++q) {
        const std::size_t lo = rng() % npages, hi = lo + 1 + rng() % (npages - lo);
        const std::uint64_t at = kBase + lo * kPage + (rng() % 2) * 256;
        const std::uint64_t len = kBase + hi * kPage - at;
        std::uint64_t want_free = 0;
        const Units want = model.overlapping(lo, hi, want_free);
        Units got;
        m.for_each_unit(at, at + len, [&](std::uint64_t o, std::uint64_t n) { got.emplace_back(o, n); });
        ASSERT_EQ(got, want) << "pages " << npages << ", step " << step << ", range " << lo << ".." << hi;
        ASSERT_EQ(m.free_unit_bytes(at, len), want_free)
            << "pages " << npages << ", step " << step << ", range " << lo << ".." << hi;
      }
    }
  }
}

}  // namespace
}  // namespace memd
