"""`bench run`: one engine configuration under a few loads; the embedded default needs no
arguments (the tiny Llama, dummy weights, the local device)."""

from __future__ import annotations

from pathlib import Path

import click

from bench.catalog.dtypes import DTYPES, KV_CACHE_DTYPES, QUANTIZATIONS
from bench.catalog.engines import ENGINES, engine_names, get_engine
from bench.cli.progress import Progress, summary_table
from bench.telemetry import meter_choices

# Fewer measured requests than this and a point's p99 is one of its largest samples.
MIN_REQUESTS = 100
DEFAULTS = {
    "model": "tiny-llama",
    "concurrency": "1,4,16",
    "input_len": 128,
    "output_len": 64,
}


def parse_engine_args(pairs: tuple[str, ...]) -> dict:
    """("max_num_batched_tokens=8192", "enforce_eager") -> {"max_num_batched_tokens": 8192, "enforce_eager": True}."""
    import yaml

    from bench.errors import ConfigError
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


def _gpu_list(ctx, param, text: str | None) -> list[int] | None:
    """"0,1" -> [0, 1] (click callback of --gpus); range and count are checked by the plan."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",")]  # "0,,1": an empty index is refused
    except ValueError:
        raise click.BadParameter(f"'{text}' (expected device indices like 0,1)") from None


def engine_options(f):
    """Options shared by `bench run` and `bench sweep` overrides."""
    opts = [
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
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.command()
@click.option("--model", default=DEFAULTS["model"], show_default=True, help="Catalog key (see `bench models`).")
@click.option("--concurrency", default=DEFAULTS["concurrency"], show_default=True,
              help="Comma-separated concurrency levels (batch sizes for --engine vllm-offline).")
@click.option("--input-len", default=DEFAULTS["input_len"], show_default=True, type=int, help="Prompt tokens.")
@click.option("--output-len", default=DEFAULTS["output_len"], show_default=True, type=int, help="Output tokens.")
@click.option("--requests", "n_requests", type=int,
              help="Measured requests per level [max(100 + concurrency, 4 x concurrency): p99 needs 100 inside the measurement window].")
@click.option("--warmup", "n_warmup", type=int, help="Warm-up requests per level [the concurrency].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="Continue the interrupted run in RUN_DIR (same options): finished points are kept.")
@click.option("--request-timeout", "request_timeout_s", type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request may take, connect to last byte; past it the request fails "
                   "[300 + 1 per output token + 0.01 per prompt token].")
@click.option("--stall-timeout", "stall_timeout_s", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="Seconds without a byte from the server before a request fails as stalled.")
@click.option("--client-workers", "client_workers", type=click.IntRange(min=1),
              help="Client worker processes driving the load [chosen from the load and the cores: "
                   "one per 256 streams, at most half the cores beyond two; 1 on 2 cores].")
@engine_options
def run(**opts):
    """Serve a model, drive load at each concurrency level, write a versioned result.

    With no arguments: the tiny Llama with dummy weights on the local device."""
    from bench.plan import plan_from_options
    from bench.run.session import prepare_run, run_plan

    opts["engine_args"] = parse_engine_args(opts["engine_args"])
    opts["concurrency"] = _int_list(opts["concurrency"])
    check_engine_url(opts.get("engine"), opts.get("endpoint_url"))
    env, hardware_note = prepare_run(opts.get("hardware_id"), opts.get("probe_file"))
    env.request_timeout_s, env.stall_timeout_s = opts["request_timeout_s"], opts["stall_timeout_s"]
    env.client_workers = opts["client_workers"]
    plan = plan_from_options(**_plan_kwargs(opts, env))
    click.echo(hardware_note, err=True)
    out_dir = Path(opts["out_dir"] or "runs")
    resume_dir = Path(opts["resume_dir"]) if opts["resume_dir"] else None
    run_dir, result = run_plan(plan, out_dir, env, Progress(n_points=len(plan.points)), resume_dir=resume_dir)
    click.echo(summary_table(result))
    click.echo(f"result: {run_dir}")
    from bench.run.status import exit_code

    if exit_code(result.status):  # partial 4, failed 1 (docs/reliability.md)
        raise SystemExit(exit_code(result.status))


def check_engine_url(engine: str | None, url: str | None) -> None:
    """`--engine endpoint` (any engine that serves from a URL) needs `--url`: one line, not a sweep-key error."""
    if engine and get_engine(engine).needs_url and not url:
        from bench.errors import ConfigError

        raise ConfigError(f"--engine {engine} needs --url URL")


def _int_list(text: str) -> list[int]:
    """"1,4,16" -> [1, 4, 16]; an empty level ("1,,4", "1,4,") is refused, not skipped."""
    from bench.errors import ConfigError

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


def _plan_kwargs(opts: dict, env) -> dict:
    not_plan = ("out_dir", "hardware_id", "probe_file", "resume_dir", "request_timeout_s", "stall_timeout_s",
                "client_workers")
    keep = {k: v for k, v in opts.items() if v is not None and k not in not_plan}
    keep.setdefault("min_requests", MIN_REQUESTS)
    if keep.get("engine") and "concurrency" not in get_engine(keep["engine"]).loads:  # each level: one static batch
        keep["loads"] = [{"kind": "offline", "batch": keep["concurrency"]}]
    keep["hardware"] = env.hardware
    keep["n_devices"] = env.device.get("count") or 1
    return keep
