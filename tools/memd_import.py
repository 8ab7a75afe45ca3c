#!/usr/bin/env python3
"""memd_import: map memory another owner exported to you, through memd's socket.

A peer of memd's Unix socket door (docs/architecture.md, "The socket door"),
written with the Python standard library alone so any worker (and the tests)
can run it where memd runs:

  1. connects to the socket (--socket, or $MEMD_SOCKET) and says hello with a
     bearer token (--token, or $MEMD_TOKEN) or, on a daemon without tokens,
     an owner label (--owner); --session and --admin as over REST;
  2. sends memory_import {"exportId": ID} and receives the descriptor that
     comes with the answer (SCM_RIGHTS);
  3. maps mapSize bytes of it at mapOffset (the answer's keys): the
     allocation's sizeBytes bytes start at `offset` inside that mapping;
  4. writes (--write-hex HEX or --write-file FILE) and then reads (--read N,
     printed as hex, or written raw to --out FILE) at --offset inside the
     allocation;
  5. keeps the connection open --hold SECONDS: memd keeps exported memory
     counted and pinned for as long as an importer's connection is open.

Exit status: 0 done; 1 failed here (cannot connect, a broken answer, a
mapping or file error, a range outside the allocation); 2 memd refused (its
error code and message are printed); 64 bad command line.

Requests and answers are JSON lines: {"id", "action", "params"} →
{"id", "ok", "result"} or {"id", "ok": false, "error": {"code", "message"}}.
An answer whose result says "fds": N carries N descriptors, sent with (or
before) its first byte: they are taken, in order, from everything received.
"""

import argparse
import json
import mmap
import os
import socket
import sys
import time

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_USAGE = 64

MAX_FDS = 16  # the most one answer carries (kMaxSocketFds)
MAX_ANSWER = 16 * 1024 * 1024  # an answer is a small JSON object; more is a broken peer


class Refused(Exception):
    """memd answered ok: false."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Failed(Exception):
    """Something went wrong on this side of the socket."""


class Peer:
    """One connection to memd's socket door; requests answered in order."""

    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise Failed(f"cannot connect to {path}: {e.strerror or e}") from e
        self.buffer = b""
        self.fds = []  # received, not yet claimed by an answer
        self.next_id = 0

    def call(self, action, params):
        """The result of `action` and the descriptors it carried."""
        self.next_id += 1
        request_id = str(self.next_id)
        line = json.dumps({"id": request_id, "action": action, "params": params}) + "\n"
        try:
            self.sock.sendall(line.encode())
        except OSError as e:
            raise Failed(f"sending {action}: {e.strerror or e}") from e
        answer, fds = self._receive()
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            close_all(fds)
            raise Failed(f"answer to {action} does not match its request: {answer!r:.200}")
        if not answer.get("ok"):
            close_all(fds)
            error = answer.get("error") or {}
            raise Refused(error.get("code", "?"), error.get("message", ""))
        result = answer.get("result")
        if not isinstance(result, dict):
            close_all(fds)
            raise Failed(f"answer to {action} has no result object")
        return result, fds

    def _receive(self):
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_ANSWER:
                raise Failed("answer longer than 16 MiB")
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, 65536, MAX_FDS)
            except socket.timeout as e:
                raise Failed("memd did not answer in time") from e
            except OSError as e:
                raise Failed(f"receiving: {e.strerror or e}") from e
            self.fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise Failed("descriptors were cut off in transit (MSG_CTRUNC)")
            if not data:
                raise Failed("memd closed the connection")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError as e:
            raise Failed(f"answer is not JSON: {e}") from e
        count = 0
        if isinstance(answer, dict) and answer.get("ok") and isinstance(answer.get("result"), dict):
            count = answer["result"].get("fds", 0)
            if not isinstance(count, int) or count < 0 or count > len(self.fds):
                raise Failed(f"answer announces {count!r} descriptors; {len(self.fds)} arrived")
        taken, self.fds = self.fds[:count], self.fds[count:]
        return answer, taken

    def close(self):
        close_all(self.fds)
        self.fds = []
        self.sock.close()


def close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def hello_params(args):
    params = {}
    token = args.token if args.token is not None else os.environ.get("MEMD_TOKEN")
    if token:
        params["token"] = token
    if args.owner is not None:
        params["owner"] = args.owner
    if args.session is not None:
        params["session"] = args.session
    if args.admin:
        params["admin"] = True
    return params


def whole_number(result, key):
    value = result.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Failed(f"the import's result has no valid {key!r}: {value!r}")
    return value


