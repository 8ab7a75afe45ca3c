#!/usr/bin/env bash
# Repeated work on the GPU (issue 11): every trace replayed five times back
# to back in one pool, memd against cudaMallocAsync interleaved round by
# round (7 rounds, median), plain and with sizes jittered by up to 10 % in
# passes 2-5; then memd's two pool policies side by side, one pass. Run on
# the lent GPU machine from the repository root after scripts/gpu-bundle.
# Writes JSON lines under $OUT and prints a summary.
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
mkdir -p "$OUT"
bin=.gpu/bin
shared=(.gpu/traces/trace_llama_generate.txt.gz .gpu/traces/trace_sdxl_like_1024.txt.gz
        .gpu/traces/trace_vision_mix.txt.gz)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
: > "$OUT/passes.jsonl"
for jitter in 0 0.1; do
  for policy in footprint throughput; do
    "$bin"/memd-replay --backend cuda --baseline memd,cuda-async --pool-policy $policy --passes 5 \
      --jitter $jitter --repeat 7 --json "${shared[@]}" >> "$OUT/passes.jsonl" 2>> "$OUT/errors.txt"
  done
done
: > "$OUT/policies.jsonl"
for policy in footprint throughput; do
  "$bin"/memd-replay --backend cuda --baseline memd --pool-policy $policy --repeat 5 --json \
    .gpu/traces/*.gz >> "$OUT/policies.jsonl" 2>> "$OUT/errors.txt"
done
python3 - "$OUT/passes.jsonl" "$OUT/policies.jsonl" <<'PY'
import json, sys
print(f"{'trace':16} {'allocator':16} {'jit':>4} {'ratio':>7} {'ns/op 1st':>10} {'ns/op 2-5':>10} {'min':>8} {'max':>8} {'calls 1st':>9} {'later/pass':>10}")
for l in open(sys.argv[1]):
    r = json.loads(l)
    calls1 = r.get('map_calls_first', -1) + r.get('unmap_calls_first', 0) if 'map_calls_first' in r else '-'
    later = f"{r['map_calls_later_per_pass'] + r['unmap_calls_later_per_pass']:.1f}" if 'map_calls_later_per_pass' in r else '-'
    print(f"{r['trace']:16} {r['allocator']:16} {r.get('jitter',0):4} {r['footprint_ratio']:7.4f} {r.get('ns_per_op_first',0):10.1f} {r.get('ns_per_op_later',0):10.1f} {r.get('ns_per_op_min',0):8.1f} {r.get('ns_per_op_max',0):8.1f} {calls1!s:>9} {later:>10}")
print()
for l in open(sys.argv[2]):
    r = json.loads(l)
    print(f"{r['trace']:22} {r['allocator']:16} {r['footprint_ratio']:7.4f} {r['ns_per_op']:9.1f} calls {r['device_calls']}")
PY
