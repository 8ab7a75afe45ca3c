"""What both clients share: sessions, binding a session, open_export."""
import copy
import threading

from .errors import MemdError, NotFoundError
from .export import open_export as _open_export


class UnsupportedError(MemdError):
    """The action cannot run through this client's door (memory_unsubscribe
    over REST, where a subscription is its connection: close the stream)."""

    code = "unsupported"


class Session:
    """A session (memory_session_open): a lease on what is allocated in it.

    `client` is the client bound to it: what it allocates is in the session
    and is freed when the session closes or its lease lapses. renew() is the
    heartbeat; with auto_renew=True a thread renews every ttl/3 seconds.
    `with client.open_session(...) as s:` closes it at the end."""

    def __init__(self, parent, result, auto_renew=False):
        self.result = result
        self.id = result["sessionId"]
        self.ttl_seconds = result.get("ttlSeconds")
        self.client = parent.with_session(self.id)
        self._parent = parent
        self._stop = threading.Event()
        self._thread = None
        self.renew_error = None
        if auto_renew:
            interval = max(1.0, (self.ttl_seconds or 60) / 3)
            self._thread = threading.Thread(target=self._renew_loop, args=(interval,), daemon=True,
                                            name=f"memd-session-{self.id[:8]}")
            self._thread.start()

    def _renew_loop(self, interval):
        while not self._stop.wait(interval):
            try:
                self._parent.memory_session_renew(session_id=self.id)
            except MemdError as e:  # kept for the owner to see; the lease lapses
                self.renew_error = e
                return

    def renew(self):
        return self._parent.memory_session_renew(session_id=self.id)

    def close(self):
        """Close it (freeing what is still in it); answers what was freed. A
        session already gone (lapsed, closed) answers None."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            return self._parent.memory_session_close(session_id=self.id)
        except NotFoundError:
            return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ClientBase:
    _session = None

    def with_session(self, session_id):
        """This client, acting in the session (REST: X-Memd-Session; stdio:
        "session" beside params). Shares the connection(s) with this one."""
        bound = copy.copy(self)
        bound._session = session_id
        return bound

    @property
    def session_id(self):
        return self._session

    def open_session(self, ttl_seconds=None, auto_renew=False):
        """memory_session_open, as a Session (see Session)."""
        result = self.memory_session_open(ttl_seconds=ttl_seconds)
        return Session(self, result, auto_renew=auto_renew)

    def _import_identity(self):
        return {}

    def open_export(self, export, socket_path=None, *, writable=False, timeout=10.0, **identity):
        """Import an export (memory_export's answer or an export id) over
        memd's Unix socket, proving this client's owner (memd.open_export)."""
        who = self._import_identity()
        who.update(identity)
        if self._session is not None:
            who.setdefault("session", self._session)
        return _open_export(export, socket_path, writable=writable, timeout=timeout, **who)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
