// The action table: every operation of the Memory domain, once.
//
// Each entry's handler reads its (already validated) params, calls the
// service and encodes the result. Adding an operation means adding an entry
// here; both transports, docs/api.md and /api/openapi.json follow from it.
#include "protocol/action_table.hpp"

#include <algorithm>
#include <new>

#include <fmt/ranges.h>

#include "memd/size.hpp"
#include "protocol/action_helpers.hpp"
#include "protocol/actions/defrag_actions.hpp"
#include "protocol/actions/model_actions.hpp"
#include "protocol/actions/model_export_actions.hpp"
#include "protocol/actions/event_actions.hpp"
#include "protocol/actions/analytics_actions.hpp"
#include "protocol/actions/export_actions.hpp"
#include "protocol/actions/history_actions.hpp"
#include "protocol/actions/monitor_actions.hpp"
#include "protocol/actions/transfer_actions.hpp"
#include "protocol/base64.hpp"
#include "protocol/params.hpp"
#include "protocol/wire_encoding.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

// One read answers at most this much: a stdio response line carries it in
// base64, so a whole 100 GiB allocation cannot be asked for at once. (REST
// streams a read of any length, dispatching this action once per 64 KiB
// piece: server/http/data_streams.hpp.)
constexpr std::uint64_t kMaxReadBytes = 1 * kGiB;
constexpr std::uint64_t kMaxPageLimit = 1000;
constexpr std::uint64_t kDefaultPageLimit = 100;

Result<Outcome> memory_status(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto report, s.status(device));
  auto out = to_json(report);
  if (!device) {
    // Client mode's leases (machine-wide, like the pinned pool): each is also
    // an allocation of its owner, so it is in the devices' figures already.
    const auto leases = s.lease_counts();
    nlohmann::json by_owner = nlohmann::json::object();
    for (const auto& [owner, bytes] : leases.bytes_by_owner) by_owner[owner] = bytes;
    out["leases"] = {{"leases", leases.leases}, {"bytes", leases.bytes}, {"connections", leases.connections},
                     {"bytesByOwner", std::move(by_owner)}};
  }
  return ok(std::move(out));
}

Result<Outcome> memory_usage(MemoryService& s, const Params&, const CallContext&) {
  return ok(to_json(s.usage()));
}

Result<Outcome> memory_allocations(MemoryService& s, const Params& p, const CallContext& ctx) {
  AllocationQuery q;
  MEMD_ASSIGN_OR_RETURN(q.filter.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(q.filter.memory_type, p.memory_type("memoryType"));
  MEMD_ASSIGN_OR_RETURN(q.filter.owner, p.owner("owner"));
  MEMD_ASSIGN_OR_RETURN(q.filter.status, p.allocation_status("status"));
  MEMD_ASSIGN_OR_RETURN(q.filter.tag, p.tag("tag"));
  MEMD_ASSIGN_OR_RETURN(auto offset, p.count("offset", kMaxWireBytes));
  MEMD_ASSIGN_OR_RETURN(auto limit, p.count("limit", kMaxPageLimit));
  q.offset = offset.value_or(0);
  q.limit = limit.value_or(kDefaultPageLimit);
  MEMD_ASSIGN_OR_RETURN(auto page, s.allocations(ctx.caller, q));
  return ok(to_json(page));
}

Result<Outcome> memory_allocation_details(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.allocation_id("allocationId"), "allocationId"));
  MEMD_ASSIGN_OR_RETURN(auto record, s.allocation(ctx.caller, id));
  return ok(to_json(record));
}

Result<Outcome> memory_allocate(MemoryService& s, const Params& p, const CallContext& ctx) {
  AllocationRequest r;
  MEMD_ASSIGN_OR_RETURN(r.size_bytes, required(p.size("sizeBytes", 1), "sizeBytes"));
  MEMD_ASSIGN_OR_RETURN(r.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto type, p.memory_type("memoryType", /*allocatable=*/true));
  // System RAM has no VRAM: an untyped request for `cpu` means RAM.
  r.memory_type = type.value_or(r.device && !r.device->is_gpu_like() ? MemoryType::RAM
                                                                     : MemoryType::VRAM);
  MEMD_ASSIGN_OR_RETURN(auto name, p.name("name"));
  r.name = name.value_or("");
  MEMD_ASSIGN_OR_RETURN(auto priority, p.priority("priority"));
  r.priority = priority.value_or(MemoryPriority::Normal);
  MEMD_ASSIGN_OR_RETURN(auto kind, p.allocation_type("allocationType"));
  r.allocation_type = kind.value_or(MemoryAllocationType::Buffer);
  MEMD_ASSIGN_OR_RETURN(auto tags, p.strings("tags"));
  r.tags = tags.value_or(std::vector<std::string>{});
  MEMD_ASSIGN_OR_RETURN(auto pinned, p.boolean("pinned"));
  r.pinned = pinned.value_or(false);
  MEMD_ASSIGN_OR_RETURN(auto exportable, p.boolean("exportable"));
  r.exportable = exportable.value_or(false);
  MEMD_ASSIGN_OR_RETURN(auto record, s.allocate(ctx.caller, r));
  return ok(to_json(record));
}

