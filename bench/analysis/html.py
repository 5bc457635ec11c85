"""One self-contained HTML page: plotly figures and sortable tables, offline.

plotly.js is embedded once, in the page head; every figure is a div drawn by it (no CDN,
no other script source). Tables sort by a click on a header (a few lines of embedded
script; numeric cells sort by their `data-v` value). Rows of invalid points carry the
class `invalid`, published rows `published`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.analysis.cells import cell_text, is_number, not_a_measurement
from bench.atomicio import atomic_write_text

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1280px;
padding:0 16px;color:#222}
h1{font-size:1.6em;margin-bottom:4px} h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ddd}
p.lead{color:#444;margin-top:4px} .note{background:#fff8e1;border-left:4px solid #f5b400;padding:6px 10px}
.plot{margin:8px 0 16px 0} .tablewrap{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f4f6;cursor:pointer;user-select:none;white-space:nowrap}
th[data-dir=asc]::after{content:" \\25B2"} th[data-dir=desc]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} td{max-width:34em} td.long{min-width:18em}
td:first-child{min-width:9em}
tr.invalid td{background:#fdecec} tr.invalid td:first-child::before{content:"INVALID ";color:#b00020;
font-weight:600}
tr.published td{background:#eef3ff} pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px}
"""

# Click a header to sort by it; numbers (data-v) before text, missing values last.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.dataset.dir !== "asc", body = table.tBodies[0];
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? "asc" : "desc";
      var key = function (tr) { var c = tr.cells[col]; return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent; };
      var rows = Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b), nx = typeof x === "number", ny = typeof y === "number";
        var d = nx && ny ? x - y : nx ? -1 : ny ? 1 : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def figure_html(fig, div_id: str) -> str:
    """A plotly figure as a div and its drawing call; the page supplies plotly.js."""
    return '<div class="plot">' + fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                                              config=PLOT_CONFIG, default_height="480px") + "</div>"


def table_html(rows: list[dict], columns: Sequence[str | tuple[str, str]],
               row_class: Callable[[dict], str] | None = None, table_id: str | None = None) -> str:
    """A sortable table; a column is a key or (key, header). Cells read as in the Markdown
    reports (`cells.cell_text`); a measured number also sorts by its value."""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
    body = []
    for r in rows:
        cells = []
        for key, _ in cols:
            value, text = r.get(key), html.escape(cell_text(r, key))
            if is_number(value) and not not_a_measurement(r, key):
                cells.append(f'<td class="num" data-v="{float(value)!r}">{text}</td>')
            else:
                cells.append(f'<td class="long">{text}</td>' if len(text) > 30 else f"<td>{text}</td>")
        cls = row_class(r) if row_class else ""
        body.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(cells) + "</tr>")
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return (f'<div class="tablewrap"><table class="sortable"{ident}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>"


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def preformatted(text: str, summary: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>"


def write_page(path: Path, title: str, parts: list[str]) -> Path:
    """Write the page: plotly.js once in the head, then PARTS (HTML fragments) in order."""
    from plotly.offline import get_plotlyjs

    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head>", "<body>",
        *parts, f"<script>{_SORT_JS}</script>", "</body>", "</html>", "",
    ])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path

