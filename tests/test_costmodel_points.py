"""Point files: written at upload (deterministic name and bytes, never replaced, safe
partition folders), and compacted by `bench costmodel build` into the same table as before."""


from __future__ import annotations

import io
import json
import string

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from result_factory import make_run, upload_at_once
from test_store import count_s3_requests

from bench.errors import StoreError
from bench.safepath import check_rel_path
from bench.store import Store, upload
from bench.store.bounded import POINTS_LIMITS
from bench.store.costmodel import build, build_table, runs_from_store, table_bytes
from bench.store.points import (
    POINT_COLUMNS,
    POINTS_DIR,
    list_partitions,
    list_point_files,
    partition_of,
    partition_value,
    point_listing,
    run_point_files,
)

PARTITION = "hardware=h100-sxm/model=tiny-llama"


def _small(root, **kw):
    return make_run(root, **{"concurrencies": (1, 4), **kw})


def _files(url: str) -> dict[str, bytes]:
    s = Store(url)
    s.fs.invalidate_cache()
    return {p: s.fs.cat_file(p) for p in sorted(s.fs.find(s.root))}


def test_upload_writes_one_deterministic_point_file_per_partition(store_url, tmp_path):
    run = make_run(tmp_path / "runs", invalid={16: "client saturation"}, failed=(8,))
    [done] = upload([run], store_url)
    assert done.point_files == 1 and done.note is None
    s = Store(store_url)
    rel = f"{POINTS_DIR}/{PARTITION}/{done.run_id}.parquet"
    blob = s.get_bytes(rel)
    assert blob is not None
    # the bytes are a function of the published run alone: derived again from the store's run.json
    assert run_point_files(done.run_id, s.read_run(done.run_id)) == {rel: blob}
    table = pq.read_table(io.BytesIO(blob))
    assert table.column_names == POINT_COLUMNS
    assert set(pq.read_metadata(io.BytesIO(blob)).metadata) == {b"ARROW:schema"}  # no pandas block, no time
    rows = table.to_pylist()
    assert [r["point_id"] for r in rows] == ["c0001", "c0002", "c0004", "c0016"]  # ok points only, sorted
    assert [r["valid"] for r in rows] == [True, True, True, False]
    assert rows[-1]["invalid_reasons"] == "client saturation"
    assert rows[0]["run_n_points"] == 5 and rows[0]["run_n_valid_points"] == 3 and rows[0]["synthetic"] is True


def test_the_same_run_gives_the_same_bytes_in_another_store(tmp_path):
    run = _small(tmp_path / "runs")
    [a] = upload([run], str(tmp_path / "a"))
    [b] = upload([run], str(tmp_path / "b"))
    rel = f"{POINTS_DIR}/{PARTITION}/{a.run_id}.parquet"
    assert a.run_id == b.run_id
    assert Store(str(tmp_path / "a")).get_bytes(rel) == Store(str(tmp_path / "b")).get_bytes(rel)


def test_reupload_writes_nothing(store_url, tmp_path):
    run = _small(tmp_path / "runs")
    upload([run], store_url)
    before = _files(store_url)
    [again] = upload([run], store_url)
    assert again.status == "exists" and again.point_files == 1
    assert _files(store_url) == before


def test_a_point_file_of_the_same_rows_in_other_bytes_is_kept(local_store, tmp_path):
    [done] = upload([_small(tmp_path / "runs")], local_store)
    s = Store(local_store)
    rel = f"{POINTS_DIR}/{PARTITION}/{done.run_id}.parquet"
    buf = io.BytesIO()
    pq.write_table(pq.read_table(io.BytesIO(s.get_bytes(rel))), buf, compression="snappy")  # another writer's bytes
    s.fs.pipe_file(s.path(rel), buf.getvalue())
    assert upload([_small(tmp_path / "again")], local_store)[0].status == "exists"
    assert s.get_bytes(rel) == buf.getvalue()


def test_different_rows_under_the_same_run_id_are_refused(local_store, tmp_path):
    run = _small(tmp_path / "runs")
    [done] = upload([run], local_store)
    s = Store(local_store)
    rel = f"{POINTS_DIR}/{PARTITION}/{done.run_id}.parquet"
    table = pq.read_table(io.BytesIO(s.get_bytes(rel)))
    buf = io.BytesIO()
    pq.write_table(table.slice(0, 1), buf)
    s.fs.pipe_file(s.path(rel), buf.getvalue())
    with pytest.raises(StoreError, match="already exists with different content; refusing to overwrite") as err:
        upload([run], local_store)
    assert "\n" not in str(err.value)
    assert s.get_bytes(rel) == buf.getvalue()


