// The allocation history's actions and their JSON.
#include "protocol/actions/history_actions.hpp"

#include <algorithm>
#include <map>

#include "alloc/device_pool.hpp"
#include "core/defrag_plan.hpp"
#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "protocol/wire_encoding.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

nlohmann::json nullable(const std::string& text, bool hidden) {
  return hidden ? nlohmann::json(nullptr) : nlohmann::json(text);
}

nlohmann::json to_json(const HistoryPlace& p) {
  return {{"deviceId", p.device.to_string()}, {"memoryType", std::string(to_string(p.memory_type))}};
}

nlohmann::json to_json(const SnapshotAllocation& a) {
  return {{"allocationId", a.id ? nlohmann::json(a.id->to_string()) : nlohmann::json(nullptr)},
          {"owner", nullable(a.owner, a.hidden)},
          {"name", nullable(a.name, a.hidden)},
          {"memoryType", std::string(to_string(a.memory_type))},
          {"priority", std::string(to_string(a.priority))},
          {"sizeBytes", a.size_bytes},
          {"address", a.address},
          {"pinned", a.pinned},
          {"exportable", a.exportable},
          {"hidden", a.hidden}};
}

// The block map's segments, as a snapshot and memory_blocks answer them.
nlohmann::json segments_json(const std::vector<SnapshotSegment>& in) {
  nlohmann::json segments = nlohmann::json::array();
  for (const auto& seg : in) {
    nlohmann::json blocks = nlohmann::json::array();
    for (const auto& b : seg.blocks) {
      nlohmann::json block = {{"address", b.address}, {"sizeBytes", b.size}, {"state", b.state}};
      block["allocation"] = b.allocation ? to_json(*b.allocation) : nlohmann::json(nullptr);
      if (b.state == "slab") block["slabAllocations"] = b.slab_allocations;
      blocks.push_back(std::move(block));
    }
    segments.push_back({{"memoryType", std::string(to_string(seg.memory_type))},
                        {"address", seg.address},
                        {"sizeBytes", seg.size},
                        {"mappedBytes", seg.mapped_bytes},
                        {"kind", seg.kind},
                        {"liveBytes", seg.live_bytes},
                        {"freeBytes", seg.free_bytes},
                        {"largestFreeBytes", seg.largest_free},
                        {"blockCount", seg.block_count},
                        {"blocks", std::move(blocks)}});
  }
  return segments;
}

nlohmann::json pools_json(const std::map<MemoryType, PoolStats>& in) {
  nlohmann::json pools = nlohmann::json::object();
  for (const auto& [type, stats] : in) pools[std::string(to_string(type))] = to_json(stats);
  return pools;
}

Result<Outcome> memory_history(MemoryService& s, const Params& p, const CallContext& ctx) {
  HistoryQuery q;
  MEMD_ASSIGN_OR_RETURN(q.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(q.owner, p.owner("owner"));
  MEMD_ASSIGN_OR_RETURN(auto limit, p.count("limit", kMaxHistoryLimit, 1));
  q.limit = limit.value_or(kDefaultHistoryLimit);
  MEMD_ASSIGN_OR_RETURN(auto entries, s.history(ctx.caller, q));
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : entries) out.push_back(to_json(e));
  return ok({{"entries", std::move(out)}, {"ringCapacity", s.history().history().capacity()}});
}

Result<Outcome> memory_history_snapshot(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.snapshot_id("snapshotId"), "snapshotId"));
  MEMD_ASSIGN_OR_RETURN(auto snapshot, s.history_snapshot(ctx.caller, id));
  return ok(to_json(snapshot));
}

// Where a virtual arena's address range is backed: its mapping units
// (DevicePool::defrag_space(), the view the defragmenter plans with), joined
// into runs and clipped to each arena segment, so a reader tells cached
// memory from address space never mapped inside a free block. Segment
// arenas and huge ranges are backed whole and get none. At most
// kMaxMappedRuns runs per segment; mappedRangesOmitted counts the rest.
constexpr std::size_t kMaxMappedRuns = 4096;

