// protocol/params.hpp — typed, validating reads of a request's `params`.
//
// Both transports hand the protocol a JSON object: stdio's `params`, REST's
// body merged with path and query parameters (which arrive as strings, so the
// readers accept decimal strings where an integer or an enum's integer is
// expected). Every reader returns nullopt for an absent key and
// invalid_argument naming the key for a wrong type or value; unknown keys are
// ignored so newer clients work with older daemons.
//
// What each reader accepts is exactly what /api/openapi.json states (the
// patterns below are published there verbatim; a schema-driven test holds the
// two together):
// - null is refused: an optional key is left out, not sent as null. The one
//   exception is a key whose spec is `nullable` (limits' `bytes`: null removes
//   the limit); the handler reads it with is_null() first.
// - Sizes are a JSON integer 0..kMaxWireBytes or a string matching
//   kSizeStringPattern: up to 18 digits, or a number with up to 3 decimals and
//   a unit K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (any letter case; all powers
//   of 1024), so "1.5MiB" is accepted; no sign, no spaces.
// - Counts are a JSON integer (or its decimal text) from 0 to the spec's maximum.
//   Integers of JSON bodies (ttlSeconds) are JSON integers only.
// - Booleans are JSON true/false only; "true" and 1 are refused.
// - Enums are their names, exact case ("VRAM", not "vram"), or the seed's
//   integer as a JSON integer or its decimal text.
// - Device ids match kDeviceIdPattern (cuda:N, host:N with N 0..1023, or cpu);
//   allocation ids are GUIDs (kGuidPattern).
// - Names and tags have character (code point) bounds; tags is an array of
//   at most kMaxTags tags, never a bare string. Owners follow the one owner
//   rule (memd/owner_name.hpp): 1..128 BYTES of UTF-8 without control or
//   format characters; OpenAPI states it as owner_pattern() (the Cc/Cf rule,
//   in UTF-16 code units as ECMA-262 matches), maxLength 128 (characters: a
//   necessary bound) and the extension x-memd-maxBytes 128 (the exact one).
// - Session ids are GUIDs, like allocation ids.
//
// Thread safety: a Params only reads the object it was built on, which must
// outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"
#include "memd/owner_name.hpp"
#include "monitor/snapshot_id.hpp"
#include "service/export_id.hpp"
#include "service/session_id.hpp"
#include "transfer/transfer_report.hpp"

namespace memd {

template <typename T>
using Optional = Result<std::optional<T>>;

// The largest size or count on the wire: 18 decimal digits, so a size written
// as an integer and as its decimal text (a query string) bound the same way.
inline constexpr std::uint64_t kMaxWireBytes = 999'999'999'999'999'999;
// Text bounds, in characters (code points, as JSON Schema counts them); the
// allocator checks the same numbers (alloc/memory_manager.cpp). Owners are
// bounded in bytes instead (kMaxOwnerBytes, memd/owner_name.hpp).
inline constexpr std::size_t kMaxNameChars = 256;
inline constexpr std::size_t kMaxTagChars = 128;
inline constexpr std::size_t kMaxTags = 64;
// Characters; at most 4 bytes each in UTF-8, so within ModelRoots::kMaxPathBytes (4096).
inline constexpr std::size_t kMaxModelPathChars = 1024;

// ECMA-262 patterns, as published in OpenAPI and matched by the readers.
// Each unit's digit count keeps every accepted string under kMaxWireBytes.
inline constexpr std::string_view kSizeStringPattern =
    "^([0-9]{1,18}[bB]?|[0-9]{1,14}(\\.[0-9]{1,3})?[kK]([iI]?[bB])?"
    "|[0-9]{1,11}(\\.[0-9]{1,3})?[mM]([iI]?[bB])?|[0-9]{1,8}(\\.[0-9]{1,3})?[gG]([iI]?[bB])?"
    "|[0-9]{1,5}(\\.[0-9]{1,3})?[tT]([iI]?[bB])?)$";
// The same, with a non-zero digit somewhere: at least one byte (three
// decimals of a KiB are at least one byte).
inline constexpr std::string_view kAllocationSizeStringPattern =
    "^(?=.*[1-9])([0-9]{1,18}[bB]?|[0-9]{1,14}(\\.[0-9]{1,3})?[kK]([iI]?[bB])?"
    "|[0-9]{1,11}(\\.[0-9]{1,3})?[mM]([iI]?[bB])?|[0-9]{1,8}(\\.[0-9]{1,3})?[gG]([iI]?[bB])?"
    "|[0-9]{1,5}(\\.[0-9]{1,3})?[tT]([iI]?[bB])?)$";
inline constexpr std::string_view kDeviceIdPattern =
    "^(cpu|(cuda|host):([0-9]{1,3}|0[0-9]{3}|10[01][0-9]|102[0-3]))$";
inline constexpr std::string_view kGuidPattern =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

// The owner rule's characters as an ECMA-262 pattern over UTF-16 code units
// (no `u` flag, as JSON Schema and OpenAPI 3.0 match): one or more of any
// code point but Cc and Cf, built from owner_forbidden_code_points(). The
// byte bound is not in it; see above.
const std::string& owner_pattern();

class Params {
 public:
  // object must be a JSON object (the dispatcher checks that first).
  explicit Params(const nlohmann::json& object) : object_(object) {}

