// memd/version.hpp — the library version, for --version and /healthz.
#pragma once

#include <string_view>

namespace memd {
std::string_view version() noexcept;
}
