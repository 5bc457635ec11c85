"""A run's figures derived, not declared: what the shared table takes from a run.

    verified = verify_run(run, read, where)          # a copy of the RunResult; StoreError when refused
    files = verified_point_files(run_id, run, read, where)   # its point files, from the copy
    run = read_verified_run(store, run_id)           # the same, on a published run

For every load point that finished (`status: ok`), the figures the table uses are derived
again from the run's raw records with the functions a run uses (bench.store.recompute):
the window facts, the metrics, the energy of the window from power.parquet, the roofline
and the validity. A stored figure that disagrees beyond rounding refuses the whole run,
one line naming the point and the field; so does a figure no card can produce
(bench.store.plausibility). The copy carries the derived figures, and its `valid` is the
derived validity AND the run's own (a run may have found a point invalid for a reason that
cannot be derived again, e.g. a packed point; its flag never makes a point valid).

A point the catalog cannot check (a model or hardware it does not list) is kept but
invalid, with that reason; an ok point without request records has no figure derivable and
is kept invalid with none. A failed point that kept its finished requests is checked like
any other (bench.store.integrity: counts and token totals) and, like every failed point,
never reaches the table.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.errors import BenchError, StoreError
from bench.results import RunResult
from bench.results.config import StoredEngineConfig
from bench.store.bounded import POINTS_LIMITS, read_parquet

READ = Callable[[str], "bytes | None"]  # a run's file by its relative path; None: not among its files
POWER_FILE = "power.parquet"  # bench.run.scope.POWER_FILE


def verify_run(run: RunResult, read: READ, where: str) -> RunResult:
    """The run with every ok point's figures derived again (see the module); StoreError (one
    line, starting with WHERE) when a stored figure disagrees or is implausible."""
    from bench.store.integrity import check_requests

    power = _LazyPower(read, where)
    points = []
    for point in run.points:
        if point.status != "ok":
            if point.requests_file:  # a failed point's kept requests: counts checked
                check_requests(_need(read, point.requests_file, where), point, where)
            points.append(point)
            continue
        try:
            points.append(_verify_point(run, point, run.config.engine_config(point.engine_config_id), read, power, where))
        except StoreError as e:  # Disagreement and Implausible name the field; file errors their file
            message = str(e) if str(e).startswith(where) else f"{where}: point {point.point_id}: {e}"
            raise StoreError(message) from None
        except (TypeError, ValueError, ArithmeticError, KeyError, AttributeError, IndexError) as e:
            # values of a type no bench writes, reaching the run's own arithmetic
            raise StoreError(f"{where}: point {point.point_id}: figures do not recompute "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    return run.model_copy(update={"points": points})


def verified_point_files(run_id: str, run: RunResult, read: READ, where: str) -> dict[str, bytes]:
    """{store-relative path: bytes} of the run's point files, made from its verified copy."""
    from bench.store.rows import run_point_files

    return run_point_files(run_id, verify_run(run, read, where))


def read_verified_run(store, run_id: str, manifest=None) -> RunResult:
    """A published run, read (manifest, checksums), checked and verified; StoreError (one line)."""
    from bench.store.manifest import check_manifest

    manifest = check_manifest(manifest, run_id, store.where) if manifest else store.read_manifest(run_id)
    if manifest is None:
        raise StoreError(f"{store.where}: no published run {run_id}")
    run = store.read_run(run_id, manifest)
    listed = {entry.path for entry in manifest.files}

    def read(rel: str) -> bytes | None:
        return store.read_file(run_id, rel, manifest) if rel in listed else None

    return verify_run(run, read, f"{store.where}: run {run_id}")


def _verify_point(run: RunResult, point, cfg: StoredEngineConfig, read: READ, power: _LazyPower, where: str):
    from bench.store import plausibility
    from bench.store.integrity import check_requests
    from bench.store.recompute import StoredTelemetry, recompute_point

    n_gpus = plausibility.n_gpus_of(cfg.model_dump())  # the stored counts, checked before use
    if not point.requests_file:
        reasons = _merge(point, ["figures not derivable: the point has no request records"])
        return point.model_copy(update={"metrics": None, "energy": None, "roofline": None, "valid": False,
                                        "invalid_reasons": reasons})
    records = check_requests(_need(read, point.requests_file, where), point, where)
    model, hardware = _catalog_model(cfg.model), _catalog_hardware(cfg.hardware_id)
    described = run.extra.get("telemetry")  # per configuration: the meter, e.g. a RAPL counter's wrap range
    telemetry = StoredTelemetry.of(described.get(point.engine_config_id) if isinstance(described, dict) else None)
    figures = recompute_point(point, cfg, n_gpus, records, power.table if _uses_series(point) else None,
                              telemetry, model, hardware)
    plausibility.check_figures({"metrics": figures.metrics, "energy": figures.energy, "roofline": figures.roofline})
    plausibility.check_counters(point.server)
    plausibility.check_power(figures.energy, n_gpus, hardware)
    if figures.roofline is not None and figures.roofline.context_len:
        plausibility.check_roofline(point, cfg, n_gpus, figures.metrics, figures.run, figures.roofline.context_len,
                                    model, hardware)
    unchecked = [f"not checked against the catalog: {what} {str(key)[:60]!r} is not in it"
                 for what, key, found in (("model", cfg.model, model), ("hardware", cfg.hardware_id, hardware)) if found is None]
    reasons = _merge(point, figures.reasons + unchecked)
    return point.model_copy(update={
        "metrics": figures.metrics, "energy": figures.energy,
        "roofline": figures.roofline, "valid": not reasons, "invalid_reasons": reasons})


def _merge(point, derived: list[str]) -> list[str]:
    """The derived reasons, after the run's own when it found the point invalid (kept, never overruled)."""
    own = [] if point.valid else list(point.invalid_reasons or ["invalid (the run's own finding)"])
    return list(dict.fromkeys(own + derived))


def _uses_series(point) -> bool:
    from bench.store.recompute import MEASURED_METHODS

    return point.energy is not None and point.energy.energy_method in MEASURED_METHODS


class _LazyPower:
    """power.parquet of the run, read and parsed once when a point needs it (None: the run has none)."""

    def __init__(self, read: READ, where: str):
        self._read, self._where, self._table, self._done = read, where, None, False

    @property
    def table(self):
        if not self._done:
            self._done = True
            data = self._read(POWER_FILE)
            if data is not None:
                self._table = _power_table(data, self._where)
        return self._table


def _power_table(data: bytes, where: str):
    from bench.store.recompute import power_series

    try:
        table = read_parquet(data, f"{where}: {POWER_FILE}", POINTS_LIMITS, what="a power series")
        table.select(["t_s", "device", "power_w", "energy_j"])
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - untrusted bytes: any reader failure is a refusal
        raise StoreError(f"{where}: {POWER_FILE}: does not read as a power series ({type(e).__name__})") from None
    return power_series(table)


def _need(read: READ, rel: str, where: str) -> bytes:
    data = read(rel)
    if data is None:
        raise StoreError(f"{where}: {rel} is not among the run's files")
    return data


def _catalog_model(key):
    from bench.catalog import get_model

    try:
        return get_model(key) if isinstance(key, str) else None
    except BenchError:
        return None


def _catalog_hardware(hardware_id):
    from bench.catalog import get_hardware

    try:
        return get_hardware(hardware_id) if isinstance(hardware_id, str) else None
    except BenchError:
        return None
