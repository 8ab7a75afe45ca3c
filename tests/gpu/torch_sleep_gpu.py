#!/usr/bin/env python3
"""Sleep and wake of a tagged region under a captured CUDA graph, on a real
GPU (issue 16, item 2; ctest label gpu).

Each model runs in its own process (an allocator is chosen once per
process) on libmemd_torch.so: the model (random weights, seeded) is built
and moved to the GPU under `with mt.region("weights")`, deterministic
algorithms on, eval. A static input and the reference buffer are allocated
before capture; the forward pass is warmed up on a side stream and captured
with torch.cuda.graph (if capture fails under the pluggable allocator, the
forward runs eagerly and the report says "graph": "unavailable: ..."); one
replay fills the reference. Then CYCLES times:
  * free GPU bytes (torch.cuda.mem_get_info) and host RSS (VmRSS) before;
  * mt.sleep("weights"): free bytes must rise by >= 0.95 x the region's
    reserved bytes; RSS while asleep is reported (it holds the host copy);
  * mt.wake("weights"), timed; replay; torch.equal against the reference;
    RSS after the wake within 64 MiB of RSS before the sleep.
Then, for scale, a fresh load of the same weights: the state_dict saved with
safetensors before the cycles, one untimed load_file(path, device="cuda")
(page cache warm), then the median of three timed loads.

usage: torch_sleep_gpu.py LIBMEMD_TORCH [--models resnet50,llama] [--cycles 3] [--json OUT]
Exit 77 (a ctest skip) without a GPU, torch or safetensors (a model whose
package is missing is skipped alone); 1 when a check fails.
"""
import json
import os
import subprocess
import sys
import tempfile

SKIP = 77
MiB = 2**20


