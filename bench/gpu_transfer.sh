#!/usr/bin/env bash
# The transfer engine on the GPU (issue 13): memd's copies against cudaMemcpy
# on cuda:0, in one process (bench/transfer_bench.cpp), then the sweep of the
# engine's limits that its defaults are chosen from. Run on the lent GPU
# machine from the repository root after scripts/gpu-bundle. Writes under
# $OUT: transfer.txt / transfer.json (the bars), transfer_sweep.txt /
# transfer_sweep.json (the sweep; its JSON line is left off the terminal),
# transfer_gpu.txt (the machine).
#   bench/gpu_transfer.sh [flags for both runs, e.g. --chunk 16M --host-copy-threads 7]
#   SWEEP_ARGS="--sweep-size 256M --sweep-threads 3,7" bench/gpu_transfer.sh   (the sweep's own flags)
#   SKIP_SWEEP=1 bench/gpu_transfer.sh                                       (the bars alone, ~1 min)
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
mkdir -p "$OUT"
bin=.gpu/bin
{
  nvidia-smi -L
  nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv,noheader
  lscpu | grep -E 'Model name|^CPU\(s\)|NUMA node\(s\)'
  grep MemTotal /proc/meminfo
} 2>&1 | tee "$OUT/transfer_gpu.txt"

echo "== transfer bars (memd vs cudaMemcpy, one process)"
"$bin"/memd_transfer_bench --json "$OUT/transfer.json" "$@" 2>&1 | tee "$OUT/transfer.txt"
bars_rc=${PIPESTATUS[0]}
echo "exit status $bars_rc"

sweep_rc=skipped
if [[ -z "${SKIP_SWEEP:-}" ]]; then
  echo "== sweep of the engine's limits (staged path, then device_async paths)"
  # shellcheck disable=SC2086  # SWEEP_ARGS is a list of flags
  "$bin"/memd_transfer_bench --sweep-only --json "$OUT/transfer_sweep.json" "$@" ${SWEEP_ARGS:-} 2>&1 |
    tee "$OUT/transfer_sweep.txt" | grep -v -e '^\[transfer_bench\] sweep: staged cell' -e '^{"bench"'
  sweep_rc=${PIPESTATUS[0]}
  echo "exit status $sweep_rc"
fi
echo "== done: bars $bars_rc, sweep $sweep_rc (0 = measured, 1 = a copy failed or wrote wrong bytes)"
