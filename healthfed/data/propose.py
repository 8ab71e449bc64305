"""A proposed descriptor for a data file, for the data steward to review
(``healthfed node describe-data FILE``).

:func:`propose_descriptor` reads a CSV or Parquet file once and proposes, per
column, a type (numeric, integer, binary, categorical, id), the levels of a
binary or categorical column, and bounds: the observed range *rounded outward*
(to a multiple of a round step that splits it into at least 4, so age 18..97 gives
[10, 100] and CRP 0.2..587 gives [0, 600]). For a CSV it also proposes the
delimiter, a decimal comma and the missing-value spellings it found (``NA``, ``N/A``, ``.``,
``null`` ...). The result is descriptor TOML (it loads with
:func:`~healthfed.data.descriptor.load_descriptor`) with comments saying what to
review: declared bounds are meant to be public knowledge (they fix histogram grids
that are released), so replace the proposed ones with clinical limits where known,
and declare each lab value's unit as the file records it.

Types: a column whose values all read as numbers is ``binary`` with two distinct
values, else ``integer`` when all are whole, else ``numeric``; a text column with
two distinct values is ``binary`` (a "no"/"false"/"negative"-like value first, so it
is coded 0), up to 40 distinct values ``categorical`` with its levels, and more
than that ``categorical`` without levels (review it). The id column is the one
given, else the first column named like an id (``id``, ``patient_id``, ``pid``,
``mrn`` ...) whose values are all present and distinct; a file without one gets
``generate_id = true`` (see :mod:`healthfed.data.descriptor`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from healthfed.data.column_sql import is_bool, is_float, is_int
from healthfed.data.csv_diagnose import DECIMAL_COMMA, NA_TOKENS
from healthfed.data.dataset import _toml_key, _toml_value
from healthfed.data.harmonise import canonical_unit
from healthfed.data.sql import quote_ident, sql_literal
from healthfed.errors import DataError

__all__ = ["nice_bounds", "propose_descriptor"]

MAX_LEVELS = 40
_NEGATIVE = ("0", "no", "n", "false", "f", "negative", "neg", "absent", "never", "none", "off")
_ID_NAME = re.compile(r"(^|_)(id|pid|patient|patientid|mrn|subject|record|case)(_?id)?($|_)", re.I)
_NO_NA = "\x01"  # a null string no cell holds: read every cell's own text


def nice_bounds(lo: float, hi: float) -> tuple[float, float]:
    """``[lo, hi]`` rounded outward to a multiple of a round step (1, 2 or 5 times a power of 10).

    The step is the largest that still splits the range into at least 4 steps:
    18..97 gives [10, 100], 0.2..587 gives [0, 600], 35.1..41.2 gives [35, 42].
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("bounds must be finite")
    span = hi - lo if hi > lo else (abs(hi) or 1.0)
    power = 10.0 ** math.floor(math.log10(span))
    step = next(power * m for m in (5, 2, 1, 0.5, 0.2) if span / (power * m) >= 4)
    low, high = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if high <= low:
        high = low + step
    return _tidy(low, step), _tidy(high, step)


def _tidy(x: float, step: float) -> float:
    digits = max(0, -math.floor(math.log10(step)) + 1)
    x = round(x, digits)
    return int(x) if x == int(x) else x  # type: ignore[return-value]


@dataclass
class _Column:
    name: str
    sql_type: str
    n: int
    present: int
    distinct: int
    numeric: int  # present values that read as numbers
    whole: int  # ... and are whole numbers
    low: float | None
    high: float | None
    values: list[str] | None  # the distinct values, when few
    na_found: set[str]


def _source(path: Path, fmt: str, delimiter: str | None) -> tuple[str, dict[str, Any]]:
    if fmt == "parquet":
        return f"read_parquet({sql_literal(str(path))})", {}
    opts = [f"all_varchar = true, nullstr = [{sql_literal(_NO_NA)}]"]
    if delimiter is not None:
        opts.append(f"delim = {sql_literal(delimiter)}")
    return f"read_csv({sql_literal(str(path))}, {', '.join(opts)})", {}


def _sniff(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, bool]:
    try:
        row = con.execute(
            f"SELECT Delimiter, HasHeader FROM sniff_csv({sql_literal(str(path))})"
        ).fetchone()
    except duckdb.Error as exc:
        raise DataError(f"{path}: cannot read as CSV: {str(exc).splitlines()[0]}") from None
    assert row is not None
    return str(row[0]), bool(row[1])


def _decimal_comma(con: duckdb.DuckDBPyConnection, source: str, names: list[str]) -> bool:
    """True when some column holds only numbers (or missing-value spellings), some of them
    written with a decimal comma (``50,5``): the CSV then needs ``decimal = ","``."""
    comma = sql_literal(DECIMAL_COMMA)
    for name in names:
        v = f"trim(CAST({quote_ident(name)} AS VARCHAR))"
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE regexp_matches({v}, {comma})), "
            f"count(*) FILTER (WHERE {v} IS NOT NULL AND {v} <> '' "
            f"AND NOT regexp_matches({v}, {comma}) AND lower({v}) NOT IN "
            f"({', '.join(sql_literal(t) for t in NA_TOKENS)}) "
            f"AND TRY_CAST({v} AS DOUBLE) IS NULL) FROM {source}"
        ).fetchone()
        assert row is not None
        commas, other_text = int(row[0]), int(row[1])
        if commas and other_text == 0:
            return True
    return False


