"""Untrusted store files are read within bounds (issue 17, defect 4): nesting and size limits
on every JSON, Parquet footers checked before any column is read, a manifest's size bounding
its file's read, regular files only in a local store (no FIFO, no symbolic link), and
writes that stay inside the store."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from result_factory import make_run

from bench.cli import cli
from bench.errors import StoreError
from bench.store import MANIFEST_FILE, Store, pull, upload
from bench.store.bounded import (
    MAX_JSON_DEPTH,
    ParquetLimits,
    json_depth,
    load_json,
    read_local,
    read_parquet,
)
from bench.store.costmodel import build
from bench.store.manifest import content_digest
from bench.store.query import compare_points

REPO = Path(__file__).resolve().parents[1]


def _published(tmp_path, **kw):
    url = str(tmp_path / "store")
    [done] = upload([make_run(tmp_path / "runs", **{"concurrencies": (1,), **kw})], url)
    return url, done.run_id


def _plant(url: str, run_id: str, rel: str, content: bytes, write=None) -> str:
    """Replace one file of a published run as a careful attacker would: the manifest's size
    and sha256 of it say CONTENT, its content hash and run id (folder) follow. WRITE(path)
    puts something else on disk in its place (a FIFO, a link). Returns the new run id."""
    runs = Path(url) / "runs"
    manifest = json.loads((runs / run_id / MANIFEST_FILE).read_text())
    for entry in manifest["files"]:
        if entry["path"] == rel:
            entry.update(size=len(content), sha256=hashlib.sha256(content).hexdigest())
    manifest["content_sha256"] = content_digest(manifest["files"])
    manifest["run_id"] = run_id[:-12] + manifest["content_sha256"][:12]
    folder = runs / manifest["run_id"]
    os.rename(runs / run_id, folder)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    (folder / rel).unlink()
    if write is None:
        (folder / rel).write_bytes(content)
    else:
        write(folder / rel)
    return manifest["run_id"]


def _bench(args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    """`bench ARGS` in a child process: a read that blocks fails the test at TIMEOUT_S, never hangs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bench", *args], check=False, capture_output=True, text=True,
                          timeout=timeout_s, env=env, cwd=REPO)


# -- JSON: nesting and size ---------------------------------------------------------------

def test_a_deeply_nested_manifest_is_one_refusal_for_ls_pull_and_build(tmp_path):
    url, good = _published(tmp_path)
    planted = Path(url) / "runs" / "20260101-x-y-000000000000"
    planted.mkdir()
    (planted / MANIFEST_FILE).write_bytes(b"[" * 400_000)  # 400 kB: json.loads recursed until RecursionError
    for args in (["ls", url], ["pull", url, "--dest", str(tmp_path / "dest")], ["costmodel", "build", "--store", url]):
        res = CliRunner().invoke(cli, args)
        assert "Recursion" not in res.output and "internal error" not in res.output, (args, res.output)
        assert f"nested deeper than {MAX_JSON_DEPTH} levels" in res.output, (args, res.output)
        assert "20260101-x-y-000000000000" in res.output
    assert (tmp_path / "dest" / good).is_dir()  # the other run still came


@pytest.mark.slow
def test_a_nested_compacted_footer_does_not_stop_query_or_compare(tmp_path):
    url, _ = _published(tmp_path, concurrencies=(1, 4))
    build(url)
    query = ["costmodel", "query", "--store", url, "--where", "model=tiny-llama"]
    before = CliRunner().invoke(cli, query)
    assert before.exit_code == 0
    path = next((Path(url) / "costmodel" / "compacted").rglob("compacted.parquet"))
    table = pq.read_table(path)
    nested = b"[" * 100_000 + b"]" * 100_000
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"bench.covered_runs": nested}), path)
    after = CliRunner().invoke(cli, query)
    assert after.exit_code == 0, after.output
    assert after.stdout == before.stdout  # the point files are read instead
    assert len(compare_points(url, "tiny-llama").table) == 2  # bench compare --store's read


@settings(deadline=None)
@given(depth=st.integers(0, 3 * MAX_JSON_DEPTH), inner=st.sampled_from(["[", "{\"k\":"]),
       pad=st.text(alphabet="[]{}\"\\ax", max_size=20))
