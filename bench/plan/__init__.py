"""Plan: a sweep file (or single-run options) + CLI overrides -> typed engine configs and
ordered load points; preflight (fit, precision, devices) decides what is skipped and why.

    from bench.plan import build_plan, load_sweep, plan_from_options
"""

from bench.plan.plan import *  # noqa: F403 - the package re-exports its module's __all__
from bench.plan.plan import __all__  # noqa: F401
