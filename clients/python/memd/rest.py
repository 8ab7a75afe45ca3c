"""memd.Client: the REST door (memd serve), standard library only.

    client = memd.Client("http://127.0.0.1:7870", token=None)
    a = client.memory_allocate(size_bytes="1MiB", device_id="host:0")
    client.memory_write(a["allocationId"], b"hello")          # octet-stream body
    client.memory_read(a["allocationId"], length=5)           # -> b"hello"
    client.memory_deallocate(a["allocationId"])

Each thread keeps one HTTP/1.1 keep-alive connection (http.client); a
connection memd closed while idle is reopened once for the next request.
Results are the answer's JSON (dicts); binary downloads (memory_read) are
bytes; errors raise the class of their code (memd.errors).
"""
import base64
import http.client
import json
import socket
import threading
import urllib.parse

from ._common import ClientBase, UnsupportedError
from ._methods import install
from .errors import TransportError, error_from
from .sse import EventStream


def _query_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_query_value(v) for v in value)
    if isinstance(value, (dict,)):
        return json.dumps(value)
    return str(value)


def _payload(value):
    if isinstance(value, str):  # stdio's base64, accepted here too
        return base64.b64decode(value, validate=True)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) if isinstance(value, memoryview) else value
    raise TypeError(f"data must be bytes-like (or base64 text), not {type(value).__name__}")


class Client(ClientBase):
    """A client of memd serve's REST API. token: bearer token (--token /
    --tokens); owner: X-Memd-Owner; admin: X-Memd-Admin: true (a daemon
    without tokens, on loopback); timeout: seconds per request."""

    def __init__(self, url="http://127.0.0.1:7870", token=None, *, owner=None, admin=False, session=None,
                 timeout=30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"memd.Client needs an http:// or https:// URL, not {url!r}")
        self.url = url.rstrip("/")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.token, self.owner, self.admin, self.timeout = token, owner, admin, timeout
        self._session = session
        self._local = threading.local()
        self._all = []  # every thread's connection, for close()
        self._all_lock = threading.Lock()

    # -- connections --------------------------------------------------------

    def _new_connection(self, timeout):
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout)

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_connection(self.timeout)
            self._local.conn = conn
            self._local.used = False
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _drop_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self):
        """Closes every connection this client opened (streams close on their own)."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def headers(self, extra=None):
        h = {}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if self.owner is not None:
            h["X-Memd-Owner"] = self.owner
        if self.admin:
            h["X-Memd-Admin"] = "true"
        if self._session is not None:
            h["X-Memd-Session"] = self._session
        if extra:
            h.update(extra)
        return h

    def request(self, method, target, body=None, content_type=None, binary=False):
        """One request; the answer's JSON (or bytes with binary=True), or the
        typed error. target is the path and query ("/api/memory/usage")."""
        headers = self.headers()
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        for attempt in (0, 1):
            conn = self._connection()
            reused = self._local.used
            try:
                conn.request(method, self._prefix + target, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self._drop_connection()
                if reused and attempt == 0:
                    continue  # memd closed the idle connection: once more on a new one
                raise TransportError(f"{method} {target}: {e}") from e
            except socket.timeout as e:
                self._drop_connection()
                raise TransportError(f"{method} {target}: no answer in {self.timeout} s") from e
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                raise TransportError(f"{method} {target}: {self.url}: {e}") from e
            self._local.used = True
            if response.will_close:
                self._drop_connection()
            break
        if 200 <= response.status < 300:
            if binary:
                return data
            try:
                return json.loads(data) if data else {}
            except ValueError as e:
                raise TransportError(f"{method} {target}: answer is not JSON: {e}") from e
        try:
            error = json.loads(data).get("error")
        except (ValueError, AttributeError):
            error = {"message": data.decode("utf-8", "replace")[:500] or response.reason}
        raise error_from(error, response.status)

    # -- actions ------------------------------------------------------------

    @staticmethod
    def _route(spec, params):
        """The route that carries these params: every path parameter given,
        the most specific first; a read-only route (memory_limits' GET) only
        when nothing but path parameters is given."""
        best = None
        for route in spec.routes:
            if not all(p in params for p in route.path_params):
                continue
            extra = [k for k in params if k not in route.path_params]
            if route.read_only and extra:
                continue
            key = (len(route.path_params), route.read_only)
            if best is None or key > best[0]:
                best = (key, route)
        if best is None:
            raise TypeError(f"{spec.name}: no REST route takes these parameters ({', '.join(params) or 'none'})")
        return best[1]

    def _run_action(self, spec, params):
        if not spec.routes:
            raise UnsupportedError(f"{spec.name} is stdio only (REST has no route for it)")
        if spec.event_stream:
            return self.events(kinds=params.get("kinds"), device_id=params.get("deviceId"),
                               last_event_id=params.get("lastEventId"))
        route = self._route(spec, params)
        path = route.path
        rest = dict(params)
        for name in route.path_params:
            value = str(rest.pop(name))
            if value in ("", ".", ".."):  # would name another route ("/allocations/" is the list)
                raise ValueError(f"{spec.name}: path parameter {name} cannot be {value!r}")
            path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=":@"))
        body = content_type = None
        if route.body == "binaryUpload":
            data = rest.pop("data", None)
            body, content_type = (_payload(data) if data is not None else b""), "application/octet-stream"
        stdio_only = {p.wire for p in spec.params if p.stdio_only}
        rest = {k: v for k, v in rest.items() if k not in stdio_only}
        if route.body == "json" and route.method in ("POST", "PUT"):
            body = json.dumps(rest).encode()
        elif rest:
            path += "?" + urllib.parse.urlencode({k: _query_value(v) for k, v in rest.items()})
        return self.request(route.method, path, body, content_type, binary=route.body == "binaryDownload")

    def call(self, action, params=None):
        """Any action by its stdio name with wire (camelCase) params, as
        memd.Client runs its methods: call("memory_usage")."""
        from ._methods import SPECS

        spec = SPECS.get(action)
        if spec is None:
            raise TypeError(f"unknown action {action!r}")
        return self._run_action(spec, dict(params or {}))

    def events(self, kinds=None, device_id=None, last_event_id=None, *, timeout=None, reconnect=True):
        """Events as they happen (GET /api/memory/events, server-sent events):
        an iterator of event objects {"event", "sequence", "deviceId", "time",
        "data"}; a loss is {"event": "lost", "data": {"lost", "resumeFrom"}}.
        kinds: a list or comma-separated names; device_id: one device;
        last_event_id: resume after this sequence. A dropped connection is
        reopened with Last-Event-ID (reconnect=True). timeout: seconds next()
        waits for an event (keep-alive comments do not count) before
        TransportError; None waits forever. The stream is connected when
        this returns."""
        query = {}
        if kinds is not None:
            query["kinds"] = _query_value(kinds)
        if device_id is not None:
            query["deviceId"] = device_id
        return EventStream(self, query, last_event_id, timeout, reconnect)

    def _import_identity(self):
        who = {}
        if self.token:
            who["token"] = self.token
        if self.owner is not None:
            who["owner"] = self.owner
        if self.admin:
            who["admin"] = True
        return who


install(Client)
