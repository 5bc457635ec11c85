"""A run's request Parquet must agree with its run.json: upload refuses, pull and
`costmodel build` skip a bad run with a one-line reason and go on (issue 11, defect 9)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from result_factory import edit_run, make_run

from bench.cli import cli
from bench.errors import StoreError
from bench.results import read_summary
from bench.store import Store, pull, upload
from bench.store import publish as publish_mod
from bench.store.costmodel import build, runs_from_store


def _with_totals(run_dir):
    """run.json as the runner writes it: token totals among each point's metrics."""
    path = run_dir / "run.json"
    data = json.loads(path.read_text())
    for p in data["points"]:
        if p.get("requests_file"):
            frame = pd.read_parquet(run_dir / p["requests_file"])
            meas = frame[frame.phase == "measured"]
            p["metrics"]["output_tokens_total"] = int(meas.n_out.sum())
            p["metrics"]["input_tokens_total"] = int(meas.n_in.sum())
    path.write_text(json.dumps(data))
    return run_dir


def _flip_byte(path, offset: int = -6):
    """A flipped byte where every reader looks: the footer length (the file no longer reads)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_bit_in_a_stamp(path):
    """A flipped bit inside one stored value (the file still reads): request 2's t_send."""
    frame = pd.read_parquet(path)
    raw = frame["t_send"].to_numpy().copy().view("uint64")
    raw[2] ^= 1 << 40
    frame["t_send"] = raw.view("float64")
    frame.to_parquet(path, index=False)


def _inflate_n_out(path, factor: int = 10):
    frame = pd.read_parquet(path)
    frame["n_out"] = frame["n_out"] * factor
    frame.to_parquet(path, index=False)


def _inflate_consistently(path, factor: int = 10):
    """n_out and every chunk's tokens x10: each row agrees with itself, not with run.json."""
    frame = pd.read_parquet(path)
    frame["n_out"] = frame["n_out"] * factor
    frame["chunk_tokens"] = [[n * factor for n in tokens] for tokens in frame["chunk_tokens"]]
    frame.to_parquet(path, index=False)


def _run(root, name, **kw):
    return _with_totals(make_run(root, name=name, concurrencies=(1, 4), **kw))


def test_honest_run_with_totals_uploads(tmp_path):
    [done] = upload([_run(tmp_path / "runs", "good")], str(tmp_path / "store"))
    assert done.status == "published"


@pytest.mark.parametrize("tamper,why", [
    (_flip_byte, "does not read as a requests Parquet"),
    (_flip_bit_in_a_stamp, "request 2: ttft_s is not t_first - t_send"),
    (_inflate_n_out, "request 0: its chunks carry 32 tokens, n_out is 320"),
    (_inflate_consistently, "output tokens sum to 64320, run.json says 6432"),
], ids=["flipped-byte", "flipped-bit-in-a-value", "n_out-x10", "n_out-and-chunks-x10"])
def test_upload_refuses_a_request_parquet_that_disagrees_and_uploads_nothing(tmp_path, tamper, why):
    good = _run(tmp_path / "runs", "good")
    bad = _run(tmp_path / "runs", "bad")
    tamper(bad / "requests" / "c0004.parquet")
    url = str(tmp_path / "store")
    with pytest.raises(StoreError, match=why) as err:
        upload([good, bad], url)
    assert "point c0004" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("MANIFEST.json"))


def test_row_and_failure_counts_must_match_run_json(tmp_path):
    run = _run(tmp_path / "runs", "r")
    data = json.loads((run / "run.json").read_text())
    data["points"][0]["n_failed"] = 1
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="0 failed rows, run.json says n_failed 1"):
        upload([run], str(tmp_path / "store"))
    data["points"][0]["n_failed"], data["points"][0]["n_requests"] = 0, 5
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="201 measured rows, run.json says n_requests 5"):
        upload([run], str(tmp_path / "store"))


def _publish_unchecked(monkeypatch, run_dirs, url):
    """Publish as an older bench (or a hand-made upload) would: without the Parquet check
    and the figures' verification (no point file is made at upload then)."""
    with monkeypatch.context() as m:
        m.setattr(publish_mod, "verified_point_files", lambda *a, **k: {})
        return upload(run_dirs, url)


@pytest.mark.slow
@pytest.mark.parametrize("tamper", [_flip_byte, _inflate_n_out], ids=["flipped-byte", "n_out-x10"])
def test_pull_skips_a_bad_published_run_and_goes_on(tmp_path, monkeypatch, tamper):
    url = str(tmp_path / "store")
    first = _run(tmp_path / "runs", "a-first", hardware="h100-sxm")
    bad = _run(tmp_path / "runs", "b-bad", hardware="a100-sxm")
    last = _run(tmp_path / "runs", "c-last", hardware="l40s")
    tamper(bad / "requests" / "c0001.parquet")
    published = {u.source.name: u.run_id for u in _publish_unchecked(monkeypatch, [first, bad, last], url)}
    skipped: list[str] = []
    got = pull(url, tmp_path / "cache", skipped=skipped)
    assert sorted(p.name for p in got) == sorted([published["a-first"], published["c-last"]])
    assert len(skipped) == 1 and published["b-bad"] in skipped[0] and "point c0001" in skipped[0]
    assert not (tmp_path / "cache" / published["b-bad"]).exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no partial left
    for p in got:
        read_summary(p)


