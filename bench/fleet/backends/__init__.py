"""Fleet backends behind one protocol (base.Backend); each imported only when named, so
`bench fleet --help` never imports ray or sky. A backend is built from the user's own
options (bench.fleet.control.user_backend), never from a record read from the store."""

from __future__ import annotations

import importlib

from bench.errors import ConfigError

BACKENDS = {
    "local": "bench.fleet.backends.local:LocalBackend",
    "ray": "bench.fleet.backends.ray:RayBackend",
    "skypilot": "bench.fleet.backends.skypilot:SkyPilotBackend",
}


def get_backend(name: str, **options):
    """The backend `name` built with its options (those it does not take are ignored)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown fleet backend '{name}' (known: {', '.join(BACKENDS)})")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr).from_options(**options)
