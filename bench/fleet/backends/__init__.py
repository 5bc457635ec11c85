"""Fleet backends behind one protocol (base.Backend); each imported only when named, so
`bench fleet --help` never imports ray or sky."""

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


def backend_from_record(record: dict | None):
    """The backend a fleet was last launched with (fleet.json's `backend`), or None."""
    if not isinstance(record, dict) or record.get("name") not in BACKENDS:
        return None
    return get_backend(record["name"], **{k: v for k, v in record.items() if k != "name"})
