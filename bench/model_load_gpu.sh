#!/usr/bin/env bash
# Issue 15 on the GPU: the component loader and the model manager against
# safetensors.torch.load_file(device="cuda") in the same run, on a file of
# realistic layout written by the safetensors package (>= 1,000 tensors of
# mixed sizes, transformer-shaped, random fp16 weights, ~4.3 GiB). Run on the
# lent GPU machine from the repository root after bundling (.gpu/bin,
# .gpu/lib). Writes under $OUT. SIZE_LAYERS sets the layer count (11: ~4.3 GiB).
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
mkdir -p "$OUT"
file=${MODEL_FILE:-/tmp/memd-bench-model.safetensors}
python3 - "$file" "${SIZE_LAYERS:-11}" <<'PY' 2>&1 | tee "$OUT/model_file.txt"
import sys, torch
from safetensors.torch import save_file
path, layers = sys.argv[1], int(sys.argv[2])
h, ff, vocab = 4096, 11008, 32000
g = torch.Generator(device="cuda").manual_seed(0)
def rnd(*shape):
    return (torch.rand(*shape, generator=g, device="cuda", dtype=torch.float16) - 0.5).cpu()
t = {"model.embed_tokens.weight": rnd(vocab, h)}
for i in range(layers):
    p = f"model.layers.{i}."
    for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
        t[p + f"self_attn.{n}.weight"] = rnd(h, h)
    t[p + "mlp.gate_proj.weight"] = rnd(ff, h)
    t[p + "mlp.up_proj.weight"] = rnd(ff, h)
    t[p + "mlp.down_proj.weight"] = rnd(h, ff)
    t[p + "input_layernorm.weight"] = rnd(h)
    t[p + "post_attention_layernorm.weight"] = rnd(h)
    # Adapter-style small tensors (LoRA banks, per-head scales): the long
    # tail of small tensors a real checkpoint has.
    for k in range(90):
        t[p + f"adapters.{k}.scale"] = rnd(64 + k)
t["model.norm.weight"] = rnd(h)
t["lm_head.weight"] = rnd(vocab, h)
save_file(t, path)
total = sum(x.numel() * x.element_size() for x in t.values())
print(f"{path}: {len(t)} tensors, {total / 2**30:.2f} GiB of tensor data")
PY

echo "== page cache warm" | tee -a "$OUT/model_load.txt"
cat "$file" > /dev/null
.gpu/bin/memd_model_load_bench "$file" --readers 4,8,12 --chunk-mib 8,16,32 --reps 3 2>&1 | tee -a "$OUT/model_load.txt"

echo "== baseline: safetensors.torch.load_file(device='cuda'), page cache warm" | tee -a "$OUT/model_load.txt"
python3 - "$file" <<'PY' 2>&1 | tee -a "$OUT/model_load.txt"
import os, sys, time, torch
from safetensors.torch import load_file
path = sys.argv[1]
torch.cuda.init(); torch.empty(1, device="cuda")
size = os.path.getsize(path)
rates = []
for _ in range(3):
    t0 = time.perf_counter()
    d = load_file(path, device="cuda")
    torch.cuda.synchronize()
    s = time.perf_counter() - t0
    rates.append(sum(v.numel() * v.element_size() for v in d.values()) / s / 1e9)
    del d
    torch.cuda.empty_cache()
rates.sort()
print(f"load_file(device='cuda'): median {rates[1]:.2f} GB/s (reps {', '.join(f'{r:.2f}' for r in rates)})")
# Pinned host -> device, one 1 GiB copy: the copy engine's own rate.
src = torch.empty(1 << 30, dtype=torch.uint8).pin_memory()
dst = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
dst.copy_(src, non_blocking=True); torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(5):
    dst.copy_(src, non_blocking=True)
torch.cuda.synchronize()
print(f"pinned cudaMemcpyAsync H2D (torch copy_): {5 * (1 << 30) / (time.perf_counter() - t0) / 1e9:.2f} GB/s")
PY

echo "== cold (dropped from the page cache first)" | tee -a "$OUT/model_load.txt"
.gpu/bin/memd_model_load_bench "$file" --readers 8 --chunk-mib 16 --reps 2 --cold 2>&1 | tee -a "$OUT/model_load.txt"
echo "== through the model manager (load, restore from the RAM tier, SDXL-shaped switch)" | tee -a "$OUT/model_load.txt"
cat "$file" > /dev/null
switch_dir=${SWITCH_DIR:-/tmp/memd-switch}
.gpu/bin/memd_model_switch_bench --dir "$switch_dir" --file "$file" --unet-gib "${UNET_GIB:-5}" --reps 3 2>&1 | tee -a "$OUT/model_load.txt"
rm -rf "$switch_dir"
rm -f "$file"
echo done
