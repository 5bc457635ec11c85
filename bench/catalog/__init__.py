"""Catalog: `models.yaml` and `hardware/*.yaml` -> typed objects; device detection; dummy-weight folders.

    from bench.catalog import get_model, get_hardware
"""

from bench.catalog.models import *  # noqa: F403 - the package re-exports its module's __all__
from bench.catalog.models import __all__  # noqa: F401
