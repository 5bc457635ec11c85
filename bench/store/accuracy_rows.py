"""The accuracy verdict of a point's configuration as cost-model columns (docs/accuracy.md,
docs/costmodel.md), and the one reading of them every report uses. Pure, no I/O.

    accuracy_columns(run, config_id)   # {"accuracy_task": "gsm8k", "accuracy_passed": True, ...}
    gate_passed(row)                   # True / False / None (no gate ran, or no verdict)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.results import RunResult

ACCURACY_COLUMNS = [
    "accuracy_task", "accuracy_n", "accuracy_score", "accuracy_wilson_lower_95", "accuracy_floor",
    "accuracy_passed", "accuracy_reason", "accuracy_ref_drop", "accuracy_ref_p",
    "agreement_top1", "agreement_mean_kl_nats",
]
ACCURACY_STRING_COLUMNS = {"accuracy_task", "accuracy_reason"}
ACCURACY_BOOL_COLUMNS = {"accuracy_passed"}
ACCURACY_INT_COLUMNS = {"accuracy_n"}


def accuracy_columns(run: RunResult, config_id: str) -> dict[str, Any]:
    """The configuration's task verdict and agreement figures (every column, None where absent)."""
    out: dict[str, Any] = dict.fromkeys(ACCURACY_COLUMNS)
    for v in run.accuracy.get(config_id, []):
        ref = v.reference
        if v.kind == "task":
            out |= {"accuracy_task": v.task, "accuracy_n": v.n, "accuracy_score": v.score,
                    "accuracy_wilson_lower_95": v.wilson_lower_95, "accuracy_floor": v.floor,
                    "accuracy_passed": v.passed, "accuracy_reason": v.reason,
                    "accuracy_ref_drop": ref.drop if ref is not None else None,
                    "accuracy_ref_p": ref.p_one_sided if ref is not None else None}
        elif ref is not None:
            out |= {"agreement_top1": ref.top1_agreement, "agreement_mean_kl_nats": ref.mean_kl_nats}
    return out


def gate_passed(row: Mapping[str, Any]) -> bool | None:
    """A table row's accuracy gate: True passed, False failed (never on a Pareto front, never a
    "win"), None no gate ran or it gave no verdict (a missing column, NA or NaN)."""
    value = row.get("accuracy_passed")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return bool(value)
    except TypeError:  # pandas.NA has no truth value: no verdict
        return None

