// `memd --state-dir` across real restarts of `memd serve` (issue 17, item 4):
// limits (per device, memory type and owner), the owners' tokens and quotas,
// and pinned models (loaded again, every tensor's bytes as in the file) with
// their keep-alive come back after a SIGTERM, and after a SIGKILL right
// after the REST answers (state is written before the answer). Allocations
// do not come back. A corrupt state file does not stop the daemon: it is
// refused with a logged error naming the file and where, set aside, and the
// rest is restored.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <thread>

#include "../models/safetensors_writer.hpp"
#include "memd/size.hpp"
#include "models/model_layout.hpp"
#include "server/child_process.hpp"
#include "server/doors_support.hpp"

namespace memd::testing {
namespace {

namespace fs = std::filesystem;
using namespace test_models;
using Headers = httplib::Headers;

const Headers kAdmin{{"Authorization", "Bearer admin-token"}};
const Headers kTeamA{{"Authorization", "Bearer team-a-token"}};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The same flags every time: only the state directory carries anything over.
class Memd {
 public:
  Memd(const fs::path& state, const fs::path& root, const fs::path& tokens, const fs::path& log)
      : process_({"/bin/sh", "-c",
                  std::string("exec ") + MEMD_BINARY + " --no-cuda --host-device 256MiB --state-dir " +
                      state.string() + " serve --listen 127.0.0.1:0 --model-root " + root.string() + " --tokens " +
                      tokens.string() + " --socket off 2>>" + log.string()}) {
    auto banner = process_.read_line(std::chrono::seconds(20));
    if (banner && banner->find("http://") != std::string::npos) url_ = banner->substr(banner->find("http://"));
    client_ = std::make_unique<httplib::Client>(url_);
    client_->set_read_timeout(std::chrono::seconds(20));
  }
  const std::string& url() const { return url_; }
  httplib::Client& http() { return *client_; }
  void signal(int sig) { process_.signal(sig); }
  int wait() { return process_.wait(std::chrono::seconds(30)); }

 private:
  ChildProcess process_;
  std::string url_;
  std::unique_ptr<httplib::Client> client_;
};

std::string error_code(const httplib::Result& r) {
  if (!r) return "transport";
  auto j = json::parse(r->body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
}

json put(Memd& m, const std::string& path, const json& body, const Headers& h = kAdmin) {
  auto r = m.http().Put(path, h, body.dump(), "application/json");
  EXPECT_TRUE(r) << path;
  if (!r) return {};
  EXPECT_EQ(r->status, 200) << path << ": " << r->body;
  return json::parse(r->body, nullptr, false);
}

json get(Memd& m, const std::string& path, const Headers& h = kAdmin) {
  auto r = m.http().Get(path, h);
  EXPECT_TRUE(r) << path;
  if (!r || r->status != 200) return {};
  return json::parse(r->body, nullptr, false);
}

// The model's status once its job is done (state no longer Loading).
json settled(Memd& m, const std::string& name) {
  json s;
  for (int i = 0; i < 400; ++i) {
    s = get(m, "/api/memory/models/" + name);
    if (s.is_object() && s.value("state", "") != "Loading") return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << name << " still loading: " << s.dump();
  return s;
}

json load(Memd& m, const json& body) {
  auto r = m.http().Post("/api/memory/models", kAdmin, body.dump(), "application/json");
  EXPECT_TRUE(r);
  if (!r) return {};
  EXPECT_EQ(r->status, 202) << r->body;
  return settled(m, body["name"]);
}

// Every tensor of the model's components, read over REST, is the file's.
void expect_model_bytes(Memd& m, const json& status) {
  auto layout = read_model_layout(status["path"].get<std::string>());
  ASSERT_TRUE(layout) << layout.error().message;
  ASSERT_FALSE(status["components"].empty());
  for (const auto& c : status["components"]) {
    ASSERT_TRUE(c.contains("allocationId")) << c.dump();
    const auto* lc = layout->component(c["name"].get<std::string>());
    ASSERT_NE(lc, nullptr);
    for (const auto& t : lc->tensors) {
      auto r = m.http().Get("/api/memory/allocations/" + c["allocationId"].get<std::string>() +
                                "/data?offset=" + std::to_string(t.offset) + "&length=" + std::to_string(t.bytes),
                            kAdmin);
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 200) << r->body;
      ASSERT_EQ(r->body.size(), t.bytes);
      for (std::uint64_t i = 0; i < t.bytes; ++i)
        ASSERT_EQ(static_cast<std::byte>(r->body[i]), tensor_byte(t.name, i)) << t.name << " byte " << i;
    }
  }
}

// An allocation as team-a: its answer's error code, or "" when it was made.
std::string allocate_as_team_a(Memd& m, const std::string& size) {
  auto r = m.http().Post("/api/memory/allocations", kTeamA,
                         json{{"sizeBytes", size}, {"deviceId", "host:0"}}.dump(), "application/json");
  if (!r) return "transport";
  if (r->status == 201) return "";
  return error_code(r);
}

class StateDir : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_ = fs::path(models_.path) / "tokens";
    std::ofstream(tokens_) << "admin-token ops admin\nteam-a-token team-a\n";
    ASSERT_EQ(::chmod(tokens_.c_str(), 0600), 0);
    state_ = fs::path(models_.path) / "state";
    root_ = fs::path(models_.path) / "models";
    log_ = fs::path(models_.path) / "memd.log";
    write_safetensors(root_ / "tiny.safetensors", {{"w.0", {256, 1024}}, {"w.1", {64, 1024}}, {"b", {7}, "F32"}});
    write_safetensors(root_ / "lazy.safetensors", {{"l.0", {128, 1024}}, {"l.bias", {3}}});
  }

