"""Node-side SQL of the descriptive statistics: a fixed number of DuckDB queries per request.

For ``table1`` and ``describe`` (:func:`run_summary`), whatever the number of
variables and groups:

* one ``GROUP BY group`` scan for all patients counts and all numeric moments
  (``count``, ``avg``, ``var_pop * n`` -- DuckDB's variance is a numerically stable
  streaming update -- and min/max);
* one ``UNION ALL`` of ``GROUP BY group, key`` aggregations for all categorical
  level counts and all histograms on the fixed grid.

The per-group moments are combined into the overall with Chan et al.'s parallel
formula, the same one the hub uses across sites, so pooled means and SDs equal a
computation on the pooled rows up to floating-point rounding. The result is a
:class:`~healthfed.privacy.disclosure.Release` for the node's disclosure filter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from healthfed.compute.results import ALL, MISSING
from healthfed.data.descriptor import ColumnSpec, DatasetDescriptor
from healthfed.data.harmonise import canonical_unit
from healthfed.data.sql import quote_ident
from healthfed.errors import DataError, PolicyDenied
from healthfed.policy import SitePolicy
from healthfed.privacy.cellkey import KEY_MOD, active_record_keys
from healthfed.privacy.disclosure import CellMoments, CountTable, NumericSummary, Release

__all__ = ["key_expr", "key_sum", "observed_levels", "record_key_sql", "run_summary"]

_ROWS = "healthfed_summary_rows"  # the request's rows, materialised once (see _scan)


def key_expr(spec: ColumnSpec) -> str:
    """The column as the VARCHAR key its counts are grouped by (binary as ``'0'``/``'1'``)."""
    if spec.type == "binary":
        return f"CAST(CAST({quote_ident(spec.name)} AS INTEGER) AS VARCHAR)"
    return f"CAST({quote_ident(spec.name)} AS VARCHAR)"


def record_key_sql(desc: DatasetDescriptor) -> str:
    """The patient's secret record key (cell key method) as a DuckDB BIGINT expression."""
    return active_record_keys().sql(quote_ident(desc.id_column))


def key_sum(expr: str = "rk") -> str:
    """SQL aggregate: a cell's key, the sum of its records' keys modulo ``2^32``."""
    return f"CAST(COALESCE(sum({expr}), 0) % {KEY_MOD} AS BIGINT)"


