"""Plan: a sweep file (or single-run options) + CLI overrides -> typed engine configs and
ordered load points; preflight (fit, precision, devices) decides what is skipped and why.

    from bench.plan import build_plan, load_sweep, plan_from_options

The package re-exports `bench.plan.plan`'s `__all__` on first use (PEP 562), so importing one
of its modules (`bench.plan.points` for a result's types) does not import the sweep file's
reader and the whole planner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.plan.plan import *  # noqa: F403 - the package re-exports its module's __all__
    from bench.plan.plan import __all__  # noqa: F401
else:
    from bench.registry import reexport

    __getattr__ = reexport(globals(), "bench.plan.plan")
