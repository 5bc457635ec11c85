"""The agreement probe's reading of a server's answer (bench.run.agreement.prompt_topk): vLLM's
prompt_logprobs shape is decoded once into typed structs; the top-k candidates per position are
kept; an answer of another shape is one AccuracyNotRun line, never a crash. A real HTTP server
in a thread answers as vLLM does (the real-vLLM path is tests/test_agreement_vllm.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.run.accuracy_task import AccuracyNotRun
from bench.run.agreement import prompt_topk

# vLLM's answer to {"prompt_logprobs": 2, "max_tokens": 1}: None for the first prompt token, then per
# position the prompt's own token (any rank) and the top-k (rank 1..k).
VLLM_ANSWER = {
    "id": "cmpl-1", "object": "text_completion", "model": "m",
    "choices": [{"index": 0, "text": " x", "logprobs": None, "finish_reason": "length",
                 "prompt_logprobs": [None,
                                     {"11": {"logprob": -7.5, "rank": 40, "decoded_token": "a"},
                                      "5": {"logprob": -0.1, "rank": 1, "decoded_token": "b"},
                                      "6": {"logprob": -2.5, "rank": 2, "decoded_token": "c"}},
                                     {"5": {"logprob": -0.2, "rank": 1, "decoded_token": "b"},
                                      "9": {"logprob": -1, "rank": 2, "decoded_token": "d"}}]}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class _Server:
    """Answers every POST with `body` (bytes), as a JSON response."""

    def __init__(self, body: bytes):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.body = body
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _probe(answer) -> list[dict[str, float]]:
    body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    with _Server(body) as url:
        return prompt_topk(url, "m", prompts=("one", "two"), k=2, timeout_s=5.0)


@pytest.mark.slow
def test_the_top_k_of_each_position_is_read_from_vllms_answer():
    positions = _probe(VLLM_ANSWER)
    one = [{"5": -0.1, "6": -2.5}, {"5": -0.2, "9": -1.0}]  # rank 40 is outside the top 2
    assert positions == one + one  # two prompts, the same answer
    assert all(type(v) is float for p in positions for v in p.values())


@pytest.mark.parametrize("answer, why", [
    ({"choices": []}, "has no choice"),
    ({"object": "error", "message": "boom"}, "has no choice"),
    ({"choices": [{"index": 0, "text": "x"}]}, "no prompt_logprobs"),
    ({"choices": [{"prompt_logprobs": [None, None]}]}, "malformed prompt_logprobs"),
    ({"choices": [{"prompt_logprobs": [None, {"5": {"logprob": "high"}}]}]}, "malformed answer"),
    ({"choices": "none"}, "malformed answer"),
    ([1, 2], "malformed answer"),
    (b"not json\nat all", "agreement probe failed"),
])
@pytest.mark.slow
def test_an_answer_of_another_shape_is_one_line_not_a_crash(answer, why):
    with pytest.raises(AccuracyNotRun, match=why) as info:
        _probe(answer)
    assert "\n" not in str(info.value)
