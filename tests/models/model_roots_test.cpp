// ModelRoots: a load names a file inside a --model-root or is refused —
// `..`, absolute paths outside, symbolic links out (file or directory),
// FIFOs, sockets and devices, malformed paths, and everything when no root
// is set.
#include "models/model_roots.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

namespace memd {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/memd-roots-XXXXXX";
    path = fs::canonical(::mkdtemp(tmpl));
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_file(const fs::path& p, std::string_view text = "weights") {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

bool has(const Error& e, std::string_view text) { return e.message.find(text) != std::string::npos; }

// root/ holds a.safetensors and sub/b.bin; outside/ holds secret.bin.
class ModelRootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root() / "sub");
    fs::create_directories(outside());
    write_file(root() / "a.safetensors");
    write_file(root() / "sub" / "b.bin");
    write_file(outside() / "secret.bin", "secret");
    auto r = ModelRoots::create({root()});
    ASSERT_TRUE(r) << r.error().message;
    roots = std::move(*r);
  }
  fs::path root() const { return dir.path / "root"; }
  fs::path outside() const { return dir.path / "outside"; }

  void expect_refused(std::string_view requested, std::string_view says = {}) {
    auto r = roots.resolve(requested);
    ASSERT_FALSE(r) << requested << " resolved to " << r->string();
    EXPECT_EQ(r.error().code, ErrorCode::permission_denied) << requested << ": " << r.error().message;
    if (!says.empty()) {
      EXPECT_TRUE(has(r.error(), says)) << r.error().message;
    }
  }

  TempDir dir;
  ModelRoots roots;
};

TEST_F(ModelRootsTest, ResolvesRelativeAndAbsolutePathsInsideARoot) {
  auto a = roots.resolve("a.safetensors");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(*a, root() / "a.safetensors");
  auto dot = roots.resolve("./sub//b.bin");
  ASSERT_TRUE(dot) << dot.error().message;
  EXPECT_EQ(*dot, root() / "sub" / "b.bin");
  auto folder = roots.resolve("sub");
  ASSERT_TRUE(folder) << folder.error().message;
  EXPECT_EQ(*folder, root() / "sub");
  auto abs = roots.resolve((root() / "sub" / "b.bin").string());
  ASSERT_TRUE(abs) << abs.error().message;
  EXPECT_EQ(*abs, root() / "sub" / "b.bin");
  for (std::string_view absent : {"none.bin", "a.safetensors/under_a_file", "sub/none/deeper.bin"}) {
    auto missing = roots.resolve(absent);
    ASSERT_FALSE(missing) << absent;
    EXPECT_EQ(missing.error().code, ErrorCode::not_found) << absent << ": " << missing.error().message;
  }
}

TEST_F(ModelRootsTest, TriesRootsInTheOrderGiven) {
  fs::create_directories(dir.path / "second");
  write_file(dir.path / "second" / "only_here.bin");
  write_file(dir.path / "second" / "a.safetensors");
  auto two = ModelRoots::create({root(), dir.path / "second", root()});
  ASSERT_TRUE(two);
  EXPECT_EQ(two->roots().size(), 2u) << "a repeated root is kept once";
  auto only = two->resolve("only_here.bin");
  ASSERT_TRUE(only) << only.error().message;
  EXPECT_EQ(*only, dir.path / "second" / "only_here.bin");
  auto first = two->resolve("a.safetensors");
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, root() / "a.safetensors");
}

TEST_F(ModelRootsTest, RefusesDotDotEvenWhenItStaysInside) {
  expect_refused("sub/../a.safetensors", "'..'");
  expect_refused("../outside/secret.bin", "'..'");
  expect_refused("..", "'..'");
  expect_refused((root() / "sub" / ".." / "a.safetensors").string(), "'..'");
  expect_refused((root() / ".." / "outside" / "secret.bin").string(), "'..'");
}

TEST_F(ModelRootsTest, RefusesAbsolutePathsOutsideEveryRoot) {
  expect_refused((outside() / "secret.bin").string(), "outside the model roots");
  expect_refused("/etc/passwd", "outside the model roots");
  // Whether it exists is not told: the same refusal, no stat.
  expect_refused((outside() / "no-such-file").string(), "outside the model roots");
  // A sibling whose name starts with the root's is not inside it.
  fs::create_directories(dir.path / "root2");
  write_file(dir.path / "root2" / "x.bin");
  expect_refused((dir.path / "root2" / "x.bin").string(), "outside the model roots");
}

