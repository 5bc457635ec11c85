"""The options `bench run`, `bench sweep`, `bench plan` and `bench capacity` share, and how
their text becomes values (`--engine-arg K=V`, `--concurrency 1,4,16`, `--set KEY=VALUE`).
Parsing only: what the values mean is the request's (bench.plan.request)."""

from __future__ import annotations

import click

from bench.catalog.dtypes import DTYPES, KV_CACHE_DTYPES, QUANTIZATIONS
from bench.catalog.engines import ENGINES, engine_names
from bench.errors import ConfigError
from bench.telemetry import meter_choices


def parse_engine_args(pairs: tuple[str, ...]) -> dict:
    """("max_num_batched_tokens=8192", "enforce_eager") -> {"max_num_batched_tokens": 8192, "enforce_eager": True}."""
    import yaml

    from bench.redact import is_secret_name

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            raise ConfigError(f"bad --engine-arg '{pair}' (expected KEY=VALUE)")
        out[key] = yaml.safe_load(value) if sep else True
        if isinstance(out[key], str) and is_secret_name(key):  # never echoed: the value is the secret
            from bench.engines.endpoint import secret_arg_refusal

            raise ConfigError(secret_arg_refusal(key, "--engine-arg"))
    return out


def int_list(text: str) -> list[int]:
    """"1,4,16" -> [1, 4, 16]; an empty level ("1,,4", "1,4,") is refused, not skipped."""
    parts = str(text).replace(" ", "").split(",")
    if "" in parts:
        raise ConfigError(f"bad --concurrency '{text}' (an empty level; expected integers like 1,4,16)")
    try:
        values = [int(x) for x in parts]
    except ValueError:
        raise ConfigError(f"bad --concurrency '{text}' (expected integers like 1,4,16)") from None
    if min(values) < 1:
        raise ConfigError(f"bad --concurrency '{text}' (each level must be >= 1)")
    return values


