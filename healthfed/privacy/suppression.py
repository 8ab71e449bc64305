"""Primary and secondary cell suppression of a release's count tables (rules 1-3).

1. Primary: a count ``0 < n < min_cell_count`` is suppressed; zeros are released.
2. Secondary, heuristic: on every additivity line with a released total the
   suppressed parts must be >= 2 and sum to >= ``min_cell_count``; with a
   suppressed total at least one part must be suppressed too. Otherwise the
   smallest released non-zero cell of the line is suppressed (interior cells
   before margins, because a margin is shared by many lines).
3. Exact audit (:func:`healthfed.privacy.lp_audit.first_determined`): while a
   suppressed cell can be recovered, more is suppressed -- a neighbour on one of
   its lines, then its whole table, finally everything.
"""

from __future__ import annotations

import numpy as np

from healthfed.policy import SitePolicy
from healthfed.privacy.cell_constraints import CellSystem
from healthfed.privacy.lp_audit import first_determined

__all__ = ["suppress_counts"]


class _Unfixable(Exception):
    def __init__(self, var: int) -> None:
        self.var = var


def _heuristic(sys: CellSystem, supp: np.ndarray, k: int, totals: set[int]) -> None:
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


def suppress_counts(sys: CellSystem, policy: SitePolicy) -> np.ndarray:
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
        bad = first_determined(sys, supp)
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


def _suppress_tables(sys: CellSystem, supp: np.ndarray, var: int) -> None:
    """Suppress every cell (and margin) of the table(s) that hold ``var``."""
    owners = {sys.table_of[var]} | {key for key in sys.cell if var in sys.table_vars(key)}
    for key in owners:
        for v in sys.table_vars(key):
            supp[v] = True
