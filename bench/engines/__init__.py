"""Engines: what serves the model, behind one protocol (`bench.engines.base.Engine`).

Names, kinds and capabilities are registered in `bench.catalog.engines`; `engine_class`
imports the named class only when asked, so importing this package never imports vllm,
torch or transformers.
"""

from __future__ import annotations

import importlib

from bench.catalog.engines import get_engine


def engine_class(name: str):
    """The engine class registered as `name`; ConfigError listing the known names otherwise."""
    module, attr = get_engine(name).target.split(":")
    return getattr(importlib.import_module(module), attr)
