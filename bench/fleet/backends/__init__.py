"""Fleet backends behind one protocol (base.Backend); each imported only when named, so
`bench fleet --help` never imports ray or sky. A backend is built from the user's own
options (bench.fleet.control.user_backend), never from a record read from the store."""

from __future__ import annotations

from typing import Any

from bench.registry import Registry

# name -> "module:class"; the CLI's --backend choices read the names here.
BACKENDS: Registry[Any] = Registry("fleet backend", {
    "local": "bench.fleet.backends.local:LocalBackend",
    "ray": "bench.fleet.backends.ray:RayBackend",
    "skypilot": "bench.fleet.backends.skypilot:SkyPilotBackend",
})


def get_backend(name: str, **options):
    """The backend `name` built with its options (those it does not take are ignored);
    ConfigError naming the closest known backend when there is no such one."""
    return BACKENDS.get(name).from_options(**options)
