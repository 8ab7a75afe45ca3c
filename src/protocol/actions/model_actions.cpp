// The model actions; see model_actions.hpp.
#include "protocol/actions/model_actions.hpp"

#include "models/dtype.hpp"
#include "models/model_json.hpp"
#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;
constexpr std::uint64_t kMaxKeepAliveSeconds = 30ull * 24 * 3600;
constexpr std::string_view kLoadDtypes[] = {"F16", "BF16"};
constexpr std::string_view kPlacements[] = {"spread", "fit"};

Result<ModelLoadRequest> load_request(const Params& p) {
  ModelLoadRequest r;
  MEMD_ASSIGN_OR_RETURN(auto name, required(p.model_name("name"), "name"));
  MEMD_ASSIGN_OR_RETURN(auto path, required(p.text("path", 1, kMaxModelPathChars), "path"));
  MEMD_ASSIGN_OR_RETURN(auto device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto priority, p.priority("priority"));
  MEMD_ASSIGN_OR_RETURN(auto keep, p.json_integer("keepAliveSeconds", 0, kMaxKeepAliveSeconds));
  MEMD_ASSIGN_OR_RETURN(auto pinned, p.boolean("pinned"));
  MEMD_ASSIGN_OR_RETURN(auto placement, p.string("placement"));
  if (placement) {
    // The table checked it is one of kPlacements.
    const auto parsed = parse_model_placement(*placement);
    if (!parsed) return fail(ErrorCode::invalid_argument, "'placement' must be spread or fit");
    r.placement = *parsed;
  }
  MEMD_ASSIGN_OR_RETURN(auto dtype, p.string("dtype"));
  if (dtype) {
    // The table checked it is one of kLoadDtypes; parse_dtype spells them.
    r.dtype = parse_dtype(*dtype);
    if (!r.dtype) return fail(ErrorCode::invalid_argument, "'dtype' must be F16 or BF16");
  }
  r.name = std::move(name);
  r.path = std::move(path);
  r.device = device;
  if (priority) r.priority = static_cast<int>(*priority);
  if (keep) r.keep_alive = std::chrono::seconds(*keep);
  if (pinned) r.pinned = *pinned;
  return r;
}

Result<Outcome> memory_model_load(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto request, load_request(p));
  MEMD_ASSIGN_OR_RETURN(auto status, s.models().load(request));
  return ok(to_json(status));
}

Result<Outcome> memory_model_estimate(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto request, load_request(p));
  MEMD_ASSIGN_OR_RETURN(auto estimate, s.models().estimate(request));
  return ok(to_json(estimate));
}

Result<Outcome> memory_model_status(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto name, p.model_name("name"));
  if (name) {
    MEMD_ASSIGN_OR_RETURN(auto status, s.models().status(*name));
    return ok(to_json(status));
  }
  nlohmann::json models = nlohmann::json::array();
  for (const auto& m : s.models().status()) models.push_back(to_json(m));
  const auto stats = s.models().predictor().stats();
  return ok({{"models", std::move(models)},
             {"ramCacheBytes", s.models().ram_bytes()},
             {"prediction", {{"preloads", stats.preloads}, {"hits", stats.hits}, {"misses", stats.misses},
                             {"hitRate", stats.hit_rate()}}}});
}

Result<Outcome> memory_model_unload(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto name, required(p.model_name("name"), "name"));
  MEMD_ASSIGN_OR_RETURN(auto status, s.models().unload(name));
  auto out = to_json(status);
  out["unloaded"] = true;
  return ok(std::move(out));
}

Result<Outcome> memory_model_pin(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto name, required(p.model_name("name"), "name"));
  MEMD_ASSIGN_OR_RETURN(auto pinned, p.boolean("pinned"));
  MEMD_ASSIGN_OR_RETURN(auto status, s.models().set_pinned(name, pinned.value_or(true)));
  return ok(to_json(status));
}

Result<Outcome> memory_model_optimize(MemoryService& s, const Params& p, const CallContext&) {
  ModelOptimizeRequest r;
  MEMD_ASSIGN_OR_RETURN(auto device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto dry, p.boolean("dryRun"));
  r.device = device;
  r.dry_run = dry.value_or(false);
  MEMD_ASSIGN_OR_RETURN(auto report, s.models().optimize(r));
  return ok(to_json(report));
}