class Mapping:
    """The allocation's bytes inside a mapping of the imported descriptor."""

    def __init__(self, fd, result, writable):
        map_offset = whole_number(result, "mapOffset")
        map_size = whole_number(result, "mapSize")
        self.offset = whole_number(result, "offset")
        self.size = whole_number(result, "sizeBytes")
        if map_offset % mmap.ALLOCATIONGRANULARITY != 0:
            raise Failed(f"mapOffset {map_offset} is not a multiple of {mmap.ALLOCATIONGRANULARITY}")
        if map_size == 0 or self.offset + self.size > map_size:
            raise Failed(f"offset {self.offset} + sizeBytes {self.size} do not fit in mapSize {map_size}")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            self.map = mmap.mmap(fd, map_size, flags=mmap.MAP_SHARED, prot=prot, offset=map_offset)
        except (OSError, ValueError) as e:
            raise Failed(f"cannot map {map_size} bytes at {map_offset} of the descriptor: {e}") from e

    def span(self, at, length):
        if at < 0 or length < 0 or at + length > self.size:
            raise Failed(f"{length} bytes at {at} reach past the allocation's {self.size} bytes")
        return self.offset + at

    def read(self, at, length):
        start = self.span(at, length)
        return bytes(self.map[start : start + length])

    def write(self, at, data):
        start = self.span(at, len(data))
        self.map[start : start + len(data)] = data
        self.map.flush()

    def close(self):
        self.map.close()


class CudaMapping:
    """VRAM of a cuda-posix-fd handle, imported through the driver API with
    ctypes (the standard library; the driver's libcuda.so.1 must be there):
    cuMemImportFromShareableHandle, an address range of our own, cuMemMap and
    cuMemSetAccess on the GPU whose UUID memd named (CUDA_VISIBLE_DEVICES may
    renumber it here), then cuMemcpyDtoH / HtoD for --read and --write."""

    POSIX_FD = 1  # CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
    LOCATION_DEVICE = 1  # CU_MEM_LOCATION_TYPE_DEVICE
    READWRITE = 3  # CU_MEM_ACCESS_FLAGS_PROT_READWRITE

    def __init__(self, fd, result):
        import ctypes

        self.ct = ctypes
        try:
            self.cu = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise Failed(f"a VRAM export needs the CUDA driver (libcuda.so.1): {e}") from e
        self.size = whole_number(result, "sizeBytes")
        self.offset = whole_number(result, "offset")
        self.map_size = whole_number(result, "mapSize")
        if self.offset + self.size > self.map_size:
            raise Failed(f"offset {self.offset} + sizeBytes {self.size} do not fit in mapSize {self.map_size}")
        self.check(self.cu.cuInit(0), "cuInit")
        self.device = self.find_device(result.get("gpuUuid"))
        ctx = ctypes.c_void_p()
        self.check(self.cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), self.device), "cuDevicePrimaryCtxRetain")
        self.check(self.cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        self.handle = ctypes.c_ulonglong()
        self.check(self.cu.cuMemImportFromShareableHandle(ctypes.byref(self.handle), ctypes.c_void_p(fd),
                                                          self.POSIX_FD), "cuMemImportFromShareableHandle")
        self.ptr = ctypes.c_ulonglong()
        self.check(self.cu.cuMemAddressReserve(ctypes.byref(self.ptr), ctypes.c_size_t(self.map_size),
                                               ctypes.c_size_t(0), ctypes.c_ulonglong(0), ctypes.c_ulonglong(0)),
                   "cuMemAddressReserve")
        self.check(self.cu.cuMemMap(self.ptr, ctypes.c_size_t(self.map_size), ctypes.c_size_t(0), self.handle,
                                    ctypes.c_ulonglong(0)), "cuMemMap")

        class Location(ctypes.Structure):
            _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]

        class AccessDesc(ctypes.Structure):
            _fields_ = [("location", Location), ("flags", ctypes.c_int)]

        desc = AccessDesc(Location(self.LOCATION_DEVICE, self.device), self.READWRITE)
        self.check(self.cu.cuMemSetAccess(self.ptr, ctypes.c_size_t(self.map_size), ctypes.byref(desc),
                                          ctypes.c_size_t(1)), "cuMemSetAccess")

    def check(self, status, what):
        if status != 0:
            raise Failed(f"{what} failed with CUDA error {status}")

    def find_device(self, uuid):
        ct = self.ct
        count = ct.c_int()
        self.check(self.cu.cuDeviceGetCount(ct.byref(count)), "cuDeviceGetCount")
        for ordinal in range(count.value):
            dev = ct.c_int()
            self.check(self.cu.cuDeviceGet(ct.byref(dev), ordinal), "cuDeviceGet")
            raw = (ct.c_ubyte * 16)()
            getter = getattr(self.cu, "cuDeviceGetUuid_v2", None) or self.cu.cuDeviceGetUuid
            self.check(getter(raw, dev), "cuDeviceGetUuid")
            h = bytes(raw).hex()
            text = f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            if uuid is None or text == uuid:
                return dev.value
        raise Failed(f"no GPU here has UUID {uuid}")

    def span(self, at, length):
        if at < 0 or length < 0 or at + length > self.size:
            raise Failed(f"{length} bytes at {at} reach past the allocation's {self.size} bytes")
        return self.ptr.value + self.offset + at

    def read(self, at, length):
        out = self.ct.create_string_buffer(length)
        self.check(self.cu.cuMemcpyDtoH_v2(out, self.ct.c_ulonglong(self.span(at, length)), self.ct.c_size_t(length)),
                   "cuMemcpyDtoH")
        return out.raw

    def write(self, at, data):
        self.check(self.cu.cuMemcpyHtoD_v2(self.ct.c_ulonglong(self.span(at, len(data))), data,
                                           self.ct.c_size_t(len(data))), "cuMemcpyHtoD")

    def close(self):
        self.cu.cuMemUnmap(self.ptr, self.ct.c_size_t(self.map_size))
        self.cu.cuMemAddressFree(self.ptr, self.ct.c_size_t(self.map_size))
        self.cu.cuMemRelease(self.handle)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parse_args(argv):
    p = Parser(prog="memd_import", description=__doc__.split("\n\n")[0])
    p.add_argument("export_id", help="the export's id (what memory_export answered)")
    p.add_argument("--socket", default=os.environ.get("MEMD_SOCKET"), help="memd's socket path ($MEMD_SOCKET)")
    p.add_argument("--token", help="bearer token ($MEMD_TOKEN)")
    p.add_argument("--owner", help="owner label (daemons without tokens; with --tokens it must agree)")
    p.add_argument("--session", help="a session id of yours")
    p.add_argument("--admin", action="store_true", help="ask to act as the admin")
    p.add_argument("--offset", type=int, default=0, help="where, in the allocation, to read and write (bytes)")
    p.add_argument("--read", type=int, metavar="N", help="read N bytes at --offset (hex on stdout, or --out)")
    p.add_argument("--out", metavar="FILE", help="write what --read read to FILE, raw")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write-hex", metavar="HEX", help="write these bytes at --offset")
    group.add_argument("--write-file", metavar="FILE", help="write FILE's bytes at --offset")
    p.add_argument("--hold", type=float, default=0.0, metavar="SECONDS", help="keep the import this long")
    p.add_argument("--no-map", action="store_true", help="receive and hold the descriptor without mapping it")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for connect and each answer")
    p.add_argument("--verbose", action="store_true", help="print memd's answers on stderr")
    args = p.parse_args(argv)
    if not args.socket:
        p.error("--socket (or $MEMD_SOCKET) is required")
    if args.read is not None and args.read < 0:
        p.error("--read takes a byte count >= 0")
    if args.offset < 0:
        p.error("--offset takes a byte offset >= 0")
    if args.out and args.read is None:
        p.error("--out needs --read")
    if args.hold < 0:
        p.error("--hold takes seconds >= 0")
    if args.no_map and (args.read is not None or args.write_hex or args.write_file):
        p.error("--no-map cannot read or write")
    return args


