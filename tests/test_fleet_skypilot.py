"""The SkyPilot task files of a fleet: a golden spec (pure), and every file of a sweep read
by SkyPilot's own loader (`sky.Task.from_yaml`) in its separate venv. Nothing is launched:
`sky.jobs.launch` never runs in a test."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.cli import cli
from bench.fleet.backends.base import PLAIN_ENV, SECRET_ENV
from bench.fleet.backends.skypilot import SkyPilotBackend, repo_root, secret_values
from bench.fleet.shards import plan_fleet

SWEEP = """name: fleet-sky
models: [llama-3.1-8b]
weights: real
precisions: [bf16, fp8]
engine_args: {tensor_parallel_size: 2}
workloads: [{kind: random, input_len: 1024, output_len: 256}]
loads: [{kind: concurrency, concurrency: [1, 16]}]
"""

GOLDEN = """\
name: bench-fleet-sky-e1210242-llama-3.1-8b-8484d03d_h100-sxm_h200-sxm
workdir: <repo>
resources:
  accelerators:
    H100: 2
    H200: 2
  use_spot: true
  job_recovery:
    strategy: EAGER_NEXT_REGION
    max_restarts_on_errors: 1
envs:
  BENCH_STORE: s3://bench-results/shared
  AWS_DEFAULT_REGION: us-east-1
  BENCH_SKY_VENV: '0'
secrets:
  AWS_ACCESS_KEY_ID: null
  AWS_SECRET_ACCESS_KEY: null
  HF_TOKEN: null
setup: scripts/install.sh gpu
run: python3 -m bench fleet shard ~/bench-fleet/fleet-sky-e1210242/fleet-sky.yaml
  --config llama-3.1-8b-8484d03d --hardware 'h100-sxm|h200-sxm' --fleet fleet-sky-e1210242
  --backend skypilot
file_mounts:
  ~/bench-fleet/fleet-sky-e1210242/fleet-sky.yaml: <sweep>
"""

STORE = "s3://bench-results/shared"


@pytest.fixture
def credentials(monkeypatch):
    """This environment's credentials: what the task files may name, never contain."""
    for name in (*PLAIN_ENV, *SECRET_ENV, "BENCH_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-never-written")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuv")


@pytest.fixture
def sweep(tmp_path):
    path = tmp_path / "fleet-sky.yaml"
    path.write_text(SWEEP)
    return path


def test_golden_task_spec(sweep, credentials):
    fleet = plan_fleet(sweep, ["h100-sxm|h200-sxm", "a100-80g-sxm"])
    assert [s.shard_id for s in fleet.shards] == [
        "llama-3.1-8b-8484d03d_h100-sxm_h200-sxm", "llama-3.1-8b-5f3ef1be_h100-sxm_h200-sxm",
        "llama-3.1-8b-8484d03d_a100-80g-sxm"]
    assert fleet.skipped[0].config_id == "llama-3.1-8b-5f3ef1be"  # fp8: not on an A100
    spec = SkyPilotBackend().task_spec(fleet, fleet.shards[0], STORE)
    text = yaml.safe_dump(spec, sort_keys=False)
    text = text.replace(str(repo_root()), "<repo>").replace(str(sweep.resolve()), "<sweep>")
    assert text == GOLDEN
    for value in ("AKIAABCDEFGHIJKLMNOP", "s3cr3t-value-never-written", "hf_abcdefghijklmnopqrstuv"):
        assert value not in text
    assert secret_values(spec, STORE) == {"AWS_ACCESS_KEY_ID": "AKIAABCDEFGHIJKLMNOP",
                                          "AWS_SECRET_ACCESS_KEY": "s3cr3t-value-never-written",
                                          "HF_TOKEN": "hf_abcdefghijklmnopqrstuv"}


def test_a_store_url_with_a_password_is_a_secret(sweep, credentials):
    fleet = plan_fleet(sweep, ["h100-sxm"])
    url = "s3://user:pa55word@bucket/x"
    spec = SkyPilotBackend(spot=False, recovery="FAILOVER", max_restarts=0).task_spec(fleet, fleet.shards[0], url)
    assert "BENCH_STORE" not in spec["envs"] and spec["secrets"]["BENCH_STORE"] is None
    assert "pa55word" not in yaml.safe_dump(spec)
    assert secret_values(spec, url)["BENCH_STORE"] == url
    assert spec["resources"] == {"accelerators": {"H100": 2}, "use_spot": False,
                                 "job_recovery": {"strategy": "FAILOVER", "max_restarts_on_errors": 0}}


def sky_python() -> str:
    path = os.environ.get("BENCH_SKY_PYTHON") or str(repo_root() / ".venv-sky" / "bin" / "python")
    if not Path(path).is_file():
        pytest.fail(f"SkyPilot's venv is missing ({path}): scripts/install.sh creates .venv-sky/ "
                    "(or set BENCH_SKY_PYTHON to a python with skypilot installed)")
    return path


