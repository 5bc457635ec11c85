"""Engines: what serves the model. A registry maps names to "module:attr" so that
importing this package never imports vllm, torch or transformers."""

from __future__ import annotations

import importlib

from bench.errors import ConfigError

ENGINES = {
    "vllm": "bench.engines.vllm_server:VllmServer",
    "endpoint": "bench.engines.endpoint:Endpoint",
    "hf": "bench.engines.hf_engine:HfEngine",
    "vllm-offline": "bench.engines.vllm_offline:VllmOffline",
}


def engine_class(name: str):
    target = ENGINES.get(name)
    if target is None:
        raise ConfigError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