def observed_levels(
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


@dataclass
class _Request:
    """A validated summary request with its column specs split by kind."""

    desc: DatasetDescriptor
    computation: str
    variables: list[str]
    by: str | None
    quantiles: list[float]
    specs: dict[str, ColumnSpec]
    numeric: list[str] = field(init=False)
    categorical: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.numeric = [v for v in self.variables if self.specs[v].is_numeric]
        self.categorical = [v for v in self.variables if self.specs[v].is_categorical]

    def base_sql(self) -> str:
        """One row per patient: the group key, numeric values as DOUBLE, categorical keys."""
        by = self.by
        gexpr = key_expr(self.desc.column(by)) if by else "CAST(NULL AS VARCHAR)"
        cols = [f"{gexpr} AS g", f"{record_key_sql(self.desc)} AS rk"]
        cols += [f"CAST({quote_ident(v)} AS DOUBLE) AS n{i}" for i, v in enumerate(self.numeric)]
        cols += [f"{key_expr(self.specs[v])} AS c{i}" for i, v in enumerate(self.categorical)]
        return f"SELECT {', '.join(cols)} FROM data"

    def histogram_parts(self, bins: int) -> tuple[list[str], dict[str, tuple[float, float, int]]]:
        """``UNION ALL`` parts counting each numeric variable on its grid, and the grids."""
        parts: list[str] = []
        grids: dict[str, tuple[float, float, int]] = {}
        if not self.quantiles:
            return parts, grids
        for i, v in enumerate(self.numeric):
            low, high = self.specs[v].bounds  # type: ignore[misc]  # validate guarantees bounds
            grids[v] = (float(low), float(high), bins)
            width = (float(high) - float(low)) / bins
            binexpr = (
                f"LEAST(CAST(FLOOR((LEAST(GREATEST(n{i}, {float(low)!r}), {float(high)!r}) - "
                f"{float(low)!r}) / {width!r}) AS BIGINT), {bins - 1})"
            )
            parts.append(
                f"SELECT 'h' AS t, {i} AS vi, g, CAST(NULL AS VARCHAR) AS k, {binexpr} AS b, "
                f"count(*) AS n, CAST(0 AS BIGINT) AS kk FROM {_ROWS} WHERE n{i} IS NOT NULL "
                f"GROUP BY g, b"
            )
        return parts, grids


@dataclass
class _Scan:
    """The two queries' answers, laid out per variable and group column."""

    groups: list[str]
    n_rows: np.ndarray  # (C,) patients per group
    count: np.ndarray  # (V, C) non-missing values per numeric variable
    mean: np.ndarray  # (V, C)
    m2: np.ndarray  # (V, C) sum of squared deviations
    mins: np.ndarray  # (V, C)
    maxs: np.ndarray  # (V, C)
    hist: dict[str, np.ndarray]  # variable -> (C, bins)
    levels: dict[int, dict[tuple[int, str | None], int]]  # categorical -> (group, key) -> n
    grids: dict[str, tuple[float, float, int]]
    # cell keys (sums of record keys mod 2^32) of the same cells
    n_keys: np.ndarray  # (C,)
    count_keys: np.ndarray  # (V, C)
    level_keys: dict[int, dict[tuple[int, str | None], int]]


def _scan(con: duckdb.DuckDBPyConnection, req: _Request, policy: SitePolicy) -> _Scan:
    """Run the two queries and sort their rows into per-group arrays."""
    bins = policy.histogram_bins
    base = req.base_sql()
    aggs = ["count(*)", key_sum()]
    for i in range(len(req.numeric)):
        aggs += [f"count(n{i})", f"avg(n{i})", f"var_pop(n{i})", f"min(n{i})", f"max(n{i})"]
        aggs += [key_sum(f"CASE WHEN n{i} IS NOT NULL THEN rk END")]
    # The rows once, in a temporary table: every row's record key is a sha256, and a
    # CTE would compute it again for each of the UNION's parts (3x the scan's cost).
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_ROWS} AS {base}")
    rows1 = con.execute(f"SELECT g, {', '.join(aggs)} FROM {_ROWS} GROUP BY g").fetchall()
    parts = [
        f"SELECT 'c' AS t, {i} AS vi, g, c{i} AS k, CAST(NULL AS BIGINT) AS b, count(*) AS n, "
        f"{key_sum()} AS kk FROM {_ROWS} GROUP BY g, c{i}"
        for i in range(len(req.categorical))
    ]
    hist_parts, grids = req.histogram_parts(bins)
    parts += hist_parts
    rows2 = con.execute(" UNION ALL ".join(parts)).fetchall() if parts else []
    con.execute(f"DROP TABLE {_ROWS}")
    if req.by:
        arg = f"{req.computation}: 'by'"
        seen = {r[0] for r in rows1}
        groups = observed_levels(req.desc.column(req.by), seen, policy, arg) + [MISSING]
    else:
        groups = [ALL]
    gi = {g: j for j, g in enumerate(groups)}

    def gidx(g: str | None) -> int:
        if not req.by:
            return gi[ALL]
        return gi[MISSING] if g is None else gi[g]

    V, C = len(req.numeric), len(groups)
    scan = _Scan(
        groups=groups,
        n_rows=np.zeros(C, dtype=np.int64),
        count=np.zeros((V, C), dtype=np.int64),
        mean=np.zeros((V, C)),
        m2=np.zeros((V, C)),
        mins=np.full((V, C), np.nan),
        maxs=np.full((V, C), np.nan),
        hist={v: np.zeros((C, bins), dtype=np.int64) for v in grids},
        levels={i: {} for i in range(len(req.categorical))},
        grids=grids,
        n_keys=np.zeros(C, dtype=np.int64),
        count_keys=np.zeros((V, C), dtype=np.int64),
        level_keys={i: {} for i in range(len(req.categorical))},
    )
    for r in rows1:
        j = gidx(r[0])
        scan.n_rows[j], scan.n_keys[j] = int(r[1]), int(r[2])
        for i in range(V):
            n, mean, var, lo, hi, kk = r[3 + 6 * i : 9 + 6 * i]
            scan.count_keys[i, j] = int(kk)
            scan.count[i, j] = int(n)
            if n:
                scan.mean[i, j] = float(mean)
                scan.m2[i, j] = float(var) * int(n)
                scan.mins[i, j], scan.maxs[i, j] = float(lo), float(hi)
    for t, vi, g, k, b, n, kk in rows2:
        j = gidx(g)
        if t == "c":
            scan.levels[vi][(j, k)] = int(n)
            scan.level_keys[vi][(j, k)] = int(kk)
        else:
            scan.hist[req.numeric[vi]][j, int(b)] += int(n)
    return scan