constexpr std::string_view kStatusExample =
    R"({"name": "sdxl", "path": "/srv/models/sdxl", "kind": "diffusers", "state": "Loaded", "tier": "VRAM", "deviceId": "cuda:0", "priority": "Normal", "pinned": false, "keepAliveSeconds": 300, "dtype": null, "sizeBytes": 6938928640, "vramBytes": 6938928640, "ramBytes": 0, "sharedBytes": 1760000000, "tensors": 2515, "dtypes": ["F16"], "components": [{"name": "unet", "sizeBytes": 5135092736, "tensors": 1680, "tier": "VRAM", "sharedWith": 0, "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}], "hits": 3, "preloaded": false, "progress": {"stage": "done", "bytesDone": 6938928640, "bytesTotal": 6938928640, "rateBytesPerSecond": 22383640774.2, "stages": [{"stage": "resolving", "seconds": 0.0004}, {"stage": "reading layout", "seconds": 0.003}, {"stage": "hashing", "seconds": 0.001}, {"stage": "allocating", "seconds": 0.002}, {"stage": "copying", "seconds": 0.303}]}, "loadSeconds": 0.31, "loadGBps": 22.4, "lastUse": "2026-01-01T00:00:00.000Z"})";

const ParamSpec kLoadParams[] = {
    {.name = "name", .kind = K::ModelName, .required = true,
     .description = "The model's name: 1 to 128 letters, digits, '.', '_', '-' or ':'."},
    {.name = "path", .kind = K::ModelPath, .required = true,
     .description = "A .safetensors file, a *.safetensors.index.json, a diffusers folder (model_index.json) or a "
                    "single-file checkpoint, relative to a --model-root (or absolute inside one)."},
    {.name = "deviceId", .kind = K::DeviceId,
     .description = "Where it goes (default: chosen by placement)."},
    {.name = "placement",
     .kind = K::String,
     .description = "Without a deviceId, which GPU (or host device) it goes to, among those it fits on at all: "
                    "both prefer the one that needs the least eviction; when several need none, spread takes the "
                    "one with the most room (models spread out, each keeps headroom), fit the one with the least "
                    "room that holds it (small models pack together, leaving room for a large one). Default "
                    "spread. A model larger than every device's capacity is refused with out_of_memory, each "
                    "device's capacity in the message.",
     .choices = kPlacements,
     .choice_count = std::size(kPlacements)},
    {.name = "priority", .kind = K::Priority, .description = "Eviction order: lower goes first (default Normal)."},
    {.name = "keepAliveSeconds", .kind = K::JsonInteger,
     .description = "After its last use it is evicted only after models whose keep-alive ran out (default 0).",
     .maximum = kMaxKeepAliveSeconds},
    {.name = "pinned", .kind = K::Boolean, .description = "Never evicted (default false)."},
    {.name = "dtype",
     .kind = K::String,
     .description = "F16 or BF16: the model's F32 tensors land converted to it (round to nearest even, as PyTorch's "
                    ".half() / .bfloat16()), half their bytes; other dtypes land as the file holds them. Default: "
                    "every tensor as the file holds it. A model already known must be asked for with the same dtype.",
     .choices = kLoadDtypes,
     .choice_count = std::size(kLoadDtypes)},
};

}  // namespace

