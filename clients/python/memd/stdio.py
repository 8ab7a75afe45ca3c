"""memd.StdioClient: spawn `memd stdio` and speak its JSON lines.

    with memd.StdioClient(["memd", "stdio"]) as c:      # or [..., "--connect", URL]
        a = c.memory_allocate(size_bytes=4096)
        c.memory_write(a["allocationId"], b"hi")        # sent as base64
        c.memory_read(a["allocationId"], length=2)      # -> b"hi"

Requests carry ids ("1", "2", ...); one reader thread matches each response
line to its request by id, so any number of threads may call at once. Event
lines (memory_subscribe) arriving between responses go to every open
events() iterator and every on_event callback. The host process is the
owner (and the admin) of an in-process engine; closing the client closes
stdin, and memd frees everything it allocated and exits.
"""
import base64
import itertools
import json
import queue
import subprocess
import threading

from ._common import ClientBase
from ._methods import SPECS, install
from .errors import TransportError, error_from

_END = object()


class _Pending:
    __slots__ = ("done", "answer")

    def __init__(self):
        self.done = threading.Event()
        self.answer = None


class StdioClient(ClientBase):
    """cmd: the command to spawn (default ["memd", "stdio"]); timeout:
    seconds to wait for each answer; stderr: where memd's log goes (a file
    object, subprocess.DEVNULL; default: inherited)."""

    def __init__(self, cmd=None, *, timeout=30.0, stderr=None, env=None):
        self.cmd = list(cmd) if cmd else ["memd", "stdio"]
        self.timeout = timeout
        try:
            self._proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                          env=env, bufsize=0)
        except OSError as e:
            raise TransportError(f"cannot start {self.cmd[0]}: {e}") from e
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending = {}
        self._listeners = []  # queues of events() iterators
        self._callbacks = []
        self._gone = None  # why the process stopped answering
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="memd-stdio-reader")
        self._reader.start()

    # -- the line protocol ----------------------------------------------------

    def _read_loop(self):
        stream = self._proc.stdout
        try:
            for raw in stream:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue  # not a protocol line
                if not isinstance(line, dict):
                    continue
                if "event" in line and "ok" not in line:
                    self._deliver(line)
                    continue
                with self._state_lock:
                    pending = self._pending.pop(str(line.get("id")), None)
                if pending is not None:
                    pending.answer = line
                    pending.done.set()
        except (OSError, ValueError):
            pass
        finally:
            with self._state_lock:
                self._gone = self._gone or f"{self.cmd[0]} closed its output (exit status {self._proc.poll()})"
                pending, self._pending = list(self._pending.values()), {}
                listeners = list(self._listeners)
            for p in pending:
                p.done.set()
            for q in listeners:
                q.put(_END)

    def _deliver(self, event):
        with self._state_lock:
            listeners, callbacks = list(self._listeners), list(self._callbacks)
        for q in listeners:
            q.put(event)
        for fn in callbacks:
            try:
                fn(event)
            except Exception:  # a subscriber's bug must not stop the reader
                pass

    def request(self, action, params=None, session=None):
        """Sends one request line; its result, or the typed error."""
        request_id = str(next(self._ids))
        line = {"id": request_id, "action": action, "params": params or {}}
        session = session if session is not None else self._session
        if session is not None:
            line["session"] = session
        pending = _Pending()
        with self._state_lock:
            if self._gone:
                raise TransportError(self._gone)
            self._pending[request_id] = pending
        data = (json.dumps(line) + "\n").encode()
        try:
            with self._write_lock:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
        except (OSError, ValueError) as e:
            with self._state_lock:
                self._pending.pop(request_id, None)
            raise TransportError(f"{self.cmd[0]} is gone: {e}") from e
        if not pending.done.wait(self.timeout):
            with self._state_lock:
                self._pending.pop(request_id, None)
            raise TransportError(f"{action}: no answer in {self.timeout} s")
        answer = pending.answer
        if answer is None:
            raise TransportError(self._gone or f"{self.cmd[0]} stopped")
        if not answer.get("ok"):
            raise error_from(answer.get("error"), None)
        result = answer.get("result")
        return result if result is not None else {}

    def _run_action(self, spec, params):
        if spec.name == "memory_write" and "data" in params and not isinstance(params["data"], str):
            data = params["data"]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"data must be bytes-like (or base64 text), not {type(data).__name__}")
            params["data"] = base64.b64encode(data).decode("ascii")
        result = self.request(spec.name, params)
        if spec.binary_download and isinstance(result, dict) and isinstance(result.get("data"), str):
            return base64.b64decode(result["data"])  # the same bytes REST answers
        return result

    def call(self, action, params=None):
        """Any action by name with wire (camelCase) params; the raw result."""
        if action not in SPECS:
            raise TypeError(f"unknown action {action!r}")
        return self.request(action, dict(params or {}))

    # -- events ---------------------------------------------------------------

    def on_event(self, callback):
        """Calls callback(event) from the reader thread for every event line
        (memory_subscribe decides which arrive). Returns a function that
        removes it."""
        with self._state_lock:
            self._callbacks.append(callback)

        def remove():
            with self._state_lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        return remove

    def events(self, kinds=None, device_id=None, last_event_id=None, *, timeout=None):
        """memory_subscribe with this filter, as an iterator of event objects
        (the same objects as REST's; a loss is {"event": "lost", "data":
        {...}}). memd stdio has one subscription per process: a second
        events() (or memory_subscribe) replaces the filter for all. Closing
        the last iterator unsubscribes. timeout: seconds to wait for the next
        event before TransportError (None: forever)."""
        q = queue.Queue()
        with self._state_lock:
            self._listeners.append(q)
        params = {}
        if kinds is not None:
            params["kinds"] = ",".join(kinds) if isinstance(kinds, (list, tuple)) else kinds
        if device_id is not None:
            params["deviceId"] = device_id
        if last_event_id is not None:
            params["lastEventId"] = last_event_id
        try:
            result = self.request("memory_subscribe", params)
        except BaseException:
            with self._state_lock:
                self._listeners.remove(q)
            raise
        return _StdioEvents(self, q, result, timeout)

    def _drop_listener(self, q):
        with self._state_lock:
            if q in self._listeners:
                self._listeners.remove(q)
            last = not self._listeners and not self._gone
        if last:
            try:
                self.request("memory_unsubscribe", {})
            except TransportError:
                pass

    # -- the process ------------------------------------------------------------

    @property
    def process(self):
        return self._proc

    def close(self, timeout=10.0):
        """Closes stdin (memd frees what this host allocated and exits 0) and
        waits; kills it after timeout. Returns its exit status."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            status = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            status = self._proc.wait()
        self._reader.join(timeout)
        if not self._reader.is_alive():
            self._proc.stdout.close()
        return status


class _StdioEvents:
    def __init__(self, client, q, result, timeout):
        self._client, self._q, self.result, self._timeout = client, q, result, timeout
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        try:
            event = self._q.get(timeout=self._timeout)
        except queue.Empty:
            raise TransportError(f"no event in {self._timeout} s") from None
        if event is _END:
            self._closed = True
            raise StopIteration
        return event

    def close(self):
        if not self._closed:
            self._closed = True
            self._client._drop_listener(self._q)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


install(StdioClient)
