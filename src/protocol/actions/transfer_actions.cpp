// The transfer domain's actions and their JSON.
#include "protocol/actions/transfer_actions.hpp"

#include <chrono>

#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "protocol/wire_encoding.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;
constexpr std::uint64_t kMaxBatch = 1024;

constexpr ParamSpec kTransferItem[] = {
    {.name = "sourceAllocationId", .kind = K::AllocationId, .required = true, .description = "Copy from this allocation."},
    {.name = "destinationAllocationId", .kind = K::AllocationId, .required = true, .description = "Copy into this allocation."},
    {.name = "sourceOffset", .kind = K::Size, .description = "Where in the source to start (default 0)."},
    {.name = "destinationOffset", .kind = K::Size, .description = "Where in the destination to start (default 0)."},
    {.name = "sizeBytes", .kind = K::AllocationSize, .description = "Bytes to copy (default: the source from sourceOffset to its end)."},
};

Result<TransferSpec> copy_spec(const Params& p) {
  TransferSpec spec;
  MEMD_ASSIGN_OR_RETURN(spec.source, required(p.allocation_id("sourceAllocationId"), "sourceAllocationId"));
  MEMD_ASSIGN_OR_RETURN(auto destination, required(p.allocation_id("destinationAllocationId"), "destinationAllocationId"));
  spec.destination = destination;
  MEMD_ASSIGN_OR_RETURN(auto source_offset, p.size("sourceOffset"));
  MEMD_ASSIGN_OR_RETURN(auto destination_offset, p.size("destinationOffset"));
  spec.source_offset = source_offset.value_or(0);
  spec.destination_offset = destination_offset.value_or(0);
  MEMD_ASSIGN_OR_RETURN(spec.size, p.size("sizeBytes", 1));
  return spec;
}

Result<Outcome> memory_transfer(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto rate, p.size("maxBytesPerSecond"));
  MEMD_ASSIGN_OR_RETURN(auto items, p.objects("transfers", kMaxBatch));
  if (items) {
    std::vector<TransferSpec> specs;
    specs.reserve(items->size());
    for (std::size_t i = 0; i < items->size(); ++i) {
      auto spec = copy_spec(Params(*(*items)[i]));
      if (!spec) return fail(spec.error().code, "transfers[{}]: {}", i, spec.error().message);
      spec->max_bytes_per_second = rate.value_or(0);
      specs.push_back(std::move(*spec));
    }
    MEMD_ASSIGN_OR_RETURN(auto batch, s.transfer_batch(ctx.caller, specs));
    return ok(to_json(batch));
  }
  MEMD_ASSIGN_OR_RETURN(auto spec, copy_spec(p));
  spec.max_bytes_per_second = rate.value_or(0);
  MEMD_ASSIGN_OR_RETURN(auto report, s.transfer(ctx.caller, spec));
  return ok(to_json(report));
}

Result<Outcome> memory_move(MemoryService& s, const Params& p, const CallContext& ctx) {
  TransferSpec spec;
  MEMD_ASSIGN_OR_RETURN(spec.source, required(p.allocation_id("allocationId"), "allocationId"));
  MEMD_ASSIGN_OR_RETURN(auto device, required(p.device("deviceId"), "deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto type, p.memory_type("memoryType", /*allocatable=*/true));
  spec.to_device = device;
  // As for an allocation: a GPU-like device means its VRAM, cpu its RAM.
  spec.to_type = type.value_or(device.is_gpu_like() ? MemoryType::VRAM : MemoryType::RAM);
  MEMD_ASSIGN_OR_RETURN(auto rate, p.size("maxBytesPerSecond"));
  spec.max_bytes_per_second = rate.value_or(0);
  MEMD_ASSIGN_OR_RETURN(auto report, s.transfer(ctx.caller, spec));
  return ok(to_json(report));
}

// One id names a transfer or a batch: both are GUIDs memd handed out. Asks
// as a transfer, then (not found) as a batch; the transfer's not_found wins.
template <typename OnTransfer, typename OnBatch>
Result<Outcome> transfer_or_batch(const Params& p, OnTransfer on_transfer, OnBatch on_batch) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.transfer_id("transferId"), "transferId"));
  auto report = on_transfer(id);
  if (report) return ok(to_json(*report));
  if (report.error().code != ErrorCode::not_found) return fail(report.error());
  auto batch = on_batch(*BatchId::parse(id.to_string()));
  if (batch) return ok(to_json(*batch));
  if (batch.error().code != ErrorCode::not_found) return fail(batch.error());
  return fail(report.error());
}

