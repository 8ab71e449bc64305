"""Node side: the design matrix of a spec, read from the DuckDB view ``data`` in one query.

The SQL reads the raw columns, the one-hot dummies and the missing indicators;
the pooled standardisation and mean imputation are applied in numpy
(:func:`_standardise`), so a node can keep the raw matrix across specs that
differ only in their pooled means/SDs. The outcome is coded here too
(:func:`target_sql`): 0/1 for a binomial model, the value otherwise.
:mod:`healthfed.compute.preprocess.cache` builds the same matrix from a cached
raw column store; this module is the uncached reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.compute.preprocess.spec import validate_spec
from healthfed.data.sql import quote_ident, sql_literal
from healthfed.errors import DataError, PolicyDenied

__all__ = ["binary_positive", "check_outcome", "design_matrix", "target_sql"]


def _column_sql(c: dict[str, Any]) -> list[str]:
    """SQL of a column's design columns; numeric values stay raw (NULL as NaN).

    Standardisation and mean imputation are applied in numpy by
    :func:`_standardise`, so a node can keep the raw matrix across specs that
    differ only in their pooled means/SDs (those vary in the last bits between
    runs of the same parallel aggregation).
    """
    q = quote_ident(c["name"])
    out: list[str] = []
    if c["type"] == "categorical":
        for lev in c["levels"][1:]:
            out.append(f"CASE WHEN {q} = {sql_literal(lev)} THEN 1.0 ELSE 0.0 END")
    else:
        out.append(f"COALESCE(CAST({q} AS DOUBLE), 'NaN'::DOUBLE)")
    if c["indicator"]:
        out.append(f"CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END")
    return out


def _standardise(R: np.ndarray, spec: dict[str, Any], offset: int) -> np.ndarray:
    """The design matrix from the raw one: ``(coalesce(x, mean) - center) / scale``."""
    X = np.array(R, dtype=np.float64, order="C", copy=True)
    j = offset
    for c in spec["columns"]:
        if c["type"] == "categorical":
            j += len(c["levels"]) - 1
        else:
            col = X[:, j]
            np.copyto(col, c["mean"], where=np.isnan(col))
            col -= c["center"]
            col /= c["scale"]
            j += 1
        if c["indicator"]:
            j += 1
    return X


def binary_positive(spec: Any, target: str, positive: str | None) -> int:
    """The 0/1 code of a binary target's positive level (a level name or "0"/"1")."""
    pos = "1" if positive is None else str(positive)
    levels = list(spec.levels or ("0", "1"))
    if pos in levels and pos not in ("0", "1"):
        pos = str(levels.index(pos))
    if pos not in ("0", "1"):
        raise DataError(f"parameter 'positive': binary target {target!r} has levels {levels}")
    return int(pos)


def target_sql(descriptor: Any, target: str, positive: str | None, family: str) -> str:
    """SQL expression of the outcome: 0/1 for ``binomial``, the value otherwise.

    Raises
    ------
    DataError
        The target's type does not suit the family, or ``positive`` is not one of its levels.
    """
    spec = descriptor.column(target)
    q = quote_ident(target)
    if spec.type == "id":
        raise PolicyDenied(f"parameter 'target': {target!r} is the patient id column")
    if family == "binomial":
        if spec.type == "binary":
            return (
                f"CASE WHEN {q} = {binary_positive(spec, target, positive)} THEN 1.0 ELSE 0.0 END"
            )
        if spec.type == "categorical":
            if positive is None:
                raise DataError(
                    f"parameter 'positive': name the positive level of categorical target "
                    f"{target!r}"
                )
            if spec.levels is not None and str(positive) not in spec.levels:
                raise DataError(
                    f"parameter 'positive': {positive!r} is not a level of {target!r} "
                    f"(levels {list(spec.levels)})"
                )
            return f"CASE WHEN {q} = {sql_literal(str(positive))} THEN 1.0 ELSE 0.0 END"
        return f"CAST({q} AS DOUBLE)"  # numeric 0/1: checked after reading
    if spec.type == "categorical":
        raise DataError(
            f"parameter 'target': {target!r} is categorical; family {family!r} needs a "
            "numeric outcome"
        )
    return f"CAST({q} AS DOUBLE)"


def check_outcome(y: np.ndarray, target: str, family: str) -> None:
    """Refuse an outcome the family cannot model (a data problem at this site, named)."""
    if family == "binomial" and not np.all((y == 0.0) | (y == 1.0)):
        raise DataError(f"parameter 'target': {target!r} must be 0/1 for family 'binomial'")
    if family == "poisson" and (np.any(y < 0) or not np.all(np.isfinite(y))):
        raise DataError(
            f"parameter 'target': {target!r} must be non-negative counts for family 'poisson'"
        )
    if not np.all(np.isfinite(y)):
        raise DataError(f"parameter 'target': {target!r} has non-finite values")


def _row_filter(spec: dict[str, Any], target: str | None, where: str) -> str:
    conds = [f"({where or 'TRUE'})"]
    if target is not None:
        conds.append(f"{quote_ident(target)} IS NOT NULL")
    if spec["missing"] == "drop":
        conds += [f"{quote_ident(c['name'])} IS NOT NULL" for c in spec["columns"]]
    return " AND ".join(conds)


def _raw_design(
    con: Any,
    descriptor: Any,
    spec: dict[str, Any],
    target: str | None,
    positive: str | None,
    where: str,
    family: str,
    intercept: bool,
) -> tuple[np.ndarray, np.ndarray]:
    exprs: list[str] = []
    for c in spec["columns"]:
        exprs += _column_sql(c)
    sel = [f"{e} AS f{i}" for i, e in enumerate(exprs)]
    if target is not None:
        sel.append(f"{target_sql(descriptor, target, positive, family)} AS __y")
    sql = f"SELECT {', '.join(sel)} FROM data WHERE {_row_filter(spec, target, where)}"
    res = con.execute(sql).fetchnumpy()
    n = len(res["f0"])
    off = 1 if intercept else 0
    R = np.empty((n, len(exprs) + off), dtype=np.float64)
    if intercept:
        R[:, 0] = 1.0
    for i in range(len(exprs)):
        R[:, off + i] = np.asarray(res[f"f{i}"], dtype=np.float64)
    if target is None:
        return R, np.empty(0)
    y = np.asarray(res["__y"], dtype=np.float64)
    check_outcome(y, target, family)
    return R, y


def design_matrix(
    con: Any,
    descriptor: Any,
    spec: dict[str, Any],
    target: str | None = None,
    positive: str | None = None,
    where: str = "TRUE",
    family: str = "binomial",
    intercept: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Node side: build ``X`` (float64, C order) and ``y`` from the view ``data``.

    One DuckDB query reads the raw columns, dummies and indicators; the pooled
    standardisation and mean imputation are applied in numpy.

    Parameters
    ----------
    con
        A connection with the view ``data``.
    descriptor
        The dataset's descriptor (column types, declared levels).
    spec
        The preprocessing spec; validated against ``descriptor`` here.
    target, positive, family
        The outcome and its coding (see :func:`target_sql`). Rows with a missing
        outcome are left out. Without ``target`` ``y`` is empty.
    where
        Extra SQL row filter (e.g. a hold-out split); trusted, built by healthfed.
    intercept
        Prepend a column of ones.
    """
    spec = validate_spec(spec, descriptor)
    R, y = _raw_design(con, descriptor, spec, target, positive, where, family, intercept)
    return _standardise(R, spec, 1 if intercept else 0), y
