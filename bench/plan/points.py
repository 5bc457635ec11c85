"""The typed load and workload of one load point: the single definition the plan, the load
driver and the workload generators share.

A point's `load` is a discriminated union on `kind` (concurrency | rate | trace | offline), its
`workload` likewise (random | shared_prefix | file | trace | sessions). Integers are strict (a YAML `true`
is not 1), every size is >= 1 and every rate > 0, so a bad value fails when the plan is
built, not after a run folder exists.

`model_dump(mode="json")` gives the dicts results and point ids were built from before
these types existed: a load drops unset (None) fields, a workload drops fields left at
their default (its `kind` always kept) and never carries `max_input_len`, which only
informs preflight.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)

from bench.errors import ConfigError

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Seed = Annotated[int, Field(strict=True)]
Span = tuple[PositiveInt, PositiveInt]
Rate = Annotated[float, Field(strict=True, gt=0)]  # strict float: ints pass, bools do not
StrictBool = Annotated[bool, Field(strict=True)]  # true/false only, not 1 or "yes"
# A trace's speedup: 1000x slower at most (a replay's length is bounded by max_replay_s too),
# a million times faster at most (beyond that every send time rounds to the same instant).
MIN_SPEEDUP, MAX_SPEEDUP = 1e-3, 1e6


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


def kind_of(default: str) -> Discriminator:
    """A union discriminator on `kind`, `default` when the key is absent."""

    def pick(value: Any) -> str | None:
        kind = value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", None)
        return f"<{kind}>"

    return Discriminator(pick)


# ---------------------------------------------------------------- loads


Arrival = Literal["poisson", "gamma"]  # an open loop's arrival process: the one list of names
ARRIVALS: tuple[str, ...] = get_args(Arrival)


class _LoadSpec(_Spec):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # rate_rps inf stays inf

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ConcurrencyLoad(_LoadSpec):
    """Closed loop: `concurrency` requests in flight; a new one is sent as soon as one ends."""

    kind: Literal["concurrency"] = "concurrency"
    concurrency: PositiveInt = Field(description="Requests in flight (requests).")


class RateLoad(_LoadSpec):
    """Open loop: requests sent at `rate_rps` (inf: all at once), optionally capped in flight.

    Gaps ~ Gamma(shape=burstiness, scale=1/(rate x burstiness)), vLLM's `--burstiness`:
    poisson is burstiness 1."""

    kind: Literal["rate"] = "rate"
    rate_rps: Rate = Field(description="Mean request arrivals per second (requests/s); inf sends all at once.")
    arrival: Arrival = Field(default="poisson", description="Arrival process of the request sends.")
    burstiness: Rate = Field(default=1.0, description="Gamma shape (dimensionless): < 1 burstier, > 1 more regular.")
    max_concurrency: PositiveInt | None = Field(default=None, description="Cap on requests in flight (requests); None: no cap.")

    @model_validator(mode="after")
    def _poisson_is_burstiness_one(self) -> RateLoad:
        if self.arrival == "poisson" and self.burstiness != 1.0:
            raise ValueError("poisson arrivals have burstiness 1; use arrival: gamma for another burstiness")
        return self


class TraceLoad(_LoadSpec):
    """Open loop on the workload's own schedule: each request is sent at its (scaled) trace
    timestamp (a `trace` workload), optionally capped in flight."""

    kind: Literal["trace"] = "trace"
    max_concurrency: PositiveInt | None = Field(None, description="Cap on requests in flight (requests); None: no cap.")


class OfflineLoad(_LoadSpec):
    """Offline batch (vllm-offline / hf engines): `batch` prompts submitted at once."""

    kind: Literal["offline"] = "offline"
    batch: PositiveInt = Field(description="Prompts submitted together (requests).")


LoadSpec = Annotated[
    Annotated[ConcurrencyLoad, Tag("<concurrency>")]
    | Annotated[RateLoad, Tag("<rate>")]
    | Annotated[TraceLoad, Tag("<trace>")]
    | Annotated[OfflineLoad, Tag("<offline>")],
    kind_of("concurrency"),
]


def load_level(load: LoadSpec) -> float:
    """The load's size: concurrency (requests), rate (requests/s) or batch (requests)."""
    if isinstance(load, ConcurrencyLoad):
        return float(load.concurrency)
    if isinstance(load, RateLoad):
        return load.rate_rps
    if isinstance(load, TraceLoad):
        return float(load.max_concurrency or 0)
    return float(load.batch)