void add_mapped_ranges(MemoryService& s, DeviceId device, const DeviceBlockMap& map, nlohmann::json& segments) {
  std::map<MemoryType, std::vector<DefragRange>> runs;
  for (const auto& [type, unused] : map.pools) {
    auto pool = s.manager().pool(device, type);  // exists: the walk listed it
    if (!pool) continue;
    const DefragSpace space = (*pool)->defrag_space();
    if (space.page == 0) continue;
    auto& out = runs[type];
    for (const DefragRange& u : space.units) {
      if (!out.empty() && out.back().offset + out.back().size == u.offset) out.back().size += u.size;
      else out.push_back(u);
    }
  }
  for (std::size_t i = 0; i < map.segments.size() && i < segments.size(); ++i) {
    const SnapshotSegment& seg = map.segments[i];
    const auto it = runs.find(seg.memory_type);
    if (seg.kind != "arena" || it == runs.end()) continue;
    nlohmann::json ranges = nlohmann::json::array();
    std::uint64_t omitted = 0;
    for (const DefragRange& r : it->second) {
      const std::uint64_t from = std::max(r.offset, seg.address);
      const std::uint64_t to = std::min(r.offset + r.size, seg.address + seg.size);
      if (from >= to) continue;
      if (ranges.size() < kMaxMappedRuns) ranges.push_back({from, to - from});
      else ++omitted;
    }
    segments[i]["mappedRanges"] = std::move(ranges);
    segments[i]["mappedRangesOmitted"] = omitted;
  }
}

Result<Outcome> memory_blocks(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto device, required(p.device("deviceId"), "deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto max_blocks, p.count("maxBlocks", kMaxBlocksLimit));
  const std::uint64_t cap = max_blocks.value_or(kDefaultBlocksLimit);
  MEMD_ASSIGN_OR_RETURN(auto map, s.block_map(ctx.caller, device, static_cast<std::size_t>(cap)));
  // Over every block, those left out included (each segment counts all of
  // its own). A virtual arena's segment is its whole address range, mapped
  // or not, and its free blocks span both: segmentBytes and freeBlockBytes
  // are address space. freeBytes, largestFreeBytes and fragmentation are the
  // pools' own figures over mapped memory (1 - largest free block / free
  // bytes), the numbers memory_status reports.
  std::uint64_t address_space = 0, mapped = 0, live = 0, free_blocks = 0, blocks = 0, returned = 0;
  for (const auto& seg : map.segments) {
    address_space += seg.size;
    mapped += seg.mapped_bytes;
    live += seg.live_bytes;
    free_blocks += seg.free_bytes;
    blocks += seg.block_count;
    returned += seg.blocks.size();
  }
  std::uint64_t free = 0, largest = 0;
  for (const auto& [type, stats] : map.pools) {
    free += stats.free_bytes;
    largest = std::max(largest, stats.largest_free_block);
  }
  const double fragmentation = free == 0 ? 0.0 : 1.0 - static_cast<double>(largest) / static_cast<double>(free);
  std::uint64_t total = 0;
  if (auto info = s.catalog().info(device)) total = info->total_bytes;
  nlohmann::json segments = segments_json(map.segments);
  add_mapped_ranges(s, device, map, segments);
  return ok({{"deviceId", device.to_string()},
             {"deviceTotalBytes", total},
             {"segmentBytes", address_space},
             {"mappedBytes", mapped},
             {"liveBytes", live},
             {"freeBlockBytes", free_blocks},
             {"freeBytes", free},
             {"largestFreeBytes", largest},
             {"fragmentation", fragmentation},
             {"blockCount", blocks},
             {"blocksReturned", returned},
             {"blocksOmitted", map.blocks_omitted},
             {"maxBlocks", cap},
             {"segments", std::move(segments)},
             {"pools", pools_json(map.pools)}});
}

constexpr std::string_view kEntryExample =
    R"({"sequence": 7, "kind": "allocate", "time": "2026-01-01T00:00:00.000Z", "deviceId": "host:0", "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "alice", "name": "kv-cache", "memoryType": "VRAM", "priority": "Normal", "sizeBytes": 16777216, "blockBytes": 16777216, "reservedBytes": 33554432, "allocatedBytes": 33554432, "liveAllocations": 2, "hidden": false})";

}  // namespace

nlohmann::json to_json(const HistoryEntry& e) {
  nlohmann::json j = {{"sequence", e.sequence},
                      {"kind", std::string(to_string(e.kind))},
                      {"time", iso8601(e.time)},
                      {"deviceId", e.device.to_string()},
                      {"allocationId", e.allocation ? nlohmann::json(e.allocation->to_string()) : nlohmann::json(nullptr)},
                      {"owner", nullable(e.owner, e.hidden)},
                      {"name", nullable(e.name, e.hidden)},
                      {"memoryType", std::string(to_string(e.memory_type))},
                      {"priority", std::string(to_string(e.priority))},
                      {"sizeBytes", e.size_bytes},
                      {"blockBytes", e.block_bytes ? nlohmann::json(*e.block_bytes) : nlohmann::json(nullptr)},
                      {"reservedBytes", e.reserved_bytes},
                      {"allocatedBytes", e.allocated_bytes},
                      {"liveAllocations", e.live_allocations},
                      {"hidden", e.hidden}};
  if (e.from) j["from"] = to_json(*e.from);
  if (e.to) j["to"] = to_json(*e.to);
  if (e.kind == HistoryKind::free) j["deferred"] = e.deferred;
  if (e.error) j["code"] = std::string(to_string(*e.error));
  if (e.snapshot) j["snapshotId"] = e.snapshot->to_string();
  return j;
}

