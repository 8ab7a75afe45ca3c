// TransferEngine: the queue, the workers, the reports, and the synchronous
// copies and byte access.
#include "transfer/transfer_engine.hpp"

#include <algorithm>
#include <cstring>
#include <shared_mutex>

namespace memd {

struct TransferEngine::Job {
  TransferReport report;  // guarded by mutex_, but for what the atomics carry
  AllocationHold source, destination;  // a move: destination empty
  std::atomic<bool> cancel{false};
  std::atomic<std::uint64_t> bytes_done{0};
  std::atomic<int> path{-1};
};

namespace {

// A synchronous copy of one allocation's bytes to or from a caller's buffer.
// cpu memory (RAM, pinned SharedMemory, managed UnifiedMemory) is host
// addressable whichever backend serves it: memcpy, no stream (the CUDA
// backend has none on cpu). Device memory goes through its backend's
// default stream.
Result<void> copy_now(const AllocationLocation& at, void* dst, const void* src, std::uint64_t n) {
  if (at.device.kind() == DeviceKind::Cpu) {
    std::memcpy(dst, src, n);
    return {};
  }
  Stream stream{at.device, 0};
  if (auto r = at.backend->copy(dst, src, n, stream); !r) return r;
  return at.backend->synchronize(stream);
}

SystemTime now() { return std::chrono::system_clock::now(); }

}  // namespace

unsigned resolved_copy_threads(unsigned asked) {
  if (asked != TransferOptions::kAutoThreads) return asked;
  const unsigned cores = std::max(2u, std::thread::hardware_concurrency());
  return std::clamp(cores / 2 - 1, 1u, 7u);
}

namespace {

Result<void> check_range(const char* side, const AllocationId& id, std::uint64_t allocation_bytes,
                         std::uint64_t offset, std::uint64_t bytes) {
  if (offset > allocation_bytes || bytes > allocation_bytes - offset)
    return fail(ErrorCode::out_of_range,
                "{} bytes at offset {} do not fit the {} allocation {} of {} bytes", bytes, offset, side,
                id.to_string(), allocation_bytes);
  return {};
}

}  // namespace

TransferEngine::TransferEngine(MemoryManager& manager, Backend& host_backend, TransferOptions options)
    : manager_(manager),
      host_backend_(host_backend),
      options_(options),
      staging_(manager, options.copy.chunk_bytes),
      threads_(resolved_copy_threads(options.host_copy_threads)),
      copier_(host_backend, streams_, staging_, threads_, options.copy) {
  const unsigned n = std::max(1u, options_.workers);
  workers_.reserve(n);
  for (unsigned i = 0; i < n; ++i) workers_.emplace_back([this] { work(); });
}

TransferEngine::~TransferEngine() {
  std::deque<std::shared_ptr<Job>> pending;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& [id, job] : jobs_) job->cancel.store(true);
    pending.swap(queue_);
  }
  work_ready_.notify_all();
  for (auto& w : workers_) w.join();
  for (auto& job : pending) {
    if (job->report.status != MemoryTransferStatus::Pending) continue;  // cancelled already
    finish(job, CopyOutcome{CopyStop::Cancelled, 0, CopyPath::HostMemcpy, {}});
  }
}

void TransferEngine::set_completion_hook(CompletionHook hook) { hook_ = std::move(hook); }

