"""The docs name only what exists: every `bench/...` path, every `bench.x.y` name, every
`from bench.x import a, b` of a snippet and every relative link (file and heading) of
docs/*.md and README.md resolves in this checkout; the measurement contract is cited as
the repository's docs/measurement.md; no doc, comment or docstring names a path that exists
on one machine only."""

from __future__ import annotations

import importlib
import itertools
import re
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]

# `bench/` not inside a longer path (`s3://b/bench/x`, `runs/bench/`) or a word (`my-bench/`).
PATH_RE = re.compile(r"(?<![\w./~-])bench/[\w./*-]*")
# `bench.x.y` not inside a longer name (`my.bench.x`) or a file name (`my-bench.yaml`).
NAME_RE = re.compile(r"(?<![\w./-])bench(?:\.[A-Za-z_]\w*)+")
FROM_RE = re.compile(r"^\s*from\s+(bench(?:\.\w+)*)\s+import\s+\(?([\w\s,]+?)\)?\s*(?:#.*)?$", re.MULTILINE)
MD = MarkdownIt("commonmark").enable("table")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _matches(docs: list[Path], regex: re.Pattern[str]) -> list[tuple[str, str]]:
    """(doc:line, match) for every match of `regex` in `docs`."""
    out = []
    for doc in docs:
        for lineno, line in enumerate(doc.read_text().splitlines(), 1):
            out += [(f"{_rel(doc)}:{lineno}", m.group(0)) for m in regex.finditer(line)]
    return out


def missing_paths(docs: list[Path]) -> list[str]:
    """Every `bench/...` file or folder (or glob) named in `docs` that the checkout lacks."""
    missing = []
    for where, path in _matches(docs, PATH_RE):
        path = path.rstrip(".")  # a sentence's full stop
        if not (any(REPO.glob(path)) if "*" in path else (REPO / path).exists()):
            missing.append(f"{where}: {path}")
    return missing


@cache
def _resolve(name: str) -> str | None:
    """None when `name` is an importable module or an attribute chain of one, else why not."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                return f"importing {module_name} needs {e.name}"
            continue
        for i in range(cut, len(parts)):
            if not hasattr(obj, parts[i]):
                return f"{'.'.join(parts[:i])} has no {parts[i]!r}"
            obj = getattr(obj, parts[i])
        return None
    return "no such module"


def unresolved_names(docs: list[Path]) -> list[str]:
    """Every dotted `bench.x.y` of `docs` that is neither a module nor a module's attribute."""
    return [f"{where}: {name} ({why})" for where, name in _matches(docs, NAME_RE) if (why := _resolve(name))]