TEST_F(ModelRootsTest, RefusesASymbolicLinkToAFileOutside) {
  fs::create_symlink(outside() / "secret.bin", root() / "link.bin");
  expect_refused("link.bin", "symbolic link");
  expect_refused((root() / "link.bin").string(), "symbolic link");
  // Dangling, pointing out: refused the same, not "not found".
  fs::create_symlink(outside() / "none.bin", root() / "dangling.bin");
  expect_refused("dangling.bin", "symbolic link");
  // Relative link text that climbs out.
  fs::create_symlink("../outside/secret.bin", root() / "rel.bin");
  expect_refused("rel.bin", "symbolic link");
}

TEST_F(ModelRootsTest, RefusesASymbolicLinkToADirectoryOutside) {
  fs::create_directory_symlink(outside(), root() / "dirlink");
  expect_refused("dirlink", "symbolic link");
  expect_refused("dirlink/secret.bin", "symbolic link");
  expect_refused("dirlink/none.bin", "symbolic link");
  expect_refused((root() / "dirlink" / "secret.bin").string(), "symbolic link");
}

TEST_F(ModelRootsTest, AllowsSymbolicLinksThatStayInsideAndReturnsTheCanonicalPath) {
  fs::create_symlink(root() / "sub" / "b.bin", root() / "alias.bin");
  fs::create_directory_symlink("sub", root() / "subalias");
  auto file = roots.resolve("alias.bin");
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_EQ(*file, root() / "sub" / "b.bin");
  auto via_dir = roots.resolve("subalias/b.bin");
  ASSERT_TRUE(via_dir) << via_dir.error().message;
  EXPECT_EQ(*via_dir, root() / "sub" / "b.bin");
  // The canonical path opens with O_NOFOLLOW (the link itself would not).
  EXPECT_TRUE(ModelFile::open(*file));
  EXPECT_FALSE(ModelFile::open(root() / "alias.bin"));
  // A root given through a link is stored canonical and still matches.
  fs::create_directory_symlink(root(), dir.path / "rootlink");
  auto via_link = ModelRoots::create({dir.path / "rootlink"});
  ASSERT_TRUE(via_link);
  EXPECT_EQ(via_link->roots().front(), root());
  auto abs = via_link->resolve((root() / "a.safetensors").string());
  ASSERT_TRUE(abs) << abs.error().message;
  // ... and so does an absolute path spelled through the configured link
  // (./models a link to a bigger disk); the answer is canonical.
  auto spelled = via_link->resolve((dir.path / "rootlink" / "a.safetensors").string());
  ASSERT_TRUE(spelled) << spelled.error().message;
  EXPECT_EQ(*spelled, root() / "a.safetensors");
  auto shard = via_link->check_file(dir.path / "rootlink" / "sub" / "b.bin");
  ASSERT_TRUE(shard) << shard.error().message;
  EXPECT_EQ(*shard, root() / "sub" / "b.bin");
}

TEST_F(ModelRootsTest, RefusesFifosSocketsAndDevices) {
  ASSERT_EQ(::mkfifo((root() / "fifo").c_str(), 0600), 0);
  expect_refused("fifo", "FIFO");  // and returns: nothing opened it

  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sock = (root() / "sock").string();
  ASSERT_LT(sock.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  ::close(s);
  expect_refused("sock", "socket");

  expect_refused("/dev/zero", "outside the model roots");
  fs::create_symlink("/dev/zero", root() / "zero");
  expect_refused("zero", "symbolic link");
  // A device inside a root is refused for what it is.
  auto dev = ModelRoots::create({"/dev"});
  ASSERT_TRUE(dev);
  auto zero = dev->resolve("zero");
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, ErrorCode::permission_denied);
  EXPECT_TRUE(has(zero.error(), "character device")) << zero.error().message;
}

TEST_F(ModelRootsTest, RefusesMalformedPaths) {
  for (const std::string& bad : {std::string(), std::string("a\0b", 3), std::string(5000, 'a')}) {
    auto r = roots.resolve(bad);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << r.error().message;
  }
  // A name longer than the filesystem allows is malformed, not a crash.
  auto long_name = roots.resolve(std::string(300, 'n'));
  ASSERT_FALSE(long_name);
  EXPECT_EQ(long_name.error().code, ErrorCode::invalid_argument) << long_name.error().message;
  // Bytes that are not UTF-8 are echoed escaped, so the message stays valid text.
  auto odd = roots.resolve("\xff\xfe.bin");
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().code, ErrorCode::not_found);
  EXPECT_TRUE(has(odd.error(), "\\xff\\xfe.bin")) << odd.error().message;
}

