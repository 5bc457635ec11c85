"""The `bench` command. Subcommands live in their own modules and are imported only when
used, so `bench --help` never imports torch or vllm."""

from __future__ import annotations

import os

import click

from bench import __version__
from bench.errors import DISK_FULL_ERRNOS, BenchError, DiskFull, one_line
from bench.registry import Registry

# name -> "module:attribute"; each module owns one step of the flow.
COMMANDS: Registry[click.Command] = Registry("command", {
    "run": "bench.cli.run_cmd:run",
    "models": "bench.cli.catalog_cmd:models",
    "hardware": "bench.cli.catalog_cmd:hardware",
    "probe": "bench.cli.probe_cmd:probe",
    "cost": "bench.cli.cost_cmd:cost",
    "plan": "bench.cli.sweep_cmd:plan",
    "sweep": "bench.cli.sweep_cmd:sweep",
    "capacity": "bench.cli.capacity_cmd:capacity",
    "upload": "bench.cli.store_cmd:upload",
    "pull": "bench.cli.store_cmd:pull",
    "ls": "bench.cli.store_cmd:ls",
    "costmodel": "bench.cli.costmodel_cmd:costmodel",
    "compare": "bench.cli.report_cmd:compare",
    "report": "bench.cli.report_cmd:report",
    "fleet": "bench.cli.fleet_cmd:fleet",
    "node": "bench.cli.node_cmd:node",
    "keys": "bench.cli.keys_cmd:keys",
})


class BenchClickError(click.ClickException):
    """A domain error shown as one line: `bench: error: <cause>`."""

    def __init__(self, error: BenchError):
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click types it a ClassVar; each error carries its own code

    def show(self, file=None):  # a message may quote a store's ids or a URL: no secret, no control character
        from bench.escape import terminal_text
        from bench.redact import redact_text

        click.echo(f"bench: error: {terminal_text(redact_text(self.format_message()))}", err=True, file=file)


class LazyGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchError as e:
            raise BenchClickError(e) from None
        except KeyboardInterrupt as e:
            from bench.run.status import interruption

            click.echo(f"bench: {interruption(e)}; results written so far are kept", err=True)
            ctx.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:  # raised past the library's own checks
                where = f" writing {e.filename}" if e.filename else ""
                raise BenchClickError(DiskFull(f"{e.strerror or 'disk full'}{where}")) from None
            if os.environ.get("BENCH_DEBUG"):
                raise
            from bench.escape import terminal_text
            from bench.redact import redact_text

            first = one_line(terminal_text(redact_text(str(e))))
            click.echo(f"bench: internal error: {type(e).__name__}: {first} (BENCH_DEBUG=1 shows the traceback)", err=True)
            ctx.exit(1)

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        if name not in COMMANDS:
            return None  # click says "No such command"
        try:
            return COMMANDS.get(name)
        except ModuleNotFoundError as e:
            if e.name == COMMANDS.target(name).partition(":")[0]:  # command not built yet
                return None
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bench")
def cli():
    """bench: serve open-weight models with vLLM, measure tokens per second, per watt and
    per dollar, and feed the shared cost model."""


def main(argv=None):
    cli.main(args=argv, prog_name="bench")
