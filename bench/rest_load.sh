#!/usr/bin/env bash
# The REST door under issue 12's load, in one command: builds memd and
# memd-load in the release tree, then runs memd-load against a daemon it
# spawns: 10,000 idle keep-alive connections and 1,000 slow readers of four
# 256 MiB allocations held open while 16 clients run allocate/write/read/free
# cycles with byte checks for 60 s, with the issue's goals as checks
# (status p99 <= 5 ms kept alive, peak RSS - allocated <= 256 MiB,
# kept-alive p99 <= 2x fresh). Exit status is memd-load's: 0 when everything
# held, 1 otherwise (the report says what). docs/benchmarks.md, "REST door
# under load", has the figures and how to read them.
#
#   bash bench/rest_load.sh                         # this tree's server
#   MEMD=/work/h-old/build/release/tools/memd bash bench/rest_load.sh   # another server
#   bash bench/rest_load.sh --duration 10s          # extra memd-load flags
#
# Environment: BUILD (default build/release), MEMD (the daemon to spawn;
# default this tree's), JSON (report file; default rest_load.json), LOG (the
# daemon's stderr; default rest_load.memd.log).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build/release}
if [ ! -f "$build/CMakeCache.txt" ]; then cmake --preset release >/dev/null; fi
cmake --build "$build" -j "${MEMD_JOBS:-2}" --target memd memd-load >/dev/null
memd=${MEMD:-$build/tools/memd}
echo "rest_load: $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
     "daemon $memd ($(git -C "$(dirname "$memd")" rev-parse --short HEAD 2>/dev/null || echo '?'))" >&2
exec "$build/tools/memd-load" --spawn "$memd" --json "${JSON:-rest_load.json}" \
  --daemon-log "${LOG:-rest_load.memd.log}" \
  --max-status-p99 5ms --max-overhead 256MiB --max-keepalive-ratio 2 "$@"
