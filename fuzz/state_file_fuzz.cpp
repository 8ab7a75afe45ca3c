// libFuzzer target: arbitrary text as each of the state directory's files
// (service/state_store.hpp: limits.json, models.json, predictor.json), the
// files memd reads back from --state-dir at start. Every input goes through
// all three parsers (a seed of one kind is garbage to the other two).
//
// Invariants: no crash and no unbounded allocation; a refusal is
// invalid_argument with a message that says where (a line and column, or a
// field) in printable ASCII of bounded length; an accepted file stays within
// the bounds (entries, names by their rules, values in range) and formats to
// a document that parses back to the same value, and formats again to the
// same text.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "memd/owner_name.hpp"
#include "memd/size.hpp"
#include "models/model_name.hpp"
#include "service/state_store.hpp"

namespace {

const auto kSaved = std::chrono::system_clock::time_point(std::chrono::milliseconds(1'767'225'600'000));

template <typename T>
void check_refusal(const memd::Result<T>& r) {
  if (r.error().code != memd::ErrorCode::invalid_argument) std::abort();
  const std::string& m = r.error().message;
  if (m.empty() || m.size() > 1024) std::abort();
  for (const char c : m)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) std::abort();
}

// format ∘ parse is the identity on what parse accepted, and a fixed point.
template <typename T, typename Format, typename Parse>
void check_round_trip(const T& value, Format format, Parse parse) {
  const std::string text = format(value, kSaved);
  auto again = parse(text);
  if (!again || !(*again == value)) std::abort();
  if (format(*again, kSaved) != text) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto limits = memd::parse_limits_state(text)) {
    for (const auto& [device, bytes] : limits->per_device)
      if (bytes > memd::kMaxRequestBytes) std::abort();
    for (const auto& [type, bytes] : limits->per_memory_type)
      if (type == memd::MemoryType::Unknown || bytes > memd::kMaxRequestBytes) std::abort();
    for (const auto& [owner, bytes] : limits->per_owner)
      if (!memd::check_owner(owner) || bytes > memd::kMaxRequestBytes) std::abort();
    check_round_trip(*limits, memd::format_limits_state, memd::parse_limits_state);
  } else {
    check_refusal(limits);
  }

  if (auto models = memd::parse_models_state(text)) {
    if (models->size() > memd::kMaxStateModels) std::abort();
    for (const auto& r : *models)
      if (!memd::check_model_record(r)) std::abort();
    check_round_trip(*models, memd::format_models_state, memd::parse_models_state);
  } else {
    check_refusal(models);
  }

  if (auto history = memd::parse_predictor_state(text)) {
    if (history->models.size() > memd::kMaxStateModels) std::abort();
    for (const auto& m : history->models) {
      if (!memd::check_model_name(m.name) || m.successors.size() > memd::kMaxStateSuccessors) std::abort();
      if (!(m.frequency >= 0)) std::abort();
    }
    check_round_trip(*history, memd::format_predictor_state, memd::parse_predictor_state);
  } else {
    check_refusal(history);
  }
  return 0;
}
