#!/usr/bin/env python3
"""memd-load with 1,000 event subscribers against a daemon it spawns (issue 14;
ctest `load_sse`, label load).

A small allocate/write/read/free load (4 clients, 10 s) runs while 1,000
subscribers of GET /api/memory/events?kinds=limit_reached are held open and a
script of 100 refused allocations publishes one limit_reached event each:
memd-load must exit 0, and its JSON report must say that every subscriber
connected and received all 100 script events in order, none lost, with the
status probe answered throughout. Exit 77 (a ctest skip) when the daemon has
no event stream (GET /api/memory/events answers 404).

usage: load_sse_e2e.py MEMD_LOAD MEMD
"""
import json
import os
import subprocess
import sys
import tempfile

SKIP = 77
SUBSCRIBERS = 1000
SCRIPT = 100


def main():
    load, memd = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="memd-load-sse-") as tmp:
        report_path = os.path.join(tmp, "report.json")
        cmd = [load, "--spawn", memd, "--idle", "0", "--slow", "0", "--big-count", "1", "--big-size", "16MiB",
               "--clients", "4", "--cycle-size", "1MiB", "--duration", "10s", "--ramp-timeout", "30s",
               "--rss-limit", "2GiB", "--progress", "0", "--deadline", "55s",
               "--sse-subscribers", str(SUBSCRIBERS), "--sse-script", str(SCRIPT),
               "--json", report_path, "--daemon-log", os.path.join(tmp, "memd.log")]
        print(" ".join(cmd), flush=True)
        try:
            run = subprocess.run(cmd, timeout=80, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except subprocess.TimeoutExpired:
            print("FAIL: memd-load did not finish within 80 s")
            return 1
        print(run.stdout)
        try:
            with open(report_path) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            print(f"FAIL: no JSON report ({e}); memd-load exited {run.returncode}")
            return 1
        sse = report.get("sse")
        if sse is None:
            print("FAIL: the report has no sse section")
            return 1
        if sse.get("unavailable"):
            print("SKIP: GET /api/memory/events answered 404: this daemon has no event stream yet")
            return SKIP
        checks = [
            (run.returncode == 0, f"memd-load exited {run.returncode}"),
            (report.get("ok") is True, f"report not ok: {report.get('failures')}"),
            (sse["connected"] == SUBSCRIBERS, f"{sse['connected']} of {SUBSCRIBERS} subscribers connected"),
            (sse["script"]["refused"] == SCRIPT, f"script: {sse['script']}"),
            (sse["receivedMin"] == SCRIPT and sse["receivedMax"] == SCRIPT,
             f"events per subscriber {sse['receivedMin']}..{sse['receivedMax']}, expected {SCRIPT}"),
            (sse["complete"] == SUBSCRIBERS, f"{sse['complete']} subscribers complete"),
            (sse["missing"] == 0 and sse["misordered"] == 0 and sse["broken"] == 0,
             f"missing {sse['missing']}, misordered {sse['misordered']}, broken {sse['broken']}"),
            (sse["lostEvents"] == 0, f"{sse['lostEvents']} events lost"),
            (sse["deliveryLatency"]["count"] == SUBSCRIBERS * SCRIPT,
             f"{sse['deliveryLatency']['count']} delivery samples"),
            (report["statusLatency"]["keepAlive"]["count"] > 0, "no status probe answer"),
            (report["cycles"]["completed"] > 0, "no cycle completed"),
        ]
        failed = [why for ok, why in checks if not ok]
        for why in failed:
            print("FAIL:", why)
        d = sse["deliveryLatency"]
        print(f"delivery p50 {d['p50Ms']:.3f} ms p99 {d['p99Ms']:.3f} ms max {d['maxMs']:.3f} ms; "
              f"status p99 kept alive {report['statusLatency']['keepAlive']['p99Ms']:.3f} ms "
              f"with {sse['connected']} subscribers")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
