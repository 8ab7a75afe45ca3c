// models/usage_predictor.cpp — see usage_predictor.hpp.
#include "models/usage_predictor.hpp"

#include <algorithm>
#include <cmath>

namespace memd {
namespace {

constexpr double kSuccession = 0.6, kFrequency = 0.25, kRecency = 0.15;

}  // namespace

double UsagePredictor::decayed(const Entry& e, Clock::time_point now) const {
  const double age = std::chrono::duration<double>(now - e.updated).count();
  const double half_life = static_cast<double>(options_.frequency_half_life.count());
  if (age <= 0 || half_life <= 0) return e.frequency;
  return e.frequency * std::exp2(-age / half_life);
}

void UsagePredictor::record_use(std::string_view model, Clock::time_point now) {
  std::lock_guard lock(mu_);
  ++stats_.uses;
  generation_.fetch_add(1, std::memory_order_release);
  auto it = models_.find(model);
  if (it == models_.end()) {
    if (models_.size() >= options_.max_models) evict_oldest_locked();
    it = models_.emplace(std::string(model), Entry{}).first;
    it->second.updated = now;
  }
  Entry& e = it->second;
  e.frequency = decayed(e, now) + 1.0;
  e.updated = now;
  e.last_use = now;
  if (e.preloaded) {
    e.preloaded = false;
    ++stats_.hits;
  }
  if (last_ && *last_ != model) {
    if (auto prev = models_.find(*last_); prev != models_.end()) {
      auto& next = prev->second.successors;
      auto [s, fresh] = next.try_emplace(std::string(model), 0);
      ++s->second;
      if (fresh && next.size() > options_.max_successors) {
        // Drop the rarest successor other than this one.
        auto rarest = next.end();
        for (auto n = next.begin(); n != next.end(); ++n)
          if (n != s && (rarest == next.end() || n->second < rarest->second)) rarest = n;
        if (rarest != next.end()) next.erase(rarest);
      }
    }
  }
  last_ = std::string(model);
}

void UsagePredictor::record_preload(std::string_view model) {
  std::lock_guard lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end()) return;  // never used: nothing predicted it
  if (!it->second.preloaded) ++stats_.preloads;
  it->second.preloaded = true;
}

void UsagePredictor::record_eviction(std::string_view model) {
  std::lock_guard lock(mu_);
  auto it = models_.find(model);
  if (it == models_.end() || !it->second.preloaded) return;
  it->second.preloaded = false;
  ++stats_.misses;
}

void UsagePredictor::forget(std::string_view model) {
  std::lock_guard lock(mu_);
  generation_.fetch_add(1, std::memory_order_release);
  if (auto it = models_.find(model); it != models_.end()) {
    if (it->second.preloaded) ++stats_.misses;
    models_.erase(it);
  }
  for (auto& [name, e] : models_)
    if (auto s = e.successors.find(model); s != e.successors.end()) e.successors.erase(s);
  if (last_ && *last_ == model) last_.reset();
}

void UsagePredictor::evict_oldest_locked() {
  auto oldest = models_.end();
  for (auto it = models_.begin(); it != models_.end(); ++it)
    if (oldest == models_.end() || it->second.last_use < oldest->second.last_use) oldest = it;
  if (oldest == models_.end()) return;
  const std::string name = oldest->first;
  if (oldest->second.preloaded) ++stats_.misses;
  models_.erase(oldest);
  for (auto& [n, e] : models_) e.successors.erase(name);
  if (last_ && *last_ == name) last_.reset();
}

