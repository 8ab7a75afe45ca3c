// The defragmentation executor; see defragmenter.hpp.
#include "transfer/defragmenter.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <shared_mutex>
#include <thread>

namespace memd {

// A copy enqueued on the pool's stream and not yet switched over: its hold,
// its write gate (writers wait) and its reserved target.
struct Defragmenter::InFlight {
  AllocationHold hold;
  std::unique_lock<std::shared_mutex> gate;
  MemoryManager::Relocation relocation;
  DefragMove move;
};

struct Defragmenter::PoolRun {
  PoolKey key;
  DevicePool* pool = nullptr;
  DefragPoolReport report;
  std::optional<StreamPool::Lease> stream;
  std::vector<InFlight> in_flight;
  std::uint64_t in_flight_bytes = 0;
  std::chrono::nanoseconds copy_time{0};    // DefragReport::copy_duration
  std::chrono::nanoseconds switch_time{0};  // DefragReport::switch_duration
};

namespace {
// Adds the time from construction to destruction to `into`.
class Stopwatch {
 public:
  explicit Stopwatch(std::chrono::nanoseconds& into) : into_(into), start_(std::chrono::steady_clock::now()) {}
  ~Stopwatch() { into_ += std::chrono::steady_clock::now() - start_; }
  Stopwatch(const Stopwatch&) = delete;
  Stopwatch& operator=(const Stopwatch&) = delete;

