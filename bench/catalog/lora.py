"""Random-weight LoRA adapters for dummy-weight runs, built offline in PEFT's folder layout.

A LoRA workload on a dummy-weight model needs adapters vLLM will load (`--lora-modules
name=path`); nothing is downloaded. An adapter folder holds what PEFT writes and vLLM's
`PEFTHelper` reads:

    adapter_config.json          peft_type LORA, r, lora_alpha, target_modules, ...
    adapter_model.safetensors    base_model.model.model.layers.<i>.self_attn.<proj>.lora_A.weight  [r, in]
                                 base_model.model.model.layers.<i>.self_attn.<proj>.lora_B.weight  [out, r]

for the attention projections (q, k, v, o) of every layer of the catalog model. peft is
not a dependency: the layout is small and fixed, and the `safetensors` package (already
installed with vLLM) writes the tensors. Both factors are nonzero (PEFT zeroes lora_B at
initialisation, which would make the adapter a no-op: its compute is what a LoRA point
measures, and its output must differ from the base model's for a mixed batch to be real).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.atomicio import atomic_folder
from bench.errors import ConfigError

if TYPE_CHECKING:  # a sweep's lora block reads LORA_RANKS only: no numpy, no catalog models for it
    import numpy as np

    from bench.catalog import ModelSpec

ADAPTER_LAYOUT = 1  # bump when the folder layout changes: new folders are built
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM 0.32's MaxLoRARanks: --max-lora-rank takes one of these
MARKER_FILE = "bench-adapter.json"


def projection_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """(in, out) features of each attention projection of `spec` (a standard multi-head /
    grouped-query attention; an MLA model is refused: its projections are shaped otherwise)."""
    cfg = spec.config
    if cfg.is_mla:
        raise ConfigError(f"model '{spec.key}' uses MLA attention: random LoRA adapters are built for q/k/v/o projections only")
    hidden, q_out, kv_out = cfg.hidden_size, cfg.num_attention_heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    return {"q_proj": (hidden, q_out), "k_proj": (hidden, kv_out), "v_proj": (hidden, kv_out), "o_proj": (q_out, hidden)}


def adapter_tensors(spec: ModelSpec, rank: int, seed: int) -> dict[str, np.ndarray]:
    """The adapter's tensors by PEFT key (float32), drawn from `seed` (same seed, same bytes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for layer in range(spec.config.num_hidden_layers):
        for proj, (n_in, n_out) in projection_shapes(spec).items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            # Scaled like a trained adapter's update (small next to the weights it adds to).
            out[f"{key}.lora_A.weight"] = (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32)
            out[f"{key}.lora_B.weight"] = (rng.standard_normal((n_out, rank)) * 0.01).astype(np.float32)
    return out


def adapter_config(spec: ModelSpec, rank: int) -> dict[str, Any]:
    """adapter_config.json: PEFT's LoRA keys, alpha = 2 x rank (a common choice)."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
            "lora_dropout": 0.0, "bias": "none", "target_modules": list(TARGET_MODULES),
            "base_model_name_or_path": spec.hf_repo or spec.key, "fan_in_fan_out": False,
            "modules_to_save": None, "use_rslora": False, "use_dora": False}


def adapter_folder_name(spec: ModelSpec, name: str, rank: int, seed: int) -> str:
    """`<model>-lora-<name>-r<rank>-<12 hex>`: a hash of what is written, so a change gets a new folder."""
    payload = json.dumps({"model": spec.config_json(), "name": name, "rank": rank, "seed": seed,
                          "layout": ADAPTER_LAYOUT}, sort_keys=True)
    return f"{spec.key}-lora-{name}-r{rank}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def prepare_adapter(spec: ModelSpec, cache_dir: str | Path, name: str, rank: int, seed: int = 0) -> Path:
    """The random-weight adapter folder `name` of rank `rank` for `spec` under `cache_dir`,
    built if absent. Idempotent and never half-written (built aside, then renamed)."""
    from safetensors.numpy import save_file

    if rank not in LORA_RANKS:
        raise ConfigError(f"LoRA rank {rank} is not one vLLM accepts ({', '.join(map(str, LORA_RANKS))})")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        save_file(adapter_tensors(spec, rank, seed), str(tmp / "adapter_model.safetensors"))
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config(spec, rank), indent=2, sort_keys=True) + "\n")
        (tmp / MARKER_FILE).write_text(json.dumps({"model": spec.key, "adapter": name, "rank": rank, "seed": seed,
                                                   "weights": "random"}, sort_keys=True) + "\n")

    return atomic_folder(cache / adapter_folder_name(spec, name, rank, seed), MARKER_FILE, write)