def bad_imports(docs: list[Path]) -> list[str]:
    """Every name a snippet's `from bench.x import a, b` line imports that bench.x lacks."""
    bad = []
    for doc in docs:
        text = doc.read_text()
        for m in FROM_RE.finditer(text):
            lineno = text.count("\n", 0, m.start()) + 1
            for name in filter(None, (n.strip() for n in m.group(2).split(","))):
                if why := _resolve(f"{m.group(1)}.{name}"):
                    bad.append(f"{_rel(doc)}:{lineno}: from {m.group(1)} import {name} ({why})")
    return bad


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, only word characters, spaces and hyphens kept,
    each space a hyphen (what github.com and most renderers link to)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def _anchors(doc: Path) -> frozenset[str]:
    anchors, count = set(), {}
    tokens = MD.parse(doc.read_text())
    for open_, inline in itertools.pairwise(tokens):
        if open_.type == "heading_open":
            slug = _slug("".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline")))
            n = count[slug] = count.get(slug, -1) + 1
            anchors.add(f"{slug}-{n}" if n else slug)  # a repeated heading: slug-1, slug-2, ...
    return frozenset(anchors)


def _links(doc: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image of `doc`; code spans and blocks hold none."""
    out = []
    for block in MD.parse(doc.read_text()):
        line = block.map[0] + 1 if block.map else 0
        for tok in block.children or []:
            line += tok.type in ("softbreak", "hardbreak")
            target = tok.attrGet("href") if tok.type == "link_open" else tok.attrGet("src") if tok.type == "image" else None
            if target is not None:
                out.append((line, str(target)))
    return out


def broken_links(docs: list[Path]) -> list[str]:
    """Every relative link or image of `docs` whose file, or heading after `#`, is missing."""
    bad = []
    for doc in docs:
        for line, target in _links(doc):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                bad.append(f"{_rel(doc)}:{line}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{_rel(doc)}:{line}: {target} (no heading '{anchor}' in {dest.name})")
    return bad


def test_every_bench_path_exists():
    bad = missing_paths(DOCS)
    assert not bad, "\n".join(bad)


def test_every_bench_name_resolves():
    bad = unresolved_names(DOCS)
    assert not bad, "\n".join(bad)


def test_every_name_a_snippet_imports_from_bench_exists():
    bad = bad_imports(DOCS)
    assert not bad, "\n".join(bad)


def test_every_relative_link_resolves():
    bad = broken_links(DOCS)
    assert not bad, "\n".join(bad)


def test_the_checks_find_what_is_missing(tmp_path):
    """Each check above reports a made-up name and passes the real ones beside it."""
    (tmp_path / "other.md").write_text("# Other\n## The `check_point` (validity)\n## Twice\n## Twice\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "`bench/measure/metrics.py`, `bench/telemetry/`, `bench/measure/nope.py`, bench/no_such_dir/.\n"
        "`bench.measure.metrics`, `bench.errors.ConfigError`, `bench.errors.NoSuchError`, `bench.nope.x`.\n"
        "```python\nfrom bench.errors import ConfigError, NoSuchError  # comment\nfrom bench.nope import a\n```\n"
        "[a](other.md#the-check_point-validity) [b](other.md#twice-1) [c](other.md#nope) [d](gone.md)\n"
        "[e](https://example.com/gone.md) [f](#nope) `[g](gone.md)`\n")
    assert missing_paths([doc]) == [f"{doc}:1: bench/measure/nope.py", f"{doc}:1: bench/no_such_dir/"]
    assert unresolved_names([doc]) == [f"{doc}:2: bench.errors.NoSuchError (bench.errors has no 'NoSuchError')",
                                       f"{doc}:2: bench.nope.x (bench has no 'nope')",
                                       f"{doc}:5: bench.nope (bench has no 'nope')"]
    assert bad_imports([doc]) == [f"{doc}:4: from bench.errors import NoSuchError (bench.errors has no 'NoSuchError')",
                                  f"{doc}:5: from bench.nope import a (bench has no 'nope')"]
    assert broken_links([doc]) == [f"{doc}:7: other.md#nope (no heading 'nope' in other.md)",
                                   f"{doc}:7: gone.md (no such file)",
                                   f"{doc}:8: #nope (no heading 'nope' in doc.md)"]


def _files(*globs: str) -> list[Path]:
    return sorted({p for g in globs for p in REPO.glob(g) if p.is_file() and "__pycache__" not in p.parts})


def test_the_contract_is_cited_from_the_repository():
    """Code and schema cite `docs/measurement.md`; a doc under docs/ links `measurement.md`."""
    assert (REPO / "docs" / "measurement.md").is_file()
    bad = []
    for path in _files("bench/**/*.py", "docs/run.schema.json", "README.md", "tests/*.py", "scripts/**/*"):
        if path == Path(__file__).resolve():
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"(?<!docs/)measurement\.md", line):
                bad.append(f"{_rel(path)}:{lineno}: {line.strip()}")
    for doc in (REPO / "docs").glob("*.md"):
        for lineno, line in enumerate(doc.read_text().splitlines(), 1):
            # What is left once every link is taken out must not name the contract.
            if "measurement.md" in re.sub(r"\[[^\]]*\]\([^)]*\)", "", line):
                bad.append(f"{_rel(doc)}:{lineno}: {line.strip()}")
    assert not bad, "\n".join(bad)


# Folders of the machine the project was started on, absent from a clone.
MACHINE = re.compile("/" + "(?:work|root)" + "/")


@pytest.mark.parametrize("globs", [("docs/*", "README.md"), ("*.yaml", "hardware/*.yaml", "sweeps/**/*.yaml"),
                                   ("bench/**/*.py", "tests/**/*.py", "scripts/**/*")])
def test_no_path_of_one_machine(globs):
    bad = []
    for path in _files(*globs):
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE.search(line):
                bad.append(f"{_rel(path)}:{lineno}: {line.strip()}")
    assert not bad, "\n".join(bad)
