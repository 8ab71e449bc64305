"""Descriptive statistics: ``table1``, ``describe``, ``crosstab`` and ``count``.

Node side, every computation aggregates with DuckDB over the view ``data`` in a
small, fixed number of queries per request, not one per variable or group
(:mod:`healthfed.compute.stats_sql` says how).

What is released is a :class:`~healthfed.privacy.disclosure.Release` (count tables
with margins linked to one "N per group" table, numeric summaries tied to count
cells); the node passes it through :func:`~healthfed.privacy.disclosure.disclose`.
Every count table carries its cells' keys (the sum of the patients' secret record
keys, computed in the same scan), so the filter can perturb the counts with the
cell key method (:mod:`healthfed.privacy.cellkey`) unless the site releases exact counts.
Hub side, ``combine`` pools the disclosed dicts into result objects
(:mod:`healthfed.compute.results`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from healthfed.compute.registry import Computation, register
from healthfed.compute.results.pooling import ALL, MISSING
from healthfed.compute.stats_sql import (
    key_expr,
    key_sum,
    observed_levels,
    record_key_sql,
    run_summary,
)
from healthfed.data.descriptor import ColumnSpec, DatasetDescriptor
from healthfed.errors import DataError, PolicyDenied
from healthfed.policy import SitePolicy
from healthfed.privacy.cellkey import KEY_MOD
from healthfed.privacy.disclosure import CountTable, Release

__all__ = ["DEFAULT_QUANTILES"]

DEFAULT_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)
MAX_QUANTILES = 99
MAX_VARIABLES = 200

# The parameters each computation accepts (the node refuses others before validate).
SUMMARY_PARAMS = frozenset({"variables", "by", "quantiles"})
CROSSTAB_PARAMS = frozenset({"row", "col"})
COUNT_PARAMS = frozenset({"variable", "level"})


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_keys(params: dict[str, Any], allowed: frozenset[str], computation: str) -> None:
    if not isinstance(params, dict):
        raise PolicyDenied(f"{computation}: params must be an object")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PolicyDenied(
            f"{computation}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}"
        )


def _column(desc: DatasetDescriptor, name: Any, arg: str) -> ColumnSpec:
    if not isinstance(name, str) or not name:
        raise PolicyDenied(f"{arg}: must be a variable name (string), got {name!r}")
    spec = desc.columns.get(name)
    if spec is None:
        raise DataError(
            f"{arg}: dataset {desc.name!r} has no variable {name!r}; "
            f"declared variables: {sorted(c for c, s in desc.columns.items() if s.type != 'id')}"
        )
    if spec.type == "id":
        raise PolicyDenied(f"{arg}: {name!r} is the patient id column and is never summarised")
    return spec


def _categorical(desc: DatasetDescriptor, name: Any, arg: str, policy: SitePolicy) -> ColumnSpec:
    spec = _column(desc, name, arg)
    if not spec.is_categorical:
        raise PolicyDenied(
            f"{arg}: variable {name!r} is {spec.type}; a categorical or binary variable is needed"
        )
    if spec.levels is not None and len(spec.levels) > policy.max_levels:
        raise PolicyDenied(
            f"{arg}: variable {name!r} has {len(spec.levels)} levels, more than this site's "
            f"max_levels = {policy.max_levels}"
        )
    return spec


def _validate_summary(
    params: dict[str, Any],
    desc: DatasetDescriptor,
    policy: SitePolicy,
    computation: str,
    numeric_only: bool,
) -> dict[str, Any]:
    _check_keys(params, SUMMARY_PARAMS, computation)
    variables = params.get("variables")
    if isinstance(variables, str):
        variables = [variables]
    if not isinstance(variables, list | tuple) or not variables:
        raise PolicyDenied(f"{computation}: 'variables' must be a non-empty list of names")
    if len(variables) > MAX_VARIABLES:
        raise PolicyDenied(f"{computation}: 'variables' lists more than {MAX_VARIABLES} names")
    if len(set(variables)) != len(variables):
        raise PolicyDenied(f"{computation}: 'variables' lists a variable twice")
    by = params.get("by")
    if by is not None:
        _categorical(desc, by, f"{computation}: 'by'", policy)
        if by in variables:
            raise PolicyDenied(f"{computation}: 'by' variable {by!r} is also in 'variables'")
    quantiles = params.get("quantiles", list(DEFAULT_QUANTILES))
    if quantiles is None:
        quantiles = []
    if not isinstance(quantiles, list | tuple) or len(quantiles) > MAX_QUANTILES:
        raise PolicyDenied(f"{computation}: 'quantiles' must be a list of at most {MAX_QUANTILES}")
    for p in quantiles:
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < float(p) < 1:
            raise PolicyDenied(
                f"{computation}: 'quantiles' must hold probabilities strictly between 0 and 1, "
                f"got {p!r}"
            )
    kinds: dict[str, str] = {}
    for v in variables:
        arg = f"{computation}: 'variables' entry {v!r}"
        spec = _column(desc, v, arg)
        if numeric_only and not spec.is_numeric:
            raise PolicyDenied(
                f"{arg}: {computation} summarises numeric variables, {v!r} is {spec.type}"
            )
        if spec.is_categorical:
            _categorical(desc, v, arg, policy)
        if spec.is_numeric and quantiles and spec.bounds is None:
            raise PolicyDenied(
                f"{arg}: quantiles need declared bounds and variable {v!r} has none; "
                f"declare bounds = [low, high] in the descriptor or pass quantiles=[]"
            )
        kinds[v] = spec.type
    return {
        "variables": list(variables),
        "by": by,
        "quantiles": [float(p) for p in quantiles],
        "kinds": kinds,
    }


def validate_table1(
    params: dict[str, Any], desc: DatasetDescriptor, policy: SitePolicy
) -> dict[str, Any]:
    """Check a ``table1`` request: ``{"variables", "by"?, "quantiles"?}``."""
    return _validate_summary(params, desc, policy, "table1", numeric_only=False)


def validate_describe(
    params: dict[str, Any], desc: DatasetDescriptor, policy: SitePolicy
) -> dict[str, Any]:
    """Check a ``describe`` request: numeric ``variables``, optional ``by``, ``quantiles``."""
    return _validate_summary(params, desc, policy, "describe", numeric_only=True)


def validate_crosstab(
    params: dict[str, Any], desc: DatasetDescriptor, policy: SitePolicy
) -> dict[str, Any]:
    """Check a ``crosstab`` request: two distinct categorical/binary variables ``row``, ``col``."""
    _check_keys(params, CROSSTAB_PARAMS, "crosstab")
    for arg in ("row", "col"):
        if arg not in params:
            raise PolicyDenied(f"crosstab: parameter {arg!r} is required")
        _categorical(desc, params[arg], f"crosstab: {arg!r}", policy)
    if params["row"] == params["col"]:
        raise PolicyDenied("crosstab: 'row' and 'col' must be different variables")
    return {"row": params["row"], "col": params["col"]}


def validate_count(
    params: dict[str, Any], desc: DatasetDescriptor, policy: SitePolicy
) -> dict[str, Any]:
    """Check a ``count`` request: ``{}`` or ``{"variable", "level"}``."""
    _check_keys(params, COUNT_PARAMS, "count")
    if ("variable" in params) != ("level" in params):
        raise PolicyDenied("count: give both 'variable' and 'level', or neither")
    if "variable" not in params:
        return {"variable": None, "level": None}
    spec = _categorical(desc, params["variable"], "count: 'variable'", policy)
    level = params["level"]
    if isinstance(level, bool) or not isinstance(level, str | int):
        raise PolicyDenied(f"count: 'level' must be a string, got {level!r}")
    level = str(level)
    if spec.levels is not None and level not in spec.levels:
        raise DataError(
            f"count: 'level' {level!r} is not a level of {spec.name!r}; levels: {list(spec.levels)}"
        )
    return {"variable": spec.name, "level": level}


# --------------------------------------------------------------------------------------
# node side (the SQL is in healthfed.compute.stats_sql)
# --------------------------------------------------------------------------------------
def run_table1(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
) -> Release:
    """Aggregate a Table 1 in two DuckDB queries (see the module docstring)."""
    return run_summary(con, desc, params, policy, "table1")


def run_describe(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
) -> Release:
    """Aggregate numeric summaries in two DuckDB queries."""
    return run_summary(con, desc, params, policy, "describe")


def run_crosstab(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
) -> Release:
    """Counts of ``row`` x ``col`` (with a ``(missing)`` level each) in one query.

    Each cell's key (its records' keys summed, :mod:`healthfed.privacy.cellkey`)
    comes from the same scan, for the filter's cell key perturbation.
    """
    rs, cs = desc.column(params["row"]), desc.column(params["col"])
    rk = record_key_sql(desc)
    res = con.execute(
        f"SELECT {key_expr(rs)} AS r, {key_expr(cs)} AS c, count(*), {key_sum(rk)} "
        f"FROM data GROUP BY r, c"
    ).fetchall()
    rl = observed_levels(rs, {r for r, _, _, _ in res}, policy, "crosstab: 'row'") + [MISSING]
    cl = observed_levels(cs, {c for _, c, _, _ in res}, policy, "crosstab: 'col'") + [MISSING]
    counts = np.zeros((len(rl), len(cl)), dtype=np.int64)
    keys = np.zeros_like(counts)
    for r, c, n, k in res:
        i, j = rl.index(MISSING if r is None else r), cl.index(MISSING if c is None else c)
        counts[i, j] += n
        keys[i, j] = (int(keys[i, j]) + int(k)) % KEY_MOD
    meta = {"row": rs.name, "col": cs.name}
    table = CountTable(tuple(rl), tuple(cl), counts, keys=keys)
    return Release("crosstab", {"crosstab": table}, meta=meta)


def run_count(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
) -> Release:
    """Count patients; with a condition the complement is a cell of the same table.

    Releasing ``level`` and "everything else" with their total (rather than the
    level's count alone) lets the suppression rules protect the complement too.
    """
    var, level = params.get("variable"), params.get("level")
    rk = record_key_sql(desc)
    if var is None:
        n, k = con.execute(f"SELECT count(*), {key_sum(rk)} FROM data").fetchone()  # type: ignore[misc]
        table = CountTable(("patients",), (ALL,), np.array([[int(n)]]), keys=np.array([[int(k)]]))
        return Release("count", {"count": table}, meta={"variable": None, "level": None})
    spec = desc.column(var)
    in_level = f"CASE WHEN {key_expr(spec)} = ? THEN {rk} END"
    n_level, n_all, k_level, k_all = con.execute(
        f"SELECT count(*) FILTER (WHERE {key_expr(spec)} = ?), count(*), "
        f"{key_sum(in_level)}, {key_sum(rk)} FROM data",
        [level, level],
    ).fetchone()  # type: ignore[misc]
    table = CountTable(
        (str(level), "(other or missing)"),
        (ALL,),
        np.array([[int(n_level)], [int(n_all - n_level)]]),
        keys=np.array([[int(k_level)], [(int(k_all) - int(k_level)) % KEY_MOD]]),
    )
    return Release("count", {"count": table}, meta={"variable": var, "level": str(level)})


# --------------------------------------------------------------------------------------
# aggregator side
# --------------------------------------------------------------------------------------
if TYPE_CHECKING:  # the result tables are the hub's (pandas): a node never imports them
    from healthfed.compute.results import CountResult, CrosstabResult, DescribeResult, Table1Result


def combine_table1(replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> Table1Result:
    """Pool the sites' disclosed Table 1 replies (see :class:`Table1Result`)."""
    from healthfed.compute.results import Table1Result, combine_summary

    return combine_summary(replies, params, Table1Result)  # type: ignore[return-value]


def combine_describe(replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> DescribeResult:
    """Pool the sites' disclosed numeric summaries (see :class:`DescribeResult`)."""
    from healthfed.compute.results import DescribeResult, combine_summary

    return combine_summary(replies, params, DescribeResult)  # type: ignore[return-value]


def combine_crosstab(replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> CrosstabResult:
    """Pool the sites' disclosed cross tables (:meth:`CrosstabResult.combine`)."""
    from healthfed.compute.results import CrosstabResult

    return CrosstabResult.combine(replies, params)


def combine_count(replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> CountResult:
    """Pool the sites' disclosed counts (:meth:`CountResult.combine`)."""
    from healthfed.compute.results import CountResult

    return CountResult.combine(replies, params)


register(
    Computation(
        "table1",
        "Table 1: N per group; numeric n/missing/mean/SD/quantiles; categorical counts and %",
        validate_table1,
        run_table1,
        combine_table1,
        SUMMARY_PARAMS,
    )
)
register(
    Computation(
        "describe",
        "Numeric summaries (n, missing, mean, SD, quantiles with brackets), optionally by group",
        validate_describe,
        run_describe,
        combine_describe,
        SUMMARY_PARAMS,
    )
)
register(
    Computation(
        "crosstab",
        "Counts of two categorical variables with margins",
        validate_crosstab,
        run_crosstab,
        combine_crosstab,
        CROSSTAB_PARAMS,
    )
)
register(
    Computation(
        "count",
        "Number of patients, optionally where a categorical variable equals a level",
        validate_count,
        run_count,
        combine_count,
        COUNT_PARAMS,
    )
)
