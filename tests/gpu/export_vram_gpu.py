#!/usr/bin/env python3
"""The VRAM export in a second process, on a real GPU (ctest label gpu).

A real `memd serve` (CUDA on) with --tokens and --socket: alice allocates an
exportable VRAM allocation on cuda:0 and writes bytes; she exports it for
`worker`; a second process (tools/memd_import.py: python3's standard library,
the driver reached with ctypes) imports the POSIX-fd handle, maps it on the
GPU whose UUID memd named, reads alice's bytes and writes its own, which memd
reads back. mallory is refused. Exit 77 (a ctest skip) without a GPU.

usage: export_vram_gpu.py MEMD_BINARY SOURCE_DIR
"""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

SKIP = 77


def main():
    memd, source = sys.argv[1], sys.argv[2]
    tool = os.path.join(source, "tools", "memd_import.py")
    tmp = tempfile.mkdtemp(prefix="memd-vram-")
    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("alice-token alice\nworker-token worker\nmallory-token mallory\n")
    os.chmod(tokens, 0o600)
    sock = os.path.join(tmp, "memd.sock")
    daemon = subprocess.Popen([memd, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens, "--socket", sock],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = None
        for _ in range(2):
            line = daemon.stdout.readline()
            if "http://" in line:
                url = line[line.index("http://"):].strip()
        if url is None:
            print("FAIL: no banner from memd serve")
            return 1

        def call(method, path, body=None, token="alice-token"):
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(url + path, data=data, method=method,
                                         headers={"Authorization": "Bearer " + token,
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"{}")

        def stdio(action, params):
            status, body = call("POST", "/api/stdio", {"id": "1", "action": action, "params": params})
            assert status == 200 and body.get("ok"), body
            return body["result"]

        status, devices = call("GET", "/api/memory/devices")
        gpus = [d for d in devices.get("devices", []) if d["deviceId"].startswith("cuda:")]
        if not gpus:
            print("SKIP: no CUDA device: the VRAM export needs a GPU")
            return SKIP
        print(f"GPU: {gpus[0]['name']} {gpus[0].get('uuid')}")
        status, made = call("POST", "/api/memory/allocations",
                            {"sizeBytes": 4 << 20, "deviceId": "cuda:0", "exportable": True})
        assert status == 201, made
        aid = made["allocationId"]
        stdio("memory_write", {"allocationId": aid, "offset": 100,
                               "data": base64.b64encode(b"hello, worker").decode()})
        status, exp = call("POST", f"/api/memory/allocations/{aid}/export", {"owners": ["worker"]})
        assert status == 201, exp
        eid = exp["exportId"]

        def peer(*args):
            r = subprocess.run([sys.executable, tool, "--socket", sock, *args, eid], capture_output=True, text=True,
                               timeout=60)
            return r.returncode, r.stdout.strip(), r.stderr.strip()

        code, out, err = peer("--token", "worker-token", "--offset", "100", "--read", "13", "--verbose")
        print(f"worker read: exit {code} out {out!r} err {err!r}")
        assert code == 0 and out == b"hello, worker".hex(), (code, out, err)
        code, out, err = peer("--token", "worker-token", "--offset", "8192", "--write-hex", "c0ffee00beef")
        assert code == 0, (code, out, err)
        back = stdio("memory_read", {"allocationId": aid, "offset": 8192, "length": 6})
        assert base64.b64decode(back["data"]) == bytes.fromhex("c0ffee00beef"), back
        code, out, err = peer("--token", "mallory-token", "--read", "4")
        assert code == 2, (code, out, err)
        print("PASS: a second process read and wrote exported VRAM; mallory was refused")
        return 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
