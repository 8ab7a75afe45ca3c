// The sharing domain's actions and their JSON.
#include "protocol/actions/export_actions.hpp"

#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "protocol/wire_encoding.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

Result<Outcome> memory_export(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.allocation_id("allocationId"), "allocationId"));
  MEMD_ASSIGN_OR_RETURN(auto owners, required(p.owners("owners", kMaxExportOwners), "owners"));
  MEMD_ASSIGN_OR_RETURN(auto made, s.export_allocation(ctx.caller, id, std::move(owners)));
  auto out = to_json(made);
  out["socket"] = s.socket_path().empty() ? nlohmann::json(nullptr) : nlohmann::json(s.socket_path());
  return ok(std::move(out));
}

Result<Outcome> memory_export_release(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.allocation_id("allocationId"), "allocationId"));
  MEMD_ASSIGN_OR_RETURN(auto export_id, required(p.export_id("exportId"), "exportId"));
  MEMD_ASSIGN_OR_RETURN(auto released, s.release_export(ctx.caller, id, export_id));
  return ok(to_json(released));
}

constexpr std::string_view kExportExample =
    R"({"exportId": "d4e5f6a7-b8c9-4d0e-9f10-23456789abcd", "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "anonymous", "owners": ["worker-1"], "createdAt": "2026-01-01T00:00:00.000Z", "released": false, "importers": 0, "socket": "/run/memd/memd.sock"})";

}  // namespace

nlohmann::json to_json(const ExportRecord& r) {
  return {{"exportId", r.id.to_string()},
          {"allocationId", r.allocation.to_string()},
          {"owner", r.owner},
          {"owners", r.for_owners},
          {"createdAt", iso8601(r.created_at)},
          {"released", r.released},
          {"importers", r.importers}};
}

void append_export_actions(std::vector<Action>& t) {
  constexpr auto Post = HttpMethod::Post;
  constexpr auto Delete = HttpMethod::Delete;
  t.push_back(Action{
      "memory_export",
      "Let other processes of the named owners map an exportable allocation (its owner, or the admin). They import it over memd's Unix socket (memd serve --socket; the answer names it) with memory_import, proving their owner there as over REST; each receives a file descriptor (a memfd, or a CUDA POSIX-fd handle for VRAM). The memory stays counted until every importer has closed its connection, even after its owner frees it. Not exportable: conflict.",
      {{Post, "/api/memory/allocations/{allocationId}/export", 201}},
      {{.name = "allocationId", .kind = K::AllocationId, .required = true, .description = "The allocation's GUID (made with exportable: true)."},
       {.name = "owners", .kind = K::OwnerList, .required = true,
        .description = "Who may import it: 1..64 owners. Only they may, the admin included unless named.",
        .maximum = kMaxExportOwners}},
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owners": ["worker-1"]})",
      kExportExample,
      memory_export});
  t.push_back(Action{
      "memory_export_release",
      "End an export: no new imports from it (processes that imported it keep their mapping until they close their connection). A second release: not_found.",
      {{Delete, "/api/memory/allocations/{allocationId}/export/{exportId}"}},
      {{.name = "allocationId", .kind = K::AllocationId, .required = true, .description = "The allocation's GUID."},
       {.name = "exportId", .kind = K::ExportId, .required = true, .description = "What memory_export answered."}},
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "exportId": "d4e5f6a7-b8c9-4d0e-9f10-23456789abcd"})",
      R"({"exportId": "d4e5f6a7-b8c9-4d0e-9f10-23456789abcd", "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "anonymous", "owners": ["worker-1"], "createdAt": "2026-01-01T00:00:00.000Z", "released": true, "importers": 1})",
      memory_export_release});
}

}  // namespace memd
