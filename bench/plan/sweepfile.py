"""The sweep file: its schema (pydantic, strict) and loading it with CLI overrides applied.

`load_sweep(path, overrides)` / `sweep_from_dict(raw, overrides)` -> a validated
`SweepSpec`; errors are one line naming the file and the key. Turning a sweep into
ordered load points is `bench.plan.build_plan`. See docs/sweeps.md for every key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from bench.catalog.configbase import safe_id
from bench.errors import ConfigError


class _Strict(BaseModel):  # not configbase.Strict: ruff (RUF012) must see list defaults on a BaseModel
    model_config = ConfigDict(extra="forbid")


def _listify(value: Any) -> Any:
    """A scalar where a list is expected becomes a one-element list."""
    return value if isinstance(value, list) or value is None else [value]


def _kind_of(default: str):
    def pick(value: Any) -> str | None:
        kind = value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", None)
        return f"<{kind}>"

    return Discriminator(pick)


OneOrMany = Annotated[list[int], BeforeValidator(_listify)]


Span = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]


class RandomWorkload(_Strict):
    """Token-exact random prompts; lengths in tokens, ranges (low, high) inclusive."""

    kind: Literal["random"] = "random"
    input_len: int = Field(ge=1)
    output_len: int = Field(ge=1)
    input_len_range: Span | None = None  # lengths drawn uniformly in it; None: input_len
    output_len_range: Span | None = None
    as_text: bool = False  # word prompts (about a token a word), for the chat endpoint
    seed: int | None = None  # default: the sweep's seed + the repeat index

    @model_validator(mode="after")
    def _ordered(self) -> RandomWorkload:
        for span in (self.input_len_range, self.output_len_range):
            if span and span[0] > span[1]:
                raise ValueError(f"range {list(span)} must be [low, high] with low <= high")
        return self

    def tag(self) -> str:
        tag = f"rand-{self.input_len}-{self.output_len}"
        tag += f"-i{self.input_len_range[0]}-{self.input_len_range[1]}" if self.input_len_range else ""
        tag += f"-o{self.output_len_range[0]}-{self.output_len_range[1]}" if self.output_len_range else ""
        return tag + ("-text" if self.as_text else "") + (f"-s{self.seed}" if self.seed is not None else "")


class FileWorkload(_Strict):
    """Prompts from a JSONL file. `max_input_len` (tokens) only informs preflight; it is not
    passed to the workload."""

    kind: Literal["file"]
    path: str
    output_len: int | None = Field(None, ge=1)
    max_input_len: int | None = Field(None, ge=1)
    seed: int | None = None

    def tag(self) -> str:
        stem = self.path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
        return f"file-{stem}" + (f"-{self.output_len}" if self.output_len else "")


class SharedPrefixWorkload(_Strict):
    """`n_prefixes` shared system prompts of `prefix_len` tokens + unique `suffix_len` tokens."""

    kind: Literal["shared_prefix"]
    prefix_len: int = Field(ge=1)
    suffix_len: int = Field(ge=1)
    output_len: int = Field(ge=1)
    n_prefixes: int = Field(1, ge=1)
    seed: int | None = None

    def tag(self) -> str:
        seed = f"-s{self.seed}" if self.seed is not None else ""
        return f"sp-{self.prefix_len}-{self.suffix_len}-{self.output_len}-n{self.n_prefixes}{seed}"


Workload = Annotated[
    Annotated[RandomWorkload, Tag("<random>")]
    | Annotated[FileWorkload, Tag("<file>")]
    | Annotated[SharedPrefixWorkload, Tag("<shared_prefix>")],
    _kind_of("random"),
]


class ConcurrencyLoad(_Strict):
    """Closed loop: `concurrency` requests in flight; a list expands to one point each."""

    kind: Literal["concurrency"] = "concurrency"
    concurrency: OneOrMany

    def expand(self) -> list[dict[str, Any]]:
        return [{"kind": "concurrency", "concurrency": c} for c in self.concurrency]


class RateLoad(_Strict):
    """Open loop: requests arrive at `rate_rps` per second (poisson, or gamma with burstiness)."""

    kind: Literal["rate"]
    rate_rps: Annotated[list[float], BeforeValidator(_listify)]
    arrival: Literal["poisson", "gamma"] = "poisson"
    burstiness: float = Field(1.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1)

    def expand(self) -> list[dict[str, Any]]:
        out = []
        for rate in self.rate_rps:
            load = {"kind": "rate", "rate_rps": rate, "arrival": self.arrival, "burstiness": self.burstiness}
            if self.max_concurrency:
                load["max_concurrency"] = self.max_concurrency
            out.append(load)
        return out


class OfflineLoad(_Strict):
    """Offline batch (vllm-offline / hf engines): `batch` prompts submitted at once."""

    kind: Literal["offline"]
    batch: OneOrMany

    def expand(self) -> list[dict[str, Any]]:
        return [{"kind": "offline", "batch": b} for b in self.batch]


Load = Annotated[
    Annotated[ConcurrencyLoad, Tag("<concurrency>")]
    | Annotated[RateLoad, Tag("<rate>")]
    | Annotated[OfflineLoad, Tag("<offline>")],
    _kind_of("concurrency"),
]


class EngineArgs(_Strict):
    """Engine arguments; each list is crossed (one engine config per value)."""

    tensor_parallel_size: OneOrMany = [1]
    max_num_seqs: Annotated[list[int | None], BeforeValidator(_listify)] = [None]
    max_model_len: Annotated[list[int | None], BeforeValidator(_listify)] = [None]
    extra: Annotated[list[dict[str, Any]], BeforeValidator(_listify)] = [{}]


class ModelEntry(_Strict):
    """A model with its own axes, replacing the sweep-level ones for this model only."""

    key: str
    weights: Annotated[list[str], BeforeValidator(_listify)] | None = None
    precisions: Annotated[list[str], BeforeValidator(_listify)] | None = None
    engine_args: EngineArgs | None = None


_ModelItem = Annotated[
    Annotated[str, Tag("<str>")] | Annotated[ModelEntry, Tag("<entry>")],
    Discriminator(lambda v: "<str>" if isinstance(v, str) else "<entry>"),
]


class SLO(_Strict):
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)


class PreflightSettings(_Strict):
    memory_fraction: float = Field(0.9, gt=0, le=1)  # vLLM gpu_memory_utilization
    kv_overflow: Literal["skip", "allow"] = "skip"  # batch KV larger than free memory


class SweepSpec(_Strict):
    """A sweep file, validated. See docs/sweeps.md for every key."""

    name: str = ""
    description: str = ""
    models: Annotated[list[_ModelItem], BeforeValidator(_listify), Field(min_length=1)]
    weights: Annotated[list[str], BeforeValidator(_listify)] = ["dummy"]
    precisions: Annotated[list[str], BeforeValidator(_listify)] = ["auto"]
    engine: Literal["vllm", "vllm-offline", "hf", "endpoint"] = "vllm"
    endpoint_url: str | None = None
    engine_args: EngineArgs = Field(default_factory=EngineArgs)
    workloads: Annotated[list[Workload], Field(min_length=1)]
    loads: Annotated[list[Load], Field(min_length=1)]
    repeats: int = Field(1, ge=1)
    n_warmup: int | None = Field(None, ge=0)  # default: the load level (one per slot)
    n_requests: int | None = Field(None, ge=1)  # fixed per point; default: the rule below
    requests_per_concurrency: int = Field(4, ge=1)  # n = max(min_requests, this x level)
    min_requests: int = Field(16, ge=1)
    seed: int = 0
    endpoint: Literal["completions", "chat"] = "completions"
    slo: SLO | Literal["catalog"] | None = None
    telemetry: str = "auto"
    hardware: str | None = None  # plan for this catalog hardware id instead of the detected one
    devices: int | None = Field(None, ge=1)  # device count instead of the detected one
    out: str | None = None
    preflight: PreflightSettings = Field(default_factory=PreflightSettings)

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> SweepSpec:
        if self.engine == "endpoint" and not self.endpoint_url:
            raise ValueError("engine 'endpoint' needs endpoint_url")
        return self


_PRECISION_PARTS: dict[str, dict[str, str]] = {
    "auto": {"dtype": "auto"},
    "bf16": {"dtype": "bfloat16"},
    "bfloat16": {"dtype": "bfloat16"},
    "fp16": {"dtype": "float16"},
    "float16": {"dtype": "float16"},
    "fp32": {"dtype": "float32"},
    "float32": {"dtype": "float32"},
    "fp8": {"quantization": "fp8"},
    "fp8-kv": {"kv_cache_dtype": "fp8"},
}


def precision_fields(name: str) -> dict[str, str]:
    """EngineConfig fields of a precision name: "bf16", "fp8", "fp8-kv", or parts joined
    by "+" such as "bf16+fp8-kv" (bf16 weights and activations, fp8 KV cache)."""
    fields: dict[str, str] = {}
    for part in name.lower().split("+"):
        if part not in _PRECISION_PARTS:
            raise ConfigError(f"unknown precision '{name}' (known parts: {', '.join(_PRECISION_PARTS)})")
        for key, value in _PRECISION_PARTS[part].items():
            if key in fields and fields[key] != value:
                raise ConfigError(f"precision '{name}' sets {key} twice")
            fields[key] = value
    return fields


# Override shorthands (the names single-run CLI options use) -> the sweep key they set.
_SHORTHANDS = {
    "model": "models",
    "precision": "precisions",
    "requests": "n_requests",
    "hardware_id": "hardware",
    "out_dir": "out",
    "tensor_parallel_size": "engine_args.tensor_parallel_size",
    "max_num_seqs": "engine_args.max_num_seqs",
    "max_model_len": "engine_args.max_model_len",
    "extra_args": "engine_args.extra",
}
_PRECISION_OPTIONS = ("dtype", "quantization", "kv_cache_dtype")


def overrides_from_options(options: dict[str, Any]) -> dict[str, Any]:
    """CLI option values (as `bench run`/`bench sweep` name them) -> an override dict.

    None values are dropped. `engine_args` here is the dict of pass-through engine
    arguments (`--engine-arg K=V`), not the sweep section; `dtype`, `quantization` and
    `kv_cache_dtype` together replace `precisions` by the one precision they describe."""
    out = {k: v for k, v in options.items() if v is not None and k not in _PRECISION_OPTIONS}
    if "engine_args" in out:
        out["extra_args"] = out.pop("engine_args") or None
    given = {k: options.get(k) for k in _PRECISION_OPTIONS if options.get(k) is not None}
    if given:
        parts = [given.get("dtype", "auto")]
        parts += ["fp8"] if given.get("quantization") else []
        parts += ["fp8-kv"] if given.get("kv_cache_dtype") == "fp8" else []
        out["precisions"] = ["+".join(parts)]
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the raw sweep dict with `overrides` applied; see docs/sweeps.md.

    Keys are sweep keys (replacing the file's value wholesale), dotted paths into sections
    ("engine_args.max_num_seqs", "preflight.memory_fraction"), the shorthands in
    `_SHORTHANDS`, `concurrency` (replaces `loads` by one concurrency load) and
    `input_len`/`output_len` (replace `workloads` by one random workload; a length not
    given comes from the file's first random workload). None values are ignored."""
    out = json.loads(json.dumps(raw))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "input_len" in given or "output_len" in given:
        base = next((w for w in out.get("workloads") or [] if w.get("kind", "random") == "random"), {})
        isl, osl = given.pop("input_len", base.get("input_len")), given.pop("output_len", base.get("output_len"))
        if isl is None or osl is None:
            raise ConfigError("input_len and output_len overrides need each other (no random workload to complete them)")
        out["workloads"] = [{"kind": "random", "input_len": isl, "output_len": osl}]
    if "concurrency" in given:
        out["loads"] = [{"kind": "concurrency", "concurrency": given.pop("concurrency")}]
    for key, value in given.items():
        path = _SHORTHANDS.get(key, key).split(".")
        if path[0] not in SweepSpec.model_fields:
            raise ConfigError(f"unknown override '{key}' (known: {', '.join(SweepSpec.model_fields)})")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{part}' is not a section")
        node[path[-1]] = value
    return out


