"""The node's disclosure filter: the only door through which aggregates leave a node.

A computation's ``run`` returns a :class:`Release` -- a typed structure made of
parts this filter understands -- and :func:`disclose` turns it into the plain
JSON-able dict that is sent to the hub. Anything else is refused (fail closed):
the filter never serialises an object it cannot reason about.

Parts of a release
------------------
:class:`CountTable`
    Counts of an R x C table. They are released *with margins* (row totals,
    column totals, grand total). A table may declare ``margin_of``: another
    1 x C table of the same release whose cells are its column totals (e.g. the
    "N per group" row of a Table 1 is every variable's column margin). Linked
    margins are the *same* released number, so their suppression state is
    shared and audited jointly.
:class:`NumericSummary`
    Per-cell moments (n, mean, M2), optional min/max and an optional histogram
    over a fixed grid, each tied to one count cell (the non-missing count of a
    variable in a group) plus an optional overall cell tied to the row total.

Rules applied (DataSHIELD's ``nfilter.tab`` / ``nfilter.subset`` idea, stricter)
-----------------------------------------------------------------------------
1. Primary suppression: a count ``0 < n < min_cell_count`` is suppressed (``None``
   in the output, listed, never reported as 0). Zeros are released.
2. Secondary suppression, heuristic: for every additivity line (a row or a
   column of a table with its total), if the total is released the suppressed
   parts must be >= 2 and sum to >= ``min_cell_count``; if the total is
   suppressed at least one part must be too. Otherwise the smallest released
   non-zero cell on the line is suppressed (interior cells before margins,
   because a margin is shared by many lines).
3. Exact audit: for every suppressed cell two linear programs (``x >= 0``, all
   additivity constraints, released values fixed) give the smallest and largest
   value an attacker could infer. If they coincide the cell is recoverable and
   more is suppressed (first a neighbour on one of its lines, then its whole
   table, finally everything) until the audit passes. The constraint matrix of
   a table with margins is totally unimodular, so LP bounds are integers and a
   width > 0 means at least two integer solutions.
4. Statistics (mean, SD via M2, histogram bins) of a cell are released only when
   its count is released and >= ``min_subset``. Complement rule: when the
   overall statistic of a partition is released, the cells whose statistics are
   withheld must be >= 2 and hold >= ``min_subset`` patients together (otherwise
   the smallest released cells are withheld too, or the overall), so nothing is
   derivable by subtraction.
5. Histograms: all released cells of one variable share one set of merged bins
   (grid bins merged left to right until every released series -- and the
   overall-minus-released complement -- has 0-or->=``min_subset`` patients per
   merged bin), so bins cannot be differenced either.
6. Min/max only if ``policy.allow_min_max``.

Everything released is converted to Python ``int``/``float``/``str``/``None``;
non-finite numbers are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linprog

from healthfed.errors import PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.model_release import ModelStatistics, disclose_model_statistics

RELEASE_FORMAT = "healthfed.release/1"

__all__ = [
    "CellMoments",
    "CountTable",
    "NumericSummary",
    "Release",
    "disclose",
    "merge_histogram_bins",
]


# --------------------------------------------------------------------------------------
# The typed release
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CountTable:
    """Counts of an R x C table, released with row/column/grand totals.

    Parameters
    ----------
    rows, cols
        Labels of the rows and columns (e.g. levels, groups).
    counts
        Non-negative integer counts, shape ``(len(rows), len(cols))``.
    margin_of
        Key of a 1 x C table in the same release whose cells are this table's
        column totals (shared, hence jointly suppressed and audited).
    """

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    counts: np.ndarray
    margin_of: str | None = None

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 2 or counts.shape != (len(self.rows), len(self.cols)):
            raise PrivacyError(
                f"count table shape {counts.shape} does not match {len(self.rows)} rows x "
                f"{len(self.cols)} columns"
            )
        if counts.size and (not np.all(np.isfinite(counts)) or np.any(counts < 0)):
            raise PrivacyError("count table holds negative or non-finite counts")
        if counts.size and np.any(counts != np.round(counts)):
            raise PrivacyError("count table holds non-integer counts")
        object.__setattr__(self, "counts", counts.astype(np.int64))
        object.__setattr__(self, "rows", tuple(str(r) for r in self.rows))
        object.__setattr__(self, "cols", tuple(str(c) for c in self.cols))


@dataclass(frozen=True)
class CellMoments:
    """Moments of one variable in one cell: n, mean, M2 = sum((x - mean)^2).

    ``hist`` holds counts on the summary's fixed grid (clipped to declared bounds).
    """

    n: int
    mean: float
    m2: float
    minimum: float | None = None
    maximum: float | None = None
    hist: np.ndarray | None = None


@dataclass(frozen=True)
class NumericSummary:
    """Statistics of a numeric variable per column of a count table.

    Parameters
    ----------
    table, row
        The count table and its row whose cells are these cells' ``n``
        (the non-missing count); the statistic is released only if that count is.
    cells
        One :class:`CellMoments` per column of the table.
    overall
        Moments over all columns (tied to the row total); ``None`` when the
        table has one column (then ``cells[0]`` is the overall).
    grid
        ``(low, high, bins)`` of the histograms, from the declared bounds; ``None``
        when no histogram is released.
    """

    table: str
    row: str
    cells: tuple[CellMoments, ...]
    overall: CellMoments | None = None
    grid: tuple[float, float, int] | None = None


@dataclass(frozen=True)
class Release:
    """Everything a computation wants to release, before the filter.

    ``meta`` carries request-level public facts (variable kinds, the grouping
    variable) and may hold only strings, booleans, ``None`` and lists/dicts of
    those -- never numbers, so no statistic can bypass the rules through it.
    """

    computation: str
    tables: dict[str, CountTable]
    numeric: dict[str, NumericSummary] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# The constraint system of all count tables of a release
# --------------------------------------------------------------------------------------
@dataclass
class _System:
    values: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    table_of: list[str] = field(default_factory=list)
    lines: list[tuple[list[int], int]] = field(default_factory=list)
    cell: dict[str, np.ndarray] = field(default_factory=dict)
    row_total: dict[str, list[int]] = field(default_factory=dict)
    col_total: dict[str, list[int]] = field(default_factory=dict)
    grand: dict[str, int] = field(default_factory=dict)

    def new(self, value: int, label: str, table: str) -> int:
        self.values.append(int(value))
        self.labels.append(label)
        self.table_of.append(table)
        return len(self.values) - 1

    def same(self, var: int, value: int, what: str) -> int:
        if self.values[var] != int(value):
            raise PrivacyError(f"{what} does not equal the table it is the margin of")
        return var


def _build_system(tables: Mapping[str, CountTable]) -> _System:
    sys = _System()
    order = [k for k, t in tables.items() if t.margin_of is None]
    order += [k for k, t in tables.items() if t.margin_of is not None]
    for key in order:
        t = tables[key]
        R, C = t.counts.shape
        if R == 0 or C == 0:
            raise PrivacyError(f"count table {key!r} is empty")
        cnt = t.counts
        colsum = cnt.sum(axis=0)
        rowsum = cnt.sum(axis=1)
        total = int(cnt.sum())
        if t.margin_of is not None:
            base = tables.get(t.margin_of)
            if base is None or base.margin_of is not None or base.counts.shape != (1, C):
                raise PrivacyError(
                    f"table {key!r}: margin_of {t.margin_of!r} is not a 1 x {C} table"
                )
            if base.cols != t.cols:
                raise PrivacyError(f"table {key!r}: columns differ from its margin {t.margin_of!r}")
            grand = sys.same(sys.grand[t.margin_of], total, f"table {key!r} grand total")
            ct = [
                sys.same(int(sys.cell[t.margin_of][0, j]), colsum[j], f"table {key!r} column total")
                for j in range(C)
            ]
        else:
            grand = sys.new(total, f"{key}[total]", key)
            ct = (
                [grand]
                if C == 1
                else [sys.new(colsum[j], f"{key}[total, {t.cols[j]}]", key) for j in range(C)]
            )
        cell = np.empty((R, C), dtype=np.int64)
        if R == 1:
            cell[0, :] = ct
            rt = [grand]
        else:
            for i in range(R):
                for j in range(C):
                    cell[i, j] = sys.new(cnt[i, j], f"{key}[{t.rows[i]}, {t.cols[j]}]", key)
            rt = (
                [int(cell[i, 0]) for i in range(R)]
                if C == 1
                else [sys.new(rowsum[i], f"{key}[{t.rows[i]}, total]", key) for i in range(R)]
            )
        if C > 1:
            sys.lines += [([int(v) for v in cell[i, :]], rt[i]) for i in range(R)]
        if R > 1:
            sys.lines += [([int(v) for v in cell[:, j]], ct[j]) for j in range(C)]
        if R > 1 and C > 1:
            sys.lines += [(list(rt), grand), (list(ct), grand)]
        sys.cell[key], sys.row_total[key], sys.col_total[key], sys.grand[key] = cell, rt, ct, grand
    return sys


class _Unfixable(Exception):
    def __init__(self, var: int) -> None:
        self.var = var


def _heuristic(sys: _System, supp: np.ndarray, k: int, totals: set[int]) -> None:
    """Line rules of secondary suppression, iterated to a fixed point."""
    vals = np.asarray(sys.values)
    changed = True
    while changed:
        changed = False
        for parts, total in sys.lines:
            sp = [p for p in parts if supp[p]]
            if supp[total]:
                ok = len(sp) >= 1
            else:
                ok = not sp or (len(sp) >= 2 and int(vals[sp].sum()) >= k)
            if ok:
                continue
            cands = [p for p in parts if not supp[p] and vals[p] > 0]
            if not cands:
                raise _Unfixable(sp[0] if sp else total)
            pick = min(cands, key=lambda p: (p in totals, int(vals[p]), p))
            supp[pick] = True
            changed = True


def _determined(sys: _System, supp: np.ndarray) -> int | None:
    """The first suppressed cell an LP over the released numbers pins down, or None."""
    vals = np.asarray(sys.values, dtype=float)
    sup = np.flatnonzero(supp)
    if sup.size == 0:
        return None
    # connected components of suppressed cells through lines
    parent = {int(sv): int(sv) for sv in sup}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    rows: list[tuple[list[int], list[float], float]] = []
    for parts, total in sys.lines:
        members = [p for p in parts if supp[p]] + ([total] if supp[total] else [])
        if not members:
            continue
        coef = [1.0] * sum(1 for p in parts if supp[p]) + ([-1.0] if supp[total] else [])
        rhs = -float(sum(vals[p] for p in parts if not supp[p]))
        rhs += 0.0 if supp[total] else float(vals[total])
        rows.append((members, coef, rhs))
        for m in members[1:]:
            parent[find(m)] = find(members[0])
    comps: dict[int, list[int]] = {}
    for sv in sup:
        comps.setdefault(find(int(sv)), []).append(int(sv))
    for comp in comps.values():
        index = {v: i for i, v in enumerate(comp)}
        crow = [r for r in rows if r[0][0] in index]
        A = np.zeros((len(crow), len(comp)))
        b = np.zeros(len(crow))
        for r, (members, coef, rhs) in enumerate(crow):
            for m, c in zip(members, coef, strict=True):
                A[r, index[m]] += c
            b[r] = rhs
        for v in comp:
            obj = np.zeros(len(comp))
            obj[index[v]] = 1.0
            kw: dict[str, Any] = {"bounds": (0, None), "method": "highs"}
            if len(crow):
                kw.update(A_eq=A, b_eq=b)
            lo = linprog(obj, **kw)
            if lo.status != 0:
                return v  # fail closed: treat an unsolvable audit as disclosure
            if lo.fun < vals[v] - 0.5:
                continue
            hi = linprog(-obj, **kw)
            if hi.status == 3:  # unbounded above
                continue
            if hi.status != 0 or -hi.fun - lo.fun < 0.5:
                return v
    return None


def _suppress_counts(sys: _System, policy: SitePolicy) -> np.ndarray:
    """Primary + secondary suppression with exact audit; returns the suppressed mask."""
    k = policy.min_cell_count
    vals = np.asarray(sys.values)
    supp = (vals > 0) & (vals < k)
    if not supp.any():
        return supp
    totals = {t for _, t in sys.lines}
    lines_of: dict[int, list[int]] = {}
    for li, (parts, total) in enumerate(sys.lines):
        for v in [*parts, total]:
            lines_of.setdefault(v, []).append(li)
    for _ in range(4 * len(vals) + 4):
        try:
            _heuristic(sys, supp, k, totals)
        except _Unfixable as exc:
            _suppress_tables(sys, supp, exc.var)
            continue
        bad = _determined(sys, supp)
        if bad is None:
            return supp
        cands = {
            p
            for li in lines_of.get(bad, [])
            for p in [*sys.lines[li][0], sys.lines[li][1]]
            if not supp[p] and vals[p] > 0
        }
        if cands:
            supp[min(cands, key=lambda p: (p in totals, int(vals[p]), p))] = True
        else:
            before = int(supp.sum())
            _suppress_tables(sys, supp, bad)
            if int(supp.sum()) == before:
                supp[:] = True  # last resort: nothing of this release is released
                return supp
    supp[:] = True  # pragma: no cover - the loop always terminates earlier
    return supp


def _suppress_tables(sys: _System, supp: np.ndarray, var: int) -> None:
    """Suppress every cell (and margin) of the table(s) that hold ``var``."""
    owners = {sys.table_of[var]} | {key for key in sys.cell if var in _table_vars(sys, key)}
    for key in owners:
        for v in _table_vars(sys, key):
            supp[v] = True


def _table_vars(sys: _System, key: str) -> list[int]:
    return [
        *(int(v) for v in sys.cell[key].ravel()),
        *sys.row_total[key],
        *sys.col_total[key],
        sys.grand[key],
    ]


# --------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------
def merge_histogram_bins(
    series: np.ndarray, complement: np.ndarray | None, min_subset: int
) -> list[int]:
    """Boundaries (grid indices) of merged bins shared by several histograms.

    Grid bins are merged left to right until every series holds >= ``min_subset``
    values in the current merged bin and the complement holds 0 or >=
    ``min_subset``; the remainder joins the last merged bin (and merging continues
    leftwards if the complement then breaks the rule).

    Parameters
    ----------
    series
        Shape ``(S, B)``: grid counts of each released cell; every row must total
        >= ``min_subset``.
    complement
        Shape ``(B,)``: counts of the withheld cells (overall minus released), or None.

    Returns
    -------
    list of int
        ``[0, i1, ..., B]``: merged bin ``m`` is grid bins ``[b[m], b[m+1])``.
    """
    series = np.atleast_2d(np.asarray(series, dtype=np.int64))
    B = series.shape[1]
    comp = np.zeros(B, dtype=np.int64) if complement is None else np.asarray(complement)
    bounds = [0]
    acc = np.zeros(series.shape[0], dtype=np.int64)
    acc_c = 0
    for b in range(B):
        acc += series[:, b]
        acc_c += int(comp[b])
        if np.all(acc >= min_subset) and (acc_c == 0 or acc_c >= min_subset):
            bounds.append(b + 1)
            acc[:] = 0
            acc_c = 0
    if bounds[-1] != B:
        if len(bounds) == 1:
            raise PrivacyError("a histogram holds fewer values than the minimum subset")
        bounds[-1] = B
    while len(bounds) > 2:
        last = int(comp[bounds[-2] : bounds[-1]].sum())
        if last == 0 or last >= min_subset:
            break
        del bounds[-2]
    return bounds


# --------------------------------------------------------------------------------------
# disclose
# --------------------------------------------------------------------------------------
def _num(x: Any) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise PrivacyError("a statistic to be released is not finite")
    return v


def _meta_ok(x: Any) -> bool:
    if x is None or isinstance(x, str | bool):
        return True
    if isinstance(x, list | tuple):
        return all(_meta_ok(v) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _meta_ok(v) for k, v in x.items())
    return False


def disclose(release: Release | ModelStatistics, policy: SitePolicy) -> dict[str, Any]:
    """Apply the site's disclosure rules and return the only thing that leaves the node.

    Parameters
    ----------
    release
        What a computation's ``run`` produced: a :class:`Release`, or the model
        computations' :class:`~healthfed.privacy.model_release.ModelStatistics`
        (checked by its own filter, ``disclose_model_statistics``).
    policy
        The site's policy (``min_cell_count``, ``min_subset``, ``allow_min_max``).

    Returns
    -------
    dict
        JSON-able: ``{"format", "computation", "meta", "tables", "numeric",
        "suppressed", "suppressed_cells"}``. Suppressed values are ``None``.

    Raises
    ------
    PrivacyError
        ``release`` is neither a :class:`Release` nor ``ModelStatistics`` (or is
        internally inconsistent, or a rule cannot be met): nothing is released.
    """
    if isinstance(release, ModelStatistics):
        return disclose_model_statistics(release, policy)
    if not isinstance(release, Release):
        raise PrivacyError(
            f"disclosure filter refused a {type(release).__name__}: only Release objects leave a node"
        )
    if not isinstance(release.tables, dict) or not all(
        isinstance(t, CountTable) for t in release.tables.values()
    ):
        raise PrivacyError("release.tables must map names to CountTable")
    if not isinstance(release.numeric, dict) or not all(
        isinstance(s, NumericSummary) for s in release.numeric.values()
    ):
        raise PrivacyError("release.numeric must map names to NumericSummary")
    if not isinstance(release.meta, dict) or not _meta_ok(release.meta):
        raise PrivacyError("release.meta may hold only strings, booleans and None")
    sys = _build_system(release.tables)
    supp = _suppress_counts(sys, policy) if sys.values else np.zeros(0, dtype=bool)
    vals = sys.values
    suppressed: list[str] = [sys.labels[v] for v in np.flatnonzero(supp)]

    def out(v: int) -> int | None:
        return None if supp[v] else int(vals[v])

    tables_out: dict[str, Any] = {}
    for key, t in release.tables.items():
        cell = sys.cell[key]
        tables_out[key] = {
            "rows": list(t.rows),
            "cols": list(t.cols),
            "counts": [[out(int(v)) for v in row] for row in cell],
            "row_totals": [out(v) for v in sys.row_total[key]],
            "col_totals": [out(v) for v in sys.col_total[key]],
            "total": out(sys.grand[key]),
        }
    numeric_out: dict[str, Any] = {}
    for key, ns in release.numeric.items():
        numeric_out[key] = _disclose_numeric(key, ns, release.tables, sys, supp, policy, suppressed)
    result = {
        "format": RELEASE_FORMAT,
        "computation": str(release.computation),
        "meta": release.meta,
        "tables": tables_out,
        "numeric": numeric_out,
        "suppressed": suppressed,
        "suppressed_cells": len(suppressed),
    }
    _final_check(tables_out, policy)
    return result


def _final_check(tables_out: dict[str, Any], policy: SitePolicy) -> None:
    """Defence in depth: no released count may lie in 1..min_cell_count-1."""
    k = policy.min_cell_count
    for key, t in tables_out.items():
        flat = [v for row in t["counts"] for v in row]
        flat += [*t["row_totals"], *t["col_totals"], t["total"]]
        if any(v is not None and 0 < v < k for v in flat):
            raise PrivacyError(f"table {key!r}: a small count escaped suppression")


def _disclose_numeric(
    key: str,
    ns: NumericSummary,
    tables: Mapping[str, CountTable],
    sys: _System,
    supp: np.ndarray,
    policy: SitePolicy,
    suppressed: list[str],
) -> dict[str, Any]:
    t = tables.get(ns.table)
    if t is None or ns.row not in t.rows:
        raise PrivacyError(f"numeric summary {key!r} is not tied to a released count row")
    i = t.rows.index(ns.row)
    C = len(t.cols)
    if len(ns.cells) != C:
        raise PrivacyError(f"numeric summary {key!r} has {len(ns.cells)} cells for {C} columns")
    cell_var = [int(v) for v in sys.cell[ns.table][i, :]]
    for j, c in enumerate(ns.cells):
        if int(c.n) != int(t.counts[i, j]):
            raise PrivacyError(f"numeric summary {key!r}: n differs from its count cell")
    m = policy.min_subset
    n = np.array([int(c.n) for c in ns.cells])
    rel = np.array([not supp[v] and n[j] >= m for j, v in enumerate(cell_var)])
    overall = ns.overall if C > 1 else None
    overall_rel = False
    if overall is not None:
        if int(overall.n) != int(n.sum()):
            raise PrivacyError(f"numeric summary {key!r}: overall n differs from its row total")
        overall_rel = not supp[sys.row_total[ns.table][i]] and int(overall.n) >= m
        if overall_rel:
            # complement rule: withheld cells (with patients) >= 2 and >= min_subset together
            while True:
                held = [j for j in range(C) if not rel[j] and n[j] > 0]
                if not held or (len(held) >= 2 and int(n[held].sum()) >= m):
                    break
                cands = [j for j in range(C) if rel[j]]
                if not cands:
                    overall_rel = False
                    break
                rel[min(cands, key=lambda j: (n[j], j))] = False
    for j in range(C):
        if not rel[j] and n[j] > 0 and not supp[cell_var[j]]:
            suppressed.append(f"{key}: statistics [{t.cols[j]}]")
    if overall is not None and not overall_rel and int(overall.n) > 0:
        if not supp[sys.row_total[ns.table][i]]:
            suppressed.append(f"{key}: statistics [overall]")
    # Histograms. Cells with withheld neighbours share one set of merged bins with the
    # overall and the complement, so nothing can be differenced; otherwise each
    # released cell is merged on its own and no overall histogram is released (the
    # hub pools the groups' histograms, which partition the overall).
    bounds: dict[int, list[int]] = {}  # column index (C = overall) -> merged bin bounds
    if ns.grid is not None:
        low, high, bins = float(ns.grid[0]), float(ns.grid[1]), int(ns.grid[2])
        width = (high - low) / bins
        hists = []
        for c in ns.cells:
            if c.hist is None or len(c.hist) != bins:
                raise PrivacyError(f"numeric summary {key!r}: histogram does not match its grid")
            hists.append(np.asarray(c.hist, dtype=np.int64))
        for j, h in enumerate(hists):
            if int(h.sum()) != n[j]:
                raise PrivacyError(f"numeric summary {key!r}: histogram total differs from n")
        released = [j for j in range(C) if rel[j]]
        held = [j for j in range(C) if not rel[j] and n[j] > 0]
        if overall_rel and overall is not None and held:
            if overall.hist is None or len(overall.hist) != bins:
                raise PrivacyError(f"numeric summary {key!r}: overall histogram missing")
            oh = np.asarray(overall.hist, dtype=np.int64)
            if int(oh.sum()) != int(overall.n):
                raise PrivacyError(f"numeric summary {key!r}: histogram total differs from n")
            series = [hists[j] for j in released] + [oh]
            complement = oh - (np.sum([hists[j] for j in released], axis=0) if released else 0)
            shared = merge_histogram_bins(np.vstack(series), complement, m)
            bounds = dict.fromkeys([*released, C], shared)
        else:
            bounds = {j: merge_histogram_bins(hists[j][None, :], None, m) for j in released}

    def cell_out(c: CellMoments, j: int) -> dict[str, Any]:
        d: dict[str, Any] = {"n": int(c.n), "mean": _num(c.mean), "m2": _num(max(c.m2, 0.0))}
        if policy.allow_min_max and c.minimum is not None and c.maximum is not None:
            d["min"], d["max"] = _num(c.minimum), _num(c.maximum)
        if j in bounds and c.hist is not None:
            bb = bounds[j]
            h = np.asarray(c.hist, dtype=np.int64)
            d["hist"] = {
                "edges": [low + b * width if b < bins else high for b in bb],
                "counts": [int(h[a:b].sum()) for a, b in zip(bb[:-1], bb[1:], strict=True)],
            }
        return d

    return {
        "table": ns.table,
        "row": ns.row,
        "grid": None
        if ns.grid is None
        else [float(ns.grid[0]), float(ns.grid[1]), int(ns.grid[2])],
        "cells": [cell_out(c, j) if rel[j] else None for j, c in enumerate(ns.cells)],
        "overall": cell_out(overall, C) if overall is not None and overall_rel else None,
    }
