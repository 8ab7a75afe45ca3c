#!/usr/bin/env python3
"""Issue 18's daemon-level checks, over memd's REST API (stdlib only).

bench/gpu_multi.sh runs it against a `memd serve` it started:

  gpu_multi_rest.py URL devices OUT_JSON
      GET /api/memory/devices: every GPU-like device with its totals and the
      access to each other one (peers); written to OUT_JSON, a table printed.
  gpu_multi_rest.py URL move SRC DST SIZE OUT_JSON
      A live allocation of SIZE bytes on SRC, written with random bytes
      (PUT .../data), moved to DST and back (POST .../move, the transfer
      polled): after each leg the allocation keeps its id, its record names
      the new device, and GET .../data, read from the card, equals what was
      written, byte for byte. Exit 1 on any mismatch.
  gpu_multi_rest.py URL models ROOT KIND OUT_JSON [PCTS]
      Model placement on the devices of KIND (cuda or host): a model larger
      than any one of them is estimated and refused with the numbers in the
      error; with two or more, three models of PCTS % of the smallest device
      (default 33,34,35: together more than any one holds, any two fit on
      one with room to spare) are placed three ways: memd's placement
      spread and fit (deviceId left out), then by hand (model i on device
      i mod N); each with the estimate beside what was placed. The files are sparse safetensors files under
      ROOT (the daemon's --model-root), removed at the end. With one device
      the placement part prints "skipped: 1 GPU".
"""
import hashlib
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request

OWNER = "gpu_multi"


def call(url, method, path, body=None, raw=None, timeout=600):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("X-Memd-Owner", OWNER)
    if raw is not None:
        req.add_header("Content-Type", "application/octet-stream")
    elif body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            payload = r.read()
            kind = r.headers.get("Content-Type", "")
            return r.status, (json.loads(payload) if "json" in kind else payload)
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            return e.code, json.loads(payload)
        except ValueError:
            return e.code, payload.decode(errors="replace")


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def devices(url, kind=None):
    status, body = call(url, "GET", "/api/memory/devices")
    if status != 200:
        raise SystemExit(f"GET /api/memory/devices: {status} {body}")
    devs = body["devices"] if isinstance(body, dict) else body
    if kind:
        devs = [d for d in devs if d["deviceId"].startswith(kind + ":")]
    return devs


def cmd_devices(url, out_json):
    devs = devices(url)
    with open(out_json, "w") as f:
        json.dump(devs, f, indent=1)
    gpus = [d for d in devs if d["deviceId"] != "cpu"]
    print(f"{'device':8} {'name':28} {'total':>11} {'free':>11}  peers")
    for d in gpus:
        peers = ", ".join(f"{p['deviceId']} {p['access']}" for p in d.get("peers", []))
        print(f"{d['deviceId']:8} {d['name'][:28]:28} {gib(d['totalBytes']):>11} {gib(d['freeBytes']):>11}  {peers or '-'}")
    return 0


