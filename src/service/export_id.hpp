// service/export_id.hpp — the identity of an export (a grant to map an
// allocation's memory in another process).
//
// A GUID of its own type (memd/typed_guid.hpp), so an export id can never be
// passed where an allocation, session or transfer id is expected. Export ids
// travel to other processes (a worker is told which one to import), so
// parse() accepts only the 8-4-4-4-12 form and never echoes what it was given.
//
// Thread safety: values; generate() is thread-safe.
#pragma once

#include <string_view>

#include "memd/typed_guid.hpp"

namespace memd {

struct ExportTag {
  static constexpr std::string_view kNoun = "export";
};
using ExportId = TypedGuid<ExportTag>;

}  // namespace memd
