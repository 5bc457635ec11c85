"""`bench costmodel build` (the shared table, compacted from the point files) and
`bench costmodel query` (the points, read with partition pruning)."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.keys_cmd import echo_excluded, load_trust, trust_option
from bench.escape import terminal_text


@click.group()
def costmodel():
    """The shared cost-model table (one row per valid load point, $/Mtok per scenario)."""


@costmodel.command()
@click.option("--store", "url", required=True, help="Store URL holding the published runs.")
@click.option("--scenario", "scenarios", multiple=True, help="Keep only these cost scenarios (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write costmodel.parquet and costmodel.csv into this local folder [none: the store only].")
@click.option("--full", is_flag=True, help="Reread every point file instead of reusing the compacted partitions.")
@trust_option
def build(url, scenarios, out, full, trust):
    """Compact the point files and rebuild URL/costmodel/costmodel.parquet|csv (and --out, when given).

    Every run new to the table is verified first: its figures derived again from its records,
    checked against the catalog. A run that fails is left out with one line; the table is
    built from the others and the exit status is 1. Published runs without point files
    (older stores) get theirs first. With --trust, the table of the signed runs only, written
    to --out alone: the store is read, not written."""
    from bench.store.costmodel import build as build_table

    trusted = load_trust(trust)
    if trusted is not None:
        from bench.store.trust import trusted_build

        done, excluded = trusted_build(url, trusted, out_dir=out, scenario_names=list(scenarios) or None)
        echo_excluded(excluded)
        n_runs = done.table["run_id"].nunique() if not done.table.empty else 0
        click.echo(f"{len(done.table)} load points from {n_runs} signed runs ({done.point_files} point files "
                   f"verified against their signatures); the store's shared table is left as it is")
        for path in done.local_paths:
            click.echo(f"wrote {path}")
        return
    done = build_table(url, out_dir=out, scenario_names=list(scenarios) or None, full=full)
    for reason in done.skipped:
        click.echo(f"bench: warning: skipped {terminal_text(reason)}", err=True)
    n_runs = done.table["run_id"].nunique() if not done.table.empty else 0
    skipped = f"; {len(done.skipped)} run(s) skipped (see above)" if done.skipped else ""
    click.echo(f"{len(done.table)} load points from {n_runs} runs{skipped}")
    ignored = f", {done.ignored} of runs not published (left out)" if done.ignored else ""
    click.echo(f"{done.partitions} partitions compacted from {done.point_files} point files "
               f"({done.backfilled} backfilled{ignored}; {done.verified} runs verified now)")
    for path in [*map(str, done.local_paths), *done.store_paths]:
        click.echo(f"wrote {path}")
    if done.skipped:  # the table is written from the other runs; the exit status says some were left out
        raise SystemExit(1)


@costmodel.command()
@click.option("--store", "url", required=True, help="Store URL holding the point files.")
@click.option("--where", "where", multiple=True, metavar="COLUMN=VALUE[,...]",
              help="Filters on point columns, e.g. hardware=h100-sxm,model=llama-3.1-8b (repeatable; a column "
                   "given twice matches either value). hardware and model prune the partitions read.")
@click.option("--sql", default=None,
              help="A DuckDB query over the view `points` (the table's columns, $/Mtok included), "
                   "e.g. \"SELECT hardware, max(tok_s_per_gpu) FROM points GROUP BY 1\".")
@click.option("--scenario", "scenarios", multiple=True, help="Keep only these cost scenarios (repeatable).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result to this .csv or .parquet file [stdout, as CSV].")
@trust_option
def query(url, where, sql, scenarios, out, trust):
    """Valid load points of the store's point files as the table's rows, $/Mtok computed now."""
    from bench.errors import ConfigError
    from bench.store.costmodel import CSV_FLOAT_FORMAT
    from bench.store.query import query as run_query

    if out is not None and out.suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: give a .csv or .parquet file")
    done = run_query(url, where, sql, list(scenarios) or None, trust=load_trust(trust))
    for reason in done.skipped:
        click.echo(f"bench: warning: skipped {terminal_text(reason)}", err=True)
    echo_excluded(done.excluded)
    frame = done.table
    if out is not None and out.suffix == ".parquet":
        frame.to_parquet(out, index=False, write_page_checksum=True)
    else:
        from bench.escape import csv_safe

        text = csv_safe(frame).to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n")
        if out is not None:
            out.write_text(text)
        else:  # the store's text on a terminal: no escape sequence reaches it
            click.echo(terminal_text(text, keep="\n\t"), nl=False)
    click.echo(f"{len(frame)} rows; read {len(done.files)} files from {done.partitions} partitions"
               + (f"; {len(done.skipped)} point file(s) skipped (see above)" if done.skipped else "")
               + (f"; wrote {out}" if out is not None else ""), err=True)
    if done.skipped:
        raise SystemExit(1)