Result<std::shared_ptr<TransferEngine::Job>> TransferEngine::prepare(const std::string& owner,
                                                                     const TransferSpec& spec) {
  auto job = std::make_shared<Job>();
  auto& r = job->report;
  r.id = TransferId::generate();
  r.owner = owner;
  r.created_at = now();
  r.max_bytes_per_second = spec.max_bytes_per_second;
  auto source = manager_.hold(spec.source);
  if (!source) return fail(source.error());
  auto src_record = manager_.get(spec.source);
  if (!src_record) return fail(src_record.error());
  r.source = spec.source;
  r.source_device = src_record->device;
  r.source_type = src_record->memory_type;
  job->source = std::move(*source);
  if (spec.is_move()) {
    if (spec.size || spec.source_offset != 0 || spec.destination_offset != 0)
      return fail(ErrorCode::invalid_argument, "a move takes the whole allocation: no offsets or sizeBytes");
    r.kind = TransferKind::Move;
    r.destination = spec.source;
    r.destination_device = spec.to_device.value_or(src_record->device);
    r.destination_type = spec.to_type.value_or(src_record->memory_type);
    if (r.destination_device == r.source_device && r.destination_type == r.source_type)
      return fail(ErrorCode::conflict, "allocation {} is on {} {} already: a move needs another device or memory type",
                  spec.source.to_string(), r.source_device.to_string(), to_string(r.source_type));
    if (src_record->pinned)
      return fail(ErrorCode::conflict, "allocation {} is pinned: it never moves", spec.source.to_string());
    r.size_bytes = src_record->size_bytes;
    return job;
  }
  auto destination = manager_.hold(*spec.destination);
  if (!destination) return fail(destination.error());
  auto dst_record = manager_.get(*spec.destination);
  if (!dst_record) return fail(dst_record.error());
  r.destination = *spec.destination;
  r.destination_device = dst_record->device;
  r.destination_type = dst_record->memory_type;
  r.source_offset = spec.source_offset;
  r.destination_offset = spec.destination_offset;
  if (spec.source_offset > src_record->size_bytes)
    return fail(ErrorCode::out_of_range, "sourceOffset {} is past the end of allocation {} ({} bytes)",
                spec.source_offset, spec.source.to_string(), src_record->size_bytes);
  r.size_bytes = spec.size.value_or(src_record->size_bytes - spec.source_offset);
  if (r.size_bytes == 0) return fail(ErrorCode::invalid_argument, "nothing to transfer: sizeBytes is 0");
  if (auto ok = check_range("source", spec.source, src_record->size_bytes, spec.source_offset, r.size_bytes); !ok)
    return fail(ok.error());
  if (auto ok = check_range("destination", *spec.destination, dst_record->size_bytes, spec.destination_offset,
                            r.size_bytes);
      !ok)
    return fail(ok.error());
  job->destination = std::move(*destination);
  return job;
}

Result<TransferReport> TransferEngine::submit(const std::string& owner, const TransferSpec& spec) {
  auto job = prepare(owner, spec);
  if (!job) return fail(job.error());
  std::vector<std::shared_ptr<Job>> jobs{*job};
  {
    std::lock_guard lock(mutex_);
    if (unfinished_ + 1 > options_.max_unfinished || unfinished_by_owner_[owner] + 1 > options_.max_unfinished_per_owner)
      return fail(ErrorCode::quota_exceeded, "too many unfinished transfers ({} for '{}', {} in all; at most {} and {})",
                  unfinished_by_owner_[owner], owner, unfinished_, options_.max_unfinished_per_owner,
                  options_.max_unfinished);
  }
  TransferReport report = (*job)->report;
  enqueue(std::move(jobs), std::nullopt);
  return report;
}

Result<BatchReport> TransferEngine::submit_batch(const std::string& owner, const std::vector<TransferSpec>& specs) {
  if (specs.empty()) return fail(ErrorCode::invalid_argument, "a batch needs at least one transfer");
  if (specs.size() > options_.max_batch)
    return fail(ErrorCode::invalid_argument, "a batch holds at most {} transfers, not {}", options_.max_batch,
                specs.size());
  std::vector<std::shared_ptr<Job>> jobs;
  jobs.reserve(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    auto job = prepare(owner, specs[i]);
    if (!job) return fail(job.error().code, "transfers[{}]: {}", i, job.error().message);
    jobs.push_back(std::move(*job));
  }
  const BatchId id = BatchId::generate();
  {
    std::lock_guard lock(mutex_);
    const auto n = jobs.size();
    if (unfinished_ + n > options_.max_unfinished || unfinished_by_owner_[owner] + n > options_.max_unfinished_per_owner)
      return fail(ErrorCode::quota_exceeded, "too many unfinished transfers ({} for '{}', {} in all, {} more asked; at most {} and {})",
                  unfinished_by_owner_[owner], owner, unfinished_, n, options_.max_unfinished_per_owner,
                  options_.max_unfinished);
  }
  enqueue(std::move(jobs), id);
  std::lock_guard lock(mutex_);
  return batch_report(id, batches_.at(id));
}

