"""Sweep files are validated when they are loaded, before any run folder exists: strict
types, ranges, empty lists, odd keys and unreadable text are one ConfigError line naming the
key and the file (issue 11 defect 7)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_plan import BASE, plan_of, write

from bench.cli import cli
from bench.errors import ConfigError
from bench.plan import Plan, load_sweep, plan_from_options, sweep_from_dict


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"loads": [{"concurrency": -2}]}, "loads[0].concurrency[0]: Input should be greater than or equal to 1"),
        ({"loads": [{"concurrency": [1, 0]}]}, "loads[0].concurrency[1]: Input should be greater than or equal to 1"),
        ({"loads": [{"concurrency": []}]}, "loads[0].concurrency: empty list, give at least one value"),
        ({"loads": [{"concurrency": True}]}, "loads[0].concurrency[0]: Input should be a valid integer"),
        ({"loads": [{"kind": "rate", "rate_rps": [0]}]}, "loads[0].rate_rps[0]: Input should be greater than 0"),
        ({"loads": [{"kind": "rate", "rate_rps": []}]}, "loads[0].rate_rps: empty list, give at least one value"),
        ({"loads": [{"kind": "offline", "batch": 0}]}, "loads[0].batch[0]: Input should be greater than or equal to 1"),
        ({"n_requests": True}, "n_requests: Input should be a valid integer"),
        ({"n_requests": 0}, "n_requests: Input should be greater than or equal to 1"),
        ({"repeats": 1.5}, "repeats: Input should be a valid integer"),
        ({"workloads": [{"input_len": 0, "output_len": 8}]}, "workloads[0].input_len: Input should be greater than"),
        ({"workloads": [{"input_len": True, "output_len": 8}]}, "workloads[0].input_len: Input should be a valid integer"),
        ({"workloads": []}, "workloads: empty list, give at least one value"),
        ({"engine_args": {"tensor_parallel_size": 0}}, "engine_args.tensor_parallel_size[0]: Input should be greater"),
        ({"engine_args": {"pipeline_parallel_size": []}}, "engine_args.pipeline_parallel_size: empty list"),
        ({"engine_args": {"data_parallel_size": -1}}, "engine_args.data_parallel_size[0]: Input should be greater"),
        ({"precisions": []}, "precisions: empty list, give at least one value"),
        ({"gpus": [0, True]}, "gpus[1]: Input should be a valid integer"),
        ({"engine_args": {"enable_expert_parallel": "yes"}}, "engine_args.enable_expert_parallel[0]: Input should be a valid boolean"),
        ({"workloads": [{"input_len": 8, "output_len": 8, "as_text": 1}]}, "workloads[0].as_text: Input should be a valid boolean"),
    ],
)
def test_bad_values_fail_when_the_sweep_is_loaded(tmp_path, patch, message):
    path = write(tmp_path, {**BASE, **patch})
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_bench_plan_refuses_negative_concurrency_before_any_run(tmp_path):
    path = write(tmp_path, {**BASE, "loads": [{"concurrency": [-2, 0]}]})
    result = CliRunner().invoke(cli, ["plan", str(path), "--hardware", "cpu-host"])
    assert result.exit_code == 2 and "c-2" not in result.output
    assert result.output.startswith(f"bench: error: {path}: loads[0].concurrency[0]: Input should be greater")


@pytest.mark.parametrize(("content", "message"), [
    (b"\x08", "invalid YAML: unacceptable character #x0008"),  # a yaml ReaderError: its text is two lines
    (b"models: [\xff]", "not UTF-8 text"),  # was a UnicodeDecodeError traceback
])
def test_unreadable_sweep_text_is_one_config_error_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value) and "\n" not in str(e.value)


def test_an_infinite_rate_survives_the_plan_json_packed_workers_read():
    plan = plan_of({**BASE, "loads": [{"kind": "rate", "rate_rps": float("inf"), "max_concurrency": 2}]}, "cpu-host")
    again = Plan.model_validate_json(plan.model_dump_json())  # was rate_rps null: the worker failed to start
    assert again.points[0].load.rate_rps == float("inf") and again.points[0].point_id.endswith("_rpsinf-mc2_r0")


def test_plan_from_options_takes_the_parallel_options():
    plan = plan_from_options("tiny-llama", hardware="cpu-host", n_devices=8, tensor_parallel_size=2,
                             pipeline_parallel_size=2, data_parallel_size=2, enable_expert_parallel=True,
                             gpus=list(range(8)))
    cfg = plan.engine_configs[0]
    assert cfg.n_gpus == 8 and cfg.enable_expert_parallel and cfg.gpus == list(range(8))


@pytest.mark.parametrize(("raw", "message"), [
    ({"<": None, **BASE}, "t.yaml: unknown key '<' at the top level"),  # was an IndexError
    ({"\n": 1, **BASE}, "t.yaml: unknown key '\\n' at the top level"),  # was a two-line message
])
def test_odd_keys_are_named_on_one_line(raw, message):
    with pytest.raises(ConfigError) as e:
        sweep_from_dict(raw, source="t.yaml")
    assert str(e.value) == message
