// The state directory (issue 17, item 4): the crash-safe writer, the three
// state files' formats round-tripped and refused whole on hostile input
// (cut off, another version, wrong types, huge values, owner and model names
// that break their rules, unknown keys, duplicates), the store's load (a bad
// file set aside, the rest kept; a leftover temporary ignored and removed),
// its flushes and its lock.
#include "service/state_store.hpp"
#include "models/safetensors_writer.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>
#include <fstream>
#include <sstream>

#include "service/state_json.hpp"
#include "state/atomic_file.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;
using std::chrono::system_clock;

using test_models::TempDir;  // tests/models/safetensors_writer.hpp

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void put(const fs::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

// A time to the millisecond (what the files keep).
system_clock::time_point at_ms(std::int64_t ms) {
  return system_clock::time_point(std::chrono::milliseconds(ms));
}
const auto kNow = at_ms(1'767'225'600'123);  // 2026-01-01T00:00:00.123Z

Limits sample_limits() {
  Limits l;
  l.per_device[DeviceId::host(0)] = 128 * 1024 * 1024;
  l.per_device[DeviceId::cuda(3)] = 1;
  l.per_memory_type[MemoryType::VRAM] = 4096;
  l.per_memory_type[MemoryType::SharedMemory] = 0;
  l.per_owner["team-a"] = 1 << 20;
  l.per_owner["ünïcode owner"] = kMaxRequestBytes;
  return l;
}

std::vector<ModelRecord> sample_models() {
  ModelRecord a;
  a.name = "sdxl:base";
  a.path = "/srv/models/sdxl";
  a.device = DeviceId::host(1);
  a.dtype = Dtype::F16;
  a.priority = 3;
  a.keep_alive = std::chrono::seconds(300);
  a.pinned = true;
  a.last_use = at_ms(1'767'225'000'000);
  a.files = {{"/srv/models/sdxl/unet/diffusion_pytorch_model.safetensors",
              {2049, 131, 5'135'092'736, 1'700'000'000'123'456'789}},
             {"/srv/models/sdxl/vae/diffusion_pytorch_model.safetensors", {2049, 132, 334'643'268, -5}}};
  ModelRecord b;
  b.name = "tiny";
  b.path = "/m/tiny.safetensors";
  b.device = DeviceId::cuda(0);
  b.last_use = at_ms(1'767'225'600'000);
  b.files = {{"/m/tiny.safetensors", {1, 2, 3, 4}}};
  return {a, b};
}

PredictorHistory sample_history() {
  PredictorHistory h;
  h.last = "b";
  h.models.push_back({"a", 2.5, at_ms(1'767'225'000'000), at_ms(1'767'225'000'000), {{"b", 3}, {"c", 1}}});
  h.models.push_back({"b", 0.125, at_ms(1'767'225'100'000), at_ms(1'767'225'100'000), {{"a", 2}}});
  h.models.push_back({"c", 1e-9, at_ms(1'767'000'000'000), at_ms(1'767'000'000'001), {}});
  return h;
}

// ---- the writer -------------------------------------------------------------

TEST(AtomicFile, WritesReplacesAndKeepsTheModePrivate) {
  TempDir d;
  const auto p = d.path / "f.json";
  ASSERT_TRUE(write_file_atomically(p, "first"));
  EXPECT_EQ(slurp(p), "first");
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(write_file_atomically(p, "second, longer"));
  EXPECT_EQ(slurp(p), "second, longer");
  ASSERT_TRUE(write_file_atomically(p, ""));
  EXPECT_EQ(slurp(p), "");
  // Nothing but the file itself is left behind.
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(d.path)) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST(AtomicFile, AFailedWriteLeavesTheTargetAsItWas) {
  TempDir d;
  const auto p = d.path / "f.json";
  ASSERT_TRUE(write_file_atomically(p, "kept"));
  // The target's name taken by a directory: the rename fails, the temporary goes.
  const auto blocked = d.path / "dir";
  fs::create_directory(blocked);
  fs::create_directory(blocked / "x");
  auto refused = write_file_atomically(blocked, "lost");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("rename"), std::string::npos) << refused.error().message;
  EXPECT_EQ(remove_leftover_temporaries(d.path), 0u) << "the failed write removed its temporary";
  EXPECT_EQ(slurp(p), "kept");
  // A directory that does not exist: refused at create, nothing written.
  EXPECT_FALSE(write_file_atomically(d.path / "missing" / "f.json", "x"));
}

TEST(AtomicFile, ReadIsBoundedAndTellsMissingFromUnreadable) {
  TempDir d;
  EXPECT_EQ(read_file_bounded(d.path / "none", 10).error().code, ErrorCode::not_found);
  put(d.path / "big", std::string(11, 'x'));
  auto big = read_file_bounded(d.path / "big", 10);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(big.error().message.find("over the limit"), std::string::npos);
  EXPECT_EQ(*read_file_bounded(d.path / "big", 11), std::string(11, 'x'));
  EXPECT_EQ(read_file_bounded(d.path, 10).error().code, ErrorCode::invalid_argument) << "a directory";
  fs::create_symlink(d.path / "big", d.path / "link");
  EXPECT_EQ(read_file_bounded(d.path / "link", 100).error().code, ErrorCode::invalid_argument) << "a symlink";
  ASSERT_EQ(::mkfifo((d.path / "fifo").c_str(), 0600), 0);
  EXPECT_EQ(read_file_bounded(d.path / "fifo", 100).error().code, ErrorCode::invalid_argument) << "a FIFO";
}

TEST(AtomicFile, SetAsideNamesTheCopyByTimeAndNeverOverwritesOne) {
  TempDir d;
  const auto p = d.path / "limits.json";
  put(p, "one");
  auto first = set_aside(p, kNow);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->filename(), "limits.json.bad-20260101T000000Z");
  EXPECT_FALSE(fs::exists(p));
  put(p, "two");
  auto second = set_aside(p, kNow);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->filename(), "limits.json.bad-20260101T000000Z-1");
  EXPECT_EQ(slurp(*first), "one");
  EXPECT_EQ(slurp(*second), "two");
}

