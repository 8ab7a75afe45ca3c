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

With --memd BINARY, a third run per model in client mode (one budget across
processes): a `memd serve` started here on the GPU, the worker leasing its
memory from it as owner "worker". A thread here samples the daemon's leased
bytes (memory_status "leases") every few milliseconds while the worker runs;
reported: the leased peak beside the worker's peak live bytes (ratio, goal
<= 1.05), the lease after the worker's memd.torch_allocator.empty_cache()
(it shrinks to what is live), and after the worker exits (nothing: 0).

usage: torch_allocator_gpu.py LIBMEMD_TORCH [--memd BINARY] [--steps 20] [--json OUT]
Exit 77 (a ctest skip) without a GPU, torch, torchvision or transformers;
1 when outputs differ or a run fails.
"""
import json
import os
import subprocess
import sys
import tempfile

SKIP = 77


def child(model, mode, lib, out_path, steps, warmup, socket_path=None):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import time

    if mode in ("memd", "client"):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))
        import memd.torch_allocator as mt

        if mode == "client":
            mt.install(lib, socket=socket_path, owner="worker")
        else:
            mt.install(lib)
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_models import build, deterministic

    deterministic(torch)
    dev = torch.device("cuda:0")
    net, cpu_input, forward = build(model, torch, tokens=512)
    net = net.to(dev).eval()
    x = cpu_input.to(dev)
    run = lambda: forward(net, x)  # noqa: E731
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
    extra = {}
    if mode in ("memd", "client"):
        s = mt.stats(0)
        peak_reserved, peak_allocated = s["peak_reserved_bytes"], s["peak_allocated_bytes"]
        extra["stream_syncs"] = s["stream_syncs"]
        if mode == "client":
            # The activations go; what is free goes back to the daemon.
            del y
            torch.cuda.synchronize()
            extra["released_bytes"] = mt.empty_cache()
            after = mt.stats(0)
            extra["live_after_empty_cache"] = after["allocated_bytes"]
            extra["reserved_after_empty_cache"] = after["reserved_bytes"]
            time.sleep(0.3)  # the sampler sees the smaller lease before the exit
    else:
        peak_reserved, peak_allocated = torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()
    print(json.dumps({"model": model, "mode": mode, "peak_reserved": peak_reserved,
                      "peak_allocated": peak_allocated, "step_ms": times[len(times) // 2] * 1e3, **extra}))


class LeaseSampler:
    """`memd serve` with a socket, and a thread reading its leased bytes."""

    def __init__(self, memd_binary, tmp, owner):
        import threading

        self.socket = os.path.join(tmp, "memd.sock")
        self.owner = owner
        self.proc = subprocess.Popen([memd_binary, "serve", "--listen", "127.0.0.1:0", "--socket", self.socket],
                                     stdout=subprocess.PIPE, text=True)
        self.url = None
        for _ in range(20):
            line = self.proc.stdout.readline()
            if "http://" in line:
                self.url = line[line.index("http://"):].split()[0]
                break
        if self.url is None:
            raise RuntimeError("memd serve did not print its URL")
        self.samples = []  # (seconds, leased bytes of the owner)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = None

    def leased(self):
        import urllib.request

        with urllib.request.urlopen(self.url + "/api/memory/status", timeout=5) as r:
            status = json.load(r)
        return status.get("leases", {}).get("bytesByOwner", {}).get(self.owner, 0)

    def _run(self):
        import time

        while not self.stop:
            try:
                self.samples.append((time.perf_counter() - self.t0, self.leased()))
            except OSError:
                pass
            time.sleep(0.002)

    def start(self):
        import time

        self.t0 = time.perf_counter()
        self.thread.start()

    def finish(self):
        self.stop = True
        self.thread.join()

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        model, mode, lib, out, steps, warmup = sys.argv[2:8]
        child(model, mode, lib, out, int(steps), int(warmup), sys.argv[8] if len(sys.argv) > 8 else None)
        return 0
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    lib = os.path.abspath(sys.argv[1])
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 20
    json_out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    memd_binary = os.path.abspath(sys.argv[sys.argv.index("--memd") + 1]) if "--memd" in sys.argv else None
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
            for mode in ("torch", "memd") + (("client",) if memd_binary else ()):
                out = os.path.join(tmp, f"{model}-{mode}.pt")
                cmd = [sys.executable, os.path.abspath(__file__), "--child", model, mode, lib, out, str(steps), "3"]
                sampler = None
                if mode == "client":
                    sampler = LeaseSampler(memd_binary, tmp, "worker")
                    cmd.append(sampler.socket)
                    sampler.start()
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                    if sampler:
                        sampler.finish()
                        import time

                        deadline = time.time() + 5
                        after_exit = sampler.leased()
                        while after_exit != 0 and time.time() < deadline:
                            time.sleep(0.05)
                            after_exit = sampler.leased()
                finally:
                    if sampler:
                        sampler.close()
                if p.returncode != 0:
                    print(f"FAIL {model} on {mode}: exit {p.returncode}\n{p.stdout}\n{p.stderr[-4000:]}")
                    failed = True
                    continue
                row = json.loads(p.stdout.strip().splitlines()[-1])
                if sampler:
                    leased = [b for _, b in sampler.samples]
                    peak = max(leased) if leased else 0
                    peak_at = next(i for i, b in enumerate(leased) if b == peak) if leased else 0
                    # While the worker still ran: up to its last sample with a lease.
                    alive_end = max((i for i, b in enumerate(leased) if b > 0), default=peak_at) + 1
                    row.update({"leased_peak": peak, "leased_over_peak_live": peak / max(1, row["peak_allocated"]),
                                "leased_last_sample": leased[-1] if leased else None,
                                "leased_min_after_peak": min(leased[peak_at:alive_end]) if leased else None,
                                "leased_after_exit": after_exit, "samples": len(leased),
                                "leased_series_mib": [[round(t, 3), round(b / 2**20, 1)]
                                                      for t, b in sampler.samples[::max(1, len(leased) // 60)]]})
                    ok = (row["leased_over_peak_live"] <= 1.05 and after_exit == 0
                          and row["leased_min_after_peak"] < peak)
                    print(f"{model} client mode: leased peak {peak / 2**20:.1f} MiB = "
                          f"{row['leased_over_peak_live']:.3f} x peak live; after empty_cache (worker alive) "
                          f"{row['leased_min_after_peak'] / 2**20:.1f} MiB; after exit {after_exit} bytes"
                          f"{'' if ok else '  <-- MISSES A GOAL'}")
                    failed = failed or after_exit != 0
                rows.append(row)
                outs[mode] = torch.load(out)
            for other in ("memd", "client"):
                if "torch" in outs and other in outs:
                    same = torch.equal(outs["torch"], outs[other])
                    print(f"{model} {other}: outputs {'identical' if same else 'DIFFER'} (torch.equal)")
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
