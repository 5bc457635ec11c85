"""run.json's JSON Schema, generated from the typed models (never written by hand).

    python3 -m bench.results.schema_json           # rewrite docs/run.schema.json
    python3 -m bench.results.schema_json --check   # exit 1 if the committed file is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.results.schema import RunResult

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "run.schema.json"


def run_schema() -> dict:
    """The JSON Schema (draft 2020-12) of run.json at the current SCHEMA_VERSION."""
    schema = RunResult.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(run_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = schema_text()
    if "--check" in argv:
        current = SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else ""
        if current != text:
            print(f"{SCHEMA_FILE} is stale: run python3 -m bench.results.schema_json", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