TEST(AtomicFile, LeftoverTemporariesAreRemovedAndNothingElse) {
  TempDir d;
  for (const char* name : {"limits.json.tmp.123.0", "models.json.tmp.9.17"}) put(d.path / name, "{half");
  for (const char* name : {"limits.json", "x.tmp.12", "x.tmp.a.1", "notes.tmp.1.2.txt", "limits.json.bad-1"})
    put(d.path / name, "keep");
  EXPECT_EQ(remove_leftover_temporaries(d.path), 2u);
  EXPECT_FALSE(fs::exists(d.path / "limits.json.tmp.123.0"));
  for (const char* name : {"limits.json", "x.tmp.12", "x.tmp.a.1", "notes.tmp.1.2.txt", "limits.json.bad-1"})
    EXPECT_TRUE(fs::exists(d.path / name)) << name;
}

TEST(AtomicFile, TheDirectoryLockAdmitsOneHolder) {
  TempDir d;
  auto first = DirectoryLock::acquire(d.path);
  ASSERT_TRUE(first) << first.error().message;
  auto second = DirectoryLock::acquire(d.path);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::conflict);
  EXPECT_NE(second.error().message.find("in use by another memd (pid " + std::to_string(::getpid()) + ")"),
            std::string::npos)
      << second.error().message;
  *first = DirectoryLock();  // released
  EXPECT_TRUE(DirectoryLock::acquire(d.path));
}

// ---- the formats: round trips --------------------------------------------------------

TEST(StateFormat, LimitsRoundTripInMemoryLimitsOwnShape) {
  const auto text = format_limits_state(sample_limits(), kNow);
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["format"], "memd-state");
  EXPECT_EQ(j["kind"], "limits");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["savedAt"], "2026-01-01T00:00:00.123Z");
  EXPECT_EQ(j["perDevice"]["host:0"], 128 * 1024 * 1024);
  EXPECT_EQ(j["perMemoryType"]["VRAM"], 4096);
  EXPECT_EQ(j["perOwner"]["team-a"], 1 << 20);
  EXPECT_TRUE(text.ends_with("}\n"));
  EXPECT_NE(text.find("\n  \"perDevice\""), std::string::npos) << "indented for a person:\n" << text;
  auto back = parse_limits_state(text);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, sample_limits());
  auto empty = parse_limits_state(format_limits_state({}, kNow));
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, Limits{});
}

