"""bench compare holds serving levers apart (issue 21 item 5): a speculative point, a LoRA mix
or a structured-output mode is its own series, never on its baseline's Pareto front; --where
holds chosen axes fixed so the series differ only in the others."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.analysis.pareto import hold_fixed, split_series
from bench.cli import cli


def _rows() -> pd.DataFrame:
    base = {"hardware": "h100-sxm", "precision": "bf16", "kv_cache_dtype": "auto", "engine": "vllm", "n_gpus": 1}
    return pd.DataFrame([
        base | {"spec_method": "none", "lora_mix": None, "structured_mode": None, "tok_s_per_gpu": 100.0},
        base | {"spec_method": "ngram", "lora_mix": None, "structured_mode": None, "tok_s_per_gpu": 150.0},
        base | {"spec_method": "none", "lora_mix": "base:0.5,sql:0.5", "structured_mode": None, "tok_s_per_gpu": 90.0},
        base | {"engine": "sglang", "spec_method": "none", "lora_mix": None, "structured_mode": "json_schema",
                "tok_s_per_gpu": 80.0},
    ])


def test_each_lever_setting_is_its_own_series():
    labels = [label for label, _, _ in split_series(_rows())]
    assert labels == ["h100-sxm bf16 sglang json_schema", "h100-sxm bf16 vllm", "h100-sxm bf16 vllm lora[base:0.5,sql:0.5]",
                      "h100-sxm bf16 vllm spec-ngram"]


def test_a_table_without_lever_columns_splits_as_before():
    rows = _rows().drop(columns=["spec_method", "lora_mix", "structured_mode"])
    assert [label for label, _, _ in split_series(rows)] == ["h100-sxm bf16 sglang", "h100-sxm bf16 vllm"]


def test_where_holds_axes_fixed_and_names_an_unknown_column():
    held = hold_fixed(_rows(), [("engine", "vllm"), ("lora_mix", "")])
    assert sorted(held["spec_method"]) == ["ngram", "none"]  # only the speculation axis left free
    with pytest.raises(ValueError, match="--where nosuch=...: no such column"):
        hold_fixed(_rows(), [("nosuch", "1")])


def test_compare_where_is_refused_in_one_line_when_malformed(tmp_path):
    res = CliRunner().invoke(cli, ["compare", "results/cpu-host", "--model", "tiny-llama", "--where", "engine",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "expected COLUMN=VALUE" in res.output
