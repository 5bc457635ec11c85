"""The fake server's non-streaming answers (what lm-evaluation-harness asks for): one JSON
completion or chat completion, as vLLM's OpenAI server writes it. With `solve_arithmetic` the
text is the answer to the prompt's last bench.testing.arith_task question, else a fixed word."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from bench.testing.arith_task import solve

if TYPE_CHECKING:
    from bench.testing.fake_app import Ask, FakeServerConfig


def _prompts(ask: Ask) -> list[str]:
    if ask.messages:
        return [" ".join(str(m.content) for m in ask.messages)]
    if isinstance(ask.prompt, str):
        return [ask.prompt]
    return [" ".join(map(str, ask.prompt or []))]


def answer(ask: Ask, cfg: FakeServerConfig) -> web.Response:
    """One non-streaming response: a choice per prompt, finish "stop", usage counted in words."""
    chat = bool(ask.messages)
    choices, n_out = [], 0
    for i, prompt in enumerate(_prompts(ask)):
        text = (solve(prompt) if cfg.solve_arithmetic else None) or "fake"
        text = " " + text
        n_out += len(text.split())
        choice = ({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} if chat
                  else {"index": i, "text": text, "logprobs": None, "finish_reason": "stop"})
        choices.append(choice)
    n_in = len(ask.units())
    return web.json_response({
        "id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": cfg.model, "choices": choices,
        "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
    })
