"""The transformers engine for the runner: one model built at `start()`, static batches per point.

A load point's level (concurrency C, or offline batch N) becomes the static batch size;
the point's requests run as ceil(n_requests / batch) full batches after
ceil(n_warmup / batch) warm-up batches, through `bench.engines.hf.run_hf_point`.
Every sequence of a batch is in flight at once, so the target concurrency is reached by
construction. The helpers `static_batches` and `batch_facts` serve the offline vLLM engine too.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.load.records import RequestRecord


def static_batches(point) -> tuple[int, int, int]:
    """(batch size, warm-up batches, measured batches) of a point run as static batches."""
    load = point.load
    batch = int(load.get("concurrency") or load.get("batch") or 0)
    if load.get("kind") not in ("concurrency", "offline") or batch < 1:
        raise ConfigError(f"point {point.point_id}: static-batch engines run concurrency or offline loads, "
                          f"not {load.get('kind')!r}")
    return batch, math.ceil(point.n_warmup / batch), math.ceil(point.n_requests / batch)


def batch_facts(records: list[RequestRecord], batch: int, window_t0_s: float, window_t1_s: float) -> dict[str, Any]:
    """The facts dict the runner wants from an engine that measures itself (perf_counter seconds)."""
    measured = [r for r in records if r.phase == "measured"]
    ends = [r.t_last if r.t_last is not None else r.t_send for r in measured]
    return {
        "window_t0_s": window_t0_s, "window_t1_s": window_t1_s,
        "span_t0_s": min(r.t_send for r in measured), "span_t1_s": max([*ends, window_t1_s]),
        "max_in_flight": batch, "target_concurrency": batch, "target_reached": True,
        "target_rate_rps": None, "achieved_rate_rps": None,
    }


def point_seed(point, seed: int | None) -> int:
    """The workload's own seed, else `seed`, else the repeat index."""
    if point.workload.get("seed") is not None:
        return int(point.workload["seed"])
    return int(seed) if seed is not None else point.repeat


class HfEngine:
    """transformers `generate` in this process; the runner calls `run_point` for each point.

    Nothing happens in the constructor; `start()` builds the random-initialised model
    (dtype "auto": float32 on CPU, bfloat16 on CUDA), `stop()` drops it.
    """

    def __init__(self, model_path: str, served_model: str, log_path: Path, config=None, model_spec=None,
                 device: str = "cpu", seed: int = 0):
        self.model_path = model_path
        self.served_model = served_model
        self.log_path = Path(log_path)
        self.config = config
        self.model_spec = model_spec
        self.device = device
        self.seed = seed
        self.n_gpus = 1
        self._model = None

    @property
    def dtype(self) -> str:
        return getattr(self.config, "dtype", None) or "auto"

    def start(self) -> None:
        from bench.engines.hf import build_model, resolve_dtype

        cfg = self.config
        if cfg is not None and (cfg.quantization or cfg.kv_cache_dtype != "auto" or cfg.n_gpus > 1):
            raise ConfigError("hf engine: runs one device in bf16/fp16/fp32 only "
                              "(no quantization, fp8 KV cache or tensor/pipeline parallelism)")
        if cfg is not None and cfg.weights != "dummy":
            raise ConfigError(f"hf engine: builds random-initialised weights only (weights 'dummy'), "
                              f"not '{cfg.weights}'")
        if self.model_spec is None:
            raise ConfigError("hf engine: needs the catalog model_spec to build the model")
        t0 = time.perf_counter()
        self._model = build_model(self.model_spec, self.device, self.dtype, self.seed)
        n_params = sum(p.numel() for p in self._model.parameters())
        self._log(f"loaded {getattr(self.model_spec, 'key', self.served_model)}: random-initialised "
                  f"{type(self._model).__name__}, {n_params} parameters, dtype {resolve_dtype(self.dtype, self.device)}, "
                  f"device {self.device}, seed {self.seed}, {time.perf_counter() - t0:.2f} s")

    def stop(self) -> None:
        if self._model is None:
            return
        self._model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        self._log("stopped")

    def alive(self) -> bool:
        return self._model is not None

    def log_tail(self, n: int = 20) -> str:
        from bench.engines.process import log_tail

        return log_tail(self.log_path, n)

    def server_counters(self) -> None:
        return None

    def run_point(self, point, model_spec=None, seed: int | None = None) -> tuple[list[RequestRecord], dict[str, Any]]:
        """Records (warm-up + measured) and facts of one point; times are perf_counter seconds."""
        from bench.engines.base import EngineDied
        from bench.engines.hf import run_hf_point

        if self._model is None:
            raise EngineDied("hf engine: run_point before start() (or after stop())")
        wl = point.workload
        if wl.get("kind", "random") != "random" or wl.get("input_len_range") or wl.get("output_len_range") \
                or wl.get("as_text"):
            raise ConfigError(f"point {point.point_id}: the hf engine runs fixed-length random token workloads only")
        batch, n_warm, n_batches = static_batches(point)
        t0 = time.perf_counter()
        records, w0, w1 = run_hf_point(
            model_spec or self.model_spec, batch_size=batch, input_len=int(wl["input_len"]),
            output_len=int(wl["output_len"]), n_batches=n_batches, device=self.device, dtype=self.dtype,
            seed=point_seed(point, seed), n_warmup_batches=n_warm, model=self._model,
        )
        failed = sum(1 for r in records if not r.ok)
        self._log(f"point {point.point_id}: {n_warm} warm-up + {n_batches} batches of {batch} "
                  f"({wl['input_len']} in, {wl['output_len']} out), window {w1 - w0:.3f} s, "
                  f"total {time.perf_counter() - t0:.3f} s, {failed} failed")
        return records, batch_facts(records, batch, w0, w1)

    def _log(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} hf engine: {line}\n")
