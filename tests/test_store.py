"""The shared store on a local folder and on a real S3 API (moto's server on loopback)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from result_factory import make_run as _make_run
from result_factory import upload_at_once

from bench import store as store_mod
from bench.cli import cli
from bench.errors import StoreError
from bench.store import MANIFEST_FILE, Store, ls, prepare, pull, upload


def make_run(root, **kw):
    """A small synthetic run (two load points) keeps the S3 round trips few."""
    return _make_run(root, **{"concurrencies": (1, 4), **kw})


@pytest.fixture
def local_store_url(tmp_path):
    """A fresh local store, for logic that does not depend on the backend (the S3 round
    trips above cover the backend-specific paths)."""
    return str(tmp_path / "store")


def _all_files(url: str) -> list[str]:
    s = Store(url)
    s.fs.invalidate_cache()
    try:
        return sorted(s.fs.find(s.root))
    except FileNotFoundError:
        return []


def test_upload_ls_pull_roundtrip(store_url, tmp_path):
    run = make_run(tmp_path / "runs", hardware="h100-sxm")
    [done] = upload([run], store_url)
    assert done.status == "published"
    rows = ls(store_url)
    assert [r["run_id"] for r in rows] == [done.run_id]
    assert rows[0]["hardware"] == "h100-sxm" and rows[0]["model"] == "tiny-llama"
    assert rows[0]["n_points"] == 2 and rows[0]["date"] == "2026-01-15"
    [local] = pull(store_url, tmp_path / "cache")
    assert local.name == done.run_id
    for rel in ("requests/c0001.parquet", "power.parquet", "engine.log"):
        assert (local / rel).read_bytes() == (run / rel).read_bytes()
    assert json.loads((local / "run.json").read_text())["points"] == json.loads((run / "run.json").read_text())["points"]


def test_duplicate_upload_is_a_noop(local_store_url, tmp_path):
    run = make_run(tmp_path / "runs")
    first = upload([run], local_store_url)[0]
    before = {p: Store(local_store_url).fs.cat_file(p) for p in _all_files(local_store_url)}
    second = upload([run], local_store_url)[0]
    assert (first.status, second.status) == ("published", "exists")
    assert second.run_id == first.run_id
    after = {p: Store(local_store_url).fs.cat_file(p) for p in _all_files(local_store_url)}
    assert after == before
    # a run pulled from the store and uploaded again is the same run
    [local] = pull(local_store_url, tmp_path / "cache")
    assert upload([local], local_store_url)[0].status == "exists"


@pytest.mark.slow
def test_run_id_is_content_derived(tmp_path):
    a = make_run(tmp_path / "a", name="r")
    b = make_run(tmp_path / "b", name="r")
    c = make_run(tmp_path / "c", name="r", speed=1.01)
    ida, idb, idc = prepare(a).run_id, prepare(b).run_id, prepare(c).run_id
    assert ida == idb != idc
    assert ida.startswith("20260115-tiny-llama-h100-sxm-")


@pytest.mark.slow
def test_malformed_runs_are_refused_and_nothing_uploaded(local_store_url, tmp_path):
    good = make_run(tmp_path / "runs", name="good")
    bad_json = make_run(tmp_path / "runs", name="badjson")
    (bad_json / "run.json").write_text("{not json")
    future = make_run(tmp_path / "runs", name="future")
    data = json.loads((future / "run.json").read_text())
    data["schema_version"] = 99
    (future / "run.json").write_text(json.dumps(data))
    stale = make_run(tmp_path / "runs", name="stale", status="running")  # no process holds it
    live = make_run(tmp_path / "runs", name="live", status="running")
    for bad, reason in ((bad_json, "not valid JSON"), (future, "unknown schema_version 99"),
                        (stale, "stale .* --resume"), (live, "still running")):
        with pytest.raises(StoreError, match=reason):
            if bad is live:
                from bench.run.lock import RunLock

                with RunLock(live):  # a live writer holds the folder
                    upload([good, bad], local_store_url)
            else:
                upload([good, bad], local_store_url)
    assert ls(local_store_url) == []
    assert _all_files(local_store_url) == []


def test_missing_request_file_is_refused(tmp_path):
    run = make_run(tmp_path / "runs")
    (run / "requests" / "c0004.parquet").unlink()
    with pytest.raises(StoreError, match="c0004"):
        prepare(run)


def test_interrupted_upload_is_invisible_and_can_be_retried(store_url, tmp_path, monkeypatch):
    run = make_run(tmp_path / "runs")
    real = Store._publish_file
    calls = []

    def flaky(self, staged, final, data):
        calls.append(final)
        if len(calls) == 3:
            raise ConnectionError("link dropped mid-copy")
        return real(self, staged, final, data)

    monkeypatch.setattr(Store, "_publish_file", flaky)
    with pytest.raises(ConnectionError):
        upload([run], store_url)
    assert any("/runs/" in p for p in _all_files(store_url))  # some files did land
    assert ls(store_url) == []
    assert pull(store_url, tmp_path / "cache") == []
    monkeypatch.setattr(Store, "_publish_file", real)
    [done] = upload([run], store_url)
    assert done.status == "published"
    assert [r["run_id"] for r in ls(store_url)] == [done.run_id]
    assert not [p for p in _all_files(store_url) if "/staging/" in p]
    [local] = pull(store_url, tmp_path / "cache")
    assert (local / MANIFEST_FILE).is_file()


def test_same_id_with_different_content_is_refused(local_store_url, tmp_path):
    run = make_run(tmp_path / "runs")
    [done] = upload([run], local_store_url)
    s = Store(local_store_url)
    path = s.path("runs", done.run_id, MANIFEST_FILE)
    manifest = json.loads(s.fs.cat_file(path))
    manifest["content_sha256"] = "0" * 64
    s.fs.pipe_file(path, json.dumps(manifest).encode())
    with pytest.raises(StoreError, match="different content .*content_sha256"):
        upload([run], local_store_url)


def test_pull_verifies_checksums_filters_and_caches(local_store_url, tmp_path, monkeypatch):
    h100 = make_run(tmp_path / "runs", hardware="h100-sxm")
    b200 = make_run(tmp_path / "runs", hardware="b200", model="tiny-qwen3-moe")
    ids = {d.source.name: d.run_id for d in upload([h100, b200], local_store_url)}
    got = pull(local_store_url, tmp_path / "cache", hardware="b200")
    assert [p.name for p in got] == [ids[b200.name]]
    assert pull(local_store_url, tmp_path / "cache", model="tiny-llama")[0].name == ids[h100.name]
    assert pull(local_store_url, tmp_path / "cache", hardware="b200", model="tiny-llama") == []

    reads = []
    with monkeypatch.context() as m:
        m.setattr(Store, "read_file", lambda self, *a, **k: reads.append(a))
        pull(local_store_url, tmp_path / "cache")
    assert reads == []  # both runs already complete in the cache

    s = Store(local_store_url)
    s.fs.pipe_file(s.path("runs", ids[h100.name], "engine.log"), b"tampered\n")
    with pytest.raises(StoreError, match="checksum"):
        pull(local_store_url, tmp_path / "fresh", hardware="h100-sxm")


@pytest.mark.slow
def test_concurrent_writers_keep_every_run_intact(store_url, tmp_path):
    runs = [make_run(tmp_path / "runs", hardware=hw, speed=1 + i / 10) for i, hw in enumerate(["h100-sxm", "b200", "mi300x"])]
    jobs = runs + [runs[0], runs[0]]  # three distinct runs, one of them three times at once
    results, errors = upload_at_once(jobs, store_url, timeout_s=60)
    assert errors == []
    assert len({r.run_id for r in results}) == 3
    assert sum(r.status == "published" for r in results) >= 3
    listed = ls(store_url)
    assert len(listed) == 3
    pulled = pull(store_url, tmp_path / "cache")
    assert len(pulled) == 3  # pull re-verifies every sha256 against the manifests
    by_hw = {json.loads((p / "run.json").read_text())["config"]["hardware_id"]: p for p in pulled}
    for run in runs:
        hw = json.loads((run / "run.json").read_text())["config"]["hardware_id"]
        assert (by_hw[hw] / "power.parquet").read_bytes() == (run / "power.parquet").read_bytes()


def test_secrets_never_reach_the_store(local_store_url, tmp_path):
    token = "hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
    run = make_run(tmp_path / "runs", engine_args={"hf_token": token, "max_num_batched_tokens": 8192,
                                                    "api_key": "plainsecretvalue"})
    (run / "engine.log").write_text(f"INFO args: --api-key sk-{'x' * 24} HF_TOKEN={token}\n")
    [done] = upload([run], local_store_url)
    s = Store(local_store_url)
    blob = b"".join(s.fs.cat_file(p) for p in _all_files(local_store_url))
    assert token.encode() not in blob and b"plainsecretvalue" not in blob and b"sk-xxxx" not in blob
    stored = s.read_run(done.run_id)
    assert stored.config.engine_args["max_num_batched_tokens"] == 8192
    assert stored.config.engine_args["hf_token"] == "<redacted>"


def test_storage_options_from_env(monkeypatch):
    monkeypatch.setenv("BENCH_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BENCH_STORE_OPTIONS", '{"anon": false}')
    opts = store_mod.storage_options_for("s3://b/x", {"key": "k"})
    assert opts == {"anon": False, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "key": "k"}
    monkeypatch.setenv("BENCH_STORE_OPTIONS", "[not json")
    with pytest.raises(StoreError, match="BENCH_STORE_OPTIONS"):
        store_mod.storage_options_for("s3://b/x")


def test_cli_upload_ls_pull(store_url, tmp_path):
    run = make_run(tmp_path / "runs")
    runner = CliRunner()
    res = runner.invoke(cli, ["upload", str(run), "--to", store_url])
    assert res.exit_code == 0, res.output
    assert "published:" in res.output
    res = runner.invoke(cli, ["ls", store_url])
    assert res.exit_code == 0 and "tiny-llama" in res.output and "h100-sxm" in res.output
    res = runner.invoke(cli, ["pull", store_url, "--dest", str(tmp_path / "c"), "--hardware", "h100-sxm"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "c").iterdir())) == 1
    (run / "run.json").write_text("{}")
    res = runner.invoke(cli, ["upload", str(run), "--to", store_url])
    assert res.exit_code != 0 and res.output.startswith("bench: error: refused:")


@pytest.mark.slow
def test_costmodel_written_back_to_the_store_loads_with_pandas(store_url, tmp_path):
    import pandas as pd

    from bench.store.costmodel import build

    upload([make_run(tmp_path / "runs", concurrencies=(1, 4))], store_url)
    first = build(store_url, out_dir=tmp_path / "a")
    second = build(store_url, out_dir=tmp_path / "b")
    for name in ("costmodel.parquet", "costmodel.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    s = Store(store_url)
    assert s.fs.cat_file(s.path("costmodel", "costmodel.parquet")) == (tmp_path / "a" / "costmodel.parquet").read_bytes()
    url = f"{store_url}/costmodel/costmodel.parquet"
    options = {"client_kwargs": {"endpoint_url": os.environ["BENCH_S3_ENDPOINT_URL"]}} if url.startswith("s3") else None
    frame = pd.read_parquet(url, storage_options=options)
    assert len(frame) == len(first.table) == len(second.table) == 2
    assert not [p for p in _all_files(store_url) if "/staging/" in p]


def count_s3_requests(monkeypatch) -> list[str]:
    """Every S3 API call s3fs makes from now on, by operation name (the wrapper forwards each);
    the store's and costmodel's tests count round trips with it."""
    import s3fs

    calls: list[str] = []
    real = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        calls.append(method if isinstance(method, str) else getattr(method, "__name__", str(method)))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    return calls


def test_an_s3_upload_and_read_cost_few_requests_a_file(s3_url, tmp_path, monkeypatch):
    """Round trips are what an object store charges in time: a file is written to staging,
    read back, stated, copied into place and read back (5 requests, plus a few for the run:
    its manifest looked up, its staging folder listed and deleted at once), and a published
    file is read in one ranged GET (no stat first). fe7b476 made 11 a file."""
    run = make_run(tmp_path / "runs")
    calls = count_s3_requests(monkeypatch)
    [done] = upload([run], s3_url)
    n_files = done.n_files + 1 + done.point_files  # the run's files, its manifest, its point files
    assert len(calls) <= 5 * n_files + 10, sorted(calls)
    store = Store(s3_url)
    calls.clear()
    [manifest] = store.manifests()  # the runs from one listing (a glob listed each run's folder), then one GET each
    assert calls == ["list_objects_v2", "get_object"]
    calls.clear()
    for entry in manifest.files:
        store.read_file(done.run_id, entry.path, manifest)
    assert calls == ["get_object"] * len(manifest.files)
    calls.clear()
    store.put_bytes("costmodel/x.csv", b"a,b\n")  # a store-level file (the table, a compacted file)
    assert calls == ["put_object", "get_object", "head_object", "copy_object", "get_object", "delete_object"]


def test_a_failed_remote_read_is_reported_at_once(s3_url, tmp_path, monkeypatch):
    """A GET the store fails (after botocore's own retries) is a one-line StoreUnavailable
    at once: no stat is sent after it to wait out the same outage again."""
    from bench.errors import StoreUnavailable

    [done] = upload([make_run(tmp_path / "runs")], s3_url)
    store = Store(s3_url)
    manifest = store.read_manifest(done.run_id)
    stats = []
    monkeypatch.setattr(store.fs, "size", lambda path: stats.append(path) or 0)
    monkeypatch.setattr(store.fs, "cat_file", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("link down")))
    with pytest.raises(StoreUnavailable, match="read failed: ConnectionError: link down") as err:
        store.read_file(done.run_id, "run.json", manifest)
    assert stats == [] and "\n" not in str(err.value)
