"""Static batches through transformers `model.generate`: a baseline where vLLM cannot run.

Random-initialised weights are built from the catalog's config (nothing is downloaded).
Every sequence is forced to exactly `output_len` new tokens (min_new_tokens =
max_new_tokens: the ignore_eos equivalent). A streamer stamps each decoding step on the
perf_counter clock as its tokens reach the host, so each sequence of a batch becomes a
RequestRecord with per-token times (`token_source="token_ids"`) and the same metrics apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.errors import ConfigError
from bench.load.records import RequestRecord

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
           "fp32": "float32", "float32": "float32"}
_FIRST_TOKEN_ID = 10  # sampled prompt ids stay clear of the usual special-token ids


def resolve_dtype(dtype: str | None, device: str) -> str:
    """"auto"/None -> bfloat16 on GPU, float32 on CPU; else the torch name of `dtype`."""
    if dtype in (None, "auto"):
        return "float32" if device == "cpu" else "bfloat16"
    if dtype not in _DTYPES:
        raise ConfigError(f"hf engine: unknown dtype '{dtype}' (known: auto, {', '.join(sorted(set(_DTYPES)))})")
    return _DTYPES[dtype]


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
    """Random-initialised causal LM on `device`; the global torch RNG is left untouched."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, resolve_dtype(dtype, device))
    config = hf_config(model_spec)
    fork = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
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


def generate_batch(model, input_ids, output_len: int, request_id0: int, phase: str,
                   clock: Callable[[], float] = time.perf_counter) -> list[RequestRecord]:
    """One static batch; one RequestRecord per sequence. A failure is recorded, not raised."""
    import torch

    batch, input_len = input_ids.shape
    records = [RequestRecord(request_id=request_id0 + i, phase=phase, n_in_expected=input_len,
                             n_out_expected=output_len, token_source="token_ids") for i in range(batch)]
    streamer = _step_streamer(clock)
    t_send = clock()
    for r in records:
        r.t_send = t_send
    try:
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                                 streamer=streamer, pad_token_id=0)
    except (RuntimeError, ValueError) as e:  # OOM and shape errors: data, not the end of the run
        for r in records:
            r.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return records
    times = streamer.times
    n_out = int(out.shape[1]) - input_len
    for r in records:
        r.n_in = input_len
        r.n_out = min(n_out, len(times))
        r.chunk_t = list(times[: r.n_out])
        r.chunk_tokens = [1] * r.n_out
        r.t_first = r.chunk_t[0] if r.chunk_t else None
        r.t_last = r.chunk_t[-1] if r.chunk_t else None
        if r.n_out < output_len:
            r.error = f"returned {r.n_out} tokens, asked for {output_len}"
    return records


def run_hf_point(model_spec: Any, batch_size: int, input_len: int, output_len: int, n_batches: int,
                 device: str = "cpu", dtype: str | None = "auto", seed: int = 0, n_warmup_batches: int = 1,
                 model=None, clock: Callable[[], float] = time.perf_counter) -> tuple[list[RequestRecord], float, float]:
    """Run `n_batches` measured static batches (after warm-up batches of the same shape).

    Returns (records, window_t0_s, window_t1_s): the window spans the first measured
    batch's start to the last measured token, perf_counter seconds. Pass `model` to reuse
    one built by `build_model` across points.
    """
    import torch

    if min(batch_size, input_len, output_len, n_batches) < 1:
        raise ConfigError("hf engine: batch_size, input_len, output_len and n_batches must be >= 1")
    model = model if model is not None else build_model(model_spec, device, dtype, seed)
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    records: list[RequestRecord] = []
    window_t0_s = window_t1_s = None
    for b in range(n_warmup_batches + n_batches):
        phase = "warmup" if b < n_warmup_batches else "measured"
        ids = torch.randint(_FIRST_TOKEN_ID, vocab, (batch_size, input_len), generator=gen).to(device)
        batch = generate_batch(model, ids, output_len, len(records), phase, clock)
        records += batch
        if phase == "measured":
            window_t0_s = batch[0].t_send if window_t0_s is None else window_t0_s
            last = [r.t_last for r in batch if r.t_last is not None]
            window_t1_s = max(last) if last else clock()
    return records, window_t0_s, window_t1_s
