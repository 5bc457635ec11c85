"""An OpenAI-compatible server that is already running (SGLang, TGI, a remote vLLM).

Credentials: an API key is read from an environment variable (`api_key_env: NAME`, else
$BENCH_API_KEY when set) or a file (`api_key_file: PATH`), never given as a value, and sent
as `Authorization: Bearer`; `user:pass@` (or a token alone, `TOKEN@`) in the URL becomes
`Authorization: Basic` and is taken out of `base_url`. The header lives in memory only: the
engine args hold where the key is, not the key.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit, urlunsplit

from bench.engines.base import EngineCounters, EngineDied, reset_prefix_cache
from bench.engines.process import http_get
from bench.engines.sglang_metrics import SGLANG_COUNTERS
from bench.engines.vllm_metrics import COUNTERS, parse_page
from bench.errors import ConfigError
from bench.redact import is_secret_name, redact_text

API_KEY_ENV = "BENCH_API_KEY"  # read when set and the config names no other source
KEY_FILE_MAX_BYTES = 65536


def secret_arg_refusal(name: str, where: str = "engine argument") -> str:
    """The one line refusing a secret given as an engine-argument value, saying what to do instead."""
    return (f"{where} {name} refused: a secret is never given as a value (it would stay in shell history, "
            f"`ps` and the sweep file); give the endpoint's API key as api_key_env=NAME (a variable holding it; "
            f"${API_KEY_ENV} is read when set) or api_key_file=PATH, with --engine-arg or under engine_args.extra "
            f"in a sweep file, and other secrets through the engine's environment (e.g. HF_TOKEN)")


def split_userinfo(url: str) -> tuple[str, str | None]:
    """(url without its userinfo, "Basic ..." from it or None); user and password percent-decoded."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), "Basic " + base64.b64encode(userinfo.encode()).decode()


class Endpoint:
    """Benchmarks `base_url` without launching anything; start() only checks it answers."""

    name: ClassVar[str] = "endpoint"
    kind: ClassVar[str] = "server"

    def __init__(self, base_url: str, served_model: str, log_path: Path, n_gpus: int = 1,
                 headers: dict[str, str] | None = None):
        url, basic = split_userinfo(base_url)
        self.base_url = url.rstrip("/").removesuffix("/v1")
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.n_gpus = n_gpus
        # Sent with every request (the streaming client, the health check); never written.
        self.request_headers: dict[str, str] = dict(headers) if headers else (
            {"Authorization": basic} if basic else {})
        self._reset: str | None = None  # the last prefix-cache reset's outcome

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r}, {self.served_model!r})"

    @classmethod
    def launch_args(cls, cfg: Any, device: str) -> dict[str, Any]:
        """Nothing is launched; the credentials are checked here, before any engine starts."""
        cls.auth_headers(cfg.extra_args, cfg.endpoint_url or "")
        return {}

    @staticmethod
    def auth_headers(args: dict[str, Any], url: str) -> dict[str, str]:
        """The Authorization header from the engine args and the URL, or {}; ConfigError (one
        line, no secret in it) for a key given as a value, a source that cannot be read, or two."""
        for name in args:
            if is_secret_name(name):
                raise ConfigError(secret_arg_refusal(name))
        env_name, key_file = args.get("api_key_env"), args.get("api_key_file")
        if env_name and key_file:
            raise ConfigError("give the endpoint's API key as api_key_env or api_key_file, not both")
        key = _read_key(env_name, key_file)
        _, basic = split_userinfo(url)
        if key is not None and basic is not None:
            raise ConfigError("the endpoint URL carries user:password@ and an API key is given "
                              f"({'$' + str(env_name or API_KEY_ENV) if not key_file else key_file}): use one, not both")
        if key is not None:
            return {"Authorization": f"Bearer {key}"}
        return {"Authorization": basic} if basic else {}

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str | None = None, model_spec: Any = None, log_path: Path,
                    device: str = "cuda", devices: list[int] | None = None, vendor: str | None = None,
                    startup_timeout_s: float = 600.0) -> Endpoint:
        """The server at `cfg.endpoint_url`, serving `cfg.weights` (or the catalog key for dummy)."""
        if not cfg.endpoint_url:
            raise ConfigError("engine 'endpoint' needs endpoint_url (--url)")
        served = cfg.weights if cfg.weights != "dummy" else cfg.model
        return cls(cfg.endpoint_url, served, log_path, n_gpus=cfg.n_gpus,
                   headers=cls.auth_headers(cfg.extra_args, cfg.endpoint_url))

    def _get(self, path: str, timeout_s: float) -> tuple[int, str]:
        return http_get(f"{self.base_url}{path}", timeout_s=timeout_s, headers=self.request_headers)

    def version(self) -> str:
        """What the server reports at /version (vLLM: {"version": "0.32.0"}), else "unknown"."""
        status, body = self._get("/version", 5.0)
        if status != 200:
            return "unknown"
        try:
            version = json.loads(body).get("version")
        except (ValueError, AttributeError):
            return "unknown"
        return str(version) if version else "unknown"

    def start(self) -> None:
        self.check_alive()

    def check_alive(self) -> None:
        status, reason = self._get("/v1/models", 10.0)
        if status != 200:
            why = f"status {status}{', ' + reason if reason else ''}"
            if status in (401, 403):
                why += (f"; it refused the credentials: give its API key with --engine-arg api_key_env=NAME "
                        f"(default ${API_KEY_ENV}) or api_key_file=PATH, docs/store.md#secrets")
            raise EngineDied(redact_text(f"endpoint {self.base_url} does not answer /v1/models ({why})"))

    def alive(self) -> bool:
        return self._get("/v1/models", 5.0)[0] == 200

    healthy = alive

    def stop(self) -> None:
        pass

    def log_tail(self, n: int = 20) -> str:
        return ""

    def server_counters(self) -> EngineCounters | None:
        """vLLM-style token counters when the endpoint exposes them, else None."""
        status, body = self._get("/metrics", 5.0)
        if status != 200:
            return None
        return EngineCounters.from_samples(parse_page(body, COUNTERS + SGLANG_COUNTERS))  # a vLLM or an SGLang server

    def reset_prefix_cache(self) -> str:
        """Reset a vLLM endpoint's prefix cache where it allows it (VLLM_SERVER_DEV_MODE=1); once
        "unavailable", not asked again."""
        if self._reset != "unavailable":
            self._reset = reset_prefix_cache(self.base_url)
        return self._reset


def _read_key(env_name: Any, key_file: Any) -> str | None:
    """The API key from $env_name, the file, or $BENCH_API_KEY; None when no source is named or set."""
    if key_file:
        path = Path(str(key_file)).expanduser()
        try:
            with path.open("rb") as f:
                data = f.read(KEY_FILE_MAX_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"api_key_file {path}: cannot read ({e.strerror or e})") from None
        if len(data) > KEY_FILE_MAX_BYTES:
            raise ConfigError(f"api_key_file {path}: over {KEY_FILE_MAX_BYTES} bytes, not an API key")
        key, where = data.decode("utf-8", errors="replace").strip(), f"api_key_file {path}"
    elif env_name:
        if str(env_name) not in os.environ:
            raise ConfigError(f"api_key_env: ${env_name} is not set")
        key, where = os.environ[str(env_name)].strip(), f"${env_name}"
    else:
        key, where = os.environ.get(API_KEY_ENV, "").strip(), f"${API_KEY_ENV}"
        if not key:
            return None
    if not key:
        raise ConfigError(f"{where} is empty")
    if any(c in key for c in "\r\n\0"):
        raise ConfigError(f"{where}: the API key holds a line break (one line expected)")
    return key
