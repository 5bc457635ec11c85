"""Sweep files -> plans: strict loading, crossing, ordering, overrides, ids, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import ConfigError
from bench.plan import (
    EngineConfig,
    Plan,
    build_plan,
    load_sweep,
    overrides_from_options,
    plan_from_options,
    precision_fields,
    sweep_from_dict,
)

REPO = Path(__file__).resolve().parent.parent
BASE = {
    "models": ["tiny-llama"],
    "workloads": [{"input_len": 64, "output_len": 32}],
    "loads": [{"concurrency": [1, 2]}],
}


def write(tmp_path, data, name="x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return path


def plan_of(data, hardware="h100-sxm", n_devices=1, overrides=None) -> Plan:
    return build_plan(sweep_from_dict(data, overrides, source="t.yaml"), hardware, n_devices)


# -- strict loading -------------------------------------------------------------------------------


def test_unknown_key_names_key_place_and_file(tmp_path):
    path = write(tmp_path, {**BASE, "loads": [{"concurrency": 1}, {"concurency": [1, 2]}]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert str(e.value).startswith(f"{path}: unknown key 'concurency' in loads[1]")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"modles": ["x"]}, "unknown key 'modles' at the top level"),
        ({"engine_args": {"max_num_seq": 8}}, "unknown key 'max_num_seq' in engine_args"),
        ({"models": [{"key": "tiny-llama", "wieghts": "dummy"}]}, "unknown key 'wieghts' in models[0]"),
        ({"workloads": [{"input_len": 8, "output_len": 8, "seeed": 1}]}, "unknown key 'seeed' in workloads[0]"),
        ({"loads": [{"kind": "rat", "rate_rps": 1}]}, "unknown kind 'rat' in loads[0] (expected: concurrency, rate, trace, offline)"),
        ({"workloads": [{"input_len": 8}]}, "missing key 'output_len' in workloads[0]"),
        ({"engine": "endpoint"}, "engine 'endpoint' needs endpoint_url"),
    ],
)
def test_bad_sweeps_fail_with_one_line(tmp_path, patch, message):
    path = write(tmp_path, {**BASE, **patch})
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read sweep file"):
        load_sweep(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"line 2 invalid YAML"):
        load_sweep(write(tmp_path, "models: [a\nloads: {\n"))
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        precision_fields("int4")


def test_precision_names_map_to_engine_fields():
    assert precision_fields("bf16") == {"dtype": "bfloat16"}
    assert precision_fields("fp8") == {"quantization": "fp8"}
    assert precision_fields("fp16+fp8-kv") == {"dtype": "float16", "kv_cache_dtype": "fp8"}
    assert EngineConfig(model="m", dtype="bfloat16", kv_cache_dtype="fp8").precision() == "bf16+fp8-kv"
    assert EngineConfig(model="m", quantization="fp8").precision() == "fp8"


# -- crossing and ordering ------------------------------------------------------------------------


def test_cross_product_counts():
    data = {
        "models": ["tiny-llama", "tiny-qwen3-moe"],
        "precisions": ["bf16", "fp8"],
        "engine_args": {"tensor_parallel_size": [1, 2]},
        "workloads": [{"input_len": 64, "output_len": 32}, {"input_len": 128, "output_len": 16}],
        "loads": [{"concurrency": [4, 1, 2]}],
        "repeats": 2,
    }
    plan = plan_of(data, n_devices=2)
    assert len(plan.engine_configs) == 2 * 2 * 2
    assert len(plan.points) == 8 * 2 * 3 * 2 and not plan.skipped
    ids = [p.point_id for p in plan.points]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9.-]+_[A-Za-z0-9.-]+_[A-Za-z0-9.-]+_r\d+", i) for i in ids)


def test_order_is_config_then_workload_then_load_ascending_then_repeat():
    data = {
        "models": ["tiny-llama", "tiny-qwen3-moe"],
        "workloads": [{"input_len": 128, "output_len": 16}, {"input_len": 64, "output_len": 32}],
        "loads": [{"concurrency": [4, 1]}, {"kind": "rate", "rate_rps": [2.0, 0.5]}, {"concurrency": 2}],
        "repeats": 2,
    }
    plan = plan_of(data)
    configs = [p.engine_config_id for p in plan.points]
    assert configs == sorted(configs, key=[c.config_id() for c in plan.engine_configs].index)
    first = [p.point_id.split("_", 1)[1] for p in plan.points_for(plan.engine_configs[0].config_id())]
    expected = [
        f"{wl}_{load}_r{rep}"
        for wl in ("rand-128-16", "rand-64-32")
        for load in ("c1", "c2", "c4", "rps0.5", "rps2")
        for rep in (0, 1)
    ]
    assert first == expected


def test_identical_configs_and_loads_collapse():
    plan = plan_of({**BASE, "precisions": ["bf16", "bfloat16"], "loads": [{"concurrency": [1, 1]}, {"concurrency": 1}]})
    assert len(plan.engine_configs) == 1 and len(plan.points) == 1


def test_per_model_axes_replace_the_sweep_axes():
    data = {**BASE, "models": ["tiny-llama", {"key": "tiny-qwen3-moe", "precisions": ["fp16"]}], "precisions": ["bf16"]}
    assert [c.precision() for c in plan_of(data).engine_configs] == ["bf16", "fp16"]


def test_request_counts_and_warmup():
    plan = plan_of({**BASE, "loads": [{"concurrency": [1, 8]}]})
    # min_requests (16) + the level: the requests in flight at the last send finish outside the window
    assert [(p.n_warmup, p.n_requests) for p in plan.points] == [(1, 17), (8, 32)]
    plan = plan_of({**BASE, "n_requests": 5, "n_warmup": 0})
    assert {(p.n_warmup, p.n_requests) for p in plan.points} == {(0, 5)}


def test_real_weights_resolve_through_the_catalog():
    plan = plan_of({**BASE, "models": ["llama-3.1-8b", "deepseek-v2-lite"], "weights": "real", "precisions": ["bf16", "fp8"]})
    by = {(c.model, c.precision()): c for c in plan.engine_configs}
    assert by[("llama-3.1-8b", "bf16")].weights == "meta-llama/Llama-3.1-8B-Instruct"
    fp8 = by[("llama-3.1-8b", "fp8")]
    assert fp8.weights == "RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8" and fp8.weights_prequantized
    ds = by[("deepseek-v2-lite", "fp8")]  # no fp8 checkpoint: quantized when loaded
    assert ds.weights == "deepseek-ai/DeepSeek-V2-Lite-Chat" and not ds.weights_prequantized


def test_slo_from_catalog_or_file():
    assert plan_of({**BASE, "models": ["llama-3.1-8b"], "slo": "catalog"}).points[0].slo == {"ttft_s": 2.0, "tpot_s": 0.1}
    assert plan_of({**BASE, "slo": "catalog"}).points[0].slo is None  # tiny-llama has none
    assert plan_of({**BASE, "slo": {"ttft_s": 1.5}}).points[0].slo == {"ttft_s": 1.5}


def test_skipped_points_and_dead_configs():
    plan = plan_of({**BASE, "precisions": ["auto", "fp8"]}, hardware="cpu-host")
    assert [c.precision() for c in plan.engine_configs] == ["auto"]
    assert [c.precision() for c in plan.skipped_engine_configs] == ["fp8"]
    assert {s.reason for s in plan.skipped} == {"fp8 not supported on Generic CPU host"}
    dead = plan.skipped_engine_configs[0].config_id()
    assert plan.engine_config(dead).quantization == "fp8" and plan.points_for(dead) == []
    with pytest.raises(ConfigError):
        plan.engine_config("nope")


# -- overrides ----------------------------------------------------------------------------------


def test_overrides_replace_file_values(tmp_path):
    path = write(tmp_path, {**BASE, "engine_args": {"max_num_seqs": 4}, "n_requests": 10})
    sweep = load_sweep(path, {"concurrency": [8, 16], "output_len": 7, "engine_args.max_num_seqs": 32,
                              "n_requests": None, "repeats": 3})
    assert [lv for load in sweep.loads for lv in load.concurrency] == [8, 16]
    assert (sweep.workloads[0].input_len, sweep.workloads[0].output_len) == (64, 7)
    assert sweep.engine_args.max_num_seqs == [32] and sweep.n_requests == 10 and sweep.repeats == 3
    with pytest.raises(ConfigError, match="unknown override 'concurency'"):
        load_sweep(path, {"concurency": [1]})
    with pytest.raises(ConfigError, match=f"{path}: unknown key 'bogus' in preflight"):
        load_sweep(path, {"preflight.bogus": 1})


def test_cli_option_names_become_overrides():
    got = overrides_from_options({"model": "llama-3.1-8b", "dtype": "bfloat16", "quantization": "fp8",
                                  "engine_args": {"enforce_eager": True}, "hardware_id": "h100-sxm",
                                  "tensor_parallel_size": None, "out_dir": "r"})
    assert got == {"model": "llama-3.1-8b", "precisions": ["bfloat16+fp8"], "extra_args": {"enforce_eager": True},
                   "hardware_id": "h100-sxm", "out_dir": "r"}
    sweep = sweep_from_dict(BASE, got)
    assert sweep.models == ["llama-3.1-8b"] and sweep.hardware == "h100-sxm" and sweep.out == "r"
    assert sweep.engine_args.extra == [{"enforce_eager": True}]


def test_run_options_and_sweep_share_one_path():
    from_run = plan_from_options("tiny-llama", concurrency=[1, 2], input_len=64, output_len=32,
                                 hardware="cpu-host", dtype="bfloat16", max_num_seqs=8, seed=3)
    from_sweep = plan_of({**BASE, "precisions": "bf16", "engine_args": {"max_num_seqs": 8}, "seed": 3},
                         hardware="cpu-host")
    assert [p.point_id for p in from_run.points] == [p.point_id for p in from_sweep.points]
    assert from_run.points == from_sweep.points and from_run.seed == 3


# -- ids ----------------------------------------------------------------------------------------


def test_config_id_is_stable_and_canonical():
    cfg = EngineConfig(model="llama-3.1-8b", dtype="bfloat16", max_num_seqs=64)
    # pinned: ids name result files and resumed runs, so they must not drift between versions
    assert cfg.config_id() == "llama-3.1-8b-5bf71c0e"
    assert EngineConfig(model="tiny-llama").config_id() == "tiny-llama-1024224a"
    assert EngineConfig(model="llama-3.1-8b", dtype="bfloat16", max_num_seqs=64, kv_cache_dtype="auto").config_id() \
        == cfg.config_id()
    assert EngineConfig(model="llama-3.1-8b", dtype="bfloat16", max_num_seqs=128).config_id() != cfg.config_id()


def test_point_ids_are_stable_across_builds(tmp_path):
    path = write(tmp_path, {**BASE, "repeats": 2})
    first = [p.point_id for p in build_plan(load_sweep(path), "cpu-host", 1).points]
    second = [p.point_id for p in build_plan(load_sweep(path), "cpu-host", 1).points]
    assert first == second


# -- shipped sweep files and the CLI ------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_plan(path):
    sweep = load_sweep(path)
    plan = build_plan(sweep, "h100-sxm", sweep.devices or 1)  # a file that needs a whole box says so
    assert plan.points


def test_cpu_tiny_is_two_configs_of_three_loads():
    plan = build_plan(load_sweep(REPO / "sweeps/cpu-tiny.yaml"), "cpu-host", 1)
    assert [c.model for c in plan.engine_configs] == ["tiny-llama", "tiny-qwen3-moe"]
    assert len(plan.points) == 6 and not plan.skipped


def test_bench_plan_cli():
    runner = CliRunner()
    result = runner.invoke(cli, ["plan", str(REPO / "sweeps/cpu-tiny.yaml"), "--hardware", "cpu-host"])
    assert result.exit_code == 0, result.output
    plan = build_plan(load_sweep(REPO / "sweeps/cpu-tiny.yaml"), "cpu-host", 1)
    for p in plan.points:
        assert p.engine_config_id in result.output
    assert "6 points on 2 engine configs, 0 skipped" in result.output
    from bench.plan.preflight import ENGINE_START_S

    assert f"estimate: 2 engine starts x {ENGINE_START_S['cpu']:.0f} s" in result.output


def test_bench_plan_cli_overrides_and_skips():
    runner = CliRunner()
    args = ["plan", str(REPO / "sweeps/cpu-tiny.yaml"), "--hardware", "cpu-host", "--precision", "auto",
            "--precision", "fp8", "--concurrency", "1,3", "--set", "repeats=2", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    plan = Plan.model_validate(json.loads(result.output))
    assert len(plan.points) == 2 * 2 * 2 and len(plan.skipped) == 2 * 2 * 2
    assert {p.load.concurrency for p in plan.points} == {1, 3}


def test_bench_plan_cli_error_is_one_line(tmp_path):
    path = write(tmp_path, {**BASE, "loads": [{"concurency": 1}]})
    result = CliRunner().invoke(cli, ["plan", str(path), "--hardware", "cpu-host"])
    assert result.exit_code == 2
    assert result.output.strip() == f"bench: error: {path}: unknown key 'concurency' in loads[0] (and 1 more)"


# -- parallelism and devices (issue 8) ------------------------------------------------------------


def test_dp_counts_in_n_gpus():
    assert EngineConfig(model="m", tensor_parallel_size=2, data_parallel_size=2).n_gpus == 4
    # a data_parallel_size passed through as an engine arg (older sweeps) counts too
    assert EngineConfig(model="m", tensor_parallel_size=2, extra_args={"data_parallel_size": 2}).n_gpus == 4


def test_parallel_sizes_keep_the_ids_they_had_as_engine_args():
    # ids pinned from the hash of the configs as older code built them (sizes inside extra_args)
    pp = EngineConfig(model="llama-3.1-8b", tensor_parallel_size=2, pipeline_parallel_size=2)
    assert pp.config_id() == "llama-3.1-8b-8240a2c0"
    old = EngineConfig(model="llama-3.1-8b", tensor_parallel_size=2, extra_args={"pipeline_parallel_size": 2})
    assert old.pipeline_parallel_size == 2 and old.extra_args == {} and old == pp
    moe = EngineConfig(model="qwen3-30b-a3b", tensor_parallel_size=2, data_parallel_size=2, enable_expert_parallel=True)
    assert moe.config_id() == "qwen3-30b-a3b-212609e2"


def test_gpus_do_not_enter_the_config_id_and_must_match_n_gpus():
    cfg = EngineConfig(model="tiny-llama", tensor_parallel_size=2, gpus=[2, 3])
    assert cfg.config_id() == EngineConfig(model="tiny-llama", tensor_parallel_size=2).config_id()
    for gpus, message in [([0], "gpus lists 1 devices, the configuration needs 2"),
                          ([1, 1], "lists a device twice"), ([0, -1], "greater than or equal to 0")]:
        with pytest.raises(ValueError, match=message):
            EngineConfig(model="tiny-llama", tensor_parallel_size=2, gpus=gpus)


def test_old_run_json_engine_configs_still_load():
    old = {"model": "tiny-llama", "weights": "dummy", "weights_prequantized": False, "engine": "vllm",
           "endpoint_url": None, "dtype": "auto", "quantization": None, "kv_cache_dtype": "auto",
           "tensor_parallel_size": 1, "max_num_seqs": 8, "max_model_len": 512, "extra_args": {}}
    cfg = EngineConfig.model_validate(old)
    assert cfg.config_id() == "tiny-llama-5512f474" and cfg.n_gpus == 1 and cfg.gpus is None


def test_sweep_crosses_pp_dp_ep_and_takes_gpus(tmp_path):
    data = {**BASE, "models": ["qwen3-30b-a3b"], "gpus": [4, 5, 6, 7],
            "engine_args": {"tensor_parallel_size": 2, "data_parallel_size": 2, "enable_expert_parallel": [False, True]}}
    plan = plan_of(data, n_devices=8)
    cfgs = plan.engine_configs
    assert [(c.tensor_parallel_size, c.data_parallel_size, c.enable_expert_parallel) for c in cfgs] == [
        (2, 2, False), (2, 2, True)]
    assert all(c.gpus == [4, 5, 6, 7] and c.n_gpus == 4 for c in cfgs)
    per_model = {**BASE, "models": [{"key": "tiny-llama", "gpus": 1}], "gpus": [0, 1]}
    assert plan_of(per_model, "cpu-host").engine_configs[0].gpus == [1]


def test_sweep_gpus_of_the_wrong_length_is_a_plan_time_error(tmp_path):
    path = write(tmp_path, {**BASE, "gpus": [0, 1], "engine_args": {"tensor_parallel_size": [1, 2]}})
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert str(e.value).startswith(f"{path}: ") and "gpus lists 2 devices, the configuration needs 1" in str(e.value)


def test_pipeline_parallel_in_extra_args_keeps_working(tmp_path):
    new = plan_of({**BASE, "engine_args": {"pipeline_parallel_size": 2}}, "h100-sxm", 2)
    old = plan_of({**BASE, "engine_args": {"extra": {"pipeline_parallel_size": 2}}}, "h100-sxm", 2)
    assert [p.point_id for p in new.points] == [p.point_id for p in old.points]
    assert old.engine_configs[0].pipeline_parallel_size == 2 and old.engine_configs[0].n_gpus == 2


def test_cli_parallel_options(tmp_path):
    args = ["plan", str(REPO / "sweeps/cpu-tiny.yaml"), "--hardware", "h100-sxm", "--devices", "8", "--tp", "2",
            "--pp", "2", "--dp", "2", "--ep", "--gpus", "0,1,2,3,4,5,6,7", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    cfg = Plan.model_validate(json.loads(result.output)).engine_configs[0]
    assert (cfg.tensor_parallel_size, cfg.pipeline_parallel_size, cfg.data_parallel_size) == (2, 2, 2)
    assert cfg.enable_expert_parallel and cfg.gpus == list(range(8))
    few = CliRunner().invoke(cli, [*args[:-3], "--hardware", "h100-sxm", "--devices", "4"])
    assert few.exit_code == 0 and "needs 8 GPUs (TP 2 x PP 2 x DP 2 + EP), the box has 4" in few.output
    bad = CliRunner().invoke(cli, [*args[:-3], "--gpus", "0,1"])
    assert bad.exit_code == 2 and "gpus lists 2 devices, the configuration needs 8" in bad.output


# -- typed loads and workloads ----------------------------------------------------------------------


def test_points_carry_typed_specs_that_dump_the_same_dicts(tmp_path, monkeypatch):
    from bench.plan import (
        ConcurrencyLoad,
        RandomWorkload,
        RateLoad,
        SharedPrefixWorkload,
    )

    monkeypatch.chdir(tmp_path)  # the plan reads the prompt file (relative to the current folder)
    (tmp_path / "p.jsonl").write_text('{"prompt": "hello"}\n')
    data = {**BASE, "workloads": [{"input_len": 64, "output_len": 32},
                                  {"kind": "shared_prefix", "prefix_len": 8, "suffix_len": 4, "output_len": 8},
                                  {"kind": "file", "path": "p.jsonl", "max_input_len": 100, "output_len": 8}],
            "loads": [{"concurrency": 2}, {"kind": "rate", "rate_rps": [1, 2.5], "max_concurrency": 4}]}
    plan = plan_of(data, "cpu-host")
    first = plan.points[0]
    assert isinstance(first.load, ConcurrencyLoad) and isinstance(first.workload, RandomWorkload)
    dumped = [(p.workload.model_dump(mode="json"), p.load.model_dump(mode="json")) for p in plan.points]
    assert dumped[0] == ({"kind": "random", "input_len": 64, "output_len": 32}, {"kind": "concurrency", "concurrency": 2})
    assert dumped[1][1] == {"kind": "rate", "rate_rps": 1.0, "arrival": "poisson", "burstiness": 1.0, "max_concurrency": 4}
    sp = next(p.workload for p in plan.points if isinstance(p.workload, SharedPrefixWorkload))
    assert sp.model_dump(mode="json") == {"kind": "shared_prefix", "prefix_len": 8, "suffix_len": 4, "output_len": 8}
    files = {json.dumps(p.workload.model_dump(mode="json")) for p in plan.points if p.workload.kind == "file"}
    assert files == {json.dumps({"kind": "file", "path": "p.jsonl", "output_len": 8})}  # max_input_len: preflight only
    assert Plan.model_validate(json.loads(plan.model_dump_json())) == Plan.model_validate(plan.model_dump(mode="json"))
    assert isinstance(plan.points[-1].load, RateLoad)