def _analyse(
    con: duckdb.DuckDBPyConnection,
    source: str,
    name: str,
    sql_type: str,
    csv: bool,
    decimal_comma: bool = False,
) -> _Column:
    q = quote_ident(name)
    if is_bool(sql_type):
        text = f"CAST({q} AS VARCHAR)"
    elif is_float(sql_type):
        d = f"CAST({q} AS DOUBLE)"
        text = (
            f"(CASE WHEN isnan({d}) THEN NULL WHEN {d} = trunc({d}) AND abs({d}) < 1e15 "
            f"THEN CAST(CAST({d} AS BIGINT) AS VARCHAR) ELSE CAST({d} AS VARCHAR) END)"
        )
    else:
        text = f"CAST({q} AS VARCHAR)"
    tokens = ", ".join(sql_literal(t) for t in NA_TOKENS)
    na = f"(v IS NULL OR lower(trim(v)) IN ({tokens}))" if csv else "(v IS NULL)"
    num = "TRY_CAST(replace(v, ',', '.') AS DOUBLE)" if decimal_comma else "TRY_CAST(v AS DOUBLE)"
    if is_bool(sql_type):
        num = "CAST(NULL AS DOUBLE)"
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE NOT {na}), "
        f"count(DISTINCT v) FILTER (WHERE NOT {na}), "
        f"count(*) FILTER (WHERE NOT {na} AND isfinite({num})), "
        f"count(*) FILTER (WHERE NOT {na} AND isfinite({num}) AND {num} = round({num})), "
        f"min({num}) FILTER (WHERE NOT {na} AND isfinite({num})), "
        f"max({num}) FILTER (WHERE NOT {na} AND isfinite({num})) "
        f"FROM (SELECT {text} AS v FROM {source})"
    ).fetchone()
    assert row is not None
    n, present, distinct, numeric, whole, low, high = row
    values = None
    if distinct <= MAX_LEVELS:
        values = [
            str(r[0])
            for r in con.execute(
                f"SELECT DISTINCT v FROM (SELECT {text} AS v FROM {source}) WHERE NOT {na}"
            ).fetchall()
        ]
    na_found: set[str] = set()
    if csv:
        na_found = {
            str(r[0])
            for r in con.execute(
                f"SELECT DISTINCT v FROM (SELECT {text} AS v FROM {source}) "
                f"WHERE v IS NOT NULL AND lower(trim(v)) IN ({tokens})"
            ).fetchall()
        }
    return _Column(
        name, sql_type, int(n), int(present), int(distinct), int(numeric), int(whole),
        None if low is None else float(low), None if high is None else float(high),
        values, na_found,
    )  # fmt: skip


def _order_levels(values: list[str]) -> list[str]:
    """Numbers in numeric order, else text in natural order; for two, a negative first."""

    def key(v: str) -> tuple[int, float, str]:
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v.lower())

    ordered = sorted(values, key=key)
    if len(ordered) == 2 and ordered[1].strip().lower() in _NEGATIVE:
        ordered.reverse()
    return ordered


def _level_value(v: str) -> Any:
    """A level as TOML writes it: whole numbers as integers, true/false as booleans."""
    if re.fullmatch(r"-?[0-9]+", v):
        return int(v)
    if v in ("true", "false"):
        return v == "true"
    return v


def _column_spec(c: _Column) -> tuple[dict[str, Any], list[str]]:
    """(the column's descriptor entry, comments for the steward)."""
    notes: list[str] = []
    if c.present == 0:
        return {"type": "numeric"}, ["every value is missing: review the type, or drop the column"]
    if is_bool(c.sql_type):
        return {"type": "binary", "levels": [False, True]}, []
    spec: dict[str, Any]
    if c.numeric == c.present:
        if c.distinct == 2:
            assert c.values is not None
            return {
                "type": "binary",
                "levels": [_level_value(v) for v in _order_levels(c.values)],
            }, []
        assert c.low is not None and c.high is not None
        ctype = "integer" if c.whole == c.present else "numeric"
        if is_int(c.sql_type):
            ctype = "integer"
        low, high = nice_bounds(c.low, c.high)
        spec = {"type": ctype, "bounds": [low, high]}
        notes.append(
            "bounds: the observed range rounded outward; replace them with public clinical "
            "limits (they fix released histogram grids)"
        )
        if c.distinct == 1:
            notes.append("a single value in the whole file: review")
        elif c.distinct <= 10 and ctype == "integer":
            notes.append(f"{c.distinct} distinct values: categorical (with levels) instead?")
        unit = canonical_unit(c.name)
        if unit is not None:
            notes.append(
                f'unit = "{unit}"?  a known variable: declare the unit the FILE uses '
                f"(the node converts it to {unit})"
            )
        return spec, notes
    if c.distinct == 2:
        assert c.values is not None
        return {"type": "binary", "levels": [_level_value(v) for v in _order_levels(c.values)]}, []
    if c.distinct <= MAX_LEVELS:
        assert c.values is not None
        levels = [_level_value(v) for v in _order_levels(c.values)]
        spec = {"type": "categorical", "levels": levels}
        if c.distinct == 1:
            notes.append("a single value in the whole file: review")
        if c.numeric:
            notes.append(f"{c.present - c.numeric} value(s) do not read as numbers")
        return spec, notes
    notes.append(f"{c.distinct} distinct values: too many to list as levels; review")
    if c.numeric and c.numeric > 0.9 * c.present:
        notes.append(f"{c.present - c.numeric} value(s) do not read as numbers (typos?)")
    return {"type": "categorical"}, notes


