"""`bench upload`, `bench pull`, `bench ls`: the shared store (bench.store)."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cli.textable import format_table
from bench.escape import terminal_text


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "url", required=True, help="Store URL: a folder, s3://bucket/prefix, gs://..., hf://...")
@click.option("--sign", "key_file", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Private key (bench keys new) to sign each published run with.")
def upload(run_dirs, url, key_file):
    """Validate, redact and publish RUN_DIR... to the store at URL (and sign them with --sign)."""
    from bench.store import upload as upload_runs

    signer = None
    if key_file is not None:
        from bench.store.signing import load_signer

        signer = load_signer(key_file)  # before anything is uploaded: a bad key uploads nothing
    for done in upload_runs(list(run_dirs), url, signer=signer):
        verb = "published" if done.status == "published" else "already there"
        signed = f"; signed by key {done.signed_by}" if done.signed_by else ""
        click.echo(terminal_text(f"{verb}: {done.run_id} ({done.n_files} files, {done.size_bytes} bytes) "
                                 f"from {done.source}{signed}"))
        if done.note:  # why it added no points to the shared table
            click.echo(f"  {terminal_text(done.note)}", err=True)


@click.command()
@click.argument("url")
@click.option("--hardware", default=None, help="Only runs on this hardware id.")
@click.option("--model", default=None, help="Only runs of this model key.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local folder (default: $BENCH_CACHE_DIR/runs or ~/.cache/bench/runs).")
def pull(url, hardware, model, dest):
    """Copy published runs from URL into a local cache, verifying every checksum."""
    from bench.store import default_cache_dir
    from bench.store import pull as pull_runs

    dest = dest or default_cache_dir()
    skipped: list[str] = []
    paths = pull_runs(url, dest, hardware=hardware, model=model, skipped=skipped)
    for path in paths:
        click.echo(terminal_text(path))
    for reason in skipped:  # run ids and reasons come from the store: shown, never obeyed by the terminal
        click.echo(f"bench: skipped: {terminal_text(reason)}", err=True)
    click.echo(f"{len(paths)} run(s) in {dest}" + (f"; {len(skipped)} refused (see above)" if skipped else ""), err=True)
    if skipped:
        raise SystemExit(1)


@click.command()
@click.argument("url")
def ls(url):
    """List the runs published at URL."""
    from bench.redact import redact_text
    from bench.store import ls as list_runs

    refused: list[str] = []
    rows = list_runs(url, refused=refused)
    columns = ["run_id", "date", "model", "hardware", "n_gpus", "engine", "harness_version", "status", "n_points"]
    click.echo(format_table(rows, columns) if rows else f"no published runs at {terminal_text(redact_text(url))}")
    for reason in refused:
        click.echo(f"bench: skipped: {terminal_text(reason)}", err=True)
