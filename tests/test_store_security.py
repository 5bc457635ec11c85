"""The shared store is untrusted input: planted manifests, edited file lists, paths that
leave their root, symlinks out of a run folder (issue 11, defect 1)."""

from __future__ import annotations

import io
import json
import os
import shutil
import string
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from result_factory import make_run

from bench.cli import cli
from bench.errors import ResultError, StoreError
from bench.results import read_summary
from bench.safepath import UnsafePath, check_rel_path, check_run_id, inside
from bench.store import MANIFEST_FILE, Store, prepare, pull, upload
from bench.store.manifest import check_manifest, content_digest

PLANTED = "../../../../PWNED_pull.txt"


def _published(tmp_path):
    url = str(tmp_path / "store")
    [done] = upload([make_run(tmp_path / "runs", concurrencies=(1,))], url)
    return url, done.run_id


def _rewrite_manifest(url, run_id, edit, rehash: bool) -> str:
    """Edit a published manifest; with rehash, as a careful attacker would: the content hash
    and the run id (its folder) follow the edited file list. Returns the run's folder name."""
    s = Store(url)
    path = s.path("runs", run_id, MANIFEST_FILE)
    manifest = json.loads(s.fs.cat_file(path))
    edit(manifest)
    if rehash:
        manifest["content_sha256"] = content_digest(manifest["files"])
        if manifest["run_id"] == run_id:
            manifest["run_id"] = run_id[:-12] + manifest["content_sha256"][:12]
    s.fs.pipe_file(path, json.dumps(manifest).encode())
    if rehash and manifest["run_id"] != "other":
        s.fs.mv(s.path("runs", run_id), s.path("runs", manifest["run_id"]), recursive=True)
        return manifest["run_id"]
    return run_id


def test_planted_traversal_entry_is_refused_and_nothing_leaves_dest(tmp_path):
    url, run_id = _published(tmp_path)
    secret = tmp_path / "PWNED_pull.txt"  # what the planted entry points at, outside the store
    secret.write_text("outside the store\n")
    sha = __import__("hashlib").sha256(secret.read_bytes()).hexdigest()

    def plant(m):
        m["files"].append({"path": PLANTED, "size": secret.stat().st_size, "sha256": sha})

    _rewrite_manifest(url, run_id, plant, rehash=True)  # a careful attacker keeps the hash consistent
    dest = tmp_path / "deep" / "er" / "dest"
    before = sorted(p for p in tmp_path.rglob("*") if "PWNED" in p.name)
    with pytest.raises(StoreError, match=r"refused manifest: .*'\.\.'"):
        pull(url, dest)
    assert sorted(p for p in tmp_path.rglob("*") if "PWNED" in p.name) == before
    assert not any(dest.rglob("*.txt"))

    res = CliRunner().invoke(cli, ["pull", url, "--dest", str(dest)])
    assert res.exit_code != 0
    assert "refused manifest" in res.output and "Traceback" not in res.output


def test_file_list_edited_after_publication_is_refused_before_any_fetch(tmp_path, monkeypatch):
    url, run_id = _published(tmp_path)
    _rewrite_manifest(url, run_id, lambda m: m["files"].pop(0), rehash=False)
    fetched = []
    monkeypatch.setattr(Store, "_io", lambda self, what, fn, *a, **k: (fetched.append(what), fn(*a))[1])
    with pytest.raises(StoreError, match="does not match its content_sha256"):
        pull(url, tmp_path / "dest")
    assert "read" not in fetched  # only the manifest was read


@pytest.mark.parametrize("edit, why", [
    (lambda m: m.update(run_id="other"), "not the folder"),
    (lambda m: m["files"][0].update(size=True), "size"),
    (lambda m: m["files"][0].update(sha256="x" * 64), "sha256"),
    (lambda m: m["files"].append(dict(m["files"][0])), "twice"),
    (lambda m: m["files"][0].update(path="/etc/passwd"), "absolute"),
    (lambda m: m["files"][0].update(path="C:evil"), "drive"),
    (lambda m: m["files"][0].update(path="requests\\..\\..\\x"), "absolute path or drive letter"),
])
def test_malformed_manifests_are_refused(tmp_path, edit, why):
    url, run_id = _published(tmp_path)
    run_id = _rewrite_manifest(url, run_id, edit, rehash=True)
    with pytest.raises(StoreError, match=why):
        Store(url).read_manifest(run_id)


def test_run_json_pointing_outside_its_run_is_refused_on_pull(tmp_path):
    """The run.json inside the store is covered by the manifest, but its `requests_file`
    is read later by every reader: the schema itself refuses a path that leaves the run."""
    url, run_id = _published(tmp_path)
    s = Store(url)
    rj = s.path("runs", run_id, "run.json")
    data = json.loads(s.fs.cat_file(rj))
    data["points"][0]["requests_file"] = "../../secret.parquet"
    body = json.dumps(data).encode()
    s.fs.pipe_file(rj, body)
    sha = __import__("hashlib").sha256(body).hexdigest()

    def fix(m):
        for e in m["files"]:
            if e["path"] == "run.json":
                e.update(size=len(body), sha256=sha)

    _rewrite_manifest(url, run_id, fix, rehash=True)
    with pytest.raises(StoreError, match="requests_file"):
        pull(url, tmp_path / "dest")


