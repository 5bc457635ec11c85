"""Per-engine devices (issue 8 defect 1): explicit `gpus` checked against the box, automatic
assignment honouring CUDA_VISIBLE_DEVICES, n_gpus = TP x PP x DP."""

import pytest

from bench.errors import ConfigError
from bench.plan import EngineConfig
from bench.run.devices import (
    check_devices,
    devices_for,
    plan_devices,
    visible_gpu_indices,
)

EIGHT = list(range(8))


def test_visible_devices_honour_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,6")
    assert visible_gpu_indices(8) == [3, 6]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu_indices(4) == [0, 1, 2, 3]
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    assert visible_gpu_indices(8, vendor="amd") == [1]
    assert visible_gpu_indices(8, vendor="nvidia") == list(range(8))


def test_n_gpus_is_tp_times_pp_times_dp():
    assert EngineConfig(model="tiny-llama", tensor_parallel_size=2, data_parallel_size=2).n_gpus == 4
    assert EngineConfig(model="tiny-llama", tensor_parallel_size=2, pipeline_parallel_size=2,
                        data_parallel_size=2).n_gpus == 8
    assert EngineConfig(model="tiny-llama").n_gpus == 1
    # --engine-arg data_parallel_size=2 (an engine argument passed through) counts the same
    assert EngineConfig(model="tiny-llama", tensor_parallel_size=2, extra_args={"data_parallel_size": 2}).n_gpus == 4


def test_automatic_assignment_takes_the_first_visible_devices():
    cfg = EngineConfig(model="tiny-llama", tensor_parallel_size=2)
    assert devices_for(cfg, EIGHT) == [0, 1]
    assert devices_for(cfg, [3, 6, 7]) == [3, 6]  # CUDA_VISIBLE_DEVICES=3,6,7
    assert devices_for(cfg, EIGHT, exclude={0, 1, 2}) == [3, 4]


def test_explicit_gpus_are_kept_and_checked_against_the_box():
    cfg = EngineConfig(model="tiny-llama", tensor_parallel_size=2, gpus=[4, 5])
    assert devices_for(cfg, EIGHT) == [4, 5]
    with pytest.raises(ConfigError, match=r"\[9\] do not exist.*visible: \[0, 1, 2, 3\]"):
        devices_for(EngineConfig(model="tiny-llama", gpus=[9]), [0, 1, 2, 3])
    with pytest.raises(ConfigError, match=r"\[5\] do not exist"):
        devices_for(EngineConfig(model="tiny-llama", gpus=[5]), [3, 4])  # hidden by CUDA_VISIBLE_DEVICES


def test_too_few_devices_is_refused_with_the_numbers():
    cfg = EngineConfig(model="tiny-llama", tensor_parallel_size=4, data_parallel_size=2)
    with pytest.raises(ConfigError, match="needs 8 device.*4 free of 4 visible"):
        devices_for(cfg, [0, 1, 2, 3])


def test_repeated_index_is_refused():
    with pytest.raises(ConfigError, match="repeats"):
        check_devices([1, 1], EIGHT, "x")


def test_plan_devices_lets_sequential_configs_reuse_devices():
    a = EngineConfig(model="tiny-llama", tensor_parallel_size=2)
    b = EngineConfig(model="tiny-llama", tensor_parallel_size=4)
    assert plan_devices([a, b], EIGHT) == {a.config_id(): [0, 1], b.config_id(): [0, 1, 2, 3]}
    assert plan_devices([a, b], None) == {a.config_id(): None, b.config_id(): None}  # no GPU list: the engine's own