Result<Outcome> memory_deallocate(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.allocation_id("allocationId"), "allocationId"));
  MEMD_ASSIGN_OR_RETURN(auto record, s.deallocate(ctx.caller, id));
  return ok(to_json(record));
}

Result<Outcome> memory_write(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.allocation_id("allocationId"), "allocationId"));
  MEMD_ASSIGN_OR_RETURN(auto offset, p.size("offset"));
  std::vector<std::byte> decoded;
  std::span<const std::byte> data;
  if (ctx.payload) {
    data = *ctx.payload;
  } else {
    MEMD_ASSIGN_OR_RETURN(auto text, required(p.string("data"), "data"));
    auto bytes = base64_decode(text);
    if (!bytes) return fail(ErrorCode::invalid_argument, "parameter 'data': {}", bytes.error().message);
    decoded = std::move(*bytes);
    data = decoded;
  }
  if (auto written = s.write(ctx.caller, id, offset.value_or(0), data); !written) return fail(written.error());
  return ok({{"allocationId", id.to_string()},
             {"offset", offset.value_or(0)},
             {"bytesWritten", data.size()}});
}

Result<Outcome> memory_read(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.allocation_id("allocationId"), "allocationId"));
  MEMD_ASSIGN_OR_RETURN(auto offset_opt, p.size("offset"));
  MEMD_ASSIGN_OR_RETURN(auto length_opt, p.size("length"));
  const std::uint64_t offset = offset_opt.value_or(0);
  std::uint64_t length = 0;
  if (length_opt) {
    length = *length_opt;
  } else {
    // Without a length, the rest of the allocation from offset.
    MEMD_ASSIGN_OR_RETURN(auto record, s.allocation(ctx.caller, id));
    if (offset > record.size_bytes)
      return fail(ErrorCode::out_of_range, "offset {} is beyond the allocation's {} bytes",
                  offset, record.size_bytes);
    length = record.size_bytes - offset;
  }
  // A well-formed length whose answer would be too large to carry at once.
  if (length > kMaxReadBytes)
    return fail(ErrorCode::payload_too_large,
                "length {} exceeds the {} bytes one read may return; read in pieces", length,
                kMaxReadBytes);
  MEMD_ASSIGN_OR_RETURN(auto bytes, s.read(ctx.caller, id, offset, length));
  Outcome out;
  out.result = {{"allocationId", id.to_string()}, {"offset", offset}, {"length", bytes.size()}};
  if (ctx.binary_response) out.bytes = std::move(bytes);
  else out.result["data"] = base64_encode(bytes);
  return out;
}

