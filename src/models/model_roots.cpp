// models/model_roots.cpp — see model_roots.hpp.
#include "models/model_roots.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <string>
#include <system_error>

namespace memd {
namespace {

namespace fs = std::filesystem;

bool has_dotdot(const fs::path& p) {
  for (const auto& c : p)
    if (c == "..") return true;
  return false;
}

// Component-wise prefix test on paths without `..`; an empty last component
// ("a/b/") is not a component.
bool within(const fs::path& p, const fs::path& root) {
  auto pi = p.begin();
  for (auto ri = root.begin(); ri != root.end(); ++ri) {
    if (ri->empty()) continue;
    if (pi == p.end() || *pi != *ri) return false;
    ++pi;
  }
  return true;
}

// A requested path as messages show it: capped, and with bytes that are not
// printable UTF-8 written as \xNN, so an error message is always valid UTF-8
// for the JSON it ends up in whatever bytes the client sent.
std::string printable(std::string_view s) {
  constexpr std::size_t kShown = 256;
  std::string out;
  std::size_t i = 0;
  while (i < s.size() && out.size() < kShown) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = len != 0 && i + len <= s.size() && (len > 1 || (c >= 0x20 && c != 0x7f));
    for (std::size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    }
  }
  if (i < s.size()) out += "…";
  return out;
}

std::string root_list(const std::vector<fs::path>& roots) {
  std::string out;
  for (const auto& r : roots) out += (out.empty() ? "" : ", ") + printable(r.native());
  return out;
}

const char* kind_of(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

Error from_errno(int e, std::string_view shown) {
  if (e == ENOENT || e == ENOTDIR) return {ErrorCode::not_found, fmt::format("no model file {}", shown)};
  if (e == EACCES || e == EPERM) return {ErrorCode::permission_denied, fmt::format("cannot reach model path {}", shown)};
  if (e == ENAMETOOLONG) return {ErrorCode::invalid_argument, fmt::format("model path {} is too long", shown)};
  if (e == ELOOP) return {ErrorCode::permission_denied, fmt::format("model path {} has a symbolic link loop", shown)};
  return {ErrorCode::backend_error, fmt::format("model path {}: {}", shown, std::generic_category().message(e))};
}

Result<void> check_shape(std::string_view p) {
  if (p.empty()) return fail(ErrorCode::invalid_argument, "model path is empty");
  if (p.find('\0') != std::string_view::npos)
    return fail(ErrorCode::invalid_argument, "model path contains a NUL byte");
  if (p.size() > ModelRoots::kMaxPathBytes)
    return fail(ErrorCode::invalid_argument, "model path is {} bytes, over the limit of {}", p.size(),
                ModelRoots::kMaxPathBytes);
  return {};
}

}  // namespace

Result<ModelRoots> ModelRoots::create(std::vector<fs::path> roots) {
  std::vector<fs::path> canonical, spelled;
  for (const auto& r : roots) {
    if (r.empty()) return fail(ErrorCode::invalid_argument, "a model root is empty");
    std::error_code ec;
    auto c = fs::canonical(r, ec);
    if (ec) {
      if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory)
        return fail(ErrorCode::not_found, "model root {} does not exist", printable(r.native()));
      return fail(ErrorCode::invalid_argument, "model root {}: {}", printable(r.native()), ec.message());
    }
    if (!fs::is_directory(c, ec))
      return fail(ErrorCode::invalid_argument, "model root {} is not a directory", printable(r.native()));
    bool seen = false;
    for (const auto& k : canonical) seen = seen || k == c;
    if (!seen) canonical.push_back(std::move(c));
    auto written = fs::absolute(r, ec).lexically_normal();
    if (!ec && !has_dotdot(written)) spelled.push_back(std::move(written));
  }
  return ModelRoots(std::move(canonical), std::move(spelled));
}

Error ModelRoots::loading_off() {
  return {ErrorCode::permission_denied,
          "model loading is off: start memd with --model-root DIR (./scripts/run sets ./models)"};
}

bool ModelRoots::inside_a_root(const fs::path& canonical) const {
  for (const auto& r : roots_)
    if (within(canonical, r)) return true;
  return false;
}

bool ModelRoots::written_inside_a_root(const fs::path& normal) const {
  if (inside_a_root(normal)) return true;
  for (const auto& r : spelled_)
    if (within(normal, r)) return true;
  return false;
}

