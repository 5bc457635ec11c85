"""vLLM's metric names and the one /metrics parser (bench.engines.vllm_metrics), against a page
a real vLLM 0.32 CPU server answered (tests/data/vllm_0.32_cpu_metrics.txt: tiny-llama with
dummy weights after 8 requests of 100 prompt and 16 output tokens)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.engines.vllm_metrics import COUNTERS, METRICS, SPEC_METRICS, page_text, parse_page
from bench.telemetry.server_metrics import SCRAPED, parse_metrics

PAGE = (Path(__file__).parent / "data" / "vllm_0.32_cpu_metrics.txt").read_text()


def test_every_name_bench_reads_is_on_a_real_vllm_page_with_its_type():
    types = {f.name: f.type for f in text_string_to_metric_families(PAGE)}
    samples = {s.name for f in text_string_to_metric_families(PAGE) for s in f.samples}
    for m in METRICS:
        if m in SPEC_METRICS:  # only on a speculating server: tests/test_spec_decode.py
            continue
        assert m.name in samples, m.name
        family = m.name.removesuffix("_total")
        assert types[family] == m.kind, m.name


def test_the_real_page_reads_as_the_requests_sent():
    assert parse_page(PAGE, COUNTERS) == {"prompt_tokens": 800.0, "generation_tokens": 128.0, "preemptions": 0.0,
                                          "prefix_cache_queries": 800.0, "prefix_cache_hits": 0.0}
    assert parse_metrics(PAGE) == {"running_requests": 0.0, "waiting_requests": 0.0, "kv_cache_usage": 0.0,
                                   "preemptions": 0.0, "prefix_cache_queries": 800.0, "prefix_cache_hits": 0.0}
    assert {m.short for m in SCRAPED if m not in SPEC_METRICS} == set(parse_metrics(PAGE))


def test_the_line_filter_reads_what_the_library_reads_from_the_whole_page():
    """Only the lines of the metrics asked for reach the parser (a whole page costs it ~25x more):
    the result is the library's over the whole page, label sets combined."""
    wanted = {m.name: m for m in METRICS}
    whole: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(PAGE):
        for s in family.samples:
            if s.name in wanted:
                whole.setdefault(wanted[s.name].short, []).append(s.value)
    assert parse_page(PAGE) == {k: (max(v) if k == "kv_cache_usage" else sum(v)) for k, v in whole.items()}


def test_engines_of_a_dp_deployment_combine_by_sum_or_by_the_fullest():
    page = page_text({"running_requests": 3, "kv_cache_usage": 0.25}, {"engine": "0"}) + \
        page_text({"running_requests": 4, "kv_cache_usage": 0.5}, {"engine": "1"})
    assert parse_page(page) == {"running_requests": 7.0, "kv_cache_usage": 0.5}


def test_the_fakes_page_reads_back_including_an_odd_model_name():
    values = {m.short: float(i) for i, m in enumerate(METRICS) if m.split_by is None}
    values |= {"spec_accepted_pos_0": 7.0, "spec_accepted_pos_1": 3.0}  # one sample per draft position
    page = page_text(values, {"engine": "0", "model_name": 'org/m} "x"\\y'})
    assert parse_page(page) == values