Result<Outcome> memory_limits(MemoryService& s, const Params& p, const CallContext& ctx) {
  // The published shape (OpenAPI `oneOf`): no scope and no bytes reads the
  // limits; exactly one scope with bytes sets one.
  const int scopes = int{p.contains("deviceId")} + int{p.contains("memoryType")} + int{p.contains("owner")};
  if (ctx.read_only || (scopes == 0 && !p.contains("bytes"))) return ok(to_json(s.limits()));
  if (scopes != 1)
    return fail(ErrorCode::invalid_argument,
                "a limit update names exactly one of deviceId, memoryType or owner, with bytes");
  LimitUpdate u;
  MEMD_ASSIGN_OR_RETURN(u.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(u.memory_type, p.memory_type("memoryType", /*allocatable=*/true));
  MEMD_ASSIGN_OR_RETURN(u.owner, p.owner("owner"));
  // An absent `bytes` is a mistake more often than a wish to remove a limit:
  // removal is spelled out as "bytes": null.
  if (!p.contains("bytes"))
    return fail(ErrorCode::invalid_argument,
                "missing required parameter 'bytes' (null removes the limit)");
  if (!p.is_null("bytes")) {
    MEMD_ASSIGN_OR_RETURN(u.bytes, p.size("bytes"));
  }
  MEMD_ASSIGN_OR_RETURN(auto limits, s.update_limits(ctx.caller, u));
  return ok(to_json(limits));
}

Result<Outcome> memory_clear(MemoryService& s, const Params& p, const CallContext& ctx) {
  ClearRequest r;
  MEMD_ASSIGN_OR_RETURN(r.owner, p.owner("owner"));
  MEMD_ASSIGN_OR_RETURN(r.memory_type, p.memory_type("memoryType"));
  MEMD_ASSIGN_OR_RETURN(r.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(r.below_priority, p.priority("belowPriority"));
  MEMD_ASSIGN_OR_RETURN(auto pinned, p.boolean("includePinned"));
  r.include_pinned = pinned.value_or(false);
  MEMD_ASSIGN_OR_RETURN(auto report, s.clear(ctx.caller, r));
  return ok(to_json(report));
}

Result<Outcome> memory_optimize(MemoryService& s, const Params&, const CallContext&) {
  return ok(to_json(s.optimize()));
}

Result<Outcome> memory_health(MemoryService& s, const Params&, const CallContext&) {
  return ok(to_json(s.health()));
}

Result<Outcome> memory_devices(MemoryService& s, const Params&, const CallContext&) {
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : s.devices()) devices.push_back(to_json(d));
  return ok({{"devices", std::move(devices)}});
}

Result<Outcome> memory_session_open(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto ttl, p.json_integer("ttlSeconds", kMinSessionTtl.count(), kMaxSessionTtl.count()));
  std::optional<std::chrono::seconds> seconds;
  if (ttl) seconds = std::chrono::seconds(static_cast<std::int64_t>(*ttl));
  MEMD_ASSIGN_OR_RETURN(auto session, s.open_session(ctx.caller, seconds));
  return ok(to_json(session));
}

Result<Outcome> memory_session_renew(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.session_id("sessionId"), "sessionId"));
  MEMD_ASSIGN_OR_RETURN(auto session, s.heartbeat_session(ctx.caller, id));
  return ok(to_json(session));
}

Result<Outcome> memory_session_close(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.session_id("sessionId"), "sessionId"));
  MEMD_ASSIGN_OR_RETURN(auto closed, s.close_session(ctx.caller, id));
  return ok(to_json(closed));
}

Result<Outcome> memory_sessions(MemoryService& s, const Params&, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto sessions, s.sessions(ctx.caller));
  nlohmann::json items = nlohmann::json::array();
  for (const auto& session : sessions) items.push_back(to_json(session));
  return ok({{"sessions", std::move(items)}});
}

using K = ParamKind;
constexpr auto Get = HttpMethod::Get;
constexpr auto Post = HttpMethod::Post;
constexpr auto Put = HttpMethod::Put;
constexpr auto Delete = HttpMethod::Delete;

