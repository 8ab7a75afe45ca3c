#!/usr/bin/env python3
"""model_worker: use a model memd holds, without a copy, in another process.

memd loads a model once (memory_model_load) and exports its weights
(memory_model_export, docs/api.md): one export per component, each with its
tensor table. This worker, like an inference worker would:

  1. gets that answer: --export-json FILE (what a controller asked memd for;
     '-' reads stdin), or asks memd itself: --url URL --model NAME exports the
     model for this worker's owner over REST (and releases that export at exit);
  2. connects to memd's socket (the answer's "socket", or --socket, or
     $MEMD_SOCKET), says hello (--token / $MEMD_TOKEN, or --owner), and imports
     each component's export (memory_import: one descriptor each), with the
     protocol code of tools/memd_import.py;
  3. maps each component and builds its tensors over the mapping, no copy:
       host devices (a memfd): mmap read-only, then torch.frombuffer, or, with
         no PyTorch, memoryview casts (values and checksums with the stdlib);
       CUDA VRAM (a POSIX-fd handle): cuMemImportFromShareableHandle,
         cuMemAddressReserve, cuMemMap, cuMemSetAccess through ctypes, then an
         object with __cuda_array_interface__ handed to torch.as_tensor;
  4. prints each tensor's name, dtype, shape, data pointer and whether that
     pointer lies inside the mapping (--json: one JSON document instead);
  5. --check FILE (repeatable; COMPONENT=FILE for one component): compares
     every tensor's bytes with the safetensors file (its header read with json
     and struct); a tensor missing from the files or different is a failure;
  6. --hold SECONDS keeps the imports (and the connection: memd keeps exported
     memory while an importer's connection is open) before exiting.

Exit status: 0 done (and every check passed); 1 failed here or a check
failed; 2 memd refused; 64 bad command line.
"""

import ctypes
import hashlib
import json
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.request

# tools/memd_import.py is the socket protocol; found beside the repository's
# tools/, or where $MEMD_TOOLS says.
_TOOLS = os.environ.get("MEMD_TOOLS") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
sys.path.insert(0, _TOOLS)
import memd_import  # noqa: E402
from memd_import import Failed, Refused  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2, 64

try:
    import torch  # noqa: F401
except ImportError:  # the example runs on the standard library alone
    torch = None

# safetensors dtype → (struct format for memoryview.cast, __cuda_array_interface__
# typestr, torch dtype name, bytes per element). None: no such view; the
# tensor is then shown as its raw bytes (uint8) or reinterpreted (BF16, F8).
DTYPES = {
    "BOOL": ("?", "|b1", "bool", 1),
    "U8": ("B", "|u1", "uint8", 1),
    "I8": ("b", "|i1", "int8", 1),
    "I16": ("h", "<i2", "int16", 2),
    "U16": ("H", "<u2", "uint16", 2),
    "F16": ("e", "<f2", "float16", 2),
    "BF16": (None, "<i2", "bfloat16", 2),
    "I32": ("i", "<i4", "int32", 4),
    "U32": ("I", "<u4", "uint32", 4),
    "F32": ("f", "<f4", "float32", 4),
    "I64": ("q", "<i8", "int64", 8),
    "U64": ("Q", "<u8", "uint64", 8),
    "F64": ("d", "<f8", "float64", 8),
    "C64": (None, "<c8", "complex64", 8),
    "F8_E4M3": (None, "|u1", "float8_e4m3fn", 1),
    "F8_E5M2": (None, "|u1", "float8_e5m2", 1),
    "F8_E8M0": (None, "|u1", "float8_e8m0fnu", 1),
}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class HostMapping:
    """A memfd mapped read-only with libc's mmap (through ctypes, so its
    address is known and the weights cannot be written by mistake)."""

    def __init__(self, fd, result):
        self.offset = memd_import.whole_number(result, "offset")
        self.size = memd_import.whole_number(result, "sizeBytes")
        self.map_size = memd_import.whole_number(result, "mapSize")
        map_offset = memd_import.whole_number(result, "mapOffset")
        if self.offset + self.size > self.map_size:
            raise Failed(f"offset {self.offset} + sizeBytes {self.size} do not fit in mapSize {self.map_size}")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.libc = libc
        prot_read, map_shared = 1, 1
        base = libc.mmap(None, self.map_size, prot_read, map_shared, fd, map_offset)
        if base in (None, ctypes.c_void_p(-1).value):
            raise Failed(f"cannot map {self.map_size} bytes of the descriptor: {os.strerror(ctypes.get_errno())}")
        self.base = base
        # A buffer over the mapping (no copy): memoryview and torch.frombuffer read it.
        self.buffer = (ctypes.c_char * self.map_size).from_address(base)

    def close(self):
        self.buffer = None
        self.libc.munmap(ctypes.c_void_p(self.base), self.map_size)


