// models/strict_json.cpp — see strict_json.hpp.
#include "models/strict_json.hpp"

#include <cstddef>
#include <span>
#include <utility>
#include <vector>

namespace memd {
namespace {

using json = nlohmann::json;

// Control and non-ASCII bytes as \xNN (so a message is printable and valid
// UTF-8 whatever it quotes, even cut mid-character), cut at max_chars.
std::string sanitize(std::string_view text, std::size_t max_chars, bool escape_quotes) {
  std::string out;
  std::size_t shown = 0;
  for (const char c : text) {
    if (shown == max_chars) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || (escape_quotes && (c == '\'' || c == '\\')))
      out += fmt::format("\\x{:02x}", u);
    else
      out += c;
    ++shown;
  }
  return out;
}

// Builds the document as nlohmann's own DOM parser does, with the two checks
// that parser lacks. Returning false from any event stops the parse.
class StrictBuilder {
 public:
  explicit StrictBuilder(int max_depth) : max_depth_(max_depth) {}

  bool null() { return add(json(nullptr)); }
  bool boolean(bool v) { return add(json(v)); }
  bool number_integer(json::number_integer_t v) { return add(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return add(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return add(json(v)); }
  bool string(json::string_t& v) { return add(json(std::move(v))); }
  bool binary(json::binary_t&) { return stop("binary values are not JSON"); }

  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    json& object = *stack_.back();
    if (object.contains(k)) return stop(fmt::format("key {} appears twice in one object", quote_for_message(k)));
    key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const json::exception& ex) {
    // what() reads "[json.exception.parse_error.101] parse error at line 1,
    // column 7: syntax error while parsing …"; the bracketed id and the
    // line and column (a header is one line; the byte says more) are cut.
    std::string_view what = ex.what();
    if (const auto at = what.find("parse error at "); at != std::string_view::npos) {
      what.remove_prefix(at);
      if (const auto colon = what.find(": "); colon != std::string_view::npos) what.remove_prefix(colon + 2);
    }
    return stop(fmt::format("not valid JSON at byte {}: {}", position, sanitize(what, 200, false)));
  }

  const std::string& error() const { return error_; }
  json take() { return std::move(root_); }

 private:
  // Places a value where the parse is: the root, the next array element or
  // the value of the key just read. Returns where it went.
  json* place(json value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(value));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(value);
    return &slot;
  }
  bool add(json value) {
    place(std::move(value));
    return true;
  }
  bool open(json container) {
    if (static_cast<int>(stack_.size()) >= max_depth_)
      return stop(fmt::format("nesting deeper than {} levels", max_depth_));
    stack_.push_back(place(std::move(container)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }
  bool stop(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  int max_depth_;
  json root_;
  std::vector<json*> stack_;  // open containers; pointers stay valid as only the last one grows
  std::string key_;
  std::string error_;
};

}  // namespace

Result<nlohmann::json> parse_strict_json(std::string_view text, int max_depth) {
  StrictBuilder builder(max_depth);
  const bool ok = json::sax_parse(text, &builder, json::input_format_t::json, /*strict=*/true);
  if (!ok) {
    if (builder.error().empty()) return fail(ErrorCode::invalid_argument, "not valid JSON");
    return fail(ErrorCode::invalid_argument, "{}", builder.error());
  }
  return builder.take();
}

Result<nlohmann::json> read_strict_json(const ModelFile& file, std::uint64_t max_bytes, int max_depth) {
  if (file.size() > max_bytes)
    return fail(ErrorCode::invalid_argument, "{}: {} bytes, more than the {} a JSON file here may hold",
                file.path().string(), file.size(), max_bytes);
  std::string text(static_cast<std::size_t>(file.size()), '\0');
  if (auto r = file.read_at(0, std::as_writable_bytes(std::span(text))); !r) return fail(r.error());
  auto doc = parse_strict_json(text, max_depth);
  if (!doc) return fail(ErrorCode::invalid_argument, "{}: {}", file.path().string(), doc.error().message);
  return doc;
}

std::string quote_for_message(std::string_view text, std::size_t max_chars) {
  return "'" + sanitize(text, max_chars, true) + "'";
}

}  // namespace memd