std::vector<Action> build_table() {
  std::vector<Action> t;
  t.push_back(Action{
      "memory_status",
      "Memory of every device, or of one: device totals plus memd's reserved, allocated, fragmentation and health; and, for all devices, the pinned pool (its limit, and the staging buffers transfers use), the transfer counters and the memory leased to client-mode processes over the socket.",
      {{Get, "/api/memory/status"}, {Get, "/api/memory/status/{deviceId}"}},
      {{"deviceId", K::DeviceId, false, "Only this device (cuda:N, host:N or cpu)."}},
      R"({})",
      R"({"health": "Healthy", "devices": [{"deviceId": "host:0", "name": "host-backed device", "backend": "host", "simulated": true, "totalBytes": 8589934592, "usedBytes": 2097152, "freeBytes": 8587837440, "reservedBytes": 2097152, "allocatedBytes": 1048576, "allocations": 1, "fragmentation": 0.0, "limitBytes": null, "health": "Healthy", "pools": [{"memoryType": "VRAM", "allocatedBytes": 1048576, "reservedBytes": 2097152, "liveAllocations": 1, "fragmentation": 0.0}]}], "pinned": {"limitBytes": 8589934592, "reservedBytes": 33554432, "allocatedBytes": 8388608, "stagingBufferBytes": 8388608, "stagingBuffersInUse": 1, "stagingBytesInUse": 8388608, "stagingIdleBuffers": 3, "stagingLeases": 12, "stagingShortLeases": 0, "stagingRefused": 0}, "transfers": {"submitted": 12, "pending": 0, "inProgress": 1, "completed": 11, "failed": 0, "cancelled": 0, "copies": 3, "bytesCopied": 3221225472}, "leases": {"leases": 2, "bytes": 41943040, "connections": 1, "bytesByOwner": {"worker-1": 41943040}}})",
      memory_status});
  t.push_back(Action{
      "memory_usage",
      "Bytes requested (what callers asked for, what limits count), rounded (what the pools hold for them) and reserved (held from the device), by device, by memory type and by owner (requested only).",
      {{Get, "/api/memory/usage"}},
      {},
      R"({})",
      R"({"total": {"requestedBytes": 1000000, "roundedBytes": 1048576, "reservedBytes": 2097152, "allocations": 1}, "byDevice": {"host:0": {"requestedBytes": 1000000, "roundedBytes": 1048576, "reservedBytes": 2097152, "allocations": 1}}, "byMemoryType": {"VRAM": {"requestedBytes": 1000000, "roundedBytes": 1048576, "reservedBytes": 2097152, "allocations": 1}}, "byOwner": {"anonymous": {"requestedBytes": 1000000, "allocations": 1}}})",
      memory_usage});
  t.push_back(Action{
      "memory_allocations",
      "List your allocations (the admin: anyone's), newest first, filtered and paged; total counts every match.",
      {{Get, "/api/memory/allocations"}},
      {{"deviceId", K::DeviceId, false, "Only allocations on this device."},
       {"memoryType", K::MemoryType, false, "Only this memory type."},
       {"owner", K::Owner, false, "Only this owner's allocations: your own unless you are the admin (another owner: permission_denied)."},
       {"status", K::AllocationStatus, false, "Only allocations in this status."},
       {"tag", K::Tag, false, "Only allocations carrying this tag."},
       {"offset", K::Count, false, "Matches to skip (default 0)."},
       {"limit", K::Count, false, "Most items to return (default 100, at most 1000).", false, kMaxPageLimit}},
      R"({"owner": "anonymous", "limit": 10})",
      R"({"items": [{"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "anonymous", "name": "", "deviceId": "host:0", "memoryType": "VRAM", "allocationType": "Buffer", "status": "Allocated", "priority": "Normal", "sizeBytes": 1048576, "address": 140230000000000, "tags": [], "pinned": false, "exportable": false, "createdAt": "2026-01-01T00:00:00.000Z", "lastUsedAt": "2026-01-01T00:00:00.000Z"}], "total": 1, "offset": 0, "limit": 10})",
      memory_allocations});
  t.push_back(Action{
      "memory_allocation_details",
      "One allocation's record (its owner or the admin; another owner's: permission_denied).",
      {{Get, "/api/memory/allocations/{allocationId}"}},
      {{"allocationId", K::AllocationId, true, "The allocation's GUID."}},
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890"})",
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "anonymous", "name": "", "deviceId": "host:0", "memoryType": "VRAM", "allocationType": "Buffer", "status": "Allocated", "priority": "Normal", "sizeBytes": 1048576, "address": 140230000000000, "tags": [], "pinned": false, "exportable": false, "createdAt": "2026-01-01T00:00:00.000Z", "lastUsedAt": "2026-01-01T00:00:00.000Z"})",
      memory_allocation_details});
  t.push_back(Action{
      "memory_allocate",
      "Allocate memory for the caller: the owner is the stdio host, the owner of a --tokens bearer token, or the X-Memd-Owner label; with a session (X-Memd-Session) it is freed when the session ends.",
      {{Post, "/api/memory/allocations", 201}},
      {{"sizeBytes", K::AllocationSize, true, "Bytes to allocate (at least 1): an integer or a string such as \"512MiB\" or \"1.5GiB\"."},
       {"memoryType", K::AllocatableMemoryType, false, "VRAM (default; RAM for cpu), RAM, SharedMemory or UnifiedMemory."},
       {"deviceId", K::DeviceId, false, "Where: cuda:N, host:N or cpu (default: first GPU, else host:0)."},
       {"name", K::Name, false, "A label for people (at most 256 characters)."},
       {"priority", K::Priority, false, "Low, Normal (default), High or Critical."},
       {"allocationType", K::AllocationType, false, "What it is for (default Buffer)."},
       {"tags", K::StringList, false, "Tags to filter by later (at most 64, each 1..128 characters)."},
       {"pinned", K::Boolean, false, "Never move it (default false; JSON true/false only)."},
       {"exportable", K::Boolean, false, "Give it memory of its own that other processes may map (memory_export; a memfd on the host, GPU units no neighbour shares). Exportable allocations never move. Default false."}},
      R"({"sizeBytes": 1048576, "memoryType": "VRAM", "deviceId": "host:0"})",
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "anonymous", "name": "", "deviceId": "host:0", "memoryType": "VRAM", "allocationType": "Buffer", "status": "Allocated", "priority": "Normal", "sizeBytes": 1048576, "address": 140230000000000, "tags": [], "pinned": false, "exportable": false, "createdAt": "2026-01-01T00:00:00.000Z", "lastUsedAt": "2026-01-01T00:00:00.000Z"})",
      memory_allocate});
  t.push_back(Action{
      "memory_deallocate",
      "Free an allocation (its owner or the admin); answers its final record (status Freed). A second free is not_found.",
      {{Delete, "/api/memory/allocations/{allocationId}"}},
      {{"allocationId", K::AllocationId, true, "The allocation's GUID."}},
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890"})",
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "anonymous", "name": "", "deviceId": "host:0", "memoryType": "VRAM", "allocationType": "Buffer", "status": "Freed", "priority": "Normal", "sizeBytes": 1048576, "address": 140230000000000, "tags": [], "pinned": false, "exportable": false, "createdAt": "2026-01-01T00:00:00.000Z", "lastUsedAt": "2026-01-01T00:00:00.000Z"})",
      memory_deallocate});
  t.push_back(Action{
      "memory_write",
      "Write bytes into an allocation at offset (bounds-checked; its owner or the admin). REST sends them as an application/octet-stream body, stdio as base64 in data.",
      {{Put, "/api/memory/allocations/{allocationId}/data", 200, RouteBody::BinaryUpload}},
      {{"allocationId", K::AllocationId, true, "The allocation's GUID."},
       {"offset", K::Size, false, "Where to start writing (default 0)."},
       {"data", K::Base64, true, "The bytes, base64 (stdio only; REST sends the raw body).", true}},
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "offset": 0, "data": "aGVsbG8="})",
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "offset": 0, "bytesWritten": 5})",
      memory_write});
  t.push_back(Action{
      "memory_read",
      "Read bytes of an allocation (bounds-checked; its owner or the admin). REST streams them as application/octet-stream, any length; stdio answers base64 in data, at most 1 GiB a call.",
      {{Get, "/api/memory/allocations/{allocationId}/data", 200, RouteBody::BinaryDownload}},
      {{"allocationId", K::AllocationId, true, "The allocation's GUID."},
       {"offset", K::Size, false, "Where to start reading (default 0)."},
       {"length", K::Size, false, "How many bytes (default: to the end)."}},
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "offset": 0, "length": 5})",
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "offset": 0, "length": 5, "data": "aGVsbG8="})",
      memory_read});
  t.push_back(Action{
      "memory_limits",
      "Read the limits (anyone), or set one (the admin only): name exactly one of deviceId, memoryType or owner with bytes (null removes it).",
      {{Get, "/api/memory/limits", 200, RouteBody::Json, true}, {Put, "/api/memory/limits"}},
      {{.name = "deviceId", .kind = K::DeviceId, .description = "Limit this device.", .scope = true},
       {.name = "memoryType", .kind = K::AllocatableMemoryType,
        .description = "Limit this memory type (over all devices).", .scope = true},
       {.name = "owner", .kind = K::Owner, .description = "Limit this owner.", .scope = true},
       {.name = "bytes", .kind = K::Size, .description = "The limit; null removes it. Required when setting.",
        .nullable = true, .scoped = true}},
      R"({"owner": "worker-1", "bytes": "512MiB"})",
      R"({"perDevice": {}, "perMemoryType": {}, "perOwner": {"worker-1": 536870912}})",
      memory_limits});
  t.push_back(Action{
      "memory_clear",
      "Give cached memory back to the devices (anyone); with a filter, also free the matching allocations (pinned ones only with includePinned): your own with owner set to yourself, anyone's only as the admin.",
      {{Post, "/api/memory/clear"}},
      {{"owner", K::Owner, false, "Free this owner's allocations."},
       {"memoryType", K::MemoryType, false, "Free allocations of this memory type."},
       {"deviceId", K::DeviceId, false, "Free allocations on this device."},
       {"belowPriority", K::Priority, false, "Free allocations of lower priority than this."},
       {"includePinned", K::Boolean, false, "Free pinned allocations too (default false)."}},
      R"({"owner": "worker-1"})",
      R"({"freedAllocations": 1, "freedBytes": 1048576, "releasedBytes": 2097152, "allocationIds": ["a1b2c3d4-e5f6-4890-abcd-ef1234567890"]})",
      memory_clear});
  t.push_back(Action{
      "memory_optimize",
      "Release every byte memd holds but does not use, and report how many (anyone: it frees nothing anyone holds).",
      {{Post, "/api/memory/optimize"}},
      {},
      R"({})",
      R"({"releasedBytes": 2097152, "reservedBeforeBytes": 4194304, "reservedAfterBytes": 2097152})",
      memory_optimize});
  t.push_back(Action{
      "memory_health",
      "Overall health (the worst device's), version and uptime; per device the grade (Healthy, Warning — degraded but serving —, Critical, Failed — memory info unreadable —, Unknown), the reasons for it, the pressure level and, on GPUs, NVML's ECC counts and retired or remapped memory (null where the device does not report them). Graded each sample from free memory, pressure, out-of-memory failures in the last five minutes and the hardware counts. Never needs a token.",
      {{Get, "/healthz"}},
      {},
      R"({})",
      R"({"status": "Warning", "version": "0.1.0", "uptimeSeconds": 42, "devices": [{"deviceId": "cuda:0", "health": "Warning", "reasons": ["memory pressure High"], "pressure": "High", "hardware": {"eccCorrected": 0, "eccUncorrected": 0, "retiredPages": null, "retiredPagesPending": null, "remappedRowsCorrectable": 0, "remappedRowsUncorrectable": 0, "remappingPending": false, "remappingFailed": false}}, {"deviceId": "cpu", "health": "Healthy", "reasons": [], "pressure": "Low", "hardware": {"eccCorrected": null, "eccUncorrected": null, "retiredPages": null, "retiredPagesPending": null, "remappedRowsCorrectable": null, "remappedRowsUncorrectable": null, "remappingPending": null, "remappingFailed": null}}]})",
      memory_health});
  t.push_back(Action{
      "memory_devices",
      "The devices memd found and what they offer. Each GPU-like device (cuda:N, host:N) lists every other one in peers with how it reaches its memory: direct (host:N devices share one address space; GPUs with CUDA peer access both ways) or staged through host memory. GPUs carry their uuid as nvidia-smi writes it (GPU-…); cpu has no peers.",
      {{Get, "/api/memory/devices"}},
      {},
      R"({})",
      R"({"devices": [{"deviceId": "host:0", "name": "host-backed device", "backend": "host", "simulated": true, "totalBytes": 8589934592, "freeBytes": 8589934592, "granularity": 2097152, "virtualMemory": true, "memoryTypes": ["VRAM"], "peers": [{"deviceId": "host:1", "access": "direct"}]}, {"deviceId": "host:1", "name": "host-backed device", "backend": "host", "simulated": true, "totalBytes": 4294967296, "freeBytes": 4294967296, "granularity": 2097152, "virtualMemory": true, "memoryTypes": ["VRAM"], "peers": [{"deviceId": "host:0", "access": "direct"}]}]})",
      memory_devices});
  t.push_back(Action{
      "memory_session_open",
      "Open a session of the caller's owner: a lease on the allocations made in it (REST: X-Memd-Session: <sessionId>; stdio: \"session\" beside \"params\"). Closing it, or ttlSeconds passing without a heartbeat, frees them, so a crashed worker leaks nothing.",
      {{Post, "/api/sessions", 201}},
      {{.name = "ttlSeconds", .kind = K::JsonInteger,
        .description = "Lease length in seconds, 1..86400 (default 60); each heartbeat starts it again.",
        .maximum = static_cast<std::uint64_t>(kMaxSessionTtl.count()),
        .minimum = static_cast<std::uint64_t>(kMinSessionTtl.count())}},
      R"({"ttlSeconds": 30})",
      R"({"sessionId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "owner": "worker-1", "ttlSeconds": 30, "expiresAt": "2026-01-01T00:00:30.000Z", "allocations": 0, "allocatedBytes": 0})",
      memory_session_open});
  t.push_back(Action{
      "memory_session_renew",
      "Renew a session's lease for its ttlSeconds from now (its owner or the admin). A lapsed session cannot be renewed: not_found, its allocations already freed.",
      {{Put, "/api/sessions/{sessionId}"}},
      {{"sessionId", K::SessionId, true, "The session's GUID."}},
      R"({"sessionId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890"})",
      R"({"sessionId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "owner": "worker-1", "ttlSeconds": 30, "expiresAt": "2026-01-01T00:01:00.000Z", "allocations": 1, "allocatedBytes": 1048576})",
      memory_session_renew});
  t.push_back(Action{
      "memory_session_close",
      "Close a session (its owner or the admin) and free every allocation still in it; answers what it freed.",
      {{Delete, "/api/sessions/{sessionId}"}},
      {{"sessionId", K::SessionId, true, "The session's GUID."}},
      R"({"sessionId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890"})",
      R"({"sessionId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "owner": "worker-1", "releasedAllocations": 1, "releasedBytes": 1048576, "allocationIds": ["a1b2c3d4-e5f6-4890-abcd-ef1234567890"]})",
      memory_session_close});
  t.push_back(Action{
      "memory_sessions",
      "Your open sessions (the admin: everyone's), soonest to lapse first.",
      {{Get, "/api/sessions"}},
      {},
      R"({})",
      R"({"sessions": [{"sessionId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "owner": "worker-1", "ttlSeconds": 30, "expiresAt": "2026-01-01T00:00:30.000Z", "allocations": 1, "allocatedBytes": 1048576}]})",
      memory_sessions});
  append_transfer_actions(t);
  append_export_actions(t);
  append_monitor_actions(t);
  append_defrag_actions(t);
  append_event_actions(t);
  append_analytics_actions(t);
  append_history_actions(t);
  append_model_actions(t);
  append_model_export_actions(t);
  return t;
}

