// Lock-free liveness of medium blocks; see live_blocks.hpp.
#include "core/live_blocks.hpp"

namespace memd {

LiveBlocks::LiveBlocks(std::uint64_t base, unsigned capacity_log2)
    : base_(base),
      shift_(64 - capacity_log2),
      mask_((std::size_t{1} << capacity_log2) - 1),
      words_(std::make_unique<std::atomic<std::uint64_t>[]>(mask_ + 1)) {
  for (std::size_t i = 0; i <= mask_; ++i) words_[i].store(kEmpty, std::memory_order_relaxed);
}

bool LiveBlocks::insert(std::uint64_t address, std::uint64_t size) {
  if (address < base_ || address % kGrain != 0 || size == 0 || size % kGrain != 0 || size > kMaxSize) return false;
  const std::uint64_t key = key_of(address);
  if (key >= (std::uint64_t{1} << (64 - kKeyShift))) return false;
  const std::uint64_t word = (key << kKeyShift) | ((size / kGrain) << 1);
  std::size_t i = home(key);
  for (std::size_t n = 0; n < kMaxProbe; ++n, i = (i + 1) & mask_) {
    const std::uint64_t w = words_[i].load(std::memory_order_relaxed);
    if (w == kEmpty || w == kTombstone) {
      words_[i].store(word, std::memory_order_release);
      ++count_;
      return true;
    }
  }
  return false;
}

void LiveBlocks::erase(const Entry& e) noexcept {
  if (e.slot_ == nullptr) return;
  e.slot_->store(kTombstone, std::memory_order_release);
  --count_;
}

LiveBlocks::Entry LiveBlocks::find(std::uint64_t address) const noexcept {
  Entry out;
  if (address < base_ || address % kGrain != 0) return out;
  const std::uint64_t key = key_of(address);
  std::size_t i = home(key);
  for (std::size_t n = 0; n < kMaxProbe; ++n, i = (i + 1) & mask_) {
    const std::uint64_t w = words_[i].load(std::memory_order_acquire);
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
  if (!e.slot_->compare_exchange_strong(e.word_, want, std::memory_order_acq_rel)) return false;
  e.word_ = want;
  return true;
}

bool LiveBlocks::to_live(Entry& e) noexcept {
  if (e.slot_ == nullptr || !e.cached()) return false;
  const std::uint64_t want = e.word_ & ~std::uint64_t{1};
  if (!e.slot_->compare_exchange_strong(e.word_, want, std::memory_order_acq_rel)) return false;
  e.word_ = want;
  return true;
}

}  // namespace memd
