// Lock-free liveness of slab slots; see live_slots.hpp.
#include "core/live_slots.hpp"

#include <sys/mman.h>

#include <new>

namespace memd {

// The base is rounded down to a span boundary: entries are found by span
// number relative to it and slots by the absolute address within the span,
// which agree only if the base is span-aligned (an arena on a 4 KiB-granular
// host device need not be).
namespace {

using Word = std::atomic_ref<std::uint64_t>;

}  // namespace

LiveSlots::LiveSlots(std::uint64_t base, std::uint64_t size)
    : base_(base / SlabAllocator::kSpanSize * SlabAllocator::kSpanSize),
      size_(size + base % SlabAllocator::kSpanSize),
      chunk_count_(static_cast<std::size_t>((size_ + kChunkBytes - 1) / kChunkBytes)),
      chunks_(std::make_unique<std::atomic<Chunk*>[]>(chunk_count_)) {
  for (std::size_t i = 0; i < chunk_count_; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

LiveSlots::~LiveSlots() {
  for (std::size_t i = 0; i < chunk_count_; ++i)
    if (Chunk* c = chunks_[i].load(std::memory_order_relaxed)) ::munmap(c, sizeof(Chunk));
}

LiveSlots::Entry* LiveSlots::entry(std::uint64_t address) const noexcept {
  if (address < base_ || address - base_ >= size_) return nullptr;
  const std::uint64_t rel = address - base_;
  Chunk* c = chunks_[rel / kChunkBytes].load(std::memory_order_acquire);
  if (c == nullptr) return nullptr;
  const std::uint64_t i = (rel % kChunkBytes) / SlabAllocator::kSpanSize;
  if ((Word(c->opened[i / 64]).load(std::memory_order_acquire) & (std::uint64_t{1} << (i % 64))) == 0) return nullptr;
  return &c->entries[i];
}

namespace {

// Slot index of each 256-byte step of a span, per class: kNoSlot where the
// step is inside a slot or in the tail that holds no whole slot. A table
// lookup instead of two 64-bit divisions on every free (they cost more than
// the rest of a cached free together).
constexpr std::uint16_t kNoSlot = 0xFFFF;  // slot indexes run to 255
constexpr std::uint64_t kSteps = SlabAllocator::kSpanSize / SlabAllocator::kClassStep;
using SlotTable = std::array<std::array<std::uint16_t, kSteps>, SlabAllocator::kClassCount>;
constexpr SlotTable make_slot_table() {
  SlotTable t{};
  for (std::uint64_t c = 0; c < t.size(); ++c) {
    const std::uint64_t per = c + 1;  // steps per slot
    for (std::uint64_t r = 0; r < kSteps; ++r)
      t[c][r] = r % per == 0 && (r + per) <= kSteps ? static_cast<std::uint16_t>(r / per) : kNoSlot;
  }
  return t;
}
constexpr SlotTable kSlotTable = make_slot_table();
static_assert(kSteps < kNoSlot, "slot indexes must not reach the sentinel");

}  // namespace

LiveSlots::Slot LiveSlots::find(std::uint64_t address) const noexcept {
  Slot out;
  Entry* e = entry(address);
  if (e == nullptr) return out;
  const std::uint64_t size = Word(e->slot_size).load(std::memory_order_acquire);
  const std::uint64_t rel = address % SlabAllocator::kSpanSize;
  if (size == 0 || rel % SlabAllocator::kClassStep != 0) return out;
  const std::uint16_t k = kSlotTable[size / SlabAllocator::kClassStep - 1][rel / SlabAllocator::kClassStep];
  if (k == kNoSlot) return out;
  out.word_ = &e->live[k / 64];
  out.bit_ = std::uint64_t{1} << (k % 64);
  out.size_ = size;
  return out;
}

bool LiveSlots::set_live(const Slot& slot) noexcept {
  return slot && (Word(*slot.word_).fetch_or(slot.bit_, std::memory_order_acq_rel) & slot.bit_) == 0;
}

bool LiveSlots::clear_live(const Slot& slot) noexcept {
  return slot && (Word(*slot.word_).fetch_and(~slot.bit_, std::memory_order_acq_rel) & slot.bit_) != 0;
}

bool LiveSlots::is_live(const Slot& slot) noexcept {
  return slot && (Word(*slot.word_).load(std::memory_order_acquire) & slot.bit_) != 0;
}

void LiveSlots::open_span(std::uint64_t span_base, std::uint64_t slot_size) {
  if (span_base < base_ || span_base - base_ >= size_) return;
  auto& chunk = chunks_[(span_base - base_) / kChunkBytes];
  if (chunk.load(std::memory_order_relaxed) == nullptr) {
    // Zero pages, faulted in only where entries are used (see the header).
    void* mem = ::mmap(nullptr, sizeof(Chunk), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::bad_alloc();  // out of host memory, as operator new would report
    chunk.store(static_cast<Chunk*>(mem), std::memory_order_release);
  }
  Chunk* c = chunk.load(std::memory_order_relaxed);
  const std::uint64_t i = ((span_base - base_) % kChunkBytes) / SlabAllocator::kSpanSize;
  Entry* e = &c->entries[i];
  for (auto& w : e->live) Word(w).store(0, std::memory_order_relaxed);
  Word(e->slot_size).store(slot_size, std::memory_order_release);
  Word(c->opened[i / 64]).fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_release);
}

void LiveSlots::close_span(std::uint64_t span_base) {
  if (Entry* e = entry(span_base)) Word(e->slot_size).store(0, std::memory_order_release);
}

std::array<std::uint64_t, LiveSlots::kWords> LiveSlots::live_bits(std::uint64_t span_base) const noexcept {
  std::array<std::uint64_t, kWords> out{};
  if (Entry* e = entry(span_base))
    for (std::size_t i = 0; i < kWords; ++i) out[i] = Word(e->live[i]).load(std::memory_order_acquire);
  return out;
}

}  // namespace memd
