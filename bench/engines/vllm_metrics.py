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
    for line in text.splitlines():
        if line.split("{", 1)[0].split(" ", 1)[0] not in wanted:  # comments, other metrics, buckets
            continue
        try:
            samples = [s for family in text_string_to_metric_families(line + "\n") for s in family.samples]
        except ValueError:
            continue
        for s in samples:
            if s.name in wanted and isinstance(s.value, (int, float)) and math.isfinite(s.value):
                values.setdefault(s.name, []).append(float(s.value))
    return {wanted[name].short: max(vs) if wanted[name].combine == "max" else sum(vs) for name, vs in values.items()}


def _escape(value: str) -> str:
    """A label value as the text format writes it: backslash, quote and line feed escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def page_text(values: dict[str, float], labels: dict[str, str]) -> str:
    """A Prometheus text page of `values` (by short name) under one label set, with vLLM's
    names, help and types: what the fake server answers at /metrics."""
    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    lines = []
    for m in METRICS:
        if m.short in values:
            lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}",
                      f"{m.name}{{{label_text}}} {float(values[m.short])}"]
    return "\n".join(lines) + "\n"