def engine_batch(load: LoadSpec) -> int | None:
    """Sequences this load keeps in the engine at most (requests); None: unbounded (a rate
    load without max_concurrency)."""
    if isinstance(load, ConcurrencyLoad):
        return load.concurrency
    if isinstance(load, OfflineLoad):
        return load.batch
    return load.max_concurrency


# ---------------------------------------------------------------- workloads


class _WorkloadSpec(_Spec):
    @model_serializer(mode="wrap")
    def _drop_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        fields = type(self).model_fields
        out = {"kind": data.pop("kind")}
        out.update({k: v for k, v in data.items() if k not in fields or v != fields[k].default})
        return out


class RandomWorkload(_WorkloadSpec):
    """Token-exact random prompts; ranges (low, high) inclusive, drawn uniformly."""

    kind: Literal["random"] = "random"
    input_len: PositiveInt = Field(description="Prompt length (tokens).")
    output_len: PositiveInt = Field(description="Output length, generated with ignore_eos (tokens).")
    input_len_range: Span | None = Field(None, description="(low, high) prompt tokens; None: input_len.")
    output_len_range: Span | None = Field(None, description="(low, high) output tokens; None: output_len.")
    as_text: StrictBool = Field(False, description="Word prompts (about a token a word), for the chat endpoint.")
    seed: Seed | None = Field(None, description="Prompt RNG seed; None: derived from the sweep seed and the point id (disjoint prompts per point).")

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

    def lengths(self) -> tuple[int, int]:
        """(largest input, largest output) tokens of one request."""
        isl = self.input_len_range[1] if self.input_len_range else self.input_len
        osl = self.output_len_range[1] if self.output_len_range else self.output_len
        return isl, osl


class FileWorkload(_WorkloadSpec):
    """Prompts from a JSONL file (ShareGPT conversations or {"prompt", "output_len"} lines)."""

    kind: Literal["file"]
    path: str = Field(description="JSONL prompt file.")
    output_len: PositiveInt | None = Field(None, description="Output tokens when a line gives none.")
    max_input_len: PositiveInt | None = Field(
        None, exclude=True, description="Longest prompt (tokens); informs preflight only, not the workload."
    )
    seed: Seed | None = Field(None, description="Shuffle seed; None: derived from the sweep seed and the point id (disjoint prompts per point).")

    def tag(self) -> str:
        stem = self.path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
        return f"file-{stem}" + (f"-{self.output_len}" if self.output_len else "")

    def lengths(self) -> tuple[int, int] | None:
        if self.max_input_len and self.output_len:
            return self.max_input_len, self.output_len
        return None


class SharedPrefixWorkload(_WorkloadSpec):
    """`n_prefixes` shared system prompts of `prefix_len` tokens + unique `suffix_len` tokens."""

    kind: Literal["shared_prefix"]
    prefix_len: PositiveInt = Field(description="Shared prefix length (tokens).")
    suffix_len: PositiveInt = Field(description="Unique suffix length per request (tokens).")
    output_len: PositiveInt = Field(description="Output length (tokens).")
    n_prefixes: PositiveInt = Field(1, description="Distinct prefixes, drawn uniformly per request.")
    seed: Seed | None = Field(None, description="Prompt RNG seed; None: derived from the sweep seed and the point id (disjoint prompts per point).")

    def tag(self) -> str:
        seed = f"-s{self.seed}" if self.seed is not None else ""
        return f"sp-{self.prefix_len}-{self.suffix_len}-{self.output_len}-n{self.n_prefixes}{seed}"

    def lengths(self) -> tuple[int, int]:
        return self.prefix_len + self.suffix_len, self.output_len