TEST(StateFormat, ModelsRoundTrip) {
  const auto text = format_models_state(sample_models(), kNow);
  auto back = parse_models_state(text);
  ASSERT_TRUE(back) << back.error().message << "\n" << text;
  EXPECT_EQ(*back, sample_models());
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["models"][0]["priority"], "Critical");
  EXPECT_EQ(j["models"][0]["dtype"], "F16");
  EXPECT_EQ(j["models"][1]["dtype"], nullptr);
  EXPECT_EQ(j["models"][0]["keepAliveSeconds"], 300);
  EXPECT_EQ(j["models"][0]["lastUse"], "2025-12-31T23:50:00.000Z");
  // A record that would not read back is left out, not written broken.
  auto models = sample_models();
  models[1].path = "relative/path";
  ModelRecord bad = models[0];
  bad.name = "dup";
  bad.files[0].path = std::string("/m/\xff\xfe.safetensors");
  models.push_back(bad);
  auto kept = parse_models_state(format_models_state(models, kNow));
  ASSERT_TRUE(kept) << kept.error().message;
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].name, "sdxl:base");
}

TEST(StateFormat, PredictorRoundTrip) {
  const auto text = format_predictor_state(sample_history(), kNow);
  auto back = parse_predictor_state(text);
  ASSERT_TRUE(back) << back.error().message << "\n" << text;
  EXPECT_EQ(*back, sample_history());
  PredictorHistory none;
  auto empty = parse_predictor_state(format_predictor_state(none, kNow));
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, none);
}

// ---- the formats: hostile files, each refused whole with where ------------------------

// The refusal's message, or "" when it was (wrongly) accepted.
template <typename F>
std::string refusal(F parse, std::string_view text) {
  auto r = parse(text);
  if (r) return "";
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  return r.error().message;
}

TEST(StateFormat, ACutOffFileIsRefusedAtEveryLength) {
  const std::string texts[] = {format_limits_state(sample_limits(), kNow),
                               format_models_state(sample_models(), kNow),
                               format_predictor_state(sample_history(), kNow)};
  for (std::size_t k = 0; k < 3; ++k) {
    const std::string& full = texts[k];
    // Up to the closing brace (the newline after it is optional).
    for (std::size_t n = 0; n + 2 <= full.size(); ++n) {
      const std::string_view cut(full.data(), n);
      const std::string why = k == 0   ? refusal(parse_limits_state, cut)
                              : k == 1 ? refusal(parse_models_state, cut)
                                       : refusal(parse_predictor_state, cut);
      ASSERT_FALSE(why.empty()) << "accepted a file cut at " << n << " of " << full.size();
    }
  }
  // Where a person looks: the line and the column.
  const std::string full = format_limits_state(sample_limits(), kNow);
  const std::string cut = full.substr(0, full.find("\"perOwner\"") + 4);
  const auto line = std::count(cut.begin(), cut.end(), '\n') + 1;
  const std::string why = refusal(parse_limits_state, cut);
  EXPECT_NE(why.find("line " + std::to_string(line) + ", column"), std::string::npos) << why << "\n" << full;
  EXPECT_EQ(refusal(parse_limits_state, ""), "the file is empty");
}

TEST(StateFormat, TheEnvelopeMustBeThisMemdsOwn) {
  auto limits = nlohmann::json::parse(format_limits_state(sample_limits(), kNow));
  auto with = [&](const char* key, nlohmann::json value) {
    auto j = limits;
    if (value.is_discarded()) j.erase(key);
    else j[key] = value;
    return refusal(parse_limits_state, j.dump());
  };
  EXPECT_NE(with("version", 2).find("version: version 2 is not one this memd reads"), std::string::npos);
  EXPECT_NE(with("version", "1").find("version: expected a non-negative integer, found a string"), std::string::npos);
  EXPECT_NE(with("version", -1).find("version: expected a non-negative integer, found a negative one"),
            std::string::npos);
  EXPECT_NE(with("version", 1.5).find("version: expected a non-negative integer"), std::string::npos);
  EXPECT_NE(with("version", nlohmann::json::value_t::discarded).find("missing key \"version\""), std::string::npos);
  EXPECT_NE(with("kind", "models").find("kind: this file holds 'models', not 'limits'"), std::string::npos);
  EXPECT_NE(with("format", "other").find("format: expected \"memd-state\""), std::string::npos);
  EXPECT_NE(with("savedAt", "yesterday").find("savedAt: 'yesterday' is not a UTC time"), std::string::npos);
  EXPECT_NE(with("savedAt", "1999-12-31T23:59:59Z").find("savedAt:"), std::string::npos);
  EXPECT_NE(with("perDevicee", nlohmann::json::object()).find("top level: unknown key 'perDevicee'"),
            std::string::npos);
  EXPECT_NE(refusal(parse_limits_state, "[1, 2]").find("top level: expected an object, found an array"),
            std::string::npos);
  EXPECT_NE(refusal(parse_limits_state, std::string(100, '[')).find("nesting deeper"), std::string::npos);
  const std::string dup = R"({"format": "memd-state", "kind": "limits", "version": 1, "version": 1})";
  EXPECT_NE(refusal(parse_limits_state, dup).find("appears twice"), std::string::npos);
  EXPECT_NE(refusal(parse_limits_state, std::string(kMaxStateFileBytes + 1, ' ')).find("over the limit"),
            std::string::npos);
}