def test_upload_refuses_a_requests_file_outside_the_run(tmp_path):
    run = make_run(tmp_path / "runs", concurrencies=(1,))
    (tmp_path / "runs" / "secret.txt").write_text("AWS_SECRET_ACCESS_KEY=x\n")
    data = json.loads((run / "run.json").read_text())
    data["points"][0]["requests_file"] = "../secret.txt"
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="requests_file"):
        upload([run], str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_upload_refuses_symlinks_out_of_the_run(tmp_path):
    run = make_run(tmp_path / "runs", concurrencies=(1,))
    outside = tmp_path / "credentials"
    outside.write_text("[default]\naws_secret_access_key = x\n")
    os.symlink(outside, run / "notes.txt")
    with pytest.raises(StoreError, match="symbolic link"):
        prepare(run)


def test_reader_refuses_requests_file_outside_the_run(tmp_path):
    run = make_run(tmp_path / "runs", concurrencies=(1,))
    data = json.loads((run / "run.json").read_text())
    data["points"][0]["requests_file"] = "/etc/passwd"
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(ResultError, match="requests_file"):
        read_summary(run)


@pytest.mark.parametrize("bad", [
    "", "..", ".", "../x", "a/../../b", "/abs", "C:\\x", "c:rel", "a\\b", "a//b", "a/./b", ".hidden",
    "a/.git/config", "a\x00b", "a\nb", "requests/", "x" * 2000, None, 3, ["a"],
])
def test_check_rel_path_refuses(bad):
    with pytest.raises(UnsafePath):
        check_rel_path(bad)


@pytest.mark.parametrize("good", ["run.json", "requests/abc_c1_r0.parquet", "engine-tiny-llama-1a2b3c4d.log",
                                  "power.parquet", "server_metrics.parquet",
                                  "requests/m-x_rnd-i128-o64_rps2.5-gamma0.5_r1.parquet"])
def test_check_rel_path_accepts_what_bench_writes(good):
    assert check_rel_path(good) == good


def test_run_ids():
    assert check_run_id("20261125-tiny-llama-cpu-host-0123456789ab")
    for bad in ("..", "../x", "a/b", "", ".x", "-x", "a b", None):
        with pytest.raises(UnsafePath):
            check_run_id(bad)


# -- properties: never an unhandled exception, never a path outside its root ------------------

_path_chars = st.text(alphabet=string.ascii_letters + string.digits + "./\\:-_ \x00\n~%", max_size=40)


@settings(deadline=None)
@given(rel=st.one_of(_path_chars, st.text(max_size=40)))
def test_accepted_paths_stay_inside_their_root(tmp_path_factory, rel):
    root = tmp_path_factory.getbasetemp() / "root"
    try:
        path = inside(root, rel)
    except UnsafePath:
        return
    real_root = os.path.realpath(root)
    assert os.path.commonpath([real_root, os.path.realpath(path)]) == real_root
    assert ".." not in rel.split("/") and not rel.startswith("/")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_entry = st.fixed_dictionaries({"path": _path_chars, "size": st.integers(-2, 10), "sha256": st.sampled_from(["0" * 64, "z"])})


@settings(deadline=None)
@given(manifest=st.one_of(_json, st.fixed_dictionaries({
    "run_id": st.sampled_from(["r-000000000000", "../r"]),
    "files": st.lists(_entry, max_size=4),
    "content_sha256": st.sampled_from(["0" * 64, "x"]),
})))
def test_manifest_check_only_raises_store_errors(manifest):
    try:
        checked = check_manifest(manifest, "r-000000000000", "store")
    except StoreError:
        return
    for entry in checked.files:  # anything accepted is safe to join under a root
        check_rel_path(entry.path)


def test_a_refused_run_never_hides_the_others(tmp_path):
    url, bad_id = _published(tmp_path)
    [good] = upload([make_run(tmp_path / "runs", concurrencies=(1,), hardware="b200")], url)
    _rewrite_manifest(url, bad_id, lambda m: m["files"][0].update(path=PLANTED), rehash=True)
    skipped: list[str] = []
    got = pull(url, tmp_path / "dest", skipped=skipped)
    assert [p.name for p in got] == [good.run_id]
    assert len(skipped) == 1 and "refused manifest" in skipped[0]
    res = CliRunner().invoke(cli, ["ls", url])
    assert good.run_id in res.output and "bench: skipped:" in res.output


@pytest.mark.parametrize("field,value", [("models", 5), ("models", [1]), ("hardware", {"a": 1})])
def test_a_manifest_field_of_another_type_is_refused_not_a_crash(tmp_path, field, value):
    """The descriptive fields are outside the content hash: a planted `models: 5` once crashed
    `bench ls` and `bench pull --model` (TypeError); now the run is refused, one line, the others listed."""
    url, bad_id = _published(tmp_path)
    [good] = upload([make_run(tmp_path / "runs", concurrencies=(1,), hardware="b200")], url)
    _rewrite_manifest(url, bad_id, lambda m: m.update({field: value}), rehash=False)
    skipped: list[str] = []
    got = pull(url, tmp_path / "dest", model="tiny-llama", skipped=skipped)
    assert [p.name for p in got] == [good.run_id]
    assert len(skipped) == 1 and f"refused manifest: {field}" in skipped[0]
    res = CliRunner().invoke(cli, ["ls", url])
    assert res.exit_code == 0 and good.run_id in res.output and "bench: skipped:" in res.output, res.output
    assert "Traceback" not in res.output


# -- flipped bits: page checksums at upload, the manifest's sha256 on read (issue 18, defect 6) --

REAL_RUN = Path(__file__).resolve().parents[1] / "results" / "cpu-host" / "20261201T185836Z_run-tiny-llama"
FLIPS = 20


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def _tail_flips_refused(data: bytes, columns: list[int]) -> int:
    """How many single-bit flips in the last byte of COLUMNS' data pages (a page body, never a
    page header) a checksum-verifying read refuses; there are 8 a column."""
    meta = pq.read_metadata(io.BytesIO(data))
    refused = 0
    for j in columns:
        chunk = meta.row_group(0).column(j)
        end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
        for pos in range(end - 1, end):
            for bit in range(8):
                try:
                    pq.read_table(io.BytesIO(_flip(data, pos, bit)), page_checksum_verification=True)
                except Exception:  # noqa: BLE001 - any refusal counts
                    refused += 1
    return refused


@pytest.mark.slow
def test_every_parquet_bench_writes_has_page_checksums(tmp_path):
    import pandas as pd

    from bench.run.scope import write_power
    from bench.store.costmodel import table_bytes
    from bench.store.points import run_point_files

    run = make_run(tmp_path / "runs", concurrencies=(1,), with_power=False)
    result = read_summary(run)
    write_power(run, [pd.DataFrame({"t_s": [0.0, 0.5, 1.0], "power_w": [100.0, 210.5, 190.25]})], result)
    [point_file] = run_point_files("20260115-tiny-llama-h100-sxm-0123456789ab", result).values()
    written = {
        "requests": (run / "requests" / "c0001.parquet").read_bytes(),
        "power": (run / "power.parquet").read_bytes(),
        "point file": point_file,
        "cost-model table": table_bytes(pd.read_parquet(io.BytesIO(point_file)))["parquet"],
    }
    for name, data in written.items():
        n_columns = pq.read_metadata(io.BytesIO(data)).num_columns
        columns = sorted({0, n_columns // 3, 2 * n_columns // 3, n_columns - 1})  # a file has checksums or not
        assert _tail_flips_refused(data, columns) == 8 * len(columns), name


def _real_run(tmp_path):
    """A copy of a committed CPU run whose request files bench writes again (as it writes them
    now); its largest request file's path."""
    from bench.results import read_requests, write_requests

    run = tmp_path / "run"
    shutil.copytree(REAL_RUN, run)
    result = read_summary(run)
    for point in result.points:
        if point.requests_file:
            write_requests(run, point.point_id, read_requests(run, point))
    return run, max((p.requests_file for p in result.points if p.requests_file), key=lambda r: (run / r).stat().st_size)


@pytest.mark.slow
def test_every_flipped_bit_of_a_request_parquet_is_refused_at_upload_or_on_read(tmp_path):
    """FLIPS random single-bit flips of a real request Parquet (95 kB, 132 rows). Before upload
    each is refused (page checksums, or the checks against run.json), or it changed no row
    (a footer byte no reader uses). After upload, in the store, each is refused on every
    read by the manifest's sha256."""
    import random

    run, rel = _real_run(tmp_path)
    path = run / rel
    good = path.read_bytes()
    rows = pq.read_table(io.BytesIO(good)).to_pylist()
    footer_at = len(good) - 8 - pq.read_metadata(io.BytesIO(good)).serialized_size
    url = str(tmp_path / "store")
    [done] = upload([run], url)
    stored = Path(url) / "runs" / done.run_id / rel
    rng = random.Random(17)
    at_upload = harmless = on_read = 0
    for _ in range(FLIPS):
        pos, bit = rng.randrange(len(good)), rng.randrange(8)
        bad = _flip(good, pos, bit)
        path.write_bytes(bad)
        try:
            prepare(run)
        except StoreError:
            at_upload += 1
        else:  # only a footer byte that changes no row gets through
            assert pos >= footer_at and pq.read_table(io.BytesIO(bad)).to_pylist() == rows, (pos, bit)
            harmless += 1
        stored.write_bytes(bad)
        with pytest.raises(StoreError, match=f"{rel} does not match its manifest checksum"):
            Store(url).read_checked_run(done.run_id)
        skipped: list[str] = []
        assert pull(url, tmp_path / "dest", skipped=skipped) == [] and "manifest checksum" in skipped[0]
        on_read += 1
    print(f"\n{FLIPS} flips: {at_upload} refused at upload, {harmless} harmless (footer, no row changed); "
          f"{on_read}/{FLIPS} refused on read after upload")
    assert at_upload + harmless == FLIPS and on_read == FLIPS
