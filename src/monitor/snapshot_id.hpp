// monitor/snapshot_id.hpp — the identity of an out-of-memory snapshot
// (monitor/oom_snapshots.hpp).
//
// A GUID of its own type (memd/typed_guid.hpp), so a snapshot id can never be
// passed where an allocation, session, transfer or export id is expected. It
// travels inside out_of_memory errors ("snapshotId") and back in
// memory_history_snapshot; parse() accepts only the 8-4-4-4-12 form and never
// echoes what it was given.
//
// Thread safety: values; generate() is thread-safe.
#pragma once

#include <string_view>

#include "memd/typed_guid.hpp"

namespace memd {

struct SnapshotTag {
  static constexpr std::string_view kNoun = "snapshot";
};
using SnapshotId = TypedGuid<SnapshotTag>;

}  // namespace memd
