"""Output integrity of one load point (docs/accuracy.md, layer 3): did the engine return what
the client asked for? Pure, cheap, on every perf point.

    integrity_reasons(records)   # -> ["integrity: mean output 50.0 tokens, asked 100.0 (-50% > 10%)", ...]

A request asks for `n_out_expected` tokens with ignore_eos, so an engine that stops early (an
unexpected `stop` or `abort` finish, a broken kernel emitting EOS) returns fewer. Each such
request is already a failed request (bench.load.sse); this check judges the point as a whole,
MLPerf TEST09's way: the mean output length of the answered requests within 10% of the mean
asked, and no answered request empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.load.records import RequestRecord

# The load step's errors for a response that ended with fewer tokens than asked (bench.load.sse,
# bench.load.static): the engine answered, short. Any other error is a transport failure that
# says nothing of the output.
_SHORT_ANSWER_ERRORS = ("fewer tokens than asked", "returned ")


@dataclass(frozen=True)
class IntegrityThresholds:
    """Limits of a point's output lengths."""

    max_mean_output_deviation: float = 0.10  # |mean returned / mean asked - 1|, MLPerf TEST09
    max_empty_share: float = 0.0  # answered requests with no token


def answered(record: RequestRecord) -> bool:
    """The engine answered (ok, or a complete response that was short)."""
    return record.error is None or record.error.startswith(_SHORT_ANSWER_ERRORS)


def integrity_reasons(records: Sequence[RequestRecord],
                      thresholds: IntegrityThresholds = IntegrityThresholds()) -> list[str]:
    """Why the measured requests' outputs are not what was asked (one line each; [] when fine)."""
    got = [r for r in records if r.phase == "measured" and answered(r)]
    if not got:
        return []
    reasons = []
    empty = sum(1 for r in got if r.n_out == 0)
    if empty / len(got) > thresholds.max_empty_share:
        reasons.append(f"integrity: {empty} of {len(got)} answered requests returned no token")
    asked = sum(r.n_out_expected for r in got) / len(got)
    mean_out = sum(r.n_out for r in got) / len(got)
    if asked > 0:
        off = mean_out / asked - 1
        if abs(off) > thresholds.max_mean_output_deviation:
            reasons.append(f"integrity: mean output {mean_out:.1f} tokens, asked {asked:.1f} "
                           f"({off:+.0%}, over {thresholds.max_mean_output_deviation:.0%})")
    return reasons
