"""Engines: what serves the model, behind one protocol (`bench.engines.base.Engine`).

Names, kinds and capabilities are registered in `bench.catalog.engines`; `engine_class`
imports the named class only when asked, so importing this package never imports vllm,
torch or transformers, nor the catalog: a process that needs one engine module (a fleet
shard's lifeline, a fake node's follower argv) does not read models.yaml's types.
"""

from __future__ import annotations


def engine_class(name: str):
    """The engine class registered as `name`; ConfigError naming the closest known one otherwise."""
    from bench.catalog.engines import ENGINE_CLASSES

    return ENGINE_CLASSES.get(name)
