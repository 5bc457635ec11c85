"""Where a vLLM server's start went, read from its own log (pure: text in, typed phases out).

vLLM logs the duration of each start phase on one INFO line (vllm 0.x, V1 engine):

    Loading weights took 0.05 seconds                                  -> weights_s
    Initializing model took 1.285919 seconds                           -> model_init_s
    Model loading took 0.0 GiB memory and 0.23 seconds                 -> model_load_s
    torch.compile took 12.3 s in total                                 -> compile_s
    Directly load the compiled graph(s) ... from the cache, took 0.5 s -> compile cache hit
    Directly load AOT compilation from path ...                        -> compile cache hit
    Compiling a graph for compile range ... takes 4.1 s                -> compile cache miss
    Compiling model again due to a load failure from ...               -> compile cache miss
    saved AOT compiled function to ...                                 -> compile cache miss (compiled now)
    Graph capturing finished in 3 secs, took 0.4 GiB                   -> graph_capture_s (CUDA graphs)
    Initial profiling/warmup run took 1.15 s                           -> profile_run_s
    init engine (profile, create kv cache, warmup model) took 20.1 s   -> kv_profile_s

Where vLLM compiles without logging a figure (the CPU build: "Warming up model for the
compilation..." then "saved AOT compiled function" or "Directly load AOT compilation"),
`compile_s` is the span between those lines' time stamps (1 s resolution). `log_span_s`
is the first to the last time-stamped line: the part of the start vLLM's logger saw; what
bench measured before it is the interpreter's start and imports.

A phase the log does not name (an older or newer vLLM, a CPU build without CUDA graphs) is
None; the start's total is measured by bench around the whole start and never depends on the
log. Lines written by anything but vLLM's logger (a model's own print) cannot match: each
pattern is anchored on vLLM's wording and a number with its unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Literal

CompileCache = Literal["hit", "miss"]

# One pattern per phase; the first group is the figure in seconds. Several lines may match
# one pattern (one per process or compile range): durations of one phase add up, except
# the engine's own totals, where the longest (the slowest worker) stands for the phase.
_SUMMED = {
    "weights_s": re.compile(r"Loading weights took (\d+(?:\.\d+)?) seconds"),
    "graph_capture_s": re.compile(r"Graph capturing finished in (\d+(?:\.\d+)?) secs"),
}
_LONGEST = {
    "model_init_s": re.compile(r"Initializing model took (\d+(?:\.\d+)?) seconds"),
    "profile_run_s": re.compile(r"Initial profiling/warmup run took (\d+(?:\.\d+)?) s"),
    "model_load_s": re.compile(r"Model loading took \S+ GiB memory and (\d+(?:\.\d+)?) seconds"),
    "compile_s": re.compile(r"torch\.compile took (\d+(?:\.\d+)?) s in total"),
    "kv_profile_s": re.compile(r"init engine \(profile, create kv cache, warmup model\) took (\d+(?:\.\d+)?) s"),
}
_CACHE_HIT = re.compile(r"Directly load the compiled graph\(s\) for compile range .* from the cache"
                        r"|Directly load AOT compilation from path ")
_CACHE_MISS = re.compile(r"Compiling a graph for compile range .* takes \d"
                         r"|Compiling model again due to a load failure from "
                         r"|saved AOT compiled function to ")  # compiled now: nothing was loaded
# vLLM's line prefix: "(Worker pid=1) INFO 12-07 15:31:27 [file.py:82] ..." (month-day, local time)
_STAMP = re.compile(r"^(?:\(\S+ pid=\d+\) )?(?:DEBUG|INFO|WARNING|ERROR) (\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) \[")
_COMPILE_BEGIN = re.compile(r"Warming up model for the compilation")
_COMPILE_END = re.compile(r"saved AOT compiled function to |Directly load AOT compilation from path ")
_INIT_COMPILE = re.compile(r"init engine \(profile, create kv cache, warmup model\) took [\d.]+ s "
                           r"\(compilation: (\d+(?:\.\d+)?) s")


@dataclass(frozen=True)
class StartPhases:
    """The start phases vLLM's log names, in seconds (None: not logged), and whether
    torch.compile's artifacts came from the compile cache ("hit"), were compiled ("miss") or
    neither was logged (None: compilation off, or a vLLM that does not say)."""

    weights_s: float | None = None  # reading or generating the weights
    model_init_s: float | None = None  # building the model's modules
    model_load_s: float | None = None  # the whole model load, weights included
    compile_s: float | None = None  # torch.compile (Dynamo + Inductor, or loading its cache)
    graph_capture_s: float | None = None  # CUDA-graph capture
    profile_run_s: float | None = None  # the profiling run after compilation
    kv_profile_s: float | None = None  # memory profiling, KV-cache allocation and warm-up (compile included)
    log_span_s: float | None = None  # first to last time-stamped line (1 s resolution)
    compile_cache: CompileCache | None = None

    def logged(self) -> dict[str, float]:
        """The phases the log named, by name (s)."""
        return {f.name: v for f in fields(self) if f.name.endswith("_s") and isinstance(v := getattr(self, f.name), float)}


def parse_start_log(text: str) -> StartPhases:
    """The start phases in `text`, a vLLM server's log from its first line to the moment it
    was healthy. Malformed or foreign lines are ignored."""
    found: dict[str, float] = {}
    hit = miss = False
    first = last = compile_begin = compile_end = None
    for line in text.splitlines():
        stamp = _stamp_s(line)
        if stamp is not None:
            first = stamp if first is None else first
            last = stamp
            if compile_begin is None and _COMPILE_BEGIN.search(line):
                compile_begin = stamp
            if compile_begin is not None and _COMPILE_END.search(line):
                compile_end = stamp
        for name, pattern in _SUMMED.items():
            if m := pattern.search(line):
                found[name] = found.get(name, 0.0) + float(m.group(1))
        for name, pattern in _LONGEST.items():
            if m := pattern.search(line):
                found[name] = max(found.get(name, 0.0), float(m.group(1)))
        if (m := _INIT_COMPILE.search(line)) and "compile_s" not in found:
            found["compile_s"] = float(m.group(1))
        hit = hit or bool(_CACHE_HIT.search(line))
        miss = miss or bool(_CACHE_MISS.search(line))
    if "compile_s" not in found and compile_begin is not None and compile_end is not None:
        found["compile_s"] = float(compile_end - compile_begin)
    if first is not None and last is not None and last >= first:
        found["log_span_s"] = float(last - first)
    cache: CompileCache | None = "miss" if miss else "hit" if hit else None  # one compiled graph: not all from cache
    return StartPhases(**found, compile_cache=cache)


def _stamp_s(line: str) -> int | None:
    """Seconds since the start of the month of a vLLM line's time stamp (None: no stamp).
    A start that spans a month's end gets no span: the difference would be negative."""
    m = _STAMP.match(line)
    if m is None:
        return None
    _, day, h, mi, sec = (int(g) for g in m.groups())
    return ((day * 24 + h) * 60 + mi) * 60 + sec
