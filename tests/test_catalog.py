"""The catalog: strict loading, the model arithmetic against hand calculations, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.catalog import (
    catalog_dir,
    count_params,
    get_hardware,
    get_model,
    load_hardware,
    load_models,
)
from bench.cli import cli
from bench.errors import ConfigError

REFERENCE_MODELS = [
    "llama-3.1-8b", "llama-3.1-70b", "llama-3.3-70b", "llama-2-70b", "qwen2.5-7b", "qwen2.5-72b", "qwen3-8b",
    "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v2-lite", "deepseek-v3", "deepseek-r1",
    "mixtral-8x7b", "gpt-oss-20b", "gpt-oss-120b",
]
TINY_MODELS = ["tiny-llama", "tiny-qwen3-moe", "tiny-deepseek-v2"]
REFERENCE_HARDWARE = [
    "a100-80g-sxm", "h100-sxm", "h100-pcie", "h200-sxm", "b200", "gb200", "l40s", "l4",
    "rtx-4090", "rtx-5090", "mi300x", "mi325x", "mi355x",
]


def _catalog_copy(tmp_path: Path) -> Path:
    """A writable copy of the real catalog, to break on purpose."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(catalog_dir() / "models.yaml", tmp_path / "models.yaml")
    shutil.copytree(catalog_dir() / "hardware", tmp_path / "hardware")
    return tmp_path


