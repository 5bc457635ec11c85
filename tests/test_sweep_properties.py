"""Property tests of the sweep-file parser: whatever a file holds, loading it (and planning
it) ends in a plan or in one ConfigError line naming the file, never another exception."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.errors import ConfigError
from bench.plan import build_plan, load_sweep, sweep_from_dict

SOURCE = "prop.yaml"
KEYS = [
    "name", "models", "weights", "precisions", "engine", "endpoint_url", "engine_args", "gpus", "workloads",
    "loads", "repeats", "n_warmup", "n_requests", "requests_per_concurrency", "min_requests", "seed", "endpoint",
    "slo", "telemetry", "hardware", "devices", "out", "preflight", "kind", "concurrency", "rate_rps", "arrival",
    "burstiness", "max_concurrency", "batch", "input_len", "output_len", "input_len_range", "prefix_len",
    "suffix_len", "n_prefixes", "path", "max_input_len", "tensor_parallel_size", "pipeline_parallel_size",
    "data_parallel_size", "enable_expert_parallel", "max_num_seqs", "max_model_len", "extra", "key",
    "memory_fraction", "kv_overflow", "ttft_s", "tpot_s",
]
WORDS = ["tiny-llama", "random", "rate", "offline", "concurrency", "file", "shared_prefix", "gamma", "poisson",
         "bf16", "fp8", "fp8-kv", "auto", "vllm", "endpoint", "catalog", "skip", "allow", "real", "dummy"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS), st.text(string.printable, max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5), st.integers()), inner, max_size=5),
    ),
    max_leaves=25,
)
items = st.lists(st.dictionaries(st.sampled_from(KEYS[24:]), values, max_size=5), max_size=3)  # load/workload-like
sweeps = st.one_of(
    values,
    st.fixed_dictionaries(
        {"models": st.one_of(st.just(["tiny-llama"]), values), "workloads": st.one_of(items, values),
         "loads": st.one_of(items, values)},
        optional={k: values for k in KEYS[:24] if k not in ("models", "workloads", "loads")},
    ),
)


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweeps)
def test_any_dict_plans_or_fails_with_one_config_error_line(raw):
    try:
        sweep = sweep_from_dict(raw, source=SOURCE)
    except ConfigError as e:
        text = str(e)
        assert "\n" not in text and text.startswith(f"{SOURCE}: "), text
        return
    try:
        build_plan(sweep, "cpu-host", 1)
    except ConfigError as e:
        assert "\n" not in str(e)


@pytest.mark.slow
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), sweeps.map(lambda v: yaml.safe_dump(v, allow_unicode=True))))
def test_any_yaml_text_loads_or_fails_with_one_config_error_line(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_sweep(path)
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(str(path)), message
