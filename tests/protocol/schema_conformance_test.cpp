// The OpenAPI document tells the truth: requests generated from it alone are
// answered as it promises.
//
// For every operation of openapi_document() (the function that serves
// /api/openapi.json) this test generates requests from the schemas — valid
// values drawn from types, enums, patterns and bounds, and invalid ones made by
// one mutation of a valid request (a missing required key, a wrong type, a
// value past a bound, a string off its pattern, an unknown enum name, a null,
// a body breaking a oneOf rule) — and feeds them through dispatch(), the path
// both doors take, over an in-process MemoryService on a 64 MiB host device.
// Valid requests must never be answered invalid_argument (not_found for a
// random id, out_of_memory, out_of_range … are fine); invalid ones must be
// refused with invalid_argument, never answered success. There is no list of
// cases: a small JSON Schema checker (the subset the document uses) decides
// which generated request is valid, and the document drives everything.
//
// MEMD_SCHEMA_SEED overrides the fixed seed; MEMD_SCHEMA_ROUNDS the number of
// requests of each kind per operation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <span>
#include <string>
#include <vector>

#include "memd/owner_name.hpp"
#include "memd/size.hpp"
#include "memd/text.hpp"
#include "protocol/action_table.hpp"
#include "protocol/openapi.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using nlohmann::json;
using Rng = std::mt19937_64;

std::uint64_t uniform(Rng& rng, std::uint64_t lo, std::uint64_t hi) {
  return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
}
bool chance(Rng& rng, double p) { return std::bernoulli_distribution(p)(rng); }

// ---- strings from a pattern (the ECMA-262 subset the document uses) --------

struct RegexNode {
  enum Kind { Seq, Alt, Repeat, Class, Empty } kind = Empty;
  std::vector<RegexNode> children;
  std::string chars;  // Class
  int min = 1, max = 1;
};

class RegexParser {
 public:
  explicit RegexParser(std::string_view p) : p_(p) {}
  RegexNode parse() { return alt(); }

 private:
  RegexNode alt() {
    RegexNode n{RegexNode::Alt};
    n.children.push_back(seq());
    while (i_ < p_.size() && p_[i_] == '|') {
      ++i_;
      n.children.push_back(seq());
    }
    return n;
  }
  RegexNode seq() {
    RegexNode n{RegexNode::Seq};
    while (i_ < p_.size() && p_[i_] != '|' && p_[i_] != ')') {
      RegexNode a = atom();
      quantify(a);
      n.children.push_back(std::move(a));
    }
    return n;
  }
  char escaped(char c) { return c; }
  RegexNode atom() {
    const char c = p_[i_++];
    if (c == '^' || c == '$') return {};
    if (c == '(') {
      bool lookahead = false;
      if (i_ + 1 < p_.size() && p_[i_] == '?') {
        lookahead = p_[i_ + 1] == '=' || p_[i_ + 1] == '!';
        i_ += 2;
      }
      RegexNode inner = alt();
      ++i_;  // ')'
      // Lookaheads generate nothing: the caller keeps only strings that match.
      return lookahead ? RegexNode{} : inner;
    }
    RegexNode n{RegexNode::Class};
    if (c == '[') {
      while (p_[i_] != ']') {
        char lo = p_[i_++];
        if (lo == '\\') lo = p_[i_++];
        if (p_[i_] == '-' && p_[i_ + 1] != ']') {
          const char hi = p_[i_ + 1];
          i_ += 2;
          for (char x = lo; x <= hi; ++x) n.chars.push_back(x);
        } else {
          n.chars.push_back(lo);
        }
      }
      ++i_;
    } else if (c == '\\') {
      n.chars.push_back(p_[i_++]);
    } else if (c == '.') {
      for (char x = 'a'; x <= 'z'; ++x) n.chars.push_back(x);
    } else {
      n.chars.push_back(c);
    }
    return n;
  }
  void quantify(RegexNode& a) {
    if (i_ >= p_.size()) return;
    int lo = -1, hi = -1;
    if (p_[i_] == '?') lo = 0, hi = 1, ++i_;
    else if (p_[i_] == '*') lo = 0, hi = 4, ++i_;
    else if (p_[i_] == '+') lo = 1, hi = 4, ++i_;
    else if (p_[i_] == '{') {
      const auto close = p_.find('}', i_);
      const std::string body(p_.substr(i_ + 1, close - i_ - 1));
      const auto comma = body.find(',');
      lo = std::stoi(body.substr(0, comma));
      hi = comma == std::string::npos ? lo
           : comma + 1 == body.size() ? lo + 4
                                      : std::stoi(body.substr(comma + 1));
      i_ = close + 1;
    }
    if (lo < 0) return;
    RegexNode r{RegexNode::Repeat};
    r.min = lo;
    r.max = hi;
    r.children.push_back(std::move(a));
    a = std::move(r);
  }

