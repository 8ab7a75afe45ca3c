// libFuzzer target: arbitrary bytes as a `memd serve --tokens` file.
//
// Parsing must return a table or invalid_argument, never crash or print a
// token in its message; an accepted table must hold only what the format
// allows (bearer-token syntax, owners by the owner rule, no token twice),
// and writing it back must read back as the same table.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "memd/owner_name.hpp"
#include "server/http/tokens_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto table = memd::parse_tokens(text, "fuzz");
  if (!table) {
    if (table.error().code != memd::ErrorCode::invalid_argument) std::abort();
    return 0;
  }
  if (table->empty()) std::abort();
  std::set<std::string> tokens;
  for (const auto& e : *table) {
    if (e.token.empty() || e.token.find_first_of(" \t\r\n#") != std::string::npos) std::abort();
    if (!tokens.insert(e.token).second) std::abort();
    if (!memd::check_owner(e.owner)) std::abort();
    if (e.line < 1) std::abort();
  }
  auto again = memd::parse_tokens(memd::format_tokens(*table), "again");
  if (!again || again->size() != table->size()) std::abort();
  for (std::size_t i = 0; i < table->size(); ++i) {
    const auto &a = (*table)[i], &b = (*again)[i];
    if (a.token != b.token || a.owner != b.owner || a.admin != b.admin) std::abort();
  }
  return 0;
}
