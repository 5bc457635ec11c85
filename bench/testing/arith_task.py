"""A small generated arithmetic task for lm-evaluation-harness, entirely local (no download):
the task gate's tests and a CPU smoke check of `--accuracy` (docs/accuracy.md).

    folder = write_arith_task(tmp_path, n=50)      # bench_arith.yaml + bench_arith.jsonl
    solve(prompt)                                  # "19": what a correct model answers

The YAML reads its questions with the `json` dataset builder that ships inside `datasets`,
so lm-eval runs for real, and `solve` is what bench.testing.fake_app answers with
`solve_arithmetic`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

TASK = "bench_arith"

_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: What is {{{{a}}}} {{{{op}}}} {{{{b}}}}?\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "Question:"]
  do_sample: false
  max_gen_toks: 8
filter_list:
  - name: first-number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
        group_select: 0
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""

_QUESTION = re.compile(r"What is (-?\d+) ([+\-*]) (-?\d+)\?")


def questions(n: int, seed: int = 0) -> list[dict]:
    """n questions a + b, a - b or a * b of small integers, and their answers; seeded."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice("+-*")
        out.append({"a": a, "op": op, "b": b, "answer": str(_apply(a, op, b))})
    return out


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def write_arith_task(folder: Path, n: int = 50, seed: int = 0) -> Path:
    """Write the task YAML and its data under `folder`; returns the folder (lm-eval's include_path)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{TASK}.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions(n, seed)))
    (folder / f"{TASK}.yaml").write_text(_YAML.format(task=TASK, data=json.dumps(str(data))))
    return folder


def solve(prompt: str) -> str | None:
    """The answer to the last question in `prompt`, as a correct model writes it; None if none."""
    found = _QUESTION.findall(prompt)
    if not found:
        return None
    a, op, b = found[-1]
    return str(_apply(int(a), op, int(b)))
