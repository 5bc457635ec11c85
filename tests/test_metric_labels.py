"""Metric labels once (issue 19 item 3): the plots' axis titles and the tables' headers are read
from the typed groups' fields (bench.measure.groups.metric_label), not restated per medium."""

from __future__ import annotations

import pandas as pd

from bench.analysis.pareto import X, Y
from bench.measure.groups import Energy, Metrics, metric_label


def test_a_labelled_field_has_an_axis_title_and_a_header():
    labelled = {name: f.json_schema_extra for g in (Metrics, Energy) for name, f in g.model_fields.items()
                if isinstance(f.json_schema_extra, dict)}
    assert {X, Y, "output_tok_s_per_gpu", "j_per_token", "j_per_output_token"} <= set(labelled)
    for name, shown in labelled.items():
        assert metric_label(name) == shown["label"] and metric_label(name, short=True) == shown["short"]
    assert metric_label(X) == "interactivity (output tok/s per user)" and metric_label(Y, short=True) == "tok/s/GPU (in+out)"
    assert metric_label("ttft_s_p99", short=True) == "TTFT p99 (s)" and metric_label("run_id") == "run_id"


def test_the_html_figure_and_table_name_a_metric_by_its_field():
    from bench.analysis.figures import interactivity_figure
    from bench.analysis.pages import POINT_COLUMNS

    series = {"hardware": "h100-sxm", "precision": "bf16", "kv_cache_dtype": "auto", "engine": "vllm", "n_gpus": 1}
    points = pd.DataFrame([{**series, X: 10.0, Y: 100.0, "valid": True, "point_id": "p"}])
    fig = interactivity_figure(points, Y, "t")
    assert fig.layout.xaxis.title.text == metric_label(X) and fig.layout.yaxis.title.text == metric_label(Y)
    headers = dict(c for c in POINT_COLUMNS if isinstance(c, tuple))
    assert headers[X] == "tok/s/user" == metric_label(X, short=True) and headers["tpot_s_p50"] == "TPOT p50 (s)"
