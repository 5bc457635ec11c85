"""Precisions (bench.catalog.dtypes): one label rule for the plan, the run and the shared cost
table; names, labels and byte widths read from one module."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.catalog import dtypes
from bench.errors import ConfigError
from bench.plan import EngineConfig
from bench.results.config import StoredEngineConfig

# (dtype, quantization, kv_cache_dtype) -> the label a reader of the cost table sees:
# the weights' precision first, the KV cache's after it when it has its own.
LABELS = [
    (("auto", None, "auto"), "auto"),
    (("bfloat16", None, "auto"), "bf16"),
    (("float16", None, "auto"), "fp16"),
    (("float32", None, "auto"), "fp32"),
    (("auto", "fp8", "auto"), "fp8"),
    (("bfloat16", "fp8", "auto"), "fp8"),
    (("bfloat16", None, "fp8"), "bf16+fp8-kv"),
    (("bfloat16", "fp8", "fp8"), "fp8+fp8-kv"),
    (("auto", "fp8", "fp8"), "fp8+fp8-kv"),
    (("auto", None, "fp8"), "auto+fp8-kv"),
]


@pytest.mark.parametrize(("fields", "label"), LABELS)
def test_the_plan_and_the_store_label_a_precision_alike(fields, label):
    """Was: bf16 weights + fp8 quantization + fp8 KV cache read "bf16+fp8+fp8-kv" in the run
    (EngineConfig.precision) and "fp8" in the shared table (the store's fallback, KV dropped)."""
    dtype, quantization, kv = fields
    cfg = EngineConfig(model="m", dtype=dtype, quantization=quantization, kv_cache_dtype=kv)
    assert cfg.precision() == label
    stored = {"dtype": dtype, "quantization": quantization, "kv_cache_dtype": kv}
    assert StoredEngineConfig(**stored).precision_label() == label  # what the store's table labels it
    assert StoredEngineConfig(**stored, precision=cfg.precision()).precision_label() == label


def test_a_label_written_by_an_older_bench_does_not_override_the_rule():
    old = {"dtype": "bfloat16", "quantization": "fp8", "kv_cache_dtype": "fp8", "precision": "bf16+fp8+fp8-kv"}
    assert StoredEngineConfig(**old).precision_label() == "fp8+fp8-kv"


@pytest.mark.parametrize("name", ["bf16", "fp8", "bf16+fp8-kv", "bfloat16+fp8+fp8-kv", "fp16+fp8", "auto+fp8-kv"])
def test_a_precision_name_reads_back_as_the_fields_it_was_made_from(name):
    fields = dtypes.precision_fields(name)
    again = dtypes.precision_fields(dtypes.precision_name(fields.get("dtype"), fields.get("quantization"),
                                                          fields.get("kv_cache_dtype")))
    assert {"dtype": "auto", **fields} == {"dtype": "auto", **again}


def test_an_unknown_precision_part_is_one_line_naming_the_parts():
    with pytest.raises(ConfigError, match=r"unknown precision 'int4' \(known parts: auto, bf16"):
        dtypes.precision_fields("int4")
    with pytest.raises(ConfigError, match="sets dtype twice"):
        dtypes.precision_fields("bf16+fp16")


def test_names_labels_and_bytes():
    assert [dtypes.dtype_label(n) for n in ("bfloat16", "torch.float16", "half", "float", "auto")] == \
        ["bf16", "fp16", "fp16", "fp32", "auto"]
    assert dtypes.dtype_name("bf16") == dtypes.dtype_name("bfloat16") == "bfloat16"
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        dtypes.dtype_name("int8")
    assert dtypes.matrix_precision(1.0) == "fp8" and dtypes.matrix_precision(4.0) == "bf16"
    assert all(dtypes.is_fp8(k) for k in ("fp8", "fp8_e4m3", "fp8_e5m2")) and not dtypes.is_fp8("auto")
    assert dtypes.bytes_per_param(EngineConfig(model="m", dtype="float32")) == 4.0
    assert dtypes.kv_bytes_per_elem(EngineConfig(model="m", dtype="float32", kv_cache_dtype="fp8_e5m2")) == 1.0


def test_the_cli_precision_choices_are_the_modules():
    from bench.cli import COMMANDS

    params = {p.name: p for p in COMMANDS.get("run").params}
    assert list(params["dtype"].type.choices) == list(dtypes.DTYPES)
    assert list(params["quantization"].type.choices) == list(dtypes.QUANTIZATIONS)
    assert list(params["kv_cache_dtype"].type.choices) == list(dtypes.KV_CACHE_DTYPES)
    result = CliRunner().invoke(COMMANDS.get("run"), ["--dtype", "int4"])
    assert result.exit_code == 2 and "'bfloat16'" in result.output
