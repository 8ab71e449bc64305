"""Disclosure of numeric summaries: statistics and histograms tied to count cells (rules 4-6).

4. Statistics (mean, SD via M2, histogram bins) of a cell are released only when
   its count is released and >= ``min_subset``. Complement rule: when the overall
   statistic of a partition is released, the cells whose statistics are withheld
   must be >= 2 and hold >= ``min_subset`` patients together (otherwise the
   smallest released cells are withheld too, or the overall), so nothing is
   derivable by subtraction.
5. Histograms: all released cells of one variable share one set of merged bins
   (grid bins merged left to right until every released series -- and the
   overall-minus-released complement -- has 0-or->=``min_subset`` patients per
   merged bin), so bins cannot be differenced either.
6. Min/max only if ``policy.allow_min_max``.

Under cell key perturbation (:mod:`healthfed.privacy.cellkey`) a released
cell's ``n`` is its count cell's perturbed value (the same number the count
table releases), and its mean and M2 carry the cell key's magnitude noise.
The rules above are decided on the true counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from healthfed.errors import PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.cell_constraints import CellSystem
from healthfed.privacy.cellkey import CellKeys, magnitude_noise
from healthfed.privacy.release import CellMoments, CountTable, NumericSummary

__all__ = ["disclose_numeric", "merge_histogram_bins"]


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


def _num(x: Any) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise PrivacyError("a statistic to be released is not finite")
    return v


def _released_cells(
    key: str, ns: NumericSummary, t: CountTable, sys: CellSystem, supp: np.ndarray, m: int
) -> tuple[np.ndarray, bool]:
    """Which cells' statistics are released, and whether the overall is (rule 4)."""
    i = t.rows.index(ns.row)
    C = len(t.cols)
    cell_var = [int(v) for v in sys.cell[ns.table][i, :]]
    n = np.array([int(c.n) for c in ns.cells])
    rel = np.array([not supp[v] and n[j] >= m for j, v in enumerate(cell_var)])
    overall = ns.overall if C > 1 else None
    if overall is None:
        return rel, False
    if int(overall.n) != int(n.sum()):
        raise PrivacyError(f"numeric summary {key!r}: overall n differs from its row total")
    if supp[sys.row_total[ns.table][i]] or int(overall.n) < m:
        return rel, False
    # complement rule: withheld cells (with patients) >= 2 and >= min_subset together
    while True:
        held = [j for j in range(C) if not rel[j] and n[j] > 0]
        if not held or (len(held) >= 2 and int(n[held].sum()) >= m):
            return rel, True
        cands = [j for j in range(C) if rel[j]]
        if not cands:
            return rel, False
        rel[min(cands, key=lambda j: (n[j], j))] = False


def _histogram_bounds(
    key: str, ns: NumericSummary, rel: np.ndarray, overall_rel: bool, m: int
) -> dict[int, list[int]]:
    """Merged bin bounds per released column (``C`` = the overall), rule 5.

    Cells with withheld neighbours share one set of merged bins with the overall
    and the complement, so nothing can be differenced; otherwise each released
    cell is merged on its own and no overall histogram is released (the hub pools
    the groups' histograms, which partition the overall).
    """
    if ns.grid is None:
        return {}
    bins = int(ns.grid[2])
    C = len(ns.cells)
    n = np.array([int(c.n) for c in ns.cells])
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
    overall = ns.overall
    if overall_rel and overall is not None and held:
        if overall.hist is None or len(overall.hist) != bins:
            raise PrivacyError(f"numeric summary {key!r}: overall histogram missing")
        oh = np.asarray(overall.hist, dtype=np.int64)
        if int(oh.sum()) != int(overall.n):
            raise PrivacyError(f"numeric summary {key!r}: histogram total differs from n")
        series = [hists[j] for j in released] + [oh]
        complement = oh - (np.sum([hists[j] for j in released], axis=0) if released else 0)
        shared = merge_histogram_bins(np.vstack(series), complement, m)
        return dict.fromkeys([*released, C], shared)
    return {j: merge_histogram_bins(hists[j][None, :], None, m) for j in released}


