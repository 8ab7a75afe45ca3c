// tools/memd/api_client.hpp — the CLI's connection to a running daemon.
//
// One request per call over cpp-httplib; every failure (unreachable daemon,
// an error body, a non-JSON answer) comes back as a memd::Error whose message
// is fit to print as is.
//
// Thread safety: not thread-safe; the CLI is single-threaded.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"

namespace memd::cli {

struct ClientOptions {
  std::string url = "http://127.0.0.1:7870";
  std::string token;
  std::string owner;    // X-Memd-Owner, when set
  bool admin = false;   // X-Memd-Admin: true (--admin)
  std::string session;  // X-Memd-Session, when set
};

class ApiClient {
 public:
  explicit ApiClient(ClientOptions options) : options_(std::move(options)) {}

  Result<nlohmann::json> get(const std::string& target);
  Result<nlohmann::json> del(const std::string& target);
  Result<nlohmann::json> post(const std::string& target, const nlohmann::json& body);
  Result<nlohmann::json> put(const std::string& target, const nlohmann::json& body);

 private:
  Result<nlohmann::json> send(const std::string& method, const std::string& target,
                              const nlohmann::json* body);
  ClientOptions options_;
};

// "a b" → "a%20b": for ids and names placed in a path or query.
std::string url_encode(std::string_view text);

}  // namespace memd::cli
