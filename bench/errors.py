"""Domain errors. The CLI turns each into one line on stderr and a non-zero exit code
(docs/reliability.md, "Run status and exit codes"):

    2   ConfigError, ResultError, TelemetryError, StoreError (bad input, configuration or store)
    3   EngineError (the engine failed to start, died, or could not be reached)
    5   DiskFull (no space left, or the quota is used up, while writing)
"""

from __future__ import annotations

import errno
import re

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
ONE_LINE_CHARS = 600  # the longest line bench writes for a message: an error, a reason, a refusal
_BREAK = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")  # what str.splitlines() breaks at


def one_line(text: object) -> str:
    """`text` as one line of at most ONE_LINE_CHARS characters: each line break (with the blanks
    around it) shown as `\\n`, so a key or value holding one stays visible; a longer text ends
    in "…". Every message bench writes from a text it did not compose (an exception, a server's
    answer, a file's content) goes through here."""
    line = _BREAK.sub(r"\\n", str(text).strip())
    return line if len(line) <= ONE_LINE_CHARS else line[:ONE_LINE_CHARS - 1] + "…"


class BenchError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 2


class ConfigError(BenchError):
    """A bad catalog entry, sweep file, option or unknown key."""


class EngineError(BenchError):
    """The inference engine failed to start, died, or could not be reached."""

    exit_code = 3


class ResultError(BenchError):
    """A result file is missing, malformed, or of an unknown schema version, or cannot be written."""


class DiskFull(ResultError):
    """A write failed for want of space (ENOSPC) or quota (EDQUOT): not a bad configuration.
    What was written before is kept; free space and run the command again (`--resume`)."""

    exit_code = 5


class TelemetryError(BenchError):
    """Telemetry the user asked for by name is not available."""


class StoreError(BenchError):
    """The shared store refused or failed an operation."""


class StoreUnavailable(StoreError):
    """The store did not answer (network, outage, a backend error): no verdict on its content.
    Callers that retry (a fleet's final publish) or must not mistake an outage for a refusal
    catch this type, never the message text."""


def write_error(error: OSError, message: str) -> ResultError:
    """The domain error for a failed write: DiskFull when the disk or quota is full."""
    return (DiskFull if error.errno in DISK_FULL_ERRNOS else ResultError)(message)