class TraceWorkload(_WorkloadSpec):
    """Requests replayed from a trace file: their lengths, their send times (scaled by
    `speedup`) and, for Mooncake, their shared prefix blocks (bench.load.traces)."""

    kind: Literal["trace"]
    format: Literal["mooncake", "azure", "burstgpt", "jsonl"] = Field(description="Trace file format.")
    path: str = Field(description="Trace file (a user file; never downloaded).")
    speedup: Annotated[float, Field(strict=True, ge=MIN_SPEEDUP, le=MAX_SPEEDUP)] = Field(
        1.0, description="Timestamps are divided by this (dimensionless): 2 replays twice as fast.")
    limit: PositiveInt | None = Field(None, description="Replay the first N requests only; None: the whole trace.")
    block_size: PositiveInt = Field(512, description="Tokens per Mooncake hash block (tokens).")
    seed: Seed | None = Field(None, description="Token RNG seed; None: derived from the sweep seed and the point id (disjoint prompts per point).")

    def tag(self) -> str:
        stem = self.path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
        speed = f"-x{self.speedup:g}" if self.speedup != 1.0 else ""
        return f"trace-{self.format}-{stem}{speed}" + (f"-n{self.limit}" if self.limit else "")

    def lengths(self) -> tuple[int, int] | None:
        return None  # known once the file is read (bench.load.traces)


class SessionsWorkload(_WorkloadSpec):
    """Multi-turn chat sessions: each turn sends the conversation so far (bench.load.sessions);
    from a ShareGPT-style multi-turn file, or synthetic."""

    kind: Literal["sessions"]
    path: str | None = Field(None, description="ShareGPT-style multi-turn JSONL; None: synthetic sessions.")
    turns: PositiveInt = Field(4, description="Turns per synthetic session (turns).")
    prompt_len: PositiveInt = Field(64, description="User message per synthetic turn (about tokens: words).")
    answer_len: PositiveInt = Field(64, description="Answer per turn, generated with ignore_eos (tokens).")
    think_time_s: Annotated[float, Field(strict=True, ge=0)] = Field(
        0.0, description="Pause between an answer and the next turn of the same session (s).")
    seed: Seed | None = Field(None, description="Prompt RNG seed; None: derived from the sweep seed and the point id (disjoint prompts per point).")

    def tag(self) -> str:
        src = self.path.rstrip("/").rsplit("/", 1)[-1].split(".")[0] if self.path else "synthetic"
        return f"sessions-{src}-t{self.turns}-{self.prompt_len}-{self.answer_len}"

    def lengths(self) -> tuple[int, int]:
        return self.turns * (self.prompt_len + self.answer_len), self.answer_len


# ---------------------------------------------------------------- LoRA mix and structured output (issue 21, lora)

StructuredMode = Literal["json_schema", "tool_call"]
# A schema whose every value is bounded (enums, a boolean), so a constrained answer ends within a
# few tokens even from random weights; a schema with free strings or numbers may run to max_tokens.
DEFAULT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["paris", "rome", "oslo", "lima"]},
                   "open": {"type": "boolean"},
                   "stars": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["city", "open", "stars"],
    "additionalProperties": False,
}


class StructuredWorkload(_WorkloadSpec):
    """Chat requests whose answer is constrained to a JSON schema: `response_format: json_schema`,
    or a tool call (`tools` with that schema as the parameters, `tool_choice` naming the tool),
    through the chat endpoint (bench.load.structured). Each answer is checked against the schema."""

    kind: Literal["structured"]
    mode: StructuredMode = Field("json_schema", description="json_schema: response_format; tool_call: a named tool call.")
    json_schema: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_JSON_SCHEMA),
                                        description="The JSON Schema an answer must follow (a tool's parameters).")
    tool_name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")] = Field(
        "record", description="The tool's name (tool_call mode).")
    prompt_len: PositiveInt = Field(32, description="User message (about tokens: words).")
    output_len: PositiveInt = Field(128, description="max_tokens; the answer ends when its JSON does (tokens).")
    seed: Seed | None = Field(None, description="Prompt RNG seed; None: derived from the sweep seed and the point id (disjoint prompts per point).")

    @model_validator(mode="after")
    def _schema_is_a_schema(self) -> StructuredWorkload:
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(self.json_schema).check_schema(self.json_schema)
        except SchemaError as e:
            raise ValueError(f"json_schema is not a JSON Schema: {e.message}") from None
        return self

    def tag(self) -> str:
        import hashlib
        import json

        digest = hashlib.sha1(json.dumps(self.json_schema, sort_keys=True).encode()).hexdigest()[:6]
        mode = "json" if self.mode == "json_schema" else "tool"
        return f"so-{mode}-{digest}-{self.prompt_len}-{self.output_len}" + (f"-s{self.seed}" if self.seed is not None else "")

    def lengths(self) -> tuple[int, int]:
        return self.prompt_len, self.output_len


