"""Cutting and recording the cost of engine starts (issue 22, docs/timing.md).

- `Prepared`: the next engine configuration's model folder prepared on a thread while the
  current one measures, so its start does not wait for it (dummy-weight folders are written,
  a local weights folder is read once into the page cache). Never a download: a Hugging Face
  id is left to the engine.
- `start_phases`: the phases an engine's log names for one start (vLLM: bench.engines.vllm_startlog).
- `compile_cache_env`: vLLM's compile cache (VLLM_CACHE_ROOT) kept in bench's cache folder.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.engines.vllm_startlog import StartPhases, parse_start_log
from bench.errors import BenchError
from bench.plan import EngineConfig

MAX_LOG_BYTES = 8 << 20  # a start's log beyond this is not read for phases (a looping warning)
VLLM_CACHE_ENV = "VLLM_CACHE_ROOT"
PREPARE_TIMEOUT_S = 600.0  # past this the start prepares the folder itself


def start_phases(engine_name: str, log: Path, offset: int) -> StartPhases:
    """The phases of the start that appended to `log` from byte `offset` (vLLM only; other
    engines and an unreadable log: none named)."""
    if not engine_name.startswith("vllm"):
        return StartPhases()
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read(MAX_LOG_BYTES).decode("utf-8", "replace")
    except OSError:
        return StartPhases()
    return parse_start_log(text)


def compile_cache_root(cache_dir: Path) -> Path:
    """Where vLLM keeps torch.compile artifacts for bench: beside the model folders
    (`<cache>/vllm`, default ~/.cache/bench/vllm), unless the user set VLLM_CACHE_ROOT."""
    return Path(os.environ.get(VLLM_CACHE_ENV) or Path(cache_dir).parent / "vllm")


class Prepared:
    """Model folders prepared ahead, one configuration at a time, on one thread.

        prepared.ahead(next_cfg)      # while the current configuration measures
        prepared.wait(cfg)            # before cfg's start: its folder is on disk (or the start makes it)
    """

    def __init__(self, env: Any):
        self.env = env
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    def ahead(self, cfg: EngineConfig) -> None:
        """Start preparing `cfg`'s model folder (no-op for engines without model files)."""
        from bench.catalog.engines import get_engine

        if not get_engine(cfg.engine).needs_model_files:
            return
        with self._lock:
            if cfg.config_id() in self._jobs:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-prepare")
            self._jobs[cfg.config_id()] = self._pool.submit(_prepare, cfg, self.env)

    def wait(self, cfg: EngineConfig) -> None:
        """Wait for `cfg`'s preparation, if one was started (bounded): the start then finds
        the folder on disk (prepare_model is idempotent). A failed preparation is left to the
        start, which prepares again and reports the error as a start failure."""
        with self._lock:
            job = self._jobs.pop(cfg.config_id(), None)
        if job is None:
            return
        try:
            job.result(timeout=PREPARE_TIMEOUT_S)
        except (BenchError, OSError, TimeoutError):
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def model_folder(cfg: EngineConfig, env: Any) -> tuple[str, Any]:
    """The model folder (or weights id) `cfg`'s engine loads, prepared, and its catalog model."""
    from bench.catalog import get_model

    spec = get_model(cfg.model)
    if cfg.weights == "dummy":
        from bench.catalog.prepare import prepare_model

        return str(prepare_model(spec, env.cache_dir)), spec
    return cfg.weights, spec


def _prepare(cfg: EngineConfig, env: Any) -> None:
    path, _ = model_folder(cfg, env)
    folder = Path(path)
    if cfg.weights != "dummy" and folder.is_dir():
        _warm_page_cache(folder)


def _warm_page_cache(folder: Path, limit_bytes: int = 64 << 30) -> None:
    """Read a local weights folder once so the engine's load comes from memory (bounded)."""
    left = limit_bytes
    for f in sorted(folder.glob("*.safetensors")):
        if left <= 0 or f.is_symlink():
            return
        with open(f, "rb") as fh:
            while left > 0 and (chunk := fh.read(16 << 20)):
                left -= len(chunk)
