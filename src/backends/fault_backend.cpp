// A backend that fails chosen calls: counting, arming and the forwarding.
#include "backends/fault_backend.hpp"

#include <charconv>

namespace memd {

namespace {

constexpr std::string_view kOpNames[kFaultOpCount] = {
    "reserve", "release",        "map",       "unmap",         "remap", "allocate", "free",  "allocate_shareable",
    "free_shareable", "export_fd", "create_stream", "copy", "fill",     "record", "wait",  "synchronize",
};

std::size_t index(FaultOp op) noexcept { return static_cast<std::size_t>(op); }

}  // namespace

std::string_view to_string(FaultOp op) noexcept { return kOpNames[index(op)]; }

std::optional<FaultOp> parse_fault_op(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kFaultOpCount; ++i)
    if (kOpNames[i] == name) return static_cast<FaultOp>(i);
  return std::nullopt;
}

ErrorCode fault_error_code(FaultOp op) noexcept {
  // What cuda_error.hpp makes of the driver's answer: allocating calls run
  // out of memory; the others fail as the driver call they are.
  switch (op) {
    case FaultOp::reserve:
    case FaultOp::map:
    case FaultOp::allocate:
    case FaultOp::allocate_shareable:
    case FaultOp::create_stream: return ErrorCode::out_of_memory;
    default: return ErrorCode::backend_error;
  }
}

Result<std::vector<FaultRule>> parse_fault_rules(std::string_view text) {
  std::vector<FaultRule> rules;
  if (text.empty()) return fail(ErrorCode::invalid_argument, "no fault rules");
  for (bool more = true; more;) {
    const auto comma = text.find(',');
    const std::string_view piece = text.substr(0, comma);
    more = comma != std::string_view::npos;
    if (more) text = text.substr(comma + 1);
    const auto colon = piece.find(':');
    if (colon == std::string_view::npos)
      return fail(ErrorCode::invalid_argument, "fault rule '{}': expected OP:N or OP:N+", piece);
    auto op = parse_fault_op(piece.substr(0, colon));
    if (!op) return fail(ErrorCode::invalid_argument, "fault rule '{}': unknown operation", piece);
    std::string_view count = piece.substr(colon + 1);
    FaultRule rule{.op = *op};
    if (!count.empty() && count.back() == '+') {
      rule.and_after = true;
      count.remove_suffix(1);
    }
    const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), rule.nth);
    if (count.empty() || ec != std::errc{} || end != count.data() + count.size() || rule.nth == 0)
      return fail(ErrorCode::invalid_argument, "fault rule '{}': N must be a whole number from 1", piece);
    rules.push_back(rule);
  }
  return rules;
}

void FaultPlan::arm(const FaultRule& rule) {
  std::lock_guard lock(mutex_);
  armed_[index(rule.op)] = Armed{.fire_at = calls_[index(rule.op)] + rule.nth, .and_after = rule.and_after};
}

void FaultPlan::disarm(FaultOp op) {
  std::lock_guard lock(mutex_);
  armed_[index(op)].reset();
}

void FaultPlan::disarm_all() {
  std::lock_guard lock(mutex_);
  for (auto& a : armed_) a.reset();
}

std::uint64_t FaultPlan::calls(FaultOp op) const {
  std::lock_guard lock(mutex_);
  return calls_[index(op)];
}

std::uint64_t FaultPlan::injected(FaultOp op) const {
  std::lock_guard lock(mutex_);
  return injected_[index(op)];
}

std::uint64_t FaultPlan::injected_total() const {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (auto n : injected_) total += n;
  return total;
}

void FaultPlan::set_observer(Observer observer) {
  std::lock_guard lock(mutex_);
  observer_ = observer ? std::make_shared<const Observer>(std::move(observer)) : nullptr;
}

bool FaultPlan::should_fail(FaultOp op) {
  std::shared_ptr<const Observer> observer;
  std::uint64_t call = 0;
  bool fails = false;
  {
    std::lock_guard lock(mutex_);
    call = ++calls_[index(op)];
    const auto& armed = armed_[index(op)];
    if (armed) fails = armed->and_after ? call >= armed->fire_at : call == armed->fire_at;
    if (fails) ++injected_[index(op)];
    observer = observer_;
  }
  if (observer) (*observer)(op, call);
  return fails;
}

