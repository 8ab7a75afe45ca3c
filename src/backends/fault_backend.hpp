// backends/fault_backend.hpp — a Backend that fails chosen calls on purpose:
// the fault injection the fault tests (tests/faults/) drive.
//
// FaultBackend wraps any backend (BackendOptions::wrap, as client mode's
// LeaseBackend does) and forwards every call to it, except that the calls a
// FaultPlan names fail instead — before reaching the inner backend, so the
// failed call changes nothing, as a real driver failure of that call would.
// A plan rule says "fail the Nth call of operation X from now on" (once, or
// that call and every later one: a device that has run out stays out).
// Calls are counted per operation over every device and thread, so a test
// that draws N from a seeded generator reproduces exactly.
//
// The error is what the real backend reports for that failure
// (backends/cuda/cuda_error.hpp): out_of_memory where the driver allocates
// (reserve, map, allocate, allocate_shareable, create_stream), backend_error
// everywhere else (copies, fills, unmaps, events, frees). Its message starts
// "injected fault" so a log line cannot be mistaken for a real one.
//
// How it is reached: tests build it in process. The daemon arms it only from
// the environment variable MEMD_TEST_FAULTS ("map:17,copy:5+", see
// parse_fault_rules), and only in a binary configured with
// -DMEMD_FAULT_INJECTION=ON (on by default in Debug builds — dev and asan —
// off in release ones), logging a warning at start: a production binary
// ignores the variable.
//
// Thread safety: as Backend. The plan is shared, counts are taken under its
// mutex, and rules may be armed while calls run.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/forwarding_backend.hpp"

namespace memd {

// The calls a plan can fail (one counter each).
enum class FaultOp : std::uint8_t {
  reserve,
  release,
  map,
  unmap,
  remap,
  allocate,
  free,
  allocate_shareable,
  free_shareable,
  export_fd,
  create_stream,
  copy,
  fill,
  record,
  wait,
  synchronize,
};
inline constexpr std::size_t kFaultOpCount = static_cast<std::size_t>(FaultOp::synchronize) + 1;

// "map", "copy", … (the Backend method's name).
std::string_view to_string(FaultOp op) noexcept;
std::optional<FaultOp> parse_fault_op(std::string_view name) noexcept;
// The code a real backend answers when that call fails.
ErrorCode fault_error_code(FaultOp op) noexcept;

struct FaultRule {
  FaultOp op = FaultOp::map;
  std::uint64_t nth = 1;     // 1: the next call of op fails
  bool and_after = false;    // also every call after the Nth
};

// "op:N" or "op:N+" separated by commas, e.g. "map:17,copy:5+".
// Unknown ops, N of 0 or not a number: invalid_argument naming the piece.
Result<std::vector<FaultRule>> parse_fault_rules(std::string_view text);

class FaultPlan {
 public:
  // Arms the rule relative to the calls counted so far: nth = 1 fails the
  // very next call of rule.op. A later rule for the same op replaces it.
  void arm(const FaultRule& rule);
  void disarm(FaultOp op);
  void disarm_all();
  // Counted (attempted) calls of op since the plan was made, failed ones included.
  std::uint64_t calls(FaultOp op) const;
  // Calls of op this plan failed.
  std::uint64_t injected(FaultOp op) const;
  std::uint64_t injected_total() const;

  // Called with (op, call number) on every counted call, before the call
  // runs and with no lock held: what a test does "at the Nth copy" (truncate
  // a model file, kill a peer) happens at a reproducible point of progress.
  // Set it before calls run; null: none.
  using Observer = std::function<void(FaultOp, std::uint64_t call)>;
  void set_observer(Observer observer);

  // Counts one call of op; true when it must fail. FaultBackend's hook.
  bool should_fail(FaultOp op);

 private:
  struct Armed {
    std::uint64_t fire_at = 0;  // the call number (1-based) that fails first
    bool and_after = false;
  };
  mutable std::mutex mutex_;
  std::array<std::uint64_t, kFaultOpCount> calls_{};
  std::array<std::uint64_t, kFaultOpCount> injected_{};
  std::array<std::optional<Armed>, kFaultOpCount> armed_{};
  std::shared_ptr<const Observer> observer_;
};

class FaultBackend final : public ForwardingBackend {
 public:
  FaultBackend(std::unique_ptr<Backend> inner, std::shared_ptr<FaultPlan> plan);

  FaultPlan& plan() noexcept { return *plan_; }

  // Counted, and failed when the plan says so; every other call passes through.
  Result<VirtualRange> reserve(DeviceId device, std::uint64_t bytes) override;
  Result<void> release(const VirtualRange& range) override;
  Result<void> map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                   std::uint64_t unit_bytes = 0) override;
  Result<void> unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) override;
  Result<void> remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to, std::uint64_t bytes) override;
  Result<Segment> allocate(DeviceId device, MemoryType type, std::uint64_t bytes) override;
  Result<void> free(const Segment& segment) override;
  Result<ShareableSegment> allocate_shareable(DeviceId device, MemoryType type, std::uint64_t bytes) override;
  Result<void> free_shareable(const ShareableSegment& shareable) override;
  Result<int> export_fd(const ShareableSegment& shareable) override;
  Result<Stream> create_stream(DeviceId device) override;
  Result<void> copy(void* dst, const void* src, std::uint64_t bytes, const Stream& stream) override;
  Result<void> fill(void* dst, std::uint8_t value, std::uint64_t bytes, const Stream& stream) override;
  Result<Event> record(const Stream& stream) override;
  Result<void> wait(const Event& event) override;
  Result<void> synchronize(const Stream& stream) override;

 private:
  // The injected error for op, or nothing when the call goes through.
  std::optional<Error> inject(FaultOp op, std::string_view where);

  std::shared_ptr<FaultPlan> plan_;
};

}  // namespace memd
