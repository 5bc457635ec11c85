"""Published figures (bench.catalog.published) placed beside measured points, labelled.

Only `bench compare --reference` uses this; the figures stay as published. Where a plot
needs a coordinate the source did not state directly, it is derived and the derivation is
named in the hover text: interactivity as 1 / median ITL, output tok/s per GPU as the
system's output tok/s / GPU count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.catalog.published import PublishedResult, load_published


@dataclass
class RefPoint:
    """One published point on one plot: x is interactivity (tok/s/user), y the plotted metric."""

    row: PublishedResult
    x: float
    y: float
    derived: list[str] = field(default_factory=list)


def select_published(model: str) -> tuple[list[PublishedResult], bool]:
    """(rows, matched): the rows of MODEL, or every row (matched False) when none is of it."""
    rows = load_published()
    mine = [r for r in rows if r.model == model]
    return (mine, True) if mine else (rows, False)


def ref_label(row: PublishedResult) -> str:
    """Series name of a published row: publisher, model, hardware x GPUs, precision."""
    n = f" x{row.n_gpus}" if row.n_gpus and row.n_gpus > 1 else ""
    return f"published {row.publisher.split()[0]}: {row.model} {row.hardware}{n} {row.precision}"


def ref_points(rows: list[PublishedResult], metric: str) -> list[RefPoint]:
    """The rows that can be drawn against interactivity for METRIC (output_tok_s_per_gpu,
    j_per_output_token or usd_per_mtok_output__*), with their derivations."""
    out = []
    for row in rows:
        x, derived = _interactivity(row)
        y = _value(row, metric, derived)
        if x is not None and y is not None:
            out.append(RefPoint(row, x, y, derived))
    return out


def reference_rows(rows: list[PublishedResult]) -> list[dict]:
    """Table rows: every published figure as published, with its source and notes."""
    return [{
        "id": r.id, "source": r.source, "publisher": r.publisher, "model": r.model_as_published,
        "hardware": f"{r.hardware_as_published} ({r.hardware})", "precision": r.precision,
        "engine": r.engine, "load": r.load, "workload": r.workload, "figures": r.as_published,
        "notes": "; ".join(r.notes), "where": r.where, "recipe": r.recipe,
    } for r in rows]


REFERENCE_COLUMNS = ["id", "source", "publisher", "model", "hardware", "precision", "engine", "load", "figures",
                     "notes", "where", "recipe"]


def _interactivity(row: PublishedResult) -> tuple[float | None, list[str]]:
    if row.interactivity_tok_s_user is not None:
        return row.interactivity_tok_s_user, []
    if row.median_itl_ms:
        return 1000.0 / row.median_itl_ms, [f"interactivity derived: 1 / median ITL ({row.median_itl_ms:g} ms)"]
    return None, []


def _value(row: PublishedResult, metric: str, derived: list[str]) -> float | None:
    if metric == "output_tok_s_per_gpu":
        if row.output_tok_s_per_gpu is not None:
            return row.output_tok_s_per_gpu
        if row.output_tok_s is not None and row.n_gpus:
            if row.n_gpus > 1:
                derived.append(f"per GPU derived: {row.output_tok_s:g} output tok/s / {row.n_gpus} GPUs")
            return row.output_tok_s / row.n_gpus
        return None
    if metric == "j_per_output_token":
        return row.j_per_output_token
    if metric.startswith("usd_per_mtok_output"):
        if row.usd_per_mtok_output is not None:
            derived.append("$/Mtok: the publisher's own cost assumptions, not this scenario's")
        return row.usd_per_mtok_output
    return None
