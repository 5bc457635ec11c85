"""`bench node serve`: the agent on each follower machine of a multi-node configuration (docs/fleet.md)."""

from __future__ import annotations

import click

from bench.telemetry import meter_choices


@click.group()
def node():
    """Follower machines of a model that spans several nodes."""


@node.command()
@click.option("--head", required=True, help="The head's address (the machine running `bench sweep`); only it is answered.")
@click.option("--port", type=click.IntRange(1, 65535), default=8790, show_default=True,
              help="Port the head names in the sweep's `nodes: [host:port]`.")
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on.")
@click.option("--gpus", default=None, help="Device indices this node's vLLM uses and is measured on [all visible].")
@click.option("--telemetry", type=click.Choice(meter_choices()), default="auto", show_default=True, help="Energy meter.")
@click.option("--hardware", "hardware_id", default=None, help="Catalog hardware id (nominal power) [detected].")
@click.option("--log-dir", type=click.Path(file_okay=False), default="node-logs", show_default=True)
@click.option("--allow-arg", "allow_args", multiple=True, metavar="NAME",
              help="Also accept this engine argument from the head (repeatable), e.g. chat-template; "
                   "docs/fleet.md lists those accepted by default.")
def serve(head, port, host, gpus, telemetry, hardware_id, log_dir, allow_args):
    """Serve this node's headless vLLM and energy counters to the head until Ctrl-C.

    Requests must be signed with the shared secret: $BENCH_NODE_SECRET, or a file of mode 600
    named by $BENCH_NODE_SECRET_FILE, the same on the head (never on the command line)."""
    from pathlib import Path

    from bench.engines.node_auth import take_secret
    from bench.run.node_policy import allow_list

    secret = take_secret()  # first: no secret, no agent (and its vLLM never inherits it)
    widened = sorted(allow_list(allow_args) - allow_list())  # a bad name is refused before anything starts

    from bench.catalog.device import resolve_hardware
    from bench.run.devices import visible_gpu_indices
    from bench.run.node_agent import NodeAgent
    from bench.run.node_serve import serve_agent
    from bench.telemetry import open_telemetry

    hardware, detected = resolve_hardware(hardware_id)
    on_cpu = detected.vendor == "cpu"
    if on_cpu:
        indices = None
    else:
        indices = [int(g) for g in gpus.split(",")] if gpus else visible_gpu_indices(detected.count, vendor=detected.vendor)
    meter = open_telemetry(telemetry, hardware=hardware, gpu_indices=indices).meter
    agent = NodeAgent(meter, cache_dir=Path.home() / ".cache" / "bench" / "models", log_dir=Path(log_dir), gpus=indices,
                      vendor=detected.vendor, device="cpu" if on_cpu else "cuda", allow_args=allow_args)
    serve_agent(agent, host, port, head, secret, on_ready=lambda addr: click.echo(
        f"bench node: serving {meter.method} energy of {len(meter.devices)} device(s) on {addr[0]}:{addr[1]} "
        f"for head {head}; Ctrl-C stops it and its vLLM"
        + (f"; also allowing engine arguments {', '.join(widened)}" if widened else ""), err=True))


@node.command()
@click.argument("agents", nargs=-1, required=True)
def release(agents):
    """Tell each agent (host:port) that the head is done: it stops its vLLM and exits."""
    from bench.engines.multinode import NodeClient
    from bench.errors import EngineError

    for addr in agents:
        try:
            NodeClient(addr).release()
            click.echo(f"released {addr}", err=True)
        except EngineError as e:  # already gone: nothing to release
            click.echo(f"bench node: {e}", err=True)