  std::string_view p_;
  std::size_t i_ = 0;
};

void emit(const RegexNode& n, Rng& rng, std::string& out) {
  switch (n.kind) {
    case RegexNode::Seq:
      for (const auto& c : n.children) emit(c, rng, out);
      break;
    case RegexNode::Alt: emit(n.children[uniform(rng, 0, n.children.size() - 1)], rng, out); break;
    case RegexNode::Repeat: {
      const auto k = uniform(rng, static_cast<std::uint64_t>(n.min), static_cast<std::uint64_t>(n.max));
      for (std::uint64_t j = 0; j < k; ++j) emit(n.children[0], rng, out);
      break;
    }
    case RegexNode::Class: out.push_back(n.chars[uniform(rng, 0, n.chars.size() - 1)]); break;
    case RegexNode::Empty: break;
  }
}

const std::regex& compiled(const std::string& pattern) {
  static std::map<std::string, std::regex> cache;
  auto it = cache.find(pattern);
  if (it == cache.end()) it = cache.emplace(pattern, std::regex(pattern)).first;
  return it->second;
}

// A pattern written in \uXXXX code units (the owner rule) is matched the way
// ECMA-262 without the `u` flag matches it: on the string's UTF-16 code
// units. std::wregex on a wstring holding one code unit per element does
// exactly that, independently of how memd decodes UTF-8.
bool utf16_pattern(const std::string& pattern) { return pattern.find("\\u") != std::string::npos; }

std::optional<std::wstring> utf16_units(const std::string& s) {
  std::wstring out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const std::size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return std::nullopt;
    char32_t c = n == 1 ? b : b & (0x7F >> n);
    for (std::size_t k = 1; k < n; ++k) {
      const auto cont = static_cast<unsigned char>(s[i + k]);
      if ((cont & 0xC0) != 0x80) return std::nullopt;
      c = (c << 6) | (cont & 0x3F);
    }
    const char32_t minimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < minimum[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return std::nullopt;
    if (c >= 0x10000) {
      out.push_back(static_cast<wchar_t>(0xD800 + ((c - 0x10000) >> 10)));
      out.push_back(static_cast<wchar_t>(0xDC00 + ((c - 0x10000) & 0x3FF)));
    } else {
      out.push_back(static_cast<wchar_t>(c));
    }
    i += n;
  }
  return out;
}

bool pattern_matches(const std::string& pattern, const std::string& s) {
  if (!utf16_pattern(pattern)) return std::regex_search(s, compiled(pattern));
  static std::map<std::string, std::wregex> cache;
  auto it = cache.find(pattern);
  if (it == cache.end()) it = cache.emplace(pattern, std::wregex(std::wstring(pattern.begin(), pattern.end()))).first;
  const auto units = utf16_units(s);
  return units && std::regex_search(*units, it->second);
}

std::string from_pattern(const std::string& pattern, Rng& rng) {
  const RegexNode tree = RegexParser(pattern).parse();
  for (int attempt = 0; attempt < 1000; ++attempt) {
    std::string s;
    emit(tree, rng, s);
    if (std::regex_search(s, compiled(pattern))) return s;
  }
  ADD_FAILURE() << "no string generated for pattern " << pattern;
  return {};
}

// ---- a JSON Schema checker: the subset the document uses --------------------

bool valid(const json& schema, const json& v);

bool type_matches(const std::string& type, const json& v) {
  if (type == "string") return v.is_string();
  if (type == "integer") return v.is_number_integer();
  if (type == "number") return v.is_number();
  if (type == "boolean") return v.is_boolean();
  if (type == "array") return v.is_array();
  if (type == "object") return v.is_object();
  return false;
}