 private:
  std::chrono::nanoseconds& into_;
  std::chrono::steady_clock::time_point start_;
};
}  // namespace

namespace {

// A pool's picture with its movable API allocations marked; `ids` maps each
// movable block's key to its allocation, `held` collects the skipped ones.
struct MarkedSpace {
  DefragSpace space;
  std::map<std::uint64_t, AllocationId> ids;
};

MarkedSpace mark(MemoryManager& manager, DevicePool& pool, std::set<AllocationId>& held) {
  MarkedSpace out{pool.defrag_space(), {}};
  std::map<std::uint64_t, MemoryManager::RelocationCandidate> by_address;
  for (auto& c : manager.relocation_candidates(pool)) by_address.emplace(c.address, c);
  for (auto& b : out.space.blocks) {
    auto it = by_address.find(b.offset);
    // The block must be the allocation's own arena block (the registry's
    // size rounds up to it): a slab span starting at a slot's address is not.
    if (it == by_address.end() || b.size < it->second.size || b.size - it->second.size >= 2 * kMiB) continue;
    if (it->second.held) {
      held.insert(it->second.id);
      continue;
    }
    b.movable = true;
    out.ids.emplace(b.key, it->second.id);
  }
  return out;
}

void measure(DevicePool& pool, double& fragmentation, std::uint64_t& reserved, std::uint64_t& free_bytes) {
  const auto s = pool.stats();
  fragmentation = s.fragmentation;
  reserved = s.reserved_bytes;
  free_bytes = s.free_bytes;
}

}  // namespace

Result<void> Defragmenter::check(const DefragOptions& o) {
  if (o.max_bytes_per_pass == 0) return fail(ErrorCode::invalid_argument, "maxBytesPerPass must be positive");
  if (o.max_moves_per_pass == 0 || o.max_moves_per_pass > kMaxDefragMovesPerPass)
    return fail(ErrorCode::invalid_argument, "maxMovesPerPass must be 1..{}", kMaxDefragMovesPerPass);
  if (o.max_passes == 0 || o.max_passes > kMaxDefragPasses)
    return fail(ErrorCode::invalid_argument, "maxPasses must be 1..{}", kMaxDefragPasses);
  return {};
}

Result<DefragReport> Defragmenter::run(const DefragOptions& options) {
  if (auto ok = check(options); !ok) return fail(ok.error());
  if (options.device && !manager_.catalog().info(*options.device))
    return fail(ErrorCode::not_found, "no device {}", options.device->to_string());
  std::lock_guard one_at_a_time(run_mu_);
  const auto t0 = std::chrono::steady_clock::now();

  std::vector<PoolRun> pools;
  const auto setup_start = std::chrono::steady_clock::now();
  for (const auto& [key, stats] : manager_.pool_stats()) {
    if (options.device && key.device != *options.device) continue;
    auto pool = manager_.pool(key.device, key.memory_type);
    if (!pool) continue;
    PoolRun run;
    run.key = key;
    run.pool = *pool;
    run.report.device = key.device;
    run.report.memory_type = key.memory_type;
    // The figures before are the ones pool_stats() just took (a second
    // stats() per pool would cost as much again).
    run.report.fragmentation_before = stats.fragmentation;
    run.report.reserved_bytes_before = stats.reserved_bytes;
    run.report.free_bytes_before = stats.free_bytes;
    pools.push_back(std::move(run));
  }

  DefragReport report;
  report.dry_run = options.dry_run;
  report.stats_duration = std::chrono::steady_clock::now() - setup_start;
  std::set<AllocationId> skipped;
  DefragPlanOptions plan_options;
  plan_options.allow_remap = options.allow_remap;
  plan_options.max_block_bytes = options.max_bytes_per_pass;

  bool started = false;
  for (std::uint64_t pass = 1; pass <= options.max_passes; ++pass) {
    // Plans first (all pools), so Started can say what the first pass holds.
    std::vector<std::pair<MarkedSpace, DefragPlan>> plans;
    std::uint64_t planned_moves = 0, planned_bytes = 0;
    const auto plan_start = std::chrono::steady_clock::now();
    for (auto& p : pools) {
      auto marked = mark(manager_, *p.pool, skipped);
      auto plan = plan_defrag(marked.space, plan_options);
      if (!plan) return fail(ErrorCode::internal, "planning {}: {}", p.key.device.to_string(), plan.error().message);
      planned_moves += plan->moves.size();
      planned_bytes += plan->copy_bytes + plan->remap_bytes;
      plans.emplace_back(std::move(marked), std::move(*plan));
    }
    report.plan_duration += std::chrono::steady_clock::now() - plan_start;
    if (!started) {
      started = true;
      if (hook_) hook_(DefragEvent{DefragEvent::Kind::Started, options.device, planned_moves, planned_bytes, {}});
    }
    if (options.dry_run) {
      // The whole plan, cut into the passes it would take (later passes
      // re-plan, so this is what the first plan would need).
      std::uint64_t in_pass = 0, bytes_in_pass = 0, pass_no = 1;
      for (std::size_t i = 0; i < pools.size(); ++i)
        for (const auto& m : plans[i].second.moves) {
          const std::uint64_t bytes = m.kind == DefragMoveKind::Remap ? m.remap_bytes : m.size;
          if (in_pass + 1 > options.max_moves_per_pass || bytes_in_pass + bytes > options.max_bytes_per_pass) {
            ++pass_no;
            in_pass = bytes_in_pass = 0;
          }
          ++in_pass;
          bytes_in_pass += bytes;
          report.plan.push_back({plans[i].first.ids.at(m.key), pools[i].key.device, pools[i].key.memory_type, m,
                                 pass_no});
        }
      report.passes = report.plan.empty() ? 0 : report.plan.back().pass;
      break;
    }
    if (planned_moves == 0) break;
    report.passes = pass;
    std::uint64_t moves_left = options.max_moves_per_pass, bytes_left = options.max_bytes_per_pass;
    std::uint64_t done_this_pass = 0;
    Error error;
    auto tally = [&](PoolRun& p, const AllocationId& id, const DefragMove& m, MoveOutcome outcome) {
      switch (outcome) {
        case MoveOutcome::Done:
          ++done_this_pass;
          ++p.report.moves;
          if (m.kind == DefragMoveKind::Remap) {
            p.report.bytes_remapped += m.remap_bytes;
            ++report.remaps;
          } else {
            p.report.bytes_moved += m.size;
          }
          break;
        case MoveOutcome::Skipped: skipped.insert(id); break;
        case MoveOutcome::Abandoned: ++report.abandoned; break;
        case MoveOutcome::InFlight: break;
      }
    };
    auto settle_pool = [&](PoolRun& p) {
      settle(p, error, [&](const AllocationId& id, const DefragMove& m, MoveOutcome o) { tally(p, id, m, o); });
    };
    for (std::size_t i = 0; i < pools.size(); ++i) {
      auto& p = pools[i];
      for (const auto& m : plans[i].second.moves) {
        const std::uint64_t bytes = m.kind == DefragMoveKind::Remap ? m.remap_bytes : m.size;
        if (moves_left == 0 || bytes > bytes_left) break;  // a prefix only: later moves need earlier ones
        const auto& id = plans[i].first.ids.at(m.key);
        // Slides and remaps touch the old place: what is in flight lands first.
        if (m.kind != DefragMoveKind::Copy) settle_pool(p);
        MoveOutcome outcome = execute(p, id, m, error);
        if (outcome == MoveOutcome::Abandoned && !p.in_flight.empty() && error.message.empty()) {
          // Its target may be a block still in flight (freed when that lands).
          settle_pool(p);
          outcome = execute(p, id, m, error);
        }
        if (outcome != MoveOutcome::Skipped && outcome != MoveOutcome::Abandoned) {
          --moves_left;
          bytes_left -= bytes;
        }
        tally(p, id, m, outcome);
        if (p.in_flight.size() >= kMaxInFlightMoves || p.in_flight_bytes >= kMaxInFlightBytes) settle_pool(p);
        if (!error.message.empty()) {
          if (error.code == ErrorCode::internal) break;
          error = {};  // that move was abandoned; the pass goes on
        }
      }
      settle_pool(p);
      p.stream.reset();
      if (!error.message.empty() && error.code == ErrorCode::internal) return fail(std::move(error));
    }
    // What the pass emptied goes back to the device.
    const auto release_start = std::chrono::steady_clock::now();
    for (auto& p : pools) (void)p.pool->trim();
    report.release_duration += std::chrono::steady_clock::now() - release_start;
    if (done_this_pass == 0) break;
  }

  const auto release_start = std::chrono::steady_clock::now();
  for (auto& p : pools)
    if (!options.dry_run) (void)p.pool->trim();
  report.release_duration += std::chrono::steady_clock::now() - release_start;
  const auto measure_start = std::chrono::steady_clock::now();
  for (auto& p : pools) {
    report.copy_duration += p.copy_time;
    report.switch_duration += p.switch_time;
    measure(*p.pool, p.report.fragmentation_after, p.report.reserved_bytes_after, p.report.free_bytes_after);
    report.moves += p.report.moves;
    report.bytes_moved += p.report.bytes_moved;
    report.bytes_remapped += p.report.bytes_remapped;
    report.pools.push_back(p.report);
  }
  report.stats_duration += std::chrono::steady_clock::now() - measure_start;
  report.skipped = skipped.size();
  report.duration = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
  if (hook_) {
    DefragEvent finished{DefragEvent::Kind::Finished, options.device, 0, 0, report};
    hook_(finished);
  }
  return report;
}

Defragmenter::MoveOutcome Defragmenter::execute(PoolRun& p, const AllocationId& id, const DefragMove& move,
                                                Error& error) {
  auto hold = manager_.hold(id);
  if (!hold) return MoveOutcome::Abandoned;  // freed since the plan
  auto& entry = hold->entry();
  // A writer holds the gate for its whole copy: skip rather than wait.
  std::unique_lock gate(entry.write_gate, std::try_to_lock);
  if (!gate.owns_lock()) return MoveOutcome::Skipped;
  auto relocation = manager_.reserve_relocation(*hold, move);
  if (!relocation) {
    const bool held = relocation.error().message.find("held by") != std::string::npos;
    return held ? MoveOutcome::Skipped : MoveOutcome::Abandoned;
  }
  const std::uint64_t bytes = hold->size();
  if (move.kind == DefragMoveKind::Copy) {
    // Readers read on from the old place; nobody else sees the target. The
    // copy joins the pool's in-flight batch: one event and one wait for the
    // batch, not one per move (settle()).
    Result<void> queued;
    {
      Stopwatch copying(p.copy_time);
      queued = enqueue_copy(p, relocation->to, relocation->from, bytes, 64 * kMiB);
    }
    if (!queued) {
      error = queued.error();
      manager_.abort_relocation(*hold, *relocation);
      return MoveOutcome::Abandoned;
    }
    p.in_flight_bytes += bytes;
    p.in_flight.push_back({std::move(*hold), std::move(gate), *relocation, move});
    return MoveOutcome::InFlight;
  }
  Result<void> copied;
  std::unique_lock<std::shared_mutex> io(entry.io);  // a slide overwrites the old bytes; a remap unmaps them
  if (move.kind == DefragMoveKind::Slide) {
    Stopwatch copying(p.copy_time);
    copied = slide(p, relocation->to, relocation->from, bytes, std::min<std::uint64_t>(64 * kMiB, move.from - move.to));
    if (!copied && copied.error().code == ErrorCode::internal) {
      // Neither place holds the allocation whole any more (the device
      // would not finish the copy): the old place stays its home, and the
      // run stops with the error that says so.
      error = copied.error();
      manager_.abort_relocation(*hold, *relocation);
      return MoveOutcome::Abandoned;
    }
  }
  if (!copied || hold->freeing()) {
    if (!copied) error = copied.error();
    manager_.abort_relocation(*hold, *relocation);
    return MoveOutcome::Abandoned;
  }
  Stopwatch switching(p.switch_time);
  return land(*hold, *relocation, error);
}

Defragmenter::MoveOutcome Defragmenter::land(AllocationHold& hold, const MemoryManager::Relocation& relocation,
                                             Error& error) {
  auto landed = manager_.commit_relocation(hold, relocation);
  // not_found: it landed, then its owner freed it.
  if (landed || landed.error().code == ErrorCode::not_found) return MoveOutcome::Done;
  // A remap the backend refused leaves the block where it was.
  if (landed.error().code == ErrorCode::internal) error = landed.error();
  return MoveOutcome::Abandoned;
}

void Defragmenter::settle(PoolRun& p, Error& error,
                          const std::function<void(const AllocationId&, const DefragMove&, MoveOutcome)>& tally) {
  if (p.in_flight.empty()) return;
  Result<void> copied;
  {
    Stopwatch copying(p.copy_time);
    copied = wait_stream(p);
  }
  if (!copied) error = copied.error();
  Stopwatch switching(p.switch_time);
  for (auto& f : p.in_flight) {
    const AllocationId id = f.hold.id();
    auto& entry = f.hold.entry();
    // The switch needs the io lock exclusively. A reader holds it only for
    // its read, but may be a transfer about to take the gate of another
    // block this batch holds: never block on it while holding gates; retry
    // a while, then leave this one where it is (its bytes are intact: the
    // gate kept writers out).
    std::unique_lock<std::shared_mutex> io(entry.io, std::try_to_lock);
    for (int attempt = 0; !io.owns_lock() && attempt < kIoLockAttempts; ++attempt) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      (void)io.try_lock();
    }
    MoveOutcome outcome = MoveOutcome::Abandoned;
    if (!copied || f.hold.freeing()) {
      manager_.abort_relocation(f.hold, f.relocation);
    } else if (!io.owns_lock()) {
      manager_.abort_relocation(f.hold, f.relocation);
      outcome = MoveOutcome::Skipped;
    } else {
      outcome = land(f.hold, f.relocation, error);
    }
    io = {};
    f.gate = {};
    f.hold.release();
    tally(id, f.move, outcome);
  }
  p.in_flight.clear();
  p.in_flight_bytes = 0;
}