CHECK = r"""
import json, sys, yaml, sky
out = []
for path in sys.argv[1:]:
    task = sky.Task.from_yaml(path)               # SkyPilot's own schema and loader
    spec = yaml.safe_load(open(path))
    names = list(spec.get("secrets") or {})
    launched = sky.Task.from_yaml_config(spec, secrets_overrides=[(n, "value-of-" + n) for n in names])
    out.append({"name": task.name, "num_nodes": task.num_nodes, "run": task.run, "setup": task.setup, "workdir": task.workdir,
                "envs": task.envs, "file_mounts": task.file_mounts,
                "resources": [{"accelerators": r.accelerators, "use_spot": r.use_spot,
                               "job_recovery": r.job_recovery} for r in task.resources],
                "secret_refs": sorted(ref.name for ref in task._managed_secret_refs),
                "launch_secrets": sorted(launched.secrets), "launch_refs": len(launched._managed_secret_refs)})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_skypilot_loads_every_task_file(sweep, credentials, tmp_path):
    """Every task file of a sweep, and the one job of a configuration over two nodes, read by
    SkyPilot in one process (its import is most of this test's time: once, not once a file set)."""
    python = sky_python()
    out = tmp_path / "tasks"
    two_nodes = tmp_path / "fleet-sky-2n.yaml"
    two_nodes.write_text(MULTINODE)
    fleet_2n = plan_fleet(two_nodes, ["h100-sxm"], multinode=True)
    [file_2n] = SkyPilotBackend().write(fleet_2n, fleet_2n.shards, STORE, tmp_path / "tasks-2n")
    result = CliRunner().invoke(cli, ["fleet", "plan", str(sweep), "--backend", "skypilot", "--store", STORE,
                                      "--hardware", "h100-sxm|h200-sxm", "--hardware", "a100-80g-sxm",
                                      "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.yaml"))
    assert len(files) == 3
    loaded = subprocess.run([python, "-c", CHECK, *map(str, files), str(file_2n)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    *tasks_list, task_2n = json.loads(loaded.stdout.strip().splitlines()[-1])
    # a configuration over two nodes: one SkyPilot job on two machines of 8 GPUs each
    assert task_2n["num_nodes"] == 2 and [r["accelerators"] for r in task_2n["resources"]] == [{"H100": 8}]
    tasks = {t["name"]: t for t in tasks_list}
    either = tasks["bench-fleet-sky-e1210242-llama-3.1-8b-8484d03d_h100-sxm_h200-sxm"]
    assert sorted(next(iter(r["accelerators"])) for r in either["resources"]) == ["H100", "H200"]
    assert all(r["accelerators"] in ({"H100": 2}, {"H200": 2}) and r["use_spot"] and
               r["job_recovery"] == {"strategy": "EAGER_NEXT_REGION", "max_restarts_on_errors": 1}
               for r in either["resources"])
    a100 = tasks["bench-fleet-sky-e1210242-llama-3.1-8b-8484d03d_a100-80g-sxm"]
    assert [r["accelerators"] for r in a100["resources"]] == [{"A100-80GB": 2}]
    for task in tasks.values():
        assert task["setup"] == "scripts/install.sh gpu" and task["workdir"] == str(repo_root())
        assert task["run"].startswith("python3 -m bench fleet shard ~/bench-fleet/fleet-sky-e1210242/fleet-sky.yaml")
        assert task["envs"]["BENCH_STORE"] == STORE
        assert task["secret_refs"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"]
        assert task["launch_secrets"] == task["secret_refs"] and task["launch_refs"] == 0  # values, in memory
        assert list(task["file_mounts"].values()) == [str(sweep.resolve())]
    for path in files:
        text = path.read_text()
        assert "s3cr3t-value-never-written" not in text and "AKIAABCDEFGHIJKLMNOP" not in text


MULTINODE = """name: fleet-sky-2n
models: [llama-3.1-8b]
engine_args: {tensor_parallel_size: 8, pipeline_parallel_size: 2, nnodes: 2}
workloads: [{kind: random, input_len: 1024, output_len: 256}]
loads: [{kind: concurrency, concurrency: [16]}]
"""


def test_a_config_over_two_nodes_is_one_skypilot_job_on_two_machines(tmp_path, credentials):
    path = tmp_path / "fleet-sky-2n.yaml"
    path.write_text(MULTINODE)
    local = plan_fleet(path, ["h100-sxm"])  # local and Ray place a shard on one machine
    assert not local.shards and "only the skypilot backend" in local.skipped[0].reason
    fleet = plan_fleet(path, ["h100-sxm"], multinode=True)
    (shard,) = fleet.shards
    assert shard.nnodes == 2 and shard.n_gpus == 8  # GPUs per machine
    spec = SkyPilotBackend().task_spec(fleet, shard, STORE)
    assert spec["num_nodes"] == 2 and spec["resources"]["accelerators"] == {"H100": 8}
    run = spec["run"]
    assert 'if [ "$SKYPILOT_NODE_RANK" = 0 ]; then' in run
    assert "python3 -m bench fleet shard" in run.split("else")[0]  # the head runs the shard
    assert 'exec python3 -m bench node serve --head "$HEAD" --port "$PORT"' in run  # the follower serves it
    assert 'python3 -m bench node release' in run  # and is released when the shard ends
    # SkyPilot's own loader reads its task file as 2 nodes of H100:8: test_skypilot_loads_every_task_file


def test_the_multinode_run_script_gives_the_head_its_followers_and_the_followers_their_head(tmp_path):
    from bench.fleet.backends.skypilot import multinode_run

    script = multinode_run('echo "shard nodes=$BENCH_NODES"')
    bindir = tmp_path / "bin"  # `python3 -m bench node ...` recorded, not run
    bindir.mkdir()
    (bindir / "python3").write_text('#!/bin/sh\necho "python3 $*"\n')
    (bindir / "python3").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "SKYPILOT_NODE_IPS": "10.0.0.1\n10.0.0.2\n10.0.0.3"}
    head = subprocess.run(["bash", "-c", script], env={**env, "SKYPILOT_NODE_RANK": "0"}, capture_output=True,
                          text=True, check=True).stdout.splitlines()
    assert head == ["shard nodes=10.0.0.2:8790,10.0.0.3:8790",
                    "python3 -m bench node release 10.0.0.2:8790 10.0.0.3:8790"]
    follower = subprocess.run(["bash", "-c", script], env={**env, "SKYPILOT_NODE_RANK": "2"}, capture_output=True,
                              text=True, check=True).stdout.splitlines()
    assert follower == ["python3 -m bench node serve --head 10.0.0.1 --port 8790"]


@pytest.mark.parametrize("url", [
    "https://storage.example.com/bench?token=abcdefgh12345678",  # a token in the query
    "https://bucket.s3.amazonaws.com/bench?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=0123456789abcdef",
    "https://sv.blob.core.windows.net/bench?sv=2022-11-02&sig=AbCdEf0123456789%3D",  # an Azure SAS
    "https://ghp_abcdefghijklmnopqrstuvwx@example.com/bench",  # a token as the URL's user
])
def test_a_store_url_that_carries_a_credential_is_a_secret(sweep, credentials, url):
    fleet = plan_fleet(sweep, ["h100-sxm"])
    spec = SkyPilotBackend().task_spec(fleet, fleet.shards[0], url)
    assert "BENCH_STORE" not in spec["envs"] and spec["secrets"]["BENCH_STORE"] is None
    text = yaml.safe_dump(spec)
    assert url not in text and url.split("//", 1)[1][:30] not in text
    assert secret_values(spec, url)["BENCH_STORE"] == url


def test_a_plain_setting_that_carries_a_credential_is_a_secret(sweep, credentials, monkeypatch):
    monkeypatch.setenv("BENCH_S3_ENDPOINT_URL", "https://user:pa55word@minio.example.com:9000")
    fleet = plan_fleet(sweep, ["h100-sxm"])
    spec = SkyPilotBackend().task_spec(fleet, fleet.shards[0], STORE)
    assert "BENCH_S3_ENDPOINT_URL" not in spec["envs"] and spec["secrets"]["BENCH_S3_ENDPOINT_URL"] is None
    assert spec["envs"]["BENCH_STORE"] == STORE and "pa55word" not in yaml.safe_dump(spec)
    assert secret_values(spec, STORE)["BENCH_S3_ENDPOINT_URL"] == "https://user:pa55word@minio.example.com:9000"


def test_every_node_of_a_multinode_shard_gets_the_node_secret(tmp_path, credentials, monkeypatch):
    """The agents' shared secret is a SkyPilot secret of the job (every node receives it): the
    launcher's $BENCH_NODE_SECRET, else a fresh one per launch; never in `envs` or a file."""
    path = tmp_path / "fleet-sky-2n.yaml"
    path.write_text(MULTINODE)
    fleet = plan_fleet(path, ["h100-sxm"], multinode=True)
    monkeypatch.delenv("BENCH_NODE_SECRET", raising=False)
    spec = SkyPilotBackend().task_spec(fleet, fleet.shards[0], STORE)
    assert spec["secrets"]["BENCH_NODE_SECRET"] is None and "BENCH_NODE_SECRET" not in spec["envs"]
    one, two = secret_values(spec, STORE)["BENCH_NODE_SECRET"], secret_values(spec, STORE)["BENCH_NODE_SECRET"]
    assert len(one) >= 32 and one != two  # generated per launch
    monkeypatch.setenv("BENCH_NODE_SECRET", "node-secret-from-the-launcher-0123456789")
    spec = SkyPilotBackend().task_spec(fleet, fleet.shards[0], STORE)
    assert secret_values(spec, STORE)["BENCH_NODE_SECRET"] == "node-secret-from-the-launcher-0123456789"
    assert "node-secret-from-the-launcher" not in yaml.safe_dump(spec)