std::vector<ModelPrediction> UsagePredictor::predict_locked(Clock::time_point now) const {
  std::vector<ModelPrediction> out;
  if (models_.empty()) return out;
  // Each signal as a distribution over the models remembered.
  std::map<std::string_view, double> succession;
  double succession_total = 0;
  if (last_)
    if (auto it = models_.find(*last_); it != models_.end())
      for (const auto& [next, n] : it->second.successors)
        if (models_.contains(next)) {
          succession[next] = static_cast<double>(n);
          succession_total += static_cast<double>(n);
        }
  double frequency_total = 0, recency_total = 0;
  for (const auto& [name, e] : models_) {
    frequency_total += decayed(e, now);
    recency_total += 1.0 / (1.0 + std::chrono::duration<double>(now - e.last_use).count() / 60.0);
  }
  // A signal that knows nothing gives its weight to the others.
  double ws = succession_total > 0 ? kSuccession : 0, wf = frequency_total > 0 ? kFrequency : 0,
         wr = recency_total > 0 ? kRecency : 0;
  const double sum = ws + wf + wr;
  if (sum <= 0) return out;
  ws /= sum;
  wf /= sum;
  wr /= sum;
  for (const auto& [name, e] : models_) {
    double p = 0;
    if (ws > 0)
      if (auto s = succession.find(name); s != succession.end()) p += ws * s->second / succession_total;
    if (wf > 0) p += wf * decayed(e, now) / frequency_total;
    if (wr > 0) p += wr * (1.0 / (1.0 + std::chrono::duration<double>(now - e.last_use).count() / 60.0)) / recency_total;
    out.push_back({name, p});
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.probability > b.probability; });
  return out;
}

std::vector<ModelPrediction> UsagePredictor::predict(Clock::time_point now, std::size_t limit) const {
  std::lock_guard lock(mu_);
  auto out = predict_locked(now);
  if (out.size() > limit) out.resize(limit);
  return out;
}

double UsagePredictor::reuse_probability(std::string_view model, Clock::time_point now) const {
  std::lock_guard lock(mu_);
  for (const auto& p : predict_locked(now))
    if (p.model == model) return p.probability;
  return 0;
}

PredictorStats UsagePredictor::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

bool UsagePredictor::preloaded(std::string_view model) const {
  std::lock_guard lock(mu_);
  auto it = models_.find(model);
  return it != models_.end() && it->second.preloaded;
}

PredictorHistory UsagePredictor::history(Clock::time_point now, std::chrono::system_clock::time_point wall_now) const {
  auto wall = [&](Clock::time_point t) {
    return wall_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(now - t);
  };
  std::lock_guard lock(mu_);
  PredictorHistory h;
  h.last = last_;
  h.models.reserve(models_.size());
  for (const auto& [name, e] : models_)
    h.models.push_back({name, e.frequency, wall(e.updated), wall(e.last_use), e.successors});
  return h;
}

void UsagePredictor::restore(const PredictorHistory& history, Clock::time_point now,
                             std::chrono::system_clock::time_point wall_now) {
  auto steady = [&](std::chrono::system_clock::time_point t) {
    if (t > wall_now) return now;  // the wall clock went back: count it as now
    return now - std::chrono::duration_cast<Clock::duration>(wall_now - t);
  };
  // The most recently used first, so the bound keeps those.
  std::vector<const PredictorHistory::Model*> order;
  for (const auto& m : history.models) order.push_back(&m);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) { return a->last_use > b->last_use; });
  if (order.size() > options_.max_models) order.resize(options_.max_models);
  std::map<std::string, Entry, std::less<>> models;
  for (const auto* m : order) {
    Entry e;
    e.frequency = m->frequency;
    e.updated = steady(m->updated);
    e.last_use = steady(m->last_use);
    models.insert_or_assign(m->name, std::move(e));
  }
  for (const auto* m : order) {
    auto& next = models.at(m->name).successors;
    std::vector<std::pair<std::string, std::uint64_t>> kept;
    for (const auto& [name, n] : m->successors)
      if (name != m->name && models.contains(name)) kept.emplace_back(name, n);
    std::stable_sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    if (kept.size() > options_.max_successors) kept.resize(options_.max_successors);
    next.insert(kept.begin(), kept.end());
  }
  std::lock_guard lock(mu_);
  models_ = std::move(models);
  last_ = history.last && models_.contains(*history.last) ? history.last : std::nullopt;
  generation_.fetch_add(1, std::memory_order_release);
}

std::optional<std::string> UsagePredictor::last_used() const {
  std::lock_guard lock(mu_);
  return last_;
}

}  // namespace memd
