/* memd/memd.h — the C ABI of libmemd: memd in your own process, from C or
 * any language with a C foreign-function interface (Python ctypes, C#
 * P/Invoke, Rust, Go).
 *
 * It is a thin layer over memd::Engine (memd/engine.hpp): the same engine,
 * checks and errors. Rules of the ABI:
 *   - Handles are opaque: a memd_engine* from memd_engine_open, valid until
 *     memd_engine_close. Allocations are named by value (memd_allocation_id,
 *     16 bytes), so a stale or bogus id is an error code, never a crash.
 *   - Every function that can fail returns a memd_status: MEMD_OK (0) or one
 *     code of memd's closed error list (the wire names in docs/api.md). Its
 *     message is then in memd_last_error_message(), per thread, until that
 *     thread's next failing call. No C++ exception crosses this boundary.
 *   - Null handles, null out-pointers and null data with a nonzero length are
 *     MEMD_INVALID_ARGUMENT; out-parameters are written only on MEMD_OK.
 *   - Structs passed in are read during the call only; nothing is retained.
 *
 * Thread safety: every function may be called from any thread, on one
 * engine from many threads at once, except that memd_engine_close must not
 * race other calls on the same engine.
 */
#ifndef MEMD_MEMD_H
#define MEMD_MEMD_H

#include <stddef.h>
#include <stdint.h>

#include "memd/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a struct or a signature here changes incompatibly. */
#define MEMD_ABI_VERSION 2

/* memd's closed error list (memd::ErrorCode), each code its C value + 1. */
typedef enum memd_status {
  MEMD_OK = 0,
  MEMD_INVALID_ARGUMENT = 1,
  MEMD_UNAUTHENTICATED = 2,
  MEMD_NOT_FOUND = 3,
  MEMD_CONFLICT = 4,
  MEMD_PAYLOAD_TOO_LARGE = 5,
  MEMD_OUT_OF_MEMORY = 6,
  MEMD_QUOTA_EXCEEDED = 7,
  MEMD_UNAVAILABLE = 8,
  MEMD_BACKEND_ERROR = 9,
  MEMD_INTERNAL = 10,
  MEMD_PERMISSION_DENIED = 11,
  MEMD_OUT_OF_RANGE = 12,
  MEMD_INVALID_FILE = 13,
  MEMD_METHOD_NOT_ALLOWED = 14,
  MEMD_URI_TOO_LONG = 15,
  MEMD_UNSUPPORTED_MEDIA_TYPE = 16,
  MEMD_RATE_LIMITED = 17 /* ABI 2 */
} memd_status;

/* memd's memory types (memd::MemoryType), same values. */
typedef enum memd_memory_type {
  MEMD_MEMORY_RAM = 1,
  MEMD_MEMORY_VRAM = 2,
  MEMD_MEMORY_SHARED = 3, /* pinned host memory */
  MEMD_MEMORY_UNIFIED = 4 /* CUDA managed memory */
} memd_memory_type;

typedef struct memd_engine memd_engine;

/* The most host devices an engine may have. */
#define MEMD_MAX_HOST_DEVICES 64

/* An allocation's id: a version-4 UUID, as on the wire. */
typedef struct memd_allocation_id {
  uint8_t bytes[16];
} memd_allocation_id;

/* Room for an id's text, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" and its NUL. */
#define MEMD_ALLOCATION_ID_TEXT 37

typedef struct memd_engine_options {
  /* host:0 .. host:N-1, host_device_sizes[i] bytes each (at least 2 MiB);
   * may be NULL when host_device_count is 0; at most MEMD_MAX_HOST_DEVICES. */
  const uint64_t* host_device_sizes;
  size_t host_device_count;
  /* Nonzero: every CUDA GPU found (when libmemd was built with CUDA). */
  int enable_cuda;
  /* Who this program's allocations belong to; NULL: "libmemd". */
  const char* owner;
  /* Client mode (ABI 2): a running daemon's socket; NULL or "": off. GPU
   * memory is then leased from that daemon under lease_token's owner (or
   * `owner` where the daemon has no tokens); see memd::EngineOptions. */
  const char* lease_socket;
  const char* lease_token;
} memd_engine_options;