  // Present, even when null.
  bool contains(std::string_view key) const;
  // Present and not null.
  bool has_value(std::string_view key) const;
  // Present and null (meaningful only for nullable keys).
  bool is_null(std::string_view key) const;

  Optional<std::string> string(std::string_view key) const;
  // A string of min_chars..max_chars characters.
  Optional<std::string> text(std::string_view key, std::size_t min_chars, std::size_t max_chars) const;
  // An owner by the owner rule (memd/owner_name.hpp).
  Optional<std::string> owner(std::string_view key) const;
  Optional<std::string> name(std::string_view key) const { return text(key, 0, kMaxNameChars); }
  Optional<std::string> tag(std::string_view key) const { return text(key, 1, kMaxTagChars); }
  // A size (see above); with min_bytes 1, an allocation's size.
  Optional<std::uint64_t> size(std::string_view key, std::uint64_t min_bytes = 0) const;
  // A non-negative integer (paging offsets and counts, seconds), min..max.
  Optional<std::uint64_t> count(std::string_view key, std::uint64_t max, std::uint64_t min = 0) const;
  // A JSON integer min..max; unlike count(), its decimal text is refused
  // (for keys that only a JSON body carries).
  Optional<std::uint64_t> json_integer(std::string_view key, std::uint64_t min, std::uint64_t max) const;
  Optional<bool> boolean(std::string_view key) const;
  // An array of tags.
  Optional<std::vector<std::string>> strings(std::string_view key) const;
  Optional<DeviceId> device(std::string_view key) const;
  Optional<AllocationId> allocation_id(std::string_view key) const;
  Optional<SessionId> session_id(std::string_view key) const;
  Optional<TransferId> transfer_id(std::string_view key) const;
  Optional<BatchId> batch_id(std::string_view key) const;
  Optional<ExportId> export_id(std::string_view key) const;
  Optional<SnapshotId> snapshot_id(std::string_view key) const;
  // An array of 1..max_items owners, each by the owner rule.
  Optional<std::vector<std::string>> owners(std::string_view key, std::size_t max_items) const;
  // An array of 1..max_items JSON objects (each checked by the caller
  // against its own specs; a batch's transfers).
  Optional<std::vector<const nlohmann::json*>> objects(std::string_view key, std::size_t max_items) const;
  // With allocatable, Unknown (0) is refused.
  Optional<MemoryType> memory_type(std::string_view key, bool allocatable = false) const;
  Optional<MemoryAllocationType> allocation_type(std::string_view key) const;
  Optional<MemoryAllocationStatus> allocation_status(std::string_view key) const;
  Optional<MemoryPriority> priority(std::string_view key) const;
  // A comma-separated list of event kind names ("pressure_changed,model_loaded"),
  // read by parse_event_filter (protocol/sse.hpp): the EventFilter bit mask.
  Optional<std::uint32_t> event_kinds(std::string_view key) const;
  // A model name (models/model_name.hpp).
  Optional<std::string> model_name(std::string_view key) const;

 private:
  // A GUID of one kind (AllocationId, SessionId, TransferId, BatchId).
  template <typename Id>
  Optional<Id> guid(std::string_view key) const;
  // nullptr when absent; invalid_argument when null.
  Result<const nlohmann::json*> find(std::string_view key) const;
  const nlohmann::json& object_;
};

// A size from a JSON value (used by Params::size and the limit maps).
Result<std::uint64_t> size_from_json(const nlohmann::json& value, std::string_view key,
                                     std::uint64_t min_bytes = 0);

// Unwraps a required parameter: invalid_argument "missing required parameter
// 'key'" when absent.
template <typename T>
Result<T> required(Optional<T> value, std::string_view key) {
  if (!value) return fail(value.error());
  if (!value->has_value())
    return fail(ErrorCode::invalid_argument, "missing required parameter '{}'", key);
  return std::move(**value);
}

}  // namespace memd