def wait_transfer(url, tid, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        status, t = call(url, "GET", f"/api/memory/transfers/{tid}")
        if status != 200:
            return {"status": f"HTTP {status}", "error": t}
        if t["status"] in ("Completed", "Failed", "Cancelled"):
            return t
        time.sleep(0.02)
    return {"status": "timeout"}


def cmd_move(url, src, dst, size, out_json):
    size = int(size)
    result = {"source": src, "destination": dst, "bytes": size, "legs": []}
    status, a = call(url, "POST", "/api/memory/allocations",
                     {"sizeBytes": size, "deviceId": src, "memoryType": "VRAM", "name": "live-move"})
    if status != 201:
        print(f"move: allocate on {src}: {status} {a}")
        return 1
    aid = a["allocationId"]
    result["allocationId"] = aid
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    piece = 256 << 20
    for off in range(0, size, piece):
        status, w = call(url, "PUT", f"/api/memory/allocations/{aid}/data?offset={off}", raw=data[off:off + piece])
        if status != 200:
            print(f"move: write at {off}: {status} {w}")
            return 1
    ok = True
    for where in (dst, src):
        leg = {"to": where}
        t0 = time.time()
        status, t = call(url, "POST", f"/api/memory/allocations/{aid}/move", {"deviceId": where})
        if status != 202:
            leg["error"] = f"move: {status} {t}"
        else:
            done = wait_transfer(url, t["transferId"])
            leg["seconds"] = time.time() - t0
            leg["transfer_status"] = done.get("status")
            leg["path"] = done.get("path")
            leg["reported_destination"] = done.get("destinationAllocationId")
            _, rec = call(url, "GET", f"/api/memory/allocations/{aid}")
            leg["record_device"] = rec.get("deviceId") if isinstance(rec, dict) else None
            leg["record_id"] = rec.get("allocationId") if isinstance(rec, dict) else None
            status, back = call(url, "GET", f"/api/memory/allocations/{aid}/data")
            same = status == 200 and isinstance(back, bytes) and len(back) == size and back == data
            leg["bytes_read"] = len(back) if isinstance(back, bytes) else 0
            leg["sha256_written"] = digest
            leg["sha256_read"] = hashlib.sha256(back).hexdigest() if isinstance(back, bytes) else None
            leg["same_bytes"] = same
            if done.get("status") != "Completed":
                leg["error"] = f"transfer ended {done.get('status')}: {done.get('error')}"
            elif leg["record_id"] != aid or leg["reported_destination"] != aid:
                leg["error"] = "the id changed"
            elif leg["record_device"] != where:
                leg["error"] = f"the record names {leg['record_device']}, not {where}"
            elif not same:
                first = next((i for i in range(min(len(back), size)) if back[i] != data[i]), None)
                leg["error"] = f"bytes differ (first at offset {first}, read {leg['bytes_read']} of {size})"
        good = "error" not in leg
        ok = ok and good
        print(f"  move {aid} -> {where:8} {'PASS' if good else 'FAIL'}: record on {leg.get('record_device')}, "
              f"id {'kept' if leg.get('record_id') == aid else 'CHANGED'}, "
              f"{size} bytes read back {'identical' if leg.get('same_bytes') else 'DIFFERENT'} "
              f"(sha256 {str(leg.get('sha256_read'))[:16]}), path {leg.get('path')}"
              + ("" if good else f" -- {leg['error']}"))
        result["legs"].append(leg)
        if not good:
            break
    call(url, "DELETE", f"/api/memory/allocations/{aid}")
    result["pass"] = ok
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)
    return 0 if ok else 1


