"""memd: a Python client of memd, the GPU memory manager daemon.

Standard library only. Two clients with the same methods, one per action of
memd's action table (generated: memd/_actions.py):

- memd.Client(url, token=None): the REST API of `memd serve`;
- memd.StdioClient(cmd=["memd", "stdio"]): spawns `memd stdio` (or
  `memd stdio --connect URL`) and speaks JSON lines.

Errors raise one class per code (memd.NotFoundError, memd.OutOfMemoryError,
...), all memd.MemdError with .code, .message, .http_status. See
clients/python/README.md.
"""
from ._actions import ACTIONS, ERRORS
from ._common import Session, UnsupportedError
from ._methods import SPECS, alias_of, snake
from .errors import *  # noqa: F401,F403 - the typed error classes
from .errors import ERROR_CLASSES, MemdError, TransportError, error_from
from .export import ImportedExport, open_export
from .rest import Client
from .sse import EventStream
from .stdio import StdioClient

__version__ = "0.1.0"

__all__ = ["Client", "StdioClient", "Session", "EventStream", "ImportedExport", "open_export", "MemdError",
           "TransportError", "UnsupportedError", "ERROR_CLASSES", "error_from", "ACTIONS", "ERRORS", "SPECS",
           "alias_of", "snake"] + [c.__name__ for c in ERROR_CLASSES.values()]
