// protocol/action.hpp — what one entry of the action table is.
//
// An Action is everything memd knows about one operation: its stdio name, its
// REST routes, the parameters it takes (checked by the dispatcher before the
// handler runs, and rendered into docs/api.md and OpenAPI), an example, and
// the handler that calls MemoryService and encodes the result. Transports
// only translate their framing into (action, params, context) and back.
//
// Thread safety: actions are immutable; handlers are as thread-safe as
// MemoryService (fully).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"
#include "service/caller.hpp"

namespace memd {

class MemoryService;
class Params;

enum class HttpMethod { Get, Post, Put, Delete };
std::string_view to_string(HttpMethod method) noexcept;

// How a route carries its data. Json: params in path + query (GET/DELETE) or
// path + JSON body (POST/PUT). Binary: path + query, with the payload as an
// application/octet-stream body (upload) or response (download). EventStream:
// path + query; the handler only checks the subscription and the door then
// answers text/event-stream until the client goes (server/http/event_stream.hpp).
enum class RouteBody { Json, BinaryUpload, BinaryDownload, EventStream };

struct Route {
  HttpMethod method = HttpMethod::Get;
  std::string_view path;  // template: "/api/memory/allocations/{allocationId}"
  int success_status = 200;
  RouteBody body = RouteBody::Json;
  // True for a GET that must never change state (memory_limits reads).
  bool read_only = false;
};

// What a parameter accepts. Each kind has one reader in Params and one
// schema in OpenAPI (openapi.cpp); the two are kept equal by a schema-driven
// test (tests/protocol/schema_conformance_test.cpp).
enum class ParamKind {
  String, Size, Count, Boolean, StringList, DeviceId, AllocationId,
  MemoryType, AllocationType, AllocationStatus, Priority, Base64,
  AllocationSize,       // a Size of at least one byte
  AllocatableMemoryType,  // a MemoryType other than Unknown
  Owner,                // 1..128 bytes of UTF-8, no Cc/Cf (memd/owner_name.hpp)
  Name,                 // 0..256 characters
  Tag,                  // 1..128 characters
  SessionId,            // a GUID that memory_session_open answered
  JsonInteger,          // a JSON integer minimum..maximum, never its text (JSON bodies only)
  TransferId,           // a GUID that memory_transfer answered (a transfer's or a batch's)
  ExportId,             // a GUID that memory_export answered
  OomSnapshotId,        // a GUID an out_of_memory error named (memory_history_snapshot)
  OwnerList,            // an array of 1..maximum owners (the owner rule each)
  ObjectList,           // an array of 1..maximum objects, each checked against `items`
  EventKinds,           // comma-separated event kind names (monitor/event.hpp), at least one
  ModelName,            // 1..128 of [A-Za-z0-9._:-] (models/model_name.hpp)
  ModelPath,            // 1..1024 characters: a path under a --model-root
};
std::string_view to_string(ParamKind kind) noexcept;

struct ParamSpec {
  std::string_view name;
  ParamKind kind = ParamKind::String;
  bool required = false;
  std::string_view description;
  // Only over stdio (REST carries these as the octet-stream body).
  bool stdio_only = false;
  // Count, JsonInteger: the largest value accepted (0: kMaxWireBytes), and
  // the smallest.
  std::uint64_t maximum = 0;
  std::uint64_t minimum = 0;
  // JSON null is accepted and means something (limits' bytes: remove). Every
  // other key refuses null: absent is spelled by leaving the key out.
  bool nullable = false;
  // memory_limits' rule, published as OpenAPI `oneOf`: a body names exactly
  // one `scope` key together with every `scoped` key, or none of them (a read).
  bool scope = false;
  bool scoped = false;
  // Alternatives (memory_transfer: one transfer, or a batch): a body uses
  // exactly one alternative, and no key of another; `required` then means
  // required when its alternative is the one used. Published as OpenAPI
  // `oneOf`. Empty: the key belongs to every shape.
  std::string_view alternative;
  // ObjectList: the keys of each item (a static array of item_count specs).
  const ParamSpec* items = nullptr;
  std::size_t item_count = 0;
  // String: the only values accepted (a static array of choice_count
  // names, exact case), published as OpenAPI `enum`. None: any string.
  const std::string_view* choices = nullptr;
  std::size_t choice_count = 0;
};

// Who is calling and how. The caller (owner, admin, session) comes from the
// transport — the stdio host, or REST's bearer token and X-Memd-* headers
// (server/http/caller.hpp) — never from params, so a client cannot act as
// another by what it puts in a body. The service enforces what it may touch.
struct CallContext {
  Caller caller;
  std::optional<std::span<const std::byte>> payload;  // REST upload body
  bool binary_response = false;                       // REST download
  bool read_only = false;                             // the route only reads
};

struct Outcome {
  nlohmann::json result = nlohmann::json::object();
  std::optional<std::vector<std::byte>> bytes;  // a binary download's body
};

using ActionHandler = std::function<Result<Outcome>(MemoryService&, const Params&, const CallContext&)>;

struct Action {
  std::string_view name;         // "memory_allocate"
  std::string_view summary;      // one line, for docs and OpenAPI
  // No routes: a stdio-only action (memory_unsubscribe: over REST a
  // subscription is its connection, and closing it is the unsubscribe).
  std::vector<Route> routes;
  std::vector<ParamSpec> params;
  std::string_view example_params;  // JSON text
  std::string_view example_result;  // JSON text
  ActionHandler handler;
};

}  // namespace memd
