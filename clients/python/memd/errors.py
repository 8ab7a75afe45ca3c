"""Typed errors: one class per code of memd's closed list (memd/error.hpp).

Every error memd answers -- over REST ({"error": {"code", "message"}} with
the code's HTTP status) or stdio ({"ok": false, "error": {...}}) -- is raised
as the class of its code, a subclass of MemdError:

    try:
        client.memory_deallocate(allocation_id=some_id)
    except memd.NotFoundError as e:
        print(e.code, e.http_status, e.message)

The classes are built from the generated code list (_actions.ERRORS), so a
code added to memd appears here once _actions.py is regenerated. A code this
package does not know (a newer daemon) is raised as MemdError itself.
"""
from ._actions import ERRORS


class MemdError(Exception):
    """An error memd answered. `code` is its wire name ("not_found"),
    `http_status` the status that code maps to (also over stdio), `message`
    memd's text, `snapshot_id` the out-of-memory snapshot an allocation's
    out_of_memory names (else None)."""

    code = None
    http_status = None

    def __init__(self, message="", code=None, http_status=None, snapshot_id=None):
        super().__init__(f"{code or self.code}: {message}")
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.snapshot_id = snapshot_id


class TransportError(MemdError):
    """Something failed on this side, not an answer of memd: no connection,
    a broken or missing answer, the stdio process gone, a timeout."""

    code = "transport"


def _class_name(code):
    return "".join(part.capitalize() for part in code.split("_")) + "Error"


ERROR_CLASSES = {}
for _code, _status in ERRORS.items():
    _cls = type(_class_name(_code), (MemdError,),
                {"code": _code, "http_status": _status, "__module__": __name__,
                 "__doc__": f"memd's {_code!r} (HTTP {_status})."})
    ERROR_CLASSES[_code] = _cls
    globals()[_cls.__name__] = _cls
del _code, _status, _cls

# HTTP status -> code, for an error answer without a memd body (a proxy's);
# 507 is out_of_memory or quota_exceeded: the body tells, else out_of_memory.
_BY_STATUS = {}
for _code, _status in ERRORS.items():
    _BY_STATUS.setdefault(_status, _code)
del _code, _status


def error_from(error, http_status=None):
    """The exception for a wire error object {"code", "message"[, "snapshotId"]}."""
    if not isinstance(error, dict):
        error = {}
    code = error.get("code")
    message = error.get("message", "")
    if not isinstance(code, str):
        code = _BY_STATUS.get(http_status)
    cls = ERROR_CLASSES.get(code)
    snapshot = error.get("snapshotId")
    if cls is None:
        return MemdError(message if isinstance(message, str) else str(message), code=code or "unknown",
                         http_status=http_status, snapshot_id=snapshot)
    return cls(message if isinstance(message, str) else str(message), snapshot_id=snapshot)


__all__ = ["MemdError", "TransportError", "ERROR_CLASSES", "error_from"] + [
    c.__name__ for c in ERROR_CLASSES.values()]
