"""Writing results on a full disk: one line, no hidden temporary file, earlier files kept
(issue 11 defect 6)."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.errors import ResultError
from bench.load.records import RequestRecord
from bench.results import write_requests


def _record(i: int) -> RequestRecord:
    return RequestRecord(request_id=i, phase="measured", n_in_expected=4, n_out_expected=2, n_in=4, t_send=1.0 + i, t_first=1.1 + i,
                         t_last=1.2 + i, n_out=2, chunk_t=[1.1 + i, 1.2 + i], chunk_tokens=[1, 1])


def test_a_full_disk_while_writing_requests_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    first = write_requests(tmp_path, "p1", [_record(0)])

    def disk_full(self, path, *a, **k):
        open(path, "wb").write(b"PAR1 partial")  # what a write cut short leaves
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    with pytest.raises(ResultError, match=r"^cannot write .*p2\.parquet: No space left on device; points already"):
        write_requests(tmp_path, "p2", [_record(1)])
    assert sorted(p.name for p in (tmp_path / "requests").iterdir()) == ["p1.parquet"]
    monkeypatch.undo()
    assert len(pd.read_parquet(tmp_path / first)) == 1