def _edit_models(path: Path, key: str, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    data[key].update(changes)
    path.write_text(yaml.safe_dump(data))


# ---- contents ---------------------------------------------------------------------------

def test_every_reference_model_and_card_is_cataloged():
    models = load_models()
    assert set(REFERENCE_MODELS + TINY_MODELS) == set(models)
    for key in REFERENCE_MODELS:
        assert models[key].hf_repo and not models[key].tiny
    for key in TINY_MODELS:
        assert models[key].tiny and models[key].hf_repo is None
    assert set(REFERENCE_HARDWARE + ["cpu-host"]) == set(load_hardware())


def test_exponent_counts_load_as_integers():
    m = get_model("llama-3.1-8b")
    assert m.total_params == 8_000_000_000 and isinstance(m.total_params, int)
    assert get_model("gpt-oss-120b").active_params == 5_100_000_000


def test_slo_from_mlperf():
    assert get_model("llama-3.1-8b").slo.model_dump(exclude={"source"}) == {"ttft_s": 2.0, "tpot_s": 0.1}
    assert get_model("deepseek-r1").slo.tpot_s == 0.08
    assert get_model("gpt-oss-120b").slo.ttft_s == 3.0
    assert get_model("llama-3.3-70b").slo.tpot_s == 0.2
    assert get_model("qwen3-8b").slo is None


def test_hardware_entries():
    h = get_hardware("h100-sxm")
    assert (h.memory_gb, h.bandwidth_tbs, h.power_w) == (80, 3.35, 700)
    assert h.tflops == {"bf16": 989, "fp16": 989, "fp8": 1979, "fp4": None}
    assert h.prices.rental_usd_per_gpu_hour.value == pytest.approx(3.3)  # midpoint of 2.7-3.9
    assert "2.7-3.9" in h.prices.rental_usd_per_gpu_hour.source
    assert h.prices.all_in_kw_per_gpu.value == 1.73
    assert h.prices.server_factor.value == 1.4
    assert get_hardware("h100-pcie").prices.rental_usd_per_gpu_hour is None  # not in hardware.md
    assert get_hardware("a100-80g-sxm").tflops["fp8"] is None
    assert get_hardware("rtx-4090").tflops["bf16"] == 165  # FP32-accumulate figure
    cpu = get_hardware("cpu-host")
    assert cpu.vendor == "cpu" and cpu.estimated and cpu.tflops["fp8"] is None and cpu.match == []
    rental = cpu.prices.rental_usd_per_gpu_hour  # a sourced, dated on-demand rate of a comparable VM
    assert rental.value == 0.0864 and "us-east-1" in rental.source and "read 2026-12-01" in rental.source
    assert cpu.prices.purchase_usd is None  # no ownership scenario: no sourced host price


# ---- strict loading ----------------------------------------------------------------------

def test_unknown_model_field_names_key_and_file(tmp_path):
    cat = _catalog_copy(tmp_path)
    _edit_models(cat / "models.yaml", "tiny-llama", foo=1)
    with pytest.raises(ConfigError, match=r"^models\.yaml: model 'tiny-llama': unknown field 'foo'$"):
        load_models(cat / "models.yaml")


def test_unknown_nested_config_field(tmp_path):
    cat = _catalog_copy(tmp_path)
    data = yaml.safe_load((cat / "models.yaml").read_text())
    data["tiny-qwen3-moe"]["config"]["num_expert"] = 4
    (cat / "models.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"model 'tiny-qwen3-moe': unknown field 'config\.num_expert'"):
        load_models(cat / "models.yaml")


def test_bad_value_and_moe_without_top_k(tmp_path):
    cat = _catalog_copy(tmp_path)
    _edit_models(cat / "models.yaml", "tiny-llama", max_context="long")
    with pytest.raises(ConfigError, match=r"model 'tiny-llama': field 'max_context'"):
        load_models(cat / "models.yaml")
    cat2 = _catalog_copy(tmp_path / "b")
    data = yaml.safe_load((cat2 / "models.yaml").read_text())
    del data["tiny-qwen3-moe"]["config"]["num_experts_per_tok"]
    (cat2 / "models.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        load_models(cat2 / "models.yaml")


def test_unknown_model_and_hardware_keys():
    with pytest.raises(ConfigError, match=r"unknown model 'llama-9' \(known: .*tiny-llama"):
        get_model("llama-9")
    with pytest.raises(ConfigError, match=r"unknown hardware 'tpu-v9' \(known: .*h100-sxm"):
        get_hardware("tpu-v9")


def test_hardware_file_errors(tmp_path):
    cat = _catalog_copy(tmp_path)
    f = cat / "hardware" / "l4.yaml"
    original = f.read_text()
    f.write_text(original + "colour: green\n")
    with pytest.raises(ConfigError, match=r"^hardware/l4\.yaml: unknown field 'colour'$"):
        load_hardware(cat / "hardware")
    f.write_text(original.replace("id: l4", "id: l4-pcie"))
    with pytest.raises(ConfigError, match="id 'l4-pcie' differs from the file name"):
        load_hardware(cat / "hardware")
    f.write_text(original.replace("fp4: null", "int4: 484"))
    with pytest.raises(ConfigError, match="tflops needs exactly the keys"):
        load_hardware(cat / "hardware")
    f.write_text(original.replace("unit: usd_per_gpu_hour", "unit: eur_per_gpu_hour"))
    with pytest.raises(ConfigError, match="unit must be 'usd_per_gpu_hour'"):
        load_hardware(cat / "hardware")


def test_catalog_dir_env_override(tmp_path, monkeypatch):
    cat = _catalog_copy(tmp_path)
    data = yaml.safe_load((cat / "models.yaml").read_text())
    (cat / "models.yaml").write_text(yaml.safe_dump({"tiny-llama": data["tiny-llama"]}))
    monkeypatch.setenv("BENCH_CATALOG_DIR", str(cat))
    assert list(load_models()) == ["tiny-llama"]
    with pytest.raises(ConfigError, match=r"unknown model 'llama-3.1-8b' \(known: tiny-llama\)"):
        get_model("llama-3.1-8b")


# ---- arithmetic ----------------------------------------------------------------------------

def test_kv_bytes_per_token_by_hand():
    assert get_model("llama-3.1-8b").kv_bytes_per_token(2) == 2 * 8 * 128 * 32 * 2 == 131072
    assert get_model("deepseek-v2-lite").kv_bytes_per_token(2) == (512 + 64) * 27 * 2
    assert get_model("deepseek-v3").kv_bytes_per_token(1) == (512 + 64) * 61
    oss = get_model("gpt-oss-20b")  # 12 full + 12 sliding (window 128) layers
    assert oss.kv_bytes_per_token(2) == 2 * 8 * 64 * 24 * 2
    assert oss.kv_bytes_per_token(2, context_len=1024) == 2 * 8 * 64 * 2 * (12 + 12 * 128 / 1024)


def test_param_count_of_tiny_llama_by_hand():
    # embed + lm_head; per layer q, k+v, o, gate/up/down, 2 norms; final norm
    v, h, ffn = 2048, 256, 512
    layer = h * 256 + 2 * h * 128 + 256 * h + 3 * h * ffn + 2 * h
    expected = 2 * v * h + 2 * layer + h
    m = get_model("tiny-llama")
    assert count_params(m.config) == (expected, expected)
    assert m.total_params == m.active_params == expected


@pytest.mark.parametrize(
    "key,total,active",
    [
        ("llama-3.1-8b", 8.03e9, 8.03e9),
        ("qwen3-30b-a3b", 30.5e9, 3.3e9),
        ("qwen3-235b-a22b", 235e9, 22e9),
        ("mixtral-8x7b", 46.7e9, 12.9e9),
        ("deepseek-v3", 671e9, 37e9),
        ("deepseek-v2-lite", 15.7e9, None),
        ("gpt-oss-120b", 117e9, None),
        ("qwen2.5-72b", 72.7e9, 72.7e9),
    ],
)
def test_param_count_reproduces_published_totals(key, total, active):
    got_total, got_active = count_params(get_model(key).config)
    assert got_total == pytest.approx(total, rel=0.02)
    if active is not None:
        assert got_active == pytest.approx(active, rel=0.03)


def test_sparsity_and_weight_bytes():
    m = get_model("qwen3-30b-a3b")
    assert m.sparsity == pytest.approx(3.3 / 30.5)
    assert get_model("qwen3-8b").sparsity == 1.0
    assert m.weight_bytes(2) == 61e9


def test_decode_weight_bytes_dense_reads_everything():
    m = get_model("llama-3.1-8b")
    assert m.decode_weight_bytes(1, 2) == m.decode_weight_bytes(512, 2) == m.weight_bytes(2)


def test_decode_weight_bytes_moe_by_hand():
    m = get_model("qwen3-30b-a3b")
    expert = 3 * 2048 * 768
    routed_all = 48 * 128 * expert
    non_expert = 30.5e9 - routed_all
    assert m.decode_weight_bytes(1, 2) == pytest.approx((non_expert + 48 * 8 * expert) * 2)
    touched_4 = 128 * (1 - (1 - 8 / 128) ** 4)
    assert m.decode_weight_bytes(4, 1) == pytest.approx(non_expert + 48 * touched_4 * expert)
    sizes = [m.decode_weight_bytes(b, 2) for b in (1, 2, 8, 64, 1024)]
    assert sizes == sorted(sizes)
    assert sizes[-1] == pytest.approx(m.weight_bytes(2), rel=1e-6)


def test_decode_weight_bytes_counts_shared_experts_and_dense_layers():
    m = get_model("deepseek-v2-lite")  # layer 0 dense, 26 MoE layers, 2 shared experts
    expert = 3 * 2048 * 1408
    non_expert = 15.7e9 - 26 * 64 * expert  # shared experts are in here: always read
    assert m.decode_weight_bytes(1, 1) == pytest.approx(non_expert + 26 * 6 * expert)


def test_flops_per_token_by_hand():
    m = get_model("llama-3.1-8b")
    assert m.flops_per_token(1000) == 2 * 8e9 + 4 * 32 * 1000 * 32 * 128
    mla = get_model("deepseek-v2-lite")
    assert mla.flops_per_token(100) == 2 * 2.4e9 + 2 * 16 * (128 + 64 + 128) * 100 * 27
    oss = get_model("gpt-oss-20b")  # sliding layers attend at most 128 tokens
    assert oss.flops_per_token(1000) == 2 * 3.6e9 + 4 * 64 * 64 * (12 * 1000 + 12 * 128)


def test_config_json_keeps_explicit_nulls_and_extras():
    cfg = get_model("deepseek-v2-lite").config_json()
    assert cfg["q_lora_rank"] is None  # DeepSeek's HF default is 1536: the null must be written
    assert cfg["kv_lora_rank"] == 512 and cfg["architectures"] == ["DeepseekV2ForCausalLM"]
    assert "hf_extra" not in cfg and cfg["hidden_act"] == "silu"
    llama = get_model("tiny-llama").config_json()
    assert llama["torch_dtype"] == "bfloat16" and llama["tie_word_embeddings"] is False
    assert "num_experts" not in llama


# ---- CLI ----------------------------------------------------------------------------------

def test_bench_models_table():
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["key", "arch", "total"]
    row = next(line for line in lines if line.startswith("qwen3-30b-a3b "))
    assert row.split()[1:5] == ["Qwen3MoeForCausalLM", "30.5B", "3.3B", "0.108"]
    assert next(line for line in lines if line.startswith("tiny-llama ")).split()[-1] == "yes"


def test_bench_hardware_marks_detected(monkeypatch):
    import bench.catalog.device

    fake = bench.catalog.device.Detected("h100-sxm", "NVIDIA H100 80GB HBM3", "nvidia", 8, "550.54.15", 85.0)
    monkeypatch.setattr(bench.catalog.device, "detect_device", lambda: fake)
    res = CliRunner().invoke(cli, ["hardware"])
    assert res.exit_code == 0, res.output
    marked = [line for line in res.output.splitlines() if line.startswith("*")]
    assert len(marked) == 1 and marked[0].split()[1] == "h100-sxm"
    assert "detected: 8 x NVIDIA H100 80GB HBM3 (h100-sxm)" in res.output


def test_bench_models_reports_config_error(tmp_path, monkeypatch):
    cat = _catalog_copy(tmp_path)
    _edit_models(cat / "models.yaml", "tiny-llama", foo=1)
    monkeypatch.setenv("BENCH_CATALOG_DIR", str(cat))
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 2
    assert "bench: error: models.yaml: model 'tiny-llama': unknown field 'foo'" in res.stderr
