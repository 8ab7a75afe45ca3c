// MemoryService's model exports (memory_model_export, _export_release):
// the model manager says what a model's buffers are and keeps them from
// eviction while exported (models/model_export.hpp); the service's export
// table records the grants, exactly as memory_export does for allocations.
#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "service/memory_service.hpp"

namespace memd {

Result<ModelExportReport> MemoryService::export_model(const Caller& caller, std::string_view name,
                                                      std::vector<std::string> for_owners) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  ModelExportReport report;
  // Under the model manager's lock: the grants land before any eviction or
  // unload can look at the buffers, and from then on the probe sees them.
  auto view = models_->export_model(name, [&](const ModelExportView& v) -> Result<void> {
    for (const auto& c : v.components) {
      auto made = exports_->add(c.allocation, std::string(kModelOwner), for_owners);
      if (!made) {
        // All or none: a worker handed half a model has nothing to run.
        for (const auto& e : report.exports) {
          (void)exports_->release(e.id);
          if (exports_->exports_of(e.allocation).empty()) (void)manager_->set_exported(e.allocation, false);
        }
        report.exports.clear();
        return fail(made.error());
      }
      (void)manager_->set_exported(c.allocation, true);
      report.exports.push_back(std::move(*made));
    }
    return {};
  });
  if (!view) return fail(view.error());
  report.view = std::move(*view);
  for (const auto& c : report.view.components) {
    auto info = catalog_->info(c.device);
    report.gpu_uuids.push_back(info ? info->uuid : std::string());
  }
  spdlog::info("model '{}' ({} component{}) exported by '{}' for {}", report.view.name,
               report.view.components.size(), report.view.components.size() == 1 ? "" : "s", caller.owner,
               fmt::join(report.exports.empty() ? std::vector<std::string>{} : report.exports.front().for_owners,
                         ", "));
  return report;
}

Result<std::vector<ExportRecord>> MemoryService::release_model_exports(const Caller& caller, std::string_view name,
                                                                       const std::optional<ExportId>& export_id) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto buffers = models_->component_allocations(name);
  if (!buffers) return fail(buffers.error());
  std::vector<ExportRecord> released;
  if (export_id) {
    auto found = exports_->find(*export_id);
    if (!found) return fail(found.error());
    if (std::find(buffers->begin(), buffers->end(), found->allocation) == buffers->end())
      return fail(ErrorCode::not_found, "export {} is not an export of model '{}'", export_id->to_string(), name);
    auto one = exports_->release(*export_id);
    if (!one) return fail(one.error());
    released.push_back(std::move(*one));
  } else {
    for (const auto& id : *buffers)
      for (const auto& e : exports_->exports_of(id))
        if (auto one = exports_->release(e.id)) released.push_back(std::move(*one));
  }
  for (const auto& id : *buffers)
    if (exports_->exports_of(id).empty()) (void)manager_->set_exported(id, false);
  spdlog::info("model '{}': {} export{} released by '{}'", name, released.size(), released.size() == 1 ? "" : "s",
               caller.owner);
  return released;
}

}  // namespace memd
