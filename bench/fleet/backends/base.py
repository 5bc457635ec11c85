"""The protocol every fleet backend follows, and what all of them pass to a shard.

A backend places shards (bench.fleet.shards.Shard) on machines and runs the shard command
(`python -m bench fleet shard ...`, bench.fleet.shard) there; the store, not the backend,
says which shards are done (bench.fleet.state). `status`, `logs` and `cancel` take the
fleet's record from the store (fleet.json), so they work without the sweep file.
"""

from __future__ import annotations

import importlib
import os
from typing import Protocol

from bench.errors import ConfigError
from bench.fleet.state import View

STORE_ENV = "BENCH_STORE"
# Passed to a remote shard as plain settings (none holds a credential).
PLAIN_ENV = ("BENCH_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")
# Passed as secrets, by name, when set here (values never enter a file bench writes).
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "BENCH_STORE_OPTIONS")


class Backend(Protocol):
    name: str

    @classmethod
    def from_options(cls, **options) -> Backend: ...

    def record(self) -> dict:
        """What fleet.json keeps to build this backend again (`name` and its options; no secret)."""

    def placements(self, fleet, shards) -> dict[str, str]:
        """Where each shard would run, in a few words (`bench fleet plan`); ConfigError when
        the backend cannot place them."""

    def submit(self, fleet, shards, store_url: str) -> list[str]:
        """Start the shards; one line per shard started."""

    def status(self, record: dict, shard_ids: list[str]) -> dict[str, View]:
        """What the backend knows of each shard (absent: nothing)."""

    def logs(self, record: dict, shard_id: str, tail: int = 200) -> str | None:
        """The shard's latest output, or None when the backend has none."""

    def cancel(self, record: dict, shard_ids: list[str]) -> list[str]:
        """Stop the shards (each saves what it finished); one line per shard."""


def shard_argv(fleet_id: str, shard, sweep_arg: str, backend: str, python: str = "python3") -> list[str]:
    """The shard command; the store URL travels in $BENCH_STORE, never on a command line."""
    return [python, "-m", "bench", "fleet", "shard", sweep_arg, "--config", shard.config_id,
            "--hardware", shard.hardware_arg, "--fleet", fleet_id, "--backend", backend]


def store_url_is_secret(url: str) -> bool:
    """A URL with `user:password@` in it is a credential itself."""
    from bench.redact import redact_text

    return redact_text(url) != url


def remote_env(store_url: str) -> tuple[dict[str, str], list[str]]:
    """(plain settings, names of secrets set here) a shard on another machine needs for the store."""
    plain = {k: os.environ[k] for k in PLAIN_ENV if os.environ.get(k)}
    secrets = [k for k in SECRET_ENV if os.environ.get(k)]
    if store_url_is_secret(store_url):
        secrets.insert(0, STORE_ENV)
    else:
        plain = {STORE_ENV: store_url, **plain}
    return plain, secrets


def require(module: str, backend: str, extra: str):
    """The backend's client library, imported now; ConfigError naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the {backend} backend needs {module}: pip install -e '.[{extra}]'") from None


def one_line(backend: str, e: BaseException) -> ConfigError:
    """A client library's error as one line (its own types vary by version)."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return ConfigError(f"{backend}: {type(e).__name__}: {first}")
