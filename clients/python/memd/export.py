"""Importing an export through memd's Unix socket (memory_export, docs/api.md).

memd serve --socket PATH is a door for other processes: a peer connects,
says hello (a bearer token, or an owner label on a daemon without tokens),
sends memory_import {"exportId"} and receives the export's file descriptor
with the answer (SCM_RIGHTS): a memfd for host memory, a CUDA POSIX-fd
handle for VRAM. The protocol is tools/memd_import.py's (JSON lines; an
answer whose result says "fds": N carries N descriptors).

    with memd.open_export(export, owner="worker-1") as ex:   # export: memory_export's answer
        ex.read(0, 5)          # host memory: mmap'ed, no copy
        view = ex.view()       # a memoryview over the allocation's bytes

memd keeps exported memory for as long as an importer's connection is
open: ImportedExport holds the connection until close().

A VRAM export (handleType "cuda-posix-fd") is not mapped here -- that needs
the CUDA driver (cuMemImportFromShareableHandle; tools/memd_import.py and
examples/python/model_worker.py show it with ctypes): its descriptor is
`fd` (owned by the ImportedExport, closed by close()).
"""
import json
import mmap
import os
import socket

from .errors import TransportError, error_from

MAX_FDS = 16  # the most one answer carries (kMaxSocketFds)
MAX_ANSWER = 16 * 1024 * 1024


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class SocketPeer:
    """One connection to memd's socket door; requests answered in order."""

    def __init__(self, path, timeout=10.0):
        if not hasattr(socket, "recv_fds"):
            raise TransportError("importing needs Python 3.9 or later (socket.recv_fds)")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise TransportError(f"cannot connect to {path}: {e.strerror or e}") from e
        self.buffer = b""
        self.fds = []  # received, not yet claimed by an answer
        self.next_id = 0

    def call(self, action, params):
        """(result, descriptors) of `action`; memd's refusal as its typed error."""
        self.next_id += 1
        request_id = str(self.next_id)
        line = json.dumps({"id": request_id, "action": action, "params": params}) + "\n"
        try:
            self.sock.sendall(line.encode())
        except OSError as e:
            raise TransportError(f"sending {action}: {e.strerror or e}") from e
        answer, fds = self._receive()
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            _close_all(fds)
            raise TransportError(f"answer to {action} does not match its request: {answer!r:.200}")
        if not answer.get("ok"):
            _close_all(fds)
            raise error_from(answer.get("error"))
        result = answer.get("result")
        if not isinstance(result, dict):
            _close_all(fds)
            raise TransportError(f"answer to {action} has no result object")
        return result, fds

    def _receive(self):
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_ANSWER:
                raise TransportError("answer longer than 16 MiB")
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, 65536, MAX_FDS)
            except socket.timeout as e:
                raise TransportError("memd did not answer in time") from e
            except OSError as e:
                raise TransportError(f"receiving: {e.strerror or e}") from e
            self.fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise TransportError("descriptors were cut off in transit (MSG_CTRUNC)")
            if not data:
                raise TransportError("memd closed the connection")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError as e:
            raise TransportError(f"answer is not JSON: {e}") from e
        count = 0
        if isinstance(answer, dict) and answer.get("ok") and isinstance(answer.get("result"), dict):
            count = answer["result"].get("fds", 0)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0 or count > len(self.fds):
                raise TransportError(f"answer announces {count!r} descriptors; {len(self.fds)} arrived")
        taken, self.fds = self.fds[:count], self.fds[count:]
        return answer, taken

    def close(self):
        _close_all(self.fds)
        self.fds = []
        self.sock.close()


def _whole_number(result, key):
    value = result.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TransportError(f"the import's result has no valid {key!r}: {value!r}")
    return value


