#!/usr/bin/env python3
"""The web dashboard in headless Chromium (ctest `dashboard_browser`, label
browser; issue 16 item 5).

Starts `memd serve` (host device only) and Chromium with its DevTools
protocol on a random port, opens the dashboard at GET /, then through the
REST API allocates and frees memory and checks, in the page's DOM, that the
device card's numbers and the memory map's blocks follow; that the event
stream, the history, a finished copy (transfers table), a loaded model
(models table, by tier, load done) and the optimize button reach the page;
and, against a second daemon with --token, that the page shows the 401 and
works once the token is typed in. Then the page
redraws a synthetic map of 100,000 blocks (window.memdDashboard.
benchmarkRedraw) and this prints the time it measured; it is reported, not
asserted (a shared CI machine's timing is not a pass/fail signal). Last, a
screenshot of the page goes under the build tree and its path is printed.

Standard library only: the DevTools protocol is spoken over a minimal
WebSocket client written here (handshake, masked text frames out, text
frames in). Exit 77 (a ctest skip) when no Chromium is installed.

usage: dashboard_test.py MEMD SCREENSHOT_PATH
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
MiB = 1 << 20
DEADLINE = time.monotonic() + 55  # the whole test, so ctest's 60 s timeout never cuts it silently


def chromium_binary():
    path = os.environ.get("MEMD_CHROMIUM")
    if path:
        return path
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class WebSocket:
    """A WebSocket client (RFC 6455), just enough for the DevTools protocol."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, timeout=30):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("WebSocket handshake: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"WebSocket handshake refused: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        fields = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        if fields.get("sec-websocket-accept") != accept:
            raise ConnectionError("WebSocket handshake: wrong Sec-WebSocket-Accept")

    def _frame(self, opcode, payload):
        # A client masks every frame it sends (RFC 6455 5.3).
        head = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head.append(0x80 | 126)
            head += struct.pack(">H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack(">Q", n)
        mask = os.urandom(4)
        head += mask
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(bytes(head) + masked)

    def send(self, text):
        self._frame(0x1, text.encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("WebSocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """One whole text message (continuation frames joined; pings answered)."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
            if opcode == 0x9:  # ping
                self._frame(0xA, data)
                continue
            if opcode == 0x8:
                raise ConnectionError("WebSocket closed by the browser")
            if opcode in (0x0, 0x1, 0x2):
                message += data
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class DevTools:
    """Commands to one page target; events are dropped but page errors kept."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.page_errors = []

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                self.page_errors.append(details.get("exception", {}).get("description") or details.get("text"))

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page: {expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, what, timeout=15):
        """Polls a page expression until it is truthy; returns its value."""
        until = min(time.monotonic() + timeout, DEADLINE)
        last = None
        while time.monotonic() < until:
            last = self.evaluate(expression)
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} (last value {last!r}); page errors: {self.page_errors}")


def rest(base, method, path, body=None, owner=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if owner:
        req.add_header("X-Memd-Owner", owner)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def write_safetensors(path, tensors):
    """A safetensors file: 8-byte little-endian header length, the JSON
    header (padded to 8 bytes), then the tensors' bytes."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def start_memd(memd, tmp, extra=(), log_name="memd.log", before=()):
    log = open(os.path.join(tmp, log_name), "w")
    proc = subprocess.Popen([memd, "--no-cuda", "--host-device", "64MiB", *before, "serve", "--listen", "127.0.0.1:0",
                             *extra],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    timer = threading.Timer(20, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            m = re.match(r"memd listening on (http://\S+)", line)
            if m:
                return proc, m.group(1)
    finally:
        timer.cancel()
    raise RuntimeError("memd serve did not start (see memd.log)")


def start_chromium(binary, tmp):
    profile = os.path.join(tmp, "profile")
    cmd = [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
           "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
           "--window-size=1400,2200", "about:blank"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (containers, CI)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(20, proc.kill)
    timer.start()
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                # Keep draining stderr so Chromium never blocks on a full pipe.
                threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
                return proc, m.group(1)
    finally:
        timer.cancel()
    raise RuntimeError("Chromium did not start: " + "".join(seen[-20:]))


def page_target(browser_ws_url):
    # The page Chromium opened (about:blank), from its /json/list.
    u = urllib.parse.urlparse(browser_ws_url)
    with urllib.request.urlopen(f"http://{u.hostname}:{u.port}/json/list", timeout=10) as r:
        targets = json.loads(r.read())
    for t in targets:
        if t.get("type") == "page":
            return t["webSocketDebuggerUrl"]
    raise RuntimeError(f"no page target among {targets}")


CARD = "document.querySelector('.device[data-device-id=\"host:0\"]')"
MAP = "document.getElementById('blockmap')"


def numbers(dt):
    return dt.evaluate(
        f"(() => {{ const c = {CARD}, m = {MAP}; if (!c || !m.dataset.generation) return null;"
        " return {allocated: +c.dataset.allocatedBytes, reserved: +c.dataset.reservedBytes,"
        " used: +c.dataset.usedBytes, free: +c.dataset.freeBytes, pressure: +c.dataset.pressurePercent,"
        " level: c.dataset.pressureLevel, blocks: +m.dataset.blockCount, allocatedBlocks: +m.dataset.allocatedBlocks,"
        " live: +m.dataset.liveBytes, fragmentation: +m.dataset.fragmentation, generation: +m.dataset.generation,"
        " mapDevice: m.dataset.deviceId, history: +document.getElementById('history').dataset.count,"
        " events: +document.getElementById('events').dataset.count}; })()")


def main():
    memd, screenshot = sys.argv[1], sys.argv[2]
    chromium = chromium_binary()
    if chromium is None:
        print("SKIP: no Chromium found (install Debian's `chromium`, or set MEMD_CHROMIUM); "
              "the dashboard's browser test did not run")
        return SKIP
    failures = []

    def check(ok, why):
        print(("ok   " if ok else "FAIL ") + why, flush=True)
        if not ok:
            failures.append(why)

    with tempfile.TemporaryDirectory(prefix="memd-dashboard-") as tmp:
        models = os.path.join(tmp, "models")
        os.makedirs(models)
        write_safetensors(os.path.join(models, "tiny.safetensors"),
                          {"w": ("F32", [256, 1024], bytes(range(256)) * 4096),
                           "b": ("F32", [1024], bytes(4096))})
        memd_proc, base = start_memd(memd, tmp, before=("--model-root", models))
        chrome = None
        ws = None
        try:
            chrome, browser_url = start_chromium(chromium, tmp)
            ws = WebSocket(page_target(browser_url))
            dt = DevTools(ws)
            dt.call("Runtime.enable")
            dt.call("Page.enable")
            dt.call("Emulation.setDeviceMetricsOverride", width=1400, height=2200, deviceScaleFactor=1, mobile=False)
            started = time.monotonic()
            dt.call("Page.navigate", url=base + "/")
            dt.wait_for("document.readyState === 'complete' && !!window.memdDashboard", "the page to load")
            dt.wait_for(f"(() => {{ const m = {MAP}; return +m.dataset.generation >= 1 &&"
                        f" m.dataset.deviceId === 'host:0' && !!{CARD}; }})()", "the first map")
            before = numbers(dt)
            print(f"page up in {time.monotonic() - started:.2f} s: {before}", flush=True)
            check(before["mapDevice"] == "host:0", "the map shows host:0")

            # Allocate: 40 MiB and 4 MiB of the 64 MiB device (pressure
            # crosses Moderate at 60%: a pressure_changed event).
            a = rest(base, "POST", "/api/memory/allocations",
                     {"sizeBytes": "40MiB", "deviceId": "host:0", "name": "browser-big"})
            b = rest(base, "POST", "/api/memory/allocations",
                     {"sizeBytes": "4MiB", "deviceId": "host:0", "name": "browser-small"})
            want_blocks = before["allocatedBlocks"] + 2
            grown = dt.wait_for(
                f"(() => {{ const c = {CARD}, m = {MAP};"
                f" return +c.dataset.allocatedBytes >= {before['allocated'] + 44 * MiB} &&"
                f" +m.dataset.allocatedBlocks === {want_blocks} && +m.dataset.liveBytes >= {before['live'] + 44 * MiB}; }})()",
                "the card and the map to show 44 MiB more in 2 more blocks")
            after_alloc = numbers(dt)
            print(f"after allocating: {after_alloc}", flush=True)
            check(bool(grown), "allocated bytes and the map's allocated blocks grew by the two allocations")
            check(after_alloc["fragmentation"] >= 0 and after_alloc["fragmentation"] <= 1, "fragmentation is a ratio")
            for alloc in (a, b):
                check(bool(dt.wait_for(f"!!document.querySelector('#history tr[data-allocation-id=\"{alloc['allocationId']}\"]"
                                       "[data-kind=\"allocate\"]')", f"history row of {alloc['name']}")),
                      f"the history table lists the allocation of {alloc['name']}")
            check(bool(dt.wait_for("!!document.querySelector('#events li[data-kind=\"pressure_changed\"]')",
                                   "a pressure_changed event in the list")),
                  "the event stream delivered pressure_changed to the page")
            check(bool(dt.wait_for(f"+{CARD}.dataset.pressurePercent > 60", "pressure over 60%")),
                  "the card's pressure follows")

            # Free both: the numbers and the map go back.
            for alloc in (a, b):
                rest(base, "DELETE", "/api/memory/allocations/" + alloc["allocationId"])
            shrunk = dt.wait_for(
                f"(() => {{ const c = {CARD}, m = {MAP};"
                f" return +c.dataset.allocatedBytes <= {before['allocated']} &&"
                f" +m.dataset.allocatedBlocks === {before['allocatedBlocks']}; }})()",
                "the card and the map to drop the freed blocks")
            after_free = numbers(dt)
            print(f"after freeing: {after_free}", flush=True)
            check(bool(shrunk), "freeing brought allocated bytes and allocated blocks back")
            check(after_free["live"] < after_alloc["live"], "the map's live bytes fell")

            # A copy between two allocations: its report reaches the
            # transfers table (through its transfer_completed event).
            src = rest(base, "POST", "/api/memory/allocations", {"sizeBytes": "1MiB", "deviceId": "host:0"})
            dst = rest(base, "POST", "/api/memory/allocations", {"sizeBytes": "1MiB", "deviceId": "host:0"})
            t = rest(base, "POST", "/api/memory/transfers",
                     {"sourceAllocationId": src["allocationId"], "destinationAllocationId": dst["allocationId"],
                      "sizeBytes": "1MiB"})
            check(bool(dt.wait_for(f"document.getElementById('transfers').textContent.includes('{t['transferId']}')"
                                   " && document.getElementById('transfers').textContent.includes('Completed')",
                                   "the copy in the transfers table")),
                  "the finished copy shows in the transfers table")
            for alloc in (src, dst):
                rest(base, "DELETE", "/api/memory/allocations/" + alloc["allocationId"])

            # A model: its row under its tier, its load done.
            rest(base, "POST", "/api/memory/models", {"name": "tiny", "path": "tiny.safetensors", "deviceId": "host:0"})
            row = dt.wait_for("(() => { const r = document.querySelector('#models tr[data-model=\"tiny\"]');"
                              " return r && r.dataset.tier === 'VRAM' && r.textContent.includes('done') ?"
                              " r.textContent : null; })()", "the model's row in VRAM, its load done")
            check(bool(row), f"the models table shows the loaded model by tier with its progress: {row}")
            rest(base, "DELETE", "/api/memory/models/tiny")

            # The optimize button answers (anyone may ask; no token here).
            dt.evaluate("document.getElementById('optimize').click()")
            state = dt.wait_for("(() => { const s = document.getElementById('action-result').dataset.state;"
                                " return s === 'ok' || s === 'error' ? s : null; })()", "the optimize answer")
            check(state == "ok", f"optimize answered ({state}): " +
                  str(dt.evaluate("document.getElementById('action-result').textContent"))[:120])

            # 100,000 blocks: measured by the page, printed, not asserted.
            bench = dt.evaluate("JSON.stringify(window.memdDashboard.benchmarkRedraw(100000, 9))")
            bench = json.loads(bench)
            print(f"REDRAW 100,000-block map: median {bench['medianMs']:.1f} ms, min {bench['minMs']:.1f} ms, "
                  f"max {bench['maxMs']:.1f} ms, first {bench['firstMs']:.1f} ms over {bench['runs']} runs "
                  f"(canvas {bench['canvas'][0]}x{bench['canvas'][1]}, headless Chromium; goal <= 100 ms)", flush=True)
            check(bench["blocks"] == 100000, "the synthetic map had 100,000 blocks")
            dt.wait_for(f"+{MAP}.dataset.generation > {after_free['generation']}", "the live map drawn again")

            # Two owners and a hole, seen as the admin: the map names each
            # owner (the legend) and draws their blocks; then the screenshot.
            dt.evaluate("document.getElementById('admin').click()")
            made = [rest(base, "POST", "/api/memory/allocations", {"sizeBytes": size, "deviceId": "host:0", "name": name},
                         owner) for size, name, owner in
                    (("6MiB", "weights", "alice"), ("3MiB", "kv-cache", "bob"), ("5MiB", "activations", "alice"),
                     ("2MiB", "<img id=xss src=x onerror=window.pwned=1>", "<b id=xss2>bob</b>"))]
            rest(base, "DELETE", "/api/memory/allocations/" + made[1]["allocationId"], owner="bob")
            # Names and owners are whatever clients chose: the page shows them
            # as text, never as markup.
            check(bool(dt.wait_for("document.getElementById('history').textContent.includes('<img id=xss')",
                                   "the hostile name in the history, as text")) and
                  dt.evaluate("!document.getElementById('xss') && !document.getElementById('xss2') && !window.pwned"),
                  "a name and an owner holding HTML are shown as text, not run")
            check(bool(dt.wait_for(
                f"(() => {{ const m = {MAP}, l = document.getElementById('map-legend').textContent;"
                " return +m.dataset.allocatedBlocks === 3 && l.includes('owner alice') && l.includes('owner <b id=xss2>') &&"
                f" +{CARD}.dataset.allocatedBytes >= {13 * MiB}; }})()",
                "3 allocated blocks of two owners in the map")),
                "the map shows the three live blocks and names both owners (admin view)")

            shot = dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            print(f"SCREENSHOT {os.path.abspath(screenshot)}", flush=True)
            check(not dt.page_errors, f"no script errors on the page: {dt.page_errors}")

            # A daemon that wants a token: the page loads without one, shows
            # the refusal, and works once the token is typed in.
            guarded, guarded_url = start_memd(memd, tmp, ("--token", "dash-secret"), "memd-token.log")
            try:
                dt.evaluate("sessionStorage.clear()")
                dt.call("Page.navigate", url=guarded_url + "/")
                dt.wait_for("document.readyState === 'complete' && !!window.memdDashboard", "the page (token daemon)")
                refused = dt.wait_for("(() => { const c = document.getElementById('connection');"
                                      " return c.dataset.state === 'error' && c.textContent.includes('unauthenticated')"
                                      " ? c.textContent : null; })()", "the page to show the 401")
                check(bool(refused), f"without a token the page shows the refusal: {refused}")
                dt.evaluate("document.getElementById('optimize').click()")
                status = dt.wait_for("(() => { const r = document.getElementById('action-result');"
                                     " return r.dataset.state === 'error' ? r.dataset.status : null; })()",
                                     "the optimize refusal")
                check(status == "401", f"the optimize button shows its refusal (status {status})")
                dt.evaluate("document.getElementById('token').value = 'dash-secret';"
                            " document.getElementById('token-form').requestSubmit()")
                check(bool(dt.wait_for(f"(() => {{ const c = {CARD}; return !!c && +{MAP}.dataset.generation >= 1 &&"
                                       " document.getElementById('connection').dataset.state === 'live'; })()",
                                       "the page to work with the token")),
                      "with the token typed in, the cards, the map and the event stream work")
            finally:
                guarded.terminate()
                try:
                    guarded.wait(15)
                except subprocess.TimeoutExpired:
                    guarded.kill()
        except (AssertionError, RuntimeError, ConnectionError, OSError, urllib.error.URLError) as e:
            failures.append(str(e))
            print(f"FAIL {e}", flush=True)
        finally:
            if ws:
                ws.close()
            if chrome:
                chrome.terminate()
                try:
                    chrome.wait(10)
                except subprocess.TimeoutExpired:
                    chrome.kill()
            memd_proc.terminate()
            try:
                memd_proc.wait(15)
            except subprocess.TimeoutExpired:
                memd_proc.kill()
            if failures:
                with open(os.path.join(tmp, "memd.log")) as f:
                    print("memd log (last lines):\n" + "".join(f.readlines()[-30:]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
