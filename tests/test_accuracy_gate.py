"""Accuracy layer 1, the task gate, through real lm-evaluation-harness and a local task file
(no download), and the gate's place in a run (docs/accuracy.md)."""

from __future__ import annotations

import json

import pytest

from bench.measure.accuracy_verdict import ReferenceScore, task_verdict
from bench.plan import EngineConfig, Plan, PointSpec
from bench.plan.accuracy import AccuracySettings
from bench.results import read_summary
from bench.run.accuracy_task import AccuracyNotRun, TaskSpec, _check_data, task_score
from bench.run.environment import RunEnvironment
from bench.run.runner import execute
from bench.testing.arith_task import TASK, write_arith_task
from bench.testing.fake_device import fake_device
from bench.testing.fake_server import FakeServer, FakeServerConfig

pytest.importorskip("lm_eval", reason="the accuracy extra: pip install -e .[accuracy]")


def _plan(cfg: EngineConfig, accuracy: AccuracySettings) -> Plan:
    point = PointSpec(point_id="p_c1", engine_config_id=cfg.config_id(),
                      workload={"kind": "random", "input_len": 8, "output_len": 4},
                      load={"kind": "concurrency", "concurrency": 1}, n_warmup=0, n_requests=2)
    return Plan(engine_configs=[cfg], points=[point], name="acc", telemetry="none", accuracy=accuracy)


@pytest.mark.slow
def test_a_server_that_answers_right_passes_the_gate_in_a_run(tmp_path):
    """The fake answers every generated question right: lm-eval scores 50/50, the Wilson bound
    clears tiny-llama's floor, and run.json keeps the verdict beside the configuration."""
    folder = write_arith_task(tmp_path / "task", n=50)
    accuracy = AccuracySettings(mode="task", task=TASK, include_path=str(folder), num_fewshot=0)
    with FakeServer(FakeServerConfig(ttft_s=0.001, itl_s=0.001, solve_arithmetic=True)) as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        execute(_plan(cfg, accuracy), tmp_path / "run", RunEnvironment(device=fake_device("cpu", name="cpu")))
    run = read_summary(tmp_path / "run")
    (verdict,) = run.accuracy[cfg.config_id()]
    assert (verdict.kind, verdict.task, verdict.n, verdict.score) == ("task", TASK, 50, 1.0)
    assert verdict.floor == 0.9 and verdict.wilson_lower_95 == pytest.approx(0.9487, abs=1e-4)
    assert verdict.passed is True, verdict.reason
    assert "clears the floor 0.900" in verdict.reason
    raw = json.loads((tmp_path / "run" / "run.json").read_text())
    assert raw["accuracy"][cfg.config_id()][0]["passed"] is True


@pytest.mark.slow
def test_a_server_that_answers_wrong_fails_with_one_line(tmp_path):
    folder = write_arith_task(tmp_path / "task", n=20)
    with FakeServer(FakeServerConfig(ttft_s=0.001)) as srv:  # answers "fake" to everything
        score = task_score(srv.base_url, "fake-model", TaskSpec(TASK, include_path=folder, num_fewshot=0))
    v = task_verdict(TASK, score.per_question, floor=0.9)
    assert (v.n, v.score, v.passed) == (20, 0.0, False)
    assert "\n" not in v.reason and "below the floor 0.900" in v.reason


