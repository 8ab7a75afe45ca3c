// Stream-ordered reuse; see stream_reuse.hpp.
#include "alloc/stream_reuse.hpp"

namespace memd {

StreamReuse::StreamState& StreamReuse::state_for(const Stream& s) {
  for (auto& st : streams_)
    if (st.stream == s) return st;
  if (!shared_) {
    if (!home_) {
      home_ = s;
    } else if (backend_.capturing(s)) {
      // A CUDA graph's capture stream: waiting for the home stream now would
      // invalidate the capture. PyTorch synchronizes the device before a
      // capture begins (torch.cuda.graph), so the home stream's frees have
      // run: nothing is waited for.
      home_.reset();
      shared_ = true;
      dirty_.store(false, std::memory_order_release);
    } else {
      leave_home();
    }
  }
  streams_.push_back(StreamState{s, {}, {}});
  return streams_.back();
}

void StreamReuse::leave_home() {
  settle();
  home_.reset();
  shared_ = true;
}

void StreamReuse::settle() {
  if (!dirty_.load(std::memory_order_relaxed) || !home_) return;
  ++counters_.device_calls;
  ++counters_.stream_syncs;
  (void)backend_.synchronize(*home_);
  dirty_.store(false, std::memory_order_release);
}

std::optional<std::uint64_t> StreamReuse::reuse(const Stream& stream, std::uint64_t bytes) {
  StreamState& st = state_for(stream);
  auto take = [&](std::vector<Pending>& list) -> std::optional<std::uint64_t> {
    for (std::size_t i = list.size(); i-- > 0;)
      if (list[i].size == bytes) {
        const auto address = list[i].address;
        list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
        pending_.erase(address);
        return address;
      }
    return std::nullopt;
  };
  std::optional<std::uint64_t> hit = take(st.open);
  for (auto it = st.fenced.rbegin(); !hit && it != st.fenced.rend(); ++it) hit = take(it->blocks);
  return hit;
}

bool StreamReuse::add(const Stream& stream, std::uint64_t address, std::uint64_t bytes) {
  StreamState& st = state_for(stream);
  if (home_ && *home_ == stream) {
    dirty_.store(true, std::memory_order_release);
    release_(address);
    return true;
  }
  st.open.push_back({address, bytes});
  pending_.insert(address, 1);
  if (st.open.size() >= batch_) fence(st);
  return false;
}

void StreamReuse::fence(StreamState& st) {
  if (st.open.empty()) return;
  // A stream being captured into a graph may not record events we would
  // query: its frees stay open (reused on it by size) until after capture.
  if (backend_.capturing(st.stream)) return;
  ++counters_.device_calls;
  auto ev = backend_.record(st.stream);
  if (!ev) {
    // Cannot fence: make the stream's work complete instead, then release.
    (void)backend_.synchronize(st.stream);
    for (const auto& p : st.open) finish(p);
    st.open.clear();
    return;
  }
  st.fenced.push_back(Batch{*ev, std::move(st.open)});
  ++fenced_batches_;
  st.open.clear();
}

void StreamReuse::finish(const Pending& p) {
  pending_.erase(p.address);
  release_(p.address);
}

void StreamReuse::drain(bool wait) {
  if (wait) settle();
  for (auto& st : streams_) {
    if (!wait && !st.fenced.empty() && backend_.capturing(st.stream)) continue;
    if (wait) fence(st);
    while (!st.fenced.empty()) {
      Batch& b = st.fenced.front();
      auto done = wait ? Result<bool>(backend_.wait(b.event).has_value()) : backend_.query(b.event);
      if ((!done || !*done) && !wait) break;
      (void)backend_.destroy_event(b.event);
      for (const auto& p : b.blocks) finish(p);
      st.fenced.pop_front();
      --fenced_batches_;
    }
  }
}

void StreamReuse::abandon() {
  for (auto& st : streams_)
    for (auto& b : st.fenced) {
      (void)backend_.wait(b.event);
      (void)backend_.destroy_event(b.event);
    }
  if (home_ && dirty_.load(std::memory_order_relaxed)) (void)backend_.synchronize(*home_);
  streams_.clear();
  home_.reset();
  dirty_.store(false, std::memory_order_relaxed);
  pending_ = FlatMap{};
  fenced_batches_ = 0;
}

Result<void> StreamReuse::validate() const {
  std::size_t count = 0;
  bool indexed = true;
  for_each_pending([&](std::uint64_t address, std::uint64_t) {
    ++count;
    indexed = indexed && pending_.find(address).has_value();
  });
  if (count != pending_.size() || !indexed)
    return fail(ErrorCode::internal, "streams: {} blocks pending in the lists, {} in the index", count,
                pending_.size());
  return {};
}

}  // namespace memd
