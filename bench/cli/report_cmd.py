"""`bench compare` (across hardware, from a store or local results) and `bench report` (one run)."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.keys_cmd import echo_excluded, load_trust, trust_option
from bench.errors import ConfigError
from bench.escape import terminal_text


def _pair(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column:
        raise click.BadParameter(f"{text!r}: expected COLUMN=VALUE")
    return column.strip(), value.strip()


@click.command()
@click.argument("results", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--store", "url", default=None, help="Store URL (instead of local RESULTS folders).")
@click.option("--model", required=True, help="Model key to compare.")
@click.option("--hardware", "hardware", multiple=True,
              help="Only this hardware id (repeatable) [all]; with --store, only its partitions are read.")
@click.option("--baseline", default="h100-sxm", show_default=True,
              help="What the ratios divide by: a series label (e.g. 'h100-sxm bf16 vllm') or a hardware id.")
@click.option("--explain", nargs=2, metavar="A B", default=None,
              help="Decompose the $/Mtok ratio of series B over series A into the cost law's factors "
                   "(first --scenario, else the first in the table): a table and a waterfall in compare.html.")
@click.option("--at-interactivity", type=float, default=None, help="Match series at this tok/s per user.")
@click.option("--ttft-slo", type=float, default=None, help="Only points with TTFT p99 at or under this (s).")
@click.option("--scenario", "scenarios", multiple=True, help="Cost scenarios to show (default: all).")
@click.option("--reference", is_flag=True,
              help="Draw and table published figures (published.yaml, source: published) beside the measured ones.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder [compare-<model> in the folder holding RESULTS; with --store, "
                   "$BENCH_CACHE_DIR/reports or ~/.cache/bench/reports].")
@click.option("--where", "where", multiple=True, metavar="COLUMN=VALUE", callback=lambda _c, _p, v: [_pair(x) for x in v],
              help="Hold a table column fixed (repeatable), e.g. --where spec_method=none --where engine=vllm: "
                   "the series then differ only in the axes left free (hardware, precision, engine, "
                   "speculative method, LoRA mix, structured mode).")
@trust_option
def compare(results, url, model, hardware, baseline, explain, at_interactivity, ttft_slo, scenarios, reference, out, trust,
            where):
    """Compare tok/s per GPU, J/token and $/Mtok across hardware at matched operating points.

    With --store, the model's points are read from the store's point files (partition
    pruned; no run is downloaded)."""
    from bench.analysis.pareto import Operating
    from bench.analysis.report import compare_report
    from bench.cli.textable import format_table

    if bool(url) == bool(results):
        raise ConfigError("give either --store URL or RESULTS folders, not both or neither")
    if trust and not url:
        raise ConfigError("--trust checks the signatures of a store's runs: give it with --store URL")
    points = None
    if url:
        from bench.store.query import compare_points

        read = compare_points(url, model, list(hardware) or None, list(scenarios) or None, trust=load_trust(trust))
        for reason in read.skipped:
            click.echo(f"bench: warning: skipped {terminal_text(reason)}", err=True)
        echo_excluded(read.excluded)
        runs, points = None, read.table
        table = points[points["valid"].fillna(False)]
    else:
        from bench.store.costmodel import build_table, runs_from_dirs

        runs = runs_from_dirs(results)
        if hardware:
            runs = [(rid, run) for rid, run in runs if run.config.hardware_id in hardware]
        table = build_table(runs)
    if where:  # hold these axes fixed: the series then differ only in the others
        from bench.analysis.pareto import hold_fixed

        try:
            table = hold_fixed(table, where)
            points = hold_fixed(points, where) if points is not None else None
        except ValueError as bad:
            raise ConfigError(str(bad)) from None
    out = out or default_compare_dir(results, model)
    explain_args = None
    if explain:
        from bench.analysis.report import default_scenario

        explain_args = (*explain, scenarios[0] if scenarios else default_scenario(table))
    rep = compare_report(table, runs, model, out, Operating(at_interactivity, ttft_slo), baseline,
                         list(scenarios) or None, reference=reference, points=points, explain=explain_args)
    from bench.measure.groups import metric_label

    shown = [("series", "series"), ("status", "status"), ("n_repeats", "repeats"),
             ("interactivity_tok_s_user", metric_label("interactivity_tok_s_user", short=True)),
             ("tok_s_per_gpu", metric_label("tok_s_per_gpu", short=True)), ("tok_s_per_gpu_vs_baseline", "x base"),
             ("tok_s_per_gpu_vs_baseline_ci95", "x base 95% CI"), ("tok_s_per_gpu_vs_baseline_verdict", "verdict"),
             ("j_per_output_token", metric_label("j_per_output_token", short=True)), ("power_scope", "power scope"),
             ("accuracy", "accuracy")]
    rows = rep.table.astype(object).where(rep.table.notna(), None).to_dict("records")
    click.echo(format_table(rows, [c for c in shown if c[0] in rep.table]))
    for warning in rep.warnings:
        click.echo(f"bench: warning: {terminal_text(warning)}", err=True)
    if reference:
        from bench.analysis.reference import select_published

        published, matched = select_published(model)
        click.echo(f"\npublished figures (source: published, not measured here; "
                   f"{'of ' + model if matched else 'none of ' + model + ', all shown for scale'}):")
        click.echo(format_table([{"id": r.id, "precision": r.precision, "figures": r.as_published}
                                 for r in published], ["id", "precision", "figures"]))
    if rep.explanation is not None:
        from bench.analysis.explain import EXPLAIN_COLUMNS

        e = rep.explanation
        click.echo(f"\n$/Mtok output ({e.scenario}) of {e.b} / {e.a} = {e.ratio:.4f} at {e.operating_point}; "
                   f"the factors multiply to {e.product:.4f}:")
        click.echo(format_table(e.rows(), EXPLAIN_COLUMNS))
    click.echo(f"report: {rep.path}")
    click.echo(f"interactive: {rep.html}")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder [RUN_DIR/report].")
def report(run_dir, out):
    """Report one run: its load points with validity reasons, plots and provenance."""
    from bench.analysis.report import run_report

    out = out or run_dir / "report"
    rep, written = whole_folder(out, lambda tmp: run_report(run_dir, tmp))
    path, html = (out / Path(p).relative_to(written) for p in (rep.path, rep.html))
    click.echo(f"{len(rep.table)} load points; status {rep.status}; report: {path}; interactive: {html}")


def whole_folder(out: Path, make):
    """`make(folder)` written into a hidden folder beside `out`, then renamed into place: a
    report is whole or absent, never half written (a full disk, a crash). An older `out` is
    replaced only once the new one is complete. Returns (make's result, the folder it wrote
    into: its paths are relative to that); a full disk is DiskFull (exit 5) and leaves `out`
    as it was."""
    import os
    import shutil
    import tempfile

    from bench.errors import DISK_FULL_ERRNOS, DiskFull

    out = Path(out)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        result = make(tmp)
        old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}") if out.exists() else None
        if old is not None:
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in DISK_FULL_ERRNOS:
            raise DiskFull(f"cannot write the report {out}: {e.strerror}; nothing was written "
                           f"({'the previous report is kept' if out.exists() else 'no report folder'})") from None
        raise
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result, tmp


def default_compare_dir(results: tuple[Path, ...], model: str) -> Path:
    """compare-<model> in the folder holding every RESULTS folder; from a store, beside the pull cache."""
    import os

    name = f"compare-{model.replace('/', '-')}"
    if not results:
        from bench.store import default_cache_dir

        return default_cache_dir().parent / "reports" / name
    # a run folder itself is left alone (it is uploaded as it is): its parent holds the report
    folders = [p.resolve().parent if not p.is_dir() or (p / "run.json").is_file() else p.resolve() for p in results]
    return Path(os.path.commonpath(folders)) / name