TEST(StateFormat, LimitsOfTheWrongTypeOrSizeOrWithBadOwnerNamesAreRefused) {
  const auto base = nlohmann::json::parse(format_limits_state({}, kNow));
  auto with = [&](const char* scope, const std::string& key, nlohmann::json value) {
    auto j = base;
    j[scope][key] = value;
    return refusal(parse_limits_state, j.dump());
  };
  // Wrong types.
  EXPECT_NE(with("perOwner", "a", "1GiB").find("perOwner['a']: expected a non-negative integer, found a string"),
            std::string::npos);
  EXPECT_NE(with("perDevice", "host:0", nullptr)
                .find("perDevice['host:0']: expected a non-negative integer, found null"),
            std::string::npos);
  EXPECT_NE(with("perMemoryType", "VRAM", true).find("found a boolean"), std::string::npos);
  {
    auto j = base;
    j["perOwner"] = nlohmann::json::array();
    EXPECT_NE(refusal(parse_limits_state, j.dump()).find("perOwner: expected an object, found an array"),
              std::string::npos);
  }
  // Huge values.
  EXPECT_NE(with("perOwner", "a", ~std::uint64_t{0}).find("over the largest value allowed here, 4611686018427387904"),
            std::string::npos);
  EXPECT_NE(with("perDevice", "host:0", kMaxRequestBytes + 1).find("over the largest"), std::string::npos);
  EXPECT_NE(with("perOwner", "a", 1e300).find("found a number with a fraction"), std::string::npos);
  EXPECT_NE(with("perOwner", "a", -5).find("negative"), std::string::npos);
  EXPECT_TRUE(with("perOwner", "a", kMaxRequestBytes).empty()) << "the largest limit memd_limits takes";
  // Owner names that break the owner rule (control characters, empty, too long).
  for (const std::string& owner : {std::string("bad\x01name"), std::string("tab\tname"), std::string(""),
                                   std::string(129, 'o'), std::string("rtl\xE2\x80\xAEname")}) {
    const auto why = with("perOwner", owner, 1);
    EXPECT_NE(why.find("perOwner['"), std::string::npos) << why;
    EXPECT_EQ(why.find('\x01'), std::string::npos) << "the message quotes it printably: " << why;
  }
  // Devices and memory types that are not ones.
  EXPECT_NE(with("perDevice", "gpu0", 1).find("perDevice['gpu0']: invalid device id"), std::string::npos);
  EXPECT_NE(with("perDevice", "host:-1", 1).find("bad index"), std::string::npos);
  EXPECT_NE(with("perMemoryType", "Unknown", 1).find("not a memory type that carries a limit"), std::string::npos);
  EXPECT_NE(with("perMemoryType", "HBM", 1).find("not a memory type"), std::string::npos);
  // Two spellings of one device.
  {
    auto j = base;
    j["perDevice"]["host:0"] = 1;
    j["perDevice"]["host:00"] = 2;
    EXPECT_NE(refusal(parse_limits_state, j.dump()).find("host:0 is named twice"), std::string::npos);
  }
  // Too many entries.
  {
    auto j = base;
    for (std::size_t i = 0; i <= kMaxStateOwners; ++i) j["perOwner"]["o" + std::to_string(i)] = 1;
    EXPECT_NE(refusal(parse_limits_state, j.dump()).find("more than the 65536 memd keeps"), std::string::npos);
  }
}

