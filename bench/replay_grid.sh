#!/usr/bin/env bash
# The host replay grid behind issue 11's footprint and churn bars, exact
# counts (no timing is judged here).
#   bench/replay_grid.sh exact OUT [memd-replay flags]  one line per replay: trace, ratio, device calls,
#                                                       map calls (units), unmap calls (units); plain, 9 scales,
#                                                       5 prefixes and the crossed grid. Diff two OUTs to show
#                                                       a change moved no ratio and no count.
#   bench/replay_grid.sh summary [memd-replay flags]    per configuration (passes 1/5, jitter 0/0.1, plain/scales/
#                                                       prefixes): worst ratio, how many above 1.05, and map+unmap
#                                                       calls of the later passes per pass against the first.
# Traces: ../shared/traces and bench/traces. REPLAY=path overrides the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${REPLAY:-build/release/tools/memd-replay}
T=(../shared/traces/*.gz bench/traces/*.gz)
S=0.5,0.6,0.7,0.8,0.9,1.1,1.25,1.5,2
P=0.2,0.3,0.5,0.7,0.9
mode=${1:-summary}; shift || true
if [[ $mode == exact ]]; then
  out=$1; shift
  : > "$out"
  for args in "" "--scale $S" "--prefix $P" "--scale 0.5,0.8,1.25,2 --prefix 0.2,0.5,0.9"; do
    # shellcheck disable=SC2086
    MEMD_REPLAY_DEBUG=1 "$R" --json "$@" $args "${T[@]}" 2>&1 | python3 -c '
import json, sys
d = None
for l in sys.stdin:
    if l.startswith("{"):
        j = json.loads(l); print(j["trace"], "%.4f" % j["footprint_ratio"], j["device_calls"], d); d = None
    elif "map calls" in l: d = l.split(": ", 1)[1].strip()
    else: print("OTHER", l.strip())' >> "$out"
  done
  wc -l "$out"
  exit 0
fi
for jitter in 0 0.1; do
  for args in "" "--scale $S" "--prefix $P" "--scale 0.5,0.8,1.25,2 --prefix 0.2,0.5,0.9"; do
    for passes in 1 5; do
      [[ $jitter != 0 && $passes == 1 ]] && continue
      # shellcheck disable=SC2086
      "$R" --json --passes $passes --jitter $jitter "$@" $args "${T[@]}" 2>/dev/null | python3 -c '
import json, sys
rs = [json.loads(l) for l in sys.stdin]
w = max(rs, key=lambda r: r["footprint_ratio"])
first = sum(r.get("map_calls_first", 0) + r.get("unmap_calls_first", 0) for r in rs)
later = sum(r.get("map_calls_later_per_pass", 0) + r.get("unmap_calls_later_per_pass", 0) for r in rs)
print("%-44s %4d replays  worst %-28s %.4f  above 1.05: %d  calls later/pass %.1f, first %d"
      % (sys.argv[1], len(rs), w["trace"], w["footprint_ratio"], sum(r["footprint_ratio"] > 1.05 for r in rs),
         later, first))' "passes $passes jitter $jitter ${args:0:24}"
    done
  done
done
