"""`bench plan`: show what a sweep file will run, what it skips and why, and how long it
should take, before any engine starts; `bench sweep`: run it."""

from __future__ import annotations

import click

from bench.cli.options import budget_options, collect_overrides, config_option, sweep_overrides


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@sweep_overrides
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of tables.")
@budget_options
@click.option("--history", "history_dir", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Results folder whose earlier runs price the plan (same model and hardware).")
def plan(sweep_file, as_json, config_id, probe_file, price_usd_h, budget_usd, budget_h, history_dir, **opts):
    """Print the ordered load points of SWEEP_FILE, what preflight skips and why, an
    estimated duration, and its device-hours and dollars. Starts nothing."""
    from pathlib import Path

    from bench.plan.request import RunRequest, plan_here
    from bench.results.estimate import priced_plan, read_history

    the_plan, hardware = plan_here(RunRequest.from_file(sweep_file, collect_overrides(opts), config_id=config_id))
    the_plan, est = priced_plan(the_plan, hardware, read_history(Path(history_dir)), usd_per_device_h=price_usd_h,
                                budget_usd=budget_usd, budget_h=budget_h)
    click.echo(the_plan.model_dump_json(indent=2) if as_json else plan_text(the_plan, hardware) + "\n" + price_text(est))


def price_text(est) -> str:
    """The plan's price: time, device-hours, dollars and what the estimate rests on."""
    usd = f"${est.usd:.4g} at {est.usd_per_device_h:g} $/device-h" if est.usd is not None else "no rental price"
    return (f"price: {est.total_s / 60:.1f} min x {est.n_devices} devices = {est.device_hours:.3g} device-h, {usd}\n"
            f"  from earlier runs of the same model and hardware: {est.basis_text()}; fallback: the estimate above")


def plan_text(the_plan, hardware) -> str:
    """The plan as text: points, skipped points grouped by reason, duration estimate."""
    from bench.cli.textable import format_table
    from bench.plan.describe import describe_plan

    d = describe_plan(the_plan, hardware)
    lines = [d.header, "", format_table(d.rows, list(d.rows[0])) if d.rows else "nothing to run"]
    lines += [f"note: {n}" for n in d.notes]
    if d.skipped:
        lines += ["", f"skipped ({d.n_skipped} points):", format_table(d.skipped, list(d.skipped[0]))]
    return "\n".join([*lines, "", d.estimate, d.assumptions, d.accuracy])  # accuracy gate line


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@sweep_overrides
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="Continue the run in RUN_DIR: finished points are kept, the rest run.")
@click.option("--pack", is_flag=True,
              help="Run independent engine configs at the same time on disjoint GPUs of this box "
                   "(docs/packing.md); off by default.")
@click.option("--prestart", is_flag=True,
              help="Start the next engine config on spare GPUs while the current one measures "
                   "(docs/timing.md); off by default (or the file's prestart: true).")
@click.option("--client-workers", "client_workers", type=click.IntRange(min=1),
              help="Client worker processes driving the load [the file's client_workers, else chosen "
                   "from the load and the cores].")
@config_option
@click.option("--upload", "upload_url", metavar="URL",
              help="Publish the run to the store at URL when it ends complete or partial (docs/store.md).")
@budget_options
def sweep(sweep_file, resume_dir, pack, prestart, config_id, upload_url, probe_file, price_usd_h, budget_usd, budget_h,
          **opts):
    """Run every point of SWEEP_FILE: one engine start per engine configuration, each
    finished point on disk before the next begins. Ctrl-C keeps what is done; --resume
    continues it."""
    from bench.cli.progress import run_with_progress, summary_table
    from bench.plan.request import RunRequest

    request = RunRequest.from_file(sweep_file, collect_overrides(opts), config_id=config_id, pack=pack, prestart=prestart,
                                   resume_dir=resume_dir, probe_file=probe_file, price_usd_h=price_usd_h,
                                   budget_usd=budget_usd, budget_h=budget_h)
    if upload_url:  # an unusable store URL (no s3fs, bad scheme) fails before hours of measuring
        from bench.store import Store

        Store(upload_url)
    outcome = run_with_progress(request, header=lambda ready: f"{ready.note}\n{plan_text(ready.plan, ready.hardware)}")
    click.echo(summary_table(outcome.result))
    click.echo(f"result: {outcome.run_dir}")
    if upload_url and outcome.result.status in ("complete", "partial"):
        publish(outcome.run_dir, upload_url)
    if outcome.exit_code:  # partial 4, failed 1 (docs/reliability.md)
        raise SystemExit(outcome.exit_code)


def publish(run_dir, url: str) -> None:
    """Upload one finished run (`bench sweep --upload`); a refusal says the run is kept."""
    from bench.errors import StoreError
    from bench.store import upload

    try:
        [done] = upload([run_dir], url)
    except StoreError as e:
        raise StoreError(f"{e} (the run is kept in {run_dir}: bench upload {run_dir} --to URL)") from None
    verb = "published" if done.status == "published" else "already there"
    click.echo(f"{verb}: {done.run_id}")