def sweep_from_dict(raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "options") -> SweepSpec:
    """Validate a raw sweep dict (+ overrides); errors name `source` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sweep keys, got {type(raw).__name__}")
    merged = apply_overrides(raw, overrides)
    try:
        sweep = SweepSpec.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_describe(source, e)) from None
    if not sweep.name:
        sweep.name = safe_id(source.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    return sweep


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep YAML file, then apply `overrides` (see `apply_overrides`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read sweep file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
    return sweep_from_dict(raw if raw is not None else {}, overrides, source=str(path))


def _describe(source: str, error: ValidationError) -> str:
    """The first validation error as one line naming the file and the key."""
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")  # typos first
    first = errors[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("<"))]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc[-1]}' {_where(loc[:-1])}{more}"
    if first["type"] == "union_tag_invalid":
        tag = first["ctx"]["tag"].strip("<>")
        expected = first["ctx"]["expected_tags"].replace("<", "").replace(">", "").replace("'", "")
        return f"{source}: unknown kind '{tag}' in {_path(loc)} (expected: {expected}){more}"
    if first["type"] == "missing":
        return f"{source}: missing key '{loc[-1]}' {_where(loc[:-1])}{more}"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{source}: {_path(loc) or 'sweep'}: {msg}{more}"


def _where(loc: list[Any]) -> str:
    return f"in {_path(loc)}" if loc else "at the top level"


def _path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
