// Names of the domain enums. The tables are the single source: to_string,
// parse_* and all_* read them, so a value cannot be named two ways.
#include "memd/memory_types.hpp"

#include <array>
#include <charconv>
#include <utility>

namespace memd {
namespace {

template <typename E, std::size_t N>
struct EnumTable {
  std::array<std::pair<E, std::string_view>, N> entries;
  std::array<E, N> values;
};

template <typename E, std::size_t N>
constexpr EnumTable<E, N> make_table(std::array<std::pair<E, std::string_view>, N> entries) {
  EnumTable<E, N> t{entries, {}};
  for (std::size_t i = 0; i < N; ++i) t.values[i] = entries[i].first;
  return t;
}

constexpr auto kMemoryTypes = make_table<MemoryType, 5>({{
    {MemoryType::Unknown, "Unknown"},
    {MemoryType::RAM, "RAM"},
    {MemoryType::VRAM, "VRAM"},
    {MemoryType::SharedMemory, "SharedMemory"},
    {MemoryType::UnifiedMemory, "UnifiedMemory"},
}});
constexpr auto kAllocationTypes = make_table<MemoryAllocationType, 7>({{
    {MemoryAllocationType::Unknown, "Unknown"},
    {MemoryAllocationType::Model, "Model"},
    {MemoryAllocationType::Tensor, "Tensor"},
    {MemoryAllocationType::Buffer, "Buffer"},
    {MemoryAllocationType::Cache, "Cache"},
    {MemoryAllocationType::Workspace, "Workspace"},
    {MemoryAllocationType::Staging, "Staging"},
}});
constexpr auto kAllocationStatuses = make_table<MemoryAllocationStatus, 7>({{
    {MemoryAllocationStatus::Unknown, "Unknown"},
    {MemoryAllocationStatus::Allocated, "Allocated"},
    {MemoryAllocationStatus::Freed, "Freed"},
    {MemoryAllocationStatus::Moving, "Moving"},
    {MemoryAllocationStatus::Exported, "Exported"},
    {MemoryAllocationStatus::Failed, "Failed"},
    {MemoryAllocationStatus::Freeing, "Freeing"},
}});
constexpr auto kPriorities = make_table<MemoryPriority, 4>({{
    {MemoryPriority::Low, "Low"},
    {MemoryPriority::Normal, "Normal"},
    {MemoryPriority::High, "High"},
    {MemoryPriority::Critical, "Critical"},
}});
constexpr auto kTransferStatuses = make_table<MemoryTransferStatus, 5>({{
    {MemoryTransferStatus::Pending, "Pending"},
    {MemoryTransferStatus::InProgress, "InProgress"},
    {MemoryTransferStatus::Completed, "Completed"},
    {MemoryTransferStatus::Failed, "Failed"},
    {MemoryTransferStatus::Cancelled, "Cancelled"},
}});
constexpr auto kHealthStatuses = make_table<MemoryHealthStatus, 5>({{
    {MemoryHealthStatus::Unknown, "Unknown"},
    {MemoryHealthStatus::Healthy, "Healthy"},
    {MemoryHealthStatus::Warning, "Warning"},
    {MemoryHealthStatus::Critical, "Critical"},
    {MemoryHealthStatus::Failed, "Failed"},
}});

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

template <typename E, std::size_t N>
std::string_view name_of(const EnumTable<E, N>& t, E v) noexcept {
  for (const auto& [value, name] : t.entries)
    if (value == v) return name;
  return "Unknown";
}

template <typename E, std::size_t N>
std::optional<E> from_int(const EnumTable<E, N>& t, std::int64_t v) noexcept {
  for (const auto& [value, name] : t.entries)
    if (static_cast<std::int64_t>(value) == v) return value;
  return std::nullopt;
}

template <typename E, std::size_t N>
std::optional<E> parse(const EnumTable<E, N>& t, std::string_view s) noexcept {
  for (const auto& [value, name] : t.entries)
    if (iequals(name, s)) return value;
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc{} && end == s.data() + s.size() && !s.empty()) return from_int(t, v);
  return std::nullopt;
}

}  // namespace

std::string_view to_string(MemoryType v) noexcept { return name_of(kMemoryTypes, v); }
std::string_view to_string(MemoryAllocationType v) noexcept { return name_of(kAllocationTypes, v); }
std::string_view to_string(MemoryAllocationStatus v) noexcept { return name_of(kAllocationStatuses, v); }
std::string_view to_string(MemoryPriority v) noexcept { return name_of(kPriorities, v); }
std::string_view to_string(MemoryTransferStatus v) noexcept { return name_of(kTransferStatuses, v); }
std::string_view to_string(MemoryHealthStatus v) noexcept { return name_of(kHealthStatuses, v); }

std::optional<MemoryType> parse_memory_type(std::string_view s) noexcept { return parse(kMemoryTypes, s); }
std::optional<MemoryAllocationType> parse_allocation_type(std::string_view s) noexcept { return parse(kAllocationTypes, s); }
std::optional<MemoryAllocationStatus> parse_allocation_status(std::string_view s) noexcept { return parse(kAllocationStatuses, s); }
std::optional<MemoryPriority> parse_priority(std::string_view s) noexcept { return parse(kPriorities, s); }
std::optional<MemoryTransferStatus> parse_transfer_status(std::string_view s) noexcept { return parse(kTransferStatuses, s); }
std::optional<MemoryHealthStatus> parse_health_status(std::string_view s) noexcept { return parse(kHealthStatuses, s); }

std::optional<MemoryType> memory_type_from_int(std::int64_t v) noexcept { return from_int(kMemoryTypes, v); }
std::optional<MemoryAllocationType> allocation_type_from_int(std::int64_t v) noexcept { return from_int(kAllocationTypes, v); }
std::optional<MemoryAllocationStatus> allocation_status_from_int(std::int64_t v) noexcept { return from_int(kAllocationStatuses, v); }
std::optional<MemoryPriority> priority_from_int(std::int64_t v) noexcept { return from_int(kPriorities, v); }

std::span<const MemoryType> all_memory_types() noexcept { return kMemoryTypes.values; }
std::span<const MemoryAllocationType> all_allocation_types() noexcept { return kAllocationTypes.values; }
std::span<const MemoryAllocationStatus> all_allocation_statuses() noexcept { return kAllocationStatuses.values; }
std::span<const MemoryPriority> all_priorities() noexcept { return kPriorities.values; }
std::span<const MemoryTransferStatus> all_transfer_statuses() noexcept { return kTransferStatuses.values; }
std::span<const MemoryHealthStatus> all_health_statuses() noexcept { return kHealthStatuses.values; }

}  // namespace memd