Result<void> validate_param(const Params& p, const ParamSpec& spec);

// Each item of an ObjectList against the item specs; errors name the item.
Result<void> validate_items(const Params& p, const ParamSpec& spec) {
  auto items = p.objects(spec.name, spec.maximum != 0 ? spec.maximum : kMaxWireBytes);
  if (!items) return fail(items.error());
  if (!*items) return {};
  for (std::size_t i = 0; i < (*items)->size(); ++i) {
    const Params item(*(**items)[i]);
    for (std::size_t k = 0; k < spec.item_count; ++k)
      if (auto ok = validate_param(item, spec.items[k]); !ok)
        return fail(ok.error().code, "{}[{}]: {}", spec.name, i, ok.error().message);
  }
  return {};
}

Result<void> validate_param(const Params& p, const ParamSpec& spec) {
  if (spec.nullable && p.is_null(spec.name)) return {};
  auto check = [&](auto result) -> Result<void> {
    if (!result) return fail(result.error());
    if (spec.required && !result->has_value())
      return fail(ErrorCode::invalid_argument, "missing required parameter '{}'", spec.name);
    return {};
  };
  switch (spec.kind) {
    case K::String: {
      auto text = p.string(spec.name);
      if (text && *text && spec.choice_count > 0 &&
          std::find(spec.choices, spec.choices + spec.choice_count, **text) == spec.choices + spec.choice_count) {
        std::string names;
        for (std::size_t i = 0; i < spec.choice_count; ++i)
          names += (i ? ", " : "") + std::string(spec.choices[i]);
        return fail(ErrorCode::invalid_argument, "'{}' must be one of {}", spec.name, names);
      }
      return check(std::move(text));
    }
    case K::Base64: return check(p.string(spec.name));
    case K::Size: return check(p.size(spec.name));
    case K::Count:
      return check(p.count(spec.name, spec.maximum != 0 ? spec.maximum : kMaxWireBytes, spec.minimum));
    case K::AllocationSize: return check(p.size(spec.name, 1));
    case K::AllocatableMemoryType: return check(p.memory_type(spec.name, true));
    case K::Owner: return check(p.owner(spec.name));
    case K::SessionId: return check(p.session_id(spec.name));
    case K::JsonInteger:
      return check(p.json_integer(spec.name, spec.minimum, spec.maximum != 0 ? spec.maximum : kMaxWireBytes));
    case K::Name: return check(p.name(spec.name));
    case K::Tag: return check(p.tag(spec.name));
    case K::Boolean: return check(p.boolean(spec.name));
    case K::StringList: return check(p.strings(spec.name));
    case K::DeviceId: return check(p.device(spec.name));
    case K::AllocationId: return check(p.allocation_id(spec.name));
    case K::MemoryType: return check(p.memory_type(spec.name));
    case K::AllocationType: return check(p.allocation_type(spec.name));
    case K::AllocationStatus: return check(p.allocation_status(spec.name));
    case K::Priority: return check(p.priority(spec.name));
    case K::TransferId: return check(p.transfer_id(spec.name));
    case K::ExportId: return check(p.export_id(spec.name));
    case K::OomSnapshotId: return check(p.snapshot_id(spec.name));
    case K::OwnerList: return check(p.owners(spec.name, spec.maximum != 0 ? spec.maximum : kMaxWireBytes));
    case K::EventKinds: return check(p.event_kinds(spec.name));
    case K::ModelName: return check(p.model_name(spec.name));
    case K::ModelPath: return check(p.text(spec.name, 1, kMaxModelPathChars));
    case K::ObjectList:
      if (auto ok = validate_items(p, spec); !ok) return ok;
      return check(p.objects(spec.name, spec.maximum != 0 ? spec.maximum : kMaxWireBytes));
  }
  return {};
}