def write_model(path, size):
    """A sparse safetensors file: F16 tensors of at most 1 GiB, `size` data bytes."""
    size -= size % 2
    tensors, off, i = {}, 0, 0
    while off < size:
        n = min(1 << 30, size - off)
        tensors[f"layer.{i}.weight"] = {"dtype": "F16", "shape": [n // 2], "data_offsets": [off, off + n]}
        off += n
        i += 1
    header = json.dumps(tensors, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.truncate(8 + len(header) + size)
    return size


def wait_model(url, name, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        status, m = call(url, "GET", f"/api/memory/models/{name}")
        if status == 200 and m.get("state") in ("Loaded", "Failed"):
            return m
        time.sleep(0.05)
    return {"state": "timeout"}


def estimate(url, name, path, device=None, placement=None):
    body = {"name": name, "path": path}
    if device:
        body["deviceId"] = device
    if placement:
        body["placement"] = placement
    status, e = call(url, "POST", "/api/memory/models/estimate", body)
    return e if status == 200 else {"error": e, "status": status}


def load(url, name, path, device=None, placement=None):
    body = {"name": name, "path": path}
    if device:
        body["deviceId"] = device
    if placement:
        body["placement"] = placement
    t0 = time.time()
    status, m = call(url, "POST", "/api/memory/models", body)
    if status != 202:
        return {"state": "refused", "status": status, "error": m}
    m = wait_model(url, name)
    m["wall_seconds"] = time.time() - t0
    return m


def show(name, size, e, m):
    est = (f"estimate {e.get('deviceId')} fits={e.get('fits')} new {gib(e.get('newBytes', 0))} "
           f"room {gib(e.get('roomBytes', 0))} evict {[v.get('name') for v in e.get('evict', [])]}"
           if "error" not in e else f"estimate error {e}")
    placed = (f"placed {m.get('deviceId')} {m.get('state')} vram {gib(m.get('vramBytes', 0))} "
              f"in {m.get('wall_seconds', 0):.1f} s" if m.get("state") == "Loaded"
              else f"{m.get('state')}: {m.get('error')}")
    print(f"  {name:10} {gib(size):>10}  {est}\n  {'':10} {'':>10}  {placed}")


def cmd_models(url, root, kind, out_json, pcts="33,34,35"):
    devs = devices(url, kind)
    result = {"devices": [{"deviceId": d["deviceId"], "totalBytes": d["totalBytes"]} for d in devs]}
    if not devs:
        print(f"models: no {kind} device")
        return 1
    os.makedirs(root, exist_ok=True)
    ok = True
    largest = max(d["totalBytes"] for d in devs)
    smallest = min(d["totalBytes"] for d in devs)

    # A model no one device can hold: refused, with the numbers.
    huge = (largest + largest // 20) // (1 << 20) << 20
    path = os.path.join(root, "too-large.safetensors")
    huge = write_model(path, huge)
    e = estimate(url, "too-large", "too-large.safetensors")
    m = load(url, "too-large", "too-large.safetensors")
    # Refused at placement (out_of_memory, every device's capacity named),
    # by the estimate and by the load alike, before anything is evicted.
    said = json.dumps(e.get("error", "")) + " " + json.dumps(m.get("error", ""))
    refused = (m.get("state") in ("Failed", "refused") and "error" in e and "out_of_memory" in said
               and "no device is that large" in said)
    print(f"refused model: {gib(huge)} (largest device {gib(largest)}): estimate {e.get('status')} "
          f"{e.get('error')}; load {m.get('state')}: {m.get('error')}  {'PASS' if refused else 'FAIL'}")
    result["refused"] = {"bytes": huge, "estimate": e, "load": {k: m.get(k) for k in ("state", "error", "deviceId")},
                         "pass": refused}
    ok = ok and refused
    call(url, "DELETE", "/api/memory/models/too-large")
    os.remove(path)

    if len(devs) < 2:
        print("skipped: 1 GPU (model placement across GPUs: three models that fit only when spread)")
        result["placement"] = "skipped: 1 GPU"
    else:
        models = []
        for i, pct in enumerate(int(p) for p in pcts.split(",")):
            size = (smallest * pct // 100) >> 20 << 20
            name = f"spread-{i}"
            size = write_model(os.path.join(root, name + ".safetensors"), size)
            models.append((name, name + ".safetensors", size))
        total = sum(s for _, _, s in models)
        print(f"three models {', '.join(gib(s) for _, _, s in models)} = {gib(total)} "
              f"(more than any one device: {total > largest})")
        result["models"] = [{"name": n, "bytes": s} for n, _, s in models]
        result["more_than_one_device"] = total > largest
        # The three must not fit on one device. (Until session 15 the
        # stand-ins needed half-size models: the monitor's sample counted
        # memd's exportable allocations as another process's, so every
        # resident model counted twice in the room; fixed there.)
        ok = ok and total > largest
        # spread and fit are memd's placements (deviceId left out); by hand
        # puts model i on device i mod N. Each must place all three without
        # evicting any, on two devices or more.
        how = {"spread": "placement spread: the most room", "fit": "placement fit: the least room that holds it",
               "hand": "deviceId given: model i on device i mod N"}
        for mode in ("spread", "fit", "hand"):
            print(f"placement {mode} ({how[mode]}):")
            rows, used = [], set()
            for i, (name, path, size) in enumerate(models):
                device = devs[i % len(devs)]["deviceId"] if mode == "hand" else None
                placement = None if mode == "hand" else mode
                e = estimate(url, name, path, device, placement)
                m = load(url, name, path, device, placement)
                show(name, size, e, m)
                good = m.get("state") == "Loaded" and m.get("vramBytes", 0) >= size and not e.get("evict")
                if device:
                    good = good and m.get("deviceId") == device
                used.add(m.get("deviceId"))
                if not device:
                    good = good and m.get("deviceId") == e.get("deviceId")  # placed where estimated
                rows.append({"name": name, "bytes": size, "asked": device or placement, "estimate": e,
                             "placed": {k: m.get(k) for k in ("state", "deviceId", "vramBytes", "ramBytes", "error",
                                                               "loadSeconds", "loadGBps", "wall_seconds")},
                             "pass": good})
                ok = ok and good
            # fit packs: the three land on one device when one holds them
            # all (PCTS summing under 100), on two when they are more than
            # one holds.
            if mode == "fit" and total <= largest:
                spread = len(used) == 1
            else:
                spread = len(used) >= 2
            ok = ok and spread
            print(f"  devices used: {sorted(str(u) for u in used)}  {'PASS' if spread and all(r['pass'] for r in rows) else 'FAIL'}")
            result[mode] = {"rows": rows, "devices_used": sorted(str(u) for u in used)}
            for name, _, _ in models:
                call(url, "DELETE", f"/api/memory/models/{name}")
        for _, path, _ in models:
            os.remove(os.path.join(root, path))
    result["pass"] = ok
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)
    return 0 if ok else 1


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    url, what, rest = argv[1], argv[2], argv[3:]
    if what == "devices" and len(rest) == 1:
        return cmd_devices(url, *rest)
    if what == "move" and len(rest) == 4:
        return cmd_move(url, *rest)
    if what == "models" and len(rest) in (3, 4):
        return cmd_models(url, *rest)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