void TransferEngine::enqueue(std::vector<std::shared_ptr<Job>> jobs, std::optional<BatchId> batch) {
  {
    std::lock_guard lock(mutex_);
    if (batch) {
      Batch b{jobs.front()->report.owner, now(), {}};
      for (auto& job : jobs) b.members.push_back(job->report.id);
      batches_.emplace(*batch, std::move(b));
    }
    for (auto& job : jobs) {
      job->report.batch = batch;
      jobs_.emplace(job->report.id, job);
      ++unfinished_;
      ++unfinished_by_owner_[job->report.owner];
      ++counts_.submitted;
      queue_.push_back(std::move(job));
    }
  }
  work_ready_.notify_all();
}

void TransferEngine::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      if (job->report.status != MemoryTransferStatus::Pending) continue;  // cancelled while queued
      job->report.status = MemoryTransferStatus::InProgress;
      job->report.started_at = now();
    }
    execute(job);
  }
}

void TransferEngine::execute(const std::shared_ptr<Job>& self) {
  Job& job = *self;
  CopyOutcome outcome;
  if (job.report.kind == TransferKind::Move) {
    outcome = execute_move(job);
  } else {
    outcome = copier_.run(CopySide{&job.source, {}, job.report.source_offset},
                          CopySide{&job.destination, {}, job.report.destination_offset}, job.report.size_bytes,
                          control_of(job));
  }
  finish(self, outcome);
}

// A job's cancel flag and pace, and progress into its atomics.
CopyControl TransferEngine::control_of(Job& job) {
  CopyControl control;
  control.cancel = &job.cancel;
  control.max_bytes_per_second = job.report.max_bytes_per_second;
  control.progress = [&job](std::uint64_t done, CopyPath path) {
    job.bytes_done.store(done, std::memory_order_relaxed);
    job.path.store(static_cast<int>(path), std::memory_order_relaxed);
  };
  return control;
}

CopyOutcome TransferEngine::execute_move(Job& job) {
  auto& entry = job.source.entry();
  // Writers wait from here to the switch; readers read the old place.
  std::unique_lock gate(entry.write_gate);
  auto target = manager_.reserve_move(job.source, job.report.destination_device, job.report.destination_type);
  if (!target) return CopyOutcome{CopyStop::Failed, 0, CopyPath::HostMemcpy, target.error()};
  AllocationLocation block{&target->pool->backend(), target->pool, target->device, target->type,
                           static_cast<std::byte*>(target->ptr), job.report.size_bytes};
  auto outcome =
      copier_.run(CopySide{&job.source, {}, 0}, CopySide{nullptr, block, 0}, job.report.size_bytes, control_of(job));
  if (outcome.stop == CopyStop::Done && job.source.freeing()) outcome.stop = CopyStop::SourceFreed;
  if (outcome.stop != CopyStop::Done) {
    manager_.abort_move(job.source, *target);
    return outcome;
  }
  if (auto landed = manager_.commit_move(job.source, *target); !landed) {
    outcome.stop = CopyStop::Failed;
    outcome.error = landed.error();
  }
  return outcome;
}

void TransferEngine::finish(const std::shared_ptr<Job>& job, CopyOutcome outcome) {
  TransferReport report;
  {
    std::lock_guard lock(mutex_);
    auto& r = job->report;
    if (r.finished()) return;
    job->bytes_done.store(std::max(outcome.bytes_done, job->bytes_done.load()), std::memory_order_relaxed);
    const auto done = job->bytes_done.load(std::memory_order_relaxed);
    switch (outcome.stop) {
      case CopyStop::Done:
        r.status = MemoryTransferStatus::Completed;
        ++counts_.completed;
        break;
      case CopyStop::Cancelled:
        r.status = MemoryTransferStatus::Cancelled;
        r.error = Error{ErrorCode::conflict, stopping_ ? fmt::format("memd shut down after {} of {} bytes", done, r.size_bytes)
                                                       : fmt::format("cancelled after {} of {} bytes", done, r.size_bytes)};
        ++counts_.cancelled;
        break;
      case CopyStop::SourceFreed:
      case CopyStop::DestinationFreed: {
        const bool src = outcome.stop == CopyStop::SourceFreed;
        r.status = MemoryTransferStatus::Failed;
        r.error = Error{ErrorCode::conflict,
                        fmt::format("the {} allocation {} was freed during the {} after {} of {} bytes; its memory "
                                    "went back once the chunks in flight had landed",
                                    src ? "source" : "destination", (src ? r.source : r.destination).to_string(),
                                    to_string(r.kind), done, r.size_bytes)};
        if (r.kind == TransferKind::Move)
          r.error->message += "; the allocation was not moved";
        ++counts_.failed;
        break;
      }
      case CopyStop::Failed:
        r.status = MemoryTransferStatus::Failed;
        r.error = outcome.error;
        ++counts_.failed;
        break;
    }
    r.finished_at = now();
    if (!r.started_at) r.started_at = r.finished_at;
    r.bytes_done = done;
    if (job->path.load() >= 0) r.path = static_cast<CopyPath>(job->path.load());
    --unfinished_;
    if (auto it = unfinished_by_owner_.find(r.owner); it != unfinished_by_owner_.end() && --it->second == 0)
      unfinished_by_owner_.erase(it);
    finished_order_.push_back(r.id);
    forget_finished();
    report = snapshot(*job);
  }
  bytes_copied_.fetch_add(report.bytes_done, std::memory_order_relaxed);
  count_duration(*report.finished_at - *report.started_at);
  // Holds go after the report is final: a deferred free lands here.
  job->source.release();
  job->destination.release();
  if (hook_) hook_(report);
}