long double number(const json& v) {
  if (v.is_number_unsigned()) return static_cast<long double>(v.get<std::uint64_t>());
  if (v.is_number_integer()) return static_cast<long double>(v.get<std::int64_t>());
  return static_cast<long double>(v.get<double>());
}

bool valid(const json& schema, const json& v) {
  if (v.is_null()) {
    if (schema.value("nullable", false)) return true;
    if (schema.contains("anyOf"))
      return std::any_of(schema["anyOf"].begin(), schema["anyOf"].end(),
                         [&](const json& b) { return valid(b, v); });
    return !schema.contains("type") && !schema.contains("enum");
  }
  if (schema.contains("anyOf") &&
      std::none_of(schema["anyOf"].begin(), schema["anyOf"].end(), [&](const json& b) { return valid(b, v); }))
    return false;
  if (schema.contains("oneOf") &&
      std::count_if(schema["oneOf"].begin(), schema["oneOf"].end(), [&](const json& b) { return valid(b, v); }) != 1)
    return false;
  if (schema.contains("not") && valid(schema["not"], v)) return false;
  if (schema.contains("type") && !type_matches(schema["type"], v)) return false;
  if (schema.contains("enum") && std::find(schema["enum"].begin(), schema["enum"].end(), v) == schema["enum"].end())
    return false;
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    const auto n = utf8_chars(s);
    if (schema.contains("minLength") && n < schema["minLength"].get<std::size_t>()) return false;
    if (schema.contains("maxLength") && n > schema["maxLength"].get<std::size_t>()) return false;
    // memd's extension: a bound in bytes, which JSON Schema cannot state.
    if (schema.contains("x-memd-maxBytes") && s.size() > schema["x-memd-maxBytes"].get<std::size_t>()) return false;
    if (schema.contains("pattern") && !pattern_matches(schema["pattern"], s)) return false;
  }
  if (v.is_number()) {
    if (schema.contains("minimum") && number(v) < number(schema["minimum"])) return false;
    if (schema.contains("maximum") && number(v) > number(schema["maximum"])) return false;
  }
  if (v.is_array()) {
    if (schema.contains("maxItems") && v.size() > schema["maxItems"].get<std::size_t>()) return false;
    if (schema.contains("minItems") && v.size() < schema["minItems"].get<std::size_t>()) return false;
    if (schema.contains("items"))
      for (const auto& item : v)
        if (!valid(schema["items"], item)) return false;
  }
  if (v.is_object()) {
    if (schema.contains("required"))
      for (const auto& key : schema["required"])
        if (!v.contains(key.get<std::string>())) return false;
    if (schema.contains("properties"))
      for (const auto& [key, sub] : schema["properties"].items())
        if (v.contains(key) && !valid(sub, v[key])) return false;
  }
  return true;
}

// A path or query value is text: it is valid when some reading of it is
// (the integer 7 and the string "7" travel the same way).
bool valid_text(const json& schema, const std::string& text) {
  if (schema.contains("anyOf"))
    return std::any_of(schema["anyOf"].begin(), schema["anyOf"].end(),
                       [&](const json& b) { return valid_text(b, text); });
  const std::string type = schema.value("type", "string");
  if (type == "string") return valid(schema, json(text));
  if (type == "boolean") return (text == "true" || text == "false") && valid(schema, json(text == "true"));
  if (type == "integer") {
    static const std::regex integer("^-?[0-9]{1,19}$");
    if (!std::regex_match(text, integer)) return false;
    json v;
    try {
      v = text.front() == '-' ? json(std::stoll(text)) : json(std::stoull(text));
    } catch (const std::exception&) {
      return false;
    }
    return valid(schema, v);
  }
  return false;
}

std::optional<std::string> as_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return v.dump();
  return std::nullopt;  // null, arrays, objects and fractions have no query spelling here
}

// ---- values from a schema ---------------------------------------------------

struct Generator {
  Rng rng;
  std::vector<std::string> live_ids;  // allocation ids the daemon knows

