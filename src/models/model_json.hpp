// models/model_json.hpp — the wire objects of model status and estimates
// (what memory_model_* answer, and what model events carry).
#pragma once

#include <nlohmann/json.hpp>

#include "models/model_status.hpp"

namespace memd {

nlohmann::json to_json(const ModelStatus& status);
nlohmann::json to_json(const ModelEstimate& estimate);
nlohmann::json to_json(const ModelOptimizeReport& report);

}  // namespace memd
