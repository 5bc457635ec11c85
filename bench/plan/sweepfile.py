"""The sweep file: its schema (pydantic, strict) and loading it with CLI overrides applied.

`load_sweep(path, overrides)` / `sweep_from_dict(raw, overrides)` -> a validated
`SweepSpec`; errors are one line naming the file and the key. Turning a sweep into
ordered load points is `bench.plan.build_plan`. See docs/sweeps.md for every key.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
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
from bench.catalog.dtypes import precision_name
from bench.catalog.engines import get_engine
from bench.errors import ConfigError, one_line
from bench.plan.accuracy import AccuracySettings
from bench.plan.adaptive import AdaptiveStop
from bench.plan.capacity import CapacitySettings
from bench.plan.inputs import MAX_REPLAY_S
from bench.plan.lora import LoraConfig, workload_problem
from bench.plan.points import (
    Arrival,
    ConcurrencyLoad,
    OfflineLoad,
    PositiveInt,
    Rate,
    RateLoad,
    StrictBool,
    TraceLoad,
    WorkloadSpec,
    kind_of,
)
from bench.plan.speculative import SpeculativeSpec


class _Strict(BaseModel):  # not configbase.Strict: ruff (RUF012) must see list defaults on a BaseModel
    model_config = ConfigDict(extra="forbid")


def _listify(value: Any) -> Any:
    """A scalar where a list is expected becomes a one-element list."""
    return value if isinstance(value, list) or value is None else [value]


_Item = TypeVar("_Item")
# A non-empty list of levels; a scalar becomes a one-element list. `_levels[X]` is the field type.
_levels = Annotated[list[_Item], BeforeValidator(_listify), Field(min_length=1)]


class ConcurrencyLevels(_Strict):
    """Closed loop at each `concurrency` level: one `ConcurrencyLoad` point each."""

    kind: Literal["concurrency"] = "concurrency"
    concurrency: _levels[PositiveInt]

    def expand(self) -> list[ConcurrencyLoad]:
        return [ConcurrencyLoad(concurrency=c) for c in self.concurrency]


class RateLevels(_Strict):
    """Open loop at each `rate_rps` level (poisson, or gamma with burstiness): one `RateLoad` each."""

    kind: Literal["rate"]
    rate_rps: _levels[Rate]
    arrival: Arrival = "poisson"
    burstiness: Rate = 1.0
    max_concurrency: PositiveInt | None = None

    @model_validator(mode="after")
    def _valid_points(self) -> RateLevels:
        self.expand()  # the point-level rules (poisson has burstiness 1), checked once per file
        return self

    def expand(self) -> list[RateLoad]:
        return [RateLoad(rate_rps=rate, arrival=self.arrival, burstiness=self.burstiness,
                         max_concurrency=self.max_concurrency) for rate in self.rate_rps]


class TraceLevels(_Strict):
    """Replay a trace workload on its own schedule: one `TraceLoad` point per in-flight cap."""

    kind: Literal["trace"]
    max_concurrency: _levels[PositiveInt | None] = [None]

    def expand(self) -> list[TraceLoad]:
        return [TraceLoad(max_concurrency=c) for c in self.max_concurrency]


class OfflineLevels(_Strict):
    """Offline batches (vllm-offline / hf engines): one `OfflineLoad` point per `batch` size."""

    kind: Literal["offline"]
    batch: _levels[PositiveInt]

    def expand(self) -> list[OfflineLoad]:
        return [OfflineLoad(batch=b) for b in self.batch]


Levels = Annotated[
    Annotated[ConcurrencyLevels, Tag("<concurrency>")]
    | Annotated[RateLevels, Tag("<rate>")]
    | Annotated[TraceLevels, Tag("<trace>")]
    | Annotated[OfflineLevels, Tag("<offline>")],
    kind_of("concurrency"),
]


GpuIndex = Annotated[int, Field(strict=True, ge=0)]
_Gpus = Annotated[list[GpuIndex], BeforeValidator(_listify), Field(min_length=1)]


class EngineArgs(_Strict):
    """Engine arguments; each list is crossed (one engine config per combination)."""

    tensor_parallel_size: _levels[PositiveInt] = [1]
    pipeline_parallel_size: _levels[PositiveInt] = [1]
    data_parallel_size: _levels[PositiveInt] = [1]
    enable_expert_parallel: _levels[StrictBool] = [False]
    nnodes: _levels[PositiveInt] = [1]  # machines one configuration spans (vLLM multi-node)
    max_num_seqs: _levels[PositiveInt | None] = [None]
    max_model_len: _levels[PositiveInt | None] = [None]
    extra: _levels[dict[str, Any]] = [{}]
    # speculative decoding (issue 21): crossed like the others; null = off (the baseline to compare with)
    speculative: _levels[SpeculativeSpec | None] = [None]


def _registered_engine(name: str) -> str:
    """The engine's registered name; a ValueError (so the message names the file) when unknown."""
    try:
        return get_engine(name).name
    except ConfigError as e:
        raise ValueError(str(e)) from None


