"""The package reads as the data flow: each folder of bench/ is one step, and a module
imports only from its own step, an earlier one, or the shared base modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bench

ROOT = Path(bench.__file__).parent

# The data flow, in order (docs/architecture.md). Base modules may be imported by any step.
STEPS = ["catalog", "plan", "engines", "load", "telemetry", "measure", "results", "run", "store", "fleet", "analysis", "cli"]
BASE = {"errors", "safepath", "redact", "escape", "atomicio", "registry", "__init__", "__main__"}
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


@pytest.mark.slow
def test_imports_only_point_back_along_the_flow():
    assert [b for b in backward_imports() if b.split(" (")[0] not in KNOWN] == []


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _targets(module: str, known: set[str]) -> list[str]:
    """The project modules an import line names: `bench.a.b` itself, or `bench.a` when `b` is
    a name in it (`from bench.load import driver` names the module bench.load.driver)."""
    out = []
    while module:
        if module in known:
            out.append(module)
            break
        module = module.rpartition(".")[0]
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at any depth (function-level imports count)."""
    paths = {_module_of(p): p for p in ROOT.rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                graph[module].update(t for t in _targets(name, known) if t != module)
    return graph


def cycles_inside_folders(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module whose modules share a step folder
    (Tarjan's algorithm over the edges that stay inside one folder)."""

    def folder(m: str) -> str:
        parts = m.split(".")
        return parts[1] if len(parts) > 2 else ""

    edges = {m: {t for t in ts if folder(t) == folder(m) and folder(m)} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # iterative enough for a package of this size: depth <= modules per folder
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


@pytest.mark.slow
def test_no_cycle_inside_a_folder():
    cycles = cycles_inside_folders(import_graph())
    assert cycles == [], "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    graph = {"bench.load.a": {"bench.load.b"}, "bench.load.b": {"bench.load.c"}, "bench.load.c": {"bench.load.a"},
             "bench.run.x": {"bench.load.a"}, "bench.load": set()}
    assert cycles_inside_folders(graph) == [["bench.load.a", "bench.load.b", "bench.load.c"]]