TEST(StateFormat, ModelsOfTheWrongShapeAreRefusedNamingTheField) {
  const auto base = nlohmann::json::parse(format_models_state(sample_models(), kNow));
  auto with = [&](const std::function<void(nlohmann::json&)>& change) {
    auto j = base;
    change(j);
    return refusal(parse_models_state, j.dump());
  };
  EXPECT_NE(with([](auto& j) { j["models"][1]["pinned"] = "yes"; }).find("models[1].pinned: expected true or false"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["files"][1]["sizeBytes"] = "big"; })
                .find("models[0].files[1].sizeBytes: expected a non-negative integer, found a string"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["files"][0]["mtimeNs"] = ~std::uint64_t{0}; })
                .find("models[0].files[0].mtimeNs: 18446744073709551615 is over the largest"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["keepAliveSeconds"] = 1e12; }).find("models[0].keepAliveSeconds"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["keepAliveSeconds"] = 100'000'000; })
                .find("models[0].keepAliveSeconds: 100000000 is over the largest value allowed here, 2592000"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["name"] = "../etc"; }).find("models[0].name:"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][1]["name"] = "sdxl:base"; }).find("model sdxl:base is named twice"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["path"] = "relative"; })
                .find("models[0].path: path 'relative' is not an absolute"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["path"] = std::string(5000, '/'); })
                .find("models[0].path: a string of 5000 bytes"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["deviceId"] = "tpu:0"; }).find("models[0].deviceId: invalid device id"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["dtype"] = "F128"; }).find("models[0].dtype: 'F128' is not a dtype"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["priority"] = "Urgent"; }).find("models[0].priority"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["files"] = nlohmann::json::array(); }).find("at least one file"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0].erase("lastUse"); }).find("models[0]: missing key \"lastUse\""),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["color"] = "red"; }).find("models[0]: unknown key 'color'"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"] = "all"; }).find("models: expected an array, found a string"),
            std::string::npos);
}

TEST(StateFormat, PredictorHistoriesOfTheWrongShapeAreRefused) {
  const auto base = nlohmann::json::parse(format_predictor_state(sample_history(), kNow));
  auto with = [&](const std::function<void(nlohmann::json&)>& change) {
    auto j = base;
    change(j);
    return refusal(parse_predictor_state, j.dump());
  };
  EXPECT_NE(with([](auto& j) { j["models"][0]["frequency"] = -1; }).find("models[0].frequency: -1 is outside"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["frequency"] = 1e300; }).find("models[0].frequency"), std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["successors"]["b"] = -3; }).find("models[0].successors['b']"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["successors"]["b c"] = 3; }).find("models[0].successors['b c']"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["models"][0]["lastUse"] = "2026-02-30T00:00:00Z"; }).find("models[0].lastUse"),
            std::string::npos);
  EXPECT_NE(with([](auto& j) { j["last"] = 7; }).find("last: expected a string"), std::string::npos);
  EXPECT_NE(with([](auto& j) {
              for (std::size_t i = 0; i <= kMaxStateSuccessors; ++i)
                j["models"][0]["successors"]["m" + std::to_string(i)] = 1;
            }).find("more than the 256 memd keeps"),
            std::string::npos);
}

TEST(StateFormat, TimesAreTheWiresUtcForm) {
  EXPECT_EQ(parse_iso8601("2026-01-01T00:00:00.123Z"), kNow);
  EXPECT_EQ(parse_iso8601("2026-01-01T00:00:00.123000000Z"), kNow);
  EXPECT_EQ(parse_iso8601("2026-01-01T00:00:00Z"), at_ms(1'767'225'600'000));
  EXPECT_EQ(parse_iso8601("2024-02-29T12:00:00Z").has_value(), true);
  EXPECT_EQ(parse_iso8601("2261-12-31T23:59:59.999999999Z").has_value(), true);
  for (const char* bad : {"2026-01-01T00:00:00", "2026-01-01 00:00:00Z", "2026-13-01T00:00:00Z",
                          "2025-02-29T00:00:00Z", "2026-01-01T24:00:00Z", "1999-01-01T00:00:00Z",
                          "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.1234567890Z", "+2026-01-01T00:00:00Z",
                          "2026-01-01T00:00:00+01:00", "",
                          // past what system_clock's int64 nanoseconds hold (found by fuzz_state_file)
                          "2262-04-12T00:00:00Z", "2433-01-01T00:00:00Z", "2999-12-31T23:59:59Z"})
    EXPECT_FALSE(parse_iso8601(bad)) << bad;
}

// ---- the store -------------------------------------------------------------------------

