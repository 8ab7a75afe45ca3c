#!/usr/bin/env bash
# Issue 14 on the GPU: the defragmentation tests on cuda:0 (fragment, defragment,
# every byte checked), the defragmentation bench (move rate against
# cudaMemcpyAsync device to device in the same process; remap against copy),
# the status cache bench, and the daemon's health over NVML (ECC, retired
# pages, remapped rows). Run on the lent GPU machine from the repository root
# after bundling (.gpu/bin, .gpu/lib). Writes under $OUT.
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
mkdir -p "$OUT"
bin=.gpu/bin
{
  nvidia-smi -L
  nvidia-smi --query-gpu=name,memory.total,driver_version,ecc.mode.current --format=csv,noheader
  lscpu | grep -E 'Model name|^CPU\(s\)'
} 2>&1 | tee "$OUT/machine.txt"

echo "== GPU tests (transfer: defragmentation on cuda:0; backends)"
"$bin"/memd_transfer_gpu_tests 2>&1 | tail -40 | tee "$OUT/transfer_gpu_tests.txt"
"$bin"/memd_backends_gpu_tests 2>&1 | tail -5 | tee "$OUT/backends_gpu_tests.txt"

echo "== defragmentation bench"
"$bin"/memd_defrag_bench --reps "${REPS:-5}" 2>&1 | tee "$OUT/defrag_bench.txt"

echo "== status cache bench"
"$bin"/memd_status_cache_bench 2>&1 | tee "$OUT/status_cache_bench.txt"

echo "== health and pressure of a daemon on the GPU (NVML)"
"$bin"/memd serve --listen 127.0.0.1:7979 --socket off > "$OUT/memd_serve.log" 2>&1 &
pid=$!
sleep 3
python3 - <<'PY' 2>&1 | tee "$OUT/health.txt"
import json, urllib.request
for path in ("/healthz", "/api/memory/pressure", "/api/memory/optimization"):
    with urllib.request.urlopen("http://127.0.0.1:7979" + path, timeout=10) as r:
        print(path, json.dumps(json.load(r), indent=1)[:3000])
PY
kill "$pid"; wait "$pid" 2>/dev/null
echo done