def test_json_nesting_is_refused_past_the_limit_and_parsed_within(depth, inner, pad):
    closer = {"[": "]", "{\"k\":": "}"}[inner]
    text = inner * depth + json.dumps(pad) + closer * depth  # brackets inside the string do not count
    if depth <= MAX_JSON_DEPTH:
        assert load_json(text, "f", 1 << 20) == json.loads(text)
    else:
        with pytest.raises(StoreError, match=f"f: refused: JSON nested deeper than {MAX_JSON_DEPTH}"):
            load_json(text, "f", 1 << 20)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=30,
)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(deadline=None)
@given(value=_json)
def test_the_bracket_scan_measures_the_depth_json_has(value):
    assert json_depth(json.dumps(value).encode(), 10_000) == _depth(value)
    assert load_json(json.dumps(value), "f", 1 << 20) == value


@settings(deadline=None)
@given(data=st.binary(max_size=300) | st.text(alphabet="[]{}\",:\\0123 tfnulrae", max_size=300).map(str.encode),
       limit=st.integers(0, 400))
def test_any_bytes_are_a_value_or_one_line_refusal(data, limit):
    try:
        load_json(data, "store/runs/x/run.json", limit)
    except StoreError as e:
        assert "\n" not in str(e) and str(e).startswith("store/runs/x/run.json: refused: ")
        return
    assert len(data) <= limit


# -- Parquet: footers first ---------------------------------------------------------------

def _constant_parquet(rows: int, columns: int = 20) -> bytes:
    """A few hundred kB of Parquet that decodes to rows x columns x 8 bytes (constant values:
    dictionary and run-length encoding make them almost free on disk)."""
    chunk = max(1, min(rows, 250_000))
    batch = pa.table({f"x{i}": pa.array([7] * chunk, pa.int64()) for i in range(columns)})
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, batch.schema, compression="zstd") as writer:
        for start in range(0, rows, chunk):
            writer.write_table(batch.slice(0, min(chunk, rows - start)))
    return buf.getvalue()


# VmHWM, this process's own peak: ru_maxrss keeps the parent's peak across the exec (Linux
# carries the old image's high-water mark over), so under a grown pytest it read 1.3 GB
_PEAK_RSS = """
import re, sys
from bench.store import pull
skipped = []
pull(sys.argv[1], sys.argv[2], skipped=skipped)
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) // 1024)
print(*skipped, sep="\\n")
"""


@pytest.mark.slow
def test_a_parquet_that_decodes_to_gigabytes_is_refused_before_its_columns_are_read(tmp_path):
    url, run_id = _published(tmp_path)
    bomb = _constant_parquet(6_000_000)  # 960 MB decoded from
    assert len(bomb) < 1 << 20
    run_id = _plant(url, run_id, "requests/c0001.parquet", bomb)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, url, str(tmp_path / "dest")], capture_output=True,
                         text=True, timeout=300, env=env, check=True).stdout.splitlines()
    peak_mb, reasons = int(out[0]), out[1:]
    assert len(reasons) == 1 and "Parquet of 6000000 rows, more than the limit of 2000000" in reasons[0], reasons
    print(f"peak {peak_mb} MB")
    assert peak_mb < 500, f"peak {peak_mb} MB: the columns were decoded"  # 1.3 GB before the footer check
    assert not (tmp_path / "dest" / run_id).exists()


@settings(deadline=None)
@given(rows=st.integers(0, 3000), max_rows=st.integers(0, 3000))
def test_a_footer_over_a_limit_is_refused_and_one_within_reads(rows, max_rows):
    data = _constant_parquet(rows, columns=2)
    limits = ParquetLimits(max_rows=max_rows)
    if rows > max_rows:
        with pytest.raises(StoreError, match=f"f: refused: Parquet of {rows} rows, more than the limit"):
            read_parquet(data, "f", limits)
    else:
        assert read_parquet(data, "f", limits).num_rows == rows


_VALID = _constant_parquet(100, columns=3)


@settings(deadline=None)
@given(data=st.binary(max_size=400) | st.builds(lambda at, bit: bytes(
    b ^ (1 << bit) if i == at % len(_VALID) else b for i, b in enumerate(_VALID)), st.integers(0, 10**6), st.integers(0, 7)))
def test_any_bytes_read_as_a_table_or_one_line_refusal(data):
    try:
        table = read_parquet(data, "store/f.parquet", ParquetLimits(max_rows=1000))
    except StoreError as e:
        assert "\n" not in str(e) and str(e).startswith("store/f.parquet: ")
        return
    assert table.num_rows <= 1000


