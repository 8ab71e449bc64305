"""Primary and secondary cell suppression of a release's count tables (rules 1-3).

1. Primary: a count ``0 < n < min_cell_count`` is suppressed; zeros are released.
2. Secondary (complementary), heuristic: on every additivity line with a released
   total the suppressed parts must be >= 2 and sum to >= ``min_cell_count``; with
   a suppressed total at least one part must be suppressed too. Otherwise the
   cheapest released cell of the line is suppressed (:func:`_cheapest`): interior
   cells before margins (a margin is shared by many lines), then the smallest
   count -- a released **zero** too, when the line only lacks a second unknown
   and not patients (a zero withheld costs almost nothing; without it a line such
   as ``[x (withheld), 0, 0]`` could only be fixed by withholding whole tables).
3. Exact audit (:func:`healthfed.privacy.lp_audit.first_determined`): while a
   suppressed cell can be recovered, more is suppressed -- the cheapest neighbour
   on one of its lines (zeros included), then its whole table, finally everything.
   So one small cell never withholds a whole table while cheaper cells can
   protect it.
"""

from __future__ import annotations

import numpy as np

from healthfed.policy import SitePolicy
from healthfed.privacy.cell_constraints import CellSystem
from healthfed.privacy.lp_audit import first_determined

__all__ = ["suppress_counts", "withheld_reasons"]


class _Unfixable(Exception):
    def __init__(self, var: int) -> None:
        self.var = var


def _cheapest(
    cands: list[int], vals: np.ndarray, totals: set[int], *, need_patients: bool
) -> int | None:
    """The released cell whose suppression costs least, or None when there is none.

    Cost: interior cells before margins, then the count itself. A zero is a
    candidate unless the line needs more patients among its withheld parts (then
    only a non-zero count helps); it is preferred when only a second unknown is
    missing, since withholding it loses next to nothing.
    """
    pool = [p for p in cands if vals[p] > 0] if need_patients else list(cands)
    if not pool:
        return None
    return min(pool, key=lambda p: (p in totals, int(vals[p]), p))


def _heuristic(
    sys: CellSystem,
    supp: np.ndarray,
    k: int,
    totals: set[int],
    protected: np.ndarray,
    avoid: set[int],
) -> None:
    """Line rules of secondary suppression, iterated to a fixed point.

    A line needs protecting when it withholds a protected cell or a non-zero count;
    a line whose only withheld parts are complementary zeros needs nothing.
    """
    vals = np.asarray(sys.values)
    changed = True
    while changed:
        changed = False
        for parts, total in sys.lines:
            sp = [p for p in parts if supp[p]]
            short = int(vals[sp].sum()) < k if sp else False
            if supp[total]:
                ok, need = len(sp) >= 1, False
            else:
                guarded = any(vals[p] > 0 or protected[p] for p in sp)
                if not guarded and len(sp) == 1:
                    # a lone complementary zero on a released line is pinned by it
                    supp[sp[0]] = False
                    avoid.add(sp[0])
                    changed = True
                    continue
                ok, need = not guarded or (len(sp) >= 2 and not short), short
            if ok:
                continue
            released = [p for p in parts if not supp[p] and p not in avoid]
            pick = _cheapest(released, vals, totals, need_patients=need)
            if pick is None:
                raise _Unfixable(sp[0] if sp else total)
            supp[pick] = True
            changed = True


def _pinned_zeros(sys: CellSystem, supp: np.ndarray) -> set[int]:
    """Zeros on a line whose released total is 0: implied by it, so withholding them hides
    nothing (and a line ``[0 (withheld), 0] = 0`` could never be protected)."""
    vals = np.asarray(sys.values)
    out: set[int] = set()
    for parts, total in sys.lines:
        if vals[total] == 0 and not supp[total]:
            out.update([*parts, total])
    return out


def suppress_counts(sys: CellSystem, policy: SitePolicy) -> np.ndarray:
    """Primary + secondary suppression with exact audit; returns the suppressed mask.

    Only the protected cells (primary ones and the zero-cell rule's zeros) must stay
    undeterminable; a complementary zero that the other numbers pin down is released
    again (releasing a number the others already imply adds nothing) and not chosen
    again, so the choice moves on to cells that do protect.
    """
    k = policy.min_cell_count
    vals = np.asarray(sys.values)
    supp = (vals > 0) & (vals < k)
    # Zero-cell rule: a zero inside a line whose total is 1..k-1 tells every one of those
    # few patients' value (a one-patient subgroup's tp/fn/fp of 0 gives its outcome).
    for parts, total in sys.lines:
        if supp[total]:
            supp[[p for p in parts if vals[p] == 0]] = True
    if not supp.any():
        return supp
    avoid = _pinned_zeros(sys, supp)
    supp[sorted(avoid)] = False  # all zeros, implied by a released zero total
    if not supp.any():
        return supp
    protected = supp.copy()
    totals = {t for _, t in sys.lines}
    lines_of: dict[int, list[int]] = {}
    for li, (parts, total) in enumerate(sys.lines):
        for v in [*parts, total]:
            lines_of.setdefault(v, []).append(li)
    for _ in range(4 * len(vals) + 4):
        try:
            _heuristic(sys, supp, k, totals, protected, avoid)
        except _Unfixable as exc:
            _suppress_tables(sys, supp, exc.var)
            continue
        bad = first_determined(sys, supp)
        if bad is None:
            return supp
        if not protected[bad] and vals[bad] == 0:  # a zero the others imply protects nothing
            supp[bad] = False
            avoid.add(bad)
            continue
        cands = sorted(
            {
                p
                for li in lines_of.get(bad, [])
                for p in [*sys.lines[li][0], sys.lines[li][1]]
                if not supp[p] and p not in avoid
            }
        )
        pick = _cheapest(cands, vals, totals, need_patients=False)
        if pick is not None:
            supp[pick] = True
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


def withheld_reasons(sys: CellSystem, supp: np.ndarray, policy: SitePolicy) -> dict[str, int]:
    """How many counts ``supp`` withholds, by reason, for the reply to say why.

    ``primary``: 1 to ``min_cell_count - 1`` patients; ``zero_cell``: a zero on a line
    of so few patients (it would tell their values); ``complementary``: withheld so
    that the others cannot be derived from the margins.
    """
    k = policy.min_cell_count
    vals = np.asarray(sys.values)
    primary = (vals > 0) & (vals < k) & supp
    zero = np.zeros_like(supp)
    for parts, total in sys.lines:
        if primary[total]:
            zero[[p for p in parts if vals[p] == 0]] = True
    zero &= supp
    return {
        "primary": int(primary.sum()),
        "zero_cell": int(zero.sum()),
        "complementary": int((supp & ~primary & ~zero).sum()),
    }
