#include "memd/version.hpp"

namespace memd {
std::string_view version() noexcept { return MEMD_VERSION_STRING; }
}