  // A failure shows what the daemons logged, and the state files as they are.
  void TearDown() override {
    if (!HasFailure()) return;
    std::cerr << "---- memd's log\n" << slurp(log_);
    for (const auto& e : fs::directory_iterator(state_))
      std::cerr << "---- " << e.path().filename().string() << "\n" << slurp(e.path()) << "\n";
  }

  Memd start() { return Memd(state_, root_, tokens_, log_); }

  // First life: limits of every kind, a pinned model with a keep-alive, an
  // unpinned one, an allocation.
  void first_life(Memd& m) {
    ASSERT_FALSE(m.url().empty()) << slurp(log_);
    put(m, "/api/memory/limits", {{"deviceId", "host:0"}, {"bytes", "200MiB"}});
    put(m, "/api/memory/limits", {{"memoryType", "VRAM"}, {"bytes", "192MiB"}});
    put(m, "/api/memory/limits", {{"owner", "team-a"}, {"bytes", "8MiB"}});
    const json tiny = load(m, {{"name", "tiny"}, {"path", "tiny.safetensors"}, {"deviceId", "host:0"},
                               {"keepAliveSeconds", 300}});
    ASSERT_EQ(tiny["state"], "Loaded") << tiny.dump();
    const json pinned = put(m, "/api/memory/models/tiny/pin", {{"pinned", true}});
    EXPECT_EQ(pinned["pinned"], true);
    const json lazy = load(m, {{"name", "lazy"}, {"path", "lazy.safetensors"}, {"keepAliveSeconds", 120},
                               {"priority", "Low"}});
    ASSERT_EQ(lazy["state"], "Loaded") << lazy.dump();
    EXPECT_EQ(allocate_as_team_a(m, "4MiB"), "");
    EXPECT_EQ(allocate_as_team_a(m, "5MiB"), "quota_exceeded") << "8 MiB for team-a";
  }