// The alternatives rule (ParamSpec::alternative): exactly one alternative
// used, no key of another, and the used one's required keys present.
Result<void> validate_alternatives(const Action& action, const Params& p, bool rest_binary) {
  std::vector<std::string_view> used;
  bool any = false;
  for (const auto& spec : action.params) {
    if (spec.alternative.empty() || (spec.stdio_only && rest_binary)) continue;
    any = true;
    if (p.contains(spec.name) && std::find(used.begin(), used.end(), spec.alternative) == used.end())
      used.push_back(spec.alternative);
  }
  if (!any) return {};
  std::vector<std::string> names;
  for (const auto& spec : action.params)
    if (!spec.alternative.empty() && spec.required) names.push_back(std::string(spec.name));
  if (used.size() != 1)
    return fail(ErrorCode::invalid_argument, "{} takes exactly one of: {}", action.name, fmt::join(names, ", "));
  for (const auto& spec : action.params)
    if (spec.alternative == used.front() && spec.required && !p.contains(spec.name))
      return fail(ErrorCode::invalid_argument, "missing required parameter '{}'", spec.name);
  return {};
}

}  // namespace

std::string_view to_string(HttpMethod method) noexcept {
  switch (method) {
    case HttpMethod::Get: return "GET";
    case HttpMethod::Post: return "POST";
    case HttpMethod::Put: return "PUT";
    case HttpMethod::Delete: return "DELETE";
  }
  return "GET";
}

