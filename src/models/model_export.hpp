// models/model_export.hpp — what exporting a model's weights needs from the
// model manager (issue 15, item 8): the components' buffers and tensor
// tables, and how the manager learns which buffers other processes map.
//
// A model is exported component by component: each component is one
// exportable allocation (owner memd:models), so a worker imports one
// descriptor per component and finds each tensor at its offset there. The
// export table itself is the service's (service/export_table.hpp); the
// manager only asks it, through an ExportProbe, whether a component's
// buffer has live exports or importers, and then:
//   * eviction never picks a model with such a component (it counts as
//     pinned, and the component as held elsewhere: evicting it would free
//     nothing while an importer maps it, and a reload would double it);
//   * unload answers conflict while a component it would free has live
//     exports (release them first: memory_model_export_release). Importers
//     that mapped it before the release keep their mapping: the allocator
//     defers the free until their connections close (memory stays counted).
//
// Thread safety: values; the probe is called with the manager's mutex held,
// so it must not call back into the model manager.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "models/model_layout.hpp"
#include "models/model_status.hpp"

namespace memd {

// Who uses a component's buffer from outside memd.
struct ExportUse {
  std::size_t exports = 0;    // live exports (new imports still possible)
  std::size_t importers = 0;  // connections holding an import
  bool held() const noexcept { return exports > 0 || importers > 0; }
};
using ExportProbe = std::function<ExportUse(const AllocationId&)>;

struct ExportedComponent {
  std::string name;
  AllocationId allocation;
  std::uint64_t bytes = 0;  // the component buffer's size (a multiple of kTensorAlignment)
  DeviceId device;
  ModelTier tier = ModelTier::VRAM;
  std::vector<TensorPlacement> tensors;  // offsets inside the buffer, in buffer order
};

// A model as an export sees it: Loaded, every component resident in VRAM.
struct ModelExportView {
  std::string name;
  DeviceId device;
  std::vector<ExportedComponent> components;
};

}  // namespace memd