  // What a restart must show: the limits, team-a's token and quota, the
  // pinned model back in VRAM byte for byte, the other one known at the Disk
  // tier; no allocation of the last life.
  void expect_restored(Memd& m) {
    ASSERT_FALSE(m.url().empty()) << slurp(log_);
    const json limits = get(m, "/api/memory/limits");
    EXPECT_EQ(limits["perDevice"]["host:0"], 200 * kMiB) << limits.dump();
    EXPECT_EQ(limits["perMemoryType"]["VRAM"], 192 * kMiB) << limits.dump();
    EXPECT_EQ(limits["perOwner"]["team-a"], 8 * kMiB) << limits.dump();
    const json mine = get(m, "/api/memory/allocations", kTeamA);
    EXPECT_EQ(mine["total"], 0) << "allocations do not survive a restart";
    EXPECT_EQ(allocate_as_team_a(m, "9MiB"), "quota_exceeded") << "team-a's quota is back";
    EXPECT_EQ(allocate_as_team_a(m, "8MiB"), "") << "and is team-a's, through its token";
    const json tiny = settled(m, "tiny");
    EXPECT_EQ(tiny["state"], "Loaded") << tiny.dump();
    EXPECT_EQ(tiny["tier"], "VRAM");
    EXPECT_EQ(tiny["pinned"], true);
    EXPECT_EQ(tiny["keepAliveSeconds"], 300);
    EXPECT_EQ(tiny["deviceId"], "host:0");
    expect_model_bytes(m, tiny);
    const json lazy = settled(m, "lazy");
    EXPECT_EQ(lazy["state"], "Loaded") << lazy.dump();
    // Known at the Disk tier, unless the restored predictor (it followed
    // tiny last time) had it preloaded into idle VRAM since.
    if (lazy["tier"] != "Disk") {
      EXPECT_EQ(lazy["tier"], "VRAM") << lazy.dump();
      EXPECT_EQ(lazy["preloaded"], true) << lazy.dump();
    }
    EXPECT_EQ(lazy["keepAliveSeconds"], 120);
    EXPECT_EQ(lazy["priority"], "Low");
    EXPECT_EQ(lazy["pinned"], false);
  }

