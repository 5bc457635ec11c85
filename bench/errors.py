"""Domain errors. The CLI turns each into one line on stderr and a non-zero exit code."""


class BenchError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 2


class ConfigError(BenchError):
    """A bad catalog entry, sweep file, option or unknown key."""


class EngineError(BenchError):
    """The inference engine failed to start, died, or could not be reached."""

    exit_code = 3


class ResultError(BenchError):
    """A result file is missing, malformed, or of an unknown schema version."""


class TelemetryError(BenchError):
    """Telemetry the user asked for by name is not available."""


class StoreError(BenchError):
    """The shared store refused or failed an operation."""
