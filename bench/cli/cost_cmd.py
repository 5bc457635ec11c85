"""`bench cost`: recompute $/Mtok for finished results under any scenario, no rerun."""

from __future__ import annotations

import json

import click

COLUMNS = [
    "run", "point", "hardware", "n_gpus", "scenario", ("usd_per_gpu_hour", "$/gpu-h"),
    ("utilization", "util"), ("output_tok_s_per_gpu", "out tok/s/gpu"), ("usd_per_mtok_output", "$/Mtok out"),
    ("usd_per_mtok_input", "$/Mtok in"), ("usd_per_mtok_total", "$/Mtok total"),
    ("usd_per_mtok_goodput", "$/Mtok goodput"), ("energy_method", "energy"), "valid",
]


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--scenario", "scenario_name", help="One named scenario (rental-on-demand, rental-3yr, own-hyperscaler, own-neocloud, own).")
@click.option("--rental-usd-h", type=float, help="A rental rate, $ per GPU-hour, all in.")
@click.option("--gpu-price-usd", type=float, help="Ownership: purchase price per GPU, $.")
@click.option("--server-factor", type=float, help="Ownership: server capital per GPU capital (default: catalog, else 1.4).")
@click.option("--years", type=float, help="Ownership: economic life, years (default 4).")
@click.option("--rate", type=float, help="Ownership: cost of capital per year for the CRF; 0 = straight line (default 0.10).")
@click.option("--usd-per-kwh", type=float, help="Ownership: electricity price (default 0.08).")
@click.option("--pue", type=float, help="Ownership: facility power usage effectiveness (default 1.2).")
@click.option("--host-factor", type=float, help="Ownership: server power per GPU board power (default 1.5).")
@click.option("--om-usd-h", type=float, help="Ownership: operations, $ per GPU-hour (default 0).")
@click.option("--utilization", type=float, help="Share of hours the card serves at this load (default 1).")
@click.option("--hardware", "hardware_id", help="Catalog hardware id (default: the one in each result).")
@click.option("--json", "as_json", is_flag=True, help="Print the full cost records as JSON.")
def cost(results, scenario_name, rental_usd_h, gpu_price_usd, server_factor, years, rate, usd_per_kwh, pue,
         host_factor, om_usd_h, utilization, hardware_id, as_json):
    """Recompute cost per million tokens for finished RESULT folders."""
    from bench.measure.cost import recost_run, scenario_from_options
    from bench.results import read_summary

    ownership = {"gpu_price_usd": gpu_price_usd, "server_factor": server_factor, "years": years, "rate": rate,
                 "usd_per_kwh": usd_per_kwh, "pue": pue, "host_factor": host_factor, "om_usd_per_gpu_hour": om_usd_h}

    def scenarios(run_hardware_id):
        hw = None
        wanted = hardware_id or run_hardware_id
        if rental_usd_h is None and gpu_price_usd is None and wanted:
            from bench.catalog import get_hardware

            hw = get_hardware(wanted)
        return scenario_from_options(hw, scenario_name, utilization, rental_usd_h, **ownership)

    rows = []
    for path in results:
        rows += recost_run(read_summary(path), scenarios)
    if as_json:
        click.echo(json.dumps([r["cost"] | {"run": r["run"], "point": r["point"]} for r in rows], indent=2))
        return
    from bench.cli.textable import format_table

    click.echo(format_table(rows, COLUMNS))