TEST_F(ModelRootsTest, WithoutRootsEveryLoadIsRefusedWithHowToSetOne) {
  for (const ModelRoots& none : {ModelRoots{}, *ModelRoots::create({})}) {
    EXPECT_FALSE(none.enabled());
    for (const auto& p : {std::string("a.safetensors"), (root() / "a.safetensors").string()}) {
      auto r = none.resolve(p);
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error().code, ErrorCode::permission_denied);
      EXPECT_TRUE(has(r.error(), "--model-root")) << r.error().message;
      EXPECT_TRUE(has(r.error(), "./scripts/run")) << r.error().message;
    }
    auto f = none.check_file(root() / "a.safetensors");
    ASSERT_FALSE(f);
    EXPECT_TRUE(has(f.error(), "--model-root"));
  }
}

TEST_F(ModelRootsTest, CreateRefusesARootThatIsMissingOrNotADirectory) {
  auto missing = ModelRoots::create({root(), dir.path / "nope"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  EXPECT_TRUE(has(missing.error(), "nope")) << missing.error().message;
  auto file = ModelRoots::create({root() / "a.safetensors"});
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::invalid_argument);
  auto empty = ModelRoots::create({fs::path()});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::invalid_argument);
}

TEST_F(ModelRootsTest, CheckFileRechecksFilesFoundInsideAModelFolder) {
  auto shard = roots.check_file(root() / "sub" / "b.bin");
  ASSERT_TRUE(shard) << shard.error().message;
  EXPECT_EQ(*shard, root() / "sub" / "b.bin");
  // An index naming a shard "../../outside/secret.bin".
  auto up = roots.check_file(root() / "sub" / ".." / ".." / "outside" / "secret.bin");
  ASSERT_FALSE(up);
  EXPECT_EQ(up.error().code, ErrorCode::permission_denied);
  fs::create_symlink(outside() / "secret.bin", root() / "sub" / "shard.bin");
  auto out = roots.check_file(root() / "sub" / "shard.bin");
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::permission_denied);
  fs::create_symlink("b.bin", root() / "sub" / "inside.bin");
  auto inside = roots.check_file(root() / "sub" / "inside.bin");
  ASSERT_TRUE(inside) << inside.error().message;
  EXPECT_EQ(*inside, root() / "sub" / "b.bin");
  auto folder = roots.check_file(root() / "sub");
  ASSERT_FALSE(folder);
  EXPECT_EQ(folder.error().code, ErrorCode::permission_denied) << "a shard must be a regular file";
  auto relative = roots.check_file("sub/b.bin");
  ASSERT_FALSE(relative);
  EXPECT_EQ(relative.error().code, ErrorCode::invalid_argument);
  auto absent = roots.check_file(root() / "sub" / "none.bin");
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().code, ErrorCode::not_found);
}

TEST_F(ModelRootsTest, OpenFileOpensOnlyConfinedRegularFiles) {
  fs::create_symlink("b.bin", root() / "sub" / "inside.bin");
  auto f = roots.open_file(root() / "sub" / "inside.bin");
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->path(), root() / "sub" / "b.bin");
  EXPECT_EQ(f->size(), 7u);
  fs::create_symlink(outside() / "secret.bin", root() / "out.bin");
  auto out = roots.open_file(root() / "out.bin");
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().code, ErrorCode::permission_denied);
  ASSERT_EQ(::mkfifo((root() / "fifo").c_str(), 0600), 0);
  auto fifo = roots.open_file(root() / "fifo");
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error().code, ErrorCode::permission_denied);
}

TEST_F(ModelRootsTest, TheAfterOpenCheckGoesByWhereTheDescriptorReallyIs) {
  auto inside = ModelFile::open(root() / "sub" / "b.bin");
  ASSERT_TRUE(inside);
  EXPECT_TRUE(roots.check_opened(*inside));
  // What a swapped directory component would have led open() to.
  auto secret = ModelFile::open(outside() / "secret.bin");
  ASSERT_TRUE(secret);
  auto r = roots.check_opened(*secret);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::permission_denied);
  EXPECT_TRUE(has(r.error(), "outside the model roots")) << r.error().message;
  // Opened inside through a path that has since become a link out: the
  // descriptor's real place decides, not the name.
  fs::rename(root() / "sub", dir.path / "moved");
  fs::create_directory_symlink(dir.path / "moved", root() / "sub");
  auto moved = roots.check_opened(*inside);
  ASSERT_FALSE(moved);
  EXPECT_EQ(moved.error().code, ErrorCode::permission_denied);
}

}  // namespace
}  // namespace memd
