// The defragmentation action and its JSON.
#include "protocol/actions/defrag_actions.hpp"

#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

Result<Outcome> memory_defragment(MemoryService& s, const Params& p, const CallContext& ctx) {
  DefragOptions o;
  MEMD_ASSIGN_OR_RETURN(auto device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto bytes, p.size("maxBytesPerPass", 1));
  MEMD_ASSIGN_OR_RETURN(auto moves, p.json_integer("maxMovesPerPass", 1, kMaxDefragMovesPerPass));
  MEMD_ASSIGN_OR_RETURN(auto passes, p.json_integer("maxPasses", 1, kMaxDefragPasses));
  MEMD_ASSIGN_OR_RETURN(auto remap, p.boolean("allowRemap"));
  MEMD_ASSIGN_OR_RETURN(auto dry, p.boolean("dryRun"));
  o.device = device;
  if (bytes) o.max_bytes_per_pass = *bytes;
  if (moves) o.max_moves_per_pass = *moves;
  if (passes) o.max_passes = *passes;
  if (remap) o.allow_remap = *remap;
  if (dry) o.dry_run = *dry;
  MEMD_ASSIGN_OR_RETURN(auto report, s.defragment(ctx.caller, o));
  return ok(to_json(report));
}

constexpr std::string_view kExampleResult =
    R"({"dryRun": false, "bytesMoved": 52428800, "bytesRemapped": 0, "moves": 118, "remaps": 0, "skipped": 1, "abandoned": 0, "passes": 1, "durationMs": 12.5, "releaseMs": 3.1, "planMs": 1.2, "devices": [{"deviceId": "host:0", "memoryType": "VRAM", "fragmentationBefore": 0.97, "fragmentationAfter": 0.0, "reservedBytesBefore": 134217728, "reservedBytesAfter": 71303168, "freeBytesBefore": 67108864, "freeBytesAfter": 4194304, "moves": 118, "bytesMoved": 52428800, "bytesRemapped": 0}]})";

}  // namespace

void append_defrag_actions(std::vector<Action>& t) {
  t.push_back(Action{
      "memory_defragment",
      "Compact a device's pools (or every device's): movable allocations (not pinned, not exportable, not held by a transfer or an import) are moved, copied on the device or their mapping units remapped, so the sparsest mapping units or segments empty into holes of the densest and go back to the device. Ids, bytes and owners never change; readers wait only for each switch. Runs in passes bounded by bytes and moves; dryRun returns the plan and moves nothing. Anyone may ask (like memory_optimize): nothing anyone can see changes but addresses and timing.",
      {{HttpMethod::Post, "/api/memory/defragment"}},
      {{.name = "deviceId", .kind = K::DeviceId, .description = "The device (default: every device)."},
       {.name = "maxBytesPerPass", .kind = K::AllocationSize,
        .description = "Bytes one pass relocates, copied and remapped alike (default 1GiB); larger allocations stay."},
       {.name = "maxMovesPerPass", .kind = K::JsonInteger, .description = "Relocations per pass (default 4096).",
        .maximum = kMaxDefragMovesPerPass, .minimum = 1},
       {.name = "maxPasses", .kind = K::JsonInteger, .description = "Passes, each planned afresh (default 8).",
        .maximum = kMaxDefragPasses, .minimum = 1},
       {.name = "allowRemap", .kind = K::Boolean,
        .description = "Move allocations that own whole mapping units by remapping them instead of copying (default true)."},
       {.name = "dryRun", .kind = K::Boolean, .description = "Plan only: return the plan, move nothing (default false)."}},
      R"({"deviceId": "host:0", "maxBytesPerPass": "256MiB", "maxMovesPerPass": 1024, "maxPasses": 4, "allowRemap": true, "dryRun": false})",
      kExampleResult,
      memory_defragment});
}

}  // namespace memd
