"""Multi-turn chat sessions: each turn sends the conversation so far (the chat endpoint).

`ChatSessions` (the generator of the `sessions` workload of bench.plan.points) plans the point's
conversations: synthetic ones (`turns` user messages of `prompt_len` words each, like
`RandomPrompts(as_text=True)`) or the human turns of a ShareGPT-style multi-turn JSONL file;
every answer is `answer_len` tokens, generated with ignore_eos. The point's n_warmup and
n_requests count turns (one request each): whole sessions are taken until the phase has its
turns (the last one cut short), and no session spans both phases.

`run_sessions` runs them up to `slots` at a time (the concurrency load's `concurrency`): a slot
takes the next session and plays its turns in order, each turn one RequestRecord (`session`,
`turn` set), the assistant's streamed answer appended to the history for the next turn,
`think_time_s` between an answer and the next turn. A failed turn is data as ever; the session
goes on with whatever text that turn did receive. Request ids are given session by session
when the point is planned, so records are in request-id order (warm-up first) like any other
point, and bench.load.merge computes the window from their `t_send` / `t_done`.

`run_sessions_point(job)` is `bench.load.driver.run_point` for this workload: the same LoadLoop
(barriers, frozen heap, launch pacing, progress, self-watch) with its closed loop taking
sessions instead of requests. It runs in the caller's event loop: a turn's body needs the
previous answer, so nothing is encoded before the point and no client worker process is used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import ConfigError
from bench.load.client import StreamingClient, raise_fd_limit
from bench.load.loop import LoadLoop, LocalWork
from bench.load.merge import merge_point
from bench.load.records import RequestRecord
from bench.load.sse import StreamParser
from bench.load.tokens import words
from bench.load.types import ClientSummary, LoadJob, PointRun, Sender
from bench.plan.inputs import read_sessions
from bench.plan.points import ConcurrencyLoad


@dataclass(frozen=True)
class Session:
    """One planned conversation: its user messages, and the request id of its first turn."""

    index: int
    phase: str  # "warmup" or "measured"
    first_request: int  # request id of turn 0; turn j is first_request + j
    users: tuple[str, ...]  # the user message of each turn
    answer_len: int  # tokens asked for per answer (max_tokens, with ignore_eos)

    def records(self) -> list[RequestRecord]:
        """One record per turn; n_in_expected: the words of the conversation so far (user
        messages + `answer_len` per earlier answer; the chat template adds a few tokens)."""
        out, words = [], 0
        for j, text in enumerate(self.users):
            words += len(text.split()) + (self.answer_len if j else 0)
            out.append(RequestRecord(self.first_request + j, self.phase, words, self.answer_len,
                                     session=self.index, turn=j))
        return out


class ChatSessions:
    """Multi-turn chat sessions, seeded and deterministic: `plan(n_warmup, n_requests)` returns the
    same sessions for the same seed. `path`: a ShareGPT-style JSONL file (the human turns of each
    conversation, shuffled with the seed, cycled when more are needed); None: synthetic sessions of
    `turns` turns of `prompt_len` words."""

    def __init__(self, path: str | Path | None = None, turns: int = 4, prompt_len: int = 64, answer_len: int = 64,
                 think_time_s: float = 0.0, seed: int = 0):
        if turns < 1 or prompt_len < 1 or answer_len < 1 or think_time_s < 0:
            raise ConfigError("a sessions workload needs turns, prompt_len, answer_len >= 1 and think_time_s >= 0")
        self.path = Path(path) if path is not None else None
        self.turns, self.prompt_len, self.answer_len = turns, prompt_len, answer_len
        self.think_time_s, self.seed = think_time_s, seed
        self._conversations: list[tuple[str, ...]] | None = None

    @classmethod
    def from_spec(cls, spec, seed: int) -> ChatSessions:
        """From a `bench.plan.points.SessionsWorkload`; `seed` where the spec leaves its own out."""
        return cls(spec.path, spec.turns, spec.prompt_len, spec.answer_len, spec.think_time_s,
                   seed if spec.seed is None else spec.seed)

    def prompts(self, n: int):
        raise ConfigError("a sessions workload builds each turn from the previous answers: run it with "
                          "bench.load.driver.run_point, not through pre-encoded requests")

    def plan(self, n_warmup: int, n_requests: int) -> list[Session]:
        """Sessions covering n_warmup turns, then n_requests turns; request ids session by session."""
        stream = self._user_turns()
        out: list[Session] = []
        next_id = 0
        for phase, n in (("warmup", n_warmup), ("measured", n_requests)):
            left = n
            while left > 0:
                users = next(stream)[:left]
                out.append(Session(len(out), phase, next_id, users, self.answer_len))
                next_id += len(users)
                left -= len(users)
        return out

    def _user_turns(self) -> Iterator[tuple[str, ...]]:
        """Endless conversations (their user messages), from the file or synthetic."""
        rng = np.random.default_rng(self.seed)
        if self.path is None:
            while True:
                yield tuple(words(rng, self.prompt_len) for _ in range(self.turns))
        conversations = self._load()
        while True:
            for i in rng.permutation(len(conversations)).tolist():
                yield conversations[i]

    def _load(self) -> list[tuple[str, ...]]:
        if self._conversations is None:
            if self.path is None:  # only a file's conversations are loaded (_user_turns, describe)
                raise ConfigError("a synthetic sessions workload has no conversations file")
            self._conversations = read_sessions(self.path)  # parsed and checked as the plan does
        return self._conversations

    def describe(self) -> dict:
        return {"kind": "sessions", "path": str(self.path) if self.path else None, "turns": self.turns,
                "prompt_len": self.prompt_len, "answer_len": self.answer_len, "think_time_s": self.think_time_s,
                "seed": self.seed, "n_conversations": len(self._load()) if self.path else None}


def session_records(sessions: Sequence[Session]) -> list[RequestRecord]:
    """Every turn's record, in request-id order."""
    return sorted((r for s in sessions for r in s.records()), key=lambda r: r.request_id)


