// The JSON-lines loop: framing only; the action table does the work.
#include "server/stdio/stdio_server.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "protocol/action_table.hpp"
#include "protocol/actions/event_actions.hpp"
#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"
#include "protocol/params.hpp"
#include "server/stdio/event_lines.hpp"
#include "server/stdio/line_reader.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

std::string error_response(const nlohmann::json& id, const Error& error) {
  return to_wire_text({{"id", id}, {"ok", false}, {"error", error_object(error)}});
}

// The answer to one line, recording in `answer` what the door may act on.
std::string answer_line(MemoryService& service, std::string_view line, const Caller& caller, StdioAnswer& answer);

bool is_subscription_action(const Action* action) {
  return action != nullptr && (action->name == "memory_subscribe" || action->name == "memory_unsubscribe");
}

}  // namespace

std::string stdio_too_long_response(std::uint64_t max_line) {
  return error_response(nullptr, Error{ErrorCode::payload_too_large,
                                       fmt::format("line longer than {} bytes", max_line)});
}

std::string handle_stdio_line(MemoryService& service, std::string_view line, const std::string& owner) {
  // The host owns the engine it spawned: it is the admin, acting as its owner.
  return handle_stdio_line(service, line, Caller::host(owner));
}

std::string handle_stdio_line(MemoryService& service, std::string_view line, const Caller& caller) {
  return answer_stdio_line(service, line, caller).text;
}

StdioAnswer answer_stdio_line(MemoryService& service, std::string_view line, const Caller& caller) {
  StdioAnswer answer;
  answer.text = answer_line(service, line, caller, answer);
  return answer;
}

namespace {

std::string answer_line(MemoryService& service, std::string_view line, const Caller& caller, StdioAnswer& answer) {
  try {
    auto request = parse_request_json(line);
    if (!request) return error_response(nullptr, request.error());
    if (!request->is_object())
      return error_response(nullptr, Error{ErrorCode::invalid_argument, "a request must be a JSON object"});
    // The id is the host's to choose: any JSON value comes back as given
    // (a missing id as null), so a host can correlate with whatever it uses.
    nlohmann::json id = nullptr;
    if (auto it = request->find("id"); it != request->end()) id = *it;
    auto action_it = request->find("action");
    if (action_it == request->end() || action_it->is_null())
      return error_response(id, Error{ErrorCode::invalid_argument, "missing 'action'"});
    if (!action_it->is_string())
      return error_response(id, Error{ErrorCode::invalid_argument, "'action' must be a string"});
    const auto& name = action_it->get_ref<const std::string&>();
    const Action* action = find_action(name);
    if (action == nullptr)
      return error_response(id, Error{ErrorCode::not_found, fmt::format("unknown action '{}'", name)});
    nlohmann::json params = nlohmann::json::object();
    if (auto p = request->find("params"); p != request->end() && !p->is_null()) {
      if (!p->is_object())
        return error_response(id, Error{ErrorCode::invalid_argument, "'params' must be a JSON object"});
      params = std::move(*p);
    }
    // "session" (beside "params") is what X-Memd-Session is to REST; it
    // replaces the caller's own (the bridge sends its session as a header).
    CallContext context;
    context.caller = caller;
    if (auto it = request->find("session"); it != request->end() && !it->is_null()) {
      if (!it->is_string())
        return error_response(id, Error{ErrorCode::invalid_argument, "'session' must be a session id string"});
      auto session = SessionId::parse(it->get_ref<const std::string&>());
      if (!session) return error_response(id, session.error());
      context.caller.session = *session;
    }
    answer.action = action;
    auto outcome = dispatch(service, *action, params, context);
    if (!outcome) return error_response(id, outcome.error());
    answer.ok = true;
    if (is_subscription_action(action)) {
      answer.params = std::move(params);
      answer.result = outcome->result;
    }
    return to_wire_text({{"id", id}, {"ok", true}, {"result", std::move(outcome->result)}});
  } catch (const std::exception& e) {
    // The protocol layer already turns its failures into values; this is the
    // last line so that no line can end the loop.
    return error_response(nullptr, Error{ErrorCode::internal, e.what()});
  }
}

}  // namespace

int serve_lines(const StdioOptions& options, int in_fd, int out_fd, const LineAnswer& answer) {
  LineWriter out(out_fd);
  return serve_lines(options, in_fd, out,
                     [&](std::string_view line, LineWriter& writer) { return writer.write_line(answer(line)); });
}

int serve_lines(const StdioOptions& options, int in_fd, LineWriter& out, const LineHandler& handle) {
  LineReader reader(in_fd, static_cast<std::size_t>(options.max_line));
  std::string line;
  for (;;) {
    const auto status = reader.next(line);
    if (status == LineReader::Status::Eof) return out.failed() ? 1 : 0;
    if (status == LineReader::Status::Error) {
      spdlog::error("memd stdio: reading stdin failed: {}", std::strerror(errno));
      return 1;
    }
    bool written = true;
    if (status == LineReader::Status::TooLong) {
      written = out.write_line(stdio_too_long_response(options.max_line));
    } else {
      if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines are no requests
      written = handle(line, out);
    }
    if (!written || out.failed()) {
      spdlog::error("memd stdio: writing stdout failed; stopping");
      return 1;
    }
  }
}

int run_stdio(MemoryService& service, const StdioOptions& options, int in_fd, int out_fd) {
  const std::string owner =
      options.owner.empty() ? "stdio-" + std::to_string(::getpid()) : options.owner;
  spdlog::info("memd stdio: serving owner '{}' (max line {} bytes)", owner, options.max_line);
  const Caller caller = Caller::host(owner);
  LineWriter out(out_fd);
  int exit_code = 0;
  {
    EventLinePump events(service.events(), out);
    exit_code = serve_lines(options, in_fd, out, [&](std::string_view line, LineWriter& writer) {
      StdioAnswer answer = answer_stdio_line(service, line, caller);
      if (!answer.ok || !is_subscription_action(answer.action)) return writer.write_line(answer.text);
      // The subscription changes and its answer is written under one hold of
      // the output: no event of the old filter after it, none of the new before.
      auto hold = writer.hold();
      if (answer.action->name == "memory_unsubscribe") {
        events.unsubscribe();
      } else if (auto request = subscription_request(Params(answer.params)); request) {
        events.subscribe(request->filter,
                         request->last_event_id.value_or(answer.result.value("lastSequence", std::uint64_t{0})));
      }
      return writer.write_line_held(answer.text);
    });
  }
  const auto freed = service.release_owner(owner);
  std::uint64_t bytes = 0;
  for (const auto& r : freed) bytes += r.size_bytes;
  spdlog::info("memd stdio: end of input; released {} allocations ({} bytes) of '{}'", freed.size(),
               bytes, owner);
  return exit_code;
}

}  // namespace memd