@pytest.mark.slow
def test_costmodel_build_skips_a_bad_run_and_says_how_many(tmp_path, monkeypatch):
    url = str(tmp_path / "store")
    good = _run(tmp_path / "runs", "good", hardware="h100-sxm")
    bad = _run(tmp_path / "runs", "bad", hardware="a100-sxm")
    _inflate_consistently(bad / "requests" / "c0004.parquet")
    ids = {u.source.name: u.run_id for u in _publish_unchecked(monkeypatch, [good, bad], url)}
    skipped: list[str] = []
    runs = runs_from_store(url, skipped=skipped)
    assert [rid for rid, _ in runs] == [ids["good"]]
    assert len(skipped) == 1 and ids["bad"] in skipped[0] and "output tokens sum to" in skipped[0]
    done = build(url)
    assert set(done.table["run_id"]) == {ids["good"]} and len(done.skipped) == 1
    res = CliRunner().invoke(cli, ["costmodel", "build", "--store", url])
    assert res.exit_code == 1, res.output  # the table is written; one run was left out
    assert "1 run(s) skipped" in res.output and "output tokens sum to" in res.output


def test_read_checked_run_reads_every_requests_file(tmp_path):
    url = str(tmp_path / "store")
    [done] = upload([_run(tmp_path / "runs", "r")], url)
    store = Store(url)
    seen = []
    real = store.read_file
    store.read_file = lambda run_id, rel, manifest=None: seen.append(rel) or real(run_id, rel, manifest)
    store.read_checked_run(done.run_id)
    assert sorted(seen) == ["requests/c0001.parquet", "requests/c0004.parquet", "run.json"]


# ---- a partial run (issue 18, defect 3): a failed point that kept its finished requests has no metrics

@pytest.mark.slow
def test_a_partial_run_uploads_and_its_finished_points_build(tmp_path):
    run = make_run(tmp_path / "runs", name="partial", concurrencies=(1, 4, 8), partial=(4,), status="partial")
    url = str(tmp_path / "store")
    import subprocess
    import sys

    for _ in range(2):  # a real process: the issue saw rc 1 (internal error) and rc 134 (SIGABRT)
        res = subprocess.run([sys.executable, "-m", "bench", "upload", str(run), "--to", url], check=False,
                             capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    done = build(url)
    assert done.skipped == [] and sorted(done.table["point_id"]) == ["c0001", "c0008"]
    failed = read_summary(run).points[1]
    assert failed.status == "failed" and failed.metrics is None and failed.n_requests == 100


def test_a_partial_run_whose_kept_requests_disagree_is_refused_in_one_line(tmp_path):
    run = make_run(tmp_path / "runs", name="partial", concurrencies=(1, 4), partial=(4,), status="partial")
    edit_run(run, lambda d: d["points"][1].update(n_requests=7))
    with pytest.raises(StoreError, match="point c0004: requests/c0004.parquet: 100 measured rows, run.json says "
                                         "n_requests 7"):
        upload([run], str(tmp_path / "store"))


@pytest.mark.parametrize("described, ranges", [
    ({"energy_method": "rapl", "meter": {"method": "rapl", "counter_range_j": [262143.99, None]}}, [262143.99, None]),
    ({"meter": {"method": "nvml_counter"}}, None),
    (None, None),
    ({"meter": {"counter_range_j": "wide"}}, None),  # another shape: read as no range, never a crash
    ({"meter": {"counter_range_j": [True]}}, None),
    ({"meter": ["rapl"]}, None),
    ([1, 2], None),
])
def test_a_stored_telemetry_description_is_decoded_once_for_the_recompute(described, ranges):
    from bench.store.recompute import StoredTelemetry

    assert StoredTelemetry.of(described).counter_range_j == ranges


def test_the_list_checks_agree_with_the_per_value_ones():
    """`_all_counts` / `_all_reals` (C-level loops over a row's chunk lists) answer what
    `_is_count` / `_is_real` of every value answer, on every mix of the awkward values."""
    import itertools

    from bench.store.integrity import _all_counts, _all_reals, _is_count, _is_real

    values = [0, 1, -1, True, False, 0.0, 1.5, float("nan"), float("inf"), -float("inf"), None, "1", 2**70, -2**70]
    for k in range(4):
        for combo in map(list, itertools.product(values, repeat=k)):
            assert _all_counts(combo) == all(_is_count(v) for v in combo), combo
            assert _all_reals(combo) == all(_is_real(v) for v in combo), combo