typedef struct memd_allocate_request {
  uint64_t size_bytes;          /* > 0 */
  /* A memd_memory_type; 0 is taken as MEMD_MEMORY_VRAM. An int, not the
   * enum: any value a caller stores is defined, and others are refused. */
  int memory_type;
  /* "host:0", "cuda:1", "cpu"; NULL or "": the type's default device. */
  const char* device;
  /* Nonzero: never moved by defragmentation (keep raw pointers safely). */
  int pinned;
} memd_allocate_request;

/* One device's memory (memd::DeviceStats). */
typedef struct memd_stats {
  uint64_t total_bytes;
  uint64_t free_bytes;
  uint64_t reserved_bytes;
  uint64_t allocated_bytes;
  uint64_t allocations;
  uint64_t peak_allocated_bytes;
  double fragmentation;
} memd_stats;

/* MEMD_ABI_VERSION of the library loaded (compare with the header's). */
MEMD_API int memd_abi_version(void);
/* "0.1.0". */
MEMD_API const char* memd_version(void);
/* The wire name of a status ("not_found"), "ok" for MEMD_OK, "unknown" for
 * values outside the list (hence an int). Static storage. */
MEMD_API const char* memd_status_name(int status);
/* The message of this thread's last failing call; "" when none has failed.
 * Valid until this thread's next call into libmemd. */
MEMD_API const char* memd_last_error_message(void);

MEMD_API memd_status memd_engine_open(const memd_engine_options* options, memd_engine** out_engine);
/* Frees everything the engine still holds. NULL is a no-op. */
MEMD_API void memd_engine_close(memd_engine* engine);

MEMD_API memd_status memd_allocate(memd_engine* engine, const memd_allocate_request* request,
                          memd_allocation_id* out_id);
/* Unknown id, or freed already: MEMD_NOT_FOUND. */
MEMD_API memd_status memd_free(memd_engine* engine, memd_allocation_id id);
/* Where its bytes are (a host address on host:N and cpu, a device address on
 * cuda:N) and its size; either out-pointer may be NULL. */
MEMD_API memd_status memd_allocation_pointer(memd_engine* engine, memd_allocation_id id, void** out_pointer,
                                    uint64_t* out_size);
/* Bytes of this process to and from the allocation at `offset`; past its
 * end: MEMD_OUT_OF_RANGE. */
MEMD_API memd_status memd_write(memd_engine* engine, memd_allocation_id id, uint64_t offset, const void* data,
                       uint64_t size);
MEMD_API memd_status memd_read(memd_engine* engine, memd_allocation_id id, uint64_t offset, void* out, uint64_t size);

/* One device's statistics ("host:0"); NULL or "": every device summed
 * (fragmentation: the largest of them). */
MEMD_API memd_status memd_get_stats(memd_engine* engine, const char* device, memd_stats* out_stats);

/* ----- stream-ordered blocks (what an in-process allocator such as the
 * PyTorch shim uses; memd::Engine::allocate_async) -----
 * A stream of a GPU-like device, by value; its contents are memd's own. */
typedef struct memd_stream {
  uint64_t opaque[2];
} memd_stream;

/* One pool's live counters (memd::PoolUsage). */
typedef struct memd_pool_usage {
  uint64_t allocated_bytes;
  uint64_t reserved_bytes;
  uint64_t peak_allocated_bytes;
  uint64_t peak_reserved_bytes;
  uint64_t live_allocations;
  uint64_t stream_syncs; /* waits for the pool's home stream (ABI 2) */
} memd_pool_usage;

/* A new stream of `device` ("cuda:0", "host:0"). */
MEMD_API memd_status memd_stream_create(memd_engine* engine, const char* device, memd_stream* out_stream);
/* A stream made elsewhere in this process (a cudaStream_t, NULL for the
 * legacy default stream): memd orders its blocks by it. A host device:
 * MEMD_UNAVAILABLE. */
MEMD_API memd_status memd_stream_adopt(memd_engine* engine, const char* device, void* native_stream,
                                       memd_stream* out_stream);
/* Destroys a stream memd_stream_create made (after its work is done), or
 * forgets an adopted one (its maker destroys it). Unknown: MEMD_NOT_FOUND. */
