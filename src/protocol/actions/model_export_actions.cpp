// The model export actions; see model_export_actions.hpp.
#include "protocol/actions/model_export_actions.hpp"

#include "models/dtype.hpp"
#include "protocol/action_helpers.hpp"
#include "protocol/actions/export_actions.hpp"
#include "protocol/params.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

nlohmann::json tensor_json(const TensorPlacement& t) {
  return {{"name", t.name},
          {"dtype", std::string(to_string(t.dtype))},  // the safetensors spelling: F16, BF16, F32, …
          {"shape", t.shape},
          {"offset", t.offset},
          {"sizeBytes", t.bytes}};
}

nlohmann::json socket_json(const MemoryService& s) {
  return s.socket_path().empty() ? nlohmann::json(nullptr) : nlohmann::json(s.socket_path());
}

Result<Outcome> memory_model_export(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto name, required(p.model_name("name"), "name"));
  MEMD_ASSIGN_OR_RETURN(auto owners, required(p.owners("owners", kMaxExportOwners), "owners"));
  MEMD_ASSIGN_OR_RETURN(auto made, s.export_model(ctx.caller, name, std::move(owners)));
  nlohmann::json components = nlohmann::json::array();
  for (std::size_t i = 0; i < made.view.components.size(); ++i) {
    const auto& c = made.view.components[i];
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : c.tensors) tensors.push_back(tensor_json(t));
    nlohmann::json out{{"name", c.name},
                       {"allocationId", c.allocation.to_string()},
                       {"export", to_json(made.exports[i])},
                       {"sizeBytes", c.bytes},
                       {"deviceId", c.device.to_string()},
                       {"tier", std::string(to_string(c.tier))},
                       {"tensors", std::move(tensors)}};
    if (!made.gpu_uuids[i].empty()) out["gpuUuid"] = made.gpu_uuids[i];
    components.push_back(std::move(out));
  }
  return ok({{"name", made.view.name},
             {"deviceId", made.view.device.to_string()},
             {"owners", made.exports.empty() ? nlohmann::json::array() : nlohmann::json(made.exports[0].for_owners)},
             {"components", std::move(components)},
             {"socket", socket_json(s)}});
}

Result<Outcome> memory_model_export_release(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto name, required(p.model_name("name"), "name"));
  MEMD_ASSIGN_OR_RETURN(auto export_id, p.export_id("exportId"));
  MEMD_ASSIGN_OR_RETURN(auto released, s.release_model_exports(ctx.caller, name, export_id));
  nlohmann::json list = nlohmann::json::array();
  for (const auto& r : released) list.push_back(to_json(r));
  return ok({{"name", name}, {"released", std::move(list)}});
}

constexpr std::string_view kExportAnswer =
    R"({"name": "sdxl-unet", "deviceId": "cuda:0", "owners": ["worker-1"], "components": [{"name": "model", "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "export": {"exportId": "d4e5f6a7-b8c9-4d0e-9f10-23456789abcd", "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "memd:models", "owners": ["worker-1"], "createdAt": "2026-01-01T00:00:00.000Z", "released": false, "importers": 0}, "sizeBytes": 5135092736, "deviceId": "cuda:0", "tier": "VRAM", "gpuUuid": "GPU-5a1c3b2e-0f4d-4e8a-9b7c-1d2e3f405162", "tensors": [{"name": "conv_in.weight", "dtype": "F16", "shape": [320, 4, 3, 3], "offset": 0, "sizeBytes": 23040}, {"name": "conv_in.bias", "dtype": "F16", "shape": [320], "offset": 23296, "sizeBytes": 640}]}], "socket": "/run/memd/memd.sock"})";

}  // namespace

void append_model_export_actions(std::vector<Action>& t) {
  t.push_back(Action{
      "memory_model_export",
      "Let other processes of the named owners use a loaded model's weights without a copy: every component's "
      "buffer is exported (as memory_export does for an allocation), and the answer gives, per component, its "
      "export, size, device, tier and tensor table (name, dtype as safetensors spells it, shape, offset in the "
      "component's buffer, size), plus the socket to import through (memory_import). Any caller may export a model "
      "(models are the daemon's); only the named owners may import, and an importer can write what it maps. The "
      "model must be Loaded with every component in VRAM (conflict otherwise, naming each component's tier). While "
      "a component has live exports or importers its model is never evicted, and unload answers conflict until "
      "the exports are released (memory_model_export_release); importers that mapped it keep their mapping, and "
      "its memory stays counted, until their connections close.",
      {{HttpMethod::Post, "/api/memory/models/{name}/export", 201}},
      {{.name = "name", .kind = K::ModelName, .required = true, .description = "The model."},
       {.name = "owners", .kind = K::OwnerList, .required = true,
        .description = "Who may import it: 1..64 owners. Only they may, the admin included unless named.",
        .maximum = kMaxExportOwners}},
      R"({"name": "sdxl-unet", "owners": ["worker-1"]})",
      kExportAnswer,
      memory_model_export});
  t.push_back(Action{
      "memory_model_export_release",
      "End a model's exports: every live export of its components, or the one named. No new imports from them; "
      "processes that imported keep their mapping until they close their connection. Any caller may, as any may "
      "unload the model. An export that is not this model's, or was released already: not_found.",
      {{HttpMethod::Delete, "/api/memory/models/{name}/export"},
       {HttpMethod::Delete, "/api/memory/models/{name}/export/{exportId}"}},
      {{.name = "name", .kind = K::ModelName, .required = true, .description = "The model."},
       {.name = "exportId", .kind = K::ExportId, .description = "One export (default: all of the model's)."}},
      R"({"name": "sdxl-unet"})",
      R"({"name": "sdxl-unet", "released": [{"exportId": "d4e5f6a7-b8c9-4d0e-9f10-23456789abcd", "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "memd:models", "owners": ["worker-1"], "createdAt": "2026-01-01T00:00:00.000Z", "released": true, "importers": 1}]})",
      memory_model_export_release});
}

}  // namespace memd
