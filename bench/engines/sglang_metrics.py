"""SGLang's Prometheus metrics, mapped onto bench's short names: the one place their names live.

Names are SGLang 0.5.23's (sglang/srt/observability/metrics_collector.py). A page is parsed by
the one parser (`bench.engines.vllm_metrics.parse_page`), so the engines' counters and the
scraper's gauges (bench.telemetry.server_metrics) read an SGLang server exactly as a vLLM one;
a page holds one engine's names only, so the two tables never count a sample twice.

Label sets: the token counters carry `is_streaming` (and `model_name`, `engine_type`): summed.
The scheduler's gauges are exported by the first attention-TP rank of each data-parallel rank
(`dp_rank` label): running and queued requests sum over them, the KV-pool usage takes the fullest.
SGLang counts prefix-cache hits as `sglang:cached_tokens_total` (by `cache_source`: device, host,
storage; summed) out of the prompt tokens it received, so the prompt-token counter is also the
lookups (vLLM's prefix_cache_queries) and the prefix-cache hit rate means the same for both.
"""

from __future__ import annotations

from bench.engines.vllm_metrics import EngineMetric

SGLANG_METRICS: tuple[EngineMetric, ...] = (
    EngineMetric("sglang:prompt_tokens_total", "prompt_tokens", "counter", "sum", "Number of prefill tokens processed."),
    EngineMetric("sglang:generation_tokens_total", "generation_tokens", "counter", "sum",
                 "Number of generation tokens processed."),
    EngineMetric("sglang:cached_tokens_total", "prefix_cache_hits", "counter", "sum",
                 "Number of cached prompt tokens by source (device/host/storage)."),
    EngineMetric("sglang:num_retracted_requests_total", "preemptions", "counter", "sum",
                 "Number of retracted requests."),  # SGLang's preemption: a running request sent back to the queue
    EngineMetric("sglang:num_running_reqs", "running_requests", "gauge", "sum", "The number of running requests."),
    EngineMetric("sglang:num_queue_reqs", "waiting_requests", "gauge", "sum",
                 "The number of requests in the waiting queue."),
    EngineMetric("sglang:token_usage", "kv_cache_usage", "gauge", "max", "The token usage."),  # a fraction, 1.0 = full
)
SGLANG_COUNTERS = tuple(m for m in SGLANG_METRICS if m.kind == "counter")
PROMPT_TOKENS = "prompt_tokens"  # also the prefix-cache lookups (see above)