  std::string text(std::size_t min_chars, std::size_t max_chars) {
    static const char* kPieces[] = {"a", "b", "z", "Q", "0", "7", "-", "_", " ", "é", "日", "ß"};
    const std::size_t hi = std::min<std::size_t>(max_chars, min_chars + 12);
    std::size_t n = chance(rng, 0.1) ? max_chars : uniform(rng, min_chars, hi);
    std::string s;
    for (std::size_t k = 0; k < n; ++k) s += kPieces[uniform(rng, 0, std::size(kPieces) - 1)];
    return s;
  }

  json integer(const json& schema) {
    const std::uint64_t lo = schema.value("minimum", std::uint64_t{0});
    const std::uint64_t hi = schema.value("maximum", std::uint64_t{1} << 62);
    switch (uniform(rng, 0, 3)) {
      case 0: return lo;
      case 1: return hi;
      case 2: return uniform(rng, lo, std::min(hi, lo + 4 * kMiB));
      default: {  // log-uniform over the whole range
        const auto bits = uniform(rng, 0, 62);
        return std::clamp<std::uint64_t>(uniform(rng, 0, (std::uint64_t{1} << bits)), lo, hi);
      }
    }
  }

  json value(const json& schema) {
    for (int attempt = 0; attempt < 200; ++attempt) {
      json v = candidate(schema);
      if (valid(schema, v)) return v;
    }
    ADD_FAILURE() << "no valid value for " << schema.dump();
    return nullptr;
  }

  json candidate(const json& schema) {
    if (chance(rng, 0.2) && valid(schema, nullptr)) return nullptr;  // a nullable key's null
    if (schema.contains("anyOf")) return candidate(schema["anyOf"][uniform(rng, 0, schema["anyOf"].size() - 1)]);
    if (schema.contains("enum")) return schema["enum"][uniform(rng, 0, schema["enum"].size() - 1)];
    const std::string type = schema.value("type", "string");
    if (type == "integer") return integer(schema);
    if (type == "boolean") return chance(rng, 0.5);
    if (type == "object") {  // an ObjectList's item: its required keys, and some of the rest
      json o = json::object();
      const auto required = schema.value("required", json::array());
      for (const auto& [key, sub] : schema["properties"].items())
        if (std::find(required.begin(), required.end(), key) != required.end() || chance(rng, 0.4))
          o[key] = value(sub);
      return o;
    }
    if (type == "array") {
      json a = json::array();
      const std::size_t lo = schema.value("minItems", std::size_t{0});
      const std::size_t n = uniform(rng, lo, std::max(lo, std::min<std::size_t>(schema.value("maxItems", 8), chance(rng, 0.1) ? 1000 : 4)));
      for (std::size_t k = 0; k < n; ++k) a.push_back(value(schema["items"]));
      return a;
    }
    if (schema.value("format", "") == "uuid" && !live_ids.empty() && chance(rng, 0.6))
      return live_ids[uniform(rng, 0, live_ids.size() - 1)];
    if (schema.contains("pattern") && !utf16_pattern(schema["pattern"])) return from_pattern(schema["pattern"], rng);
    return text(schema.value("minLength", std::size_t{0}), schema.value("maxLength", std::size_t{40}));
  }