def address_of(view):
    """Where a memoryview's bytes are (it must be over a ctypes buffer)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class CudaArray:
    """What torch.as_tensor needs to wrap device memory it does not own."""

    def __init__(self, ptr, shape, typestr):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "data": (ptr, False),
                                         "version": 3, "strides": None}


def host_tensor(mapping, t):
    """(value, data pointer): a tensor (torch) or memoryview over the mapping."""
    start = mapping.offset + t["offset"]
    raw = memoryview(mapping.buffer).cast("B")[start:start + t["sizeBytes"]]
    fmt, _, torch_name, width = DTYPES.get(t["dtype"], (None, None, None, 0))
    if torch is not None and t["sizeBytes"] == 0:  # nothing to map: torch.frombuffer refuses count 0
        return torch.empty(t["shape"], dtype=getattr(torch, torch_name or "uint8", torch.uint8)), mapping.base + start
    if torch is not None:
        import warnings

        dtype = getattr(torch, torch_name, None) if torch_name else None
        whole = memoryview(mapping.buffer).cast("B")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the mapping is read-only; torch warns it is not writable
            if dtype is not None and width * numel(t["shape"]) == t["sizeBytes"]:
                value = torch.frombuffer(whole, dtype=dtype, count=numel(t["shape"]), offset=start)
                value = value.view(t["shape"])
            else:
                value = torch.frombuffer(whole, dtype=torch.uint8, count=t["sizeBytes"], offset=start)
        return value, value.data_ptr()
    ptr = address_of(raw) if t["sizeBytes"] else mapping.base + start
    if fmt and width * numel(t["shape"]) == t["sizeBytes"] and t["shape"] and all(d > 0 for d in t["shape"]):
        try:
            return raw.cast(fmt, t["shape"]), ptr
        except (TypeError, ValueError):
            pass  # memoryview cannot cast to F16 ('e') before Python 3.12: the bytes, read with struct
    return raw, ptr


def cuda_tensor(mapping, t):
    ptr = mapping.ptr.value + mapping.offset + t["offset"]
    if torch is None or t["sizeBytes"] == 0:
        return None, ptr
    _, typestr, torch_name, width = DTYPES.get(t["dtype"], (None, "|u1", None, 1))
    device = f"cuda:{mapping.device}"
    whole = torch_name and width * numel(t["shape"]) == t["sizeBytes"]
    shape = list(t["shape"]) if whole else [t["sizeBytes"]]
    value = torch.as_tensor(CudaArray(ptr, shape, typestr if whole else "|u1"), device=device)
    target = getattr(torch, torch_name, None) if whole else None
    if target is not None and value.dtype != target:
        value = value.view(target)  # BF16 arrives as int16, F8 as uint8: same bits, reinterpreted
    return value, value.data_ptr()


def tensor_bytes(mapping, t, value):
    """The tensor's bytes, for checksums and --check (a copy only for VRAM)."""
    if isinstance(mapping, HostMapping):
        start = mapping.offset + t["offset"]
        return memoryview(mapping.buffer).cast("B")[start:start + t["sizeBytes"]]
    return mapping.read(t["offset"], t["sizeBytes"])  # cuMemcpyDtoH


