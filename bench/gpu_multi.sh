#!/usr/bin/env bash
# Issue 18 in one call: several GPUs of one host. Run on the lent GPU machine
# from the repository root after bundling (.gpu/bin, .gpu/lib, .gpu/traces):
#   scripts/gpu-bundle build/gpu      (or ../shared/scripts/bundle-binaries .gpu <binaries...>)
#   OUT=$OUT bash bench/gpu_multi.sh
# Every item of the issue, in this order (each logged under $OUT):
#   1 devices    memd devices (local discovery, with the peer table), memd
#                status and GET /api/memory/devices of a running daemon:
#                every GPU with its totals and the access between each pair
#   2 peer       memd_peer_bench cuda:0 -> cuda:1: transfers through memd vs
#                cudaMemcpyPeerAsync (64 MiB, 1 GiB, 8 GiB; >= 0.90), a batch
#                of moves with H2D traffic (aggregate rate), a live move in
#                the engine; then cuda:1 -> cuda:0 at 1 GiB
#   3 move       a live allocation moved cuda:0 -> cuda:1 -> cuda:0 through
#                the daemon (REST): same id, bytes read back from the card
#   4 models     a model too large for any GPU refused with the numbers;
#                three models that fit only when spread, placed by memd's
#                placement spread and fit and by hand, each estimate beside
#                what was placed
#   5 conformance the gpu-labelled test executables once per GPU, all GPUs at
#                once (CUDA_VISIBLE_DEVICES=N: each sees its GPU as cuda:0)
#   6 replay     memd-replay --device N on every GPU at once (one process, one
#                pool per device) with cudaMallocAsync on the same device as
#                the same-run baseline; on several GPUs also cuda:0 alone first
#   7 multicast  NCCL_NVLS_ENABLE=0 exported; memd's sources call no cuMulticast*
# Pairwise parts print "skipped: 1 GPU (<item>)" on a machine with one GPU;
# without a GPU it prints "no GPU" and exits 77. Exit 0 when every part that
# ran passed, 1 otherwise. SIM=1: a dry run of the flow on a machine without
# a GPU (host:0 and host:1 stand in; numbers mean nothing).
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
export NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/memd-gpu-multi}
mkdir -p "$OUT"
bin=${BIN:-.gpu/bin}
traces=(${TRACES:-.gpu/traces/*.gz})
port=${PORT:-7989}
url=http://127.0.0.1:$port
sim=${SIM:-}
t_start=$(date +%s)
summary=()
failed=0
say() { summary+=("$1"); }
verdict() {  # item, exit status, text
  if [[ $2 == 0 ]]; then say "$1: PASS $3"; else say "$1: FAIL (exit $2) $3"; failed=1; fi
}
# A bench that measured (exit 0) passes only when its JSON says so.
json_pass() { python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("pass") else 3)' "$1" 2>/dev/null; }

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || cat .gpu/COMMIT 2>/dev/null || echo unknown)"
  echo "command: OUT=$OUT bash bench/gpu_multi.sh"
  nvidia-smi -L 2>&1
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,pci.bus_id --format=csv,noheader 2>&1
  echo "-- topology (NV# = NVLink, PIX/PXB/PHB/NODE/SYS = PCIe paths)"
  nvidia-smi topo -m 2>&1
  lscpu | grep -E 'Model name|^CPU\(s\)|NUMA node\(s\)'
  grep MemTotal /proc/meminfo
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if [[ -n $sim ]]; then
  ngpu=2
  kind=host
  devflags=(--no-cuda --host-device 2GiB --host-device 2GiB)
  peerflags=(--host-sim --sizes 16M,64M --reps 3 --batch-count 4 --batch-size 16M --h2d-count 2 --move-size 64M)
  model_pcts=33,34,35
  echo "SIM=1: host:0 and host:1 stand in for two GPUs; a dry run of the flow, the numbers mean nothing"
else
  ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
  kind=cuda
  devflags=()
  peerflags=()
  model_pcts=33,34,35
  if [[ $ngpu -eq 0 ]]; then
    echo "no GPU: nvidia-smi lists none; nothing measured (SIM=1 runs a dry run on host devices)"
    exit 77
  fi
fi
echo "GPUs: $ngpu"
last=$((ngpu - 1))

# --- 1 devices -------------------------------------------------------------
echo "== 1 devices: memd devices (local discovery)"
"$bin"/memd "${devflags[@]}" devices 2>&1 | tee "$OUT/devices.txt"
"$bin"/memd "${devflags[@]}" devices --json > "$OUT/devices.json" 2>&1
python3 - "$OUT/devices.json" "$kind" "$ngpu" <<'PY' 2>&1 | tee -a "$OUT/devices.txt"
import json, sys
devs, kind, n = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
devs = devs["devices"] if isinstance(devs, dict) else devs
gpus = [d for d in devs if d["deviceId"].startswith(kind + ":")]
ids = {d["deviceId"] for d in gpus}
bad = [d["deviceId"] for d in gpus if {p["deviceId"] for p in d.get("peers", [])} & ids != ids - {d["deviceId"]}]
ok = len(gpus) == n and not bad and all(d.get("totalBytes", 0) > 0 for d in gpus)
print(f"devices check: {len(gpus)} of {n} GPUs listed, totals present, peers of every pair listed"
      f"{'' if not bad else ' -- missing on ' + ', '.join(bad)}: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
devices_rc=${PIPESTATUS[0]}

# --- 2 peer (engine, in one process) ---------------------------------------
if [[ $ngpu -lt 2 ]]; then
  # The program itself says so (and so shows it runs here): exit 77.
  "$bin"/memd_peer_bench --json "$OUT/peer.json" 2>&1 | tee "$OUT/peer.txt"
  rc=${PIPESTATUS[0]}
  say "peer: skipped: 1 GPU (memd_peer_bench exit $rc; 77 = skipped)"
  [[ $rc == 77 ]] || failed=1
else
  echo "== 2 peer: memd_peer_bench $kind:0 -> $kind:1 (64 MiB, 1 GiB, 8 GiB; batch; move)"
  timeout 240 "$bin"/memd_peer_bench --from 0 --to 1 "${peerflags[@]}" --json "$OUT/peer.json" 2>&1 |
    tee "$OUT/peer.txt" | grep -v '^{"bench"'
  rc=${PIPESTATUS[0]}
  [[ $rc == 0 ]] && { json_pass "$OUT/peer.json" || rc=3; }
  verdict peer "$rc" "(0 -> 1: peer.json; every size >= 0.90 of cudaMemcpyPeerAsync, every byte right; exit 3: a bar missed)"
  echo "== 2 peer: the reverse, $kind:1 -> $kind:0, 1 GiB"
  rsizes=1G
  [[ -n $sim ]] && rsizes=64M
  timeout 90 "$bin"/memd_peer_bench --from 1 --to 0 "${peerflags[@]}" --only peer --sizes "$rsizes" \
    --json "$OUT/peer_reverse.json" 2>&1 | tee "$OUT/peer_reverse.txt" | grep -v '^{"bench"'
  rc=${PIPESTATUS[0]}
  [[ $rc == 0 ]] && { json_pass "$OUT/peer_reverse.json" || rc=3; }
  verdict peer_reverse "$rc" "(1 -> 0: peer_reverse.json)"
fi

# --- daemon: 1 status, 3 move, 4 models ------------------------------------
models_root=${MODEL_ROOT:-/tmp/memd-multi-models}
rm -rf "$models_root"
mkdir -p "$models_root"
"$bin"/memd "${devflags[@]}" --model-root "$models_root" serve --listen "127.0.0.1:$port" --socket off \
  > "$OUT/memd_serve.log" 2>&1 &
daemon=$!
python3 - "$url" <<'PY'  # up to 20 s for the daemon to answer
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=1).read()
        break
    except Exception:
        time.sleep(0.1)
PY
echo "== 1 devices: memd status and GET /api/memory/devices (the daemon)"
"$bin"/memd status --url "$url" 2>&1 | tee "$OUT/status.txt"
status_rc=${PIPESTATUS[0]}
python3 bench/gpu_multi_rest.py "$url" devices "$OUT/devices_daemon.json" 2>&1 | tee -a "$OUT/status.txt"
rest_rc=${PIPESTATUS[0]}
rc=$((devices_rc || status_rc || rest_rc))
verdict devices "$rc" "($ngpu GPUs; devices.txt, status.txt, devices_daemon.json)"

if [[ $ngpu -lt 2 ]]; then
  echo "skipped: 1 GPU (live move between GPUs through the daemon)" | tee "$OUT/move.txt"
  say "move: skipped: 1 GPU"
else
  echo "== 3 move: a live 256 MiB allocation $kind:0 -> $kind:1 -> $kind:0 through the daemon"
  msize=$((256 << 20))
  [[ -n $sim ]] && msize=$((16 << 20))
  timeout 120 python3 bench/gpu_multi_rest.py "$url" move "$kind:0" "$kind:1" "$msize" "$OUT/move.json" 2>&1 |
    tee "$OUT/move.txt"
  verdict move "${PIPESTATUS[0]}" "(move.json: same id, record on the new device, bytes identical)"
fi

echo "== 4 models: refused model; three models placed by spread, fit and by hand"
timeout 300 python3 bench/gpu_multi_rest.py "$url" models "$models_root" "$kind" "$OUT/models.json" "$model_pcts" 2>&1 |
  tee "$OUT/models.txt"
rc=${PIPESTATUS[0]}
if [[ $ngpu -lt 2 ]]; then
  verdict models "$rc" "(refused model only; placement: skipped: 1 GPU)"
else
  verdict models "$rc" "(models.json)"
fi
kill "$daemon" 2>/dev/null
wait "$daemon" 2>/dev/null
rm -rf "$models_root"

# --- 5 conformance on every GPU at once ------------------------------------
gpu_tests=()
for t in memd_backends_gpu_tests memd_engine_gpu_tests memd_transfer_gpu_tests memd_alloc_gpu_tests; do
  [[ -x $bin/$t ]] && gpu_tests+=("$t")
done
if [[ -n $sim ]]; then
  echo "== 5 conformance: SIM=1, no GPU to run on" | tee "$OUT/conformance.txt"
  say "conformance: not run (SIM=1)"
else
  echo "== 5 conformance: ${gpu_tests[*]} on GPUs 0..$last at once (CUDA_VISIBLE_DEVICES=N)"
  pids=()
  for i in $(seq 0 "$last"); do
    (
      for t in "${gpu_tests[@]}"; do
        echo "## $t on physical GPU $i"
        CUDA_VISIBLE_DEVICES=$i timeout 120 "$bin/$t" --gtest_brief=1 2>&1
        echo "## $t exit $?"
      done
    ) > "$OUT/conformance_gpu$i.txt" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  rc=0
  for i in $(seq 0 "$last"); do
    line=$(awk -v gpu="$i" '
      /^## .* exit / { if ($NF != 0) bad++ }
      /^\[  PASSED  \]/ { passed += $4 }
      /^\[  SKIPPED \]/ && /tests?,/ { skipped += $4 }
      /^\[  FAILED  \]/ && /tests?,/ { failed += $4 }
      END { printf "GPU %s: %d passed, %d skipped, %d failed, %d executables with a non-zero exit", gpu, passed, skipped, failed, bad; exit (bad > 0 || failed > 0 || passed == 0) }
    ' "$OUT/conformance_gpu$i.txt") || rc=1
    echo "$line" | tee -a "$OUT/conformance.txt"
    say "  conformance $line"
  done
  if [[ ${#gpu_tests[@]} -eq 0 ]]; then
    echo "no gpu test executable in $bin (memd_backends_gpu_tests, memd_engine_gpu_tests, memd_transfer_gpu_tests)"
    rc=1
  fi
  verdict conformance "$rc" "(conformance_gpuN.txt; executables: ${gpu_tests[*]})"
fi

# --- 6 replay on every GPU at once -----------------------------------------
if [[ -n $sim ]]; then
  rbackend=(--backend host --baseline memd,malloc)
  devs=(0)
else
  rbackend=(--backend cuda --baseline memd,cuda-async)
  devs=($(seq 0 "$last"))
fi
repeat=${REPLAY_REPEAT:-3}
if [[ $ngpu -ge 2 && -z $sim ]]; then
  echo "== 6 replay: cuda:0 alone first (the reference for running together)"
  timeout 200 "$bin"/memd-replay "${rbackend[@]}" --device 0 --repeat "$repeat" --json "${traces[@]}" \
    > "$OUT/replay_alone_gpu0.jsonl" 2> "$OUT/replay_alone_gpu0.err"
fi
echo "== 6 replay: ${#traces[@]} traces on devices ${devs[*]} at once, memd and the baseline, median of $repeat"
pids=()
for i in "${devs[@]}"; do
  timeout 240 "$bin"/memd-replay "${rbackend[@]}" --device "$i" --repeat "$repeat" --json "${traces[@]}" \
    > "$OUT/replay_gpu$i.jsonl" 2> "$OUT/replay_gpu$i.err" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
python3 - "$OUT" "${devs[@]}" <<'PY' 2>&1 | tee "$OUT/replay.txt"
import json, os, sys
out, devs = sys.argv[1], sys.argv[2:]
def rows(path):
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")] if os.path.exists(path) else []
alone = {(r["trace"], r["allocator"]): r for r in rows(os.path.join(out, "replay_alone_gpu0.jsonl"))}
print(f"{'device':8} {'trace':20} {'allocator':11} {'ratio':>7} {'ns/op':>9} {'alone ns/op':>12}")
for d in devs:
    for r in rows(os.path.join(out, f"replay_gpu{d}.jsonl")):
        a = alone.get((r["trace"], r["allocator"])) if d == "0" else None
        print(f"{r['device']:8} {r['trace']:20} {r['allocator']:11} {r['footprint_ratio']:7.4f} {r['ns_per_op']:9.1f} "
              f"{(format(a['ns_per_op'], '12.1f') if a else ''):>12}")
PY
for i in "${devs[@]}"; do
  n=$(grep -c '^{' "$OUT/replay_gpu$i.jsonl" 2>/dev/null)
  say "  replay device $i: $n result lines ($(wc -l < "$OUT/replay_gpu$i.err") error lines)"
done
verdict replay "$rc" "(replay_gpuN.jsonl; replay.txt the table)"

# --- 7 multicast -----------------------------------------------------------
echo "== 7 NVLink multicast"
hits=$(grep -rl 'cuMulticast' src include tools 2>/dev/null | wc -l)
echo "NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE; files in src/ include/ tools/ naming cuMulticast*: $hits" | tee "$OUT/multicast.txt"
[[ $hits -eq 0 ]]
verdict multicast $? "(NCCL_NVLS_ENABLE=0, no cuMulticastCreate)"

echo
echo "== summary ($(( $(date +%s) - t_start )) s; logs and JSON under $OUT)"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
exit "$failed"