  // Values the schema refuses, made from its own keywords.
  std::vector<json> invalid_values(const json& schema) {
    std::vector<json> out = {nullptr, true, 3.5, -7, "~not~this~", json::array({1}), json{{"a", 1}},
                             json(std::numeric_limits<std::uint64_t>::max())};
    // A valid value spelled as text ("true" for true, "7" for 7), and a valid
    // value wrapped in an array.
    for (int k = 0; k < 3; ++k) {
      const json v = value(schema);
      if (auto t = as_text(v); t && !v.is_string()) out.push_back(*t);
      out.push_back(json::array({v}));
    }
    std::vector<json> branches;
    if (schema.contains("anyOf")) branches.assign(schema["anyOf"].begin(), schema["anyOf"].end());
    else branches.push_back(schema);
    for (const auto& b : branches) {
      if (b.contains("maximum")) out.push_back(b["maximum"].get<std::uint64_t>() + 1);
      if (b.contains("minimum")) out.push_back(b["minimum"].get<std::int64_t>() - 1);
      if (b.contains("maxLength")) out.push_back(text(b["maxLength"].get<std::size_t>() + 1, b["maxLength"].get<std::size_t>() + 1));
      if (b.contains("minLength")) out.push_back("");
      if (b.contains("minItems") && b["minItems"].get<std::size_t>() > 0) out.push_back(json::array());
      if (b.contains("maxItems")) {
        json a = json::array();
        for (std::size_t k = 0; k <= b["maxItems"].get<std::size_t>(); ++k) a.push_back(value(b["items"]));
        out.push_back(a);
      }
      if (b.contains("items")) {
        for (const auto& bad : invalid_values(b["items"])) out.push_back(json::array({bad}));
        out.push_back(value(b["items"]));  // one item where an array belongs
      }
      if (b.contains("enum")) {
        for (const auto& e : b["enum"]) {
          if (e.is_string()) {
            std::string lower = e.get<std::string>();
            for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            out.push_back(lower);
            out.push_back(e.get<std::string>() + "x");
          } else {
            out.push_back(e.get<std::int64_t>() + 100);
          }
        }
        out.push_back("Nope" + std::to_string(uniform(rng, 0, 999)));
      }
      if (b.contains("x-memd-maxBytes")) {
        // Within maxLength in characters, over the bound in bytes.
        const auto bytes = b["x-memd-maxBytes"].get<std::size_t>();
        std::string wide;
        while (wide.size() <= bytes) wide += "日";
        out.push_back(wide);
        out.push_back(std::string(bytes + 1, 'o'));
      }
      if (b.contains("pattern") && utf16_pattern(b["pattern"])) {
        // Control and format characters (Cc, Cf), one in each of a few
        // valid values: NUL, DEL, NEL, soft hyphen, RLO, zero width space,
        // BOM, and the LANGUAGE TAG (a surrogate pair in UTF-16).
        static const char* kHostile[] = {"\x01",         "\x7f",         "\xc2\x85",     "\xc2\xad",
                                         "\xe2\x80\xae", "\xe2\x80\x8b", "\xef\xbb\xbf", "\xf3\xa0\x80\x81",
                                         "\n"};
        for (const char* bad : kHostile) {
          std::string s = value(b).get<std::string>();
          s.insert(uniform(rng, 0, s.size()), bad);
          out.push_back(s);
        }
        out.push_back(std::string("a\0b", 3));
      } else if (b.contains("pattern")) {
        for (int k = 0; k < 6; ++k) {
          std::string s = from_pattern(b["pattern"], rng);
          switch (k % 3) {
            case 0: s.insert(uniform(rng, 0, s.size()), 1, "~ +x-.:"[uniform(rng, 0, 6)]); break;
            case 1: s.erase(uniform(rng, 0, s.size() - 1), 1); break;
            default: s += std::string(uniform(rng, 1, 20), '9'); break;
          }
          out.push_back(s);
        }
      }
    }
    std::erase_if(out, [&](const json& v) { return valid(schema, v); });
    return out;
  }
};

// ---- requests ---------------------------------------------------------------

struct Request {
  json path = json::object(), query = json::object();
  std::optional<json> body;  // a JSON body, when the operation takes one
};

struct Operation {
  std::string method, path;
  const Action* action = nullptr;
  const Route* route = nullptr;
  std::vector<json> parameters;  // path and query parameters
  std::optional<json> body_schema;
};

bool valid_request(const Operation& op, const Request& r) {
  for (const auto& p : op.parameters) {
    const auto& in = p["in"] == "path" ? r.path : r.query;
    const std::string name = p["name"];
    if (!in.contains(name)) {
      if (p.value("required", false)) return false;
      continue;
    }
    if (!valid_text(p["schema"], in[name].get<std::string>())) return false;
  }
  if (op.body_schema && !valid(*op.body_schema, r.body.value_or(json::object()))) return false;
  return true;
}

Request valid_request_of(const Operation& op, Generator& g) {
  for (int attempt = 0; attempt < 500; ++attempt) {
    Request r;
    for (const auto& p : op.parameters) {
      if (!p.value("required", false) && chance(g.rng, 0.5)) continue;
      auto text = as_text(g.value(p["schema"]));
      if (text) (p["in"] == "path" ? r.path : r.query)[p["name"].get<std::string>()] = *text;
    }
    if (op.body_schema) {
      json body = json::object();
      const auto& props = (*op.body_schema)["properties"];
      const auto required = op.body_schema->value("required", json::array());
      for (const auto& [key, sub] : props.items()) {
        const bool must = std::find(required.begin(), required.end(), key) != required.end();
        if (must || chance(g.rng, 0.4)) body[key] = g.value(sub);
      }
      r.body = std::move(body);
    }
    if (valid_request(op, r)) return r;
  }
  ADD_FAILURE() << "no valid request for " << op.method << " " << op.path;
  return {};
}

