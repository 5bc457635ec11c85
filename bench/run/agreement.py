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


def _post(url: str, body: dict, timeout_s: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read(8 << 20))


def _positions(entries: object, k: int) -> list[dict[str, float]]:
    """vLLM's prompt_logprobs (None first, then {token_id: {logprob, rank, ...}}) -> the top-k per position."""
    if not isinstance(entries, list):
        raise AccuracyNotRun("the server returned no prompt_logprobs (agreement needs vLLM's prompt_logprobs)")
    out = []
    for e in entries[1:]:
        if not isinstance(e, dict):
            raise AccuracyNotRun("malformed prompt_logprobs from the server")
        top = {str(t): float(v["logprob"]) for t, v in e.items()
               if isinstance(v, dict) and isinstance(v.get("logprob"), (int, float))
               and (not isinstance(v.get("rank"), int) or v["rank"] <= k)}
        out.append(top)
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
        choices = out.get("choices") if isinstance(out, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise AccuracyNotRun("agreement probe: the server's answer has no choice")
        positions += _positions(choices[0].get("prompt_logprobs"), k)
    return positions
