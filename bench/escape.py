"""Untrusted text made safe for the medium it is shown in: one helper per medium.

Ids, model names, reasons and versions come from run folders and stores anyone can write
to; each is escaped where it is rendered, never trusted to be plain:

- `html_text`: an HTML text node or attribute value (`<`, `>`, `&`, quotes as entities).
- `plot_text`: a plotly label (legend, hover text, title, annotation). plotly.js draws its
  own small tag set (<a href>, <b>, <br>, <span style>...) and decodes entities in the text
  between tags, so escaped text shows as typed and never becomes a link.
- `md_text`: a Markdown table cell or heading: plain when it holds no Markdown or HTML
  syntax, else a code span (no HTML, link, image or autolink renders inside one); one
  line; `|` escaped (GFM splits table cells before it reads code spans).
- `csv_cell`: a CSV cell that a spreadsheet would run as a formula (it starts with
  = + - @, a tab or a carriage return) gets a leading `'` (OWASP's CSV-injection rule).
- `terminal_text`: control characters (ESC and the rest of C0, DEL, C1, Unicode bidi and
  line controls) shown as `\\x1b`-style escapes, so a run id cannot retitle the terminal,
  write the clipboard (OSC 52) or hide text.
"""

from __future__ import annotations

import html
import re
from typing import Any

_TERMINAL_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
# Markdown-inert text: no emphasis, code, link, image, HTML, entity, escape, table or math syntax.
_MD_PLAIN = re.compile(r"[^\\`*\[\]<>!#|~&{}\x00-\x1f\x7f]*")
_MD_AUTOLINK = re.compile(r"(?i)://|www\.|@")
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def html_text(value: Any) -> str:
    """`value` as HTML text (also safe inside a quoted attribute)."""
    return html.escape(str(value), quote=True)


def plot_text(value: Any) -> str:
    """`value` as a plotly label that shows exactly what it says."""
    return html.escape(str(value), quote=False)


def md_text(value: Any) -> str:
    """`value` as one line of inline Markdown that renders as the text itself."""
    text = " ".join(str(value).split())
    if _MD_PLAIN.fullmatch(text) and not _MD_AUTOLINK.search(text):
        return text
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    cell = text.replace("|", "\\|")
    return f"{fence}{pad}{cell}{pad}{fence}"


def csv_cell(value: Any) -> Any:
    """`value`, with a `'` in front when it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(_CSV_FORMULA_START):
        return "'" + value
    return value


def csv_safe(frame):
    """A copy of a pandas DataFrame whose text cells are `csv_cell`-safe (numbers untouched)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) in ("string", "str"):
            out[column] = out[column].map(csv_cell)
    out.columns = [csv_cell(c) for c in out.columns]
    return out


def terminal_text(value: Any, keep: str = "") -> str:
    """`value` with every control character but those in `keep` shown as an escape (`\\x1b`)."""
    text = str(value)

    def visible(m: re.Match) -> str:
        c = m.group(0)
        if c in keep:
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return _TERMINAL_CONTROL.sub(visible, text)
