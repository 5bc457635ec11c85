"""The package reads as the data flow: each folder of bench/ is one step, and a module
imports only from its own step, an earlier one, or the shared base modules."""

from __future__ import annotations

import ast
from pathlib import Path

import bench

ROOT = Path(bench.__file__).parent

# The data flow, in order (docs/architecture.md). Base modules may be imported by any step.
STEPS = ["catalog", "plan", "engines", "load", "telemetry", "measure", "results", "run", "store", "fleet", "analysis", "cli"]
BASE = {"errors", "safepath", "redact", "escape", "atomicio", "__init__", "__main__"}
TESTING = "testing"  # fakes of real servers, for tests and benchmarks; never imported by a step


def _step(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "bench":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "bench":
                out += [(node.lineno, f"bench.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def backward_imports() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for lineno, module in _imports(path):
            target = _step(module)
            if target is None or target in BASE or target == own or own == "__main__":
                continue
            where = f"{rel}:{lineno} imports {module}"
            if target == TESTING:
                bad.append(f"{where} (a fake, imported by the package)")
            elif own in BASE:
                bad.append(f"{where} (a base module depends on a step)")
            elif own in STEPS and target in STEPS and STEPS.index(target) > STEPS.index(own):
                bad.append(f"{where} (step '{own}' reaches forward to '{target}')")
            elif target not in STEPS and target != TESTING:
                bad.append(f"{where} (unknown step '{target}')")
    return bad


def test_every_folder_is_a_known_step():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(STEPS) | {TESTING}
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert modules <= BASE


# Being removed by the engine-seam and typed-results work (issue 8); must end empty.
KNOWN: set[str] = set()


def test_imports_only_point_back_along_the_flow():
    assert [b for b in backward_imports() if b.split(" (")[0] not in KNOWN] == []
