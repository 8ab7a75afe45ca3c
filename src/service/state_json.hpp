// service/state_json.hpp — the state directory's JSON documents: one envelope
// for every file, and readers that say where a value is wrong.
//
// Every state file is one JSON object:
//   {"format": "memd-state", "kind": "limits", "version": 1,
//    "savedAt": "2026-12-06T21:04:02.123Z", ...the kind's own keys...}
// parse_state_document() checks the envelope (a JSON object of at most the
// given size, the format, the kind asked for, a version this memd reads) and
// hands back the object. Every refusal is invalid_argument with a message
// that says where: "line 3, column 14: ..." for text that is not JSON, or a
// path to the value ("models[2].files[0].size: ...") for one of the wrong
// shape. A reader that meets a key it does not know refuses the document:
// a typo must not silently drop a setting.
//
// The readers below (StateReader) take a value and its path and return the
// typed value or that error; times are the wire's ISO 8601 form (UTC, "Z",
// optional fraction of a second), years 2000..2999.
//
// Thread safety: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"

namespace memd {

inline constexpr std::string_view kStateFormat = "memd-state";
// No state file is larger: a larger one is refused before it is parsed.
inline constexpr std::uint64_t kMaxStateFileBytes = 32ull << 20;

// The envelope's keys, for a kind's reader to allow beside its own.
inline constexpr std::string_view kEnvelopeKeys[] = {"format", "kind", "version", "savedAt"};

// The envelope of a new document of `kind` at `version`, saved at `now`.
nlohmann::ordered_json state_envelope(std::string_view kind, std::uint64_t version,
                                      std::chrono::system_clock::time_point now);

// Checks the text and the envelope; `version` is the one version this memd
// reads and writes. The whole object is returned (envelope keys included).
Result<nlohmann::json> parse_state_document(std::string_view text, std::string_view kind, std::uint64_t version);

// "2026-12-06T21:04:02.123Z" back to a time; nullopt unless exactly that
// shape (the fraction may have 0..9 digits), a real date, years 2000..2999.
std::optional<std::chrono::system_clock::time_point> parse_iso8601(std::string_view text);

// Reads one value at a path. Each method returns the value or an
// invalid_argument error "<path>: <what was expected>".
class StateReader {
 public:
  // `path` names the value in messages; "" is the document itself.
  StateReader(const nlohmann::json& value, std::string path) : value_(value), path_(std::move(path)) {}

  const nlohmann::json& json() const noexcept { return value_; }
  const std::string& path() const noexcept { return path_; }
  // The error for this value: "<path>: <message>".
  Error error(std::string_view message) const;

  Result<void> object(std::initializer_list<std::string_view> allowed, bool with_envelope = false) const;
  Result<void> array(std::size_t max_items) const;
  // A member of an object; absent: not_found-shaped invalid_argument unless
  // optional (then nullopt).
  Result<StateReader> member(std::string_view key) const;
  std::optional<StateReader> optional_member(std::string_view key) const;
  StateReader item(std::size_t index) const;
  // An object's members, for maps keyed by name.
  Result<void> each_member(std::size_t max_members,
                           const std::function<Result<void>(const std::string&, const StateReader&)>& visit) const;

  Result<std::uint64_t> u64(std::uint64_t max) const;
  Result<std::int64_t> i64() const;
  Result<double> number(double min, double max) const;  // finite, within [min, max]
  Result<bool> boolean() const;
  Result<std::string> string(std::size_t max_bytes, bool allow_empty = false) const;
  Result<std::chrono::system_clock::time_point> time() const;

 private:
  const nlohmann::json& value_;
  std::string path_;
};

// The text written: two-space indented, ending in a newline (a person reads
// these files); strings that are not UTF-8 are refused by the writer's
// caller before it gets here.
std::string render_state_document(const nlohmann::ordered_json& document);

}  // namespace memd
