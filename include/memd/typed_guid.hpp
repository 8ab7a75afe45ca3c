// memd/typed_guid.hpp — a GUID that names one kind of thing.
//
// Transfers, batches (and, later, other handles) are GUIDs like allocation
// ids, but each kind is a type of its own, so one can never be passed for
// another. parse() accepts only the 8-4-4-4-12 form and never echoes what it
// was given (the text may be anything a client sent). Tag supplies the noun
// for messages: `static constexpr std::string_view kNoun = "transfer";`.
//
// Thread safety: values; generate() is thread-safe.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "memd/allocation_id.hpp"
#include "memd/error.hpp"

namespace memd {

template <typename Tag>
class TypedGuid {
 public:
  TypedGuid() = default;  // nil, never handed out

  static TypedGuid generate() { return TypedGuid(AllocationId::generate()); }
  static Result<TypedGuid> parse(std::string_view text) {
    auto guid = AllocationId::parse(text);
    if (!guid)
      return fail(ErrorCode::invalid_argument, "invalid {} id: expected a GUID (8-4-4-4-12 hex digits)", Tag::kNoun);
    return TypedGuid(*guid);
  }

  std::string to_string() const { return guid_.to_string(); }
  const AllocationId& guid() const noexcept { return guid_; }

  friend bool operator==(const TypedGuid&, const TypedGuid&) = default;
  friend auto operator<=>(const TypedGuid&, const TypedGuid&) = default;

 private:
  explicit TypedGuid(AllocationId guid) : guid_(guid) {}
  AllocationId guid_;
};

}  // namespace memd

template <typename Tag>
struct std::hash<memd::TypedGuid<Tag>> {
  std::size_t operator()(const memd::TypedGuid<Tag>& id) const noexcept {
    return std::hash<memd::AllocationId>{}(id.guid());
  }
};
