"""The energy boundary of each series in a comparison: NVML's power covers the GPU ("gpu") or,
on a Grace superchip without a GPU scope, the whole module ("module": CPU + GPU). A module
figure beside a GPU one is never shown without saying so (issue 20 item 6).

    scopes, note = power_scopes(rows)     # {series label: "gpu" | "module" | "mixed" | "not recorded"}, warning
"""

from __future__ import annotations

import pandas as pd

from bench.analysis.pareto import split_series

NOT_RECORDED = "not recorded"


def power_scopes(rows: pd.DataFrame) -> tuple[dict[str, str], str | None]:
    """Each series' power scope, and a one-line warning when a module-scope series is compared
    with one that is not (None: every series has the same boundary, or none is module)."""
    scopes: dict[str, str] = {}
    for label, _, series in split_series(rows):
        values = set(series["power_scope"].dropna().astype(str)) if "power_scope" in series else set()
        scopes[label] = values.pop() if len(values) == 1 else ("mixed" if values else NOT_RECORDED)
    module = sorted(s for s, v in scopes.items() if v in ("module", "mixed"))
    other = sorted(s for s, v in scopes.items() if v not in ("module", "mixed"))
    if not module or not other:
        return scopes, None
    return scopes, (f"Energy boundaries differ: {', '.join(module)} measured module power (CPU + GPU, a Grace "
                    f"superchip without NVML's GPU scope) beside GPU power of {', '.join(other)}; their J/token "
                    "and ownership $/Mtok are not like for like.")