// One mutation of a valid request that the document says makes it invalid.
std::optional<Request> invalid_request_of(const Operation& op, Generator& g) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    Request r = valid_request_of(op, g);
    const bool has_params = !op.parameters.empty();
    const auto which = uniform(g.rng, 0, 1);
    if (has_params && (which == 0 || !op.body_schema)) {
      const auto& p = op.parameters[uniform(g.rng, 0, op.parameters.size() - 1)];
      auto& in = p["in"] == "path" ? r.path : r.query;
      const std::string name = p["name"];
      // A path without its parameter is another route (or none): only query
      // parameters can go missing.
      if (p["in"] == "query" && chance(g.rng, 0.2)) {
        in.erase(name);
      } else {
        auto bad = g.invalid_values(p["schema"]);
        if (bad.empty()) continue;
        auto text = as_text(bad[uniform(g.rng, 0, bad.size() - 1)]);
        if (!text) continue;
        in[name] = *text;
      }
    } else if (op.body_schema) {
      const auto& props = (*op.body_schema)["properties"];
      std::vector<std::string> keys;
      for (const auto& [key, sub] : props.items()) keys.push_back(key);
      const std::string key = keys[uniform(g.rng, 0, keys.size() - 1)];
      switch (uniform(g.rng, 0, 2)) {
        case 0: r.body->erase(key); break;             // a required key, or a oneOf rule
        case 1: (*r.body)[key] = g.value(props[key]); break;  // a oneOf rule
        default: {
          auto bad = g.invalid_values(props[key]);
          if (bad.empty()) continue;
          (*r.body)[key] = bad[uniform(g.rng, 0, bad.size() - 1)];
        }
      }
    } else {
      return std::nullopt;  // nothing to get wrong
    }
    if (!valid_request(op, r)) return r;
  }
  return std::nullopt;
}

// What the HTTP door builds: the JSON body, query values that the body does
// not name, then the path's values.
json params_of(const Request& r) {
  json params = r.body.value_or(json::object());
  for (const auto& [k, v] : r.query.items())
    if (!params.contains(k)) params[k] = v;
  for (const auto& [k, v] : r.path.items()) params[k] = v;
  return params;
}

