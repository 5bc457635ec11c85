"""The transformers engine: one model built at `start()`, static batches generated in-process.

A batch engine (`kind = "batch"`): `bench.load.static` runs a point's batches through
`generate_batch`. Weights are random-initialised from the catalog's config; precision
bf16/fp16/fp32, or fp8 weights through torchao on a GPU (`bench.engines.hf`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

from bench.catalog.engines import installed_version
from bench.engines.base import BatchOutput, BatchRequest, EngineDied
from bench.errors import ConfigError


def check_config(cfg: Any, device: str) -> None:
    """ConfigError (one line) for what this engine cannot run, before anything is loaded."""
    if cfg is None:
        return
    if cfg.quantization not in (None, "fp8"):
        raise ConfigError(f"hf engine: quantization '{cfg.quantization}' is not supported (only fp8, on a GPU)")
    if cfg.quantization == "fp8" and device == "cpu":
        raise ConfigError("hf engine: fp8 weights do not run on CPU; use bf16/fp32 here, fp8 on a GPU")
    if cfg.kv_cache_dtype != "auto" or cfg.n_gpus > 1:
        raise ConfigError("hf engine: runs one device without an fp8 KV cache "
                          "(no tensor/pipeline/data parallelism)")
    if cfg.weights != "dummy":
        raise ConfigError(f"hf engine: builds random-initialised weights only (weights 'dummy'), "
                          f"not '{cfg.weights}'")


def torch_index(device: int, visible: str | None = None) -> int:
    """torch's index of NVML device `device` in this process: its position in
    CUDA_VISIBLE_DEVICES when that lists indices, else the index itself."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    parts = [p.strip() for p in (visible or "").split(",") if p.strip()]
    if parts and all(p.isdigit() for p in parts):
        if str(int(device)) not in parts:
            raise ConfigError(f"hf engine: device {device} is not in CUDA_VISIBLE_DEVICES={visible}")
        return parts.index(str(int(device)))
    return int(device)


class HfEngine:
    """transformers `generate` in this process.

    Nothing happens in the constructor; `start()` builds the random-initialised model
    (dtype "auto": float32 on CPU, bfloat16 on CUDA; fp8 weights quantized after), `stop()`
    drops it.
    """

    name: ClassVar[str] = "hf"
    kind: ClassVar[str] = "batch"

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

    @classmethod
    def launch_args(cls, cfg: Any, device: str) -> dict[str, Any]:
        args = {"dtype": cfg.dtype, "quantization": cfg.quantization}
        return {k: v for k, v in args.items() if v is not None}

    @classmethod
    def from_config(cls, cfg: Any, *, model_path: str, model_spec: Any, log_path: Path, device: str,
                    devices: list[int] | None = None, vendor: str | None = None,
                    startup_timeout_s: float = 600.0) -> HfEngine:
        """The engine for one EngineConfig on the first of `devices` (None: the current GPU)."""
        check_config(cfg, device)
        if device != "cpu" and devices:
            device = f"cuda:{torch_index(devices[0])}"
        return cls(model_path, cfg.model, log_path, config=cfg, model_spec=model_spec, device=device)

    def version(self) -> str:
        """"transformers X, torch Y" from package metadata."""
        return installed_version(self.name)

    @property
    def dtype(self) -> str:
        return getattr(self.config, "dtype", None) or "auto"

    @property
    def quantization(self) -> str | None:
        return getattr(self.config, "quantization", None)

    def start(self) -> None:
        from bench.engines.hf import build_model, quantize_fp8, resolve_dtype

        check_config(self.config, "cpu" if self.device == "cpu" else "cuda")
        if self.model_spec is None:
            raise ConfigError("hf engine: needs the catalog model_spec to build the model")
        t0 = time.perf_counter()
        model = build_model(self.model_spec, self.device, self.dtype, self.seed)
        if self.quantization == "fp8":
            model = quantize_fp8(model, self.device)
        self._model = model
        n_params = sum(p.numel() for p in model.parameters())
        quant = ", fp8 weights (torchao)" if self.quantization == "fp8" else ""
        self.note(f"loaded {getattr(self.model_spec, 'key', self.served_model)}: random-initialised "
                  f"{type(model).__name__}, {n_params} parameters, dtype {resolve_dtype(self.dtype, self.device)}"
                  f"{quant}, device {self.device}, seed {self.seed}, {time.perf_counter() - t0:.2f} s")

    def stop(self) -> None:
        if self._model is None:
            return
        self._model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        self.note("stopped")

    def alive(self) -> bool:
        return self._model is not None

    def log_tail(self, n: int = 20) -> str:
        from bench.engines.process import log_tail

        return log_tail(self.log_path, n)

    def generate_batch(self, requests: list[BatchRequest]) -> BatchOutput:
        """One `model.generate` over token-id prompts of one length, one output length."""
        from bench.engines.hf import generate_batch

        if self._model is None:
            raise EngineDied("hf engine: generate_batch before start() (or after stop())")
        lengths = {(len(r.token_ids), r.max_tokens) if r.token_ids is not None else None for r in requests}
        if None in lengths or len(lengths) != 1:
            raise ConfigError("hf engine: runs fixed-length token workloads only "
                              "(random, without length ranges or as_text)")
        import torch

        ids = torch.tensor([r.token_ids for r in requests], dtype=torch.long).to(self.device)
        return generate_batch(self._model, ids, requests[0].max_tokens)

    def note(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} hf engine: {line}\n")