// Front to back on the pool's stream in chunks of at most `chunk` bytes:
// chunks run in order, so a slide (to < from, chunk <= distance) never reads
// a byte it has overwritten.
Result<void> Defragmenter::enqueue_copy(PoolRun& p, std::byte* to, const std::byte* from, std::uint64_t bytes,
                                        std::uint64_t chunk, std::uint64_t* issued) {
  Backend& backend = p.pool->backend();
  if (!p.stream) {
    auto lease = streams_.acquire(backend, p.key.device);
    if (!lease) return fail(lease.error());
    p.stream.emplace(std::move(*lease));
  }
  const Stream& stream = p.stream->stream();
  for (std::uint64_t at = 0; at < bytes; at += chunk) {
    const std::uint64_t n = std::min(chunk, bytes - at);
    if (auto ok = backend.copy(to + at, from + at, n, stream); !ok) {
      (void)backend.synchronize(stream);
      return ok;
    }
    if (issued) *issued += n;
  }
  return {};
}

// Everything enqueued on the pool's stream is done: one event. On a
// failure the stream is synchronized too, so no copy still runs into a
// target the caller is about to give back.
Result<void> Defragmenter::wait_stream(PoolRun& p) {
  if (!p.stream) return {};
  Backend& backend = p.pool->backend();
  const Stream& stream = p.stream->stream();
  auto event = backend.record(stream);
  if (!event) {
    (void)backend.synchronize(stream);
    return fail(event.error());
  }
  auto waited = backend.wait(*event);
  (void)backend.destroy_event(*event);
  if (!waited) (void)backend.synchronize(stream);
  return waited;
}