def run(args):
    data = None
    if args.write_hex is not None:
        try:
            data = bytes.fromhex(args.write_hex)
        except ValueError as e:
            raise Failed(f"--write-hex: {e}") from e
    elif args.write_file is not None:
        try:
            with open(args.write_file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise Failed(f"--write-file {args.write_file}: {e.strerror or e}") from e

    peer = Peer(args.socket, args.timeout)
    fds = []
    mapping = None
    try:
        hello, _ = peer.call("hello", hello_params(args))
        if args.verbose:
            print(f"memd_import: hello: {json.dumps(hello)}", file=sys.stderr)
        result, fds = peer.call("memory_import", {"exportId": args.export_id})
        if args.verbose:
            print(f"memd_import: memory_import: {json.dumps(result)}", file=sys.stderr)
        if len(fds) != 1:
            raise Failed(f"memory_import answered {len(fds)} descriptors, not 1")
        if not args.no_map:
            if result.get("handleType") == "cuda-posix-fd":
                mapping = CudaMapping(fds[0], result)
            else:
                mapping = Mapping(fds[0], result, writable=data is not None)
            close_all(fds)  # the mapping keeps the memory; the connection keeps the import
            fds = []
            if data is not None:
                mapping.write(args.offset, data)
            if args.read is not None:
                read = mapping.read(args.offset, args.read)
                if args.out:
                    try:
                        with open(args.out, "wb") as f:
                            f.write(read)
                    except OSError as e:
                        raise Failed(f"--out {args.out}: {e.strerror or e}") from e
                else:
                    print(read.hex(), flush=True)
        if args.hold > 0:
            print(f"memd_import: holding export {args.export_id} for {args.hold:g} s", file=sys.stderr, flush=True)
            time.sleep(args.hold)
    finally:
        if mapping is not None:
            mapping.close()
        close_all(fds)
        peer.close()


def main(argv=None):
    if not hasattr(socket, "recv_fds"):
        print("memd_import: needs Python 3.9 or later (socket.recv_fds)", file=sys.stderr)
        return EXIT_FAILED
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except Refused as e:
        print(f"memd_import: refused: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_REFUSED
    except Failed as e:
        print(f"memd_import: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
