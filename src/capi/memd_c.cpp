// capi/memd_c.cpp — the C ABI (memd/memd.h) over memd::Engine.
//
// Each function checks what C can get wrong (null handles and pointers, a
// memory type outside the enum, a device string that does not parse), calls
// the Engine, and turns its Error into a status and this thread's last-error
// message. Every entry point catches everything: an exception (bad_alloc
// from a std::string, say) must not unwind into a C caller, where it is
// undefined behaviour.
#include "memd/memd.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>

#include "memd/engine.hpp"
#include "memd/error.hpp"
#include "memd/version.hpp"

struct memd_engine {
  memd::Engine engine;
};

namespace {

thread_local std::string last_error;

// The enum's values are fixed by the header; the closed list may only grow
// at its end, and each new code needs its MEMD_* value there.
static_assert(std::size(memd::kAllErrorCodes) == MEMD_RATE_LIMITED,
              "memd.h's memd_status must list every memd::ErrorCode");

memd_status status_of(memd::ErrorCode code) { return static_cast<memd_status>(static_cast<int>(code) + 1); }

memd_status failed(const memd::Error& error) {
  last_error = error.message;
  return status_of(error.code);
}

memd_status failed(memd::ErrorCode code, const char* message) {
  last_error = message;
  return status_of(code);
}

// Runs `body` (which returns a memd_status), turning any exception into one.
template <typename Body>
memd_status guarded(Body&& body) noexcept {
  try {
    return std::forward<Body>(body)();
  } catch (const std::bad_alloc&) {
    try {
      last_error = "out of host memory in libmemd";
    } catch (...) {
    }
    return MEMD_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    try {
      last_error = std::string("libmemd internal error: ") + e.what();
    } catch (...) {
    }
    return MEMD_INTERNAL;
  } catch (...) {
    return MEMD_INTERNAL;
  }
}

memd::AllocationId id_of(const memd_allocation_id& id) {
  // AllocationId is built only by parse() or generate(); the 16 bytes go
  // through its text form, the one constructor the public type has.
  static constexpr char kHex[] = "0123456789abcdef";
  std::array<char, 36> text{};
  std::size_t at = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) text[at++] = '-';
    text[at++] = kHex[id.bytes[i] >> 4];
    text[at++] = kHex[id.bytes[i] & 0xF];
  }
  return *memd::AllocationId::parse(std::string_view(text.data(), text.size()));
}

memd_allocation_id c_id(const memd::AllocationId& id) {
  memd_allocation_id out;
  std::memcpy(out.bytes, id.bytes().data(), sizeof out.bytes);
  return out;
}

// memd_stream's two words: the device (kind in the high 32 bits, index in
// the low) and the backend's stream handle. A value C made up is refused
// by the checks below or by the backend (unknown handle: not_found).
memd_stream stream_of(const memd::StreamHandle& s) {
  memd_stream out{};
  out.opaque[0] = (static_cast<std::uint64_t>(s.device.kind()) << 32) | static_cast<std::uint32_t>(s.device.index());
  out.opaque[1] = s.handle;
  return out;
}

memd::Result<memd::StreamHandle> handle_of(const memd_stream& s) {
  const auto kind = s.opaque[0] >> 32;
  const auto index = static_cast<std::uint32_t>(s.opaque[0]);
  if (kind != static_cast<std::uint64_t>(memd::DeviceKind::Cuda) && kind != static_cast<std::uint64_t>(memd::DeviceKind::Host))
    return memd::fail(memd::ErrorCode::invalid_argument, "not a memd_stream: its device is neither cuda:N nor host:N");
  if (index > 1024) return memd::fail(memd::ErrorCode::invalid_argument, "not a memd_stream: device index {}", index);
  return memd::StreamHandle{memd::DeviceId(static_cast<memd::DeviceKind>(kind), static_cast<int>(index)), s.opaque[1]};
}

}  // namespace

namespace {

// memd_region's two words: the device, as in memd_stream, and the engine's
// region id; the engine refuses ids it did not make.
memd_region region_of(const memd::RegionHandle& r) {
  memd_region out{};
  out.opaque[0] = stream_of(memd::StreamHandle{r.device, 0}).opaque[0];
  out.opaque[1] = r.id;
  return out;
}

memd::Result<memd::RegionHandle> region_handle_of(const memd_region& r) {
  memd_stream as_stream{};
  as_stream.opaque[0] = r.opaque[0];
  auto s = handle_of(as_stream);
  if (!s) return memd::fail(memd::ErrorCode::invalid_argument, "not a memd_region: its device is neither cuda:N nor host:N");
  if (r.opaque[1] == 0) return memd::fail(memd::ErrorCode::invalid_argument, "not a memd_region: region id 0");
  return memd::RegionHandle{s->device, r.opaque[1]};
}

}  // namespace

