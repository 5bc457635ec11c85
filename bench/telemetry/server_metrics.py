"""The engine's own Prometheus metrics over time: a scraper thread and the window summary.

    scraper = ServerMetricsScraper(engine.base_url).start()   # before the point's warm-up
    ... the point runs ...
    scraper.stop()
    summary = scraper.summary_between(t0_s, t1_s)    # the measurement window, perf_counter s
    frame = scraper.frame()                          # t_s, metric, value (server_metrics.parquet)

Like the power samples (bench.telemetry.base), every sample is stamped with
`time.perf_counter()` at the midpoint of its GET, the clock of the client's window, so a
window summary needs no offsets. vLLM's names are mapped to short ones in one table
(bench.engines.vllm_metrics, which also parses the page; SGLang's in bench.engines.sglang_metrics);
a server that exposes none of them yields no samples, and the
scraper stops asking after a few failed reads
(one that got a sample keeps asking: a late answer is a gap, not the end).

Gauges are point-in-time values of the engine's last scheduler step, sampled every
`interval_s`: a peak shorter than the interval can fall between two samples, so a maximum
over the window is a lower bound of the true peak.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from bench.engines.sglang_metrics import SGLANG_METRICS
from bench.engines.vllm_metrics import BY_SHORT, SPEC_METRICS, parse_page

DEFAULT_INTERVAL_S = 0.5
MAX_FAILED_READS = 3  # failed GETs before a scraper that never got a sample gives up (no /metrics)
READ_TIMEOUT_S = 5.0  # a server busy with the load can answer late: the sample is late, not lost

GAUGE_METRICS = ("running_requests", "waiting_requests", "kv_cache_usage")
COUNTER_METRICS = ("preemptions", "prefix_cache_queries", "prefix_cache_hits")
# the token counters are read per point; the speculative-decoding ones also here, for their window deltas
SCRAPED = (*(BY_SHORT[k] for k in (*GAUGE_METRICS, *COUNTER_METRICS)), *SPEC_METRICS,
           # SGLang's gauges under the same short names (a page holds one engine's names)
           *(m for m in SGLANG_METRICS if m.short in (*GAUGE_METRICS, *COUNTER_METRICS)))


def parse_metrics(text: str) -> dict[str, float]:
    """The SCRAPED samples of a Prometheus text page, by short name, label sets combined."""
    return parse_page(text, SCRAPED)


class ServerMetricsScraper:
    """GETs `base_url`/metrics every `interval_s` on a background thread; keeps (t_s, values)."""

    def __init__(self, base_url: str, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.perf_counter, fetch: Callable[..., tuple[int, str]] | None = None):
        if fetch is None:
            from bench.engines.process import http_get

            fetch = http_get
        self.url = base_url.rstrip("/") + "/metrics"
        self.interval_s = interval_s
        self.clock = clock
        self.fetch = fetch
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.failed_reads = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> None:
        """One GET; a sample is kept when the page holds any of SCRAPED."""
        if not self.samples and self.failed_reads >= MAX_FAILED_READS:
            return
        t_before = self.clock()
        status, body = self.fetch(self.url, timeout_s=READ_TIMEOUT_S)
        t_s = (t_before + self.clock()) / 2
        values = parse_metrics(body) if status == 200 else {}
        with self._lock:
            if values:
                self.samples.append((t_s, values))
            else:
                self.failed_reads += 1

    def start(self) -> Self:
        if self._thread is None:
            self._stop.clear()
            self.sample_once()
            self._thread = threading.Thread(target=self._loop, name="bench-server-metrics", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001  a bad page must not end the run; it shows as a gap
                self.failed_reads += 1

    def stop(self) -> None:
        """Stop the thread after one last sample; samples are kept."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.sample_once()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary_between(self, t0_s: float, t1_s: float) -> ServerWindow | None:
        """`window_summary` of the samples so far; None when none was taken."""
        with self._lock:
            samples = list(self.samples)
        return window_summary(samples, t0_s, t1_s, self.interval_s) if samples else None

    def frame(self):
        """Every sample as long rows: t_s (perf_counter s), metric (short name), value."""
        import pandas as pd

        with self._lock:
            rows = [{"t_s": t, "metric": k, "value": v} for t, values in self.samples for k, v in sorted(values.items())]
        return pd.DataFrame(rows, columns=["t_s", "metric", "value"]).astype({"t_s": "float64", "value": "float64"})


@dataclass(frozen=True)
class ServerWindow:
    """The engine's gauges (max, mean) and counter deltas over one window; None: no sample for it."""

    n_samples: int  # samples inside the window
    interval_s: float | None  # the scrape interval (s)
    running_requests_max: float | None
    running_requests_mean: float | None
    waiting_requests_max: float | None
    waiting_requests_mean: float | None
    kv_cache_usage_max: float | None
    kv_cache_usage_mean: float | None
    in_server_requests_max: float | None  # running + waiting, where a sample has both
    preemptions_in_window: float | None
    prefix_cache_queries_in_window: float | None
    prefix_cache_hits_in_window: float | None
    # speculative decoding (issue 21): every spec_* counter's delta over the window, by short name
    # (spec_drafts, spec_draft_tokens, spec_accepted_tokens, spec_accepted_pos_<k>); None: none bracketed it
    spec_in_window: dict[str, float] | None = None


def window_summary(samples: list[tuple[float, dict[str, float]]], t0_s: float, t1_s: float,
                   interval_s: float | None = None) -> ServerWindow:
    """Gauges over the samples inside [t0_s, t1_s] (max, mean; None without such a sample),
    counters as the difference between the last sample at or before t0_s and the first at or
    after t1_s (so a counter delta covers the window, and up to one interval either side)."""
    inside = [v for t, v in samples if t0_s <= t <= t1_s]
    before = [v for t, v in samples if t <= t0_s]
    after = [v for t, v in samples if t >= t1_s]

    def gauge(key: str) -> tuple[float | None, float | None]:
        vs = [v[key] for v in inside if key in v]
        return (max(vs), sum(vs) / len(vs)) if vs else (None, None)

    def delta(key: str) -> float | None:
        a = next((v[key] for v in reversed(before) if key in v), None)
        b = next((v[key] for v in after if key in v), None)
        return b - a if a is not None and b is not None else None

    running, waiting, kv = gauge("running_requests"), gauge("waiting_requests"), gauge("kv_cache_usage")
    both = [v["running_requests"] + v["waiting_requests"] for v in inside
            if "running_requests" in v and "waiting_requests" in v]
    return ServerWindow(
        n_samples=len(inside), interval_s=interval_s,
        running_requests_max=running[0], running_requests_mean=running[1],
        waiting_requests_max=waiting[0], waiting_requests_mean=waiting[1],
        kv_cache_usage_max=kv[0], kv_cache_usage_mean=kv[1],
        in_server_requests_max=max(both) if both else None,
        preemptions_in_window=delta("preemptions"), prefix_cache_queries_in_window=delta("prefix_cache_queries"),
        prefix_cache_hits_in_window=delta("prefix_cache_hits"),
        spec_in_window=_spec_deltas(samples, delta),
    )


def _spec_deltas(samples: list[tuple[float, dict[str, float]]],
                 delta: Callable[[str], float | None]) -> dict[str, float] | None:
    """The window delta of every speculative-decoding counter the samples hold; None for none."""
    keys = sorted({k for _, v in samples for k in v if k.startswith("spec_")})
    out = {k: d for k in keys if (d := delta(k)) is not None}
    return out or None
