"""The fleet's JSON records are typed (bench.fleet.records): what bench writes reads back
field for field, and what it reads from a store or a work folder is validated first, so a
malformed object reads as absent instead of crashing `bench fleet status`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.fleet import control, state
from bench.fleet.backends.local import LocalBackend
from bench.store import Store

FLEET = "planted-0123abcd"
SHARD = "tiny-llama-0123abcd_cpu-host"
SHARD_RECORD = {"shard_id": SHARD, "config_id": "tiny-llama-0123abcd", "hardware": ["cpu-host"], "n_gpus": 1,
                "model": "tiny-llama", "precision": "bf16", "parallel": "TP 1", "engine": "endpoint", "n_points": 2,
                "nnodes": 1}


def plant(store_url: str, shards: list, status: dict | None = None) -> None:
    """A fleet.json (and one shard's status.json) put into the store by someone else."""
    record = {"fleet_id": FLEET, "name": "planted", "sweep_file": "x.yaml", "sweep_sha256": "0" * 64,
              "hardware": ["cpu-host"], "skipped": [], "backend": {"name": "local", "host": "elsewhere"},
              "launched_utc": "2026-01-01T00:00:00Z", "shards": shards}
    store = Store(store_url)
    store.put_bytes(f"fleet/{FLEET}/fleet.json", json.dumps(record).encode())
    if status is not None:
        store.put_bytes(f"fleet/{FLEET}/shards/{SHARD}/status.json", json.dumps(status).encode())


def status_cli(store_url: str, tmp_path, *more: str):
    return CliRunner().invoke(cli, ["fleet", "status", "--store", store_url, *more],
                              env={"BENCH_CACHE_DIR": str(tmp_path / "cache")})


@pytest.mark.parametrize("planted", [
    {"points_done": "x", "points_total": 3},  # base: int("x") in the progress line
    {"points_done": 1, "points_total": {"a": 1}},
    {"heartbeat_utc": ["2026"]},
])
def test_a_malformed_status_object_reads_as_absent(tmp_path, planted):
    """Defect: a status.json in the store whose fields have the wrong types crashed `bench fleet
    status` (ValueError / TypeError out of the progress line); it reads as absent now."""
    url = str(tmp_path / "store")
    plant(url, [SHARD_RECORD], {"state": "running", "attempt": "a1", "heartbeat_utc": state.utc_now(), **planted})
    res = status_cli(url, tmp_path)
    assert res.exception is None, repr(res.exception)
    assert res.exit_code == 0 and "1 missing" in res.output, res.output


@pytest.mark.parametrize("bad", [{"hardware": [1]}, {"hardware": "cpu-host"}, {"n_points": "two"}, {"shard_id": 7}])
def test_a_malformed_shard_entry_is_left_out(tmp_path, bad):
    """Defect: a fleet.json shard entry whose hardware is not a list of ids crashed the status
    table ("|".join of an int); an entry that does not read is left out, the others shown."""
    url = str(tmp_path / "store")
    other = {**SHARD_RECORD, "shard_id": "tiny-llama-0123abcd_cpu-host-2", "hardware": ["cpu-host-2"]}
    plant(url, [{**SHARD_RECORD, **bad}, other])
    res = status_cli(url, tmp_path, "--json")
    assert res.exception is None, repr(res.exception)
    [fleet] = json.loads(res.output)
    assert [s["shard"] for s in fleet["shards"]] == [other["shard_id"]]


@pytest.mark.parametrize("text", ["[]", '"local"', '{"fleet_id": 5}', f'{{"fleet_id": "{FLEET}", "backend": []}}'])
def test_a_malformed_backend_record_falls_back_to_the_local_backend(tmp_path, text):
    """Defect: a backend.json in the work folder that is not an object (`[]`) crashed every
    `bench fleet status/logs/cancel` with AttributeError; it reads as absent now."""
    work = tmp_path / "work"
    (work / FLEET).mkdir(parents=True)
    (work / FLEET / "backend.json").write_text(text)
    assert isinstance(control.user_backend(FLEET, work_dir=str(work)), LocalBackend)
