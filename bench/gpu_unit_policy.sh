#!/usr/bin/env bash
# The footprint-or-time decision on one card: memd's default units (sized for
# a footprint within 5 % of the live peak) and memd with one unit per mapped
# run (--pool-policy throughput: fewest driver calls, coarser give-back), each
# against cudaMallocAsync in the same process, the two allocators interleaved
# round by round (REPEAT rounds, median reported with the fastest and slowest:
# one trace's times moved 40 % between calls a minute apart on one machine).
# Run on the lent GPU machine after scripts/gpu-bundle; JSON lines under $OUT,
# a table on stdout.
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
REPEAT=${REPEAT:-11}
mkdir -p "$OUT"
replay=.gpu/bin/memd-replay
traces=(${TRACES:-.gpu/traces/*.gz})
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
: > "$OUT/units.jsonl"
# pair POLICY [FLAGS...]: memd with FLAGS against cudaMallocAsync, tagged POLICY.
pair() {
  local policy=$1
  shift
  "$replay" --backend cuda --baseline memd,cuda-async --repeat "$REPEAT" --json "$@" "${traces[@]}" |
    sed "s/\"allocator\":\"memd\"/\"allocator\":\"memd\",\"policy\":\"$policy\"/; s/\"allocator\":\"cuda-async\"/\"allocator\":\"cuda-async\",\"policy\":\"with-$policy\"/" >> "$OUT/units.jsonl"
}
pair default
pair unit-per-run --pool-policy throughput
python3 - "$OUT/units.jsonl" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(dict)
for r in rows:
    by[r['trace']][r['allocator'] + '/' + r['policy']] = r
def cell(r):
    return f"{r['footprint_ratio']:.4f} {r['ns_per_op']:7.1f} [{r.get('ns_per_op_min', 0):.0f}-{r.get('ns_per_op_max', 0):.0f}]"
print(f"{'trace':22}{'memd default':>30}{'cudaMallocAsync':>30}{'memd unit-per-run':>30}{'cudaMallocAsync':>30}")
for t, d in by.items():
    cols = ['memd/default', 'cuda-async/with-default', 'memd/unit-per-run', 'cuda-async/with-unit-per-run']
    print(f"{t:22}" + ''.join(f"{cell(d[c]) if c in d else 'missing':>30}" for c in cols))
PY
