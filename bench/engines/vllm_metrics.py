"""vLLM's Prometheus metrics: the one place their names live, and the one parser of a /metrics page.

The engines read their counters here (`server_counters()`), the scraper of
`bench.telemetry.server_metrics` its gauges, and the fake server (bench.testing.fake_app)
writes its page from the same table. Names are vLLM 0.32's (vllm/v1/metrics/loggers.py);
a page is parsed by prometheus_client's text parser, fed only the lines of the metrics asked
for: a whole vLLM page (about 600 lines, mostly histogram buckets) costs that parser about
28 ms, the filtered lines about 1 ms (tests/data/vllm_0.32_cpu_metrics.txt, measured on this
project's 2-core CPU box), and a scrape every 0.5 s shares its process with the load client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EngineMetric:
    """One vLLM sample name: its short name in bench, its Prometheus type, how the samples of
    several label sets (one per engine of a DP deployment) combine, and vLLM's help text."""

    name: str
    short: str
    kind: Literal["counter", "gauge"]
    combine: Literal["sum", "max"]
    help: str
    # a label whose values split the metric into one short name each, `<short>_<value>` (the draft
    # position of vLLM's per-position acceptance); the other labels (engines) still combine
    split_by: str | None = None


SPEC_METRICS: tuple[EngineMetric, ...] = (
    EngineMetric("vllm:spec_decode_num_drafts_total", "spec_drafts", "counter", "sum", "Number of spec decoding drafts."),
    EngineMetric("vllm:spec_decode_num_draft_tokens_total", "spec_draft_tokens", "counter", "sum",
                 "Number of draft tokens."),
    EngineMetric("vllm:spec_decode_num_accepted_tokens_total", "spec_accepted_tokens", "counter", "sum",
                 "Number of accepted tokens."),
    EngineMetric("vllm:spec_decode_num_accepted_tokens_per_pos_total", "spec_accepted_pos", "counter", "sum",
                 "Accepted tokens per draft position.", split_by="position"),  # -> spec_accepted_pos_0, _1, ...
)
SPEC_POS_PREFIX = "spec_accepted_pos_"  # + the 0-based draft position

METRICS: tuple[EngineMetric, ...] = (
    EngineMetric("vllm:prompt_tokens_total", "prompt_tokens", "counter", "sum", "Number of prefill tokens processed."),
    EngineMetric("vllm:generation_tokens_total", "generation_tokens", "counter", "sum",
                 "Number of generation tokens processed."),
    EngineMetric("vllm:num_preemptions_total", "preemptions", "counter", "sum",
                 "Cumulative number of preemption from the engine."),
    EngineMetric("vllm:prefix_cache_queries_total", "prefix_cache_queries", "counter", "sum",  # tokens looked up
                 "Prefix cache queries, in terms of number of queried tokens."),
    EngineMetric("vllm:prefix_cache_hits_total", "prefix_cache_hits", "counter", "sum",  # tokens found there
                 "Prefix cache hits, in terms of number of cached tokens."),
    EngineMetric("vllm:num_requests_running", "running_requests", "gauge", "sum",
                 "Number of requests in model execution batches."),
    EngineMetric("vllm:num_requests_waiting", "waiting_requests", "gauge", "sum",
                 "Number of requests waiting to be processed."),
    # a fraction per engine (1.0 = full): the fullest engine counts
    EngineMetric("vllm:kv_cache_usage_perc", "kv_cache_usage", "gauge", "max",
                 "KV-cache usage. 1 means 100 percent usage."),
    # speculative decoding (issue 21; vllm/v1/spec_decode/metrics.py SpecDecodingProm): only on a server
    # started with --speculative-config. A draft is one proposal of up to num_speculative_tokens tokens.
    *SPEC_METRICS,
)
BY_SHORT = {m.short: m for m in METRICS}
COUNTERS = tuple(m for m in METRICS if m.kind == "counter")  # what server_counters() reports


def parse_page(text: str, metrics: Iterable[EngineMetric] = METRICS) -> dict[str, float]:
    """The samples of `metrics` on a Prometheus text page, by short name, label sets combined;
    a metric the page lacks is left out. A line that does not parse, or a value that is not a
    finite number, is passed over: the page may come from any server."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {m.name: m for m in metrics}
    values: dict[str, list[float]] = {}
    combine: dict[str, str] = {}
    for line in text.splitlines():
        if line.split("{", 1)[0].split(" ", 1)[0] not in wanted:  # comments, other metrics, buckets
            continue
        try:
            samples = [s for family in text_string_to_metric_families(line + "\n") for s in family.samples]
        except ValueError:
            continue
        for s in samples:
            if s.name in wanted and isinstance(s.value, (int, float)) and math.isfinite(s.value):
                key = _short_name(wanted[s.name], s.labels)
                if key is not None:
                    values.setdefault(key, []).append(float(s.value))
                    combine[key] = wanted[s.name].combine
    return {key: max(vs) if combine[key] == "max" else sum(vs) for key, vs in values.items()}


def _short_name(metric: EngineMetric, labels: dict[str, str]) -> str | None:
    """The short name one sample counts under: the metric's, or `<short>_<label value>` for a
    split metric (None for a value that is not a small non-negative integer: any server's page)."""
    if metric.split_by is None:
        return metric.short
    value = labels.get(metric.split_by, "")
    return f"{metric.short}_{value}" if value.isdigit() and len(value) <= 3 else None


def _escape(value: str) -> str:
    """A label value as the text format writes it: backslash, quote and line feed escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def page_text(values: dict[str, float], labels: dict[str, str]) -> str:
    """A Prometheus text page of `values` (by short name) under one label set, with vLLM's
    names, help and types: what the fake server answers at /metrics."""
    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    lines = []
    for m in METRICS:
        if m.split_by is not None:  # {"spec_accepted_pos_0": 5.0, ...} -> one sample per position
            split = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in values.items()
                           if k.startswith(m.short + "_") and k.rsplit("_", 1)[1].isdigit())
            if split:
                lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}"]
                sep = "," if label_text else ""
                lines += [f'{m.name}{{{label_text}{sep}{m.split_by}="{pos}"}} {float(v)}' for pos, v in split]
        elif m.short in values:
            lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}",
                      f"{m.name}{{{label_text}}} {float(values[m.short])}"]
    return "\n".join(lines) + "\n"
