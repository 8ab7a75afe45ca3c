#!/usr/bin/env bash
# The GPU measurement suite, run on the lent GPU machine from the repository
# root after scripts/gpu-bundle. Everything that is compared runs in this one
# call, on one card: memd vs cudaMallocAsync vs cudaMalloc (and glibc on the
# same host CPU). Writes logs and JSON under $OUT and prints a short summary.
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
mkdir -p "$OUT"
bin=.gpu/bin
traces=(.gpu/traces/*.gz)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
lscpu | grep -E 'Model name|^CPU\(s\)' | tee -a "$OUT/gpu.txt"

echo "== ctest (all bundled tests; label gpu = CUDA conformance)"
sed -i "s|@GPU@|$PWD/.gpu|g" .gpu/CTestTestfile.cmake
(cd .gpu && ctest --output-on-failure 2>&1) | tee "$OUT/ctest.txt" | tail -15
"$bin"/memd_backends_gpu_tests 2>&1 | grep -E 'PASSED|SKIPPED|FAILED' | tee -a "$OUT/ctest.txt"

echo "== memd devices"
"$bin"/memd devices 2>&1 | tee "$OUT/devices.txt"

echo "== replay (JSON lines in replay.jsonl)"
: > "$OUT/replay.jsonl"
# memd and cudaMallocAsync: median time of 11 fresh replays each, the two
# interleaved round by round (short traces are noisy on a GPU, and the noise
# drifts); cudaMalloc once (it is slow and not the contender).
"$bin"/memd-replay --backend cuda --baseline memd,cuda-async --repeat 11 --json "${traces[@]}" >> "$OUT/replay.jsonl" 2>> "$OUT/ctest.txt"
"$bin"/memd-replay --backend cuda --baseline cuda-malloc --json "${traces[@]}" >> "$OUT/replay.jsonl" 2>> "$OUT/ctest.txt"
"$bin"/memd-replay --backend host --baseline memd --json "${traces[@]}" >> "$OUT/replay.jsonl" 2>> "$OUT/ctest.txt"
"$bin"/memd-replay --baseline malloc --json "${traces[@]}" >> "$OUT/replay.jsonl" 2>> "$OUT/ctest.txt"
python3 - "$OUT/replay.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'trace':20} {'allocator':12} {'backend':7} {'ratio':>7} {'ns/op':>9} {'mapping':>9} {'calls':>7}")
for r in rows:
    mapping = f"{r['mapping_ns_per_op']:9.1f}" if 'mapping_ns_per_op' in r else f"{'':9}"
    print(f"{r['trace']:20} {r['allocator']:12} {r['backend']:7} {r['footprint_ratio']:7.4f} {r['ns_per_op']:9.1f} {mapping} {r['device_calls']:7}")
PY

echo "== gpu_alloc_bench"
"$bin"/memd_gpu_alloc_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_out="$OUT/gpu_bench.json" --benchmark_out_format=json 2>&1 | grep -E '_median|_mean' | grep median | tee "$OUT/gpu_bench.txt"
echo "== alloc_bench (host device vs glibc on this host's CPU)"
"$bin"/memd_alloc_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_out="$OUT/cpu_bench.json" --benchmark_out_format=json 2>&1 | grep median | tee "$OUT/cpu_bench.txt"