class ModelEntry(_Strict):
    """A model with its own axes, replacing the sweep-level ones for this model only."""

    key: str
    weights: _levels[str] | None = None
    precisions: _levels[str] | None = None
    engine_args: EngineArgs | None = None
    gpus: _Gpus | None = None  # device indices for this model's configs (replaces the sweep's)
    # the engine of this entry's configs (replaces the sweep's): one model on two engines is two entries (issue 21)
    engine: Annotated[str, AfterValidator(_registered_engine)] | None = None


_ModelItem = Annotated[
    Annotated[str, Tag("<str>")] | Annotated[ModelEntry, Tag("<entry>")],
    Discriminator(lambda v: "<str>" if isinstance(v, str) else "<entry>"),
]


class SLO(_Strict):
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)


class PreflightSettings(_Strict):
    memory_fraction: float = Field(default=0.9, gt=0, le=1)  # vLLM gpu_memory_utilization; default= by keyword (mypy)
    kv_overflow: Literal["skip", "allow"] = "skip"  # batch KV larger than free memory


REPEAT_METRICS = ("tok_s_per_gpu", "output_tok_s", "j_per_token", "j_per_output_token", "ttft_s_p50", "ttft_s_p99",
                  "tpot_s_p50", "tpot_s_p99", "goodput_output_tok_s")  # figures an adaptive repeat can watch


class RepeatUntil(_Strict):
    """Adaptive repeats (AIPerf's convergence rule): after `min_repeats`, stop repeating a point
    once the Student-t 95% interval of `metric` over its valid repeats is at most `share` x its
    mean on either side; `repeats` stays the most. docs/sweeps.md, "Repeats"."""

    metric: Literal[REPEAT_METRICS] = "tok_s_per_gpu"  # type: ignore[valid-type]
    share: float = Field(default=0.05, gt=0, lt=1)
    min_repeats: Annotated[int, Field(strict=True, ge=2)] = 3


class SweepSpec(_Strict):
    """A sweep file, validated. See docs/sweeps.md for every key."""

    name: str = ""
    description: str = ""
    models: _levels[_ModelItem]
    weights: _levels[str] = ["dummy"]
    precisions: _levels[str] = ["auto"]
    engine: Annotated[str, AfterValidator(_registered_engine)] = "vllm"  # a registered engine
    endpoint_url: str | None = None
    engine_args: EngineArgs = Field(default_factory=EngineArgs)
    gpus: _Gpus | None = None  # device indices (`--gpus 0,1`); None: the runner assigns them
    # Follower agents (`bench node serve`, "host:port") for configurations with nnodes > 1; this machine is the head.
    nodes: Annotated[list[str], BeforeValidator(_listify)] | None = None
    workloads: _levels[WorkloadSpec]
    loads: _levels[Levels]
    repeats: PositiveInt = 1
    n_warmup: Annotated[int, Field(strict=True, ge=0)] | None = None  # default: the load level (one per slot)
    n_requests: PositiveInt | None = None  # fixed per point; default: the rule below
    requests_per_concurrency: PositiveInt = 4  # n = max(min_requests + level, this x level)
    min_requests: PositiveInt = 16
    seed: Annotated[int, Field(strict=True)] = 0
    endpoint: Literal["completions", "chat"] = "completions"
    slo: SLO | Literal["catalog"] | None = None
    telemetry: str = "auto"
    hardware: str | None = None  # plan for this catalog hardware id instead of the detected one
    devices: PositiveInt | None = None  # device count instead of the detected one
    out: str | None = None
    # Client limits (s): a request past either is recorded as failed (docs/reliability.md).
    request_timeout_s: Annotated[float, Field(gt=0)] | None = None  # connect to last byte; None: from lengths
    stall_timeout_s: Annotated[float, Field(gt=0)] | None = 300.0  # no byte from the server; None: off
    # Longest replay of one trace point (s, after speedup); a longer one is refused when the plan is built.
    max_replay_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = MAX_REPLAY_S
    # Client worker processes driving the load (bench.load.workers); None: chosen from the load and the cores.
    client_workers: PositiveInt | None = None
    # `bench capacity SWEEP`: an SLO capacity search instead of the loads (bench.plan.capacity).
    capacity: CapacitySettings | None = None
    preflight: PreflightSettings = Field(default_factory=PreflightSettings)
    # accuracy gate (docs/accuracy.md): gsm8k | agreement | off | an lm-eval task, or a mapping
    accuracy: AccuracySettings = Field(default_factory=AccuracySettings)
    # adaptive point length (issue 22, bench.plan.adaptive): opt-in; n_requests is then the maximum
    adaptive_stop: AdaptiveStop | None = None
    # issue 20 item 2 (adaptive repeats): stop a point's repeats early once its interval is narrow
    repeat_until: RepeatUntil | None = None
    # LoRA adapters every engine configuration serves (issue 21, lora; bench.plan.lora)
    lora: LoraConfig | None = None
    # issue 22 item 2: the next configuration's engine started on spare GPUs while the current one
    # measures (`--prestart`; bench.run.prestart, docs/timing.md); off by default
    prestart: StrictBool = False

    @model_validator(mode="after")
    def _workloads_runnable(self) -> SweepSpec:  # issue 21, lora: LoRA mixes and structured output
        for wl in self.workloads:
            reason = workload_problem(wl, self.lora, self.engine, self.endpoint)
            if reason:
                raise ValueError(reason)
        return self

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> SweepSpec:
        if get_engine(self.engine).needs_url and not self.endpoint_url:
            raise ValueError(f"engine '{self.engine}' needs endpoint_url (--url URL)")
        return self

    @model_validator(mode="after")
    def _gpus_fit(self) -> SweepSpec:
        """Every engine config of a model with `gpus` occupies exactly that many devices."""
        for item in self.models:
            entry = item if isinstance(item, ModelEntry) else ModelEntry(key=item)
            gpus = entry.gpus or self.gpus
            if gpus is None:
                continue
            args = entry.engine_args or self.engine_args
            for tp, pp, dp, nodes, extra in itertools.product(args.tensor_parallel_size, args.pipeline_parallel_size,
                                                              args.data_parallel_size, args.nnodes, args.extra):
                pp, dp = extra.get("pipeline_parallel_size", pp), extra.get("data_parallel_size", dp)
                n = tp * pp * dp // nodes if all(isinstance(x, int) for x in (pp, dp)) else 0  # per machine
                reason = gpus_problem(gpus, n)
                if reason:
                    raise ValueError(f"model '{entry.key}': {reason} (TP {tp} x PP {pp} x DP {dp})")
        return self


