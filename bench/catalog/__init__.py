"""Catalog: `models.yaml` and `hardware/*.yaml` -> typed objects; device detection; dummy-weight folders.

    from bench.catalog import get_model, get_hardware

The package re-exports `bench.catalog.models`' `__all__` on first use (PEP 562), so importing
one of its modules (`bench.catalog.device`, `bench.catalog.configbase`) does not build the
catalog's models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.catalog.models import *  # noqa: F403 - the package re-exports its module's __all__
    from bench.catalog.models import __all__  # noqa: F401
else:
    def __getattr__(name: str):
        import importlib

        models = importlib.import_module("bench.catalog.models")
        if name != "__all__" and name not in models.__all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals().update({n: getattr(models, n) for n in models.__all__}, __all__=models.__all__)
        return globals()[name]
