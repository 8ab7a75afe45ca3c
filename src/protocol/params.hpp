// protocol/params.hpp — typed, validating reads of a request's `params`.
//
// Both transports hand the protocol a JSON object: stdio's `params`, REST's
// body merged with path and query parameters (which arrive as strings, so the
// readers accept decimal strings where a number is expected). Every reader
// returns nullopt for an absent or null key and invalid_argument naming the
// key for a wrong type or value; unknown keys are ignored so newer clients
// work with older daemons.
//
// Sizes are a JSON integer of bytes or a string such as "512MiB"; negative,
// fractional and larger-than-kMaxRequestBytes sizes are refused. Enums are
// their string names or the seed's integers.
//
// Thread safety: a Params only reads the object it was built on, which must
// outlive it.
#pragma once

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

namespace memd {

template <typename T>
using Optional = Result<std::optional<T>>;

class Params {
 public:
  // object must be a JSON object (the dispatcher checks that first).
  explicit Params(const nlohmann::json& object) : object_(object) {}

  // Present, even when null (null has meaning for some keys: "remove").
  bool contains(std::string_view key) const;
  bool has_value(std::string_view key) const;

  Optional<std::string> string(std::string_view key) const;
  Optional<std::uint64_t> size(std::string_view key) const;
  // A non-negative integer (paging offsets and counts), up to max.
  Optional<std::uint64_t> count(std::string_view key, std::uint64_t max) const;
  Optional<bool> boolean(std::string_view key) const;
  Optional<std::vector<std::string>> strings(std::string_view key) const;
  Optional<DeviceId> device(std::string_view key) const;
  Optional<AllocationId> allocation_id(std::string_view key) const;
  Optional<MemoryType> memory_type(std::string_view key) const;
  Optional<MemoryAllocationType> allocation_type(std::string_view key) const;
  Optional<MemoryAllocationStatus> allocation_status(std::string_view key) const;
  Optional<MemoryPriority> priority(std::string_view key) const;

 private:
  const nlohmann::json* find(std::string_view key) const;
  const nlohmann::json& object_;
};

// A size from a JSON value (used by Params::size and the limit maps).
Result<std::uint64_t> size_from_json(const nlohmann::json& value, std::string_view key);

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
