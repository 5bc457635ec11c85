"""Accuracy layer 2's probe (docs/accuracy.md): the top-k log-probabilities a live server gives
every position of a fixed prompt set, teacher-forced (vLLM's `prompt_logprobs`), so that two
precisions of one model are compared at the same positions whatever they would generate.

    positions = prompt_topk(engine.base_url, engine.served_model)   # [{token_id: logprob}] per position

Dataset-free: works with dummy weights. The comparison is bench.measure.accuracy.agreement.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import msgspec

from bench.errors import one_line
from bench.run.accuracy_task import AccuracyNotRun

PROMPT_SET = "bench-prompts-v1"
# Fixed, plain English texts: a model's next-token distribution along them, not its answers.
PROMPTS = (
    "The cost of running a large language model depends on the hardware, the precision of its weights and how busy it is.",
    "Water boils at one hundred degrees Celsius at sea level, and at lower temperatures on a high mountain.",
    "She opened the window, looked at the rain for a while, and decided to stay at home with a book.",
    "In 1969 two astronauts walked on the Moon while a third orbited above them in the command module.",
    "To compute the mean of a list of numbers, add them together and divide the sum by how many there are.",
    "The train to the city leaves every twenty minutes from the second platform, except on Sundays.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the leaves of plants.",
    "A careful benchmark states what it measured, how it measured it, and how sure it is of the result.",
)
TOP_K = 5  # within vLLM's default --max-logprobs (20)
REQUEST_TIMEOUT_S = 120.0


class _Logprob(msgspec.Struct):
    """One candidate token of a position: its natural-log probability and its rank (1 = most likely)."""
    logprob: float
    rank: int | None = None


class _Choice(msgspec.Struct):
    """vLLM's prompt_logprobs: None for the first token, then {token_id: candidate} per position."""
    prompt_logprobs: list[dict[str, _Logprob] | None] | None = None


class _Answer(msgspec.Struct):
    """The part of a completions answer the probe reads (other keys are ignored)."""
    choices: list[_Choice] = []


def _post(url: str, body: dict, timeout_s: float) -> _Answer:
    """The server's answer to one request, decoded into an `_Answer`; AccuracyNotRun when its
    shape is not a completions answer."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        out = json.loads(r.read(8 << 20))  # json, not msgspec: it reads a -Infinity logprob
    try:
        return msgspec.convert(out, _Answer)
    except msgspec.ValidationError as e:
        raise AccuracyNotRun(one_line(f"agreement probe: malformed answer from the server: {e}")) from None


def _positions(entries: list[dict[str, _Logprob] | None] | None, k: int) -> list[dict[str, float]]:
    """vLLM's prompt_logprobs (None first, then {token_id: {logprob, rank, ...}}) -> the top-k per position."""
    if entries is None:
        raise AccuracyNotRun("the server returned no prompt_logprobs (agreement needs vLLM's prompt_logprobs)")
    out = []
    for e in entries[1:]:
        if e is None:
            raise AccuracyNotRun("malformed prompt_logprobs from the server")
        out.append({t: v.logprob for t, v in e.items() if v.rank is None or v.rank <= k})
    return out


def prompt_topk(base_url: str, model: str, prompts: tuple[str, ...] = PROMPTS, k: int = TOP_K,
                timeout_s: float = REQUEST_TIMEOUT_S) -> list[dict[str, float]]:
    """Every prompt's positions (after the first token), each the top-k token ids -> natural-log
    probabilities, in prompt order. Raises AccuracyNotRun with a one-line reason."""
    root = base_url.rstrip("/")
    root = root[:-3] if root.endswith("/v1") else root
    positions: list[dict[str, float]] = []
    for text in prompts:
        body = {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0, "prompt_logprobs": k}
        try:
            out = _post(f"{root}/v1/completions", body, timeout_s)
        except (OSError, urllib.error.URLError, ValueError) as e:
            raise AccuracyNotRun(one_line(f"agreement probe failed: {e}")) from e
        if not out.choices:
            raise AccuracyNotRun("agreement probe: the server's answer has no choice")
        positions += _positions(out.choices[0].prompt_logprobs, k)
    return positions