Result<Outcome> memory_transfer_status(MemoryService& s, const Params& p, const CallContext& ctx) {
  return transfer_or_batch(
      p, [&](const TransferId& id) { return s.transfer_status(ctx.caller, id); },
      [&](const BatchId& id) { return s.batch_status(ctx.caller, id); });
}

Result<Outcome> memory_transfer_cancel(MemoryService& s, const Params& p, const CallContext& ctx) {
  return transfer_or_batch(
      p, [&](const TransferId& id) { return s.cancel_transfer(ctx.caller, id); },
      [&](const BatchId& id) { return s.cancel_batch(ctx.caller, id); });
}

Result<Outcome> memory_copy(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto spec, copy_spec(p));
  MEMD_ASSIGN_OR_RETURN(auto done, s.copy(ctx.caller, spec));
  const double seconds = std::chrono::duration<double>(done.elapsed).count();
  return ok({{"sourceAllocationId", spec.source.to_string()},
             {"destinationAllocationId", spec.destination->to_string()},
             {"sourceOffset", spec.source_offset},
             {"destinationOffset", spec.destination_offset},
             {"bytesCopied", done.bytes},
             {"path", std::string(to_string(done.path))},
             {"durationUs", std::chrono::duration_cast<std::chrono::microseconds>(done.elapsed).count()},
             {"rateBytesPerSecond", seconds > 0 ? static_cast<double>(done.bytes) / seconds : 0.0}});
}

constexpr std::string_view kReportExample =
    R"({"transferId": "c3d4e5f6-a7b8-4c9d-8e0f-123456789abc", "batchId": null, "kind": "copy", "status": "InProgress", "owner": "anonymous", "sourceAllocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "destinationAllocationId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "sourceOffset": 0, "destinationOffset": 0, "sourceDeviceId": "cpu", "destinationDeviceId": "host:0", "sourceMemoryType": "RAM", "destinationMemoryType": "VRAM", "sizeBytes": 268435456, "bytesDone": 67108864, "progress": 0.25, "rateBytesPerSecond": 5.2e9, "path": "host_memcpy", "cancelRequested": false, "maxBytesPerSecond": null, "createdAt": "2026-01-01T00:00:00.000Z", "startedAt": "2026-01-01T00:00:00.001Z", "finishedAt": null, "error": null})";

}  // namespace