void TransferEngine::forget_finished() {
  while (finished_order_.size() > options_.finished_kept) {
    const TransferId id = finished_order_.front();
    finished_order_.pop_front();
    auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    if (it->second->report.batch) batches_.erase(*it->second->report.batch);
    jobs_.erase(it);
  }
}

TransferReport TransferEngine::snapshot(const Job& job) const {
  TransferReport r = job.report;
  if (!r.finished()) {
    r.bytes_done = job.bytes_done.load(std::memory_order_relaxed);
    if (const int p = job.path.load(std::memory_order_relaxed); p >= 0) r.path = static_cast<CopyPath>(p);
    r.cancel_requested = job.cancel.load(std::memory_order_relaxed) && !stopping_;
  }
  return r;
}

BatchReport TransferEngine::batch_report(const BatchId& id, const Batch& b) const {
  BatchReport out;
  out.id = id;
  out.owner = b.owner;
  out.created_at = b.created_at;
  for (const auto& member : b.members) {
    auto it = jobs_.find(member);
    if (it == jobs_.end()) continue;
    out.transfers.push_back(snapshot(*it->second));
    const auto& t = out.transfers.back();
    out.size_bytes += t.size_bytes;
    out.bytes_done += t.bytes_done;
    if (t.status == MemoryTransferStatus::Failed) out.failed.push_back(t.id);
  }
  out.status = batch_status(out.transfers);
  return out;
}

Result<TransferReport> TransferEngine::status(const TransferId& id) const {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end())
    return fail(ErrorCode::not_found, "no transfer {} (finished transfers are kept for the last {})", id.to_string(),
                options_.finished_kept);
  return snapshot(*it->second);
}

Result<BatchReport> TransferEngine::batch(const BatchId& id) const {
  std::lock_guard lock(mutex_);
  auto it = batches_.find(id);
  if (it == batches_.end())
    return fail(ErrorCode::not_found, "no batch {} (a batch is forgotten once its oldest member is)", id.to_string());
  return batch_report(id, it->second);
}

Result<TransferReport> TransferEngine::cancel(const TransferId& id) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return fail(ErrorCode::not_found, "no transfer {}", id.to_string());
    job = it->second;
    if (job->report.finished())
      return fail(ErrorCode::conflict, "transfer {} has finished already ({})", id.to_string(),
                  to_string(job->report.status));
    job->cancel.store(true);
    if (job->report.status == MemoryTransferStatus::InProgress) return snapshot(*job);
  }
  // Pending: it never starts (the worker skips it); it ends here.
  finish(job, CopyOutcome{CopyStop::Cancelled, 0, CopyPath::HostMemcpy, {}});
  return status(id);
}

Result<BatchReport> TransferEngine::cancel_batch(const BatchId& id) {
  std::vector<TransferId> members;
  {
    std::lock_guard lock(mutex_);
    auto it = batches_.find(id);
    if (it == batches_.end()) return fail(ErrorCode::not_found, "no batch {}", id.to_string());
    for (const auto& m : it->second.members)
      if (auto j = jobs_.find(m); j != jobs_.end() && !j->second->report.finished()) members.push_back(m);
  }
  if (members.empty()) return fail(ErrorCode::conflict, "every transfer of batch {} has finished already", id.to_string());
  for (const auto& m : members) (void)cancel(m);  // one that finished meanwhile answers conflict: fine
  return batch(id);
}

