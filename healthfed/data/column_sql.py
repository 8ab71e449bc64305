"""SQL expressions that give each declared column its one fixed type in the view ``data``.

The source's own column types vary (a CSV read as text, a Parquet file's floats
or integers, a frame's booleans); these expressions map any of them to the
view's types and tell valid values from invalid ones::

    numeric, integer -> DOUBLE   (NaN read as NULL)
    binary           -> INTEGER  0/1 (the declared levels' order gives the coding)
    categorical      -> VARCHAR  (1 and 1.0 both read as '1')
    id               -> VARCHAR
"""

from __future__ import annotations

from healthfed.data.descriptor import ColumnSpec
from healthfed.data.sql import quote_ident, sql_literal

__all__ = ["bad_value_predicate", "binary_expr", "double_expr", "is_float", "is_int", "str_expr"]

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


def binary_expr(spec: ColumnSpec, sql_type: str) -> str:
    """The column as INTEGER 0/1; the first declared level is 0, the second 1."""
    lo, hi = _binary_levels(spec)
    if (lo, hi) == ("0", "1") and is_int(sql_type):
        return f"CAST({quote_ident(spec.name)} AS INTEGER)"
    if (lo, hi) == ("0", "1") and _base_type(sql_type) == "DOUBLE":
        return f"CAST(NULLIF({quote_ident(spec.name)}, 'NaN'::DOUBLE) AS INTEGER)"
    s = str_expr(spec.name, sql_type)
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
        s = str_expr(spec.name, sql_type)
        return (
            f"({s} IS NOT NULL AND {s} NOT IN ({sql_literal(lo)}, {sql_literal(hi)}))",
            f"{lo!r} or {hi!r}",
        )
    if spec.type == "categorical" and spec.levels:
        s = str_expr(spec.name, sql_type)
        levels = ", ".join(sql_literal(v) for v in spec.levels)
        return f"({s} IS NOT NULL AND {s} NOT IN ({levels}))", f"one of {list(spec.levels)}"
    return None
