"""SQL expressions that give each declared column its one fixed type in the view ``data``.

The source's own column types vary (a CSV read as text, a Parquet file's floats
or integers, a frame's booleans); these expressions map any of them to the
view's types and tell valid values from invalid ones::

    numeric, integer -> DOUBLE   (NaN read as NULL)
    binary           -> INTEGER  0/1 (the declared levels' order gives the coding)
    categorical      -> VARCHAR  (1 and 1.0 both read as '1')
    id               -> VARCHAR

A categorical or binary value reads as its declared level whatever the source
stored: the number 1, the float 1.0 and the text ``"1"`` or ``"1.0"`` all read as
level ``"1"``; a boolean (a Parquet or frame BOOLEAN, or the text true/false in
any case, as pandas writes it to CSV) reads as the level spelled true/false when
the levels are spelled so, else as ``"1"``/``"0"``. So one column gives the same
values from a CSV file, a Parquet file and a frame (tests/data/test_data_sources.py).
"""

from __future__ import annotations

from healthfed.data.descriptor import ColumnSpec
from healthfed.data.sql import quote_ident, sql_literal

__all__ = [
    "bad_value_predicate",
    "binary_expr",
    "double_expr",
    "is_bool",
    "is_float",
    "is_int",
    "level_expr",
    "str_expr",
]

_FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL")
_INT_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
)


def _base_type(sql_type: str) -> str:
    """``DECIMAL(18, 3)`` -> ``DECIMAL``."""
    return sql_type.split("(")[0].strip().upper()


def is_float(sql_type: str) -> bool:
    """A floating-point or decimal SQL type."""
    return _base_type(sql_type) in _FLOAT_TYPES or _base_type(sql_type) == "DECIMAL"


def is_int(sql_type: str) -> bool:
    """An integer SQL type (of any width, signed or not)."""
    return _base_type(sql_type) in _INT_TYPES


def is_bool(sql_type: str) -> bool:
    """A BOOLEAN SQL type."""
    return _base_type(sql_type) == "BOOLEAN"


def str_expr(col: str, sql_type: str) -> str:
    """The column as VARCHAR, writing integral floats without '.0' so 1.0 reads as '1'."""
    q = quote_ident(col)
    if _base_type(sql_type) == "VARCHAR":
        return q
    if is_float(sql_type):
        d = f"CAST({q} AS DOUBLE)"
        return (
            f"(CASE WHEN isnan({d}) THEN NULL "
            f"WHEN {d} = trunc({d}) AND abs({d}) < 1e15 THEN CAST(CAST({d} AS BIGINT) AS VARCHAR) "
            f"ELSE CAST({d} AS VARCHAR) END)"
        )
    if _base_type(sql_type) == "BOOLEAN":
        return f"CAST(CAST({q} AS INTEGER) AS VARCHAR)"
    return f"CAST({q} AS VARCHAR)"


def double_expr(col: str, sql_type: str) -> str:
    """The column as DOUBLE, NaN read as NULL (assumes validation passed)."""
    q = quote_ident(col)
    if is_int(sql_type):
        return f"CAST({q} AS DOUBLE)"
    d = q if _base_type(sql_type) == "DOUBLE" else f"CAST({q} AS DOUBLE)"
    return f"NULLIF({d}, 'NaN'::DOUBLE)"


def _binary_levels(spec: ColumnSpec) -> tuple[str, str]:
    levels = spec.levels or ("0", "1")
    return levels[0], levels[1]


def _levels(spec: ColumnSpec) -> tuple[str, ...] | None:
    return _binary_levels(spec) if spec.type == "binary" else spec.levels


