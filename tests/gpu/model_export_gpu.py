#!/usr/bin/env python3
"""A model's VRAM weights used by a second process without a copy, on a real
GPU (ctest label gpu; issue 15, item 8).

Writes a safetensors file with torch + safetensors (about 1.5 GiB of F16 plus
a few BF16, F32 and I64 tensors), starts a real `memd serve` (CUDA on) with
--model-root, --tokens and --socket, loads the model onto cuda:0 and exports
it for `worker`. Then examples/python/model_worker.py runs in a second
process with PyTorch: it imports the component's POSIX-fd handle, maps it
through the driver (ctypes) and wraps every tensor with torch.as_tensor over
__cuda_array_interface__. Checked:
  * every tensor's data_ptr lies inside the worker's mapping, and the worker
    built torch tensors (kind "torch");
  * every tensor's bytes equal the file's (--check), and the first values the
    worker printed equal those safetensors reads from the file;
  * the GPU's used memory (nvidia-smi, else torch.cuda.mem_get_info) grows,
    while the worker holds its tensors, by no more than a bare CUDA context
    of the same kind (measured first) plus a quarter of the model: a copy
    would add the whole model;
  * unload is a conflict while exported; after the release it unloads.
Exit 77 (a ctest skip) without a GPU, torch or safetensors.

usage: model_export_gpu.py MEMD_BINARY SOURCE_DIR
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SKIP = 77
BIG = 24  # tensors of 4096 x 8192 F16: 64 MiB each


def used_bytes(uuid):
    """The GPU's used memory, device-wide (every process)."""
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            u, mib = [x.strip() for x in line.split(",")]
            if uuid is None or u == uuid:
                return int(mib) << 20
    import torch

    free, total = torch.cuda.mem_get_info(0)
    return total - free


def settle(uuid):
    time.sleep(1.0)
    return used_bytes(uuid)


def main():
    memd, source = sys.argv[1], sys.argv[2]
    try:
        import torch
        from safetensors.torch import load_file, save_file
    except ImportError as e:
        print(f"SKIP: needs torch and safetensors: {e}")
        return SKIP
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device for torch")
        return SKIP
    worker_py = os.path.join(source, "examples", "python", "model_worker.py")
    tmp = tempfile.mkdtemp(prefix="memd-model-export-")
    models = os.path.join(tmp, "models")
    os.makedirs(models)
    path = os.path.join(models, "big.safetensors")
    gen = torch.Generator().manual_seed(15)
    tensors = {f"layers.{i}.weight": torch.randn(4096, 8192, generator=gen).to(torch.float16) for i in range(BIG)}
    tensors["norm.bf16"] = torch.randn(1024, 1024, generator=gen).to(torch.bfloat16)
    tensors["head.bias"] = torch.randn(1000, generator=gen)
    tensors["ids"] = torch.tensor([7, -3, 42], dtype=torch.int64)
    save_file(tensors, path)
    model_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    del tensors
    print(f"model: {len(load_file(path))} tensors, {model_bytes / 2**30:.2f} GiB")

    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("ctl-token ctl\nworker-token worker\n")
    os.chmod(tokens, 0o600)
    sock = os.path.join(tmp, "memd.sock")
    daemon = subprocess.Popen([memd, "--model-root", models, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens,
                               "--socket", sock], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        url = None
        for _ in range(2):
            line = daemon.stdout.readline()
            if "http://" in line:
                url = line[line.index("http://"):].strip()
        if url is None:
            print("FAIL: no banner from memd serve")
            return 1

        def call(method, target, body=None):
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(url + target, data=data, method=method,
                                         headers={"Authorization": "Bearer ctl-token",
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    return r.status, json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"{}")

        status, devices = call("GET", "/api/memory/devices")
        gpus = [d for d in devices.get("devices", []) if d["deviceId"].startswith("cuda:")]
        if not gpus:
            print("SKIP: memd sees no CUDA device")
            return SKIP
        uuid = gpus[0].get("uuid")
        print(f"GPU: {gpus[0]['name']} {uuid}")

        status, body = call("POST", "/api/memory/models", {"name": "big", "path": "big.safetensors",
                                                           "deviceId": "cuda:0"})
        assert status == 202, (status, body)
        for _ in range(1200):
            status, body = call("GET", "/api/memory/models/big")
            if body.get("state") != "Loading":
                break
            time.sleep(0.1)
        assert body.get("state") == "Loaded" and body.get("tier") == "VRAM", body
        print(f"loaded in {body.get('loadSeconds')} s ({body.get('loadGBps')} GB/s)")

        status, exported = call("POST", "/api/memory/models/big/export", {"owners": ["worker"]})
        assert status == 201, (status, exported)
        assert exported["socket"] == sock, exported
        answer = os.path.join(tmp, "export.json")
        with open(answer, "w") as f:
            json.dump(exported, f)

        # What a bare CUDA context of a torch process costs on this GPU: the
        # worker's own overhead, which is not a copy of the model.
        before = settle(uuid)
        bare = subprocess.Popen([sys.executable, "-c",
                                 "import torch, sys, time; torch.zeros(1, device='cuda'); print('ready', flush=True);"
                                 " time.sleep(30)"], stdout=subprocess.PIPE, text=True)
        assert bare.stdout.readline().strip() == "ready"
        context = max(0, settle(uuid) - before)
        bare.kill()
        bare.wait()
        print(f"a bare torch CUDA context: {context / 2**20:.0f} MiB")

        before = settle(uuid)
        worker = subprocess.Popen([sys.executable, worker_py, "--export-json", answer, "--token", "worker-token",
                                   "--check", path, "--json", "--hold", "15"], stdout=subprocess.PIPE, text=True)
        line = worker.stdout.readline()
        assert line.startswith("{"), f"the worker printed {line!r} (exit {worker.poll()})"
        report = json.loads(line)
        during = settle(uuid)
        growth = during - before
        print(f"GPU used while the worker holds its tensors: +{growth / 2**20:.0f} MiB "
              f"(model {model_bytes / 2**20:.0f} MiB)")
        assert report["torch"] is True, report
        assert report["zeroCopy"] is True, [t for t in report["tensors"] if not t["inMapping"]]
        assert all(t["kind"] == "torch" for t in report["tensors"]), report["tensors"][:2]
        assert report["checked"] == BIG + 3 and not report["failures"], report["failures"]
        reference = load_file(path)
        for t in report["tensors"]:
            want = reference[t["name"]].flatten()[:4]
            if want.dtype.is_floating_point:
                want = want.float()
            assert t["values"] == want.tolist(), (t["name"], t["values"], want.tolist())
        assert growth < context + model_bytes // 4, \
            f"GPU memory grew {growth} bytes with the worker: more than its context ({context}) — a copy?"

        status, body = call("DELETE", "/api/memory/models/big")
        assert status == 409, (status, body)
        worker.wait(timeout=60)
        assert worker.returncode == 0, worker.returncode
        worker = None
        status, body = call("DELETE", "/api/memory/models/big/export")
        assert status == 200 and len(body["released"]) == 1, (status, body)
        status, body = call("DELETE", "/api/memory/models/big")
        assert status == 200, (status, body)
        print("PASS: a second process used the model's VRAM weights in place; values equal the file's")
        return 0
    finally:
        if worker is not None:
            worker.kill()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