extern "C" {

int memd_abi_version(void) { return MEMD_ABI_VERSION; }

const char* memd_version(void) {
  // version() views a string literal: NUL-terminated, static storage.
  return memd::version().data();
}

const char* memd_status_name(int status) {
  if (status == MEMD_OK) return "ok";
  const int index = status - 1;
  if (index < 0 || index >= static_cast<int>(std::size(memd::kAllErrorCodes))) return "unknown";
  // Wire names are string literals: NUL-terminated, static storage.
  return memd::to_string(memd::kAllErrorCodes[index]).data();
}

const char* memd_last_error_message(void) { return last_error.c_str(); }

memd_status memd_engine_open(const memd_engine_options* options, memd_engine** out_engine) {
  return guarded([&] {
    if (options == nullptr || out_engine == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_engine_open: options and out_engine must not be NULL");
    if (options->host_device_count > 0 && options->host_device_sizes == nullptr)
      return failed(memd::ErrorCode::invalid_argument,
                    "memd_engine_open: host_device_sizes is NULL but host_device_count is not 0");
    // Checked before reading the array: a count past the limit is refused
    // without touching memory the caller may not own.
    if (options->host_device_count > MEMD_MAX_HOST_DEVICES)
      return failed(memd::ErrorCode::invalid_argument,
                    "memd_engine_open: host_device_count is over MEMD_MAX_HOST_DEVICES (64)");
    memd::EngineOptions engine_options;
    engine_options.host_device_sizes.assign(options->host_device_sizes,
                                            options->host_device_sizes + options->host_device_count);
    engine_options.enable_cuda = options->enable_cuda != 0;
    if (options->owner != nullptr) engine_options.owner = options->owner;
    if (options->lease_socket != nullptr) engine_options.lease_socket = options->lease_socket;
    if (options->lease_token != nullptr) engine_options.lease_token = options->lease_token;
    auto engine = memd::Engine::open(engine_options);
    if (!engine) return failed(engine.error());
    *out_engine = new memd_engine{std::move(*engine)};
    return MEMD_OK;
  });
}

void memd_engine_close(memd_engine* engine) {
  // Destruction is noexcept; nothing to guard.
  delete engine;
}

memd_status memd_allocate(memd_engine* engine, const memd_allocate_request* request, memd_allocation_id* out_id) {
  return guarded([&] {
    if (engine == nullptr || request == nullptr || out_id == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_allocate: engine, request and out_id must not be NULL");
    memd::AllocateOptions options;
    options.size_bytes = request->size_bytes;
    const int type = request->memory_type == 0 ? MEMD_MEMORY_VRAM : request->memory_type;
    auto memory_type = memd::memory_type_from_int(type);
    if (!memory_type || *memory_type == memd::MemoryType::Unknown)
      return failed(memd::ErrorCode::invalid_argument, "memd_allocate: memory_type is not a memd_memory_type");
    options.memory_type = *memory_type;
    if (request->device != nullptr && request->device[0] != '\0') {
      auto device = memd::DeviceId::parse(request->device);
      if (!device) return failed(device.error());
      options.device = *device;
    }
    options.pinned = request->pinned != 0;
    auto made = engine->engine.allocate(options);
    if (!made) return failed(made.error());
    *out_id = c_id(made->id);
    return MEMD_OK;
  });
}

memd_status memd_free(memd_engine* engine, memd_allocation_id id) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_free: engine is NULL");
    auto freed = engine->engine.free(id_of(id));
    return freed ? MEMD_OK : failed(freed.error());
  });
}

memd_status memd_allocation_pointer(memd_engine* engine, memd_allocation_id id, void** out_pointer,
                                    uint64_t* out_size) {
  return guarded([&] {
    if (engine == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_allocation_pointer: engine is NULL");
    auto info = engine->engine.allocation(id_of(id));
    if (!info) return failed(info.error());
    if (out_pointer != nullptr) *out_pointer = info->pointer;
    if (out_size != nullptr) *out_size = info->size_bytes;
    return MEMD_OK;
  });
}

memd_status memd_write(memd_engine* engine, memd_allocation_id id, uint64_t offset, const void* data,
                       uint64_t size) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_write: engine is NULL");
    if (data == nullptr && size != 0)
      return failed(memd::ErrorCode::invalid_argument, "memd_write: data is NULL but size is not 0");
    auto written = engine->engine.write(id_of(id), offset,
                                        std::span(static_cast<const std::byte*>(data), static_cast<std::size_t>(size)));
    return written ? MEMD_OK : failed(written.error());
  });
}

