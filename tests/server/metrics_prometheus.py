#!/usr/bin/env python3
"""GET /metrics read by a strict parser (issue 16 item 4; ctest `metrics_prometheus`).

Starts `memd serve` on a host device (no CUDA, the monitor sampling only at
start, so the device numbers hold still between two requests), allocates,
frees, copies and opens a session through the REST API, then parses
/metrics with prometheus_client's parser (Debian python3-prometheus-client;
it raises on any line the text format does not allow) and checks that:
  * the answer is 200 with the 0.0.4 text content type;
  * every family is memd_*, typed counter/gauge/histogram, with help text;
  * the values equal what GET /api/memory/status answers (bytes and counts
    per device and per pool, transfers) and what the requests did (sessions,
    leased bytes, copies, the refused allocation);
  * POST /metrics is 405 with the JSON error body and the daemon goes on.
Exit 77 (a ctest skip) when prometheus_client is not installed.

usage: metrics_prometheus.py MEMD
"""
import json
import subprocess
import sys
import urllib.error
import urllib.request

SKIP = 77
MiB = 1 << 20

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("SKIP: python3-prometheus-client is not installed (scripts/bootstrap installs it)")
    sys.exit(SKIP)


def main():
    memd = sys.argv[1]
    daemon = subprocess.Popen([memd, "--no-cuda", "--host-device", "256MiB", "--monitor-interval", "0", "serve",
                               "--listen", "127.0.0.1:0", "--socket", "off"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = None
        for _ in range(3):
            line = daemon.stdout.readline()
            if "http://" in line:
                url = line[line.index("http://"):].split()[0].strip()
                break
        if url is None:
            print("FAIL: no banner from memd serve")
            return 1
        return check(url)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()


def request(url, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def call(url, method, path, body=None, headers=None, expect=(200, 201)):
    status, _, raw = request(url, method, path, body, headers)
    if status not in expect:
        raise AssertionError(f"{method} {path}: {status} {raw[:300]!r}")
    return json.loads(raw or b"{}")


def scrape(url):
    status, headers, raw = request(url, "GET", "/metrics")
    assert status == 200, f"GET /metrics: {status}"
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type")
    assert ctype == "text/plain; version=0.0.4; charset=utf-8", ctype
    text = raw.decode("utf-8")
    families = list(text_string_to_metric_families(text))  # raises on a malformed line
    samples = {}
    for f in families:
        assert f.name.startswith("memd_"), f.name
        assert f.type in ("counter", "gauge", "histogram"), (f.name, f.type)
        assert f.documentation, f"{f.name} has no help text"
        for s in f.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"sample twice: {key}"
            samples[key] = s.value
    return families, samples


def value(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise AssertionError(f"no sample {name}{labels}")
    return samples[key]


def check(url):
    owner = {"X-Memd-Owner": "alice"}
    a = call(url, "POST", "/api/memory/allocations", {"sizeBytes": 3 * MiB, "deviceId": "host:0",
                                                      "memoryType": "VRAM"}, owner)
    b = call(url, "POST", "/api/memory/allocations", {"sizeBytes": 3 * MiB, "deviceId": "host:0",
                                                      "memoryType": "VRAM"}, owner)
    c = call(url, "POST", "/api/memory/allocations", {"sizeBytes": 5000, "deviceId": "host:0"}, owner)
    call(url, "POST", "/api/memory/allocations", {"sizeBytes": MiB, "deviceId": "cpu", "memoryType": "RAM"}, owner)
    call(url, "DELETE", f"/api/memory/allocations/{c['allocationId']}", None, owner)
    call(url, "POST", "/api/memory/copy", {"sourceAllocationId": a["allocationId"],
                                           "destinationAllocationId": b["allocationId"]}, owner)
    session = call(url, "POST", "/api/sessions", {"ttlSeconds": 600}, owner)
    in_session = dict(owner, **{"X-Memd-Session": session["sessionId"]})
    call(url, "POST", "/api/memory/allocations", {"sizeBytes": 2 * MiB, "deviceId": "host:0"}, in_session)
    refused = request(url, "POST", "/api/memory/allocations", {"sizeBytes": 4096 * MiB, "deviceId": "host:0"},
                      owner)
    assert refused[0] == 507, refused

    before = call(url, "GET", "/api/memory/status")
    families, samples = scrape(url)
    after = call(url, "GET", "/api/memory/status")
    assert before == after, "status moved while nothing happened"
    status = after

    names = {f.name for f in families}
    for expected in ("memd_device_total_bytes", "memd_pool_allocations", "memd_transfer_duration_seconds",
                     "memd_model_bytes", "memd_sessions_open"):
        assert expected in names, f"{expected} missing from {sorted(names)}"

    for d in status["devices"]:
        dev = d["deviceId"]
        for field, metric in (("totalBytes", "memd_device_total_bytes"), ("usedBytes", "memd_device_used_bytes"),
                              ("freeBytes", "memd_device_free_bytes"),
                              ("reservedBytes", "memd_device_reserved_bytes"),
                              ("allocatedBytes", "memd_device_allocated_bytes"),
                              ("allocations", "memd_device_allocations"),
                              ("fragmentation", "memd_device_fragmentation_ratio")):
            got = value(samples, metric, device=dev)
            # Byte counts are integers below 2**53: exact. A ratio is written
            # with 16 significant digits, JSON with the 17 of a round trip.
            close = abs(got - d[field]) <= 1e-12 if field == "fragmentation" else got == d[field]
            assert close, f"{metric}{{device={dev}}} = {got}, status says {field} = {d[field]}"
        for p in d["pools"]:
            labels = {"device": dev, "memory_type": p["memoryType"]}
            for field, metric in (("allocatedBytes", "memd_pool_allocated_bytes"),
                                  ("reservedBytes", "memd_pool_reserved_bytes"),
                                  ("liveAllocations", "memd_pool_live_allocations"),
                                  ("totalAllocations", "memd_pool_allocations_total"),
                                  ("totalFrees", "memd_pool_frees_total"),
                                  ("failedAllocations", "memd_pool_failed_allocations_total")):
                got = value(samples, metric, **labels)
                assert got == p[field], f"{metric}{labels} = {got}, status says {field} = {p[field]}"

    host0 = next(d for d in status["devices"] if d["deviceId"] == "host:0")
    assert host0["allocations"] == 3, host0["allocations"]  # a, b and the session's
    vram = next(p for p in host0["pools"] if p["memoryType"] == "VRAM")
    assert vram["totalAllocations"] == 4 and vram["totalFrees"] == 1, vram
    assert value(samples, "memd_allocation_failures_total", device="host:0", code="out_of_memory") == 1
    t = status["transfers"]
    assert value(samples, "memd_copies_total") == t["copies"] == 1
    assert value(samples, "memd_transfer_bytes_total") == t["bytesCopied"] == 3 * MiB
    assert value(samples, "memd_transfer_duration_seconds_count") == 1
    assert value(samples, "memd_transfer_duration_seconds_sum") > 0
    assert value(samples, "memd_transfers_finished_total", status="Completed") == t["completed"]
    assert value(samples, "memd_sessions_open") == 1
    assert value(samples, "memd_session_allocations") == 1
    assert value(samples, "memd_session_leased_bytes") == 2 * MiB
    assert value(samples, "memd_device_pressure_state", device="host:0", level="Low") + \
        value(samples, "memd_device_pressure_state", device="host:0", level="Moderate") + \
        value(samples, "memd_device_pressure_state", device="host:0", level="High") + \
        value(samples, "memd_device_pressure_state", device="host:0", level="Critical") == 1

    # Hostile: another method is the server's 405 with its JSON error body.
    status_code, headers, raw = request(url, "POST", "/metrics", {})
    assert status_code == 405, status_code
    assert json.loads(raw)["error"]["code"] == "method_not_allowed", raw
    assert {k.lower(): v for k, v in headers.items()}.get("allow") == "GET, HEAD", headers
    scrape(url)  # and it keeps serving
    print(f"PASS: {len(families)} families, {len(samples)} samples parsed; values equal memory_status's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
