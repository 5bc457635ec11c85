"""What a spawned bench process imports before it does anything: a fleet shard, the run stack
of `bench sweep` / `bench run`, a reader of run.json, the fake servers the tests launch. Each
is a fresh interpreter per process, so a heavy library imported at the top of a module it
never uses (pandas ~1 s on a loaded 2-core box, numpy ~0.3 s, the catalog's YAML and models)
is paid by every shard, sweep and fake server. Heavy imports stay inside the functions that
build a table (docs/architecture.md, "Heavy imports ... happen inside functions")."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

TABLES = ("pandas", "pyarrow", "plotly", "matplotlib", "duckdb", "scipy")  # a table, a plot, a query
ARRAYS = ("numpy",)
CATALOG = ("yaml", "bench.catalog.models", "bench.plan.plan")  # models.yaml's types, the planner

CASES = {
    # `python -m bench fleet shard` imports this before it starts its `bench sweep`: no table yet
    "fleet shard": (["bench.fleet.shard"], TABLES + ARRAYS),
    # run.json's types: read by the shard's mirror, `bench ls`, the store's checks
    "results schema": (["bench.results.schema"], TABLES + ARRAYS + CATALOG),
    # `bench sweep` / `bench run` before their first point: pandas comes with the first Parquet write
    "run stack": (["bench.cli.sweep_cmd", "bench.run.session"], TABLES),
    # what the tests launch as servers and followers: HTTP and counters; no catalog, no table, no client
    "fake servers": (["bench.testing.fake_server", "bench.testing.fake_sglang", "bench.testing.fake_node"],
                     TABLES + ARRAYS + CATALOG + ("bench.load.client",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_spawned_process_imports_no_library_it_does_not_use(case):
    modules, heavy = CASES[case]
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "LOADED []", (
        f"{case} ({', '.join(modules)}) imports {out.stdout.splitlines()[-1][7:]}: "
        f"`python -X importtime -c 'import {modules[0]}'` shows which module pulls it in")


@pytest.mark.parametrize("package, module", [("bench.plan", "bench.plan.plan"), ("bench.catalog", "bench.catalog.models")])
def test_a_lazy_package_exports_what_its_module_exports(package, module):
    """The package's names, resolved on first use (PEP 562), are its module's `__all__`, the
    same objects; a name it does not export is an AttributeError, as before."""
    pkg, mod = importlib.import_module(package), importlib.import_module(module)
    assert pkg.__all__ == mod.__all__
    for name in mod.__all__:
        assert getattr(pkg, name) is getattr(mod, name), name
    namespace: dict = {}
    exec(f"from {package} import *", namespace)  # the star import reads the lazy __all__
    assert set(mod.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'not_exported'"):
        pkg.not_exported  # noqa: B018