# -- a file's size comes from its manifest --------------------------------------------------

def test_the_manifest_size_bounds_every_read(store_url, tmp_path):
    [done] = upload([make_run(tmp_path / "runs", concurrencies=(1,))], store_url)
    s = Store(store_url)
    log = s.path("runs", done.run_id, "engine.log")
    s.fs.pipe_file(log, s.fs.cat_file(log) + b"x" * (4 << 20))  # grown after publication
    skipped: list[str] = []
    assert pull(store_url, tmp_path / "dest", skipped=skipped) == []
    [reason] = skipped
    assert f"run {done.run_id}: engine.log: refused: " in reason and "bytes, its manifest says" in reason


# -- local stores: regular files only ---------------------------------------------------------

@pytest.mark.slow
def test_a_fifo_named_run_json_does_not_hang_pull(tmp_path):
    url, run_id = _published(tmp_path)
    content = (Path(url) / "runs" / run_id / "run.json").read_bytes()
    run_id = _plant(url, run_id, "run.json", content, write=os.mkfifo)
    res = _bench(["pull", url, "--dest", str(tmp_path / "dest")])
    assert res.returncode == 1
    assert f"run {run_id}: run.json: refused: not a regular file" in res.stderr


@pytest.mark.slow
def test_a_fifo_among_point_files_does_not_hang_query(tmp_path):
    url, _ = _published(tmp_path)
    [partition] = [p for p in (Path(url) / "costmodel" / "points").glob("*/*")]
    os.mkfifo(partition / "20260101-x-y-000000000000.parquet")
    res = _bench(["costmodel", "query", "--store", url, "--where", "model=tiny-llama"])
    assert res.returncode == 0, res.stderr
    assert "1 rows; read 1 files" in res.stderr


def test_a_symbolic_link_in_a_local_store_is_not_followed(tmp_path):
    url, run_id = _published(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("aws_secret_access_key = x\n")
    run_id = _plant(url, run_id, "engine.log", secret.read_bytes(), write=lambda p: os.symlink(secret, p))
    skipped: list[str] = []
    assert pull(url, tmp_path / "dest", skipped=skipped) == []
    assert "engine.log: refused: not a regular file" in skipped[0]
    assert not list((tmp_path / "dest").rglob("engine.log"))
    # a linked run folder is not listed at all
    os.symlink(Path(url) / "runs" / run_id, Path(url) / "runs" / "20260101-link-y-000000000000")
    assert Store(url).published_run_ids() == [run_id]


@pytest.mark.slow
def test_compaction_writes_only_inside_the_store(tmp_path):
    url, _ = _published(tmp_path)
    build(url)
    partition = next((Path(url) / "costmodel" / "compacted").glob("hardware=*"))
    outside = tmp_path / "outside"
    os.rename(partition, outside)
    os.symlink(outside, partition)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    upload([make_run(tmp_path / "more", concurrencies=(2,))], url)  # the partition's file is rewritten
    res = CliRunner().invoke(cli, ["costmodel", "build", "--store", url])
    # the partition is left out with one line (exit 1: something skipped), never written through the link
    assert res.exit_code == 1 and "resolves outside the store (a symbolic link); not written" in res.output, res.output
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


@settings(deadline=None, max_examples=20)
@given(kind=st.sampled_from(["file", "fifo", "link", "dir", "missing", "linked-dir"]), size=st.integers(0, 64),
       expect=st.none() | st.integers(0, 64))
def test_a_local_read_is_bytes_or_one_line_refusal(tmp_path_factory, kind, size, expect):
    root = tmp_path_factory.mktemp("store")
    (root / "d").mkdir()
    target = root / "d" / "f"
    {"file": lambda: target.write_bytes(b"x" * size), "fifo": lambda: os.mkfifo(target),
     "link": lambda: os.symlink(root / "elsewhere", target), "dir": target.mkdir, "missing": lambda: None,
     "linked-dir": lambda: (os.rename(root / "d", root / "e"), os.symlink(root / "e", root / "d"),
                            (root / "e" / "f").write_bytes(b"x" * size))}[kind]()
    try:
        data = read_local(str(root), str(target), "f", 32, expect)
    except FileNotFoundError:
        assert kind == "missing"
        return
    except StoreError as e:
        assert "\n" not in str(e)
        return
    assert kind == "file" and data == b"x" * size and size <= 32 and expect in (None, size)
