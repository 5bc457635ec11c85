"""`bench plan`: show what a sweep file will run, what it skips and why, and how long it
should take, before any engine starts."""

from __future__ import annotations

import click

from bench.cli.run_cmd import engine_options, parse_engine_args


def sweep_overrides(f):
    """Options that override a sweep file (shared by `bench plan` and `bench sweep`)."""
    opts = [
        click.option("--model", "models", multiple=True, help="Catalog key; replaces `models` (repeatable)."),
        click.option("--precision", "precisions", multiple=True,
                     help="bf16, fp16, fp8, fp8-kv or parts joined by '+'; replaces `precisions` (repeatable)."),
        click.option("--concurrency", help="Comma-separated levels; replaces `loads`."),
        click.option("--input-len", type=int, help="Prompt tokens; replaces `workloads` by one random workload."),
        click.option("--output-len", type=int, help="Output tokens; replaces `workloads` by one random workload."),
        click.option("--requests", "n_requests", type=int, help="Measured requests per point."),
        click.option("--warmup", "n_warmup", type=int, help="Warm-up requests per point."),
        click.option("--repeats", type=int, help="Repeats of every point."),
        click.option("--seed", type=int),
        click.option("--devices", type=int, help="Device count to plan for (default: detected)."),
        click.option("--max-replay-s", "max_replay_s", type=click.FloatRange(min=0, min_open=True),
                     help="Longest replay of one trace point, s after speedup; longer is refused when the plan "
                          "is built [the file's max_replay_s, else 86400: 24 h]."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Any sweep key, dotted into sections, YAML value (repeatable): "
                          "--set preflight.kv_overflow=allow --set 'workloads=[{input_len: 512, output_len: 64}]'."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return engine_options(f)


def collect_overrides(opts: dict) -> dict:
    """The override dict (bench.plan.apply_overrides) from the options of `sweep_overrides`."""
    from bench.errors import ConfigError
    from bench.plan import overrides_from_options

    opts = dict(opts)
    opts.pop("probe_file", None)  # read by the run environment, not part of the plan
    sets = opts.pop("sets", ()) or ()
    opts["engine_args"] = parse_engine_args(opts.get("engine_args") or ()) or None
    opts["models"] = list(opts.get("models") or ()) or None
    opts["precisions"] = list(opts.get("precisions") or ()) or None
    if opts.get("concurrency"):
        from bench.cli.run_cmd import _int_list

        opts["concurrency"] = _int_list(opts["concurrency"])
    out = overrides_from_options(opts)
    for pair in sets:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set '{pair}' (expected KEY=VALUE)")
        import yaml

        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve_target(hardware_id: str | None, devices: int | None):
    """(hardware entry, device count): the named or detected device."""
    from bench.catalog.device import resolve_hardware

    hardware, detected = resolve_hardware(hardware_id)
    if hardware_id:
        return hardware, devices or 1
    return hardware, devices or detected.count or 1


def config_option(f):
    """`--config ID`: one engine configuration of the plan (shared by `bench plan` and `bench sweep`)."""
    return click.option("--config", "config_id", metavar="ID",
                        help="Only this engine configuration of the plan (its id as `bench plan` shows it); "
                             "a fleet shard runs one.")(f)


def selected(the_plan, config_id: str | None):
    """`the_plan`, or only its configuration `config_id` (ConfigError listing the known ids)."""
    if not config_id:
        return the_plan
    from bench.plan.plan import select_config

    return select_config(the_plan, config_id)


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@sweep_overrides
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of tables.")
def plan(sweep_file, as_json, config_id, **opts):
    """Print the ordered load points of SWEEP_FILE, what preflight skips and why, and an
    estimated duration. Starts nothing."""
    from bench.plan import build_plan, load_sweep

    sweep = load_sweep(sweep_file, collect_overrides(opts))
    hardware, n_devices = resolve_target(sweep.hardware, sweep.devices)
    the_plan = selected(build_plan(sweep, hardware, n_devices), config_id)
    if as_json:
        click.echo(the_plan.model_dump_json(indent=2))
        return
    click.echo(describe_plan(the_plan, hardware))


def describe_plan(plan, hardware) -> str:
    """The plan as text: points, skipped points grouped by reason, duration estimate."""
    from bench import catalog
    from bench.cli.textable import format_table
    from bench.plan import PointId
    from bench.plan import preflight as pf

    kind = "cpu" if hardware.vendor == "cpu" else "gpu"
    configs = {c.config_id(): c for c in [*plan.engine_configs, *plan.skipped_engine_configs]}
    header = (
        f"plan '{plan.name}': {len(plan.points)} points on {len(plan.engine_configs)} engine configs, "
        f"{len(plan.skipped)} skipped; hardware {hardware.id} ({hardware.name}) x{plan.n_devices}"
    )
    lines = [header, ""]
    rows = []
    for p in plan.points:
        cfg = configs[p.engine_config_id]
        pid = PointId.parse(p.point_id)
        est_s = pf.estimate_point_s(p, cfg, catalog.get_model(cfg.model), hardware)
        rows.append({
            "config": p.engine_config_id, "model": cfg.model, "precision": cfg.precision(), "weights": cfg.weights,
            "parallel": cfg.parallel_label(), "workload": pid.workload, "load": pid.load, "repeat": p.repeat,
            "warmup": p.n_warmup, "requests": p.n_requests, "est_s": round(est_s),
        })
    lines.append(format_table(rows, list(rows[0])) if rows else "nothing to run")
    lines += [f"note: {n}" for n in sorted({n for p in plan.points for n in p.notes})]
    if plan.skipped:
        groups: dict[tuple[str, str, str], list[str]] = {}
        for s in plan.skipped:
            pid = PointId.parse(s.point.point_id)
            loads = groups.setdefault((pid.config, pid.workload, s.reason), [])
            if pid.load not in loads:
                loads.append(pid.load)
        skipped = [
            {"config": cid, "precision": configs[cid].precision(), "workload": wl, "loads": ",".join(loads),
             "reason": reason}
            for (cid, wl, reason), loads in groups.items()
        ]
        lines += ["", f"skipped ({len(plan.skipped)} points):", format_table(skipped, list(skipped[0]))]
    start_s, points_s = pf.estimate_plan_s(plan, catalog, hardware)
    estimate = (
        f"estimate: {len(plan.engine_configs)} engine starts x {pf.ENGINE_START_S[kind]:.0f} s + load points "
        f"{points_s:.0f} s = {(start_s + points_s) / 60:.1f} min (download and compile time not included)"
    )
    assumptions = (
        f"  assumes decode steps moving weights + KV at {pf.BANDWIDTH_EFFICIENCY:g} x {hardware.bandwidth_tbs:g} TB/s, "
        f"at least {pf.STEP_FLOOR_S[kind] * 1000:.0f} ms each; prefill at {pf.COMPUTE_EFFICIENCY:g} x catalog TFLOPS; "
        "no queueing"
    )
    lines += ["", estimate, assumptions]
    return "\n".join(lines)


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@sweep_overrides
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, exists=True),
              help="Continue the run in RUN_DIR: finished points are kept, the rest run.")
