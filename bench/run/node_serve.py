"""Run a node agent until Ctrl-C / SIGTERM (what `bench node serve` and the test fakes call)."""

from __future__ import annotations

import signal
import threading

from bench.run.node_agent import NodeAgent, allowed_addresses
from bench.run.node_http import make_server


def serve_agent(agent: NodeAgent, host: str, port: int, head: str, secret: bytes, on_ready=None) -> None:
    """Answer the head at (host, port), requests signed with `secret` only, until SIGINT/SIGTERM;
    the headless child is stopped on the way out."""
    server = make_server(agent, host, port, allowed_addresses(head), secret)
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if on_ready is not None:
        on_ready(server.server_address)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        agent.close()
