#!/usr/bin/env bash
# Issue 15, item 2 on the GPU: a load that narrows F32 weights to F16, against
# safetensors.torch.load_file(device="cuda") followed by .half() on the GPU
# (what a PyTorch user does), in the same run, on an F32 file of realistic
# layout written by the safetensors package (the shape of model_load_gpu.sh,
# SIZE_LAYERS layers: 5 makes ~4.3 GiB of F32). Rates are file bytes per
# second. Run on the lent GPU machine from the repository root after
# bundling; writes under $OUT.
set -uo pipefail
export LD_LIBRARY_PATH=$PWD/.gpu/lib
OUT=${OUT:-/tmp/memd-gpu}
mkdir -p "$OUT"
file=${MODEL_FILE:-/tmp/memd-bench-f32.safetensors}
python3 - "$file" "${SIZE_LAYERS:-5}" <<'PY' 2>&1 | tee "$OUT/model_narrow.txt"
import sys, torch
from safetensors.torch import save_file
path, layers = sys.argv[1], int(sys.argv[2])
h, ff, vocab = 4096, 11008, 32000
g = torch.Generator(device="cuda").manual_seed(1)
def rnd(*shape):
    return (torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).cpu()
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
    for k in range(200):
        t[p + f"adapters.{k}.scale"] = rnd(64 + k)
t["model.norm.weight"] = rnd(h)
t["lm_head.weight"] = rnd(vocab, h)
save_file(t, path)
total = sum(x.numel() * x.element_size() for x in t.values())
print(f"{path}: {len(t)} tensors, {total / 2**30:.2f} GiB of F32 tensor data")
PY
cat "$file" > /dev/null
echo "== baseline: load_file(device='cuda') then .half() on the GPU, page cache warm" | tee -a "$OUT/model_narrow.txt"
python3 - "$file" <<'PY' 2>&1 | tee -a "$OUT/model_narrow.txt"
import os, sys, time, torch
from safetensors.torch import load_file
path = sys.argv[1]
torch.cuda.init(); torch.empty(1, device="cuda")
rates = []
for _ in range(3):
    t0 = time.perf_counter()
    d = {k: v.half() for k, v in load_file(path, device="cuda").items()}
    torch.cuda.synchronize()
    s = time.perf_counter() - t0
    rates.append(sum(v.numel() * 4 for v in d.values()) / s / 1e9)
    del d
    torch.cuda.empty_cache()
rates.sort()
print(f"load_file(device='cuda') + .half(): median {rates[1]:.2f} GB/s of F32 file bytes (reps {', '.join(f'{r:.2f}' for r in rates)})")
PY
echo "== memd: the model manager's load with dtype F16" | tee -a "$OUT/model_narrow.txt"
.gpu/bin/memd_model_switch_bench --dir /tmp/memd-narrow --file "$file" --dtype F16 --no-switch --reps 3 2>&1 | tee -a "$OUT/model_narrow.txt"
rm -rf /tmp/memd-narrow "$file"