@click.option("--pack", is_flag=True,
              help="Run independent engine configs at the same time on disjoint GPUs of this box "
                   "(docs/packing.md); off by default.")
@click.option("--client-workers", "client_workers", type=click.IntRange(min=1),
              help="Client worker processes driving the load [the file's client_workers, else chosen "
                   "from the load and the cores].")
@config_option
@click.option("--upload", "upload_url", metavar="URL",
              help="Publish the run to the store at URL when it ends complete or partial (docs/store.md).")
def sweep(sweep_file, resume_dir, pack, client_workers, config_id, upload_url, **opts):
    """Run every point of SWEEP_FILE: one engine start per engine configuration, each
    finished point on disk before the next begins. Ctrl-C keeps what is done; --resume
    continues it."""
    from pathlib import Path

    from bench.cli.progress import Progress, summary_table
    from bench.plan import build_plan, load_sweep
    from bench.run.session import prepare_run, run_plan

    sweep_spec = load_sweep(sweep_file, collect_overrides(opts))
    if upload_url:  # an unusable store URL (no s3fs, bad scheme) fails before hours of measuring
        from bench.store import Store

        Store(upload_url)
    env, note = prepare_run(sweep_spec.hardware or opts.get("hardware_id"), opts.get("probe_file"))
    if pack:  # refused before the plan is printed or a run folder exists
        from bench.run.runner import check_pack

        check_pack(env)
    env.request_timeout_s, env.stall_timeout_s = sweep_spec.request_timeout_s, sweep_spec.stall_timeout_s
    env.client_workers = client_workers or sweep_spec.client_workers
    n_devices = sweep_spec.devices or env.device.get("count") or 1
    the_plan = selected(build_plan(sweep_spec, env.hardware, n_devices), config_id)
    click.echo(note, err=True)
    click.echo(describe_plan(the_plan, env.hardware), err=True)
    out_dir = Path(opts.get("out_dir") or the_plan.out_dir or "runs")
    progress = Progress(n_points=len(the_plan.points))
    run_dir, result = run_plan(the_plan, out_dir, env, progress, resume_dir=Path(resume_dir) if resume_dir else None,
                               pack=pack)
    click.echo(summary_table(result))
    click.echo(f"result: {run_dir}")
    if upload_url and result.status in ("complete", "partial"):
        publish(run_dir, upload_url)
    from bench.run.status import exit_code

    if exit_code(result.status):  # partial 4, failed 1 (docs/reliability.md)
        raise SystemExit(exit_code(result.status))


def publish(run_dir, url: str) -> None:
    """Upload one finished run (`bench sweep --upload`); a refusal says the run is kept."""
    from bench.errors import StoreError
    from bench.store import upload

    try:
        [done] = upload([run_dir], url)
    except StoreError as e:
        raise StoreError(f"{e} (the run is kept in {run_dir}: bench upload {run_dir} --to URL)") from None
    verb = "published" if done.status == "published" else "already there"
    click.echo(f"{verb}: {done.run_id}")
