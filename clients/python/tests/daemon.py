"""Test helpers: the memd binary under test and a `memd serve` on an
ephemeral port (host devices only: no GPU needed)."""
import os
import re
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the package from this checkout

HOST_DEVICE = "64MiB"  # host:0's size: an allocation of 100MiB is out_of_memory there


def memd_binary():
    path = os.environ.get("MEMD_BINARY")
    if not path:
        raise unittest.SkipTest("MEMD_BINARY is not set (ctest sets it to the built memd)")
    return path


class Daemon:
    """memd serve --listen 127.0.0.1:0 with a socket door in a temp dir; its
    URL and socket are read from the lines it prints when ready."""

    def __init__(self, extra=()):
        self.dir = tempfile.TemporaryDirectory(prefix="memd-pyclient-")
        self.socket = os.path.join(self.dir.name, "memd.sock")
        self.log = open(os.path.join(self.dir.name, "memd.log"), "w+")
        cmd = [memd_binary(), "--no-cuda", "--host-device", HOST_DEVICE, "serve", "--listen", "127.0.0.1:0",
               "--socket", self.socket, "--event-keepalive", "1", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = None
        lines = []
        timer = threading.Timer(20, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                lines.append(line)
                m = re.match(r"memd listening on (http://\S+)", line)
                if m:
                    self.url = m.group(1)
                if line.startswith("memd exports on unix:"):
                    break
        finally:
            timer.cancel()
        if self.url is None:
            self.stop()
            raise RuntimeError(f"memd serve did not start: {''.join(lines)} {self.read_log()}")

    def read_log(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        self.dir.cleanup()