def _gpu_list(ctx, param, text: str | None) -> list[int] | None:
    """"0,1" -> [0, 1] (click callback of --gpus); range and count are checked by the plan."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",")]  # "0,,1": an empty index is refused
    except ValueError:
        raise click.BadParameter(f"'{text}' (expected device indices like 0,1)") from None


def _apply(f, opts):
    for opt in reversed(opts):
        f = opt(f)
    return f


def engine_options(f):
    """Options of the engine configuration and the machine, shared by every command that plans."""
    return _apply(f, [
        click.option("--weights", help="'dummy' (random weights, no download), a HF repo id, or a local path."),
        click.option("--engine", type=click.Choice(engine_names()),
                     help="What serves the model: " + "; ".join(f"{e.name}: {e.description}" for e in ENGINES.values())
                          + "."),
        click.option("--url", "endpoint_url", help="Base URL of an existing OpenAI-compatible server (--engine endpoint)."),
        click.option("--dtype", type=click.Choice(DTYPES)),
        click.option("--quantization", type=click.Choice(QUANTIZATIONS), help="Weight quantization."),
        click.option("--kv-cache-dtype", type=click.Choice(KV_CACHE_DTYPES)),
        click.option("--tp", "tensor_parallel_size", type=int, help="Tensor-parallel size."),
        click.option("--pp", "pipeline_parallel_size", type=int, help="Pipeline-parallel size."),
        click.option("--dp", "data_parallel_size", type=int, help="Data-parallel size (engine replicas)."),
        click.option("--ep/--no-ep", "enable_expert_parallel", default=None,
                     help="Expert parallelism: MoE experts split over TP x DP ranks."),
        click.option("--gpus", callback=_gpu_list, metavar="0,1,...",
                     help="Device indices to run on; exactly TP x PP x DP of them [assigned by the runner]."),
        click.option("--max-num-seqs", type=int),
        click.option("--max-model-len", type=int),
        click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
                     help="Any other engine argument, passed through (repeatable)."),
        click.option("--telemetry", type=click.Choice(meter_choices()),
                     help="Energy meter; one named explicitly must be available."),
        click.option("--hardware", "hardware_id", help="Catalog id of the device (default: detected)."),
        click.option("--probe", "probe_file", type=click.Path(dir_okay=False, exists=True),
                     help="Probe file from `bench probe`: measured bandwidth/FLOPS for the roofline."),
        click.option("--endpoint", type=click.Choice(["completions", "chat"]), help="OpenAI API endpoint to drive."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for run folders [./runs]."),
        # accuracy gate (docs/accuracy.md)
        click.option("--accuracy", metavar="gsm8k|agreement|off|TASK",
                     help="Accuracy beside the points: agreement with the model's bf16 configuration [default], "
                          "an lm-eval task (gsm8k: 1,319 questions, minutes on a GPU), or off. "
                          "Integrity checks run on every point regardless."),
    ])


def sweep_overrides(f):
    """Options that override a sweep file (shared by `bench plan` and `bench sweep`)."""
    return engine_options(_apply(f, [
        click.option("--model", "models", multiple=True, help="Catalog key; replaces `models` (repeatable)."),
        click.option("--precision", "precisions", multiple=True,
                     help="bf16, fp16, fp8, fp8-kv or parts joined by '+'; replaces `precisions` (repeatable)."),
        click.option("--concurrency", help="Comma-separated levels; replaces `loads`."),
        click.option("--input-len", type=int, help="Prompt tokens; replaces `workloads` by one random workload."),
        click.option("--output-len", type=int, help="Output tokens; replaces `workloads` by one random workload."),
        click.option("--requests", "n_requests", type=int, help="Measured requests per point."),
        click.option("--warmup", "n_warmup", type=int, help="Warm-up requests per point."),
        click.option("--repeats", type=int, help="Repeats of every point."),
        click.option("--seed", type=int),
        click.option("--devices", type=int, help="Device count to plan for (default: detected)."),
        click.option("--max-replay-s", "max_replay_s", type=click.FloatRange(min=0, min_open=True),
                     help="Longest replay of one trace point, s after speedup; longer is refused when the plan "
                          "is built [the file's max_replay_s, else 86400: 24 h]."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Any sweep key, dotted into sections, YAML value (repeatable): "
                          "--set preflight.kv_overflow=allow --set 'workloads=[{input_len: 512, output_len: 64}]'."),
    ]))


def config_option(f):
    """`--config ID`: one engine configuration of the plan (shared by `bench plan` and `bench sweep`)."""
    return click.option("--config", "config_id", metavar="ID",
                        help="Only this engine configuration of the plan (its id as `bench plan` shows it); "
                             "a fleet shard runs one.")(f)


def collect_overrides(opts: dict) -> dict:
    """The override dict (bench.plan.apply_overrides) from the options of `sweep_overrides`
    (`--probe` is the run's, not the sweep's: leave it out)."""
    from bench.plan import overrides_from_options

    opts = dict(opts)
    sets = opts.pop("sets", ()) or ()
    opts["engine_args"] = parse_engine_args(opts.get("engine_args") or ()) or None
    opts["models"] = list(opts.get("models") or ()) or None
    opts["precisions"] = list(opts.get("precisions") or ()) or None
    if opts.get("concurrency"):
        opts["concurrency"] = int_list(opts["concurrency"])
    out = overrides_from_options(opts)
    for pair in sets:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set '{pair}' (expected KEY=VALUE)")
        import yaml

        out[key.strip()] = yaml.safe_load(value)
    return out


def budget_options(f):
    """Plan pricing (issue 22, docs/timing.md): the rental price and a budget the plan is trimmed
    to (shared by `bench plan` and `bench sweep`)."""
    return _apply(f, [
        click.option("--price-usd-h", "price_usd_h", type=click.FloatRange(min=0, min_open=True),
                     help="Rental price per device-hour the plan is priced at [the hardware's catalog on-demand price]."),
        click.option("--budget-usd", "budget_usd", type=click.FloatRange(min=0, min_open=True),
                     help="Trim the plan to this many dollars: points dropped from its end; refused if none fits."),
        click.option("--budget-h", "budget_h", type=click.FloatRange(min=0, min_open=True),
                     help="Trim the plan to this many device-hours (same order)."),
    ])
