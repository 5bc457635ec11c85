"""Engines: what serves the model, behind one protocol (`bench.engines.base.Engine`).

Names, kinds and capabilities are registered in `bench.catalog.engines`; `engine_class`
imports the named class only when asked, so importing this package never imports vllm,
torch or transformers.
"""

from __future__ import annotations

from bench.catalog.engines import ENGINE_CLASSES


def engine_class(name: str):
    """The engine class registered as `name`; ConfigError naming the closest known one otherwise."""
    return ENGINE_CLASSES.get(name)