Result<CopyResult> TransferEngine::copy(const TransferSpec& spec) {
  if (spec.is_move()) return fail(ErrorCode::invalid_argument, "memory_copy needs a destinationAllocationId");
  auto job = prepare("", spec);
  if (!job) return fail(job.error());
  const auto started = std::chrono::steady_clock::now();
  auto outcome = copier_.run(CopySide{&(*job)->source, {}, spec.source_offset},
                             CopySide{&(*job)->destination, {}, spec.destination_offset}, (*job)->report.size_bytes,
                             CopyControl{});
  copies_.fetch_add(1, std::memory_order_relaxed);
  bytes_copied_.fetch_add(outcome.bytes_done, std::memory_order_relaxed);
  count_duration(std::chrono::steady_clock::now() - started);
  switch (outcome.stop) {
    case CopyStop::Done:
      manager_.touch((*job)->source);
      manager_.touch((*job)->destination);
      return CopyResult{outcome.bytes_done, outcome.path, std::chrono::steady_clock::now() - started};
    case CopyStop::Failed: return fail(outcome.error);
    case CopyStop::SourceFreed:
    case CopyStop::DestinationFreed:
      return fail(ErrorCode::conflict, "the {} allocation was freed during the copy after {} of {} bytes",
                  outcome.stop == CopyStop::SourceFreed ? "source" : "destination", outcome.bytes_done,
                  (*job)->report.size_bytes);
    case CopyStop::Cancelled: break;
  }
  return fail(ErrorCode::internal, "memory_copy stopped without a cause");
}

Result<void> TransferEngine::write(const AllocationId& id, std::uint64_t offset, std::span<const std::byte> data) {
  auto hold = manager_.hold(id);
  if (!hold) return fail(hold.error());
  auto& entry = hold->entry();
  if (offset > hold->size() || data.size() > hold->size() - offset)
    return fail(ErrorCode::out_of_range, "write of {} bytes at offset {} is outside the allocation of {} bytes",
                data.size(), offset, hold->size());
  if (data.empty()) return {};
  {
    std::shared_lock gate(entry.write_gate);
    std::unique_lock io(entry.io);  // one writer at a time, and no reader meanwhile
    const auto at = hold->location();
    if (auto r = copy_now(at, at.ptr + offset, data.data(), data.size()); !r) return r;
  }
  manager_.touch(*hold);
  return {};
}

Result<std::vector<std::byte>> TransferEngine::read(const AllocationId& id, std::uint64_t offset,
                                                    std::uint64_t length) {
  auto hold = manager_.hold(id);
  if (!hold) return fail(hold.error());
  if (offset > hold->size() || length > hold->size() - offset)
    return fail(ErrorCode::out_of_range, "read of {} bytes at offset {} is outside the allocation of {} bytes",
                length, offset, hold->size());
  std::vector<std::byte> out(length);
  if (length == 0) return out;
  {
    std::shared_lock io(hold->entry().io);
    const auto at = hold->location();
    if (auto r = copy_now(at, out.data(), at.ptr + offset, length); !r) return fail(r.error());
  }
  manager_.touch(*hold);
  return out;
}

TransferStats TransferEngine::stats() const {
  std::lock_guard lock(mutex_);
  TransferStats s = counts_;
  for (const auto& [id, job] : jobs_) {
    if (job->report.status == MemoryTransferStatus::Pending) ++s.pending;
    if (job->report.status == MemoryTransferStatus::InProgress) ++s.in_progress;
  }
  s.bytes_copied = bytes_copied_.load(std::memory_order_relaxed);
  s.copies = copies_.load(std::memory_order_relaxed);
  s.timed = timed_.load(std::memory_order_relaxed);
  s.duration_ns = duration_ns_.load(std::memory_order_relaxed);
  return s;
}

void TransferEngine::count_duration(std::chrono::nanoseconds took) noexcept {
  // A transfer's times are wall-clock (its report shows them): a clock step
  // backwards between start and finish counts as zero, never as a negative.
  duration_ns_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, took.count())),
                         std::memory_order_relaxed);
  timed_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace memd