nlohmann::json to_json(const OomSnapshot& s) {
  nlohmann::json history = nlohmann::json::array();
  for (const auto& e : s.history) history.push_back(to_json(e));
  nlohmann::json holders = nlohmann::json::array();
  for (const auto& h : s.holders)
    holders.push_back(
        {{"owner", nullable(h.owner, h.hidden)}, {"bytes", h.bytes}, {"allocations", h.allocations}, {"hidden", h.hidden}});
  nlohmann::json allocations = nlohmann::json::array();
  for (const auto& a : s.allocations) allocations.push_back(to_json(a));
  nlohmann::json segments = segments_json(s.segments);
  nlohmann::json pools = pools_json(s.pools);
  const auto& r = s.request;
  return {{"snapshotId", s.id.to_string()},
          {"time", iso8601(s.time)},
          {"request",
           {{"owner", r.owner},
            {"name", r.name},
            {"deviceId", r.device.to_string()},
            {"memoryType", std::string(to_string(r.memory_type))},
            {"priority", std::string(to_string(r.priority))},
            {"sizeBytes", r.size_bytes},
            {"code", std::string(to_string(r.error.code))},
            {"message", r.error.message},
            {"refusedBy", r.refused_by}}},
          {"deviceTotalBytes", s.device_total_bytes},
          {"largestFreeBlockBytes", s.largest_free_block()},
          {"holders", std::move(holders)},
          {"allocations", std::move(allocations)},
          {"allocationsOmitted", s.allocations_omitted},
          {"history", std::move(history)},
          {"historyDroppedEntries", s.history_dropped},
          {"segments", std::move(segments)},
          {"blocksOmitted", s.blocks_omitted},
          {"pools", std::move(pools)}};
}

