"""`bench models` and `bench hardware`: print the catalog."""

from __future__ import annotations

import click


def _billions(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


@click.command()
def models():
    """List the models of models.yaml."""
    from bench.catalog import load_models
    from bench.cli.textable import format_table

    rows = [
        {
            "key": m.key,
            "arch": m.config.architectures[0],
            "total": _billions(m.total_params),
            "active": _billions(m.active_params),
            "sparsity": f"{m.sparsity:.3f}",
            "context": m.max_context,
            "fp8_repo": m.fp8_repo,
            "tiny": m.tiny,
        }
        for m in load_models().values()
    ]
    columns = ["key", "arch", "total", "active", "sparsity", "context", ("fp8_repo", "fp8 repo"), "tiny"]
    click.echo(format_table(rows, columns))


@click.command()
def hardware():
    """List the hardware catalog; `*` marks the device detected here."""
    from bench.catalog import load_hardware
    from bench.catalog.device import detect_device
    from bench.cli.textable import format_table

    detected = detect_device()
    rows = [
        {
            "here": "*" if h.id == detected.hardware_id else "",
            "id": h.id,
            "name": h.name,
            "vendor": h.vendor,
            "memory_gb": h.memory_gb,
            "bandwidth_tbs": h.bandwidth_tbs,
            "bf16": h.tflops["bf16"],
            "fp8": h.tflops["fp8"],
            "fp4": h.tflops["fp4"],
            "power_w": h.power_w,
            "rental": h.prices.rental_usd_per_gpu_hour.value if h.prices.rental_usd_per_gpu_hour else None,
        }
        for h in load_hardware().values()
    ]
    columns = [
        ("here", ""),
        "id",
        "name",
        "vendor",
        ("memory_gb", "mem GB"),
        ("bandwidth_tbs", "BW TB/s"),
        ("bf16", "bf16 TF"),
        ("fp8", "fp8 TF"),
        ("fp4", "fp4 TF"),
        ("power_w", "power W"),
        ("rental", "$/GPU-h"),
    ]
    click.echo(format_table(rows, columns))
    click.echo(f"\ndetected: {detected.describe()}")