  TempDir models_;
  fs::path tokens_, state_, root_, log_;
};

TEST_F(StateDir, ARestartAfterSigtermRestoresLimitsOwnersAndPinnedModels) {
  {
    Memd m = start();
    first_life(m);
    m.signal(SIGTERM);
    EXPECT_EQ(m.wait(), 0) << slurp(log_);
  }
  const std::string log = slurp(log_);
  EXPECT_NE(log.find("state saved in " + state_.string()), std::string::npos) << log;
  for (const char* file : {"limits.json", "models.json", "predictor.json"})
    EXPECT_TRUE(fs::exists(state_ / file)) << file << " written";
  Memd m = start();
  expect_restored(m);
  EXPECT_NE(slurp(log_).find("state: restoring 2 model(s): 1 pinned"), std::string::npos) << slurp(log_);
  EXPECT_NE(slurp(log_).find("state: restored the usage predictor's history of 2 model(s)"), std::string::npos);
  m.signal(SIGTERM);
  EXPECT_EQ(m.wait(), 0);
}

TEST_F(StateDir, ARestartAfterSigkillRestoresWhatTheAnswersHadConfirmed) {
  {
    Memd m = start();
    first_life(m);
    m.signal(SIGKILL);  // no stop, no last write: only what each change wrote
    EXPECT_EQ(m.wait(), 128 + SIGKILL);
  }
  EXPECT_EQ(slurp(log_).find("state saved in"), std::string::npos) << "it never stopped";
  {
    Memd m = start();
    expect_restored(m);
    // Changes in this life, then a SIGKILL as soon as they are answered.
    put(m, "/api/memory/limits", {{"owner", "team-b"}, {"bytes", "2MiB"}});
    put(m, "/api/memory/limits", {{"memoryType", "VRAM"}, {"bytes", nullptr}});
    const json lazy = load(m, {{"name", "lazy"}, {"path", "lazy.safetensors"}, {"keepAliveSeconds", 60},
                               {"priority", "Low"}});
    EXPECT_EQ(lazy["tier"], "VRAM") << lazy.dump();
    put(m, "/api/memory/models/lazy/pin", {{"pinned", true}});
    m.signal(SIGKILL);
    EXPECT_EQ(m.wait(), 128 + SIGKILL);
  }
  // No temporary of an interrupted write is taken for state.
  Memd m = start();
  ASSERT_FALSE(m.url().empty()) << slurp(log_);
  const json limits = get(m, "/api/memory/limits");
  EXPECT_EQ(limits["perOwner"]["team-b"], 2 * kMiB) << limits.dump();
  EXPECT_EQ(limits["perOwner"]["team-a"], 8 * kMiB);
  EXPECT_FALSE(limits["perMemoryType"].contains("VRAM")) << "the removal survived too";
  EXPECT_EQ(limits["perDevice"]["host:0"], 200 * kMiB);
  for (const char* name : {"tiny", "lazy"}) {
    const json s = settled(m, name);
    EXPECT_EQ(s["state"], "Loaded") << s.dump();
    EXPECT_EQ(s["tier"], "VRAM") << name << " was pinned";
    EXPECT_EQ(s["pinned"], true) << name;
    expect_model_bytes(m, s);
  }
  EXPECT_EQ(settled(m, "lazy")["keepAliveSeconds"], 60);
  EXPECT_EQ(settled(m, "tiny")["keepAliveSeconds"], 300);
  for (const auto& e : fs::directory_iterator(state_))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  m.signal(SIGTERM);
  EXPECT_EQ(m.wait(), 0);
}

TEST_F(StateDir, ACorruptStateFileIsSetAsideWithAnErrorAndTheRestIsRestored) {
  {
    Memd m = start();
    first_life(m);
    m.signal(SIGTERM);
    ASSERT_EQ(m.wait(), 0);
  }
  // limits.json of another version's shape, written over by hand.
  const std::string bad = "{\n  \"format\": \"memd-state\",\n  \"kind\": \"limits\",\n  \"version\": 1,\n"
                          "  \"perOwner\": {\"team-a\": \"8MiB\"}\n}\n";
  { std::ofstream(state_ / "limits.json", std::ios::trunc) << bad; }
  Memd m = start();
  ASSERT_FALSE(m.url().empty()) << "a bad state file never stops the daemon\n" << slurp(log_);
  const std::string log = slurp(log_);
  EXPECT_NE(log.find("state file " + (state_ / "limits.json").string() +
                     " refused: perOwner['team-a']: expected a non-negative integer, found a string"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("memd starts without its limits"), std::string::npos) << log;
  bool aside = false;
  for (const auto& e : fs::directory_iterator(state_))
    if (e.path().filename().string().starts_with("limits.json.bad-")) aside = slurp(e.path()) == bad;
  EXPECT_TRUE(aside) << "the refused file is kept as it was";
  const json limits = get(m, "/api/memory/limits");
  EXPECT_TRUE(limits["perOwner"].empty()) << limits.dump();
  EXPECT_EQ(allocate_as_team_a(m, "9MiB"), "") << "no quota: the limits were not restored";
  // The rest was: the pinned model is back, byte for byte.
  const json tiny = settled(m, "tiny");
  EXPECT_EQ(tiny["tier"], "VRAM") << tiny.dump();
  expect_model_bytes(m, tiny);
  // A new limit writes a fresh file.
  put(m, "/api/memory/limits", {{"owner", "team-a"}, {"bytes", "1MiB"}});
  EXPECT_NE(slurp(state_ / "limits.json").find("\"team-a\": 1048576"), std::string::npos);
  m.signal(SIGTERM);
  EXPECT_EQ(m.wait(), 0);
}

TEST_F(StateDir, APinnedModelWhoseFileChangedIsSkippedAndTheDaemonStarts) {
  {
    Memd m = start();
    first_life(m);
    m.signal(SIGTERM);
    ASSERT_EQ(m.wait(), 0);
  }
  write_safetensors(root_ / "tiny.safetensors", {{"w.0", {128, 1024}}});  // replaced by another model
  Memd m = start();
  ASSERT_FALSE(m.url().empty()) << slurp(log_);
  const json tiny = settled(m, "tiny");
  EXPECT_EQ(tiny["state"], "Failed") << tiny.dump();
  EXPECT_TRUE(tiny["error"].get<std::string>().starts_with("not restored at start: ")) << tiny.dump();
  EXPECT_NE(tiny["error"].get<std::string>().find("changed since memd loaded it"), std::string::npos);
  EXPECT_NE(slurp(log_).find("model 'tiny' not restored at start"), std::string::npos) << slurp(log_);
  EXPECT_EQ(get(m, "/api/memory/limits")["perOwner"]["team-a"], 8 * kMiB) << "the rest is restored";
  m.signal(SIGTERM);
  EXPECT_EQ(m.wait(), 0);
}

TEST_F(StateDir, ASecondDaemonOnTheSameStateDirectoryIsRefused) {
  Memd first = start();
  ASSERT_FALSE(first.url().empty());
  Memd second = start();
  EXPECT_TRUE(second.url().empty());
  EXPECT_EQ(second.wait(), 1);
  EXPECT_NE(slurp(log_).find("is in use by another memd (pid"), std::string::npos) << slurp(log_);
  first.signal(SIGTERM);
  EXPECT_EQ(first.wait(), 0);
}

}  // namespace
}  // namespace memd::testing
