"""Class 3 (continued), averaging: the same request sent again and again.

Independent noise per request averages away: ``REPEATS`` answers narrow it by the
square root of their number. A site that perturbs with the cell key method gives the
same cohort the same answer every time, so the repeats carry nothing new. The target
is a two-way cell of 1 .. ``min_cell_count - 1`` patients at ``hospital_1`` (withheld
or perturbed). Leak: the answers differ and their mean rounds to the true count.
"""

from __future__ import annotations

import statistics

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
