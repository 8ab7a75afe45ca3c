// The dashboard's embedded files and how they are found (server/http/dashboard.hpp).
#include "server/http/dashboard.hpp"

#include <algorithm>

namespace memd {
namespace {

constexpr std::size_t kMaxNameBytes = 128;

bool plain_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-';
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// W/"x" and "x" are the same tag for If-None-Match (weak comparison,
// RFC 9110 13.1.2).
std::string_view opaque(std::string_view tag) {
  if (tag.size() >= 2 && tag.substr(0, 2) == "W/") tag.remove_prefix(2);
  return tag;
}

}  // namespace

bool is_dashboard_path(std::string_view path) noexcept {
  // Exactly the two routes' shapes: a path with more segments (such as
  // /dashboard/../api/…) is no file's and gets no exemption from the token.
  constexpr std::string_view prefix = "/dashboard/";
  return path == "/" || (path.starts_with(prefix) && path.size() > prefix.size() &&
                         path.find('/', prefix.size()) == std::string_view::npos);
}

std::string_view dashboard_content_type(std::string_view name) noexcept {
  if (ends_with(name, ".html")) return "text/html; charset=utf-8";
  if (ends_with(name, ".js")) return "text/javascript; charset=utf-8";
  if (ends_with(name, ".css")) return "text/css; charset=utf-8";
  if (ends_with(name, ".svg")) return "image/svg+xml";
  if (ends_with(name, ".png")) return "image/png";
  if (ends_with(name, ".ico")) return "image/x-icon";
  if (ends_with(name, ".json")) return "application/json";
  if (ends_with(name, ".txt")) return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

Result<DashboardFile> find_dashboard_file(std::string_view name) {
  if (name.empty()) name = "index.html";
  if (name.size() > kMaxNameBytes || name.front() == '.' || !std::all_of(name.begin(), name.end(), plain_name_char))
    return fail(ErrorCode::invalid_argument,
                "dashboard file names are 1..128 of [A-Za-z0-9._-], not starting with '.'");
  for (const EmbeddedFile& f : embedded_dashboard_files())
    if (f.name == name) return DashboardFile{&f, dashboard_content_type(f.name)};
  return fail(ErrorCode::not_found, "the dashboard has no file '{}'", name);
}

bool etag_matches(std::string_view header, std::string_view etag) noexcept {
  header = trim(header);
  if (header == "*") return true;
  while (!header.empty()) {
    const auto comma = header.find(',');
    const std::string_view tag = trim(header.substr(0, comma));
    if (!tag.empty() && opaque(tag) == opaque(etag)) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace memd