std::vector<Operation> operations(const json& doc) {
  std::vector<Operation> ops;
  for (const auto& [path, methods] : doc["paths"].items()) {
    for (const auto& [method, op] : methods.items()) {
      Operation o{method, path};
      for (const auto& a : action_table())
        for (const auto& route : a.routes) {
          std::string m(to_string(route.method));
          std::transform(m.begin(), m.end(), m.begin(), ::tolower);
          if (m == method && route.path == path) o.action = &a, o.route = &route;
        }
      if (o.action == nullptr) continue;  // /api/openapi.json itself
      for (const auto& p : op.value("parameters", json::array()))
        if (p["in"] == "path" || p["in"] == "query") o.parameters.push_back(p);
      if (op.contains("requestBody") && op["requestBody"]["content"].contains("application/json"))
        o.body_schema = op["requestBody"]["content"]["application/json"]["schema"];
      ops.push_back(std::move(o));
    }
  }
  return ops;
}

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(SchemaConformance, GeneratedRequestsAreAnsweredAsTheDocumentSays) {
  ServiceOptions options;
  options.backends.host_device_sizes = {64 * kMiB};
  options.backends.enable_cuda = false;
  options.session_sweep_interval = std::chrono::milliseconds(0);  // no reaper thread: one-threaded test
  auto created = MemoryService::create(options);
  ASSERT_TRUE(created) << created.error().message;
  MemoryService& service = **created;
  // Generated requests come as the default caller (anonymous, not the
  // admin): a valid request it may not make is answered permission_denied,
  // which is not invalid_argument, so the document's promise still holds.
  const Caller host = Caller::host("schema-test");

  const std::uint64_t seed = env_or("MEMD_SCHEMA_SEED", 20261206);
  const std::uint64_t rounds = env_or("MEMD_SCHEMA_ROUNDS", 120);
  Generator g{Rng(seed), {}};
  std::vector<std::byte> payload(64, std::byte{0x5A});

  // A few live allocations, so ids, offsets and lengths meet real bounds.
  for (int k = 0; k < 4; ++k) {
    AllocationRequest a;
    a.size_bytes = 4096;
    auto rec = service.allocate(Caller::as("anonymous"), a);
    ASSERT_TRUE(rec) << rec.error().message;
    g.live_ids.push_back(rec->id.to_string());
  }

  // cpu memory is the machine's RAM (and SharedMemory is mlock'ed): a limit
  // on cpu, put back after every request (generated PUTs may change it),
  // keeps a generated 20 GiB allocation from really pinning 20 GiB.
  auto guard_cpu = [&] {
    LimitUpdate u;
    u.device = DeviceId::cpu();
    u.bytes = 64 * kMiB;
    ASSERT_TRUE(service.update_limits(host, u));
  };
  guard_cpu();
  auto run = [&](const Operation& op, const Request& r) {
    guard_cpu();
    CallContext ctx;
    if (op.route->body == RouteBody::BinaryUpload)
      ctx.payload = std::span<const std::byte>(payload.data(), uniform(g.rng, 0, payload.size()));
    ctx.binary_response = op.route->body == RouteBody::BinaryDownload;
    ctx.read_only = op.route->read_only;
    auto outcome = dispatch(service, *op.action, params_of(r), ctx);
    if (outcome && op.action->name == "memory_allocate") {
      // cpu allocations are real RAM: keep only small ones alive, so reads
      // (up to 1 GiB each) and writes stay small on a shared machine.
      const std::string id = outcome->result["allocationId"];
      if (outcome->result["sizeBytes"].get<std::uint64_t>() <= 16 * kMiB) g.live_ids.push_back(id);
      else EXPECT_TRUE(service.deallocate(host, *AllocationId::parse(id)));
    }
    return outcome;
  };

  const auto doc = openapi_document();
  const auto ops = operations(doc);
  ASSERT_GE(ops.size(), action_table().size());
  std::uint64_t total_valid = 0, total_invalid = 0;
  std::map<std::string, std::uint64_t> codes;
  for (const auto& op : ops) {
    std::uint64_t valid_count = 0, invalid_count = 0;
    for (std::uint64_t k = 0; k < rounds; ++k) {
      const Request r = valid_request_of(op, g);
      auto out = run(op, r);
      ++valid_count;
      codes[out ? "success" : std::string(to_string(out.error().code))]++;
      EXPECT_TRUE(out || out.error().code != ErrorCode::invalid_argument)
          << op.method << " " << op.path << " refused a valid request " << params_of(r).dump() << ": "
          << out.error().message;
    }
    for (std::uint64_t k = 0; k < rounds; ++k) {
      const auto r = invalid_request_of(op, g);
      if (!r) break;  // the operation takes nothing that can be wrong
      auto out = run(op, *r);
      ++invalid_count;
      EXPECT_FALSE(out) << op.method << " " << op.path << " accepted an invalid request "
                        << params_of(*r).dump();
      if (!out) {
        EXPECT_EQ(out.error().code, ErrorCode::invalid_argument)
            << op.method << " " << op.path << " " << params_of(*r).dump() << ": " << out.error().message;
      }
    }
    std::printf("schema: %-7s %-45s valid %4llu  invalid %4llu\n", op.method.c_str(), op.path.c_str(),
                static_cast<unsigned long long>(valid_count), static_cast<unsigned long long>(invalid_count));
    total_valid += valid_count;
    total_invalid += invalid_count;
  }
  std::printf("schema: %zu operations, %llu valid and %llu invalid requests (seed %llu)\n", ops.size(),
              static_cast<unsigned long long>(total_valid), static_cast<unsigned long long>(total_invalid),
              static_cast<unsigned long long>(seed));
  for (const auto& [code, n] : codes)
    std::printf("schema: valid requests answered %-20s %llu\n", code.c_str(), static_cast<unsigned long long>(n));
  ::testing::Test::RecordProperty("valid_requests", std::to_string(total_valid));
  ::testing::Test::RecordProperty("invalid_requests", std::to_string(total_invalid));
}