def _bool_spelling(spec: ColumnSpec) -> tuple[str, str] | None:
    """(level a true value reads as, level a false value reads as), or None (no mapping).

    The levels spelled true/false (any case) when declared so; else ``"1"``/``"0"``
    for a 0/1 binary column; else None (a boolean is then just its text).
    """
    levels = _levels(spec)
    if not levels:
        return None
    by_word = {lev.lower(): lev for lev in levels if lev.lower() in ("true", "false")}
    if len(by_word) == 2:
        return by_word["true"], by_word["false"]
    if spec.type == "binary" and set(levels) == {"0", "1"}:
        return "1", "0"
    return None


def level_expr(spec: ColumnSpec, sql_type: str) -> str:
    """A categorical or binary column as VARCHAR, spelled as its declared levels (see module doc)."""
    q = quote_ident(spec.name)
    spelling = _bool_spelling(spec)
    if is_bool(sql_type):
        t, f = spelling or ("1", "0")
        return f"(CASE WHEN {q} THEN {sql_literal(t)} WHEN NOT {q} THEN {sql_literal(f)} END)"
    if _base_type(sql_type) != "VARCHAR":
        return str_expr(spec.name, sql_type)
    # Text: a declared level as it is; else "1.0" reads as "1" (as the float 1.0 does) and
    # true/false (any case) as the boolean's level.
    text = f"regexp_replace({q}, '^(-?[0-9]+)\\.0+$', '\\1')"
    cases = []
    levels = _levels(spec)
    if levels:
        cases.append(f"WHEN {q} IN ({', '.join(sql_literal(v) for v in levels)}) THEN {q}")
    if spelling is not None:
        cases.append(f"WHEN lower({q}) = 'true' THEN {sql_literal(spelling[0])}")
        cases.append(f"WHEN lower({q}) = 'false' THEN {sql_literal(spelling[1])}")
    return f"(CASE {' '.join(cases)} ELSE {text} END)" if cases else text


def binary_expr(spec: ColumnSpec, sql_type: str) -> str:
    """The column as INTEGER 0/1; the first declared level is 0, the second 1."""
    lo, hi = _binary_levels(spec)
    if (lo, hi) == ("0", "1") and is_int(sql_type):
        return f"CAST({quote_ident(spec.name)} AS INTEGER)"
    if (lo, hi) == ("0", "1") and _base_type(sql_type) == "DOUBLE":
        return f"CAST(NULLIF({quote_ident(spec.name)}, 'NaN'::DOUBLE) AS INTEGER)"
    s = level_expr(spec, sql_type)
    return f"(CASE {s} WHEN {sql_literal(lo)} THEN 0 WHEN {sql_literal(hi)} THEN 1 END)"


def bad_value_predicate(spec: ColumnSpec, sql_type: str) -> tuple[str, str] | None:
    """(SQL predicate true for an invalid value, what was expected) or None if no check applies."""
    q = quote_ident(spec.name)
    if spec.is_numeric:
        d = q if (is_float(sql_type) or is_int(sql_type)) else f"TRY_CAST({q} AS DOUBLE)"
        if is_int(sql_type):
            return None
        pred = f"({q} IS NOT NULL AND ({d} IS NULL OR isinf({d})"
        if spec.type == "integer":
            pred += f" OR (isfinite({d}) AND {d} <> round({d}))"
            return pred + "))", "an integer"
        return pred + "))", "a finite number"
    if spec.type == "binary":
        lo, hi = _binary_levels(spec)
        if (lo, hi) == ("0", "1") and is_int(sql_type):
            return f"({q} NOT IN (0, 1))", "0 or 1"
        s = level_expr(spec, sql_type)
        return (
            f"({s} IS NOT NULL AND {s} NOT IN ({sql_literal(lo)}, {sql_literal(hi)}))",
            f"{lo!r} or {hi!r}",
        )
    if spec.type == "categorical" and spec.levels:
        s = level_expr(spec, sql_type)
        levels = ", ".join(sql_literal(v) for v in spec.levels)
        return f"({s} IS NOT NULL AND {s} NOT IN ({levels}))", f"one of {list(spec.levels)}"
    return None
