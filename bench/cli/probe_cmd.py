"""`bench probe`: measure the card's real bandwidth and matrix throughput into a probe file."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", "out_path", default="probe.json", show_default=True, type=click.Path(dir_okay=False),
              help="Probe file to write (JSON); bench.telemetry.probe.load_probe reads it for the roofline.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None,
              help="Device to probe (default: cuda when torch sees one, else cpu).")
@click.option("--min-time-s", type=float, default=None, help="Seconds each measurement repeats for (default 0.5 GPU, 0.3 CPU).")
@click.option("--max-n", type=int, default=None, help="Largest square matmul side (default 8192 GPU, 1024 CPU).")
@click.option("--bandwidth-mb", type=int, default=None, help="Copy buffer size in MiB (default 2048 GPU, 256 CPU).")
def probe(out_path, device, min_time_s, max_n, bandwidth_mb):
    """Measure achievable memory bandwidth, bf16/fp16/fp8 matmul TFLOP/s and (GPU) NVML behaviour."""
    from bench.cli.textable import format_table
    from bench.telemetry.probe import run_probe, write_probe

    result = run_probe(device, min_time_s=min_time_s, max_n=max_n,
                       bandwidth_bytes=bandwidth_mb << 20 if bandwidth_mb else None)
    write_probe(result, out_path)
    rows = [{"figure": "bandwidth_tbs", "value": result["bandwidth_tbs"]}]
    rows += [{"figure": f"tflops.{d}", "value": v} for d, v in result["tflops"].items()]
    nvml = result.get("nvml") or {}
    if "update_period_s" in nvml:
        rows += [{"figure": "nvml.update_period_s", "value": nvml["update_period_s"]},
                 {"figure": "nvml.counter_vs_sampled", "value": nvml["counter_vs_sampled"]}]
    click.echo(f"{result['device_name']} ({result['device']}), torch {result['torch_version']}")
    click.echo(format_table(rows, ["figure", "value"]))
    click.echo(f"wrote {out_path}")
