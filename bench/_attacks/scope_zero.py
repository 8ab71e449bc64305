"""Classes 5 and 6: a derived grouping outside the permit, and zero cells of a one-patient group.

Scope is about access, not precision: under a permit that does not grant ``age``, any
released statistic by ``age_band`` (a grouping derived from ``age``) is a leak, noisy
or not. Zero cells: a subgroup of one patient whose ``n`` is withheld leaks its
outcome when both confusion cells of one outcome class are released and true (two
zeros say "the patient is in the other class").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from _attacks.base import Context, attack
from healthfed.compute.preprocess import standardisation_spec

SITE = "hospital_1"  # the scope attack's site


def _model(column: str, center: float, scale: float) -> dict[str, Any]:
    spec = standardisation_spec([column], centers=[center], scales=[scale])
    return {"model": "logistic", "preprocess": spec, "weights": [[0.5], [0.0]]}


@attack("scope: age_band under a permit without age", "5 scope")
def age_band_without_age(ctx: Context) -> tuple[bool, str]:
    params = {"model": _model("crp", 50.0, 50.0), "target": "death_28d", "attributes": ["age_band"]}
    reply = ctx.round("subgroup_metrics", "covid", params, permit="scope")[SITE]
    n = (reply.get("tables") or {}).get("n.age_band") or {"cols": [], "counts": [[]]}
    released = {c: v for c, v in zip(n["cols"], n["counts"][0], strict=True) if v is not None}
    numeric = [
        k
        for k, v in (reply.get("numeric") or {}).items()
        if k.endswith(".age_band") and any(c is not None for c in v.get("cells", []))
    ]
    age = ctx.world.truth["covid"][SITE]["age"]
    bands = pd.cut(age, [-np.inf, 18, 40, 60, 75, np.inf], right=False)
    labels = ["0-17", "18-39", "40-59", "60-74", "75+"]
    true = dict(zip(labels, bands.value_counts(sort=False), strict=True))
    got = ", ".join(f"{c}: {v} (true {true.get(c, 0)})" for c, v in released.items())
    detail = f"age_band n released: {got or 'none'}; statistics by age_band: {numeric or 'none'}"
    return bool(released or numeric), detail


def _lone_binary(ctx: Context) -> tuple[str, str]:
    """A site and a TCGA covariate with exactly one patient at 1 there."""
    for site in ("hospital_1", "hospital_2"):
        d = ctx.world.truth["tcga"][site]
        for c in d.columns[3:]:
            if set(d[c].unique()) <= {0, 1} and int(d[c].sum()) == 1:
                return site, str(c)
    raise AssertionError("no one-patient covariate at either site")


@attack("zero cells: subgroup metrics of a one-patient subgroup", "6 zero cells")
def one_patient_subgroup(ctx: Context) -> tuple[bool, str]:
    site, attr = _lone_binary(ctx)
    d = ctx.world.truth["tcga"][site]
    age = d["age_at_index"]
    params = {
        "model": _model("age_at_index", float(age.mean()), float(age.std())),
        "target": "E",
        "attributes": [attr],
    }
    reply = ctx.round("subgroup_metrics", "tcga", params, permit="tcga")[site]
    conf = (reply.get("tables") or {}).get(f"conf.{attr}")
    if conf is None:
        return False, "no confusion table released"
    j = [str(c) for c in conf["cols"]].index("1")
    cells = {r: conf["counts"][i][j] for i, r in enumerate(conf["rows"])}
    p = d[d[attr] == 1].iloc[0]
    z = 0.5 * (float(p.age_at_index) - float(age.mean())) / float(age.std())
    pred = 1.0 / (1.0 + np.exp(-z)) >= 0.5
    y = int(p.E)
    true = {"tp": int(pred and y), "fn": int(not pred and y), "fp": int(pred and not y)}
    true["tn"] = int(not pred and not y)
    revealed = [
        pair
        for pair in (("tp", "fn"), ("fp", "tn"))
        if all(cells[c] is not None and cells[c] == true[c] for c in pair)
    ]
    shown = ", ".join(f"{c}={cells[c]}" for c in ("tp", "fn", "fp", "tn"))
    return bool(revealed), f"{site} {attr}=1 (1 patient, E={y}): released {shown}"