void append_history_actions(std::vector<Action>& t) {
  constexpr auto Get = HttpMethod::Get;
  static const std::string history_example = std::string(R"({"entries": [)") + std::string(kEntryExample) +
                                             R"(], "ringCapacity": 4096})";
  t.push_back(Action{
      "memory_history",
      "Recent allocator events, oldest first: allocate, free (deferred: true while a transfer or an importer still "
      "holds the memory), move (from/to), evict (the model manager) and failed (code; an out_of_memory names its "
      "snapshotId). Each entry carries the device's pool state just after it: reservedBytes, allocatedBytes "
      "(block-rounded), liveAllocations — the pools' running counters, so a small block freed into a thread's "
      "cache shows there once the cache gives it back. sizeBytes is as requested, blockBytes the block that holds it (null when "
      "not from a pool). Each device keeps its newest entries in a ring of ringCapacity (memd serve "
      "--history-ring); without deviceId the rings are merged by sequence. Only your own owner's entries, unless "
      "you are the admin, who may also name an owner.",
      {{Get, "/api/memory/history"}},
      {{"deviceId", K::DeviceId, false, "Only this device (cuda:N, host:N or cpu)."},
       {"owner", K::Owner, false, "Only this owner's entries (another owner's: the admin only)."},
       {"limit", K::Count, false, "The newest this many entries (1..4096, default 100).", false, kMaxHistoryLimit, 1}},
      R"({"deviceId": "host:0", "limit": 20})",
      history_example,
      memory_history});
  t.push_back(Action{
      "memory_history_snapshot",
      "What a device looked like when a request failed with out_of_memory (the error's snapshotId; memd history "
      "ID): the request and who refused it (refusedBy: pool — the reclaim ladder gave up — or pressure — a "
      "Low-priority request at Critical), the device's history ring then (the failed entry last), its live "
      "allocations largest first and the bytes each owner held (holders), the block map of its pools (segments "
      "with liveBytes, freeBytes, largestFreeBytes and their first blocks; each allocated block names the "
      "allocation that starts there, a slab span counts those inside it) and pool statistics. Caps: 4096 blocks "
      "and 4096 allocations (allocationsOmitted, blocksOmitted say how many were left out); memd keeps the newest "
      "16 snapshots (64 MiB at most), older ids answer not_found. Only the failing request's owner or the admin "
      "may read it; the owner sees other owners' allocations, blocks and entries by size only (hidden: true, "
      "owner, name and allocationId null, their holders folded into one hidden row).",
      {{Get, "/api/memory/history/{snapshotId}"}},
      {{"snapshotId", K::OomSnapshotId, true, "The snapshotId of an out_of_memory error."}},
      R"({"snapshotId": "c0ffee00-1234-4abc-8def-0123456789ab"})",
      R"({"snapshotId": "c0ffee00-1234-4abc-8def-0123456789ab", "time": "2026-01-01T00:00:00.000Z", "request": {"owner": "alice", "name": "activations", "deviceId": "host:0", "memoryType": "VRAM", "priority": "Normal", "sizeBytes": 67108864, "code": "out_of_memory", "message": "…", "refusedBy": "pool"}, "deviceTotalBytes": 67108864, "largestFreeBlockBytes": 2097152, "holders": [{"owner": "alice", "bytes": 33554432, "allocations": 2, "hidden": false}], "allocations": [], "allocationsOmitted": 0, "history": [], "historyDroppedEntries": 0, "segments": [{"memoryType": "VRAM", "address": 140000000000000, "sizeBytes": 67108864, "mappedBytes": 35651584, "kind": "arena", "liveBytes": 33554432, "freeBytes": 2097152, "largestFreeBytes": 2097152, "blockCount": 3, "blocks": []}], "blocksOmitted": 0, "pools": {}})",
      memory_history_snapshot});
  t.push_back(Action{
      "memory_blocks",
      "The live block map of one device, as the dashboard draws it: every segment of its pools (kind arena, huge "
      "or segment; sizeBytes its address range, mappedBytes of it backed, liveBytes, freeBytes, largestFreeBytes, "
      "blockCount) and their blocks in address order, each with its state — allocated, free (memd's, handed to "
      "no one: cached memory where mapped, address space where an arena has not mapped it), pending (freed, "
      "waiting for its stream) or slab (a span of small allocations, slabAllocations of them) — and, for an allocated block, the allocation that starts there. Built by the "
      "same walker as an out-of-memory snapshot's map (memory_history_snapshot). Over every block: segmentBytes "
      "and freeBlockBytes (address space: a virtual arena's segment spans its whole range, mapped or not), "
      "mappedBytes, liveBytes; and the pools' figures over mapped memory, as memory_status has them: freeBytes, "
      "largestFreeBytes and fragmentation (1 - largest free block / free bytes). At most maxBlocks blocks are "
      "listed (the first in segment order) and blocksOmitted counts the rest. A virtual arena's segment also has "
      "mappedRanges, [address, bytes] runs of it backed by memory (its mapping units; at most 4096, "
      "mappedRangesOmitted counts the rest): a free block outside them is address space, not cached memory. "
      "Exportable allocations (model weights) have memory of their own and appear in no pool. Anyone may look; "
      "another owner's blocks are shown by address, size and state only (hidden: true, owner, name and "
      "allocationId null) unless you are the admin. Reading it drains thread caches and walks every block.",
      {{Get, "/api/memory/blocks/{deviceId}", 200, RouteBody::Json, true}},
      {{"deviceId", K::DeviceId, true, "The device (cuda:N, host:N or cpu)."},
       {"maxBlocks", K::Count, false, "List at most this many blocks (0..100000, default 10000).", false,
        kMaxBlocksLimit}},
      R"({"deviceId": "host:0", "maxBlocks": 1000})",
      R"({"deviceId": "host:0", "deviceTotalBytes": 67108864, "segmentBytes": 33554432, "mappedBytes": 4194304, "liveBytes": 1048576, "freeBlockBytes": 32505856, "freeBytes": 3145728, "largestFreeBytes": 2097152, "fragmentation": 0.33, "blockCount": 3, "blocksReturned": 3, "blocksOmitted": 0, "maxBlocks": 1000, "segments": [{"memoryType": "VRAM", "address": 140000000000000, "sizeBytes": 33554432, "mappedBytes": 4194304, "kind": "arena", "liveBytes": 1048576, "freeBytes": 3145728, "largestFreeBytes": 2097152, "blockCount": 3, "mappedRanges": [[140000000000000, 4194304]], "mappedRangesOmitted": 0, "blocks": [{"address": 140000000000000, "sizeBytes": 1048576, "state": "allocated", "allocation": {"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "alice", "name": "kv-cache", "memoryType": "VRAM", "priority": "Normal", "sizeBytes": 1048576, "address": 140000000000000, "pinned": false, "exportable": false, "hidden": false}}, {"address": 140000001048576, "sizeBytes": 1048576, "state": "free", "allocation": null}, {"address": 140000002097152, "sizeBytes": 2097152, "state": "free", "allocation": null}]}], "pools": {}})",
      memory_blocks});
}

}  // namespace memd
