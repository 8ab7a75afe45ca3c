// The --tokens file: a line parser that trusts nothing, and a loader that
// checks the file is private before reading a byte of it.
#include "server/http/tokens_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>

#include "memd/owner_name.hpp"

namespace memd {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
bool is_b64token(std::string_view t) {
  std::size_t i = 0;
  auto body = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~' || c == '+' || c == '/';
  };
  while (i < t.size() && body(t[i])) ++i;
  if (i == 0) return false;
  while (i < t.size() && t[i] == '=') ++i;
  return i == t.size();
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) ++i;
    const std::size_t start = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

}  // namespace

Result<TokenTable> parse_tokens(std::string_view text, std::string_view source) {
  TokenTable table;
  std::unordered_map<std::string_view, int> seen;  // token → line (views into text)
  int number = 0;
  while (!text.empty()) {
    ++number;
    const auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    const auto first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == '#') continue;

    const auto f = fields(line);
    if (f.size() < 2 || f.size() > 3)
      return fail(ErrorCode::invalid_argument,
                  "{}:{}: expected TOKEN OWNER [admin] separated by spaces, found {} field(s)", source, number,
                  f.size());
    if (!is_b64token(f[0]))
      return fail(ErrorCode::invalid_argument,
                  "{}:{}: the token is not a bearer token (letters, digits, - . _ ~ + / then any '=')", source,
                  number);
    if (auto ok = check_owner(f[1]); !ok)
      return fail(ErrorCode::invalid_argument, "{}:{}: {}", source, number, ok.error().message);
    if (f.size() == 3 && f[2] != "admin")
      return fail(ErrorCode::invalid_argument, "{}:{}: the third field may only be 'admin'", source, number);
    if (auto [it, inserted] = seen.emplace(f[0], number); !inserted)
      return fail(ErrorCode::invalid_argument, "{}:{}: the token of line {} again (each token names one owner)",
                  source, number, it->second);
    table.push_back({std::string(f[0]), std::string(f[1]), f.size() == 3, number});
  }
  if (table.empty())
    return fail(ErrorCode::invalid_argument, "{}: no tokens (lines TOKEN OWNER [admin])", source);
  return table;
}

Result<TokenTable> load_tokens_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(errno == ENOENT ? ErrorCode::not_found : ErrorCode::invalid_argument, "--tokens {}: {}", path,
                std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return fail(ErrorCode::invalid_argument, "--tokens {}: {}", path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(ErrorCode::invalid_argument, "--tokens {}: not a regular file", path);
  // Checked on the open file, so the file read is the file checked.
  if ((st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) != 0)
    return fail(ErrorCode::invalid_argument,
                "--tokens {}: mode {:04o} lets group or others read or write it, and it holds secrets; "
                "run chmod 600 {}",
                path, static_cast<unsigned>(st.st_mode & 07777), path);
  if (static_cast<std::uint64_t>(st.st_size) > kMaxTokensFileBytes)
    return fail(ErrorCode::invalid_argument, "--tokens {}: {} bytes, over the {} a tokens file may have", path,
                st.st_size, kMaxTokensFileBytes);
  std::string text;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(ErrorCode::invalid_argument, "--tokens {}: {}", path, std::strerror(errno));
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > kMaxTokensFileBytes)
      return fail(ErrorCode::invalid_argument, "--tokens {}: over the {} bytes a tokens file may have", path,
                  kMaxTokensFileBytes);
  }
  return parse_tokens(text, path);
}

std::string format_tokens(const TokenTable& table) {
  std::string out;
  for (const auto& e : table) out += e.token + " " + e.owner + (e.admin ? " admin\n" : "\n");
  return out;
}

}  // namespace memd
