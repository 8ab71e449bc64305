"""Class 1, crafted model parameters: coefficients, weights and models chosen to isolate one patient.

The target is a patient of ``hospital_1`` whose age no other patient there shares
(background knowledge: "my neighbour, 93, was admitted there"). Standardising age
as ``(age - a0) / 0.001`` makes every crafted model's linear predictor 0 at the
target's age and +-1000 (or more) everywhere else, so every other patient's weight,
hidden unit or score saturates to exactly 0 or 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from _attacks.base import Context, attack, close_enough
from healthfed.compute.glm.maths import unpack_upper
from healthfed.compute.preprocess import standardisation_spec

__all__ = ["array", "target_patient"]

SITE = "hospital_1"
FEATURES = ["age", "crp", "spo2", "diabetes"]


def target_patient(ctx: Context, needed: list[str]) -> pd.Series:
    """A ``hospital_1`` patient alone at their age, with ``needed`` recorded."""
    d = ctx.world.truth["covid"][SITE].dropna(subset=needed)
    counts = d["age"].value_counts()
    lone = sorted(a for a, k in counts.items() if k == 1 and a > 80)
    if not lone:
        raise AssertionError("no patient alone at an age above 80 at hospital_1")
    return d[d["age"] == lone[0]].iloc[0]


def array(reply: dict[str, Any], name: str) -> np.ndarray | None:
    """A released array of a ``model_statistics`` reply (``None`` where withheld)."""
    entry = (reply.get("arrays") or {}).get(name)
    if entry is None:
        return None
    data = [np.nan if v is None else v for v in entry["data"]]
    return np.asarray(data, dtype=float).reshape(entry["shape"])


def _tol(ctx: Context, column: str) -> float:
    d = ctx.world.truth["covid"][SITE][column]
    return 0.01 * float(d.max() - d.min())


def _spec(a0: float, extra: list[str]) -> dict[str, Any]:
    cols = ["age", *extra]
    return standardisation_spec(
        cols, centers=[a0] + [0.0] * len(extra), scales=[1e-3] + [1.0] * len(extra)
    )


@attack(
    "glm_step at crafted coefficients: one patient's record from the Hessian",
    "1 crafted parameters",
)
def glm_crafted(ctx: Context) -> tuple[bool, str]:
    p = target_patient(ctx, [*FEATURES, "death_28d"])
    beta = [0.0, 1.0, 0.0, 0.0, 0.0]  # eta = 1000 (age - a0): weight 1/4 at a0 only
    replies = ctx.round(
        "glm_step",
        "covid",
        {"target": "death_28d", "preprocess": _spec(float(p.age), FEATURES[1:]), "beta": beta},
    )
    h = array(replies[SITE], "hessian")
    if h is None:
        return False, "no Hessian released"
    H = unpack_upper(h.ravel())
    n_at_age = H[0, 0] / 0.25
    rec = {c: H[0, i + 2] / 0.25 for i, c in enumerate(FEATURES[1:])}
    ok = close_enough(n_at_age, 1, 0.05) and all(
        close_enough(rec[c], float(p[c]), max(_tol(ctx, c), 0.05)) for c in rec
    )
    got = ", ".join(f"{c}={rec[c]:.4g} (true {float(p[c]):.4g})" for c in rec)
    return ok, f"n at age {p.age:g} = {n_at_age:.4g}; {got}"


@attack("local_train MLP with an indicator hidden unit: one outcome", "1 crafted parameters")
def mlp_indicator(ctx: Context) -> tuple[bool, str]:
    p = target_patient(ctx, ["age", "death_28d"])
    # h0 - h1 = tanh(x + 500) - tanh(x - 500) = 2 at the target's age, 0 elsewhere.
    weights = [[[1.0, 1.0]], [500.0, -500.0], [0.0, 0.0], [0.0]]
    params = {
        "model": "mlp",
        "hidden": 2,
        "target": "death_28d",
        "preprocess": _spec(float(p.age), []),
        "weights": weights,
        "epochs": 1,
        "batch_size": 1_000_000,
        "lr": 1.0,
        "mu": 0.0,
        "seed": 0,
    }
    reply = ctx.round("local_train", "covid", params)[SITE]
    d2, n = array(reply, "delta_2"), reply.get("n_rows")
    if d2 is None or n is None:
        return False, "no update or no row count released"
    y_hat = 0.5 + float(n) * float(d2[0] - d2[1]) / 2.0
    truth = float(p.death_28d)
    return close_enough(y_hat, truth, 0.05), f"death_28d estimate {y_hat:.3f} (true {truth:g})"


@attack(
    "evaluate_binary of two crafted models: one outcome from Brier sums", "1 crafted parameters"
)
def evaluate_crafted(ctx: Context) -> tuple[bool, str]:
    p = target_patient(ctx, ["age", "death_28d"])
    spec = _spec(float(p.age), [])
    brier = []
    for shift in (500.0, -500.0):  # p = 1 from the target's age up / strictly above it
        model = {"model": "logistic", "preprocess": spec, "weights": [[1.0], [shift]]}
        reply = ctx.round("evaluate_binary", "covid", {"model": model, "target": "death_28d"})
        b = (reply[SITE].get("scalars") or {}).get("brier_sum")
        if b is None:
            return False, "no Brier sum released"
        brier.append(float(b))
    y_hat = (1.0 - (brier[0] - brier[1])) / 2.0
    truth = float(p.death_28d)
    return close_enough(y_hat, truth, 0.05), f"death_28d estimate {y_hat:.3f} (true {truth:g})"