def _perturbed(c: CellMoments, var: int, pert: CellKeys | None, policy: SitePolicy) -> CellMoments:
    """``c`` as released: perturbed n, and mean/M2 with the cell key's magnitude noise.

    The noise scales with the cell's largest value (largest squared deviation for
    M2), so removing any one patient from a cell moves the answer by an amount
    unrelated to that patient's value.
    """
    key = None if pert is None else pert.keys[var]
    if key is None or pert is None:
        return c
    share = float(policy.cell_key_magnitude_share)
    mean, m2 = float(c.mean), float(c.m2)
    if share > 0 and c.n > 0 and c.minimum is not None and c.maximum is not None:
        lo, hi = float(c.minimum), float(c.maximum)
        mean += magnitude_noise(key, "sum", max(abs(lo), abs(hi)), share) / int(c.n)
        dev = max(hi - float(c.mean), float(c.mean) - lo)
        m2 = max(m2 + magnitude_noise(key, "m2", dev * dev, share), 0.0)
    return CellMoments(int(pert.values[var]), mean, m2, c.minimum, c.maximum, c.hist)


def _cell_out(
    c: CellMoments, bounds: list[int] | None, grid: Any, policy: SitePolicy
) -> dict[str, Any]:
    """One released cell: n, mean, M2, [min, max], [merged-bin histogram]."""
    d: dict[str, Any] = {"n": int(c.n), "mean": _num(c.mean), "m2": _num(max(c.m2, 0.0))}
    if policy.allow_min_max and c.minimum is not None and c.maximum is not None:
        d["min"], d["max"] = _num(c.minimum), _num(c.maximum)
    if bounds is not None and c.hist is not None:
        low, high, bins = float(grid[0]), float(grid[1]), int(grid[2])
        width = (high - low) / bins
        h = np.asarray(c.hist, dtype=np.int64)
        d["hist"] = {
            "edges": [low + b * width if b < bins else high for b in bounds],
            "counts": [int(h[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
        }
    return d


def disclose_numeric(
    key: str,
    ns: NumericSummary,
    tables: Mapping[str, CountTable],
    sys: CellSystem,
    supp: np.ndarray,
    policy: SitePolicy,
    suppressed: list[str],
    perturbation: CellKeys | None = None,
) -> dict[str, Any]:
    """The released form of one numeric summary; appends withheld statistics to ``suppressed``.

    ``perturbation`` holds the cell keys and perturbed counts of the release
    (:func:`healthfed.privacy.cellkey.cell_keys`); released cells then carry them.
    """
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
    rel, overall_rel = _released_cells(key, ns, t, sys, supp, m)
    overall = ns.overall if C > 1 else None
    for j in range(C):
        if not rel[j] and n[j] > 0 and not supp[cell_var[j]]:
            suppressed.append(f"{key}: statistics [{t.cols[j]}]")
    if overall is not None and not overall_rel and int(overall.n) > 0:
        if not supp[sys.row_total[ns.table][i]]:
            suppressed.append(f"{key}: statistics [overall]")
    bounds = _histogram_bounds(key, ns, rel, overall_rel, m)
    return {
        "table": ns.table,
        "row": ns.row,
        "grid": None
        if ns.grid is None
        else [float(ns.grid[0]), float(ns.grid[1]), int(ns.grid[2])],
        "cells": [
            _cell_out(
                _perturbed(c, cell_var[j], perturbation, policy), bounds.get(j), ns.grid, policy
            )
            if rel[j]
            else None
            for j, c in enumerate(ns.cells)
        ],
        "overall": _cell_out(
            _perturbed(overall, sys.row_total[ns.table][i], perturbation, policy),
            bounds.get(C),
            ns.grid,
            policy,
        )
        if overall is not None and overall_rel
        else None,
    }