std::string_view to_string(ParamKind kind) noexcept {
  switch (kind) {
    case K::String: return "string";
    case K::Size: return "size";
    case K::Count: return "integer";
    case K::Boolean: return "boolean";
    case K::StringList: return "string[]";
    case K::DeviceId: return "deviceId";
    case K::AllocationId: return "GUID";
    case K::MemoryType: return "MemoryType";
    case K::AllocationType: return "MemoryAllocationType";
    case K::AllocationStatus: return "MemoryAllocationStatus";
    case K::Priority: return "MemoryPriority";
    case K::Base64: return "base64";
    case K::AllocationSize: return "size (>= 1 byte)";
    case K::AllocatableMemoryType: return "MemoryType (not Unknown)";
    case K::Owner: return "owner (1..128 bytes)";
    case K::SessionId: return "GUID (session)";
    case K::JsonInteger: return "integer (JSON)";
    case K::Name: return "string (<= 256 chars)";
    case K::Tag: return "tag (1..128 chars)";
    case K::TransferId: return "GUID (transfer)";
    case K::ExportId: return "GUID (export)";
    case K::OomSnapshotId: return "GUID (snapshot)";
    case K::OwnerList: return "owner[]";
    case K::ObjectList: return "object[]";
    case K::EventKinds: return "event kinds (comma-separated)";
    case K::ModelName: return "model name";
    case K::ModelPath: return "model path";
  }
  return "string";
}

