"""PyTorch on memd's allocator (issue 16, item 1): install libmemd_torch.so as
PyTorch's CUDA allocator and read memd's statistics for it.

PyTorch's own `torch.cuda.memory_reserved()` does not see a pluggable
allocator, so `stats()` reads memd's: bytes allocated and reserved on a
device, and their peaks.

    import memd.torch_allocator as mt
    mt.install()                # before the first CUDA allocation
    ...                         # run the model
    print(mt.stats(0))          # {'allocated_bytes': ..., 'reserved_bytes': ...}

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

