"""Validating a dataset's values against its descriptor in one scan.

One aggregate query counts, per declared column, the values that are not of the
declared type (and the missing or duplicate patient ids); only for a column with
problems is one example looked up, so the error names the file, every offending
column and a row or line to look at. The messages may quote a value; they stay
on the node.
"""

from __future__ import annotations

import duckdb

from healthfed.data.column_sql import bad_value_predicate, level_expr, str_expr
from healthfed.data.csv_diagnose import value_hint
from healthfed.data.descriptor import DatasetDescriptor
from healthfed.data.sql import quote_ident
from healthfed.errors import DataError

__all__ = ["check_values", "empty_data"]


def check_values(
    con: duckdb.DuckDBPyConnection,
    source: str,
    types: dict[str, str],
    descriptor: DatasetDescriptor,
    label: str,
    row_base: int,
    row_word: str,
) -> int:
    """Validate values against the declared types in one scan; return the row count.

    Parameters
    ----------
    source
        The SQL source of the rows (``read_parquet(...)``, ``read_csv(...)``, a table).
    types
        Column name -> the source's SQL type.
    label
        What the errors call the data (file and dataset name).
    row_base, row_word
        How a row is reported: the first row's number and ``"row"`` or ``"line"``.

    Raises
    ------
    DataError
        Listing every problem found.
    """
    d = descriptor
    checks: dict[str, tuple[str, str]] = {}
    aggs = ["count(*)"]
    for name, spec in d.columns.items():
        if spec.type == "id":
            continue
        bad = bad_value_predicate(spec, types[name])
        if bad is not None:
            checks[name] = bad
            aggs.append(f"count_if({bad[0]})")
    ident = str_expr(d.id_column, types[d.id_column])
    aggs += [f"count_if({ident} IS NULL)", f"count({ident}) - count(DISTINCT {ident})"]
    try:
        row = con.execute(f"SELECT {', '.join(aggs)} FROM {source}").fetchone()
    except duckdb.Error as exc:
        raise DataError(f"{label}: cannot read the data: {exc}") from None
    assert row is not None
    if not row[0]:
        what = "a header only" if row_word == "line" else "zero rows"
        raise empty_data(f"{label}: the data has no rows ({what}); a dataset needs patients' rows")
    numbered = f"(SELECT row_number() OVER () AS __row, * FROM {source})"

    def at(ex: tuple | None, pos: int = 0) -> int:
        assert ex is not None
        return int(ex[pos]) + row_base - 1

    problems: list[str] = []
    for (name, (pred, expected)), count in zip(checks.items(), row[1:-2], strict=True):
        if not count:
            continue
        spec = d.columns[name]
        shown = (
            level_expr(spec, types[name])
            if spec.is_categorical
            else f"CAST({quote_ident(name)} AS VARCHAR)"
        )
        ex = con.execute(f"SELECT __row, {shown} FROM {numbered} WHERE {pred} LIMIT 1").fetchone()
        where = f", e.g. {ex[1]!r} at {row_word} {at(ex)}" if ex else ""
        hint = value_hint(ex[1] if ex else None, spec.is_numeric and row_word == "line")
        if "decimal comma" in hint and ex:  # one line for the file, not one per column
            raise DataError(
                f"{label}: numbers are written with a decimal comma (column {name!r}, "
                f'{row_word} {at(ex)}); set [csv] decimal = ","'
            )
        problems.append(
            f"column {name!r} ({spec.type}): {count} value(s) are not {expected}{where}{hint}"
        )
    nulls, dups = int(row[-2]), int(row[-1])
    if nulls:
        ex = con.execute(f"SELECT __row FROM {numbered} WHERE {ident} IS NULL LIMIT 1").fetchone()
        where = f", e.g. at {row_word} {at(ex)}" if ex else ""
        problems.append(f"id column {d.id_column!r}: {nulls} missing patient id(s){where}")
    if dups:
        ex = con.execute(
            f"SELECT {ident}, count(*) FROM {source} GROUP BY 1 HAVING count(*) > 1 LIMIT 1"
        ).fetchone()
        where = f", e.g. {ex[0]!r} appears {ex[1]} times" if ex else ""
        problems.append(f"id column {d.id_column!r}: {dups} duplicate patient id(s){where}")
    if problems:
        err = DataError(f"{label}: invalid data:\n  " + "\n  ".join(problems))
        err.public_reason = "its data do not match the descriptor"  # type: ignore[attr-defined]
        raise err
    return int(row[0])


def empty_data(message: str) -> DataError:
    """The error of a dataset without rows (its ``public_reason`` may leave the node)."""
    err = DataError(message)
    err.public_reason = "it has no rows"  # type: ignore[attr-defined]
    return err