MEMD_API memd_status memd_stream_destroy(memd_engine* engine, memd_stream stream);
/* A block of `size` (> 0) bytes of VRAM on the stream's device, usable in
 * order on `stream` (reused at once by later allocations on it, by other
 * streams only once the free has completed). */
MEMD_API memd_status memd_allocate_async(memd_engine* engine, uint64_t size, memd_stream stream,
                                         void** out_pointer);
/* Frees a block from memd_allocate_async, in order on `stream`. Anything else
 * (NULL, a double free, another pointer): MEMD_INVALID_ARGUMENT. */
MEMD_API memd_status memd_free_async(memd_engine* engine, void* pointer, memd_stream stream);
/* Gives back every pool's free memory (client mode: its leases); the bytes
 * given back into *out_released (may be NULL). */
MEMD_API memd_status memd_trim(memd_engine* engine, uint64_t* out_released);
/* The VRAM pool of `device` ("cuda:0"): its live counters. */
MEMD_API memd_status memd_get_pool_usage(memd_engine* engine, const char* device, memd_pool_usage* out_usage);

/* The id as text into `out` (at least MEMD_ALLOCATION_ID_TEXT bytes). */
MEMD_API memd_status memd_allocation_id_format(memd_allocation_id id, char* out, size_t out_size);
/* Text → id; anything but the 8-4-4-4-12 form: MEMD_INVALID_ARGUMENT. */
MEMD_API memd_status memd_allocation_id_parse(const char* text, memd_allocation_id* out_id);

/* ----- regions: pools that sleep and wake (memd::Engine::create_region) -----
 * A named VRAM pool of its own on a GPU-like device. Sleeping gives its
 * device memory back, its contents copied to pinned host memory with a
 * checksum (or dropped), and keeps every address reserved; waking maps
 * memory again at the same addresses and copies the contents back once the
 * checksum matches (else MEMD_INTERNAL, and it stays asleep). The caller
 * stops the device work that uses the region before sleeping. Blocks of a
 * region are freed with memd_free_async like any other. A region, by
 * value; its contents are memd's own (a made-up one: MEMD_NOT_FOUND or
 * MEMD_INVALID_ARGUMENT). */
typedef struct memd_region {
  uint64_t opaque[2];
} memd_region;

typedef struct memd_sleep_report {
  uint64_t bytes;     /* device bytes given back */
  uint64_t units;     /* mapping units unmapped */
  double seconds;     /* the whole call */
  int kept_contents;  /* 0: the contents were dropped */
} memd_sleep_report;

typedef struct memd_wake_report {
  uint64_t bytes;     /* device bytes mapped again */
  uint64_t units;
  double seconds;     /* the whole call: checksums, maps, copies, host copy freed */
  int kept_contents;  /* 1: the contents came back, checked */
} memd_wake_report;

/* A region `name` (1-128 bytes) on `device` ("cuda:0"); the name taken on
 * that device: MEMD_CONFLICT. */
MEMD_API memd_status memd_region_create(memd_engine* engine, const char* device, const char* name,
                                        memd_region* out_region);
/* A block of `size` (> 0) bytes from the region, in order on `stream` (a
 * stream of the region's device). Asleep: MEMD_UNAVAILABLE. */
MEMD_API memd_status memd_region_allocate_async(memd_engine* engine, memd_region region, uint64_t size,
                                                memd_stream stream, void** out_pointer);
/* keep_contents 0 drops the contents (wake gives fresh memory). Asleep
 * already: MEMD_CONFLICT. out_report may be NULL. */
MEMD_API memd_status memd_region_sleep(memd_engine* engine, memd_region region, int keep_contents,
                                       memd_sleep_report* out_report);
/* Awake already: MEMD_CONFLICT. out_report may be NULL. */
MEMD_API memd_status memd_region_wake(memd_engine* engine, memd_region region, memd_wake_report* out_report);
/* The region's live counters (reserved_bytes 0 while asleep); out_asleep
 * (may be NULL) gets 1 while it sleeps. */
MEMD_API memd_status memd_region_usage(memd_engine* engine, memd_region region, memd_pool_usage* out_usage,
                                       int* out_asleep);

#ifdef __cplusplus
}
#endif

#endif /* MEMD_MEMD_H */
