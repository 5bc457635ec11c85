"""Static batches through transformers `model.generate`: a baseline where vLLM cannot run.

Random-initialised weights are built from the catalog's config (nothing is downloaded);
fp8 weights come from torchao's float8 quantization of those (GPU only). Every sequence is
forced to exactly `output_len` new tokens (min_new_tokens = max_new_tokens: the ignore_eos
equivalent). A streamer stamps each decoding step on the perf_counter clock as its tokens
reach the host, so each sequence carries per-token times and the same metrics apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.catalog.dtypes import dtype_name
from bench.engines.base import BatchOutput, GeneratedSequence
from bench.errors import ConfigError


def resolve_dtype(dtype: str | None, device: str) -> str:
    """"auto"/None -> bfloat16 on GPU, float32 on CPU; else the torch name of `dtype`."""
    if dtype in (None, "auto"):
        return "float32" if device == "cpu" else "bfloat16"
    try:
        return dtype_name(dtype)
    except ConfigError as e:
        raise ConfigError(f"hf engine: {e}") from None


def hf_config(model_spec: Any):
    """A transformers config from a catalog ModelSpec, a config dict, or a config object."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model_spec, PretrainedConfig):
        return model_spec
    cfg = dict(model_spec.config_json() if hasattr(model_spec, "config_json") else model_spec)
    cfg.pop("torch_dtype", None)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise ConfigError("hf engine: the model config has no model_type")
    return AutoConfig.for_model(model_type, **cfg)


def build_model(model_spec: Any, device: str, dtype: str | None, seed: int):
    """Random-initialised causal LM on `device` (built there directly on a GPU); the global
    torch RNG is left untouched."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, resolve_dtype(dtype, device))
    config = hf_config(model_spec)
    fork = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        if fork:  # initialised on the GPU itself: billions of parameters in seconds, not minutes on the host
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    return model.to(device).eval()


def _step_streamer(clock: Callable[[], float]):
    from transformers.generation.streamers import BaseStreamer

    class StepClock(BaseStreamer):
        """generate() puts the prompt first, then each step's tokens once they are on the host."""

        def __init__(self):
            self.prompt_seen = False
            self.times: list[float] = []

        def put(self, value):
            if self.prompt_seen:
                self.times.append(clock())
            self.prompt_seen = True

        def end(self):
            pass

    return StepClock()


def quantize_fp8(model, device: str):
    """fp8 weights and dynamic per-row fp8 activations through torchao (the W8A8 scheme of
    vLLM's `--quantization fp8`); needs a GPU with fp8 matmuls (compute capability >= 8.9)."""
    import torch

    if not device.startswith("cuda"):
        raise ConfigError("hf engine: fp8 weights need a GPU; use bf16/fp32 on CPU")
    if torch.cuda.get_device_capability(torch.device(device)) < (8, 9):
        raise ConfigError(f"hf engine: fp8 needs compute capability >= 8.9, "
                          f"{torch.cuda.get_device_name(torch.device(device))} has less")
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except ImportError:
        raise ConfigError("hf engine: fp8 needs torchao (pip install torchao)") from None
    quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return model


def generate_batch(model, input_ids, output_len: int, clock: Callable[[], float] = time.perf_counter) -> BatchOutput:
    """One static batch; one GeneratedSequence per row. A failure is data, not raised."""
    import torch

    batch, input_len = input_ids.shape
    streamer = _step_streamer(clock)
    t_send = clock()
    try:
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                                 streamer=streamer, pad_token_id=0)
    except (RuntimeError, ValueError) as e:  # OOM and shape errors: data, not the end of the run
        return BatchOutput(t_send=t_send, t_done=clock(),
                           error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    times = streamer.times
    n_out = min(int(out.shape[1]) - input_len, len(times))
    chunk_t = list(times[:n_out])
    sequences = [GeneratedSequence(n_in=input_len, n_out=n_out, t_first=chunk_t[0] if chunk_t else None,
                                   t_last=chunk_t[-1] if chunk_t else None, chunk_t=list(chunk_t),
                                   chunk_tokens=[1] * n_out) for _ in range(batch)]
    return BatchOutput(t_send=t_send, t_done=chunk_t[-1] if chunk_t else clock(), sequences=sequences)
