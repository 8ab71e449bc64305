"""One line saying why a CSV file could not be read, and which ``[csv]`` option fixes it.

DuckDB's CSV sniffer answers a file it cannot parse with a 30-line dump of the
dialects it tried. :func:`csv_read_error` looks at the file's first bytes instead
and names the problem a data steward can fix in the descriptor's ``[csv]`` table:

* ``encoding``: the file is UTF-16 (a byte-order mark or NUL bytes) or not UTF-8;
* ``delimiter``: the header splits on ``;``, a tab or ``|`` but not on the declared one;
* ``decimal``: numbers are written with a decimal comma (``1,5``);
* ``na_values``: a numeric column holds a marker for a missing value (:func:`value_hint`);
* a row with more or fewer fields than the header (no option: the row needs fixing).

Messages name the file and the line, never a patient value (the file's header is
column names, which the descriptor declares anyway).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path
from typing import Any

__all__ = ["CSV_ENCODINGS", "DECIMAL_COMMA", "NA_TOKENS", "csv_read_error", "value_hint"]

#: Encodings a descriptor's ``[csv] encoding`` may name (those DuckDB reads natively).
CSV_ENCODINGS = ("utf-8", "utf-16", "latin-1")

_SAMPLE = 1 << 16
_OTHER_DELIMITERS = (";", "\t", "|", ",")
#: A number written with a decimal comma (``-1,5``); also what ``describe-data`` looks for.
DECIMAL_COMMA = r"^-?[0-9]+,[0-9]+$"
_DECIMAL_COMMA = re.compile(DECIMAL_COMMA)
#: Spellings of a missing value ``describe-data`` reads as missing (compared case-insensitively).
NA_TOKENS = ("", "na", "n/a", "nan", "null", "none", ".", "-", "?", "missing", "#n/a")
# A rejected number spelled like this is probably a missing value: the error suggests
# ``na_values``. "unknown" too, which describe-data keeps as a category's level.
_NA_MARKERS = {*NA_TOKENS, "unknown"} - {""}


def _show(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


def _encoding_problem(raw: bytes, declared: str) -> str | None:
    if declared == "utf-16":
        return None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or raw[:200].count(b"\x00") > 10:
        return 'the file is UTF-16 encoded; set [csv] encoding = "utf-16" (or save it as UTF-8)'
    if declared == "utf-8":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 4:  # not just a character cut by the sample's end
                return (
                    f"the file is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                    'set [csv] encoding = "latin-1" (or save it as UTF-8)'
                )
    return None


def _lines(raw: bytes, encoding: str) -> list[str]:
    text = raw.decode("utf-16" if encoding == "utf-16" else encoding, errors="replace")
    lines = text.splitlines()
    return lines[:-1] if len(raw) == _SAMPLE and len(lines) > 1 else lines  # last may be cut


def _delimiter_problem(header: str, declared: str) -> str | None:
    if declared in header:
        return None
    for other in _OTHER_DELIMITERS:
        if other != declared and header.count(other) >= 1:
            return (
                f"the header has no {_show(declared)!r} but splits on {_show(other)!r}; "
                f'set [csv] delimiter = "{_show(other)}"'
            )
    return None


def _row_problem(lines: list[str], delimiter: str, header: bool) -> str | None:
    rows = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    width = None
    for number, row in enumerate(rows, start=1):
        if not row:
            continue
        if width is None:
            width = len(row)
            continue
        if len(row) != width:
            first = "the header" if header else "line 1"
            return (
                f"line {number} has {len(row)} fields, {first} has {width}; fix that row "
                "(a stray delimiter, or a value with the delimiter in it that needs quotes)"
            )
    return None


def _decimal_problem(lines: list[str], delimiter: str, decimal: str) -> str | None:
    if decimal == "," or delimiter == ",":
        return None
    for row in csv.reader(io.StringIO("\n".join(lines[1:50])), delimiter=delimiter):
        if any(_DECIMAL_COMMA.match(v.strip()) for v in row):
            return 'numbers are written with a decimal comma; set [csv] decimal = ","'
    return None


def csv_read_error(label: str, descriptor: Any, error: BaseException) -> str:
    """One line: ``label``, what is wrong with the CSV file and the ``[csv]`` option fixing it.

    Falls back to the first line of the reader's own ``error`` when the file looks fine.
    """
    path = Path(descriptor.path)
    declared_encoding = str(getattr(descriptor, "csv_encoding", "utf-8"))
    delimiter = str(descriptor.csv_delimiter)
    try:
        with path.open("rb") as f:
            raw = f.read(_SAMPLE)
    except OSError as exc:
        return f"{label}: cannot read the CSV file: {exc}"
    problem = _encoding_problem(raw, declared_encoding)
    if problem is None and raw:
        lines = _lines(raw, declared_encoding)
        header = lines[0] if lines else ""
        problem = (
            _delimiter_problem(header, delimiter)
            or _row_problem(lines, delimiter, bool(descriptor.csv_header))
            or _decimal_problem(lines, delimiter, str(getattr(descriptor, "csv_decimal", ".")))
        )
    if problem is None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        problem = f"cannot read it as CSV ({first})"
    return f"{label}: {problem}"


def value_hint(example: Any, numeric: bool) -> str:
    """A ``[csv]`` option that would read a rejected numeric value, as a suffix ('' if none)."""
    if not numeric or example is None:
        return ""
    text = str(example).strip()
    if _DECIMAL_COMMA.match(text):
        return ' (a decimal comma: set [csv] decimal = ",")'
    if text.lower() in _NA_MARKERS or not re.search(r"[0-9]", text):
        return f" (if {text!r} marks a missing value, add it to [csv] na_values)"
    return ""
