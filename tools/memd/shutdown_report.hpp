// tools/memd/shutdown_report.hpp — what `memd serve` frees when it stops.
//
// A daemon that is told to stop still holds its clients' allocations; they
// are freed with it. Saying so in the log (one summary line, then one line
// per owner naming its allocations) lets an operator see whose memory went
// away, and why a client's next call finds its ids gone.
//
// Thread safety: call once, after the server has stopped serving.
#pragma once

namespace memd {
class MemoryService;
}

namespace memd::cli {

// Logs (info) and frees every live allocation, owner by owner.
void release_at_shutdown(MemoryService& service);

}  // namespace memd::cli
