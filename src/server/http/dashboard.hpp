// server/http/dashboard.hpp — the web dashboard's files, embedded in the
// binary, and the rules for serving them.
//
// The page (src/server/dashboard/: HTML, plain JS, CSS) is turned into byte
// arrays at build time (cmake/embed_files.cmake), so `memd serve` needs
// nothing beside its binary and the page fetches nothing from elsewhere: it
// only calls this daemon's own API. GET / answers index.html, GET
// /dashboard/NAME the file NAME.
//
// The files are public (no bearer token needed, as /healthz): they hold no
// data, and a browser cannot attach a token to a page it navigates to. Every
// call the page makes for data goes through the API with the token the user
// types into it, under the same rules as any client.
//
// Thread safety: immutable data and pure functions.
#pragma once

#include <span>
#include <string_view>

#include "memd/error.hpp"

namespace memd {

// One embedded file (generated: embedded_dashboard_files()).
struct EmbeddedFile {
  std::string_view name;  // "index.html"
  std::string_view etag;  // a quoted entity tag: "\"0123456789abcdef\""
  std::string_view body;
};

// Every file under src/server/dashboard/, by name (defined by the generated
// dashboard_files.cpp).
std::span<const EmbeddedFile> embedded_dashboard_files();

struct DashboardFile {
  const EmbeddedFile* file = nullptr;
  std::string_view content_type;
};

// True for the paths the dashboard's routes take, "/" and "/dashboard/NAME"
// (one segment, still encoded): these need no token.
bool is_dashboard_path(std::string_view path) noexcept;

// The file a decoded name asks for ("" for GET /: index.html). A name is
// 1..128 of [A-Za-z0-9._-], not starting with '.': anything else (a '/', a
// "..", a '\', a NUL, an escape left over) is invalid_argument, so no path
// reaches outside the embedded set whatever the decoding; a plain name that
// is not embedded is not_found.
Result<DashboardFile> find_dashboard_file(std::string_view name);

// Content-Type by extension (html, js, css, svg, png, ico, json, txt);
// application/octet-stream otherwise.
std::string_view dashboard_content_type(std::string_view name) noexcept;

// Whether an If-None-Match header value names `etag` (a list, weak tags
// W/"…" compared weakly, or *), so the answer may be 304.
bool etag_matches(std::string_view if_none_match, std::string_view etag) noexcept;

}  // namespace memd
