"""PyTorch on memd's allocator (issue 16, item 1): install libmemd_torch.so as
PyTorch's CUDA allocator and read memd's statistics for it.

PyTorch's own `torch.cuda.memory_reserved()` does not see a pluggable
allocator, so `stats()` reads memd's: bytes allocated and reserved on a
device, and their peaks.

    import memd.torch_allocator as mt
    mt.install()                # before the first CUDA allocation
    ...                         # run the model
    print(mt.stats(0))          # {'allocated_bytes': ..., 'reserved_bytes': ...}

Regions (issue 16, item 2; vLLM's sleep mode, SGLang's torch_memory_saver):
tensors made under `region(tag)` come from a pool of that tag's own; the
tag can then sleep — its GPU memory given back, its contents copied to
pinned host memory with a checksum (or dropped with keep=False) — and wake
at the same addresses, so CUDA graphs and every pointer stay valid.

    with mt.region("weights"):
        model = build().to("cuda")
    mt.sleep("weights")         # GPU memory of the weights goes back
    mt.wake("weights")          # same addresses, contents checked and restored
    print(mt.region_stats("weights", 0))

The library is found at $MEMD_TORCH_LIB, else next to libmemd.so in the
usual library path (it needs libmemd.so beside it or on the loader's path). Only this module imports torch (the rest of the memd
package is standard library only).
"""
import ctypes
import os

_STATS_FIELDS = ("allocated_bytes", "reserved_bytes", "peak_allocated_bytes", "peak_reserved_bytes",
                 "live_allocations", "stream_syncs")


class _Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in _STATS_FIELDS]


_lib = None
_path = None


def library_path(path=None):
    """The shim's path: `path`, $MEMD_TORCH_LIB, or the name for the loader."""
    return path or os.environ.get("MEMD_TORCH_LIB") or "libmemd_torch.so"


def _load(path=None):
    global _lib, _path
    if _lib is None:
        _path = library_path(path)
        _lib = ctypes.CDLL(_path)
        _lib.memd_torch_stats.argtypes = [ctypes.c_int, ctypes.POINTER(_Stats)]
        _lib.memd_torch_stats.restype = ctypes.c_int
        _lib.memd_torch_last_error.restype = ctypes.c_char_p
        _lib.memd_torch_configure.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
        _lib.memd_torch_configure.restype = ctypes.c_int
        _lib.memd_torch_empty_cache.restype = ctypes.c_longlong
        _lib.memd_torch_set_region.argtypes = [ctypes.c_char_p]
        _lib.memd_torch_set_region.restype = None
        _lib.memd_torch_sleep.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
        _lib.memd_torch_sleep.restype = ctypes.c_int
        _lib.memd_torch_wake.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_double)]
        _lib.memd_torch_wake.restype = ctypes.c_int
        _lib.memd_torch_region_stats.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_Stats),
                                                 ctypes.POINTER(ctypes.c_int)]
        _lib.memd_torch_region_stats.restype = ctypes.c_int
    return _lib


def install(path=None, socket=None, token=None, owner=None):
    """Makes memd PyTorch's CUDA allocator. Must run before PyTorch allocates
    any CUDA memory (PyTorch refuses to switch allocators after that).

    With `socket` (a running `memd serve --socket PATH`), client mode: the
    process leases its GPU memory from that daemon as `owner` (or the owner
    `token` names), so its tensors count against the daemon's limits and
    show in its status; without, memd runs in this process on memory of its
    own."""
    import torch

    lib = _load(path)
    enc = lambda s: None if s is None else str(s).encode()  # noqa: E731
    if lib.memd_torch_configure(enc(socket), enc(token), enc(owner)) != 0:
        raise RuntimeError(f"memd_torch_configure: {lib.memd_torch_last_error().decode()}")
    allocator = torch.cuda.memory.CUDAPluggableAllocator(_path, "memd_torch_malloc", "memd_torch_free")
    torch.cuda.memory.change_current_allocator(allocator)
    return allocator


def empty_cache():
    """Gives back every free page memd holds for PyTorch (in client mode the
    daemon gets the leases back); returns the bytes given back."""
    lib = _load()
    released = lib.memd_torch_empty_cache()
    if released < 0:
        raise RuntimeError(f"memd_torch_empty_cache: {lib.memd_torch_last_error().decode()}")
    return released


def stats(device=0):
    """memd's figures for the memory PyTorch asked for on cuda:`device`."""
    lib = _load()
    out = _Stats()
    if lib.memd_torch_stats(int(device), ctypes.byref(out)) != 0:
        raise RuntimeError(f"memd_torch_stats: {lib.memd_torch_last_error().decode()}")
    return {name: getattr(out, name) for name in _STATS_FIELDS}



_tags = __import__("threading").local()


class region:
    """Tensors allocated on this thread inside `with region(tag):` come from
    the tag's region of their GPU (made on first use). Nests; leaving
    restores the enclosing tag (or the GPU's pool)."""

    def __init__(self, tag):
        if not tag:
            raise ValueError("a region tag is a non-empty string")
        self.tag = str(tag)

    def __enter__(self):
        lib = _load()
        stack = getattr(_tags, "stack", None)
        if stack is None:
            stack = _tags.stack = []
        stack.append(self.tag)
        lib.memd_torch_set_region(self.tag.encode())
        return self

    def __exit__(self, *exc):
        lib = _load()
        _tags.stack.pop()
        lib.memd_torch_set_region(_tags.stack[-1].encode() if _tags.stack else None)
        return False


def sleep(tag, keep=True):
    """Puts every region of `tag` to sleep (each GPU it has one on) after
    synchronizing the GPUs; keep=False drops the contents. Returns the
    seconds memd spent."""
    import torch

    lib = _load()
    torch.cuda.synchronize()
    seconds = ctypes.c_double()
    if lib.memd_torch_sleep(str(tag).encode(), 1 if keep else 0, ctypes.byref(seconds)) != 0:
        raise RuntimeError(f"memd_torch_sleep: {lib.memd_torch_last_error().decode()}")
    return seconds.value


def wake(tag):
    """Wakes every region of `tag` at its old addresses (contents checked
    against the checksum taken at sleep). Returns the seconds memd spent."""
    lib = _load()
    seconds = ctypes.c_double()
    if lib.memd_torch_wake(str(tag).encode(), ctypes.byref(seconds)) != 0:
        raise RuntimeError(f"memd_torch_wake: {lib.memd_torch_last_error().decode()}")
    return seconds.value


def region_stats(tag, device=0):
    """memd's counters of region `tag` on cuda:`device` (reserved_bytes 0
    while asleep), plus 'asleep'. All zeros when the tag has no region there."""
    lib = _load()
    out = _Stats()
    asleep = ctypes.c_int()
    if lib.memd_torch_region_stats(str(tag).encode(), int(device), ctypes.byref(out), ctypes.byref(asleep)) != 0:
        raise RuntimeError(f"memd_torch_region_stats: {lib.memd_torch_last_error().decode()}")
    stats = {name: getattr(out, name) for name in _STATS_FIELDS}
    stats["asleep"] = bool(asleep.value)
    return stats