def test_gsm8k_without_network_is_not_run_with_one_line(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with pytest.raises(AccuracyNotRun, match=r"task data for 'gsm8k' cannot be fetched: hub\.invalid unreachable"):
        _check_data(TaskSpec("gsm8k"))


def test_gsm8k_not_run_is_recorded_in_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with FakeServer(FakeServerConfig(ttft_s=0.001, itl_s=0.001)) as srv:
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        result = execute(_plan(cfg, AccuracySettings.model_validate("gsm8k")), tmp_path / "run",
                         RunEnvironment(device=fake_device("cpu", name="cpu")))
    (verdict,) = result.accuracy[cfg.config_id()]
    assert verdict.passed is None and verdict.status == "not run"
    assert verdict.reason.startswith("task data for 'gsm8k' cannot be fetched")
    assert result.points[0].status == "ok"  # the measured point is kept
    from bench.cli.progress import summary_table

    assert f"accuracy {cfg.config_id()} (task): not run: not run: task data for 'gsm8k'" not in summary_table(result)
    assert f"accuracy {cfg.config_id()} (task): not run: task data for 'gsm8k' cannot be fetched" in summary_table(result)


def test_the_paired_test_fails_a_significant_drop_against_the_reference():
    ref = ReferenceScore("cfg-bf16", "bf16", [True] * 45 + [False] * 5)
    cand = [True] * 30 + [False] * 20
    v = task_verdict(TASK, cand, floor=0.5, reference=ref, tolerance=0.02)
    assert v.passed is False
    assert v.reference is not None and v.reference.discordant_ref_only == 15 and v.reference.drop == pytest.approx(0.3)
    same = task_verdict(TASK, [True] * 45 + [False] * 5, floor=0.5, reference=ref)
    assert same.passed is True and same.reference is not None and same.reference.drop == 0


@pytest.mark.vllm
def test_the_gate_fails_on_dummy_weights_through_real_vllm(vllm_server, tmp_path):
    """Random weights answer no arithmetic: lm-eval against the live vLLM server scores about 0,
    and the gate fails with a one-line reason."""
    from bench.catalog import get_model

    folder = write_arith_task(tmp_path / "task", n=50)
    score = task_score(vllm_server.base_url, vllm_server.served_model,
                       TaskSpec(TASK, include_path=folder, num_fewshot=0, max_gen_toks=8, num_concurrent=4))
    floor = get_model("tiny-llama").accuracy[TASK]
    v = task_verdict(TASK, score.per_question, floor=floor.floor, floor_source=floor.source, seconds=score.seconds)
    print(f"\nvLLM dummy tiny-llama {TASK}: {score.correct}/{score.n}, lower {v.wilson_lower_95:.3f}, "
          f"{score.seconds:.1f} s; {v.reason}")
    assert v.n == 50 and v.score <= 0.1
    assert v.passed is False and "below the floor" in v.reason and "\n" not in v.reason


@pytest.mark.slow
def test_the_verdict_is_a_cost_model_column_and_gate_passed_reads_it(tmp_path):
    from bench.store.accuracy_rows import gate_passed
    from bench.store.rows import point_rows, rows_to_arrow
    from bench.store.schema import to_pandas

    folder = write_arith_task(tmp_path / "task", n=10)
    accuracy = AccuracySettings(mode="task", task=TASK, include_path=str(folder), num_fewshot=0)
    with FakeServer(FakeServerConfig(ttft_s=0.001, itl_s=0.001)) as srv:  # wrong answers: the gate fails
        cfg = EngineConfig(model="tiny-llama", engine="endpoint", endpoint_url=srv.base_url)
        run = execute(_plan(cfg, accuracy), tmp_path / "run", RunEnvironment(device=fake_device("cpu", name="cpu")))
    (row,) = point_rows("r1", run, include_invalid=True)
    assert (row["accuracy_task"], row["accuracy_n"], row["accuracy_score"], row["accuracy_passed"]) == (TASK, 10, 0.0, False)
    assert gate_passed(row) is False
    frame = to_pandas(rows_to_arrow([row, {**row, "accuracy_passed": None}]))
    assert [gate_passed(r) for _, r in frame.iterrows()] == [False, None]
    assert gate_passed({}) is None and gate_passed({"accuracy_passed": float("nan")}) is None


@pytest.mark.parametrize("value,mode,task", [("off", "off", "gsm8k"), ("agreement", "agreement", "gsm8k"),
                                             ("gsm8k", "task", "gsm8k"), ("mmlu", "task", "mmlu"),
                                             ({"task": TASK, "limit": 5}, "task", TASK)])
def test_the_sweep_key_and_the_option(value, mode, task):
    from bench.plan import sweep_from_dict

    base = {"models": ["tiny-llama"], "workloads": [{"input_len": 8, "output_len": 4}],
            "loads": [{"kind": "concurrency", "concurrency": [1]}]}
    s = sweep_from_dict({**base, "accuracy": value}).accuracy
    assert (s.mode, s.task) == (mode, task)
    assert sweep_from_dict(base).accuracy.mode == "agreement"  # the default
    assert sweep_from_dict(base, {"accuracy": value}).accuracy.mode == mode  # --accuracy


def test_a_bad_accuracy_key_is_one_line_naming_it():
    from bench.errors import ConfigError
    from bench.plan import sweep_from_dict

    base = {"models": ["tiny-llama"], "workloads": [{"input_len": 8, "output_len": 4}],
            "loads": [{"kind": "concurrency", "concurrency": [1]}]}
    with pytest.raises(ConfigError, match="accuracy") as e:
        sweep_from_dict({**base, "accuracy": {"task": "gsm8k", "limt": 5}}, source="s.yaml")
    assert "\n" not in str(e.value)


def test_a_configuration_that_fails_its_gate_is_never_on_the_pareto_front():
    import pandas as pd

    from bench.analysis.pareto import front_rows

    rows = pd.DataFrame({"interactivity_tok_s_user": [10.0, 20.0, 30.0], "tok_s_per_gpu": [300.0, 250.0, 400.0],
                         "accuracy_passed": pd.array([True, None, False], dtype="boolean")})
    front = front_rows(rows)
    assert front["tok_s_per_gpu"].tolist() == [300.0, 250.0]  # the failed 400 would dominate both


def test_lm_eval_logged_samples_are_read_typed_by_question_and_filter():
    """lm-eval's logged samples are decoded once (doc_id, filter); the verdict per question is
    the metric of the filter asked, in doc_id order; samples of another shape are one line."""
    from bench.run.accuracy_task import _per_question

    samples = [{"doc_id": 1, "filter": "strict", "exact_match": 1.0, "doc": {"q": "?"}, "resps": [["7"]]},
               {"doc_id": 0, "filter": "strict", "exact_match": 0.0},
               {"doc_id": 0, "filter": "flexible", "exact_match": 1.0}]
    assert _per_question(samples, "exact_match", None) == (False, True)
    assert _per_question(samples, "exact_match", "flexible") == (True,)
    with pytest.raises(AccuracyNotRun, match="no 'acc' for filter 'strict'"):
        _per_question(samples, "acc", None)
    with pytest.raises(AccuracyNotRun, match="malformed samples") as info:
        _per_question([{"doc_id": "first\nquestion", "filter": "strict"}], "exact_match", None)
    assert "\n" not in str(info.value)
