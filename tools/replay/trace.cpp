// Trace loading (gzip or plain text) with strict validation.
#include "trace.hpp"

#include <zlib.h>

#include <charconv>
#include <cmath>
#include <random>
#include <unordered_map>

namespace memd::replay {

Result<Trace> load_trace(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (f == nullptr) return fail(ErrorCode::not_found, "cannot open trace {}", path);
  gzbuffer(f, 1 << 20);
  Trace t;
  auto slash = path.find_last_of('/');
  t.name = path.substr(slash == std::string::npos ? 0 : slash + 1);
  t.name = t.name.substr(0, t.name.find('.'));
  if (t.name.starts_with("trace_")) t.name = t.name.substr(6);

  std::unordered_map<std::uint64_t, std::uint32_t> live;  // trace ID → slot
  std::unordered_map<std::uint64_t, std::uint64_t> sizes;
  std::uint64_t live_bytes = 0;
  std::vector<std::uint32_t> free_slots;
  char line[256];
  std::uint64_t lineno = 0;
  while (gzgets(f, line, sizeof line) != nullptr) {
    ++lineno;
    std::string_view s(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
    if (s.empty()) continue;
    auto number = [&](std::string_view& rest, std::uint64_t& out) {
      while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
      auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), out);
      if (ec != std::errc{} || end == rest.data()) return false;
      rest.remove_prefix(static_cast<std::size_t>(end - rest.data()));
      return true;
    };
    std::string_view rest = s.substr(1);
    std::uint64_t id = 0, size = 0;
    if (s[0] == 'a' && number(rest, id) && number(rest, size) && rest.empty()) {
      if (live.contains(id)) {
        gzclose(f);
        return fail(ErrorCode::invalid_argument, "{}:{}: ID {} allocated twice", path, lineno, id);
      }
      // Slots are reused once freed, so replay state stays as small as the live set.
      std::uint32_t slot;
      if (!free_slots.empty()) {
        slot = free_slots.back();
        free_slots.pop_back();
      } else {
        slot = t.slots++;
      }
      live.emplace(id, slot);
      sizes.emplace(id, size);
      live_bytes += size;
      t.peak_live_bytes = std::max(t.peak_live_bytes, live_bytes);
      ++t.allocations;
      t.ops.push_back({true, slot, size});
    } else if (s[0] == 'f' && number(rest, id) && rest.empty()) {
      auto it = live.find(id);
      if (it == live.end()) {
        gzclose(f);
        return fail(ErrorCode::invalid_argument, "{}:{}: free of unknown ID {}", path, lineno, id);
      }
      t.ops.push_back({false, it->second, 0});
      free_slots.push_back(it->second);
      live_bytes -= sizes[id];
      sizes.erase(id);
      live.erase(it);
    } else {
      gzclose(f);
      return fail(ErrorCode::invalid_argument, "{}:{}: not an event: '{}'", path, lineno, s.substr(0, 60));
    }
  }
  int err = 0;
  // gzerror's text lives in the gzFile: copy it before gzclose frees it
  // (TSan caught the read after free on a corrupt file).
  const std::string msg = gzerror(f, &err);
  gzclose(f);
  if (err != Z_OK && err != Z_STREAM_END) return fail(ErrorCode::invalid_argument, "{}: {}", path, msg);
  return t;
}

namespace {

// Live bytes of a trace as it is built op by op, and their peak: what every
// transform below must recompute for the trace it makes.
class LiveTally {
 public:
  explicit LiveTally(std::uint32_t slots) : size_of_(slots, 0) {}
  void count(const TraceOp& op, std::uint64_t& peak) {
    if (op.allocate) {
      size_of_[op.slot] = op.size;
      live_ += op.size;
      peak = std::max(peak, live_);
    } else {
      live_ -= size_of_[op.slot];
    }
  }
  std::uint64_t live() const noexcept { return live_; }

 private:
  std::vector<std::uint64_t> size_of_;
  std::uint64_t live_ = 0;
};

}  // namespace

Trace scale_trace(const Trace& trace, double factor) {
  Trace out;
  out.name = fmt::format("{}_x{}", trace.name, factor);
  out.slots = trace.slots;
  out.allocations = trace.allocations;
  out.ops.reserve(trace.ops.size());
  LiveTally tally(trace.slots);
  for (const auto& op : trace.ops) {
    TraceOp o = op;
    if (op.allocate) {
      const auto scaled = static_cast<std::uint64_t>(static_cast<double>(op.size) * factor);
      o.size = std::max<std::uint64_t>(512, scaled / 512 * 512);
    }
    tally.count(o, out.peak_live_bytes);
    out.ops.push_back(o);
  }
  return out;
}

Trace prefix_trace(const Trace& trace, double fraction) {
  Trace out;
  out.name = fmt::format("{}_to{:g}", trace.name, fraction * 100);
  out.slots = trace.slots;
  const auto target = static_cast<std::uint64_t>(static_cast<double>(trace.peak_live_bytes) * fraction);
  LiveTally tally(trace.slots);
  std::vector<bool> live_slot(trace.slots, false);
  for (const auto& op : trace.ops) {
    out.ops.push_back(op);
    tally.count(op, out.peak_live_bytes);
    live_slot[op.slot] = op.allocate;
    if (op.allocate) ++out.allocations;
    if (tally.live() >= target) break;
  }
  for (std::uint32_t s = 0; s < trace.slots; ++s)
    if (live_slot[s]) out.ops.push_back({false, s, 0});
  return out;
}

std::vector<std::pair<std::size_t, std::size_t>> pass_ranges(const Trace& trace) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  if (trace.pass_starts.empty()) {
    out.emplace_back(0, trace.ops.size());
    return out;
  }
  for (std::size_t k = 0; k < trace.pass_starts.size(); ++k)
    out.emplace_back(trace.pass_starts[k],
                     k + 1 < trace.pass_starts.size() ? trace.pass_starts[k + 1] : trace.ops.size());
  return out;
}

Trace repeat_trace(const Trace& trace, int passes, double jitter, std::uint64_t seed) {
  Trace out;
  out.name = trace.name;
  const auto n = static_cast<std::uint32_t>(std::max(passes, 1));
  out.slots = trace.slots * n;
  out.allocations = trace.allocations * n;
  out.ops.reserve(trace.ops.size() * n);
  // mt19937_64 and the 53-bit conversion below are fully specified, unlike
  // std::uniform_real_distribution: the same seed gives the same sizes with
  // any standard library.
  std::mt19937_64 rng(seed);
  LiveTally tally(out.slots);
  for (std::uint32_t pass = 0; pass < n; ++pass) {
    out.pass_starts.push_back(out.ops.size());
    for (const auto& op : trace.ops) {
      TraceOp o = op;
      o.slot = op.slot + pass * trace.slots;
      if (op.allocate && pass > 0 && jitter > 0) {
        const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;  // [0, 1)
        const double factor = 1 - jitter + 2 * jitter * u;
        o.size = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::llround(static_cast<double>(op.size) * factor)));
      }
      tally.count(o, out.peak_live_bytes);
      out.ops.push_back(o);
    }
  }
  return out;
}

}  // namespace memd::replay
