// A model's weights used by another process without a copy, end to end: a
// real `memd serve` (a host device, --model-root, --tokens, --socket) loads
// a safetensors file and a two-part diffusers folder; a controller exports
// them for `worker`; examples/python/model_worker.py (python3, standard
// library: no PyTorch here) imports every component over the socket, maps
// it, builds each tensor as a memoryview over the mapping and checks its
// bytes against the files (--check), its values against what was written,
// and that each tensor's pointer lies inside the mapping. mallory, not among
// the export's owners, is refused; an exported model cannot be unloaded
// until its exports are released; the worker's own export (--model) is
// released when it exits. Skips where python3 cannot receive descriptors.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "../models/safetensors_writer.hpp"
#include "api_client.hpp"
#include "server/child_process.hpp"

namespace memd::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

bool have_python3() {
  ChildProcess probe({"/usr/bin/env", "python3", "-c",
                      "import socket, sys; sys.exit(0 if hasattr(socket, 'recv_fds') else 3)"});
  return probe.started() && probe.wait(30s) == 0;
}

// A file with known values: w F32 [2,4] = 0, 0.5, …, 3.5; h F16 [4] = 1, 2,
// -0.5, 0; b BF16 [3] (raw bits); i I64 [2] = 7, -3.
void write_known(const std::filesystem::path& path) {
  std::string data;
  auto put = [&](const void* p, std::size_t n) { data.append(static_cast<const char*>(p), n); };
  for (int k = 0; k < 8; ++k) {
    const float v = 0.5f * static_cast<float>(k);
    put(&v, 4);
  }
  for (const std::uint16_t h : {0x3c00, 0x4000, 0xb800, 0x0000}) put(&h, 2);
  for (const std::uint16_t b : {0x3f80, 0x4000, 0xbf00}) put(&b, 2);  // 1, 2, -0.5 in bfloat16
  data.append(2, '\0');                                              // to an 8-byte boundary
  for (const std::int64_t i : {std::int64_t{7}, std::int64_t{-3}}) put(&i, 8);
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},)"
      R"("h":{"dtype":"F16","shape":[4],"data_offsets":[32,40]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[40,46]},)"
      R"("i":{"dtype":"I64","shape":[2],"data_offsets":[48,64]}})";
  test_models::write_raw_safetensors(path, header, data);
}

class ModelWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_python3()) GTEST_SKIP() << "python3 3.9+ (socket.recv_fds) is not available: the worker cannot run";
    char pattern[] = "/tmp/memd-worker-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    models_ = dir_ + "/models";
    std::filesystem::create_directories(models_);
    write_known(models_ + "/known.safetensors");
    test_models::write_diffusers(models_ + "/pipe",
                                 {{"unet", {{"conv.weight", {64, 4, 3, 3}}, {"conv.bias", {64}, "F32"}}},
                                  {"vae", {{"dec.weight", {32, 32}, "BF16"}, {"dec.scale", {5}, "F64"}}}});
    const std::string tokens = dir_ + "/tokens";
    {
      std::ofstream out(tokens);
      out << "ctl-token ctl\nworker-token worker\nmallory-token mallory\n";
    }
    ::chmod(tokens.c_str(), 0600);
    socket_ = dir_ + "/memd.sock";
    daemon_ = std::make_unique<ChildProcess>(std::vector<std::string>{
        MEMD_BINARY, "--no-cuda", "--host-device", "128MiB", "--model-root", models_, "serve", "--listen", "127.0.0.1:0",
        "--tokens", tokens, "--socket", socket_});
    ASSERT_TRUE(daemon_->started());
    for (int i = 0; i < 2 && url_.empty(); ++i) {
      auto line = daemon_->read_line(30s);
      ASSERT_TRUE(line) << "no banner";
      if (auto at = line->find("http://"); at != std::string::npos) url_ = line->substr(at);
    }
    ASSERT_FALSE(url_.empty());
  }
  void TearDown() override {
    if (daemon_) {
      daemon_->signal(SIGTERM);
      EXPECT_EQ(daemon_->wait(30s), 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  cli::ApiClient as(const std::string& token) {
    cli::ClientOptions o;
    o.url = url_;
    o.token = token;
    return cli::ApiClient(o);
  }
  void load(const std::string& name, const std::string& path) {
    auto ctl = as("ctl-token");
    auto started = ctl.post("/api/memory/models", {{"name", name}, {"path", path}, {"deviceId", "host:0"}});
    ASSERT_TRUE(started) << started.error().message;
    for (int i = 0; i < 3000; ++i) {
      auto s = ctl.get("/api/memory/models/" + name);
      ASSERT_TRUE(s) << s.error().message;
      if ((*s)["state"] == "Loaded") return;
      ASSERT_NE((*s)["state"], "Failed") << s->dump();
      std::this_thread::sleep_for(10ms);
    }
    FAIL() << name << " did not load";
  }
  // The export answer, saved where the worker reads it.
  std::string export_for(const std::string& name, const json& owners) {
    auto answer = as("ctl-token").post("/api/memory/models/" + name + "/export", {{"owners", owners}});
    EXPECT_TRUE(answer) << (answer ? "" : answer.error().message);
    if (!answer) return "";
    const std::string file = dir_ + "/" + name + "-export.json";
    std::ofstream(file) << answer->dump();
    return file;
  }
  struct Run {
    int status = -1;
    std::string out;
    json report;  // the --json document, when there is one
  };
  Run worker(std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/env", "python3",
                                  std::string(MEMD_SOURCE_DIR) + "/examples/python/model_worker.py", "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess p(argv);
    Run r;
    while (auto line = p.read_line(60s)) {
      r.out += *line + "\n";
      if (!line->empty() && line->front() == '{') r.report = json::parse(*line, nullptr, false);
    }
    r.status = p.wait(60s);
    return r;
  }
  std::string dir_, models_, socket_, url_;
  std::unique_ptr<ChildProcess> daemon_;
};

TEST_F(ModelWorkerTest, AWorkerBuildsTensorsOverTheMappingAndTheyMatchTheFiles) {
  load("known", "known.safetensors");
  load("pipe", "pipe");
  const auto known = export_for("known", {"worker"});
  const auto pipe = export_for("pipe", {"worker"});
  ASSERT_FALSE(known.empty() || pipe.empty());

  auto k = worker({"--export-json", known, "--token", "worker-token", "--check", models_ + "/known.safetensors"});
  ASSERT_EQ(k.status, 0) << k.out;
  ASSERT_TRUE(k.report.is_object()) << k.out;
  EXPECT_EQ(k.report["zeroCopy"], true);
  EXPECT_EQ(k.report["checked"], 4);
  EXPECT_TRUE(k.report["failures"].empty()) << k.report["failures"].dump();
  std::map<std::string, json> by_name;
  for (const auto& t : k.report["tensors"]) {
    EXPECT_EQ(t["inMapping"], true) << t.dump();
    by_name[t["name"]] = t;
  }
  const bool torch = k.report["torch"] == true;
  EXPECT_EQ(by_name["w"]["values"], json::array({0.0, 0.5, 1.0, 1.5}));
  EXPECT_EQ(by_name["w"]["shape"], json::array({2, 4}));
  EXPECT_EQ(by_name["h"]["values"], json::array({1.0, 2.0, -0.5, 0.0}));
  EXPECT_EQ(by_name["i"]["values"], json::array({7, -3}));
  // BF16: torch reads the values; the standard library shows the raw bytes.
  EXPECT_EQ(by_name["b"]["values"], torch ? json::array({1.0, 2.0, -0.5}) : json::array({0x80, 0x3f, 0x00, 0x40}));
  if (!torch) {
    EXPECT_EQ(by_name["w"]["kind"], "memoryview");
  }

  // Two components, each checked against its own file.
  auto p = worker({"--export-json", pipe, "--token", "worker-token", "--check",
                   "unet=" + models_ + "/pipe/unet/diffusion_pytorch_model.safetensors", "--check",
                   "vae=" + models_ + "/pipe/vae/diffusion_pytorch_model.safetensors"});
  ASSERT_EQ(p.status, 0) << p.out;
  EXPECT_EQ(p.report["zeroCopy"], true);
  EXPECT_EQ(p.report["checked"], 4);
  EXPECT_TRUE(p.report["failures"].empty()) << p.report["failures"].dump();
  // A check against the wrong file fails (exit 1), naming the tensors.
  auto wrong = worker({"--export-json", pipe, "--token", "worker-token", "--check",
                       models_ + "/known.safetensors"});
  EXPECT_EQ(wrong.status, 1) << wrong.out;
  EXPECT_EQ(wrong.report["failures"].size(), 4u) << wrong.out;

  // mallory is not among the owners: refused by memd (exit 2).
  auto refused = worker({"--export-json", known, "--token", "mallory-token"});
  EXPECT_EQ(refused.status, 2) << refused.out;

  // Exported: unload is a conflict until the exports are released.
  auto ctl = as("ctl-token");
  auto busy = ctl.del("/api/memory/models/known");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, ErrorCode::conflict) << busy.error().message;
  auto released = ctl.del("/api/memory/models/known/export");
  ASSERT_TRUE(released) << released.error().message;
  EXPECT_EQ((*released)["released"].size(), 1u);
  EXPECT_TRUE(ctl.del("/api/memory/models/known"));

  // A worker that exports the model for itself releases that export at exit.
  auto self = worker({"--url", url_, "--model", "pipe", "--token", "worker-token", "--owner", "worker"});
  ASSERT_EQ(self.status, 0) << self.out;
  EXPECT_EQ(self.report["tensors"].size(), 4u);
  auto rest = ctl.del("/api/memory/models/pipe/export");
  ASSERT_TRUE(rest) << rest.error().message;
  EXPECT_EQ((*rest)["released"].size(), 2u) << "only the controller's two exports were left";
  EXPECT_TRUE(ctl.del("/api/memory/models/pipe"));
}

}  // namespace
}  // namespace memd::testing
