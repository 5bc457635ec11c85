"""One record per request, exactly as docs/measurement.md section 1 defines it.

All times are seconds on the client's `time.perf_counter` clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class RequestRecord:
    """What the client saw of one request. A failed request is data: `error` is set."""

    request_id: int
    phase: str  # "warmup" or "measured"
    n_in_expected: int  # prompt tokens the workload asked for
    n_out_expected: int  # output tokens asked for (max_tokens, with ignore_eos)
    t_send: float = 0.0  # just before the request bytes are written
    t_sched: float | None = None  # rate and trace loads: when the schedule said to send it
    t_first: float | None = None  # first chunk carrying >= 1 generated token
    t_last: float | None = None  # chunk carrying the last generated token
    t_done: float | None = None  # the client let go of the request: last byte read, or failure
    n_in: int | None = None  # prompt tokens as the server reports them (usage)
    n_out: int = 0  # output tokens as the server reports them
    chunk_t: list[float] = field(default_factory=list)  # arrival of each token-bearing chunk
    chunk_tokens: list[int] = field(default_factory=list)  # tokens carried by each such chunk
    token_source: str = "usage"  # "usage" | "token_ids" | "text_chunks" | "retokenized" (last two: labelled fallbacks)
    error: str | None = None
    worker: int = 0  # the client worker (bench.load.workers) that sent it; 0 also for the in-process loop
    t_first_reasoning: float | None = None  # first chunk whose delta carried reasoning and no content
    t_first_answer: float | None = None  # first token-bearing chunk that is not reasoning (the answer)
    n_reasoning: int = 0  # tokens of reasoning chunks; inside n_out (the server counts them as completion tokens)
    session: int | None = None  # sessions workload: the conversation this turn belongs to
    turn: int | None = None  # sessions workload: 0-based turn index within its session
    # issue 21, lora: LoRA traffic and structured output
    model: str | None = None  # the LoRA adapter the request named; None: the base model
    ignore_eos: bool = True  # sent with ignore_eos: fewer tokens than asked is a failure
    answer: str | None = None  # the answer's JSON text (a structured-output request: content, or the tool call's arguments)
    tool_name: str | None = None  # the function a tool-call answer named

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_send

    @property
    def ttfat_s(self) -> float | None:
        """Time to the first answer token (s): `t_first_answer - t_send`; after any reasoning tokens."""
        return None if self.t_first_answer is None else self.t_first_answer - self.t_send

    @property
    def e2e_s(self) -> float | None:
        return None if self.t_last is None else self.t_last - self.t_send

    @property
    def ttft_sched_s(self) -> float | None:
        """TTFT from the scheduled send (no coordinated omission); None without a schedule."""
        return None if self.t_first is None or self.t_sched is None else self.t_first - self.t_sched

    @property
    def e2e_sched_s(self) -> float | None:
        """End-to-end latency from the scheduled send; None without a schedule."""
        return None if self.t_last is None or self.t_sched is None else self.t_last - self.t_sched

    @property
    def schedule_lag_s(self) -> float | None:
        """Actual - scheduled send (s): how far the client fell behind its schedule."""
        return None if self.t_sched is None else self.t_send - self.t_sched

    @property
    def tpot_s(self) -> float | None:
        if self.t_first is None or self.t_last is None or self.n_out < 2:
            return None
        return (self.t_last - self.t_first) / (self.n_out - 1)

    @property
    def itl_s(self) -> list[float]:
        """Per token-bearing chunk after the first: gap to the previous one / tokens it carried.

        Invariant: `e2e_s - ttft_s == sum(itl * tokens for itl, tokens in zip(itl_s, chunk_tokens[1:]))`.
        """
        return [
            (self.chunk_t[i] - self.chunk_t[i - 1]) / max(self.chunk_tokens[i], 1)
            for i in range(1, len(self.chunk_t))
        ]

    def to_row(self) -> dict:
        row = asdict(self)
        row.update(ttft_s=self.ttft_s, e2e_s=self.e2e_s, tpot_s=self.tpot_s)
        return row

    @classmethod
    def from_row(cls, row: dict) -> RequestRecord:
        names = cls.__dataclass_fields__
        kw = {k: v for k, v in row.items() if k in names}
        chunk_t, chunk_tokens = kw.get("chunk_t"), kw.get("chunk_tokens")  # None, or a list / array from a row
        kw["chunk_t"] = [float(x) for x in (chunk_t if chunk_t is not None else [])]
        kw["chunk_tokens"] = [int(x) for x in (chunk_tokens if chunk_tokens is not None else [])]
        for k in ("t_first", "t_last", "t_done", "t_sched", "n_in", "error", "t_first_reasoning", "t_first_answer",
                  "session", "turn", "model", "answer", "tool_name"):
            v = kw.get(k)
            if isinstance(v, float) and math.isnan(v):  # NaN from a Parquet null
                kw[k] = None
        for k in ("session", "turn"):
            if kw.get(k) is not None:
                kw[k] = int(kw[k])  # a Parquet column with nulls reads back as float
        return cls(**kw)