MixWeight = Annotated[float, Field(strict=False, gt=0, allow_inf_nan=False)]


class LoraWorkload(_WorkloadSpec):
    """A weighted mix of LoRA adapters (and `base`, the base model) over the requests of another
    workload: each request's `model` is drawn from `mix` (weights relative), seeded. The engine
    configuration serves the adapters (the sweep's `lora` block, bench.plan.lora)."""

    kind: Literal["lora"]
    mix: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")], MixWeight] = Field(
        min_length=1, description="Adapter name (or base) -> relative share of the requests.")
    requests: Annotated[
        Annotated[RandomWorkload, Tag("<random>")]
        | Annotated[FileWorkload, Tag("<file>")]
        | Annotated[SharedPrefixWorkload, Tag("<shared_prefix>")]
        | Annotated[StructuredWorkload, Tag("<structured>")],
        kind_of("random"),
    ] = Field(description="The workload whose requests are spread over the mix.")
    seed: Seed | None = Field(None, description="Mix RNG seed; None: derived from the sweep seed and the point id.")

    def shares(self) -> dict[str, float]:
        """Each name's share of the requests (sums to 1), in the mix's order."""
        total = sum(self.mix.values())
        return {name: w / total for name, w in self.mix.items()}

    def mix_label(self) -> str:
        """e.g. "base:0.5,sql:0.25,chat:0.25": the store's lora_mix column."""
        return ",".join(f"{name}:{share:.3g}" for name, share in self.shares().items())

    def tag(self) -> str:
        mix = "-".join(f"{name}x{w:g}" for name, w in self.mix.items())
        return f"lora-{mix}-{self.requests.tag()}" + (f"-s{self.seed}" if self.seed is not None else "")

    def lengths(self) -> tuple[int, int] | None:
        return self.requests.lengths()


WorkloadSpec = Annotated[
    Annotated[RandomWorkload, Tag("<random>")]
    | Annotated[FileWorkload, Tag("<file>")]
    | Annotated[SharedPrefixWorkload, Tag("<shared_prefix>")]
    | Annotated[TraceWorkload, Tag("<trace>")]
    | Annotated[SessionsWorkload, Tag("<sessions>")]
    | Annotated[StructuredWorkload, Tag("<structured>")]  # issue 21, lora
    | Annotated[LoraWorkload, Tag("<lora>")],  # issue 21, lora
    kind_of("random"),
]

_LOADS: TypeAdapter = TypeAdapter(LoadSpec)
_WORKLOADS: TypeAdapter = TypeAdapter(WorkloadSpec)


def parse_load(load: Any) -> ConcurrencyLoad | RateLoad | TraceLoad | OfflineLoad:
    """A typed load from a dict (or a typed load, returned as is); ConfigError, one line."""
    return load if isinstance(load, (ConcurrencyLoad, RateLoad, TraceLoad, OfflineLoad)) else _parse(_LOADS, load, "load")


def parse_workload(workload: Any) -> (RandomWorkload | FileWorkload | SharedPrefixWorkload | TraceWorkload
                                      | SessionsWorkload | StructuredWorkload | LoraWorkload):
    """A typed workload from a dict (or a typed workload, returned as is); ConfigError, one line."""
    if isinstance(workload, (RandomWorkload, FileWorkload, SharedPrefixWorkload, TraceWorkload, SessionsWorkload,
                             StructuredWorkload, LoraWorkload)):
        return workload
    return _parse(_WORKLOADS, workload, "workload")


def _parse(adapter: TypeAdapter, value: Any, what: str) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("<"))
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"bad {what}{f' {loc}' if loc else ''}: {msg}") from None
