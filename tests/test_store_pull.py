"""`bench ls` and `bench pull` read a published manifest as a typed object (bench.store.manifest.Manifest):
a manifest whose listing fields have the wrong types is refused with one line, like one whose
file list is wrong, and never crashes the listing or hides the other runs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from result_factory import make_run

from bench.cli import cli
from bench.store import MANIFEST_FILE, Store, ls, pull, upload


def _two_runs(tmp_path):
    url = str(tmp_path / "store")
    [a] = upload([make_run(tmp_path / "runs", concurrencies=(1,))], url)
    [b] = upload([make_run(tmp_path / "runs", concurrencies=(1,), hardware="b200")], url)
    return url, a.run_id, b.run_id


def _edit_manifest(url: str, run_id: str, **fields) -> None:
    """Change listing fields of a published manifest (its file list, so its content hash, unchanged)."""
    store = Store(url)
    path = store.path("runs", run_id, MANIFEST_FILE)
    manifest = json.loads(store.fs.cat_file(path))
    manifest.update(fields)
    store.fs.pipe_file(path, json.dumps(manifest).encode())


@pytest.mark.parametrize("fields", [{"created_utc": 20260101}, {"models": 5}, {"model": ["a"]}, {"n_points": "x"}])
def test_a_manifest_with_mistyped_fields_is_refused_not_a_crash(tmp_path, fields):
    """Defect: `bench ls` sliced created_utc ([:10] of an int: TypeError) and `bench pull --model`
    tested membership in `models` (an int: TypeError), so one planted manifest stopped both."""
    url, bad, good = _two_runs(tmp_path)
    _edit_manifest(url, bad, **fields)
    refused: list[str] = []
    assert [row["run_id"] for row in ls(url, refused=refused)] == [good]
    assert len(refused) == 1 and bad in refused[0] and "refused manifest" in refused[0]
    skipped: list[str] = []
    got = pull(url, tmp_path / "dest", model="tiny-llama", skipped=skipped)
    assert [p.name for p in got] == [good] and len(skipped) == 1
    res = CliRunner().invoke(cli, ["ls", url])
    assert res.exit_code == 0 and good in res.output and "bench: skipped:" in res.output, res.output


def test_ls_rows_read_the_typed_manifest(tmp_path):
    url, a, b = _two_runs(tmp_path)
    rows = {r["run_id"]: r for r in ls(url)}
    assert rows[b]["hardware"] == "b200" and rows[a]["model"] == "tiny-llama"
    assert rows[a]["n_points"] == 1 and len(rows[a]["date"]) == 10