std::span<const Action> action_table() {
  static const std::vector<Action> table = build_table();
  return table;
}

const Action* find_action(std::string_view name) {
  for (const auto& a : action_table())
    if (a.name == name) return &a;
  return nullptr;
}

std::vector<std::string> path_parameters(std::string_view path) {
  std::vector<std::string> names;
  for (std::size_t i = path.find('{'); i != std::string_view::npos; i = path.find('{', i)) {
    const auto end = path.find('}', i);
    if (end == std::string_view::npos) break;
    names.emplace_back(path.substr(i + 1, end - i - 1));
    i = end;
  }
  return names;
}

Result<void> validate_params(const Action& action, const nlohmann::json& params,
                             const CallContext& context) {
  if (!params.is_object()) return fail(ErrorCode::invalid_argument, "params must be a JSON object");
  const Params p(params);
  const bool rest_binary = context.payload.has_value() || context.binary_response;
  for (const auto& spec : action.params) {
    if (spec.stdio_only && rest_binary) continue;
    ParamSpec checked = spec;
    if (!spec.alternative.empty()) checked.required = false;  // the alternatives rule decides
    if (auto ok = validate_param(p, checked); !ok) return ok;
  }
  return validate_alternatives(action, p, rest_binary);
}

Result<Outcome> dispatch(MemoryService& service, const Action& action, const nlohmann::json& params,
                         const CallContext& context) {
  try {
    if (auto ok = validate_params(action, params, context); !ok) return fail(ok.error());
    // A request naming a closed, lapsed or foreign session is refused
    // whatever it asks, so a worker learns at its next call that its lease
    // (and the memory in it) is gone.
    if (auto ok = service.admit(context.caller); !ok) return fail(ok.error());
    return action.handler(service, Params(params), context);
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::out_of_memory, "memd ran out of host memory serving {}", action.name);
  } catch (const std::exception& e) {
    return fail(ErrorCode::internal, "{} failed: {}", action.name, e.what());
  }
}

}  // namespace memd