def _pick_id(columns: list[_Column], id_column: str | None, path: Path) -> str | None:
    if id_column is not None:
        names = [c.name for c in columns]
        if id_column not in names:
            raise DataError(f"{path}: no column {id_column!r} for --id-column; it has {names}")
        return id_column
    for c in columns:
        if _ID_NAME.search(c.name) and c.present == c.n and c.distinct == c.n:
            return c.name
    return None


def propose_descriptor(
    path: str | Path,
    *,
    name: str | None = None,
    id_column: str | None = None,
    descriptor_dir: str | Path | None = None,
) -> str:
    """Descriptor TOML proposed for the CSV or Parquet file at ``path`` (see the module doc).

    Parameters
    ----------
    name
        The dataset name (default: the file's stem).
    id_column
        The patient id column (default: guessed; none found gives ``generate_id``).
    descriptor_dir
        Where the descriptor will live: ``file`` is written relative to it
        (default: the data file's folder).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("csv", "parquet"):
        fmt = "csv" if fmt in ("txt", "tsv") else fmt
    if fmt not in ("csv", "parquet"):
        raise DataError(f"{path}: not a .csv or .parquet file")
    con = duckdb.connect()
    try:
        delimiter, header = (None, True)
        if fmt == "csv":
            delimiter, header = _sniff(con, path)
            if not header:
                raise DataError(
                    f"{path}: the first line does not look like a header of column names; "
                    "add one (the descriptor names the columns)"
                )
        source, _ = _source(path, fmt, delimiter)
        try:
            rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            types = [(str(r[0]), str(r[1])) for r in rows]
        except duckdb.Error as exc:
            raise DataError(f"{path}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from None
        comma = (
            fmt == "csv" and delimiter != "," and _decimal_comma(con, source, [n for n, _ in types])
        )
        columns = [_analyse(con, source, n, t, fmt == "csv", comma) for n, t in types]
    finally:
        con.close()
    if not columns or columns[0].n == 0:
        raise DataError(f"{path}: the file has no rows; nothing to describe")
    id_name = _pick_id(columns, id_column, path)
    base = Path(descriptor_dir).resolve() if descriptor_dir is not None else path.parent
    try:
        file = str(path.relative_to(base))
    except ValueError:
        file = str(path)
    dataset: dict[str, Any] = {"name": name or re.sub(r"\W+", "_", path.stem).strip("_") or "data"}
    dataset["file"] = file
    dataset["format"] = fmt
    lines = [
        f"# Proposed by `healthfed node describe-data` from {path.name} "
        f"({columns[0].n} rows, {len(columns)} columns): REVIEW before use.",
        "# Types, levels and bounds are read off the data; bounds are meant to be public",
        "# knowledge (they fix released histogram grids): prefer clinical limits.",
    ]
    if descriptor_dir is None:
        lines.append(f"# 'file' is relative to the descriptor: save it next to {path.name}.")
    lines.append("[dataset]")
    if id_name is None:
        id_name = "row_id"
        while id_name in {c.name for c in columns}:
            id_name = "_" + id_name
        dataset["id_column"] = id_name
        dataset["generate_id"] = True
        note = "# no id column found: the node generates a pseudonymous id per row (generate_id)"
    else:
        dataset["id_column"] = id_name
        note = ""
    for k, v in dataset.items():
        lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    if note:
        lines.append(note)
    na = sorted({t for c in columns for t in c.na_found} | {"", "NA"})
    if fmt == "csv" and (delimiter != "," or na != ["", "NA"] or comma):
        lines += ["", "[csv]"]
        if delimiter != ",":
            lines.append(f"delimiter = {_toml_value(delimiter)}")
        if comma:
            lines.append('decimal = ","  # numbers written with a decimal comma')
        if na != ["", "NA"]:
            lines.append(f"na_values = {_toml_value(na)}  # missing-value spellings found")
    for c in columns:
        spec: dict[str, Any]
        notes: list[str]
        if c.name == id_name:
            spec, notes = {"type": "id"}, []
        else:
            spec, notes = _column_spec(c)
        lines += ["", f"[columns.{_toml_key(c.name)}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in spec.items()]
        missing = c.n - c.present
        if missing and c.name != id_name:
            notes.insert(0, f"{missing} of {c.n} values missing")
        lines += [f"# {n}" for n in notes]
    return "\n".join(lines) + "\n"
