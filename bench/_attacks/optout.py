"""Class 3 (continued), differencing through an opt-out: the same crosstab before and after.

A patient opts out at ``hospital_1`` (EHDS Art. 71; the attacker knows, e.g. from the
patient); the same ``crosstab`` of sex by diabetes before and after differs by exactly
that patient's cell. Leak: the cells whose answer changed are exactly the patient's
(sex, diabetes) cell -- with exact counts the difference is 1 there, and with cell-key
noise the other cells keep their records, hence their answers, so the one cell that
changed still names the patient's category. Runs late: the opt-out stays in the
site's store.
"""

from __future__ import annotations

import numpy as np

from _attacks.base import Context, Refused, attack

SITE = "hospital_1"


def _table(ctx: Context) -> tuple[np.ndarray, list[str], list[str]]:
    t = ctx.round("crosstab", "covid", {"row": "sex", "col": "diabetes"})[SITE]["tables"]
    t = t["crosstab"]
    if any(v is None for row in t["counts"] for v in row):
        raise Refused("a crosstab cell was withheld")
    return np.asarray(t["counts"], dtype=float), [str(r) for r in t["rows"]], t["cols"]


@attack("count before and after an opt-out: the patient's sex and diabetes", "3 differencing")
def optout_difference(ctx: Context) -> tuple[bool, str]:
    d = ctx.world.truth["covid"][SITE]
    p = d[(d["age"] >= 40) & (d["age"] <= 60)].iloc[0]
    before, rows, cols = _table(ctx)
    store = ctx.world.node(SITE).optouts
    if store is None:
        raise Refused("the site keeps no opt-out store")
    store.add(str(p.patient_id))
    after, _, _ = _table(ctx)
    diff = before - after
    cell = (rows.index(str(p.sex)), [str(c) for c in cols].index(str(int(p.diabetes))))
    changed = {(int(i), int(j)) for i, j in zip(*np.nonzero(diff), strict=True)}
    leak = changed == {cell}
    return leak, (
        f"difference {diff.astype(int).tolist()} vs the patient's cell "
        f"(sex={p.sex}, diabetes={int(p.diabetes)})"
    )
