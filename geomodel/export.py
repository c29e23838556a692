"""CSV files that spreadsheets open as data: text cells never run as formulas.

Spreadsheet programs evaluate a cell that starts with `=`, `+`, `-` or `@` (and some
treat a leading tab or carriage return the same way), so a photo named
`=HYPERLINK("http://evil.example","click").jpg` would become a live link or worse
in a downloaded results file. Such text cells get a leading `'`, which spreadsheets
show as text (OWASP's advice for CSV injection). Numbers are written as numbers:
a negative longitude stays -2.25, not the text '-2.25.
"""
from __future__ import annotations

import csv
from typing import Any, Iterable, Sequence, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value` as written to a CSV: text that a spreadsheet would evaluate is prefixed with `'`;
    numbers, None and everything that is not text are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(fh: TextIO, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write `header` then `rows` as CSV (None as an empty cell), every text cell through `safe_cell`.

    Lines end in CRLF (RFC 4180), so a CR or LF inside a cell is always quoted: with "\n" alone,
    Python's writer leaves a bare CR unquoted and the file no longer parses.
    """
    writer = csv.writer(fh, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        writer.writerow(["" if v is None else safe_cell(v) for v in row])
