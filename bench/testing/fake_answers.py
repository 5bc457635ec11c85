"""The fake server's non-streaming answers (what lm-evaluation-harness asks for): one JSON
completion or chat completion, as vLLM's OpenAI server writes it. With `solve_arithmetic` the
text is the answer to the prompt's last bench.testing.arith_task question, else a fixed word."""

from __future__ import annotations

import time

from aiohttp import web

from bench.testing.arith_task import solve


def answer(prompts: list[str], chat: bool, model: str, solve_arithmetic: bool, n_in: int) -> web.Response:
    """One non-streaming response: a choice per prompt text, finish "stop", usage counted in words."""
    choices, n_out = [], 0
    for i, prompt in enumerate(prompts):
        text = " " + ((solve(prompt) if solve_arithmetic else None) or "fake")
        n_out += len(text.split())
        choice = ({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} if chat
                  else {"index": i, "text": text, "logprobs": None, "finish_reason": "stop"})
        choices.append(choice)
    return web.json_response({
        "id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": model, "choices": choices,
        "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
    })
