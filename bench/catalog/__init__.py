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
    from bench.registry import reexport

    __getattr__ = reexport(globals(), "bench.catalog.models")
