"""Name tables whose entries are imported only when used: the one lazy registry type.

    METERS = Registry("energy meter", {"nvml": "bench.telemetry.nvml:open_meter", ...})
    METERS.get("nvml")        # imports bench.telemetry.nvml, returns its open_meter
    list(METERS)              # the names, in table order (a CLI's choices read them here)
    METERS.get("nvlm")        # ConfigError: unknown energy meter 'nvlm'; did you mean 'nvml'? (known: ...)

Every "module:attr" table of bench (engines, energy meters, fleet backends, CLI commands) is
one of these, so `bench --help` imports no engine, meter or backend, and a mistyped name is
refused the same way everywhere. (The model: lm-evaluation-harness's `api/registry.py`
`Registry[T]`; this one is fixed when it is made: bench registers nothing at run time.)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from bench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> "module:attr" targets, in a fixed order; `get` imports a target on first use."""

    def __init__(self, kind: str, targets: Mapping[str, str]):
        for name, target in targets.items():
            module, sep, attr = target.partition(":")
            if not (module and sep and attr):
                raise ValueError(f"{kind} '{name}': target '{target}' is not 'module:attr'")
        self.kind = kind  # what a name names, for messages ("engine", "energy meter")
        self._targets = dict(targets)

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def names(self) -> list[str]:
        """Every name, in table order."""
        return list(self._targets)

    def target(self, name: str) -> str:
        """The "module:attr" of `name`; ConfigError (with a close name, if any) when unknown."""
        target = self._targets.get(name)
        if target is None:
            raise ConfigError(self.unknown(name))
        return target

    def get(self, name: str) -> T:
        """The object `name` stands for, its module imported now (an ImportError of that module
        is the caller's to report: it names what is missing)."""
        module, _, attr = self.target(name).partition(":")
        target: T = getattr(importlib.import_module(module), attr)
        return target

    def unknown(self, name: str, also: tuple[str, ...] = ()) -> str:
        """The one-line refusal of an unknown `name`: the closest known name, then all of them
        (`also`: names a caller accepts beside the table's, e.g. "auto")."""
        known = [*also, *self._targets]
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (known: {', '.join(known)})"


def reexport(package: dict[str, Any], module: str) -> Callable[[str], Any]:
    """A PEP 562 `__getattr__` for a package (PACKAGE is its `globals()`): the names of
    MODULE's `__all__`, imported on first use and kept in the package from then on, so
    importing one of the package's other modules does not import MODULE."""
    def __getattr__(name: str) -> Any:
        mod = importlib.import_module(module)
        if name != "__all__" and name not in mod.__all__:
            raise AttributeError(f"module {package['__name__']!r} has no attribute {name!r}")
        package.update({n: getattr(mod, n) for n in mod.__all__}, __all__=mod.__all__)
        return package[name]

    return __getattr__