class ImportedExport:
    """An imported export: `result` is memory_import's answer, `size` the
    allocation's bytes. Host memory is mapped (read-only unless
    writable=True): read(), write(), view(). Close it (or use `with`) to end
    the import: the mapping, the descriptor and the connection go."""

    def __init__(self, peer, result, fd, writable):
        self._peer, self.result, self.fd = peer, result, fd
        self.handle_type = result.get("handleType")
        self.size = _whole_number(result, "sizeBytes")
        self.offset = _whole_number(result, "offset")
        self._map = None
        if self.handle_type == "cuda-posix-fd":
            return  # the caller maps it with the CUDA driver (module docstring)
        map_offset, map_size = _whole_number(result, "mapOffset"), _whole_number(result, "mapSize")
        if map_offset % mmap.ALLOCATIONGRANULARITY:
            raise TransportError(f"mapOffset {map_offset} is not a multiple of {mmap.ALLOCATIONGRANULARITY}")
        if map_size == 0 or self.offset + self.size > map_size:
            raise TransportError(f"offset {self.offset} + sizeBytes {self.size} do not fit in mapSize {map_size}")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            self._map = mmap.mmap(fd, map_size, flags=mmap.MAP_SHARED, prot=prot, offset=map_offset)
        except (OSError, ValueError) as e:
            raise TransportError(f"cannot map {map_size} bytes at {map_offset} of the descriptor: {e}") from e
        _close_all([fd])  # the mapping keeps the memory; the connection keeps the import
        self.fd = None

    @property
    def mapped(self):
        return self._map is not None

    def _span(self, at, length):
        if self._map is None:
            raise TransportError("this export is not mapped here (closed, or a VRAM handle: map `fd` with CUDA)")
        if at < 0 or length < 0 or at + length > self.size:
            raise ValueError(f"{length} bytes at {at} reach past the allocation's {self.size} bytes")
        return self.offset + at

    def read(self, at=0, length=None):
        """A copy of `length` bytes (default: to the end) at `at`."""
        length = self.size - at if length is None else length
        start = self._span(at, length)
        return bytes(self._map[start:start + length])

    def write(self, at, data):
        start = self._span(at, len(data))
        self._map[start:start + len(data)] = data

    def view(self):
        """A memoryview over the allocation's bytes (no copy); release it before close()."""
        start = self._span(0, self.size)
        return memoryview(self._map)[start:start + self.size]

    def close(self):
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd is not None:
            _close_all([self.fd])
            self.fd = None
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_export(export, socket_path=None, *, token=None, owner=None, session=None, admin=False,
                writable=False, timeout=10.0):
    """Import an export over memd's socket.

    export: memory_export's (or a model component's) answer -- a dict with
    "exportId" and "socket" -- or an export id. socket_path: memd's socket
    (default: the answer's "socket", else $MEMD_SOCKET). token / owner /
    session / admin prove who imports, as over REST (hello)."""
    if isinstance(export, dict):
        export_id = export.get("exportId")
        socket_path = socket_path or export.get("socket")
    else:
        export_id = export
    if not isinstance(export_id, str) or not export_id:
        raise TypeError("open_export needs an export id or memory_export's answer")
    socket_path = socket_path or os.environ.get("MEMD_SOCKET")
    if not socket_path:
        raise TypeError("open_export needs memd's socket (memd serve --socket): the answer's, socket_path "
                        "or $MEMD_SOCKET")
    hello = {}
    if token:
        hello["token"] = token
    if owner is not None:
        hello["owner"] = owner
    if session is not None:
        hello["session"] = session
    if admin:
        hello["admin"] = True
    peer = SocketPeer(socket_path, timeout)
    fds = []
    try:
        peer.call("hello", hello)
        result, fds = peer.call("memory_import", {"exportId": export_id})
        if len(fds) != 1:
            raise TransportError(f"memory_import answered {len(fds)} descriptors, not 1")
        imported = ImportedExport(peer, result, fds[0], writable)
        fds = []
        return imported
    except BaseException:
        _close_all(fds)
        peer.close()
        raise
