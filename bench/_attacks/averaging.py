"""Class 3 (continued), averaging: the same request sent again and again.

Independent noise per request averages away: ``REPEATS`` answers narrow it by the
square root of their number. A site that perturbs with the cell key method gives the
same cohort the same answer every time, so the repeats carry nothing new. The target
is a two-way cell of 1 .. ``min_cell_count - 1`` patients at ``hospital_1`` (withheld
or perturbed). Leak: the answers differ and their mean rounds to the true count.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from _attacks.base import Context, Refused, attack
from _attacks.cross_products import small_pair

SITE = "hospital_1"
REPEATS = 5


@attack(f"averaging {REPEATS} repeats of one crosstab: a small cell", "3 differencing")
def repeated_crosstab(ctx: Context) -> tuple[bool, str]:
    cat, b = small_pair(ctx)
    d = ctx.world.truth["covid"][SITE]
    k = ctx.world.node(SITE).policy.min_cell_count
    sizes = d.groupby([d[cat].astype(str), d[b].astype(int).astype(str)], observed=True).size()
    small = [(lv, v) for (lv, v), n in sizes.items() if 1 <= n < k]
    if not small:
        raise AssertionError(f"no small {cat} x {b} cell at {SITE}")
    (level, value), true = small[0], int(sizes[small[0]])
    answers = []
    for _ in range(REPEATS):
        t = ctx.round("crosstab", "covid", {"row": cat, "col": b})[SITE]["tables"]["crosstab"]
        cell = t["counts"][[str(r) for r in t["rows"]].index(level)][
            [str(c) for c in t["cols"]].index(value)
        ]
        if cell is None:
            raise Refused(f"the cell {cat}={level} & {b}={value} is withheld")
        answers.append(float(cell))
    mean = statistics.fmean(answers)
    leak = len(set(answers)) > 1 and round(mean) == true
    return leak, f"{cat}={level} & {b}={value}: answers {answers} (true {true})"


#: Noisy views of one count a cell-key attacker needs to pin it to +-0.5 at 95 %:
#: ``V * (1.96 / 0.5)^2`` independent views of variance ``V`` (31 at ``V = 2``).
Z95 = 1.96


def views_needed(variance: float, half_width: float = 0.5) -> int:
    return math.ceil(variance * (Z95 / half_width) ** 2)


Cell = tuple[str, str]


def crosstab_views(
    table: dict[str, Any], counts: list[tuple[int, str, list[list[Any]]]]
) -> tuple[list[Cell], dict[tuple[int, ...], float]]:
    """Every distinct patient set the releases count, as a 0/1 row over the table's cells.

    ``table`` is a released crosstab (cells, row and column totals, total);
    ``counts`` holds ``count`` releases of one level of the row (axis 0) or column
    (axis 1) variable: ``(axis, level, [[level's count], [other or missing]])``. Sets
    released twice (a row total and the level's ``count``) are one observation: the
    cell key method gives them the same noise.
    """
    rows, cols = [str(r) for r in table["rows"]], [str(c) for c in table["cols"]]
    cells = [(r, c) for r in rows for c in cols]
    obs: dict[tuple[int, ...], float] = {}

    def add(members: list[Cell], value: Any) -> None:
        if value is not None:
            obs.setdefault(tuple(int(cell in members) for cell in cells), float(value))

    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            add([(r, c)], table["counts"][i][j])
        add([(r, c) for c in cols], table["row_totals"][i])
    for j, c in enumerate(cols):
        add([(r, c) for r in rows], table["col_totals"][j])
    add(cells, table["total"])
    for axis, level, released in counts:
        inside = [cell for cell in cells if cell[axis] == level]
        add(inside, released[0][0])
        add([cell for cell in cells if cell not in inside], released[1][0])
    return cells, obs


def gls(
    cells: list[Cell], obs: dict[tuple[int, ...], float], target: Cell, variance: float
) -> tuple[float, float]:
    """The least-squares estimate of ``target``'s count and its standard deviation.

    Each observation has independent noise of the published ``variance`` (distinct
    patient sets get independent cell keys); every cell is an unknown (a released 0
    may be a perturbed small count). The deviation depends on which sets were
    released, not on the noise drawn.
    """
    A = np.array(list(obs), dtype=float)
    y = np.array(list(obs.values()))
    if np.linalg.matrix_rank(A) < len(cells):
        raise Refused("the releases do not determine every cell")
    cov = np.linalg.inv(A.T @ A)
    at = cells.index(target)
    return float((cov @ A.T @ y)[at]), math.sqrt(variance * cov[at, at])


@attack("averaging every view of a small cell the tables give (cell key)", "3 differencing")
def every_view(ctx: Context) -> tuple[bool, str]:
    """Generalised least squares over all releases that bear on a small two-way cell.

    The cell key method gives the same patients the same noise, so repeats add
    nothing; what an attacker can still average are *different* patient sets whose
    counts add up to the cell: its crosstab cell, its row total minus the rest of the
    row, its column total minus the rest of the column, ``count``'s "other or missing"
    complements, the grand total (:func:`crosstab_views`, :func:`gls`). The attack
    leaks when the estimate rounds to the true count and its 95 % half-width is under
    0.5; its detail says how many independent views the releases are worth against
    the number needed.
    """
    cat, b = small_pair(ctx)
    d = ctx.world.truth["covid"][SITE]
    k = ctx.world.node(SITE).policy.min_cell_count
    t = ctx.round("crosstab", "covid", {"row": cat, "col": b})[SITE]["tables"]["crosstab"]
    rows, cols = [str(r) for r in t["rows"]], [str(c) for c in t["cols"]]
    sizes = d.groupby([d[cat].astype(str), d[b].astype(int).astype(str)], observed=True).size()
    small = [(r, c) for (r, c), n in sizes.items() if 1 <= n < k and r in rows and c in cols]
    if not small:
        raise AssertionError(f"no small {cat} x {b} cell at {SITE}")
    target, true = small[0], int(sizes[small[0]])
    counts, variance = [], 0.0
    for axis, variable, levels in ((0, cat, rows), (1, b, cols)):
        for level in levels:
            if level == "(missing)":
                continue
            reply = ctx.round("count", "covid", {"variable": variable, "level": level})[SITE]
            variance = float((reply.get("perturbation") or {}).get("variance") or variance)
            counts.append((axis, level, reply["tables"]["count"]["counts"]))
    if variance == 0.0:
        raise Refused("the site releases exact counts only where they are not small")
    cells, obs = crosstab_views(t, counts)
    est, sd = gls(cells, obs, target, variance)
    views, need = variance / (sd * sd), views_needed(variance)
    leak = round(est) == true and Z95 * sd < 0.5
    return leak, (
        f"{cat}={target[0]} & {b}={target[1]}: estimate {est:.2f} +- {Z95 * sd:.2f} "
        f"(true {true}) from {len(obs)} distinct patient sets, worth {views:.1f} independent "
        f"views; pinning it needs {need}"
    )