class _AnswerKeeper:
    """Stands in for the client in a send: streams with a text-keeping parser and keeps each answer."""

    def __init__(self, client: StreamingClient):
        self.client = client
        self.answers: dict[int, str] = {}  # request id -> the answer's text

    async def send(self, record: RequestRecord, prompt=None, body: bytes | None = None) -> RequestRecord:
        parser = StreamParser(record, keep_text=True)
        try:
            return await self.client.send(record, prompt, body, parser=parser)
        finally:
            self.answers[record.request_id] = parser.answer_text


Send = Callable[[Sender, RequestRecord, bytes], Awaitable[None]]  # (client, record, body); LoadLoop's tracker


async def _send_direct(client: Sender, record: RequestRecord, body: bytes) -> None:
    try:
        await client.send(record, body=body)
    finally:
        record.t_done = time.perf_counter()


async def run_sessions(client: StreamingClient, sessions: Sequence[Session], records: Sequence[RequestRecord],
                       slots: int, think_time_s: float = 0.0, send: Send = _send_direct,
                       should_stop: Callable[[], bool] = lambda: False) -> None:
    """Play `sessions` up to `slots` at a time, filling `records` (indexed by request id).

    `send(client, record, body)` sends one turn and must stamp `record.t_done` (LoadLoop's
    `tracker.send` does, with its launch pacing and progress)."""
    keeper = _AnswerKeeper(client)
    queue = iter(sessions)  # shared by the slots: each takes the next session

    async def play(session: Session) -> None:
        messages: list[dict] = []
        for j, user in enumerate(session.users):
            t_prev_done = records[session.first_request + j - 1].t_done if j else None
            if t_prev_done is not None and think_time_s > 0:  # send() stamps t_done
                await _until(t_prev_done + think_time_s)
            if should_stop():
                return
            rec = records[session.first_request + j]
            messages.append({"role": "user", "content": user})
            await send(keeper, rec, client.chat_body(messages, rec.n_out_expected))
            messages.append({"role": "assistant", "content": keeper.answers.pop(rec.request_id, "")})

    async def slot() -> None:
        for session in queue:
            if should_stop():
                return
            await play(session)

    await asyncio.gather(*(slot() for _ in range(max(min(slots, len(sessions)), 1))))


async def _until(t: float) -> None:
    """Sleep until perf_counter() >= t (asyncio's timers may fire up to a clock resolution early)."""
    while (left := t - time.perf_counter()) > 0:  # noqa: ASYNC110 - a deadline, not a wait for an event
        await asyncio.sleep(left)


class _PhaseWork(LocalWork):
    """LocalWork that remembers the request-id range of the phase LoadLoop started."""

    begin = end = 0

    def start(self, begin: int, end: int) -> None:
        super().start(begin, end)
        self.begin, self.end = begin, end


class SessionLoop(LoadLoop):
    """A LoadLoop whose closed loop plays sessions: each slot takes the next session of the phase."""

    def __init__(self, client: StreamingClient, sessions: Sequence[Session], records: list[RequestRecord],
                 spec: ConcurrencyLoad, n_warmup: int, think_time_s: float = 0.0, **kw):
        self.phase_work = _PhaseWork()
        super().__init__(client, records, [], spec, n_warmup, work=self.phase_work, **kw)
        self.sessions, self.think_time_s = list(sessions), think_time_s

    async def _closed(self, slots: int) -> None:
        begin, end = self.phase_work.begin, self.phase_work.end
        phase = [s for s in self.sessions if begin <= s.first_request < end]
        await run_sessions(self.client, phase, self.records, slots, self.think_time_s,
                           send=self.tracker.send, should_stop=self.should_stop)


async def run_sessions_point(job: LoadJob) -> PointRun:
    """One load point of sessions (`job.workload` a ChatSessions) against an OpenAI-compatible
    server, always on the chat endpoint and in this event loop; n_warmup and n_requests count
    turns. `job.seed` and `job.workers` do not apply (no arrival process; a turn needs the answer
    before it)."""
    workload = job.workload
    if not isinstance(workload, ChatSessions):
        raise ConfigError(f"run_sessions_point runs a sessions workload, not {type(workload).__name__}")
    spec = job.load
    if not isinstance(spec, ConcurrencyLoad):
        raise ConfigError(f"a sessions workload runs under a concurrency load (sessions at once), not a {spec.kind} load")
    cfg = dataclasses.replace(job.client, endpoint="chat")
    sessions = workload.plan(job.n_warmup, job.n_requests)
    records = session_records(sessions)
    async with StreamingClient(job.base_url, job.model, cfg) as client:
        loop = SessionLoop(client, sessions, records, spec, job.n_warmup, workload.think_time_s,
                           progress=job.progress, stalled=job.stalled)
        raise_fd_limit(4 * max(loop.width(), job.n_warmup) + 256)
        await loop.run()
    info = ClientSummary(cfg.describe(), client.tag, n_workers=0)
    return merge_point(records, spec, info, [loop.stats()])
