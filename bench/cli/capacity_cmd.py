"""`bench capacity`: the largest rate (or concurrency) that meets every SLO, priced in $ and J."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.run_cmd import DEFAULTS, MIN_REQUESTS, engine_options, parse_engine_args


@click.command()
@click.argument("sweep_file", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--slo", help="SLOs on percentiles, e.g. ttft_p95=2s,tpot_p95=100ms (metrics ttft, tpot, itl, e2e, "
                            "ttft_sched, e2e_sched; stats p50 p90 p95 p99 mean) [the file's capacity.slo].")
@click.option("--load", "load_kind", type=click.Choice(["rate", "concurrency"]), help="What to search over [rate].")
@click.option("--repeats", type=click.IntRange(min=1), help="Measurements per level [3].")
@click.option("--start", type=click.FloatRange(min=0, min_open=True), help="First level (req/s or requests) [1].")
@click.option("--max", "max_level", type=click.FloatRange(min=0, min_open=True), help="Highest level to try.")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True),
              help="Rates: stop when the bracket is within this share of the passing level [0.1].")
@click.option("--max-steps", type=click.IntRange(min=1), help="Bisections at most [8].")
@click.option("--model", default=DEFAULTS["model"], show_default=True, help="Catalog key (without SWEEP_FILE).")
@click.option("--input-len", default=DEFAULTS["input_len"], show_default=True, type=int, help="Prompt tokens.")
@click.option("--output-len", default=DEFAULTS["output_len"], show_default=True, type=int, help="Output tokens.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="Continue the search in RUN_DIR: probes already measured are not measured again.")
@click.option("--client-workers", "client_workers", type=click.IntRange(min=1), help="Client worker processes.")
@engine_options
def capacity(sweep_file, slo, load_kind, repeats, start, max_level, tolerance, max_steps, resume_dir,
             client_workers, **opts):
    """Search the largest request rate (or concurrency) whose repeated measurements meet every
    SLO (95% one-sided confidence), with one engine start; report tok/s per GPU, goodput,
    $/Mtok and J/token there. Each probe is an ordinary load point on disk (resumable)."""
    from bench.cli.progress import Progress, summary_table
    from bench.errors import ConfigError
    from bench.plan import build_plan, load_sweep, plan_from_options
    from bench.plan.capacity import CapacitySearch, parse_slo
    from bench.run.session import prepare_run, run_plan

    if sweep_file:
        spec = load_sweep(sweep_file, {})
        env, note = prepare_run(spec.hardware or opts.get("hardware_id"), opts.get("probe_file"))
        plan = build_plan(spec, env.hardware, spec.devices or env.device.get("count") or 1)
        settings = spec.capacity.model_dump() if spec.capacity else {}
        env.request_timeout_s, env.stall_timeout_s = spec.request_timeout_s, spec.stall_timeout_s
        env.client_workers = client_workers or spec.client_workers
    else:
        from bench.cli.run_cmd import _plan_kwargs

        opts["engine_args"] = parse_engine_args(opts["engine_args"])
        opts.update(model=opts.get("model"), concurrency=[1])
        env, note = prepare_run(opts.get("hardware_id"), opts.get("probe_file"))
        env.client_workers = client_workers
        kwargs = _plan_kwargs({k: v for k, v in opts.items() if k not in ("resume_dir",)}, env)
        kwargs.setdefault("name", f"capacity-{opts['model']}")
        plan = plan_from_options(**kwargs)
        settings = {}
    given = {"slo": slo, "load": load_kind, "repeats": repeats, "start": start, "max_level": max_level,
             "tolerance": tolerance, "max_steps": max_steps}
    settings.update({k: v for k, v in given.items() if v is not None})
    if not settings.get("slo"):
        raise ConfigError("bench capacity needs --slo (or capacity.slo in the sweep file)")
    if len(plan.engine_configs) != 1 or not plan.points:
        raise ConfigError(f"a capacity search runs one engine configuration and one workload; the plan has "
                          f"{len(plan.engine_configs)} configuration(s) (narrow it with --model / the file)")
    search = CapacitySearch(parse_slo(settings["slo"]), kind=settings.get("load", "rate"),
                            repeats=settings.get("repeats", 3), start=settings.get("start"),
                            max_level=settings.get("max_level"), tolerance=settings.get("tolerance", 0.1),
                            max_steps=settings.get("max_steps", 8))
    plan = plan.model_copy(update={"points": plan.points[:1]})  # the template: workload and configuration
    click.echo(note, err=True)
    out_dir = Path(opts.get("out_dir") or "runs")
    run_dir, result = run_plan(plan, out_dir, env, Progress(n_points=None),
                               resume_dir=Path(resume_dir) if resume_dir else None, search=search)
    click.echo(summary_table(result))
    click.echo(describe_search(next(iter(result.extra.get("capacity", {}).values()), None)))
    click.echo(f"result: {run_dir}")
    from bench.run.status import exit_code

    if exit_code(result.status):  # partial 4, failed 1, as `bench run` and `bench sweep` (docs/reliability.md)
        raise SystemExit(exit_code(result.status))


def describe_search(summary: dict | None) -> str:
    """The search's steps and its boundary, for the terminal."""
    if not summary:
        return "capacity search: nothing measured"
    unit = "req/s" if summary["kind"] == "rate" else "in flight"
    slo = ", ".join(f"{k} <= {v:g} s" for k, v in summary["slo"].items())
    lines = [f"capacity search over {summary['kind']} ({summary['repeats']} repeats per level, "
             f"{summary['confidence']}), SLO {slo}:"]
    for s in summary["steps"]:
        verdict = ("meets" + (f" ({s['why']})" if s["why"] else "")) if s["passed"] else f"fails ({s['why']})"
        lines.append(f"  {s['level']:g} {unit}: {verdict}")
    b = summary.get("boundary")
    if summary.get("stopped"):
        last = summary.get("last_passing")
        lines.append(f"no boundary: the search stopped: {summary['stopped']}"
                     + (f" ({last:g} {unit} met the SLO before; the bracket above it is open)" if last else ""))
        return "\n".join(lines)
    if b is None:
        lines.append("no level met the SLO")
        return "\n".join(lines)
    lines.append(f"boundary: {b:g} {unit} (first failing: {summary.get('first_failing') or 'none up to the maximum'})")
    fig = summary.get("at_boundary") or {}

    def show(key, fmt, unit_text):
        v = fig.get(key)
        return f"{key} {format(v['mean'], fmt)} +/- {format(v['sd'], fmt)} {unit_text}" if v else f"{key} n/a"

    lines.append("at the boundary: " + "; ".join([
        show("tok_s_per_gpu", ".1f", "tok/s"), show("goodput_output_tok_s", ".1f", "tok/s"),
        show("usd_per_mtok_output", ".4g", f"$/Mtok ({fig.get('cost_scenario') or 'no price'})"),
        show("j_per_output_token", ".4g", f"J ({fig.get('energy_method') or 'no energy'})"),
        show("j_per_output_token_net", ".4g", "J net of idle")]))
    return "\n".join(lines)
