// core/eviction_plan.hpp — which models leave a tier when room is needed
// (issue 15, item 4). Pure: indices and numbers in, victims out; the model
// manager gathers the numbers and carries the plan out.
//
// The unit of memory is the component (one exportable allocation per
// component, issue 15): identical components are stored once per device and
// shared by the models that use them, so evicting a model frees only the
// components no model staying on the tier still holds. The planner counts
// exactly that: a component's bytes come back when every holder of it on
// the tier is a victim.
//
// Who goes first — the models that cost least to bring back:
//   1. never a pinned model;
//   2. lower priority before higher;
//   3. models whose keep-alive has run out before those still inside it;
//   4. then the smallest expected cost of the eviction: the seconds it takes
//      to bring the model back from the tier below (restore_seconds) times
//      how likely it is to be wanted again soon — the predictor's reuse
//      probability, or, when the predictor knows nothing, recency (a model
//      used a minute ago is likelier to return than one idle for an hour):
//        value = restore_seconds × max(reuse_probability, 1 / (1 + idle_minutes));
//   5. ties: the longer idle first, then the lower index.
// Only as many bytes as needed: models are taken in that order until the
// freed bytes reach the need, then any victim the rest can do without is
// given back (the most valuable first), so a large cheap model does not take
// a small one down with it for nothing.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "memd/error.hpp"

namespace memd {

struct EvictionCandidate {
  int priority = 0;             // higher stays longer
  bool pinned = false;          // never chosen (its components stay held)
  bool in_keep_alive = false;   // chosen only after every model without
  double idle_seconds = 0;      // since its last use
  double reuse_probability = -1;  // 0..1 from the predictor; < 0: unknown
  double restore_seconds = 0;   // to bring it back from the tier below
  std::vector<std::uint32_t> components;  // indices into EvictionInput::component_bytes
};

struct EvictionInput {
  std::vector<EvictionCandidate> models;       // every model resident on the tier
  std::vector<std::uint64_t> component_bytes;  // each component's bytes on the tier
  // Components held by something that is not a model in `models` (a load in
  // flight, an export being mapped): never freed.
  std::vector<std::uint32_t> held_elsewhere;
  std::uint64_t bytes_needed = 0;
};

struct EvictionPlan {
  std::vector<std::uint32_t> victims;     // indices into models, in eviction order
  std::vector<std::uint32_t> freed;       // components whose bytes come back
  std::uint64_t freed_bytes = 0;
  bool enough = false;                    // freed_bytes >= bytes_needed
  std::uint64_t evictable_bytes = 0;      // the most any plan could free (every unpinned model)
};

// invalid_argument when a model names a component that does not exist.
Result<EvictionPlan> plan_eviction(const EvictionInput& input);

// The order models would be chosen in (unpinned only): what plan_eviction
// walks, exposed for status ("next to go") and for tests.
std::vector<std::uint32_t> eviction_order(const EvictionInput& input);

// The components freed if exactly `victims` leave the tier, and their bytes.
std::uint64_t freed_by(const EvictionInput& input, const std::vector<std::uint32_t>& victims,
                       std::vector<std::uint32_t>* freed = nullptr);

}  // namespace memd
