#!/usr/bin/env bash
# The footprint-or-time decision on one card: memd's default units (sized for
# a footprint within 5 % of the live peak), memd with one unit per mapped run
# (--map-unit-min/max 64GiB: fewest driver calls, coarser give-back) and
# cudaMallocAsync, each replayed 5 times (median), the three interleaved
# twice. Run on the lent GPU machine after scripts/gpu-bundle; JSON lines
# under $OUT, a table on stdout.
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
mkdir -p "$OUT"
replay=.gpu/bin/memd-replay
traces=(.gpu/traces/*.gz)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
: > "$OUT/units.jsonl"
for round in 1 2; do
  "$replay" --backend cuda --baseline memd --repeat 5 --json "${traces[@]}" |
    sed "s/\"allocator\":\"memd\"/\"allocator\":\"memd\",\"policy\":\"default\",\"round\":$round/" >> "$OUT/units.jsonl"
  "$replay" --backend cuda --baseline memd --map-unit-min 64GiB --map-unit-max 64GiB --repeat 5 --json "${traces[@]}" |
    sed "s/\"allocator\":\"memd\"/\"allocator\":\"memd\",\"policy\":\"unit-per-run\",\"round\":$round/" >> "$OUT/units.jsonl"
  "$replay" --backend cuda --baseline cuda-async --repeat 5 --json "${traces[@]}" |
    sed "s/\"allocator\":\"cuda-async\"/\"allocator\":\"cuda-async\",\"policy\":\"-\",\"round\":$round/" >> "$OUT/units.jsonl"
done
python3 - "$OUT/units.jsonl" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(dict)
for r in rows:
    by[r['trace']][(r['allocator'] + '/' + r['policy'], r['round'])] = r
cols = ['memd/default', 'memd/unit-per-run', 'cuda-async/-']
print(f"{'trace':22}" + ''.join(f"{c:>34}" for c in cols))
for t, d in by.items():
    cells = []
    for c in cols:
        a, b = d.get((c, 1)), d.get((c, 2))
        cells.append(f"{a['footprint_ratio']:.4f} {a['ns_per_op']:8.1f} / {b['ns_per_op']:8.1f}" if a and b else 'missing')
    print(f"{t:22}" + ''.join(f"{x:>34}" for x in cells))
PY
