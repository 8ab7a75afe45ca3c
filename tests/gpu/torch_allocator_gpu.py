#!/usr/bin/env python3
"""PyTorch on memd's allocator against PyTorch's own, on a real GPU (issue
16, item 1; ctest label gpu).

Each run is its own process (an allocator is chosen once per process):
torchvision's ResNet-50 and a transformers Llama-style decoder with random
weights (seeded), deterministic algorithms on, STEPS forward passes after
WARMUP; the last output is saved. For each model, the runs on
`torch` (PyTorch's caching allocator) and `memd` (libmemd_torch.so through
CUDAPluggableAllocator, in-process mode) must give identical outputs
(torch.equal). Reported side by side: peak reserved bytes (PyTorch's
max_memory_reserved; memd's own statistics, which PyTorch cannot see for a
pluggable allocator), peak allocated, and the median time per step.

usage: torch_allocator_gpu.py LIBMEMD_TORCH [--steps 20] [--json OUT]
Exit 77 (a ctest skip) without a GPU, torch, torchvision or transformers;
1 when outputs differ or a run fails.
"""
import json
import os
import subprocess
import sys
import tempfile

SKIP = 77


def child(model, mode, lib, out_path, steps, warmup):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import time

    if mode == "memd":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
        import memd.torch_allocator as mt

        mt.install(lib)
    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda:0")
    if model == "resnet50":
        import torchvision

        net = torchvision.models.resnet50(weights=None).to(dev).eval()
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 3, 224, 224, generator=g).to(dev)
        run = lambda: net(x)  # noqa: E731
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                          num_key_value_heads=16, vocab_size=32000, max_position_embeddings=2048)
        net = LlamaForCausalLM(cfg).to(dev).eval()
        g = torch.Generator().manual_seed(2)
        ids = torch.randint(0, 32000, (4, 512), generator=g).to(dev)
        run = lambda: net(input_ids=ids, use_cache=False).logits  # noqa: E731
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            y = run()
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    torch.save(y.detach().cpu(), out_path)
    times.sort()
    if mode == "memd":
        s = mt.stats(0)
        peak_reserved, peak_allocated = s["peak_reserved_bytes"], s["peak_allocated_bytes"]
    else:
        peak_reserved, peak_allocated = torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()
    print(json.dumps({"model": model, "mode": mode, "peak_reserved": peak_reserved,
                      "peak_allocated": peak_allocated, "step_ms": times[len(times) // 2] * 1e3}))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        model, mode, lib, out, steps, warmup = sys.argv[2:8]
        child(model, mode, lib, out, int(steps), int(warmup))
        return 0
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    lib = os.path.abspath(sys.argv[1])
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 20
    json_out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        import transformers  # noqa: F401

        if not torch.cuda.is_available():
            raise ImportError("no CUDA device")
    except ImportError as e:
        print(f"SKIP: {e}")
        return SKIP
    import torch

    failed = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("resnet50", "llama"):
            outs = {}
            for mode in ("torch", "memd"):
                out = os.path.join(tmp, f"{model}-{mode}.pt")
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", model, mode, lib, out,
                                    str(steps), "3"], capture_output=True, text=True, timeout=600)
                if p.returncode != 0:
                    print(f"FAIL {model} on {mode}: exit {p.returncode}\n{p.stdout}\n{p.stderr[-4000:]}")
                    failed = True
                    continue
                row = json.loads(p.stdout.strip().splitlines()[-1])
                rows.append(row)
                outs[mode] = torch.load(out)
            if len(outs) == 2:
                same = torch.equal(outs["torch"], outs["memd"])
                print(f"{model}: outputs {'identical' if same else 'DIFFER'} (torch.equal)")
                failed = failed or not same
    print(f"{'model':10} {'allocator':9} {'peak reserved MiB':>18} {'peak allocated MiB':>19} {'ms/step':>8}")
    for r in rows:
        print(f"{r['model']:10} {r['mode']:9} {r['peak_reserved'] / 2**20:18.1f} {r['peak_allocated'] / 2**20:19.1f} "
              f"{r['step_ms']:8.2f}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