def gpus_problem(gpus: list[int], n_gpus: int) -> str | None:
    """Why a device list cannot hold a config of `n_gpus` devices; None when it can."""
    if any(isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in gpus):
        return f"gpus {gpus} must be non-negative device indices"
    if len(set(gpus)) != len(gpus):
        return f"gpus {gpus} lists a device twice"
    if len(gpus) != n_gpus:
        return f"gpus lists {len(gpus)} devices, the configuration needs {n_gpus}"
    return None


# Override shorthands (the names single-run CLI options use) -> the sweep key they set.
_SHORTHANDS = {
    "model": "models",
    "precision": "precisions",
    "requests": "n_requests",
    "hardware_id": "hardware",
    "out_dir": "out",
    "tensor_parallel_size": "engine_args.tensor_parallel_size",
    "pipeline_parallel_size": "engine_args.pipeline_parallel_size",
    "data_parallel_size": "engine_args.data_parallel_size",
    "enable_expert_parallel": "engine_args.enable_expert_parallel",
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
    given = {k: options[k] for k in _PRECISION_OPTIONS if options.get(k) is not None}
    if given:
        out["precisions"] = [precision_name(**given)]
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the raw sweep dict with `overrides` applied; see docs/sweeps.md.

    Keys are sweep keys (replacing the file's value wholesale), dotted paths into sections
    ("engine_args.max_num_seqs", "preflight.memory_fraction"), the shorthands in
    `_SHORTHANDS`, `concurrency` (replaces `loads` by one concurrency load) and
    `input_len`/`output_len` (replace `workloads` by one random workload; a length not
    given comes from the file's first random workload). None values are ignored."""
    out = copy.deepcopy(raw)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "input_len" in given or "output_len" in given:
        base: dict[str, Any] = next((w for w in out.get("workloads") or [] if w.get("kind", "random") == "random"), {})
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
    try:
        merged = apply_overrides(raw, overrides)
    except ConfigError as e:
        raise ConfigError(one_line(f"{source}: {e}")) from None
    try:
        sweep = SweepSpec.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(one_line(_describe(source, e))) from None
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
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]  # a ReaderError has no problem
        raise ConfigError(f"{path}:{where} invalid YAML: {problem}") from None
    return sweep_from_dict(raw if raw is not None else {}, overrides, source=str(path))


def _describe(source: str, error: ValidationError) -> str:
    """The first validation error as one line naming the file and the key."""
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")  # typos first
    first = errors[0]
    raw_loc = first["loc"]
    loc = [p for i, p in enumerate(raw_loc) if not (_is_tag(p) and i < len(raw_loc) - 1)]  # [] : the whole file
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc[-1]}' {_where(loc[:-1])}{more}"
    if first["type"] == "union_tag_invalid":
        tag = first["ctx"]["tag"].strip("<>")
        expected = first["ctx"]["expected_tags"].replace("<", "").replace(">", "").replace("'", "")
        return f"{source}: unknown kind '{tag}' in {_path(loc)} (expected: {expected}){more}"
    if first["type"] == "missing":
        return f"{source}: missing key '{loc[-1]}' {_where(loc[:-1])}{more}"
    if first["type"] == "too_short":
        return f"{source}: {_path(loc) or 'sweep'}: empty list, give at least one value{more}"
    msg = first["msg"].removeprefix("Value error, ")
    return f"{source}: {_path(loc) + ': ' if loc else ''}{msg}{more}"


def _is_tag(part: Any) -> bool:
    """A union tag pydantic puts in an error location ("<random>"), not a key of the file."""
    return isinstance(part, str) and part.startswith("<") and part.endswith(">")


def _where(loc: list[Any]) -> str:
    return f"in {_path(loc)}" if loc else "at the top level"


def _path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
