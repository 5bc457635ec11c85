"""The orchestrator's side of a point in client worker processes (bench.load.workers): start
the workers, release each phase at its barrier, gather their messages, end them.

Nothing here waits on a worker without a bound, and nothing is shared with one under a lock:
- a thread per worker reads its pipe into one inbox, and the caller's thread handles the
  inbox with a timeout: a worker that dies (SIGKILL, OOM) is its pipe's end of file, one killed
  half way through a message blocks only its own reader thread, until that end of file;
- a worker sends a heartbeat every BEAT_S; one silent for WORKER_SILENT_S (stopped, stuck) is
  killed and fails the point;
- on a death the others are told to stop through the shared stop byte (written here alone,
  no lock) and the request feeds are closed (bench.load.feed); from then on no barrier is
  waited on: a worker waiting at one, or reaching one later, is released at once (with the
  stop byte set it launches nothing and sends its records); a send to a worker that is gone
  is ignored (its end of file reports it);
- ending waits at most JOIN_S for a worker to exit, then kills it.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from multiprocessing import connection

from bench.errors import one_line
from bench.load.feed import IndexFeed
from bench.load.records import RequestRecord
from bench.load.types import LoopStats, Progress, Stalled

START_LEAD_S = 0.02  # a rate load's shared start time lies this far after the orchestrator's "go"
JOIN_S = 5.0  # for a worker to exit after its results, or after SIGTERM
BEAT_S = 1.0  # a worker's heartbeat period
# A worker silent this long is stopped or stuck: its event loop sends a heartbeat every BEAT_S,
# so this allows a minute of starvation on an overloaded box before the point fails.
WORKER_SILENT_S = 60.0
EXIT_WAIT_S = 1.0  # for the exit code of a worker whose pipe closed


class Team:
    """The workers of one point: `target(job, conn, commands, readers, stop)` runs in each;
    `feeds` are the closed-loop phases' request feeds by first index, `stop` the shared stop byte."""

    def __init__(self, ctx, target, jobs, feeds: dict[int, IndexFeed], stop, progress: Progress | None,
                 stalled: Stalled | None, n_total: int):
        self.ctx, self.target, self.jobs, self.feeds, self.stop = ctx, target, jobs, feeds, stop
        self.progress, self.stalled, self.n_total = progress, stalled, n_total
        self.procs: dict[int, mp.Process] = {}
        self.conns: dict[int, connection.Connection] = {}  # worker -> orchestrator
        self.commands: dict[int, connection.Connection] = {}  # orchestrator -> worker
        self.inbox: queue.Queue = queue.Queue()  # (worker, message) from the reader threads
        self.readers: list[threading.Thread] = []
        self.heard: dict[int, float] = {}  # worker -> monotonic s of its last message (its reader thread writes)
        self.records: dict[int, list[RequestRecord]] = {}
        self.stats: dict[int, LoopStats] = {}
        self.dead: list[str] = []
        self.info: dict[int, dict] = {}
        self.n_stalled: dict[int, int] = {}
        self.at: dict[int, str] = {}  # worker -> the last barrier it reached
        self.waiting: set[int] = set()  # workers at a barrier, not yet released

    def start(self) -> None:
        readers = {begin: feed.reader for begin, feed in self.feeds.items()}
        for job in self.jobs:
            inbound, out = self.ctx.Pipe(duplex=False)
            cmd_in, cmd_out = self.ctx.Pipe(duplex=False)
            p = self.ctx.Process(target=self.target, args=(job, out, cmd_in, readers, self.stop),
                                 name=f"bench-client-{job.index}", daemon=True)
            p.start()
            out.close()
            cmd_in.close()
            k = job.index
            self.procs[k], self.conns[k], self.commands[k] = p, inbound, cmd_out
            self.heard[k] = time.monotonic()
            reader = threading.Thread(target=self._read, args=(k, inbound), name=f"bench-client-{k}-reader",
                                      daemon=True)
            reader.start()
            self.readers.append(reader)

    def _read(self, k: int, conn) -> None:
        """On a thread of its own: worker k's messages into the inbox, then ("eof",) when its pipe closes."""
        try:
            while True:
                msg = conn.recv()
                self.heard[k] = time.monotonic()  # here, not where handled: a busy caller never makes a worker silent
                self.inbox.put((k, msg))
        except (EOFError, OSError):
            pass
        except Exception as e:  # noqa: BLE001  a message that does not unpickle: the stream is lost
            self.inbox.put((k, ("error", one_line(f"unreadable message: {type(e).__name__}: {e}"))))
        self.inbox.put((k, ("eof",)))

    def run(self, phases: list[str]) -> None:
        """Release each phase once every worker is at its barrier; after a death no barrier is
        waited on (a released worker may be at a later one already): each is released on arrival."""
        for phase in phases:
            self._until(lambda phase=phase: bool(self.dead) or all(self.at.get(k) == phase or self._settled(k)
                                                                   for k in self.procs))
            if self.dead:
                break
            self._release(time.perf_counter() + START_LEAD_S)
        self._until(lambda: all(self._settled(k) for k in self.procs))

    def _release(self, t_start: float | None) -> None:
        """"go" to every worker waiting at a barrier (None: no shared start, the point is stopping)."""
        for k in sorted(self.waiting):
            if not self._settled(k):
                self._send(k, ("go", t_start))
        self.waiting.clear()

    def _gone(self, k: int) -> bool:
        return any(d.startswith(f"client worker {k} ") for d in self.dead)

    def _settled(self, k: int) -> bool:
        return k in self.records or self._gone(k)

    def _send(self, k: int, msg) -> None:
        try:
            self.commands[k].send(msg)
        except OSError:
            pass  # it is gone: its reader thread reports the end of file

    def _until(self, done) -> None:
        """Handle messages until `done()`; never blocks longer than BEAT_S without checking on the workers."""
        while not done():
            try:
                k, msg = self.inbox.get(timeout=BEAT_S)
            except queue.Empty:
                pass
            else:
                self._handle(k, msg)
            self._check_silent()

    def _handle(self, k: int, msg) -> None:
        if self._settled(k):
            return  # its end of file after its results, or word from a worker already given up
        kind = msg[0]
        if kind == "at":
            self.at[k] = msg[1]
            self.waiting.add(k)
            if self.dead:
                self._release(None)
        elif kind == "progress":
            self.info[k] = msg[1]
            if self.progress is not None:
                self.progress(self._progress())
        elif kind == "stalled":
            before = sum(self.n_stalled.values())
            self.n_stalled[k] = msg[1]
            if self.stalled is not None and sum(self.n_stalled.values()) != before:
                self.stalled(sum(self.n_stalled.values()))
        elif kind == "done":
            self.records[k], self.stats[k] = msg[1], msg[2]
        elif kind == "error":
            self._died(k, msg[1])
        elif kind == "eof":
            self._died(k)

    def _check_silent(self) -> None:
        now = time.monotonic()
        for k, p in self.procs.items():
            if not self._settled(k) and now - self.heard[k] > WORKER_SILENT_S:
                p.kill()
                self._died(k, f"no word from it for {WORKER_SILENT_S:g} s (stopped or stuck), killed")

    def _progress(self) -> dict:
        infos = list(self.info.values())
        return {"done": sum(i["done"] for i in infos), "total": self.n_total,
                "in_flight": sum(i["in_flight"] for i in infos),
                "output_tokens": sum(i["output_tokens"] for i in infos),
                "elapsed_s": max(i["elapsed_s"] for i in infos)}

    def _died(self, k: int, why: str | None = None) -> None:
        if self._gone(k):
            return
        p = self.procs[k]
        p.join(EXIT_WAIT_S)  # its pipe closed or it said why: it is exiting
        cause = why or (f"exit code {p.exitcode}" if p.exitcode is not None else "its pipe closed")
        self.dead.append(f"client worker {k} (pid {p.pid}) died mid-point: {cause}")
        self.stop.value = 1  # the others launch nothing more; their requests in flight finish
        for feed in self.feeds.values():
            feed.stop()
        self._release(None)  # a worker waiting at a barrier goes on, finds the stop byte set, sends its records

    def end(self) -> None:
        """Every worker gone: joined after its results, else terminated (Ctrl-C, a failure here)."""
        for k, p in self.procs.items():
            if k not in self.records:
                p.terminate()
        deadline = time.monotonic() + JOIN_S
        for p in self.procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(JOIN_S)
        for reader in self.readers:  # each ends at its worker's end of file
            reader.join(max(0.0, deadline - time.monotonic()) + EXIT_WAIT_S)
        for c in [*self.conns.values(), *self.commands.values()]:
            c.close()