void append_model_actions(std::vector<Action>& t) {
  const std::vector<ParamSpec> load(std::begin(kLoadParams), std::end(kLoadParams));
  t.push_back(Action{
      "memory_model_load",
      "Load a model (safetensors file, shards, diffusers folder or single-file checkpoint) into VRAM, or bring a "
      "known one back: answers at once with state Loading; status reads Loaded (or Failed, with the error) when "
      "the job is done. Components already on the device with the same bytes are shared; room is made by moving "
      "the cheapest models down a tier (pinned never). Asking for a model already in VRAM counts a hit. The job's "
      "progress (stage: resolving, reading layout, hashing, allocating, copying or restoring, then done or failed; "
      "bytesDone of bytesTotal, the bytes this job lands; rateBytesPerSecond; stages: each stage ended so far with its seconds) is in the status and published as "
      "model_progress events, at most ten a second per model and always the final one.",
      {{HttpMethod::Post, "/api/memory/models", 202}},
      load,
      R"({"name": "sdxl", "path": "sdxl", "deviceId": "cuda:0", "priority": "Normal", "keepAliveSeconds": 300})",
      kStatusExample,
      memory_model_load});
  t.push_back(Action{
      "memory_model_estimate",
      "What loading a model would need: its bytes, the bytes not already on the device, the room there now, "
      "whether it fits and which models would be evicted. Changes nothing.",
      {{HttpMethod::Post, "/api/memory/models/estimate"}},
      load,
      R"({"name": "sdxl", "path": "sdxl"})",
      R"({"deviceId": "cuda:0", "sizeBytes": 6938928640, "newBytes": 6941573120, "roomBytes": 4294967296, "fits": true, "evict": [{"name": "old-model", "freesBytes": 5137367040}], "evictableBytes": 5137367040})",
      memory_model_estimate});
  t.push_back(Action{
      "memory_model_status",
      "Every model (or one): state, tier, device, bytes per tier, components (shared ones say with how many), "
      "tensors, dtypes, the load's progress, load time and rate, hits, preloaded (brought up a tier on a "
      "prediction, not used since), last use; with the RAM cache's bytes and the predictor's hit rate.",
      {{HttpMethod::Get, "/api/memory/models", 200, RouteBody::Json, true},
       {HttpMethod::Get, "/api/memory/models/{name}", 200, RouteBody::Json, true}},
      {{.name = "name", .kind = K::ModelName, .description = "One model (default: all)."}},
      R"({"name": "sdxl"})",
      kStatusExample,
      memory_model_status});
  t.push_back(Action{
      "memory_model_unload",
      "Unload a model: its components' references go, and what no other model holds is freed (VRAM and RAM "
      "cache). conflict while it is loading (a preload on a prediction is cancelled instead).",
      {{HttpMethod::Delete, "/api/memory/models/{name}"}},
      {{.name = "name", .kind = K::ModelName, .required = true, .description = "The model."}},
      R"({"name": "sdxl"})",
      R"({"name": "sdxl", "unloaded": true, "state": "Loaded", "tier": "VRAM", "sizeBytes": 6938928640})",
      memory_model_unload});
  t.push_back(Action{
      "memory_model_pin",
      "Pin a model (never evicted) or unpin it.",
      {{HttpMethod::Put, "/api/memory/models/{name}/pin"}},
      {{.name = "name", .kind = K::ModelName, .required = true, .description = "The model."},
       {.name = "pinned", .kind = K::Boolean, .description = "true pins (default), false unpins."}},
      R"({"name": "sdxl", "pinned": true})",
      kStatusExample,
      memory_model_pin});
  t.push_back(Action{
      "memory_model_optimize",
      "Offload idle models and shrink the RAM tier. Idle: not pinned, not loading, and its keep-alive run out "
      "since its last use (keepAliveSeconds 0: idle at once). Idle models leave VRAM for the RAM tier while it "
      "has room, else for Disk (their files); the RAM tier drops to its floor: it keeps only copies held by "
      "pinned, loading or within-keep-alive models, so idle models already there go to Disk (one tier per "
      "call). Answers what moved and the bytes freed per tier and device. Models with a keep-alive set leave "
      "VRAM on their own when it runs out; this asks for everything now.",
      {{HttpMethod::Post, "/api/memory/models/optimize"}},
      {{.name = "deviceId", .kind = K::DeviceId,
        .description = "Only this device: a GPU or host device offloads its idle models and leaves the RAM tier "
                       "alone; cpu only brings the RAM tier to its floor (default: every device and the RAM tier)."},
       {.name = "dryRun", .kind = K::Boolean,
        .description = "Plan only: report what would move and be freed, move nothing (default false)."}},
      R"({"deviceId": "cuda:0", "dryRun": false})",
      R"({"dryRun": false, "moved": [{"name": "sdxl", "deviceId": "cuda:0", "fromTier": "VRAM", "toTier": "RAM", "sizeBytes": 6938928640}], "freed": [{"deviceId": "cuda:0", "tier": "VRAM", "bytes": 6938928640}], "vramBytesFreed": 6938928640, "ramBytesFreed": 0, "ramBytesAdded": 6938928640, "ramCacheBytes": 6938928640, "orphanBytesFreed": 0})",
      memory_model_optimize});
}

}  // namespace memd
