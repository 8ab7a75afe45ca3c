// alloc/quotas.hpp — the limits and the bytes counted against them.
//
// Counts the bytes (as requested) of API allocations per device, per memory
// type and per owner, and refuses a charge that would pass a limit
// (alloc/limits.hpp) before any device is touched, with the numbers that
// explain it. A charge lives in three steps: reserve() checks and counts it
// and marks it in flight; land() clears the in-flight mark once the
// allocation is in the registry; release() takes it off when the allocation
// is freed. cancel() undoes a reservation that never reached the registry.
// The in-flight marks let reconcile() compare the counters with the registry
// while allocations are on their way (a reclaim callback may validate in the
// middle of one).
//
// Thread safety: every method is thread-safe; one mutex guards limits and
// counters, so a reservation is checked and counted atomically. Keeping the
// counters consistent with the registry across land()/release() is the
// caller's job (MemoryManager orders them against validate()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "alloc/limits.hpp"
#include "memd/error.hpp"
#include "memd/owner_name.hpp"  // the one owner rule, checked on limits

namespace memd {

struct OwnerUsage {
  std::uint64_t bytes = 0;
  std::uint64_t allocations = 0;
  friend bool operator==(const OwnerUsage&, const OwnerUsage&) = default;
};

// One allocation's bytes, and the scopes they count in.
struct QuotaCharge {
  std::string owner;
  DeviceId device;
  MemoryType memory_type = MemoryType::VRAM;
  std::uint64_t bytes = 0;
};

class Quotas {
 public:
  Quotas() = default;
  Quotas(const Quotas&) = delete;
  Quotas& operator=(const Quotas&) = delete;

  // Replaces the limits after checking their values (memory type not
  // Unknown, owners by the owner rule, bytes at most kMaxRequestBytes);
  // refused limits change nothing. Whether the devices exist is the caller's
  // to check (it has the catalog). Limits may be set below current use.
  Result<void> set_limits(const Limits& limits);
  Limits limits() const;

  // Checks the device, memory type and owner limits, in that order; the first
  // one passed is refused (quota_exceeded) with requested, in use and limit.
  // On success the charge is counted and marked in flight.
  Result<void> reserve(const QuotaCharge& charge);
  // The reserved charge reached the registry: no longer in flight.
  void land(const QuotaCharge& charge);
  // The reserved charge never reached the registry: land and release at once.
  void cancel(const QuotaCharge& charge);
  // The allocation of a landed charge was freed: its bytes no longer count.
  void release(const QuotaCharge& charge);

  // Bytes and allocations counted per owner (owners with none are absent).
  std::map<std::string, OwnerUsage> usage_by_owner() const;
  std::map<DeviceId, std::uint64_t> usage_by_device() const;
  std::map<MemoryType, std::uint64_t> usage_by_type() const;
  // Charges reserved and not yet landed or cancelled, per owner.
  std::map<std::string, OwnerUsage> in_flight() const;

  // Checks the per-owner counters against `registered` (what the registry
  // holds, per owner) plus the charges in flight; internal when they differ.
  Result<void> reconcile(const std::map<std::string, OwnerUsage>& registered) const;

 private:
  void land_locked(const QuotaCharge& charge);
  void release_locked(const QuotaCharge& charge);

  mutable std::mutex mu_;
  Limits limits_;
  std::map<DeviceId, std::uint64_t> by_device_;
  std::map<MemoryType, std::uint64_t> by_type_;
  std::map<std::string, OwnerUsage> by_owner_;
  std::map<std::string, OwnerUsage> in_flight_;
};

}  // namespace memd
