"""One method per action of the generated table (_actions.ACTIONS).

install() gives both clients, for each action `memory_x` it has a
method `memory_x(...)` and, where the name is free, the alias `x(...)`
(memory_allocate -> allocate). Parameters are the action's, in snake_case
(sizeBytes -> size_bytes; the camelCase name is accepted too). Required
parameters may be passed positionally in the table's order; the rest are
keyword-only.

Unknown keyword arguments raise TypeError here, before anything is sent:
memd ignores unknown keys ("unknown keys are ignored", docs/api.md), so a
typo (size=) would otherwise be dropped silently. Missing required
parameters raise TypeError as well. None leaves a parameter out, except
where memd gives null a meaning (memory_limits' bytes=None removes a
limit): there the default is UNSET. Values are sent as given (a size may be
1048576 or "1MiB"): memd checks them and answers invalid_argument.
"""
import inspect
import re

from ._actions import ACTIONS


def snake(name):
    """sizeBytes -> size_bytes, deviceId -> device_id."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class _Unset:
    def __repr__(self):
        return "UNSET"


# The default of a nullable parameter (memory_limits' bytes), where None is a
# value (JSON null: remove the limit). Elsewhere None means "not given".
UNSET = _Unset()


class ParamSpec:
    __slots__ = ("wire", "py", "kind", "required", "stdio_only", "nullable", "alternative", "description")

    def __init__(self, wire, kind, required, stdio_only, nullable, alternative, description):
        self.wire, self.py, self.kind = wire, snake(wire), kind
        # A key of one alternative shape (memory_transfer: one transfer or a
        # batch) is required only when that shape is used: memd decides.
        self.required = required and not alternative
        self.stdio_only, self.nullable = stdio_only, nullable
        self.alternative, self.description = alternative, description


class ActionSpec:
    """One action: its routes and parameters, and the Python signature."""

    def __init__(self, name, entry):
        self.name = name
        self.summary = entry["summary"]
        self.routes = [Route(*r) for r in entry["routes"]]
        self.params = [ParamSpec(*p) for p in entry["params"]]
        self.by_py = {p.py: p for p in self.params}
        self.by_wire = {p.wire: p for p in self.params}
        required = [p for p in self.params if p.required]
        optional = [p for p in self.params if not p.required]
        sig = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        sig += [inspect.Parameter(p.py, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in required]
        sig += [inspect.Parameter(p.py, inspect.Parameter.KEYWORD_ONLY, default=UNSET if p.nullable else None)
                for p in optional]
        self.signature = inspect.Signature(sig)
        self.positional = [p.py for p in required]

    @property
    def binary_download(self):
        return any(r.body == "binaryDownload" for r in self.routes)

    @property
    def event_stream(self):
        return any(r.body == "eventStream" for r in self.routes)

    def params_from(self, args, kwargs):
        """The wire params object of a call: {"sizeBytes": ...}. TypeError for
        unknown, doubled or missing arguments."""
        if len(args) > len(self.positional):
            raise TypeError(f"{self.name}() takes {len(self.positional)} positional argument(s) "
                            f"({', '.join(self.positional) or 'none'}), {len(args)} given")
        values = dict(zip(self.positional, args))
        for key, value in kwargs.items():
            spec = self.by_py.get(key) or self.by_wire.get(key)
            if spec is None:
                known = ", ".join(p.py for p in self.params) or "none"
                raise TypeError(f"{self.name}() got an unexpected keyword argument {key!r} (it takes: {known})")
            if spec.py in values:
                raise TypeError(f"{self.name}() got multiple values for argument {spec.py!r}")
            values[spec.py] = value
        params = {}
        for spec in self.params:
            value = values.get(spec.py, UNSET)
            if value is UNSET or (value is None and not spec.nullable):
                if spec.required:
                    raise TypeError(f"{self.name}() missing required argument {spec.py!r}")
                continue
            params[spec.wire] = value
        return params

    def doc(self):
        lines = [self.summary, ""]
        if self.routes:
            lines += [f"REST: {r.method} {r.path}" for r in self.routes]
        else:
            lines.append("stdio only.")
        lines.append(f"stdio: {self.name}")
        if self.params:
            lines += ["", "Parameters:"]
            for p in self.params:
                extra = " (required)" if p.required else ""
                lines.append(f"    {p.py} [{p.kind}]{extra}: {p.description}")
        return "\n".join(lines)


class Route:
    __slots__ = ("method", "path", "status", "body", "read_only", "path_params")

    def __init__(self, method, path, status, body, read_only):
        self.method, self.path, self.status, self.body, self.read_only = method, path, status, body, read_only
        self.path_params = re.findall(r"\{([A-Za-z0-9_]+)\}", path)


SPECS = {name: ActionSpec(name, entry) for name, entry in ACTIONS.items()}


def _make_method(spec):
    def method(self, *args, **kwargs):
        return self._run_action(spec, spec.params_from(args, kwargs))

    method.__name__ = spec.name
    method.__qualname__ = spec.name
    method.__doc__ = spec.doc()
    method.__signature__ = spec.signature
    return method


def alias_of(name):
    return name[len("memory_"):] if name.startswith("memory_") else None


def install(cls):
    """Adds the generated methods (and free aliases) to a client class, which
    runs them with its _run_action(spec, params)."""
    for name, spec in SPECS.items():
        method = _make_method(spec)
        setattr(cls, name, method)
        alias = alias_of(name)
        if alias and not hasattr(cls, alias) and alias not in SPECS:
            setattr(cls, alias, method)
    return cls
