"""`bench costmodel build`: the shared cost-model table from every published run."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def costmodel():
    """The shared cost-model table (one row per valid load point, $/Mtok per scenario)."""


@costmodel.command()
@click.option("--store", "url", required=True, help="Store URL holding the published runs.")
@click.option("--scenario", "scenarios", multiple=True, help="Keep only these cost scenarios (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write costmodel.parquet and costmodel.csv into this local folder [none: the store only].")
def build(url, scenarios, out):
    """Rebuild URL/costmodel/costmodel.parquet|csv from every published run (and --out, when given)."""
    from bench.store.costmodel import build as build_table

    done = build_table(url, out_dir=out, scenario_names=list(scenarios) or None)
    for reason in done.skipped:
        click.echo(f"bench: warning: skipped {reason}", err=True)
    n_runs = done.table["run_id"].nunique() if not done.table.empty else 0
    skipped = f"; {len(done.skipped)} run(s) skipped (see above)" if done.skipped else ""
    click.echo(f"{len(done.table)} load points from {n_runs} runs{skipped}")
    for path in [*map(str, done.local_paths), *done.store_paths]:
        click.echo(f"wrote {path}")
