"""Descriptive statistics: ``table1``, ``describe``, ``crosstab`` and ``count``.

Node side, every computation aggregates with DuckDB over the view ``data`` in a
small, fixed number of queries per request (not one per variable or group):

* one ``GROUP BY group`` scan for all patients counts and all numeric moments
  (``count``, ``avg``, ``var_pop * n`` -- DuckDB's variance is a numerically stable
  streaming update -- and min/max);
* one ``UNION ALL`` of ``GROUP BY group, key`` aggregations for all categorical
  level counts and all histograms on the fixed grid.

The per-group moments are combined into the overall with Chan et al.'s parallel
formula, the same one the hub uses across sites, so pooled means and SDs equal a
computation on the pooled rows up to floating-point rounding.

What is released is a :class:`~healthfed.privacy.disclosure.Release` (count tables
with margins linked to one "N per group" table, numeric summaries tied to count
cells); the node passes it through :func:`~healthfed.privacy.disclosure.disclose`.
Hub side, ``combine`` pools the disclosed dicts into result objects
(:mod:`healthfed.compute.results`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np

from healthfed.compute.registry import Computation, register
from healthfed.compute.results import (
    ALL,
    MISSING,
    CountResult,
    CrosstabResult,
    DescribeResult,
    Table1Result,
    combine_summary,
)
from healthfed.data.descriptor import ColumnSpec, DatasetDescriptor
from healthfed.data.sql import quote_ident
from healthfed.errors import DataError, PolicyDenied
from healthfed.policy import SitePolicy
from healthfed.privacy.disclosure import CellMoments, CountTable, NumericSummary, Release

__all__ = ["DEFAULT_QUANTILES"]

DEFAULT_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)
MAX_QUANTILES = 99
MAX_VARIABLES = 200


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _check_keys(params: dict[str, Any], allowed: set[str], computation: str) -> None:
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
    _check_keys(params, {"variables", "by", "quantiles"}, computation)
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
    _check_keys(params, {"row", "col"}, "crosstab")
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
    _check_keys(params, {"variable", "level"}, "count")
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
# node-side SQL
# --------------------------------------------------------------------------------------
def _key_expr(spec: ColumnSpec) -> str:
    if spec.type == "binary":
        return f"CAST(CAST({quote_ident(spec.name)} AS INTEGER) AS VARCHAR)"
    return f"CAST({quote_ident(spec.name)} AS VARCHAR)"


def _levels(
    spec: ColumnSpec, observed_raw: set[str | None], policy: SitePolicy, arg: str
) -> list[str]:
    """Declared levels (observed values must be among them) or the observed ones."""
    observed = {o for o in observed_raw if o is not None}
    if spec.levels is not None:
        if not observed <= set(spec.levels):
            raise DataError(
                f"{arg}: column {spec.name!r} holds {len(observed - set(spec.levels))} value(s) "
                f"outside its declared levels"
            )
        return list(spec.levels)
    if len(observed) > policy.max_levels:
        raise PolicyDenied(
            f"{arg}: variable {spec.name!r} has {len(observed)} levels at this site, more than "
            f"max_levels = {policy.max_levels}"
        )
    return sorted(observed)


def _chan(parts: Sequence[tuple[int, float, float]]) -> tuple[int, float, float]:
    """Pool (n, mean, M2) triples exactly (Chan, Golub & LeVeque's parallel update)."""
    parts = [p for p in parts if p[0] > 0]
    n = sum(p[0] for p in parts)
    if n == 0:
        return 0, 0.0, 0.0
    mean = math.fsum(p[0] * p[1] for p in parts) / n
    m2 = math.fsum(p[2] for p in parts) + math.fsum(p[0] * (p[1] - mean) ** 2 for p in parts)
    return n, mean, m2


def _run_summary(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
    computation: str,
) -> Release:
    variables: list[str] = params["variables"]
    by: str | None = params.get("by")
    quantiles: list[float] = params.get("quantiles", [])
    specs = {v: desc.column(v) for v in variables}
    numeric = [v for v in variables if specs[v].is_numeric]
    categorical = [v for v in variables if specs[v].is_categorical]
    B = policy.histogram_bins
    gexpr = _key_expr(desc.column(by)) if by else "CAST(NULL AS VARCHAR)"
    cols = [f"{gexpr} AS g"]
    cols += [f"CAST({quote_ident(v)} AS DOUBLE) AS n{i}" for i, v in enumerate(numeric)]
    cols += [f"{_key_expr(specs[v])} AS c{i}" for i, v in enumerate(categorical)]
    base = f"SELECT {', '.join(cols)} FROM data"
    aggs = ["count(*)"]
    for i in range(len(numeric)):
        aggs += [f"count(n{i})", f"avg(n{i})", f"var_pop(n{i})", f"min(n{i})", f"max(n{i})"]
    rows1 = con.execute(
        f"WITH base AS ({base}) SELECT g, {', '.join(aggs)} FROM base GROUP BY g"
    ).fetchall()
    parts = []
    for i in range(len(categorical)):
        parts.append(
            f"SELECT 'c' AS t, {i} AS vi, g, c{i} AS k, CAST(NULL AS BIGINT) AS b, count(*) AS n "
            f"FROM base GROUP BY g, c{i}"
        )
    grids: dict[str, tuple[float, float, int]] = {}
    if quantiles:
        for i, v in enumerate(numeric):
            low, high = specs[v].bounds  # type: ignore[misc]  # validate guarantees bounds
            grids[v] = (float(low), float(high), B)
            width = (float(high) - float(low)) / B
            binexpr = (
                f"LEAST(CAST(FLOOR((LEAST(GREATEST(n{i}, {float(low)!r}), {float(high)!r}) - "
                f"{float(low)!r}) / {width!r}) AS BIGINT), {B - 1})"
            )
            parts.append(
                f"SELECT 'h' AS t, {i} AS vi, g, CAST(NULL AS VARCHAR) AS k, {binexpr} AS b, "
                f"count(*) AS n FROM base WHERE n{i} IS NOT NULL GROUP BY g, b"
            )
    rows2 = (
        con.execute(f"WITH base AS ({base}) " + " UNION ALL ".join(parts)).fetchall()
        if parts
        else []
    )
    # groups
    if by:
        groups = _levels(desc.column(by), {r[0] for r in rows1}, policy, f"{computation}: 'by'") + [
            MISSING
        ]
    else:
        groups = [ALL]
    gi = {g: j for j, g in enumerate(groups)}

    def gidx(g: str | None) -> int:
        if not by:
            return gi[ALL]
        return gi[MISSING] if g is None else gi[g]

    C = len(groups)
    n_rows = np.zeros(C, dtype=np.int64)
    mom = np.zeros((len(numeric), 5, C))
    cnt_n = np.zeros((len(numeric), C), dtype=np.int64)
    mins = np.full((len(numeric), C), np.nan)
    maxs = np.full((len(numeric), C), np.nan)
    for r in rows1:
        j = gidx(r[0])
        n_rows[j] = int(r[1])
        for i in range(len(numeric)):
            n, mean, var, lo, hi = r[2 + 5 * i : 7 + 5 * i]
            cnt_n[i, j] = int(n)
            if n:
                mom[i, 0, j] = float(mean)
                mom[i, 1, j] = float(var) * int(n)
                mins[i, j], maxs[i, j] = float(lo), float(hi)
    hist = {v: np.zeros((C, B), dtype=np.int64) for v in grids}
    cat_obs: dict[int, dict[tuple[int, str | None], int]] = {i: {} for i in range(len(categorical))}
    for t, vi, g, k, b, n in rows2:
        j = gidx(g)
        if t == "c":
            cat_obs[vi][(j, k)] = int(n)
        else:
            hist[numeric[vi]][j, int(b)] += int(n)
    tables: dict[str, CountTable] = {"N": CountTable(("N",), tuple(groups), n_rows[None, :])}
    summaries: dict[str, NumericSummary] = {}
    for i, v in enumerate(numeric):
        key = f"var:{v}"
        tables[key] = CountTable(
            ("n", "missing"), tuple(groups), np.vstack([cnt_n[i], n_rows - cnt_n[i]]), margin_of="N"
        )
        h = hist.get(v)
        cells = tuple(
            CellMoments(
                n=int(cnt_n[i, j]),
                mean=float(mom[i, 0, j]),
                m2=float(mom[i, 1, j]),
                minimum=None if cnt_n[i, j] == 0 else float(mins[i, j]),
                maximum=None if cnt_n[i, j] == 0 else float(maxs[i, j]),
                hist=None if h is None else h[j],
            )
            for j in range(C)
        )
        overall = None
        if C > 1:
            n, mean, m2 = _chan([(c.n, c.mean, c.m2) for c in cells])
            nz = [c for c in cells if c.n > 0]
            overall = CellMoments(
                n=n,
                mean=mean,
                m2=m2,
                minimum=min((c.minimum for c in nz), default=None),  # type: ignore[type-var]
                maximum=max((c.maximum for c in nz), default=None),  # type: ignore[type-var]
                hist=None if h is None else h.sum(axis=0),
            )
        summaries[v] = NumericSummary(key, "n", cells, overall, grids.get(v))
    for i, v in enumerate(categorical):
        obs = cat_obs[i]
        levels = _levels(
            specs[v], {k for (_, k) in obs}, policy, f"{computation}: 'variables' entry {v!r}"
        )
        rows = [*levels, MISSING]
        ri = {lv: r for r, lv in enumerate(levels)}
        counts = np.zeros((len(rows), C), dtype=np.int64)
        for (j, k), n in obs.items():
            counts[len(levels) if k is None else ri[k], j] += n
        tables[f"var:{v}"] = CountTable(tuple(rows), tuple(groups), counts, margin_of="N")
    meta = {
        "variables": list(variables),
        "kinds": {v: specs[v].type for v in variables},
        "by": by,
    }
    return Release(computation, tables, summaries, meta)


def run_table1(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
) -> Release:
    """Aggregate a Table 1 in two DuckDB queries (see the module docstring)."""
    return _run_summary(con, desc, params, policy, "table1")


def run_describe(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
) -> Release:
    """Aggregate numeric summaries in two DuckDB queries."""
    return _run_summary(con, desc, params, policy, "describe")


def run_crosstab(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
) -> Release:
    """Counts of ``row`` x ``col`` (with a ``(missing)`` level each) in one query."""
    rs, cs = desc.column(params["row"]), desc.column(params["col"])
    res = con.execute(
        f"SELECT {_key_expr(rs)} AS r, {_key_expr(cs)} AS c, count(*) FROM data GROUP BY r, c"
    ).fetchall()
    rl = _levels(rs, {r for r, _, _ in res}, policy, "crosstab: 'row'") + [MISSING]
    cl = _levels(cs, {c for _, c, _ in res}, policy, "crosstab: 'col'") + [MISSING]
    counts = np.zeros((len(rl), len(cl)), dtype=np.int64)
    for r, c, n in res:
        counts[rl.index(MISSING if r is None else r), cl.index(MISSING if c is None else c)] += n
    meta = {"row": rs.name, "col": cs.name}
    return Release("crosstab", {"crosstab": CountTable(tuple(rl), tuple(cl), counts)}, meta=meta)


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
    if var is None:
        (n,) = con.execute("SELECT count(*) FROM data").fetchone()  # type: ignore[misc]
        table = CountTable(("patients",), (ALL,), np.array([[int(n)]]))
        return Release("count", {"count": table}, meta={"variable": None, "level": None})
    spec = desc.column(var)
    n_level, n_all = con.execute(
        f"SELECT count(*) FILTER (WHERE {_key_expr(spec)} = ?), count(*) FROM data", [level]
    ).fetchone()  # type: ignore[misc]
    table = CountTable(
        (str(level), "(other or missing)"),
        (ALL,),
        np.array([[int(n_level)], [int(n_all - n_level)]]),
    )
    return Release("count", {"count": table}, meta={"variable": var, "level": str(level)})


# --------------------------------------------------------------------------------------
# hub side
# --------------------------------------------------------------------------------------
def combine_table1(replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> Table1Result:
    """Pool the sites' disclosed Table 1 replies (see :class:`Table1Result`)."""
    return combine_summary(replies, params, Table1Result)  # type: ignore[return-value]


def combine_describe(replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> DescribeResult:
    """Pool the sites' disclosed numeric summaries (see :class:`DescribeResult`)."""
    return combine_summary(replies, params, DescribeResult)  # type: ignore[return-value]


register(
    Computation(
        "table1",
        "Table 1: N per group; numeric n/missing/mean/SD/quantiles; categorical counts and %",
        validate_table1,
        run_table1,
        combine_table1,
    )
)
register(
    Computation(
        "describe",
        "Numeric summaries (n, missing, mean, SD, quantiles with brackets), optionally by group",
        validate_describe,
        run_describe,
        combine_describe,
    )
)
register(
    Computation(
        "crosstab",
        "Counts of two categorical variables with margins",
        validate_crosstab,
        run_crosstab,
        CrosstabResult.combine,
    )
)
register(
    Computation(
        "count",
        "Number of patients, optionally where a categorical variable equals a level",
        validate_count,
        run_count,
        CountResult.combine,
    )
)