def vmrss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(model, lib, cycles):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import time

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
    import memd.torch_allocator as mt

    mt.install(lib)
    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_models import build, deterministic

    deterministic(torch)
    dev = torch.device("cuda:0")
    report = {"model": model, "checks_failed": []}

    def check(ok, what):
        if not ok:
            report["checks_failed"].append(what)
            print(f"FAIL {model}: {what}", flush=True)

    net, cpu_input, forward = build(model, torch, tokens=256)
    with mt.region("weights"):
        net = net.to(dev)
    net.eval()
    report["weights_bytes"] = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    static_in = cpu_input.to(dev)  # the GPU's pool, allocated before capture
    with torch.no_grad():
        # Warm-up on a side stream, as PyTorch's CUDA graph docs show.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                y = forward(net, static_in)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        reference = torch.empty_like(y)  # before capture
        del y
        graph = None
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = forward(net, static_in)
            graph.replay()
            torch.cuda.synchronize()
            report["graph"] = "captured"

            def run():
                graph.replay()
                return static_out
        except Exception as e:  # capture under the pluggable allocator may be refused
            report["graph"] = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            graph = None
            torch.cuda.synchronize()

            def run():
                return forward(net, static_in)
        reference.copy_(run())
        torch.cuda.synchronize()

    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "weights.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path)

    report["cycles"] = []
    for c in range(cycles):
        torch.cuda.synchronize()
        region = mt.region_stats("weights", 0)
        free_before = torch.cuda.mem_get_info()[0]
        rss_before = vmrss()
        t0 = time.perf_counter()
        sleep_s = mt.sleep("weights")
        sleep_wall = time.perf_counter() - t0
        free_asleep = torch.cuda.mem_get_info()[0]
        rss_asleep = vmrss()
        asleep = mt.region_stats("weights", 0)
        t0 = time.perf_counter()
        wake_s = mt.wake("weights")
        torch.cuda.synchronize()
        wake_wall = time.perf_counter() - t0
        rss_after = vmrss()
        with torch.no_grad():
            out = run()
            torch.cuda.synchronize()
            same = torch.equal(out, reference)
        row = {"cycle": c, "region_reserved": region["reserved_bytes"], "free_before": free_before,
               "free_asleep": free_asleep, "freed": free_asleep - free_before,
               "reserved_asleep": asleep["reserved_bytes"], "asleep": asleep["asleep"],
               "rss_before": rss_before, "rss_asleep": rss_asleep, "rss_after": rss_after,
               "sleep_s": sleep_s, "sleep_wall_s": sleep_wall, "wake_s": wake_s, "wake_wall_s": wake_wall,
               "output_identical": same}
        report["cycles"].append(row)
        print(json.dumps(row), flush=True)
        check(row["freed"] >= 0.95 * region["reserved_bytes"],
              f"cycle {c}: free bytes rose by {row['freed']}, the region held {region['reserved_bytes']}")
        check(asleep["asleep"] and asleep["reserved_bytes"] == 0, f"cycle {c}: region not asleep: {asleep}")
        check(same, f"cycle {c}: output after wake differs from the reference")
        check(abs(rss_after - rss_before) <= 64 * MiB,
              f"cycle {c}: RSS after wake {rss_after} vs {rss_before} before sleep")

    # A fresh load of the same weights, for scale (after the cycles, so its
    # blocks in the GPU's pool do not move the free-bytes figures above).
    loads = []
    for i in range(4):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        sd = load_file(path, device="cuda")
        torch.cuda.synchronize()
        if i > 0:  # the first warms the page cache
            loads.append(time.perf_counter() - t0)
        del sd
    loads.sort()
    report["safetensors_load_s"] = loads[len(loads) // 2]
    wakes = sorted(r["wake_wall_s"] for r in report["cycles"])
    report["wake_wall_s_median"] = wakes[len(wakes) // 2] if wakes else None
    os.remove(path)
    os.rmdir(tmp)
    print("RESULT " + json.dumps(report), flush=True)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    lib = os.path.abspath(sys.argv[1])
    models = sys.argv[sys.argv.index("--models") + 1].split(",") if "--models" in sys.argv else ["resnet50", "llama"]
    cycles = int(sys.argv[sys.argv.index("--cycles") + 1]) if "--cycles" in sys.argv else 3
    json_out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    try:
        import torch
        import safetensors  # noqa: F401

        if not torch.cuda.is_available():
            raise ImportError("no CUDA device")
    except ImportError as e:
        print(f"SKIP: {e}")
        return SKIP
    runnable = []
    for m in models:
        try:
            __import__("torchvision" if m == "resnet50" else "transformers")
            runnable.append(m)
        except ImportError as e:
            print(f"skipping {m}: {e}")
    if not runnable:
        print("SKIP: neither torchvision nor transformers")
        return SKIP
    failed = False
    results = []
    for model in runnable:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", model, lib, str(cycles)],
                           capture_output=True, text=True, timeout=900)
        print(p.stdout)
        result = next((json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")), None)
        if p.returncode != 0 or result is None:
            print(f"FAIL {model}: exit {p.returncode}\n{p.stderr[-4000:]}")
            failed = True
            continue
        results.append(result)
        failed = failed or bool(result["checks_failed"])
    print(f"{'model':9} {'weights MiB':>11} {'graph':10} {'freed MiB':>9} {'RSS asleep+':>11} {'RSS after+':>10} "
          f"{'sleep s':>8} {'wake s':>8} {'load s':>8} identical")
    for r in results:
        for c in r["cycles"]:
            print(f"{r['model']:9} {r['weights_bytes'] / MiB:11.1f} {r['graph'][:10]:10} {c['freed'] / MiB:9.1f} "
                  f"{(c['rss_asleep'] - c['rss_before']) / MiB:11.1f} {(c['rss_after'] - c['rss_before']) / MiB:10.1f} "
                  f"{c['sleep_wall_s']:8.3f} {c['wake_wall_s']:8.3f} {r['safetensors_load_s']:8.3f} "
                  f"{c['output_identical']}")
    summary = {"results": results, "passed": not failed}
    print(json.dumps(summary))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
