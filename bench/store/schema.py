"""The shapes both sides of the store share: the table's and the point files' columns, their
one type each, the Parquet writer options and the store's folder names. No I/O, no store
module imported: the row derivation (bench.store.rows), the point files (bench.store.points),
the table builder (bench.store.costmodel) and the readers (bench.store.query,
bench.store.trust) all read them from here. Columns: docs/costmodel.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.store.accuracy_rows import (
    ACCURACY_BOOL_COLUMNS,
    ACCURACY_COLUMNS,
    ACCURACY_INT_COLUMNS,
    ACCURACY_STRING_COLUMNS,
)

if TYPE_CHECKING:  # imported where used: the CLI imports this module without them
    import pandas as pd
    import pyarrow as pa

COSTMODEL_DIR = "costmodel"
TABLE_NAME = "costmodel"
POINTS_DIR = "costmodel/points"
COMPACTED_DIR = "costmodel/compacted"
COMPACTED_FILE = "compacted.parquet"
CSV_FLOAT_FORMAT = "%.9g"
SORT_KEYS = ["model", "hardware", "precision", "kv_cache_dtype", "engine", "n_gpus", "run_id", "point_id"]
BASE_COLUMNS = [
    "run_id", "point_id", "model", "hardware", "n_gpus", "total_params", "active_params", "sparsity",
    "dtype", "quantization", "kv_cache_dtype", "precision", "engine", "engine_version",
    "isl", "osl", "load_kind", "concurrency", "rate_rps", "n_requests",
    "output_tok_s", "total_tok_s", "tok_s_per_gpu", "output_tok_s_per_gpu", "interactivity_tok_s_user",
    "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "error_rate", "goodput_output_tok_s",
    "avg_power_w", "avg_power_w_per_gpu", "idle_power_w", "j_per_token", "j_per_output_token",
    "energy_method", "measured", "roofline_efficiency", "valid",
    "harness_version", "device_name", "run_date",
    *ACCURACY_COLUMNS,  # accuracy gate (bench.store.accuracy_rows)
    # speculative decoding (issue 21): method ("none" without), draft tokens per step, acceptance over the window
    "spec_method", "spec_tokens", "spec_mean_acceptance_length", "spec_acceptance_rate",
    "power_scope",  # issue 20 item 6: gpu | module | mixed | null
    # issue 21, lora: the LoRA mix ("base:0.5,sql:0.5") and structured output's mode and parse share
    "lora_mix", "structured_mode", "structured_valid_share",
]
# issue 20 item 2 (repeats): each row's load point over its valid repeats in the run: the point id
# without its repeat, n, and per headline figure mean, sd and the Student-t 95% interval
REPEAT_FIGURES = ["tok_s_per_gpu", "output_tok_s", "j_per_token", "j_per_output_token", "ttft_s_p50", "ttft_s_p99",
                  "tpot_s_p50", "tpot_s_p99", "goodput_output_tok_s"]
REPEAT_COLUMNS = ["repeat_of", "repeats_n", *(f"{f}_{s}" for f in REPEAT_FIGURES for s in ("mean", "sd", "ci95_lo",
                                                                                          "ci95_hi"))]
BASE_COLUMNS += REPEAT_COLUMNS
CATALOG_COLUMNS = ["total_params", "active_params", "sparsity"]  # from models.yaml when the table is made
# What a run's point rows carry beyond the table: a cost input, why a point is invalid, and
# the run's provenance (for `bench compare --store`, which reads no run.json).
POINT_EXTRA_COLUMNS = ["input_tok_s", "invalid_reasons", "run_status", "run_n_points", "run_n_valid_points",
                       "weights", "driver_version", "harness_git_sha", "synthetic"]
# A point file's columns: the base ones a run gives (no catalog figure) and the extra ones.
POINT_COLUMNS = [c for c in BASE_COLUMNS if c not in CATALOG_COLUMNS] + POINT_EXTRA_COLUMNS
SCENARIO_FIELDS = [
    "utilization", "usd_per_gpu_hour", "usd_per_mtok_output", "usd_per_mtok_input",
    "usd_per_mtok_total", "usd_per_mtok_goodput",
]
STRING_COLUMNS = {
    "run_id", "point_id", "model", "hardware", "dtype", "quantization", "kv_cache_dtype", "precision",
    "engine", "engine_version", "load_kind", "energy_method", "harness_version", "device_name", "run_date",
    "invalid_reasons", "run_status", "weights", "driver_version", "harness_git_sha",
    *ACCURACY_STRING_COLUMNS,  # accuracy gate
    "spec_method",  # speculative decoding (issue 21)
    "power_scope", "repeat_of",
    "lora_mix", "structured_mode",  # issue 21, lora
}
BOOL_COLUMNS = {"measured", "valid", "synthetic", *ACCURACY_BOOL_COLUMNS}  # accuracy gate: its verdict
INT_COLUMNS = {"n_gpus", "total_params", "active_params", "isl", "osl", "concurrency", "n_requests",
               "run_n_points", "run_n_valid_points", *ACCURACY_INT_COLUMNS,  # accuracy gate: questions
               "spec_tokens",  # speculative decoding
               "repeats_n"}  # repeats
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
                   "write_statistics": True, "version": "2.6", "data_page_version": "1.0",
                   "write_page_checksum": True}  # a CRC32 a page (bench.results.schema.PARQUET_WRITE_OPTIONS)


def cast_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A pandas frame with each known column in its one dtype (string, boolean, Int64, else float64)."""
    import pandas as pd

    string = pd.StringDtype()  # "string": <NA> for missing
    out = {}
    for c in frame.columns:
        column = frame[c]
        if c in STRING_COLUMNS:
            out[c] = column if column.dtype == string else column.astype(string)
        elif c in BOOL_COLUMNS:
            out[c] = column if column.dtype == "boolean" else column.astype("boolean")
        elif c in INT_COLUMNS:
            out[c] = column if column.dtype == "Int64" else pd.to_numeric(column, errors="coerce").round().astype("Int64")
        else:
            out[c] = column if column.dtype == "float64" else pd.to_numeric(column, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index, columns=frame.columns)


def point_schema() -> pa.Schema:
    """The Arrow schema of a point file: POINT_COLUMNS with their one type each."""
    import pyarrow as pa

    def kind(c: str) -> pa.DataType:
        if c in STRING_COLUMNS:
            return pa.string()
        if c in BOOL_COLUMNS:
            return pa.bool_()
        return pa.int64() if c in INT_COLUMNS else pa.float64()

    return pa.schema([(c, kind(c)) for c in POINT_COLUMNS])


def conform(table: pa.Table) -> pa.Table:
    """Any Arrow table of point rows -> the point schema: columns in order and cast, a missing
    one (an older writer) all null, an unknown one (a newer writer) left out."""
    import pyarrow as pa

    schema = point_schema()
    if table.schema.equals(schema):
        return table
    arrays = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def sort_points(table: pa.Table) -> pa.Table:
    """Arrow point rows in the table's row order (SORT_KEYS, nulls last)."""
    import pyarrow.compute as pc

    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending", "at_end") for k in SORT_KEYS]))


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow point rows -> pandas with the table's dtypes (string, boolean, Int64, float64)."""
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.string(): pd.StringDtype(), pa.bool_(): pd.BooleanDtype(), pa.int64(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=mapping.get)