@pytest.mark.slow
def test_parallel_uploads_to_one_partition_do_not_clash(store_url, tmp_path):
    runs = [_small(tmp_path / "runs", speed=1 + i / 10) for i in range(4)]
    results, errors = upload_at_once(runs, store_url)
    assert errors == []
    s = Store(store_url)
    files = list_point_files(s, PARTITION)
    assert sorted(files) == sorted(r.run_id for r in results) and len(files) == 4
    for done in results:  # each file is whole and holds its own run's rows only
        table = pq.read_table(io.BytesIO(s.get_bytes(f"{POINTS_DIR}/{PARTITION}/{done.run_id}.parquet")))
        assert set(table.column("run_id").to_pylist()) == {done.run_id} and table.num_rows == 2


@pytest.mark.parametrize("hardware, model", [("../../../../escape", "tiny-llama"), ("h100-sxm", "../../x"),
                                             ("a/b", "..\\..\\c:"), (".", ""), ("h" * 100, "m" * 101)])
def test_hostile_partition_values_stay_under_the_prefix(tmp_path, hardware, model):
    url = str(tmp_path / "deep" / "store")
    [done] = upload([_small(tmp_path / "runs", hardware=hardware, model=model, name="hostile")], url)
    files = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    outside_runs = [p for p in files if p.parts[0] != "runs"]
    assert all(p.parts[:2] == ("deep", "store") for p in outside_runs)  # nothing left the store
    points = [p for p in outside_runs if p.suffix == ".parquet" and "runs" not in p.parts]
    assert len(points) == 1 and points[0].parts[:4] == ("deep", "store", "costmodel", "points")
    [part] = list_partitions(Store(url))
    assert part == partition_of(hardware, model) and part.count("/") == 1
    table = pq.read_table(next((tmp_path / "deep" / "store" / POINTS_DIR).rglob("*.parquet")))
    assert set(table.column("hardware").to_pylist()) == {hardware}  # rows keep the true value
    assert set(table.column("model").to_pylist()) == {model}
    assert done.point_files == 1


@given(st.one_of(st.none(), st.integers(), st.text(alphabet=string.printable + "é/\\", max_size=120)))
def test_partition_values_are_always_one_safe_folder(value):
    name = partition_value(value)
    assert "/" not in name and name not in ("", ".", "..")
    check_rel_path(f"hardware={name}/model={name}")
    if isinstance(value, str) and value and value[0].isalnum() and value.isascii() and len(value) <= 100 \
            and all(c.isalnum() or c in "._-" for c in value):
        assert name == value  # a plain name is kept as it is