// A slide overwrites the front of its own old place as it goes, so once a
// chunk has landed the old place is no longer whole and giving the move
// up would leave the allocation with a mix of its bytes. Chunks go in
// order and each reads bytes no earlier chunk wrote, so a slide that
// failed midway is finished from the first chunk not known to have
// landed (after a synchronize says what has), a few times, before it is
// given up: unavailable/backend_error when nothing was overwritten yet
// (the old place is whole: abandon as any move), internal when the bytes
// are split between the two places for good.
Result<void> Defragmenter::slide(PoolRun& p, std::byte* to, const std::byte* from, std::uint64_t bytes,
                                 std::uint64_t chunk) {
  std::uint64_t issued = 0;
  auto copied = enqueue_copy(p, to, from, bytes, chunk, &issued);
  if (copied) copied = wait_stream(p);
  if (copied || issued == 0) return copied;
  Backend& backend = p.pool->backend();
  for (int attempt = 0; attempt < kSlideRetries; ++attempt) {
    // Everything issued has landed once the stream drains; if even that
    // fails, nothing is known and the next attempt asks again.
    if (!backend.synchronize(p.stream->stream())) continue;
    std::uint64_t more = 0;
    auto rest = enqueue_copy(p, to + issued, from + issued, bytes - issued, chunk, &more);
    issued += more;
    if (rest) rest = wait_stream(p);
    if (rest) return {};
    copied = rest;
  }
  return fail(ErrorCode::internal, "a slide of {} bytes failed after {} of them had moved ({}): the allocation is torn",
              bytes, issued, copied.error().message);
}

}  // namespace memd
