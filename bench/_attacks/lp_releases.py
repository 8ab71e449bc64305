"""Class 3 (continued), linear programming over ordinary releases: withheld cells pinned down.

Seven ordinary releases of three categorical variables at ``hospital_1`` (the three
crosstabs, Table 1 by each variable, the count of everyone; more releases of the same
margins add no constraint, and each costs a Flower round) are constraints on the 16 unknown three-way counts. For each
two-way cell a release withheld or whose true count is 1 .. ``min_cell_count - 1``
(withheld or perturbed), two linear programs give the smallest and largest value those
constraints allow; a cell whose range holds one integer, the true one, is recovered.
Perturbed counts enter as intervals ``released +- D``, with ``D`` the largest
cell-key deviation the site publishes (0 when it releases exact counts).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from scipy.optimize import linprog

from _attacks.base import Context, attack

SITE = "hospital_1"
VARS = ["vaccination", "ckd", "copd"]


def _max_deviation(ctx: Context) -> float:
    policy = ctx.world.node(SITE).policy
    if str(getattr(policy, "count_perturbation", "none")) == "none":
        return 0.0
    return float(getattr(policy, "cell_key_max_deviation", 0) or 0)


class Unknowns:
    """The three-way counts ``x[a, b, c]`` and masks selecting sums of them."""

    def __init__(self, levels: dict[str, list[str]]) -> None:
        self.levels = levels
        self.cells = list(itertools.product(*(levels[v] for v in VARS)))

    def mask(self, fixed: dict[str, str]) -> np.ndarray | None:
        """Unknowns with ``var == level`` for each entry; ``None`` for a level outside them."""
        for var, level in fixed.items():
            if level not in self.levels[var]:
                return None
        keep = [all(cell[VARS.index(v)] == lv for v, lv in fixed.items()) for cell in self.cells]
        return np.asarray(keep, dtype=float)


def _constraints(table: dict[str, Any], row_var: str | None, col_var: str | None, u: Unknowns):
    """(mask, released value) for every released cell and margin of one table."""
    out = []

    def add(fixed: dict[str, str], value: Any) -> None:
        m = u.mask(fixed)
        if value is not None and m is not None:
            out.append((m, float(value)))

    rows, cols = table["rows"], table["cols"]
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            fixed = {}
            if row_var:
                fixed[row_var] = str(r)
            if col_var:
                fixed[col_var] = str(c)
            add(fixed, table["counts"][i][j])
    if row_var:
        for i, r in enumerate(rows):
            add({row_var: str(r)}, (table.get("row_totals") or [None] * len(rows))[i])
    if col_var:
        for j, c in enumerate(cols):
            add({col_var: str(c)}, (table.get("col_totals") or [None] * len(cols))[j])
    add({}, table.get("total"))
    return out


def _releases(ctx: Context, u: Unknowns) -> tuple[list, list]:
    """Send the ordinary releases; their constraints and the two-way cells they withheld."""
    cons, withheld = [], []
    for r, c in itertools.combinations(VARS, 2):
        t = ctx.round("crosstab", "covid", {"row": r, "col": c})[SITE]["tables"]["crosstab"]
        cons += _constraints(t, r, c, u)
        for i, j in itertools.product(range(len(t["rows"])), range(len(t["cols"]))):
            if t["counts"][i][j] is None:
                withheld.append({r: str(t["rows"][i]), c: str(t["cols"][j])})
    for by in VARS:
        others = [v for v in VARS if v != by]
        tables = ctx.round("table1", "covid", {"variables": others, "by": by})[SITE]["tables"]
        cons += _constraints(tables["N"], None, by, u)
        for v in others:
            cons += _constraints(tables[f"var:{v}"], v, by, u)
    everyone = ctx.round("count", "covid", {})[SITE]["tables"]["count"]
    cons += _constraints(everyone, None, None, u)
    return cons, withheld


def _range(target: np.ndarray, cons: list, dev: float) -> tuple[float, float] | None:
    """Smallest and largest ``target . x`` with ``x >= 0`` and every constraint within ``dev``."""
    A = np.array([m for m, _ in cons])
    b = np.array([v for _, v in cons])
    A_ub = np.vstack([A, -A])
    b_ub = np.concatenate([b + dev, -(b - dev)])
    lo = linprog(target, A_ub=A_ub, b_ub=b_ub, bounds=(0, None), method="highs")
    hi = linprog(-target, A_ub=A_ub, b_ub=b_ub, bounds=(0, None), method="highs")
    if lo.status != 0 or hi.status != 0:
        return None
    return float(lo.fun), float(-hi.fun)


@attack("linear programming over 7 ordinary releases: protected cells", "3 differencing")
def lp_withheld(ctx: Context) -> tuple[bool, str]:
    d = ctx.world.truth["covid"][SITE]
    levels = {v: sorted(d[v].astype(str).unique()) for v in VARS}
    u = Unknowns(levels)
    cons, withheld = _releases(ctx, u)
    k = ctx.world.node(SITE).policy.min_cell_count
    for r, c in itertools.combinations(VARS, 2):  # small cells, withheld or perturbed
        for a, b in itertools.product(levels[r], levels[c]):
            n = int(((d[r].astype(str) == a) & (d[c].astype(str) == b)).sum())
            if 1 <= n < k and {r: a, c: b} not in withheld:
                withheld.append({r: a, c: b})
    if not withheld:
        return False, "no small or withheld two-way cell"
    dev = _max_deviation(ctx)
    recovered, infeasible = [], 0
    for cell in withheld:
        mask = u.mask(cell)
        if mask is None:
            continue
        bounds = _range(mask, cons, dev)
        if bounds is None:
            infeasible += 1
            continue
        lo, hi = math.ceil(bounds[0] - 1e-6), math.floor(bounds[1] + 1e-6)
        sel = np.ones(len(d), dtype=bool)
        for v, level in cell.items():
            sel &= d[v].astype(str).to_numpy() == level
        if lo == hi == int(sel.sum()):
            recovered.append(f"{cell} = {lo}")
    if not recovered:
        detail = f"{len(withheld)} withheld or small cells, none pinned down (D = {dev:g})"
        if infeasible:
            detail += f"; {infeasible} LPs infeasible"
        return False, detail
    return True, f"{len(recovered)}/{len(withheld)} protected cells recovered: " + "; ".join(
        recovered[:3]
    )