def read_safetensors_header(path):
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise Failed(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            raise Failed(f"{path}: header of {length} bytes is not believable")
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise Failed(f"{path}: header is not JSON: {e}") from e
    header.pop("__metadata__", None)
    return header, 8 + length


class Checker:
    """--check: each tensor's bytes against the files that hold it."""

    def __init__(self, specs):
        self.files = []  # (component or None, path, header, data start)
        for spec in specs:
            component, _, path = spec.rpartition("=") if "=" in spec else (None, None, spec)
            header, start = read_safetensors_header(path)
            self.files.append((component or None, path, header, start))
        self.checked = 0
        self.failures = []

    def check(self, component, t, data):
        for comp, path, header, start in self.files:
            if comp is not None and comp != component:
                continue
            entry = header.get(t["name"])
            if entry is None:
                continue
            begin, end = entry["data_offsets"]
            problems = []
            if entry["dtype"] != t["dtype"]:
                problems.append(f"dtype {t['dtype']} here, {entry['dtype']} in the file")
            if list(entry["shape"]) != list(t["shape"]):
                problems.append(f"shape {t['shape']} here, {entry['shape']} in the file")
            if end - begin != t["sizeBytes"]:
                problems.append(f"{t['sizeBytes']} bytes here, {end - begin} in the file")
            else:
                with open(path, "rb") as f:
                    f.seek(start + begin)
                    if f.read(end - begin) != bytes(data):
                        problems.append("bytes differ from the file's")
            self.checked += 1
            if problems:
                self.failures.append(f"{component}/{t['name']}: " + "; ".join(problems))
            return
        self.failures.append(f"{component}/{t['name']}: in none of the --check files")


def plain(values):
    """JSON has no NaN or infinity: those print as their names."""
    return [v if not isinstance(v, float) or math.isfinite(v) else repr(v) for v in values]


def preview(t, value, data, count=4):
    """The first few values, as plain Python numbers (raw bytes for a dtype
    the standard library cannot read, such as BF16 without PyTorch)."""
    if torch is not None and hasattr(value, "flatten"):
        flat = value.flatten()[:count]
        if flat.dtype.is_floating_point and flat.element_size() == 1:
            flat = flat.float()  # float8 does not print as numbers
        return flat.cpu().tolist()
    fmt, _, _, width = DTYPES.get(t["dtype"], (None, None, None, 0))
    data = memoryview(data).cast("B")
    if fmt:
        n = min(count, len(data) // width)
        return list(struct.unpack_from(f"<{n}{fmt}", data))
    return data[:count].tolist()


def rest(args, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    token = args.token if args.token is not None else os.environ.get("MEMD_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if args.owner:
        request.add_header("X-Memd-Owner", args.owner)
    if args.session:
        request.add_header("X-Memd-Session", args.session)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            error = json.loads(e.read()).get("error", {})
        except ValueError:
            error = {}
        raise Refused(error.get("code", str(e.code)), error.get("message", e.reason)) from e
    except (urllib.error.URLError, OSError) as e:
        raise Failed(f"{args.url}: {e}") from e


def parse_args(argv):
    # memd_import's parser: a usage error exits 64 there as here.
    p = memd_import.Parser(prog="model_worker", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--export-json", metavar="FILE", help="memory_model_export's answer ('-': stdin)")
    src.add_argument("--model", help="export this model for our own owner over REST (needs --url)")
    p.add_argument("--url", help="memd's REST address, for --model (http://127.0.0.1:PORT)")
    p.add_argument("--socket", help="memd's socket (default: the answer's, or $MEMD_SOCKET)")
    p.add_argument("--token", help="bearer token ($MEMD_TOKEN)")
    p.add_argument("--owner", help="owner label (daemons without tokens)")
    p.add_argument("--session", help="a session id of yours")
    p.add_argument("--check", action="append", default=[], metavar="[COMPONENT=]FILE",
                   help="compare tensors with this safetensors file (repeatable)")
    p.add_argument("--hold", type=float, default=0.0, metavar="SECONDS", help="keep the imports this long")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for memd")
    args = p.parse_args(argv)
    if args.model and not args.url:
        p.error("--model needs --url")
    if args.hold < 0:
        p.error("--hold takes seconds >= 0")
    return args


def get_export(args):
    if args.export_json:
        try:
            text = sys.stdin.read() if args.export_json == "-" else open(args.export_json).read()
            answer = json.loads(text)
        except (OSError, ValueError) as e:
            raise Failed(f"--export-json {args.export_json}: {e}") from e
        return answer, False
    owner = args.owner
    if owner is None:
        raise Failed("--model exports for our own owner: give --owner (with --token, the token's owner)")
    return rest(args, "POST", f"/api/memory/models/{args.model}/export", {"owners": [owner]}), True


def run(args):
    checker = Checker(args.check) if args.check else None
    answer, ours = get_export(args)
    components = answer.get("components")
    if not isinstance(components, list) or not components:
        raise Failed("the export answer has no components")
    socket_path = args.socket or answer.get("socket") or os.environ.get("MEMD_SOCKET")
    if not socket_path:
        raise Failed("no socket: memd serve --socket, or give --socket")
    peer = memd_import.Peer(socket_path, args.timeout)
    mappings, report, zero_copy = [], [], True
    try:
        hello = {}
        token = args.token if args.token is not None else os.environ.get("MEMD_TOKEN")
        if token:
            hello["token"] = token
        if args.owner:
            hello["owner"] = args.owner
        if args.session:
            hello["session"] = args.session
        peer.call("hello", hello)
        for c in components:
            result, fds = peer.call("memory_import", {"exportId": c["export"]["exportId"]})
            try:
                if len(fds) != 1:
                    raise Failed(f"memory_import answered {len(fds)} descriptors, not 1")
                if result.get("handleType") == "cuda-posix-fd":
                    mapping = memd_import.CudaMapping(fds[0], result)
                    base, size = mapping.ptr.value, mapping.map_size
                else:
                    mapping = HostMapping(fds[0], result)
                    base, size = mapping.base, mapping.map_size
            finally:
                memd_import.close_all(fds)  # the mapping keeps the memory; the connection keeps the import
            mappings.append(mapping)
            for t in c["tensors"]:
                make = cuda_tensor if isinstance(mapping, memd_import.CudaMapping) else host_tensor
                value, ptr = make(mapping, t)
                inside = base <= ptr and ptr + t["sizeBytes"] <= base + size
                if value is not None and hasattr(value, "data_ptr") and t["sizeBytes"] == 0:
                    inside = True  # an empty tensor has no bytes to be anywhere
                zero_copy = zero_copy and inside
                data = tensor_bytes(mapping, t, value)
                if checker:
                    checker.check(c["name"], t, data)
                entry = {"component": c["name"], "name": t["name"], "dtype": t["dtype"], "shape": t["shape"],
                         "dataPtr": ptr, "inMapping": inside, "sha256": hashlib.sha256(data).hexdigest(),
                         "values": plain(preview(t, value, data)),
                         "kind": "torch" if torch is not None and value is not None else "memoryview"}
                report.append(entry)
                if not args.json:
                    print(f"{c['name']}/{t['name']} {t['dtype']} {t['shape']} ptr=0x{ptr:x} "
                          f"in_mapping={'yes' if inside else 'NO'} sha256={entry['sha256'][:16]} "
                          f"values={entry['values']}", flush=True)
                del value, data
        failures = checker.failures if checker else []
        if args.json:
            print(json.dumps({"model": answer.get("name"), "torch": torch is not None, "tensors": report,
                              "zeroCopy": zero_copy, "checked": checker.checked if checker else 0,
                              "failures": failures}), flush=True)
        else:
            if checker:
                print(f"checked {checker.checked} tensors against {len(args.check)} file(s): "
                      f"{len(failures)} failure(s)", flush=True)
            for f in failures:
                print(f"model_worker: check failed: {f}", file=sys.stderr)
        if args.hold > 0:
            print(f"model_worker: holding {len(mappings)} component(s) for {args.hold:g} s", file=sys.stderr,
                  flush=True)
            time.sleep(args.hold)
        return EXIT_OK if zero_copy and not failures else EXIT_FAILED
    finally:
        for m in mappings:
            m.close()
        peer.close()
        if ours:  # the export this worker made for itself ends with it
            for c in components:
                try:
                    rest(args, "DELETE", f"/api/memory/models/{args.model}/export/{c['export']['exportId']}")
                except (Refused, Failed) as e:
                    print(f"model_worker: releasing {c['export']['exportId']}: {e}", file=sys.stderr)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except Refused as e:
        print(f"model_worker: refused: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_REFUSED
    except Failed as e:
        print(f"model_worker: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
