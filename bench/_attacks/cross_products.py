"""Class 2, cross-products: the first ``glm_step`` round's X'X over dummies is a two-way count table.

Without coefficients a site returns the weighted normal equations at R's starting
values, where every patient's IRLS weight is the same (3/16), so each Hessian entry
of two 0/1 design columns is that weight times the number of patients with both:
a cell Table 1 and ``crosstab`` withhold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from _attacks.base import Context, attack
from _attacks.model_params import array
from healthfed.compute.glm.maths import unpack_upper
from healthfed.data.descriptor import load_descriptor

SITES = ["hospital_1", "hospital_2"]
CATEGORICAL = ["vaccination", "sex"]
BINARY = ["ckd", "copd", "diabetes", "obesity", "icu", "hypertension"]


def small_pair(ctx: Context) -> tuple[str, str]:
    """A (categorical, binary) pair with a cell of 1..min_cell_count-1 at some site."""
    k = ctx.world.node(SITES[0]).policy.min_cell_count
    for cat in CATEGORICAL:
        for b in BINARY:
            for s in SITES:
                d = ctx.world.truth["covid"][s]
                t = d.groupby([d[cat].astype(str), d[b]], observed=True).size()
                if ((t >= 1) & (t < k)).any():
                    return cat, b
    raise AssertionError("no small two-way cell in the data")


@attack("glm_step X'X of dummies: a withheld two-way cell", "2 cross-products")
def xtx_dummies(ctx: Context) -> tuple[bool, str]:
    cat, b = small_pair(ctx)
    levels = list(load_descriptor(ctx.world.truth_descriptor(SITES[0])).columns[cat].levels)
    spec: dict[str, Any] = {
        "kind": "healthfed.preprocess",
        "version": 1,
        "missing": "drop",
        "standardize": False,
        "columns": [
            {"name": cat, "type": "categorical", "levels": levels},
            {"name": b, "type": "numeric", "mean": 0.0, "center": 0.0, "scale": 1.0},
        ],
    }
    replies = ctx.round("glm_step", "covid", {"target": "death_28d", "preprocess": spec})
    k = ctx.world.node(SITES[0]).policy.min_cell_count
    hits, small = [], 0
    for site, reply in replies.items():
        h = array(reply, "hessian")
        if h is None:
            continue
        H = unpack_upper(h.ravel())
        w = H[0, 0] / float(reply.get("n_rows") or np.nan)
        d = ctx.world.truth["covid"][site]
        for j, level in enumerate(levels[1:], start=1):
            true = int(((d[cat].astype(str) == level) & (d[b] == 1)).sum())
            if 1 <= true < k:
                small += 1
                got = H[j, len(levels)] / w
                if abs(got - true) < 0.05:
                    hits.append(f"{site}: {cat}={level} & {b}=1 -> {got:.3f} (true {true})")
    detail = "; ".join(hits) if hits else f"{small} withheld cells, none recovered"
    return bool(hits), detail