TEST(StateStore, LoadsWhatIsThereSetsABadFileAsideAndKeepsTheRest) {
  TempDir d;
  put(d.path / "limits.json", format_limits_state(sample_limits(), kNow));
  put(d.path / "predictor.json", format_predictor_state(sample_history(), kNow));
  const std::string bad = format_models_state(sample_models(), kNow).substr(0, 100);  // cut off by a crash
  put(d.path / "models.json", bad);
  // A write a crash interrupted, of newer limits: never read, removed.
  put(d.path / "limits.json.tmp.4242.7",
      R"({"format": "memd-state", "kind": "limits", "version": 1, "perOwner": {"x": 1}})");
  auto store = StateStore::open(d.path);
  ASSERT_TRUE(store) << store.error().message;
  const StateLoad loaded = (*store)->load();
  EXPECT_EQ(loaded.temporaries_removed, 1u);
  EXPECT_FALSE(fs::exists(d.path / "limits.json.tmp.4242.7"));
  ASSERT_TRUE(loaded.limits);
  EXPECT_EQ(*loaded.limits, sample_limits()) << "the whole file, not the leftover temporary";
  ASSERT_TRUE(loaded.predictor);
  EXPECT_EQ(*loaded.predictor, sample_history());
  EXPECT_FALSE(loaded.models);
  ASSERT_EQ(loaded.refused.size(), 1u);
  EXPECT_EQ(loaded.refused[0].file, d.path / "models.json");
  EXPECT_NE(loaded.refused[0].message.find("line "), std::string::npos) << loaded.refused[0].message;
  EXPECT_FALSE(fs::exists(d.path / "models.json"));
  ASSERT_FALSE(loaded.refused[0].set_aside_as.empty());
  EXPECT_TRUE(loaded.refused[0].set_aside_as.filename().string().starts_with("models.json.bad-"));
  EXPECT_EQ(slurp(loaded.refused[0].set_aside_as), bad) << "kept as it was, for a person to look at";
}

TEST(StateStore, AnEmptyDirectoryIsNoStateAndASecondStoreIsRefused) {
  TempDir d;
  auto store = StateStore::open(d.path);
  ASSERT_TRUE(store);
  const StateLoad loaded = (*store)->load();
  EXPECT_FALSE(loaded.limits);
  EXPECT_FALSE(loaded.models);
  EXPECT_FALSE(loaded.predictor);
  EXPECT_TRUE(loaded.refused.empty());
  auto second = StateStore::open(d.path);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::conflict);
  store->reset();
  EXPECT_TRUE(StateStore::open(d.path)) << "released with the first";
}

TEST(StateStore, WritesAConcernOnlyWhenItChangedAndNothingAfterClose) {
  TempDir d;
  std::atomic<std::uint64_t> generation{5};
  std::atomic<int> renders{0};
  std::string text = "v1";
  auto store = std::move(*StateStore::open(d.path));  // after what its concern reads
  const auto id = store->add({"c.json", [&] { return generation.load(); }, [&] {
                                ++renders;
                                return text;
                              }});
  ASSERT_TRUE(store->flush(id));
  EXPECT_EQ(renders, 0) << "unchanged since add(): nothing written";
  EXPECT_FALSE(fs::exists(d.path / "c.json"));
  generation = 6;
  ASSERT_TRUE(store->flush(id));
  EXPECT_EQ(slurp(d.path / "c.json"), "v1");
  ASSERT_TRUE(store->flush(id));
  EXPECT_EQ(renders, 1);
  EXPECT_EQ(store->writes(), 1u);
  // The flusher thread writes a change within its interval.
  store->start(std::chrono::milliseconds(10));
  text = "v2";
  generation = 7;
  for (int i = 0; i < 500 && slurp(d.path / "c.json") != "v2"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(slurp(d.path / "c.json"), "v2");
  // close() writes what changed, then nothing more.
  text = "v3";
  generation = 8;
  store->close();
  EXPECT_EQ(slurp(d.path / "c.json"), "v3");
  text = "v4";
  generation = 9;
  ASSERT_TRUE(store->flush(id));
  EXPECT_EQ(slurp(d.path / "c.json"), "v3");
}

TEST(StateStore, AFailedWriteIsRetriedAtTheNextFlush) {
  TempDir d;
  // Declared before the store: its destructor's last flush reads it.
  std::uint64_t generation = 0;
  auto store = std::move(*StateStore::open(d.path));
  const auto id = store->add({"c.json", [&] { return generation; }, [] { return std::string("x"); }});
  fs::create_directory(d.path / "c.json");  // the name taken: the rename fails
  fs::create_directory(d.path / "c.json" / "inside");
  generation = 1;
  EXPECT_FALSE(store->flush(id));
  EXPECT_EQ(store->write_failures(), 1u);
  fs::remove_all(d.path / "c.json");
  ASSERT_TRUE(store->flush(id)) << "the generation still counts as unwritten";
  EXPECT_EQ(slurp(d.path / "c.json"), "x");
}

}  // namespace
}  // namespace memd
