"""Server-sent events from GET /api/memory/events (docs/api.md, "Events").

Each event arrives as `id: <sequence>`, `event: <kind>`, `data: <object>`
and a blank line; comments (`: keep-alive`, `: lost N events`) are skipped.
The stream remembers the last id and, when the connection drops, reopens it
with Last-Event-ID so nothing still in memd's ring is missed (what is no
longer there comes as a `lost` event).
"""
import http.client
import json
import socket
import time
import urllib.parse

from .errors import TransportError, error_from


class EventStream:
    """An iterator of event objects; close() (or `with`) ends it."""

    def __init__(self, client, query, last_event_id, timeout, reconnect):
        self._client, self._query, self._timeout, self._reconnect = client, query, timeout, reconnect
        self.last_event_id = last_event_id
        self._conn = self._response = self._sock = None
        self._closed = False
        self._connect()

    def _connect(self):
        query = dict(self._query)
        target = self._client._prefix + "/api/memory/events"
        if query:
            target += "?" + urllib.parse.urlencode(query)
        extra = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            extra["Last-Event-ID"] = str(self.last_event_id)
        conn = self._client._new_connection(self._timeout)
        try:
            conn.request("GET", target, headers=self._client.headers(extra))
            # The stream's socket: http.client lets go of it (conn.sock) once
            # it sees the answer ends with the connection; close() needs it.
            self._sock = conn.sock
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransportError(f"GET {target}: {e}") from e
        if response.status != 200:
            data = response.read()
            conn.close()
            try:
                error = json.loads(data).get("error")
            except (ValueError, AttributeError):
                error = {"message": data.decode("utf-8", "replace")[:500]}
            raise error_from(error, response.status)
        self._conn, self._response = conn, response

    def _readline(self):
        try:
            return self._response.readline()
        except socket.timeout as e:
            raise TransportError(f"no event or keep-alive in {self._timeout} s") from e
        except (OSError, http.client.HTTPException, ValueError):
            return b""  # the connection went: as the end of the stream

    def __iter__(self):
        return self

    def __next__(self):
        fields = {}
        data = []
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            if self._closed:
                raise StopIteration
            if deadline is not None and time.monotonic() > deadline:  # keep-alives came, no event
                raise TransportError(f"no event in {self._timeout} s")
            line = self._readline()
            if not line:  # end of stream
                self._drop()
                if self._closed or not self._reconnect:
                    raise StopIteration
                self._connect()  # Last-Event-ID resumes where this one stopped
                fields, data = {}, []
                continue
            line = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if line == "":
                if not data:
                    fields = {}
                    continue
                return self._dispatch(fields, "\n".join(data))
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name in ("id", "event"):
                fields[name] = value

    def _dispatch(self, fields, text):
        try:
            payload = json.loads(text)
        except ValueError as e:
            raise TransportError(f"an event's data is not JSON: {e}") from e
        if "id" in fields:
            try:
                self.last_event_id = int(fields["id"])
            except ValueError:
                pass
        kind = fields.get("event", "message")
        if isinstance(payload, dict) and payload.get("event") == kind:
            return payload
        # `lost` carries {lost, resumeFrom} as its data: the stdio line's shape.
        return {"event": kind, "data": payload}

    def _drop(self):
        if self._response is not None:
            self._response.close()
        if self._conn is not None:
            self._conn.close()
        self._conn = self._response = self._sock = None

    def close(self):
        self._closed = True
        if self._sock is not None:
            try:  # wakes a reader blocked in another thread
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
