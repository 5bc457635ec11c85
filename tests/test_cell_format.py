"""One table-cell formatter (bench.analysis.fmt, issue 19 item 3): the Markdown and HTML reports and
the terminal tables show a number alike. They disagreed: NaN was '-' in a report and 'nan' in
the terminal; 12345.6 was '1.235e+04' in a report and '12346' in the terminal."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.analysis.cells import cell_text
from bench.cli.textable import format_table


@pytest.mark.parametrize(("value", "text"), [
    (float("nan"), "-"), (None, "-"), (pd.NA, "-"), (12345.6, "12346"), (1000.0, "1000"), (-2500.4, "-2500"),
    (999.96, "1000"), (999.4, "999.4"), (0.012345, "0.01235"), (1e-5, "0.00001"), (1.2345e-05, "0.00001234"), (-3.3e-7, "-0.00000033"), (3.0, "3"), (7, "7"),
    (math.inf, "inf"), (True, "yes"), (False, "no"),
])
def test_the_reports_and_the_terminal_show_a_cell_alike(value, text):
    assert cell_text({"x": value}, "x") == text
    assert format_table([{"x": value}], ["x"]).splitlines()[-1].strip() == text
