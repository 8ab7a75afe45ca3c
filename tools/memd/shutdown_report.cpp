// The shutdown release: log what is held, per owner, then free it.
#include "shutdown_report.hpp"

#include <map>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd::cli {
namespace {

// An owner line names this many allocations, then counts the rest.
constexpr std::size_t kNamedPerOwner = 10;

}  // namespace

void release_at_shutdown(MemoryService& service) {
  std::map<std::string, std::vector<AllocationRecord>> by_owner;
  std::uint64_t count = 0, bytes = 0;
  AllocationQuery query;
  query.limit = 1000;
  for (;;) {
    // The daemon itself asks, as the admin: every owner's allocations.
    auto listed = service.allocations(Caller::host("memd"), query);
    if (!listed) {
      spdlog::error("shutdown: cannot list the allocations: {}", listed.error().message);
      return;
    }
    AllocationPage& page = *listed;
    for (auto& record : page.items) {
      ++count;
      bytes += record.size_bytes;
      by_owner[record.owner].push_back(std::move(record));
    }
    query.offset += page.items.size();
    if (page.items.empty() || query.offset >= page.total) break;
  }
  if (count == 0) {
    spdlog::info("shutdown: no allocations to release");
    return;
  }
  spdlog::info("shutdown: releasing {} allocation(s), {} ({} bytes), of {} owner(s)", count, format_size(bytes),
               bytes, by_owner.size());
  for (const auto& [owner, records] : by_owner) {
    std::uint64_t owned = 0;
    std::string named;
    for (std::size_t i = 0; i < records.size(); ++i) {
      owned += records[i].size_bytes;
      if (i >= kNamedPerOwner) continue;
      if (!named.empty()) named += ", ";
      named += records[i].id.to_string() + " (" + format_size(records[i].size_bytes) +
               (records[i].name.empty() ? "" : ", " + records[i].name) + ")";
    }
    if (records.size() > kNamedPerOwner) named += fmt::format(" and {} more", records.size() - kNamedPerOwner);
    spdlog::info("shutdown: owner '{}': {} allocation(s), {}: {}", owner, records.size(), format_size(owned), named);
    service.release_owner(owner);
  }
}

}  // namespace memd::cli
