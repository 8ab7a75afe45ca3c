// Lock-free liveness of medium blocks; see live_blocks.hpp.
#include "core/live_blocks.hpp"

#include <sys/mman.h>

#include <new>

namespace memd {
namespace {

using Word = std::atomic_ref<std::uint64_t>;

}  // namespace

LiveBlocks::LiveBlocks(std::uint64_t base, unsigned capacity_log2)
    : base_(base), shift_(64 - capacity_log2), mask_((std::size_t{1} << capacity_log2) - 1) {
  // Zero pages, so kEmpty everywhere without touching them.
  void* mem = ::mmap(nullptr, (mask_ + 1) * sizeof(std::uint64_t), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::bad_alloc();  // out of host memory, as operator new would report
  words_ = static_cast<std::uint64_t*>(mem);
}

LiveBlocks::~LiveBlocks() { ::munmap(words_, (mask_ + 1) * sizeof(std::uint64_t)); }

bool LiveBlocks::insert(std::uint64_t address, std::uint64_t size) {
  if (address < base_ || address % kGrain != 0 || size == 0 || size % kGrain != 0 || size > kMaxSize) return false;
  const std::uint64_t key = key_of(address);
  if (key >= (std::uint64_t{1} << (64 - kKeyShift))) return false;
  const std::uint64_t word = (key << kKeyShift) | ((size / kGrain) << 1);
  std::size_t i = home(key);
  for (std::size_t n = 0; n < kMaxProbe; ++n, i = (i + 1) & mask_) {
    const std::uint64_t w = Word(words_[i]).load(std::memory_order_relaxed);
    if (w == kEmpty || w == kTombstone) {
      Word(words_[i]).store(word, std::memory_order_release);
      ++count_;
      return true;
    }
  }
  return false;
}

bool LiveBlocks::erase(Entry& e) noexcept {
  if (e.slot_ == nullptr) return false;
  if (!Word(*e.slot_).compare_exchange_strong(e.word_, kTombstone, std::memory_order_acq_rel)) return false;
  --count_;
  return true;
}

LiveBlocks::Entry LiveBlocks::find(std::uint64_t address) const noexcept {
  Entry out;
  if (address < base_ || address % kGrain != 0) return out;
  const std::uint64_t key = key_of(address);
  std::size_t i = home(key);
  for (std::size_t n = 0; n < kMaxProbe; ++n, i = (i + 1) & mask_) {
    const std::uint64_t w = Word(words_[i]).load(std::memory_order_acquire);
    if (w == kEmpty) break;
    if ((w >> kKeyShift) == key) {
      out.slot_ = &words_[i];
      out.word_ = w;
      break;
    }
  }
  return out;
}

bool LiveBlocks::to_cached(Entry& e) noexcept {
  if (e.slot_ == nullptr || e.cached()) return false;
  const std::uint64_t want = e.word_ | 1u;
  if (!Word(*e.slot_).compare_exchange_strong(e.word_, want, std::memory_order_acq_rel)) return false;
  e.word_ = want;
  return true;
}

bool LiveBlocks::to_live(Entry& e) noexcept {
  if (e.slot_ == nullptr || !e.cached()) return false;
  const std::uint64_t want = e.word_ & ~std::uint64_t{1};
  if (!Word(*e.slot_).compare_exchange_strong(e.word_, want, std::memory_order_acq_rel)) return false;
  e.word_ = want;
  return true;
}

Result<void> LiveBlocks::validate() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i <= mask_; ++i) {
    const std::uint64_t w = Word(words_[i]).load(std::memory_order_acquire);
    if (w <= kTombstone) continue;
    ++n;
    const std::uint64_t address = address_of(w);
    const Entry e = find(address);
    if (e.slot_ != &words_[i])
      return fail(ErrorCode::internal, "live blocks: entry {:#x} at word {} is not found from its home", address, i);
  }
  if (n != count_) return fail(ErrorCode::internal, "live blocks: {} entries, count says {}", n, count_);
  return {};
}

}  // namespace memd