@pytest.fixture
def local_store(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def three_runs(tmp_path):
    return [make_run(tmp_path / "runs", hardware="h100-sxm", invalid={16: "client saturation"}, failed=(8,)),
            make_run(tmp_path / "runs", hardware="b200", speed=2.0, n_gpus=2, quantization="fp8"),
            make_run(tmp_path / "runs", hardware="mi300x", speed=1.2, model="tiny-qwen3-moe")]


@pytest.mark.slow
def test_build_compacts_the_point_files_into_the_old_table(three_runs, store_url, tmp_path):
    upload(three_runs, store_url)
    from_runs = table_bytes(build_table(runs_from_store(store_url)))  # the run.json path, every run read
    first = build(store_url, out_dir=tmp_path / "a")
    assert table_bytes(first.table) == from_runs
    assert (first.partitions, first.point_files, first.backfilled, first.ignored) == (3, 3, 0, 0)
    compacted = _compacted(store_url)
    assert len(compacted) == 3
    again = build(store_url, out_dir=tmp_path / "b")
    full = build(store_url, full=True)
    assert table_bytes(again.table) == table_bytes(full.table) == from_runs
    for name in ("costmodel.parquet", "costmodel.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert _compacted(store_url) == compacted  # rebuilt, byte for byte


@pytest.mark.slow
def test_a_rebuild_after_an_upload_verifies_only_the_new_run_and_equals_a_full_one(three_runs, local_store, tmp_path,
                                                                                 monkeypatch):
    upload(three_runs, local_store)
    build(local_store)
    [new] = upload([make_run(tmp_path / "more", hardware="h100-sxm", speed=1.5)], local_store)
    import bench.store.verify as verify_mod

    read = []
    real = verify_mod.read_verified_run
    monkeypatch.setattr(verify_mod, "read_verified_run", lambda store, run_id, *a: read.append(run_id) or
                        real(store, run_id, *a))
    incremental = build(local_store)
    assert read == [new.run_id] and incremental.verified == 1
    full = build(local_store, full=True)
    assert sorted(read[1:]) == sorted([new.run_id] + [json.loads(m.read_text())["run_id"]
                                                      for m in (tmp_path / "store" / "runs").glob("*/MANIFEST.json")
                                                      if new.run_id not in str(m)]) and full.verified == 4
    monkeypatch.undo()
    assert table_bytes(incremental.table) == table_bytes(full.table) \
        == table_bytes(build_table(runs_from_store(local_store)))


@pytest.mark.slow
def test_an_old_store_without_point_files_is_backfilled(three_runs, local_store):
    upload(three_runs, local_store)
    s = Store(local_store)
    uploaded = {p: b for p, b in _files(local_store).items() if "/costmodel/points/" in p}
    s.fs.rm(s.path("costmodel"), recursive=True)  # as an older bench left it: runs only
    done = build(local_store)
    assert done.backfilled == 3 and len(done.table) == 13
    assert {p: b for p, b in _files(local_store).items() if "/costmodel/points/" in p} == uploaded
    assert table_bytes(done.table) == table_bytes(build_table(runs_from_store(local_store)))


@pytest.mark.slow
def test_point_files_of_unpublished_runs_are_left_out(three_runs, local_store):
    done = upload(three_runs, local_store)
    s = Store(local_store)
    s.fs.rm(s.path("runs", done[1].run_id), recursive=True)  # the run is gone, its point file stays
    table = build(local_store)
    assert table.ignored == 1 and set(table.table["run_id"]) == {done[0].run_id, done[2].run_id}
    meta = pq.read_metadata(s.path("costmodel/compacted/hardware=b200/model=tiny-llama/compacted.parquet")).metadata
    assert json.loads(meta[b"bench.excluded_runs"]) == [done[1].run_id]


def test_a_run_with_no_ok_point_gets_an_empty_file(local_store, tmp_path):
    (tmp_path / "runs" / "all-failed").mkdir(parents=True)  # the factory writes no request file to make it
    [done] = upload([_small(tmp_path / "runs", failed=(1, 4), name="all-failed")], local_store)
    assert done.point_files == 1
    [path] = list_point_files(Store(local_store), PARTITION).values()
    assert pq.read_table(path).num_rows == 0
    assert build(local_store).backfilled == 0  # known to have no points: nothing read again


def _compacted(url: str) -> dict[str, bytes]:
    return {p: b for p, b in _files(url).items() if "/costmodel/compacted/" in p}


def test_every_partition_of_a_remote_store_is_found_by_one_listing(s3_url, monkeypatch):
    """The build and an unfiltered query list the point files of every partition in one
    recursive listing (fe7b476 listed each folder: 1 + hardware + partitions requests), and
    find what the listing of each folder finds."""
    s = Store(s3_url)
    run_ids = [f"20261201T00000{i}Z_r-{i:012x}" for i in range(3)]
    for rel in [f"{POINTS_DIR}/hardware=h100-sxm/model=tiny-llama/{run_ids[0]}.parquet",
                f"{POINTS_DIR}/hardware=h100-sxm/model=tiny-qwen3-moe/{run_ids[1]}.parquet",
                f"{POINTS_DIR}/hardware=b200/model=tiny-llama/{run_ids[2]}.parquet",
                f"{POINTS_DIR}/hardware=b200/model=tiny-llama/notes.txt",  # not a point file: its partition only
                f"{POINTS_DIR}/hardware=mi300x/model=x/deeper/{run_ids[0]}.parquet",  # not in a partition's folder
                f"{POINTS_DIR}/stray.parquet", f"{POINTS_DIR}/model=x/hardware=y/{run_ids[0]}.parquet"]:
        s.fs.pipe_file(s.path(rel), b"x")
    per_folder = {part: list_point_files(s, part) for part in list_partitions(s)}
    calls = count_s3_requests(monkeypatch)
    assert point_listing(s) == per_folder
    assert calls == ["list_objects_v2"]
    assert sorted(per_folder) == ["hardware=b200/model=tiny-llama", "hardware=h100-sxm/model=tiny-llama",
                                  "hardware=h100-sxm/model=tiny-qwen3-moe", "hardware=mi300x/model=x"]
    assert sorted(r for files in per_folder.values() for r in files) == run_ids


def test_a_remote_footer_is_read_in_one_request(s3_url, monkeypatch):
    """A query reads each compacted file's footer (its covered runs): one suffix-range GET
    holds a small file's footer, where a stat and two range reads took three (fe7b476)."""
    s = Store(s3_url)
    buf = io.BytesIO()
    pq.write_table(pa.table({"run_id": ["a"] * 1000}), buf)
    s.fs.pipe_file(s.path("f.parquet"), buf.getvalue())
    s.fs.pipe_file(s.path("empty.parquet"), b"")
    calls = count_s3_requests(monkeypatch)
    assert s.parquet_footer(s.path("f.parquet"), POINTS_LIMITS).num_rows == 1000
    assert calls == ["get_object"]
    with pytest.raises(StoreError, match="does not read as Parquet"):
        s.parquet_footer(s.path("empty.parquet"), POINTS_LIMITS)

