"""`bench run`: one engine configuration under a few loads; the embedded default needs no
arguments (the tiny Llama, dummy weights, the local device)."""

from __future__ import annotations

import click

from bench.cli.options import engine_options, int_list, parse_engine_args
from bench.plan.plan import RUN_CONCURRENCY, RUN_INPUT_LEN, RUN_MODEL, RUN_OUTPUT_LEN


@click.command()
@click.option("--model", default=RUN_MODEL, show_default=True, help="Catalog key (see `bench models`).")
@click.option("--concurrency", default=",".join(map(str, RUN_CONCURRENCY)), show_default=True,
              help="Comma-separated concurrency levels (batch sizes for --engine vllm-offline).")
@click.option("--input-len", default=RUN_INPUT_LEN, show_default=True, type=int, help="Prompt tokens.")
@click.option("--output-len", default=RUN_OUTPUT_LEN, show_default=True, type=int, help="Output tokens.")
@click.option("--requests", "n_requests", type=int,
              help="Measured requests per level [max(100 + concurrency, 4 x concurrency): p99 needs 100 inside the measurement window].")
@click.option("--warmup", "n_warmup", type=int, help="Warm-up requests per level [the concurrency].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1),
              help="Measure every level this many times, same prompts each time; figures get a 95% interval [1].")
@click.option("--repeat-until", "repeat_until", metavar="METRIC:SHARE", callback=lambda _c, _p, v: _repeat_until(v),
              help="Adaptive repeats: stop repeating a level once the 95% interval of METRIC is within SHARE of its "
                   "mean (e.g. tok_s_per_gpu:0.05), after 3 repeats; --repeats is the most.")
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
@click.option("--prestart", is_flag=True,
              help="Start the next engine config on spare GPUs while the current one measures (docs/timing.md).")
@engine_options
def run(model, concurrency, input_len, output_len, resume_dir, hardware_id, probe_file, prestart, **options):
    """Serve a model, drive load at each concurrency level, write a versioned result.

    With no arguments: the tiny Llama with dummy weights on the local device."""
    from bench.cli.progress import run_with_progress, summary_table
    from bench.plan.request import RunRequest

    options["engine_args"] = parse_engine_args(options["engine_args"])
    request = RunRequest.single_run(model, int_list(concurrency), input_len, output_len, options,
                                    hardware_id=hardware_id, probe_file=probe_file, resume_dir=resume_dir,
                                    prestart=prestart)
    outcome = run_with_progress(request)
    click.echo(summary_table(outcome.result))
    from bench.analysis.repeats import REPEAT_COLUMNS, has_repeats, repeat_rows
    from bench.cli.textable import format_table
    from bench.results.repeats import repeat_summaries

    summaries = repeat_summaries(outcome.result)
    if has_repeats(summaries):  # --repeats N: each figure over its valid repeats
        click.echo("\nover repeats (Student-t 95% interval of the mean; invalid repeats left out):")
        click.echo(format_table(repeat_rows(summaries), REPEAT_COLUMNS))
    click.echo(f"result: {outcome.run_dir}")
    if outcome.exit_code:  # partial 4, failed 1 (docs/reliability.md)
        raise SystemExit(outcome.exit_code)


def _repeat_until(value: str | None) -> dict | None:
    """`METRIC:SHARE` -> the sweep's `repeat_until` (validated with the sweep)."""
    if value is None:
        return None
    metric, sep, share = value.rpartition(":")
    try:
        return {"metric": metric, "share": float(share)} if sep and metric else _bad(value)
    except ValueError:
        return _bad(value)


def _bad(value: str) -> dict:
    raise click.BadParameter(f"{value!r}: expected METRIC:SHARE, e.g. tok_s_per_gpu:0.05")
