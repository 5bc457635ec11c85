"""`bench capacity`: the largest rate (or concurrency) that meets every SLO, priced in $ and J."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from bench.cli.options import engine_options, parse_engine_args
from bench.plan import capacity as cap
from bench.plan.plan import RUN_INPUT_LEN, RUN_MODEL, RUN_OUTPUT_LEN

if TYPE_CHECKING:
    from bench.run.capacity import CapacitySummary, MeanSd


@click.command()
@click.argument("sweep_file", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--slo", help="SLOs on percentiles, e.g. ttft_p95=2s,tpot_p95=100ms (metrics ttft, tpot, itl, e2e, "
                            "ttft_sched, e2e_sched; stats p50 p90 p95 p99 mean) [the file's capacity.slo].")
@click.option("--load", "load_kind", type=click.Choice(["rate", "concurrency"]),
              help=f"What to search over [{cap.DEFAULT_LOAD}].")
@click.option("--repeats", type=click.IntRange(min=1), help=f"Measurements per level [{cap.DEFAULT_REPEATS}].")
@click.option("--start", type=click.FloatRange(min=0, min_open=True),
              help=f"First level (req/s or requests) [{cap.DEFAULT_START:g}].")
@click.option("--max", "max_level", type=click.FloatRange(min=0, min_open=True),
              help=f"Highest level to try [{', '.join(f'{k}: {v:g}' for k, v in cap.MAX_LEVEL.items())}].")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True),
              help=f"Rates: stop when the bracket is within this share of the passing level [{cap.DEFAULT_TOLERANCE:g}].")
@click.option("--max-steps", type=click.IntRange(min=1), help=f"Bisections at most [{cap.DEFAULT_MAX_STEPS}].")
@click.option("--model", help=f"Catalog key; replaces the file's models [{RUN_MODEL} without SWEEP_FILE].")
@click.option("--input-len", type=int, help=f"Prompt tokens [the file's, else {RUN_INPUT_LEN}].")
@click.option("--output-len", type=int, help=f"Output tokens [the file's, else {RUN_OUTPUT_LEN}].")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="Continue the search in RUN_DIR: probes already measured are not measured again.")
@click.option("--client-workers", "client_workers", type=click.IntRange(min=1), help="Client worker processes.")
@engine_options
def capacity(sweep_file, slo, load_kind, repeats, start, max_level, tolerance, max_steps, model, input_len,
             output_len, resume_dir, hardware_id, probe_file, **options):
    """Search the largest request rate (or concurrency) whose repeated measurements meet every
    SLO (95% one-sided confidence), with one engine start; report tok/s per GPU, goodput,
    $/Mtok and J/token there. Each probe is an ordinary load point on disk (resumable).
    With SWEEP_FILE, the other options override the file as in `bench sweep`."""
    from bench.cli.progress import run_with_progress, summary_table
    from bench.plan.request import RunRequest

    options["engine_args"] = parse_engine_args(options["engine_args"])
    flags = {"slo": slo, "load": load_kind, "repeats": repeats, "start": start, "max_level": max_level,
             "tolerance": tolerance, "max_steps": max_steps}
    request = RunRequest.capacity(sweep_file, options, flags, model, input_len, output_len, hardware_id=hardware_id,
                                  probe_file=probe_file, resume_dir=resume_dir)
    outcome = run_with_progress(request)
    click.echo(summary_table(outcome.result))
    click.echo(describe_search(search_summary(outcome.result)))
    click.echo(f"result: {outcome.run_dir}")
    if outcome.exit_code:  # partial 4, failed 1, as `bench run` and `bench sweep` (docs/reliability.md)
        raise SystemExit(outcome.exit_code)


def search_summary(result) -> CapacitySummary | None:
    """The run's capacity search as run.json keeps it (`extra.capacity`), typed; None if it has none."""
    from bench.run.capacity import CapacitySummary

    (found,) = result.extra["capacity"].values() if "capacity" in result.extra else [None]
    return None if found is None else CapacitySummary.model_validate(found)


def describe_search(summary: CapacitySummary | None) -> str:
    """The search's steps and its boundary, for the terminal."""
    from bench.run.capacity import BoundaryFigures

    if summary is None:
        return "capacity search: nothing measured"
    unit = "req/s" if summary.kind == "rate" else "in flight"
    slo = ", ".join(f"{k} <= {v:g} s" for k, v in summary.slo.items())
    lines = [(f"capacity search over {summary.kind} ({summary.repeats} repeats per level, "
              f"{summary.confidence}), SLO {slo}:")]
    for s in summary.steps:
        verdict = ("meets" + (f" ({s.why})" if s.why else "")) if s.passed else f"fails ({s.why})"
        lines.append(f"  {s.level:g} {unit}: {verdict}")
    b = summary.boundary
    if summary.stopped:
        last = summary.last_passing
        lines.append(f"no boundary: the search stopped: {summary.stopped}"
                     + (f" ({last:g} {unit} met the SLO before; the bracket above it is open)" if last else ""))
        return "\n".join(lines)
    if b is None:
        lines.append("no level met the SLO")
        return "\n".join(lines)
    lines.append(f"boundary: {b:g} {unit} (first failing: {summary.first_failing or 'none up to the maximum'})")
    fig = summary.at_boundary or BoundaryFigures()

    def show(key: str, v: MeanSd | None, fmt: str, unit_text: str) -> str:
        return f"{key} {format(v.mean, fmt)} +/- {format(v.sd, fmt)} {unit_text}" if v else f"{key} n/a"

    lines.append("at the boundary: " + "; ".join([
        show("tok_s_per_gpu", fig.tok_s_per_gpu, ".1f", "tok/s"),
        show("goodput_output_tok_s", fig.goodput_output_tok_s, ".1f", "tok/s"),
        show("usd_per_mtok_output", fig.usd_per_mtok_output, ".4g", f"$/Mtok ({fig.cost_scenario or 'no price'})"),
        show("j_per_output_token", fig.j_per_output_token, ".4g", f"J ({fig.energy_method or 'no energy'})"),
        show("j_per_output_token_net", fig.j_per_output_token_net, ".4g", "J net of idle")]))
    return "\n".join(lines)