def _numeric_summary(scan: _Scan, i: int, v: str) -> tuple[CountTable, NumericSummary]:
    """The n/missing table of numeric variable ``v`` and its per-group moments."""
    key = f"var:{v}"
    groups, C = tuple(scan.groups), len(scan.groups)
    cnt_n = scan.count[i]
    keys = np.vstack([scan.count_keys[i], (scan.n_keys - scan.count_keys[i]) % KEY_MOD])
    table = CountTable(
        ("n", "missing"),
        groups,
        np.vstack([cnt_n, scan.n_rows - cnt_n]),
        margin_of="N",
        keys=keys,
    )
    h = scan.hist.get(v)
    cells = tuple(
        CellMoments(
            n=int(cnt_n[j]),
            mean=float(scan.mean[i, j]),
            m2=float(scan.m2[i, j]),
            minimum=None if cnt_n[j] == 0 else float(scan.mins[i, j]),
            maximum=None if cnt_n[j] == 0 else float(scan.maxs[i, j]),
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
    return table, NumericSummary(key, "n", cells, overall, scan.grids.get(v))


def _categorical_table(
    scan: _Scan, i: int, spec: ColumnSpec, policy: SitePolicy, arg: str
) -> CountTable:
    """Level x group counts of categorical variable ``spec`` with a ``(missing)`` row."""
    obs = scan.levels[i]
    levels = observed_levels(spec, {k for (_, k) in obs}, policy, arg)
    rows = [*levels, MISSING]
    ri = {lv: r for r, lv in enumerate(levels)}
    counts = np.zeros((len(rows), len(scan.groups)), dtype=np.int64)
    keys = np.zeros_like(counts)
    for (j, k), n in obs.items():
        r = len(levels) if k is None else ri[k]
        counts[r, j] += n
        keys[r, j] = (int(keys[r, j]) + scan.level_keys[i][(j, k)]) % KEY_MOD
    return CountTable(tuple(rows), tuple(scan.groups), counts, margin_of="N", keys=keys)


def run_summary(
    con: duckdb.DuckDBPyConnection,
    desc: DatasetDescriptor,
    params: dict[str, Any],
    policy: SitePolicy,
    computation: str,
) -> Release:
    """The ``table1``/``describe`` release: N per group, numeric moments, level counts."""
    variables: list[str] = params["variables"]
    req = _Request(
        desc,
        computation,
        variables,
        params.get("by"),
        params.get("quantiles", []),
        {v: desc.column(v) for v in variables},
    )
    scan = _scan(con, req, policy)
    tables: dict[str, CountTable] = {
        "N": CountTable(("N",), tuple(scan.groups), scan.n_rows[None, :], keys=scan.n_keys[None, :])
    }
    summaries: dict[str, NumericSummary] = {}
    for i, v in enumerate(req.numeric):
        tables[f"var:{v}"], summaries[v] = _numeric_summary(scan, i, v)
    for i, v in enumerate(req.categorical):
        arg = f"{computation}: 'variables' entry {v!r}"
        tables[f"var:{v}"] = _categorical_table(scan, i, req.specs[v], policy, arg)
    meta = {
        "variables": list(variables),
        "kinds": {v: req.specs[v].type for v in variables},
        "by": req.by,
        "columns": column_labels(desc, [*variables, *([req.by] if req.by else [])]),
    }
    return Release(computation, tables, summaries, meta)


def column_labels(desc: DatasetDescriptor, names: list[str]) -> dict[str, Any]:
    """Public descriptor metadata for result labels: description, unit (canonical), levels.

    The unit is the one the released values are in: the canonical unit of a
    harmonised variable, else the descriptor's.
    """
    out: dict[str, Any] = {}
    for v in names:
        spec = desc.column(v)
        out[v] = {
            "label": spec.description or None,
            "unit": canonical_unit(v) or spec.unit,
            "levels": list(spec.levels) if spec.levels else None,
        }
    return out