void append_transfer_actions(std::vector<Action>& t) {
  constexpr auto Get = HttpMethod::Get;
  constexpr auto Post = HttpMethod::Post;
  constexpr auto Delete = HttpMethod::Delete;
  const ParamSpec rate{.name = "maxBytesPerSecond", .kind = K::Size,
                       .description = "Pace each transfer to at most this many bytes a second (default: as fast as the path goes), so a background copy leaves the link to others."};
  std::vector<ParamSpec> transfer_params;
  for (const auto& item : kTransferItem) {
    ParamSpec spec = item;
    spec.alternative = "one transfer";
    transfer_params.push_back(spec);
  }
  transfer_params.push_back({.name = "transfers", .kind = K::ObjectList, .required = true,
                             .description = "A batch: up to 1024 transfers, each with the keys of one transfer. Refused whole if any member is; each then runs and ends on its own.",
                             .maximum = kMaxBatch, .alternative = "batch", .items = kTransferItem,
                             .item_count = std::size(kTransferItem)});
  transfer_params.push_back(rate);
  t.push_back(Action{
      "memory_transfer",
      "Start an asynchronous copy between two allocations (any devices and memory types; yours, or any as the admin), or a batch of them. Answers at once with the report (status Pending); read progress with memory_transfer_status.",
      {{Post, "/api/memory/transfers", 202}},
      std::move(transfer_params),
      R"({"sourceAllocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "destinationAllocationId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "sizeBytes": 268435456})",
      kReportExample,
      memory_transfer});
  t.push_back(Action{
      "memory_move",
      "Move an allocation to another device or memory type, keeping its allocationId: an asynchronous transfer (kind move). Writes wait while it copies, reads go on from the old place, and the switch is atomic. Pinned and exported allocations never move (conflict).",
      {{Post, "/api/memory/allocations/{allocationId}/move", 202}},
      {{.name = "allocationId", .kind = K::AllocationId, .required = true, .description = "The allocation's GUID."},
       {.name = "deviceId", .kind = K::DeviceId, .required = true, .description = "Where to: cuda:N, host:N or cpu."},
       {.name = "memoryType", .kind = K::AllocatableMemoryType, .description = "VRAM (default on a GPU-like device), RAM (default on cpu), SharedMemory or UnifiedMemory."},
       rate},
      R"({"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "deviceId": "cpu", "memoryType": "RAM"})",
      R"({"transferId": "c3d4e5f6-a7b8-4c9d-8e0f-123456789abc", "batchId": null, "kind": "move", "status": "Pending", "owner": "anonymous", "sourceAllocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "destinationAllocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "sourceOffset": 0, "destinationOffset": 0, "sourceDeviceId": "host:0", "destinationDeviceId": "cpu", "sourceMemoryType": "VRAM", "destinationMemoryType": "RAM", "sizeBytes": 1048576, "bytesDone": 0, "progress": 0.0, "rateBytesPerSecond": 0.0, "path": null, "cancelRequested": false, "maxBytesPerSecond": null, "createdAt": "2026-01-01T00:00:00.000Z", "startedAt": null, "finishedAt": null, "error": null})",
      memory_move});
  t.push_back(Action{
      "memory_transfer_status",
      "A transfer's report (status, bytesDone of sizeBytes, rate, times, path, error), or a batch's (aggregate progress, every member's report, the failed ones). Its submitter's, or any as the admin.",
      {{Get, "/api/memory/transfers/{transferId}"}},
      {{.name = "transferId", .kind = K::TransferId, .required = true, .description = "A transferId, or a batchId."}},
      R"({"transferId": "c3d4e5f6-a7b8-4c9d-8e0f-123456789abc"})",
      kReportExample,
      memory_transfer_status});
  t.push_back(Action{
      "memory_transfer_cancel",
      "Cancel a transfer (or every unfinished member of a batch): a pending one ends Cancelled at once, a running one at its next chunk (cancelRequested until then); the bytes copied stay. A finished transfer: conflict.",
      {{Delete, "/api/memory/transfers/{transferId}"}},
      {{.name = "transferId", .kind = K::TransferId, .required = true, .description = "A transferId, or a batchId."}},
      R"({"transferId": "c3d4e5f6-a7b8-4c9d-8e0f-123456789abc"})",
      kReportExample,
      memory_transfer_cancel});
  t.push_back(Action{
      "memory_copy",
      "Copy bytes between or within allocations, synchronously (bounds-checked; overlapping ranges of one allocation copy as memmove does).",
      {{Post, "/api/memory/copy"}},
      std::vector<ParamSpec>(std::begin(kTransferItem), std::end(kTransferItem)),
      R"({"sourceAllocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "destinationAllocationId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "sourceOffset": 0, "destinationOffset": 4096, "sizeBytes": 4096})",
      R"({"sourceAllocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "destinationAllocationId": "b2c3d4e5-f6a7-4b89-8cde-f01234567890", "sourceOffset": 0, "destinationOffset": 4096, "bytesCopied": 4096, "path": "host_memcpy", "durationUs": 12, "rateBytesPerSecond": 341333333.3})",
      memory_copy});
}

}  // namespace memd