TEST(SchemaConformance, BearerIsOptionalAndLimitsSayOneScope) {
  const auto doc = openapi_document();
  EXPECT_TRUE(doc["security"].is_array());
  EXPECT_NE(std::find(doc["security"].begin(), doc["security"].end(), json::object()), doc["security"].end())
      << "loopback without --token needs no token: the empty requirement must be listed";
  const auto& put = doc["paths"]["/api/memory/limits"]["put"];
  ASSERT_TRUE(put["requestBody"]["content"]["application/json"]["schema"].contains("oneOf"));
  const auto& alloc = doc["paths"]["/api/memory/allocations"]["post"]["requestBody"]["content"]["application/json"];
  EXPECT_FALSE(valid(alloc["schema"], json{{"sizeBytes", 1}, {"memoryType", "Unknown"}}));
  EXPECT_TRUE(valid(alloc["schema"], json{{"sizeBytes", "1.5MiB"}, {"memoryType", "VRAM"}}));
  EXPECT_TRUE(valid(alloc["schema"], alloc["example"]));
}

// The owner schema and the owner rule agree code point by code point: the
// published pattern (matched on UTF-16 code units, as ECMA-262 does) with
// x-memd-maxBytes against memd's UTF-8 decoder, on strings built from the
// edges of every forbidden range, their neighbours and random code points.
TEST(SchemaConformance, OwnerSchemaAgreesWithTheOwnerRule) {
  const auto doc = openapi_document();
  json schema;
  for (const auto& p : doc["paths"]["/api/memory/allocations"]["get"]["parameters"])
    if (p["name"] == "owner") schema = p["schema"];
  ASSERT_TRUE(schema.contains("pattern"));
  ASSERT_EQ(schema["x-memd-maxBytes"], kMaxOwnerBytes);

  auto utf8 = [](char32_t c) {
    std::string out;
    if (c < 0x80) out += static_cast<char>(c);
    else if (c < 0x800) out += {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
    else if (c < 0x10000)
      out += {static_cast<char>(0xE0 | (c >> 12)), static_cast<char>(0x80 | ((c >> 6) & 0x3F)),
              static_cast<char>(0x80 | (c & 0x3F))};
    else
      out += {static_cast<char>(0xF0 | (c >> 18)), static_cast<char>(0x80 | ((c >> 12) & 0x3F)),
              static_cast<char>(0x80 | ((c >> 6) & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
    return out;
  };
  std::vector<char32_t> pool = {'a', 'Z', '0', ' ', '~', 0xE9, 0x65E5, 0x1F642};
  for (const auto& r : owner_forbidden_code_points())
    for (char32_t c : {char32_t(r.first - 1), r.first, r.last, char32_t(r.last + 1)})
      if (c < 0xD800 || (c > 0xDFFF && c <= 0x10FFFF)) pool.push_back(c);
  Rng rng(7);
  for (int k = 0; k < 64; ++k) {
    char32_t c = static_cast<char32_t>(uniform(rng, 1, 0x10FFFF));
    if (c < 0xD800 || c > 0xDFFF) pool.push_back(c);
  }
  int refused = 0, accepted = 0;
  for (int k = 0; k < 3000; ++k) {
    std::string s;
    const auto n = uniform(rng, 0, 40);
    for (std::uint64_t i = 0; i < n; ++i) {
      // Mostly harmless characters, so refusals come one cause at a time.
      const bool plain = chance(rng, 0.9);
      s += utf8(plain ? pool[uniform(rng, 0, 7)] : pool[uniform(rng, 0, pool.size() - 1)]);
    }
    const bool by_rule = static_cast<bool>(check_owner(s));
    EXPECT_EQ(valid(schema, json(s)), by_rule) << "owner of " << s.size() << " bytes: the schema and the rule disagree"
                                               << (by_rule ? "" : ": " + check_owner(s).error().message);
    (by_rule ? accepted : refused)++;
  }
  EXPECT_GT(accepted, 300);
  EXPECT_GT(refused, 300);
}

}  // namespace
}  // namespace memd
