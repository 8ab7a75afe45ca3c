// service/export_id.hpp — the identity of an export (a grant to map an
// allocation's memory in another process).
//
// A random (version 4) GUID, like an allocation id but a type of its own, so
// an export id can never be passed where an allocation or session id is
// expected. Export ids travel to other processes (a worker is told which one
// to import), so parse() accepts only the 8-4-4-4-12 form and never echoes
// what it was given.
//
// Thread safety: values; generate() is thread-safe.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "memd/allocation_id.hpp"
#include "memd/error.hpp"

namespace memd {

class ExportId {
 public:
  ExportId() = default;  // nil, never handed out

  static ExportId generate() { return ExportId(AllocationId::generate()); }
  static Result<ExportId> parse(std::string_view text) {
    auto guid = AllocationId::parse(text);
    if (!guid)
      return fail(ErrorCode::invalid_argument,
                  "invalid export id: expected the GUID memory_export answered (8-4-4-4-12 hex digits)");
    return ExportId(*guid);
  }

  std::string to_string() const { return guid_.to_string(); }
  const AllocationId& guid() const noexcept { return guid_; }

  friend bool operator==(const ExportId&, const ExportId&) = default;
  friend auto operator<=>(const ExportId&, const ExportId&) = default;

 private:
  explicit ExportId(AllocationId guid) : guid_(guid) {}
  AllocationId guid_;
};

}  // namespace memd

template <>
struct std::hash<memd::ExportId> {
  std::size_t operator()(const memd::ExportId& id) const noexcept {
    return std::hash<memd::AllocationId>{}(id.guid());
  }
};
