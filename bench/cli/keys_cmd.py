"""`bench keys`: ed25519 key pairs for signed uploads (bench.store.signing)."""

from __future__ import annotations

from pathlib import Path

import click

from bench.escape import terminal_text


@click.group()
def keys():
    """Key pairs that sign uploads (bench upload --sign) and that readers trust (--trust)."""


@keys.command("new")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for NAME.key (private, mode 0600) and NAME.pub (public).")
@click.option("--name", default=None, help="File name stem [bench-<key id>].")
def new(out_dir, name):
    """Write a new key pair and print its key id."""
    from bench.store.signing import new_key_pair

    key_id, private, public = new_key_pair(out_dir, name)
    click.echo(key_id)
    click.echo(f"private key: {private} (keep it secret: bench upload --sign {private})", err=True)
    click.echo(f"public key: {public} (give it to readers: --trust {public})", err=True)


def trust_option(f):
    """`--trust KEYS`, shared by the commands that read a store's points."""
    return click.option(
        "--trust", "trust", multiple=True, type=click.Path(exists=True, path_type=Path),
        help="Public key file (.pub) or folder of them (repeatable): show only runs signed by one of these "
             "keys; the others are counted and named as excluded.")(f)


def load_trust(paths) -> object | None:
    """The trusted keys of `--trust` (None when not given)."""
    if not paths:
        return None
    from bench.store.signing import load_trusted

    return load_trusted(list(paths))


def echo_excluded(excluded: list[str]) -> None:
    """Each run `--trust` left out, then their count (stderr)."""
    for reason in excluded:
        click.echo(f"bench: excluded: {terminal_text(reason)}", err=True)
    if excluded:
        click.echo(f"{len(excluded)} run(s) excluded: not signed by a trusted key (see above)", err=True)
