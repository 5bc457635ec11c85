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

from bench.errors import ConfigError, one_line
from bench.fleet.records import BackendRecord, FleetRecord
from bench.fleet.state import View

STORE_ENV = "BENCH_STORE"
# Passed to a remote shard as plain settings, unless a value carries a credential itself (a
# password, token or signature in the URL): then it is a secret like the ones below.
PLAIN_ENV = ("BENCH_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")
# Passed as secrets, by name, when set here (values never enter a file bench writes).
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "BENCH_STORE_OPTIONS")
# The shared secret of a multi-node shard's node agents (the head and every follower get it).
NODE_SECRET_ENV = "BENCH_NODE_SECRET"


class Backend(Protocol):
    name: str

    @classmethod
    def from_options(cls, **options) -> Backend: ...

    def record(self) -> BackendRecord:
        """What fleet.json keeps to build this backend again (`name` and its options; no secret)."""

    def placements(self, fleet, shards) -> dict[str, str]:
        """Where each shard would run, in a few words (`bench fleet plan`); ConfigError when
        the backend cannot place them."""

    def submit(self, fleet, shards, store_url: str) -> list[str]:
        """Start the shards; one line per shard started."""

    def status(self, record: FleetRecord, shard_ids: list[str]) -> dict[str, View]:
        """What the backend knows of each shard (absent: nothing)."""

    def logs(self, record: FleetRecord, shard_id: str, tail: int = 200) -> str | None:
        """The shard's latest output, or None when the backend has none."""

    def cancel(self, record: FleetRecord, shard_ids: list[str]) -> list[str]:
        """Stop the shards (each saves what it finished); one line per shard."""


def shard_argv(fleet_id: str, shard, sweep_arg: str, backend: str, python: str = "python3") -> list[str]:
    """The shard command; the store URL travels in $BENCH_STORE, never on a command line."""
    return [python, "-m", "bench", "fleet", "shard", sweep_arg, "--config", shard.config_id,
            "--hardware", shard.hardware_arg, "--fleet", fleet_id, "--backend", backend]


def carries_credential(value: str) -> bool:
    """True when a URL or setting is a credential itself: a `user[:password]@` in a URL, a
    query string (where tokens and signatures travel: `?token=`, `X-Amz-Signature=`, a SAS
    `sig=`), or anything bench.redact would hide."""
    from urllib.parse import urlsplit

    from bench.redact import redact_text

    if redact_text(value) != value:
        return True
    try:
        parts = urlsplit(value)
    except ValueError:
        return True  # unparsable: never sent in the clear
    return bool(parts.scheme and ("@" in parts.netloc or parts.query))


def _settings(store_url: str) -> dict[str, str]:
    return {STORE_ENV: store_url, **{k: os.environ[k] for k in PLAIN_ENV if os.environ.get(k)}}


def carried_credentials(store_url: str) -> list[str]:
    """Names among the store URL and the plain settings whose value carries a credential."""
    return [k for k, v in _settings(store_url).items() if carries_credential(v)]


def remote_env(store_url: str) -> tuple[dict[str, str], list[str]]:
    """(plain settings, names of secrets set here) a shard on another machine needs for the store.
    Every credential is a secret: the store URL or a plain setting that carries one too."""
    carried = carried_credentials(store_url)
    plain = {k: v for k, v in _settings(store_url).items() if k not in carried}
    return plain, carried + [k for k in SECRET_ENV if os.environ.get(k)]


def require(module: str, backend: str, extra: str):
    """The backend's client library, imported now; ConfigError naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the {backend} backend needs {module}: pip install -e '.[{extra}]'") from None


def library_error(backend: str, e: BaseException) -> ConfigError:
    """A client library's error as one line (its own types vary by version)."""
    return ConfigError(one_line(f"{backend}: {type(e).__name__}: {e}"))