Result<fs::path> ModelRoots::confine(const fs::path& path, std::string_view shown, bool regular_only) const {
  std::error_code ec;
  // Resolves every link in the part that exists; the rest is appended as
  // written (it has no `..`), so a link out is caught even when what it
  // points at does not exist — the answer never says what exists outside.
  const fs::path real = fs::weakly_canonical(path, ec);
  if (ec) return fail(from_errno(ec.value(), shown));
  if (!inside_a_root(real))
    return fail(ErrorCode::permission_denied, "model path {} leads outside the model roots through a symbolic link",
                shown);
  struct stat st {};
  if (::lstat(real.c_str(), &st) != 0) return fail(from_errno(errno, shown));
  // `real` has no links left, so S_ISLNK here means one was put there since.
  if (S_ISREG(st.st_mode) || (S_ISDIR(st.st_mode) && !regular_only)) return real;
  return fail(ErrorCode::permission_denied, "model path {} is {}, not a regular file{}", shown, kind_of(st.st_mode),
              regular_only ? "" : " or a model folder");
}

Result<fs::path> ModelRoots::resolve(std::string_view requested) const {
  if (auto ok = check_shape(requested); !ok) return fail(ok.error());
  if (!enabled()) return fail(loading_off());
  const fs::path p{std::string(requested)};
  const std::string shown = printable(requested);
  if (has_dotdot(p))
    return fail(ErrorCode::permission_denied, "model path {} contains '..': name it from inside a model root", shown);
  if (p.is_absolute()) {
    // Judged lexically first, so nothing outside the roots is even stat'ed.
    const fs::path normal = p.lexically_normal();
    if (!written_inside_a_root(normal))
      return fail(ErrorCode::permission_denied, "model path {} is outside the model roots ({})", shown,
                  root_list(roots_));
    return confine(normal, shown, false);
  }
  // In the order given; the first root where it exists wins. A link out in an
  // earlier root is refused rather than skipped, so the answer does not
  // depend on what the link points at.
  for (const auto& root : roots_) {
    auto found = confine((root / p).lexically_normal(), shown, false);
    if (found || found.error().code != ErrorCode::not_found) return found;
  }
  return fail(ErrorCode::not_found, "no model {} under the model roots ({})", shown, root_list(roots_));
}

Result<fs::path> ModelRoots::check_file(const fs::path& path) const {
  if (auto ok = check_shape(path.native()); !ok) return fail(ok.error());
  if (!enabled()) return fail(loading_off());
  const std::string shown = printable(path.native());
  if (!path.is_absolute()) return fail(ErrorCode::invalid_argument, "model file {} is not an absolute path", shown);
  if (has_dotdot(path))
    return fail(ErrorCode::permission_denied, "model file {} contains '..': name it from inside a model root", shown);
  const fs::path normal = path.lexically_normal();
  if (!written_inside_a_root(normal))
    return fail(ErrorCode::permission_denied, "model file {} is outside the model roots ({})", shown,
                root_list(roots_));
  return confine(normal, shown, true);
}

Result<ModelFile> ModelRoots::open_file(const fs::path& path) const {
  auto real = check_file(path);
  if (!real) return fail(real.error());
  auto file = ModelFile::open(*real);
  if (!file) return file;
  if (auto ok = check_opened(*file); !ok) return fail(ok.error());
  return file;
}

Result<void> ModelRoots::check_opened(const ModelFile& file) const {
  if (!enabled()) return fail(loading_off());
  const std::string shown = printable(file.path().native());
  // Where the kernel says the descriptor is: a directory component swapped
  // for a link out between check_file() and open() shows here.
  std::array<char, kMaxPathBytes + 64> buf{};
  const auto proc = fmt::format("/proc/self/fd/{}", file.fd());
  const ssize_t n = ::readlink(proc.c_str(), buf.data(), buf.size() - 1);
  if (n > 0 && static_cast<std::size_t>(n) < buf.size() - 1) {
    const fs::path opened(std::string(buf.data(), static_cast<std::size_t>(n)));
    if (!opened.is_absolute() || has_dotdot(opened) || !inside_a_root(opened))
      return fail(ErrorCode::permission_denied, "model file {} was opened outside the model roots (at {})", shown,
                  printable(opened.native()));
    return {};
  }
  // No /proc: the weaker check, that the path still names what was opened.
  auto now = identify_file(file.path());
  if (!now || *now != file.identity() || !inside_a_root(file.path()))
    return fail(ErrorCode::permission_denied, "model file {} changed while being opened", shown);
  return {};
}

}  // namespace memd