memd_status memd_read(memd_engine* engine, memd_allocation_id id, uint64_t offset, void* out, uint64_t size) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_read: engine is NULL");
    if (out == nullptr && size != 0)
      return failed(memd::ErrorCode::invalid_argument, "memd_read: out is NULL but size is not 0");
    auto read = engine->engine.read(id_of(id), offset,
                                    std::span(static_cast<std::byte*>(out), static_cast<std::size_t>(size)));
    return read ? MEMD_OK : failed(read.error());
  });
}

memd_status memd_get_stats(memd_engine* engine, const char* device, memd_stats* out_stats) {
  return guarded([&] {
    if (engine == nullptr || out_stats == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_get_stats: engine and out_stats must not be NULL");
    std::optional<memd::DeviceId> one;
    if (device != nullptr && device[0] != '\0') {
      auto parsed = memd::DeviceId::parse(device);
      if (!parsed) return failed(parsed.error());
      one = *parsed;
    }
    auto stats = engine->engine.stats(one);
    if (!stats) return failed(stats.error());
    memd_stats out{};
    for (const auto& s : *stats) {
      out.total_bytes += s.total_bytes;
      out.free_bytes += s.free_bytes;
      out.reserved_bytes += s.reserved_bytes;
      out.allocated_bytes += s.allocated_bytes;
      out.allocations += s.allocations;
      out.peak_allocated_bytes += s.peak_allocated_bytes;
      out.fragmentation = std::max(out.fragmentation, s.fragmentation);
    }
    *out_stats = out;
    return MEMD_OK;
  });
}

memd_status memd_stream_create(memd_engine* engine, const char* device, memd_stream* out_stream) {
  return guarded([&] {
    if (engine == nullptr || device == nullptr || out_stream == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_stream_create: engine, device and out_stream must not be NULL");
    auto parsed = memd::DeviceId::parse(device);
    if (!parsed) return failed(parsed.error());
    auto made = engine->engine.create_stream(*parsed);
    if (!made) return failed(made.error());
    *out_stream = stream_of(*made);
    return MEMD_OK;
  });
}

memd_status memd_stream_adopt(memd_engine* engine, const char* device, void* native_stream, memd_stream* out_stream) {
  return guarded([&] {
    if (engine == nullptr || device == nullptr || out_stream == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_stream_adopt: engine, device and out_stream must not be NULL");
    auto parsed = memd::DeviceId::parse(device);
    if (!parsed) return failed(parsed.error());
    auto adopted = engine->engine.adopt_stream(*parsed, native_stream);
    if (!adopted) return failed(adopted.error());
    *out_stream = stream_of(*adopted);
    return MEMD_OK;
  });
}

memd_status memd_stream_destroy(memd_engine* engine, memd_stream stream) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_stream_destroy: engine is NULL");
    auto s = handle_of(stream);
    if (!s) return failed(s.error());
    auto done = engine->engine.destroy_stream(*s);
    return done ? MEMD_OK : failed(done.error());
  });
}

memd_status memd_allocate_async(memd_engine* engine, uint64_t size, memd_stream stream, void** out_pointer) {
  return guarded([&] {
    if (engine == nullptr || out_pointer == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_allocate_async: engine and out_pointer must not be NULL");
    auto s = handle_of(stream);
    if (!s) return failed(s.error());
    auto block = engine->engine.allocate_async(size, *s);
    if (!block) return failed(block.error());
    *out_pointer = *block;
    return MEMD_OK;
  });
}

memd_status memd_free_async(memd_engine* engine, void* pointer, memd_stream stream) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_free_async: engine is NULL");
    auto s = handle_of(stream);
    if (!s) return failed(s.error());
    auto freed = engine->engine.free_async(pointer, *s);
    return freed ? MEMD_OK : failed(freed.error());
  });
}

memd_status memd_trim(memd_engine* engine, uint64_t* out_released) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_trim: engine must not be NULL");
    const auto released = engine->engine.trim();
    if (out_released != nullptr) *out_released = released;
    return MEMD_OK;
  });
}

