"""A `bench node serve` agent for tests: a fake NVML host for its meter and a stand-in for the
headless vLLM child (a Python process that prints its arguments and sleeps), so the head's
multi-node path (start, health, energy snapshots, a follower that dies) runs on one machine.
It is the real agent otherwise: the same server, shared secret ($BENCH_NODE_SECRET) and checks.

    BENCH_NODE_SECRET=... python -m bench.testing.fake_node --port 0 --watts 200,210 --log-dir DIR --ready-file F
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.engines.multinode import follower_argv

SLEEPER = "import sys, time; print('fake headless vLLM:', ' '.join(sys.argv[1:]), flush=True); time.sleep(3600)"


def fake_child(cfg, model_path, rank, rdv, device) -> list[str]:
    """The real follower command line, carried as the arguments of a process that only sleeps."""
    real = follower_argv(cfg, model_path, rank, rdv, device)
    return [sys.executable, "-c", SLEEPER, *real[1:]]


def main(argv: list[str] | None = None) -> None:
    import gc

    # bench.plan: what the agent imports at its first start request (the typed EngineConfig),
    # imported before it says it is ready: tests start their agents at once, so these imports
    # overlap instead of adding up inside the head's start, one agent after the other.
    import bench.plan  # noqa: F401
    from bench.engines.node_auth import take_secret
    from bench.run.node_agent import NodeAgent
    from bench.run.node_serve import serve_agent
    from bench.telemetry.fake_nvml import FakeNvmlTelemetry

    gc.freeze()  # the modules live as long as the agent: its exit on SIGTERM skips walking them (fake_sglang)

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--head", default="127.0.0.1")
    ap.add_argument("--watts", default="200")
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--ready-file", required=True, help="written with {'port': P} once the agent listens")
    args = ap.parse_args(argv)
    secret = take_secret()
    watts = [float(w) for w in args.watts.split(",")]
    meter = FakeNvmlTelemetry(watts)("nvml", gpu_indices=list(range(len(watts)))).meter
    agent = NodeAgent(meter, cache_dir=Path(args.log_dir) / "models", log_dir=Path(args.log_dir),
                      gpus=list(range(len(watts))), child_command=fake_child)

    def ready(addr):
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps({"port": addr[1]}))
        tmp.replace(args.ready_file)

    serve_agent(agent, "127.0.0.1", args.port, args.head, secret, on_ready=ready)


if __name__ == "__main__":
    main()