FaultBackend::FaultBackend(std::unique_ptr<Backend> inner, std::shared_ptr<FaultPlan> plan)
    : ForwardingBackend(std::move(inner)), plan_(std::move(plan)) {}

std::optional<Error> FaultBackend::inject(FaultOp op, std::string_view where) {
  if (!plan_->should_fail(op)) return std::nullopt;
  return Error{fault_error_code(op),
               fmt::format("injected fault: {} call {} on {} failed", to_string(op), plan_->calls(op), where)};
}

Result<VirtualRange> FaultBackend::reserve(DeviceId device, std::uint64_t bytes) {
  if (auto e = inject(FaultOp::reserve, device.to_string())) return std::unexpected(std::move(*e));
  return inner_->reserve(device, bytes);
}

Result<void> FaultBackend::release(const VirtualRange& range) {
  if (auto e = inject(FaultOp::release, range.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->release(range);
}

Result<void> FaultBackend::map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                               std::uint64_t unit_bytes) {
  if (auto e = inject(FaultOp::map, range.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->map(range, offset, bytes, unit_bytes);
}

Result<void> FaultBackend::unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) {
  if (auto e = inject(FaultOp::unmap, range.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->unmap(range, offset, bytes);
}

Result<void> FaultBackend::remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to,
                                 std::uint64_t bytes) {
  if (auto e = inject(FaultOp::remap, range.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->remap(range, from, to, bytes);
}

Result<Segment> FaultBackend::allocate(DeviceId device, MemoryType type, std::uint64_t bytes) {
  if (auto e = inject(FaultOp::allocate, device.to_string())) return std::unexpected(std::move(*e));
  return inner_->allocate(device, type, bytes);
}

Result<void> FaultBackend::free(const Segment& segment) {
  if (auto e = inject(FaultOp::free, segment.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->free(segment);
}

Result<ShareableSegment> FaultBackend::allocate_shareable(DeviceId device, MemoryType type, std::uint64_t bytes) {
  if (auto e = inject(FaultOp::allocate_shareable, device.to_string())) return std::unexpected(std::move(*e));
  return inner_->allocate_shareable(device, type, bytes);
}

Result<void> FaultBackend::free_shareable(const ShareableSegment& shareable) {
  if (auto e = inject(FaultOp::free_shareable, shareable.segment.device.to_string()))
    return std::unexpected(std::move(*e));
  return inner_->free_shareable(shareable);
}

Result<int> FaultBackend::export_fd(const ShareableSegment& shareable) {
  if (auto e = inject(FaultOp::export_fd, shareable.segment.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->export_fd(shareable);
}

Result<Stream> FaultBackend::create_stream(DeviceId device) {
  if (auto e = inject(FaultOp::create_stream, device.to_string())) return std::unexpected(std::move(*e));
  return inner_->create_stream(device);
}

Result<void> FaultBackend::copy(void* dst, const void* src, std::uint64_t bytes, const Stream& stream) {
  if (auto e = inject(FaultOp::copy, stream.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->copy(dst, src, bytes, stream);
}

Result<void> FaultBackend::fill(void* dst, std::uint8_t value, std::uint64_t bytes, const Stream& stream) {
  if (auto e = inject(FaultOp::fill, stream.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->fill(dst, value, bytes, stream);
}

Result<Event> FaultBackend::record(const Stream& stream) {
  if (auto e = inject(FaultOp::record, stream.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->record(stream);
}

Result<void> FaultBackend::wait(const Event& event) {
  if (auto e = inject(FaultOp::wait, event.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->wait(event);
}

Result<void> FaultBackend::synchronize(const Stream& stream) {
  if (auto e = inject(FaultOp::synchronize, stream.device.to_string())) return std::unexpected(std::move(*e));
  return inner_->synchronize(stream);
}

}  // namespace memd