memd_status memd_get_pool_usage(memd_engine* engine, const char* device, memd_pool_usage* out_usage) {
  return guarded([&] {
    if (engine == nullptr || device == nullptr || out_usage == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_get_pool_usage: engine, device and out_usage must not be NULL");
    auto parsed = memd::DeviceId::parse(device);
    if (!parsed) return failed(parsed.error());
    auto usage = engine->engine.pool_usage(*parsed);
    if (!usage) return failed(usage.error());
    *out_usage = {usage->allocated_bytes, usage->reserved_bytes, usage->peak_allocated_bytes,
                  usage->peak_reserved_bytes, usage->live_allocations, usage->stream_syncs};
    return MEMD_OK;
  });
}

memd_status memd_allocation_id_format(memd_allocation_id id, char* out, size_t out_size) {
  return guarded([&] {
    if (out == nullptr || out_size < MEMD_ALLOCATION_ID_TEXT)
      return failed(memd::ErrorCode::invalid_argument,
                    "memd_allocation_id_format: out needs MEMD_ALLOCATION_ID_TEXT (37) bytes");
    const std::string text = id_of(id).to_string();
    std::memcpy(out, text.c_str(), text.size() + 1);
    return MEMD_OK;
  });
}

memd_status memd_allocation_id_parse(const char* text, memd_allocation_id* out_id) {
  return guarded([&] {
    if (text == nullptr || out_id == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_allocation_id_parse: text and out_id must not be NULL");
    auto id = memd::AllocationId::parse(text);
    if (!id) return failed(id.error());
    *out_id = c_id(*id);
    return MEMD_OK;
  });
}

// ----- regions -----

memd_status memd_region_create(memd_engine* engine, const char* device, const char* name, memd_region* out_region) {
  return guarded([&] {
    if (engine == nullptr || device == nullptr || name == nullptr || out_region == nullptr)
      return failed(memd::ErrorCode::invalid_argument,
                    "memd_region_create: engine, device, name and out_region must not be NULL");
    auto parsed = memd::DeviceId::parse(device);
    if (!parsed) return failed(parsed.error());
    auto made = engine->engine.create_region(*parsed, name);
    if (!made) return failed(made.error());
    *out_region = region_of(*made);
    return MEMD_OK;
  });
}

memd_status memd_region_allocate_async(memd_engine* engine, memd_region region, uint64_t size, memd_stream stream,
                                       void** out_pointer) {
  return guarded([&] {
    if (engine == nullptr || out_pointer == nullptr)
      return failed(memd::ErrorCode::invalid_argument,
                    "memd_region_allocate_async: engine and out_pointer must not be NULL");
    auto r = region_handle_of(region);
    if (!r) return failed(r.error());
    auto s = handle_of(stream);
    if (!s) return failed(s.error());
    auto block = engine->engine.allocate_async(size, *s, *r);
    if (!block) return failed(block.error());
    *out_pointer = *block;
    return MEMD_OK;
  });
}

memd_status memd_region_sleep(memd_engine* engine, memd_region region, int keep_contents,
                              memd_sleep_report* out_report) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_region_sleep: engine is NULL");
    auto r = region_handle_of(region);
    if (!r) return failed(r.error());
    auto slept = engine->engine.sleep_region(*r, keep_contents != 0);
    if (!slept) return failed(slept.error());
    if (out_report != nullptr)
      *out_report = {slept->bytes, slept->units, slept->seconds, slept->kept_contents ? 1 : 0};
    return MEMD_OK;
  });
}

memd_status memd_region_wake(memd_engine* engine, memd_region region, memd_wake_report* out_report) {
  return guarded([&] {
    if (engine == nullptr) return failed(memd::ErrorCode::invalid_argument, "memd_region_wake: engine is NULL");
    auto r = region_handle_of(region);
    if (!r) return failed(r.error());
    auto woken = engine->engine.wake_region(*r);
    if (!woken) return failed(woken.error());
    if (out_report != nullptr)
      *out_report = {woken->bytes, woken->units, woken->seconds, woken->kept_contents ? 1 : 0};
    return MEMD_OK;
  });
}

memd_status memd_region_usage(memd_engine* engine, memd_region region, memd_pool_usage* out_usage, int* out_asleep) {
  return guarded([&] {
    if (engine == nullptr || out_usage == nullptr)
      return failed(memd::ErrorCode::invalid_argument, "memd_region_usage: engine and out_usage must not be NULL");
    auto r = region_handle_of(region);
    if (!r) return failed(r.error());
    auto usage = engine->engine.region_usage(*r);
    if (!usage) return failed(usage.error());
    auto asleep = engine->engine.region_asleep(*r);
    if (!asleep) return failed(asleep.error());
    *out_usage = {usage->allocated_bytes, usage->reserved_bytes, usage->peak_allocated_bytes,
                  usage->peak_reserved_bytes, usage->live_allocations};
    if (out_asleep != nullptr) *out_asleep = *asleep ? 1 : 0;
    return MEMD_OK;
  });
}

}  // extern "C"
