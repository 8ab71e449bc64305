"""Class 1, crafted model parameters: coefficients, weights and models chosen to isolate one patient.

The target is a patient of ``hospital_1`` whose age no other patient there shares
(background knowledge: "my neighbour, 93, was admitted there"). Standardising age
as ``(age - a0) / 0.001`` makes every crafted model's linear predictor 0 at the
target's age and +-1000 (or more) everywhere else, so every other patient's weight,
hidden unit or score saturates to exactly 0 or 1.

The "by difference" attacks stay inside the bounded region (every pre-activation
within ``eta_bound`` on the site's rows): two requests at units as steep as the bound
allows, centred a year either side of the patient farthest in age from every other,
whose replies differ (almost) only by that patient's terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from _attacks.base import Context, attack, close_enough
from healthfed.compute.glm.maths import unpack_upper
from healthfed.compute.preprocess import standardisation_spec
from healthfed.policy import SitePolicy

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


def isolated_patient(ctx: Context) -> tuple[pd.Series, float, float, float]:
    """The ``hospital_1`` patient farthest in age from every other (the worst case).

    Returns the patient, the gap to the nearest other age, and the site's age range
    (an attacker finds the range by probing the bounded-region rule's refusals).
    """
    d = ctx.world.truth["covid"][SITE].dropna(subset=["age", "death_28d"])
    ages = np.sort(d["age"].unique())
    counts = d["age"].value_counts()
    gaps = np.minimum(np.diff(ages, prepend=-np.inf), np.diff(ages, append=np.inf))
    lone = [(g, a) for g, a in zip(gaps, ages, strict=True) if counts[a] == 1]
    gap, age = max(lone)
    lo, hi = float(d["age"].min()), float(d["age"].max())
    return d[d["age"] == age].iloc[0], float(gap), lo, hi


def _steepest(lo: float, hi: float, centre: float) -> float:
    """Largest slope ``k`` with ``|k (age - centre)| <= 0.99 eta_bound`` over ``[lo, hi]``."""
    return 0.99 * float(SitePolicy().eta_bound) / max(hi - centre, centre - lo)


@dataclass
class _TwoCentres:
    """What every "by difference" attack shares: its target, two centres, the slope."""

    patient: pd.Series
    gap: float
    slope: float
    centres: tuple[float, float]

    @classmethod
    def around_isolated(cls, ctx: Context) -> _TwoCentres:
        """Centres a year (at most half the gap) either side of the most isolated patient."""
        p, gap, lo, hi = isolated_patient(ctx)
        a0, half = float(p.age), min(gap / 2.0, 1.0)
        return cls(p, gap, _steepest(lo, hi, a0), (a0 - half, a0 + half))

    def spec(self, centre: float) -> dict[str, Any]:
        """Age standardised so that a unit weight is a unit of slope ``k`` about ``centre``."""
        return standardisation_spec(["age"], centers=[centre], scales=[1.0 / self.slope])

    def at_target(self, centre: float) -> float:
        """``k (age - centre)`` at the target."""
        return self.slope * (float(self.patient.age) - centre)

    def verdict(self, y_hat: float) -> tuple[bool, str]:
        truth = float(self.patient.death_28d)
        return close_enough(y_hat, truth, 0.25), (
            f"death_28d estimate {y_hat:.3f} (true {truth:g}; age gap {self.gap:g} y, "
            f"slope {self.slope:.3g}/y)"
        )


@attack(
    "evaluate_binary of two steepest bounded models: one outcome by difference",
    "1 crafted parameters",
)
def evaluate_bounded_difference(ctx: Context) -> tuple[bool, str]:
    two = _TwoCentres.around_isolated(ctx)
    sums = []
    for c in two.centres:  # the target scores high in the first model only
        model = {"model": "logistic", "preprocess": two.spec(c), "weights": [[1.0], [0.0]]}
        reply = ctx.round("evaluate_binary", "covid", {"model": model, "target": "death_28d"})
        pos = array(reply[SITE], "psum_pos")
        if pos is None or np.isnan(pos).any():
            return False, "score sums withheld"
        sums.append((float(np.nansum(pos)), two.at_target(c)))
    (s_a, z_a), (s_b, z_b) = sums
    weight = float(1 / (1 + np.exp(-z_a)) - 1 / (1 + np.exp(-z_b)))
    return two.verdict((s_a - s_b) / weight)


@attack(
    "local_train MLP, steepest bounded hidden unit at two centres: one outcome by difference",
    "1 crafted parameters",
)
def mlp_bounded_difference(ctx: Context) -> tuple[bool, str]:
    two = _TwoCentres.around_isolated(ctx)
    out = []
    for c in two.centres:
        # one hidden unit h = tanh(k (age - c)); output weight 0 so z = 0, p = 1/2
        params = {
            "model": "mlp",
            "hidden": 1,
            "target": "death_28d",
            "preprocess": two.spec(c),
            "weights": [[[1.0]], [0.0], [0.0], [0.0]],
            "epochs": 1,
            "batch_size": 1_000_000,
            "lr": 1.0,
            "mu": 0.0,
            "seed": 0,
        }
        reply = ctx.round("local_train", "covid", params)[SITE]
        d2, n = array(reply, "delta_2"), reply.get("n_rows")
        if d2 is None or n is None or np.isnan(d2).any():
            return False, "update withheld"
        # delta_2 = -lr/n sum_i (1/2 - y_i) h_i
        out.append((float(d2[0]) * float(n), float(np.tanh(two.at_target(c)))))
    (s_a, h_a), (s_b, h_b) = out
    # s_a - s_b = sum_i (y_i - 1/2)(h_a,i - h_b,i); rows far from the target cancel
    return two.verdict(0.5 + (s_a - s_b) / (h_a - h_b))


@attack(
    "evaluate_binary of a bounded MLP step at two centres: one outcome by difference",
    "1 crafted parameters",
)
def evaluate_mlp_step_difference(ctx: Context) -> tuple[bool, str]:
    # p = sigmoid(h tanh(k (age - c)) + h + 1): every pre-activation within the bound, yet
    # the two layers compose into a step about a year wide at c, from p = sigmoid(1)
    # below it to p = 1 above it.
    two = _TwoCentres.around_isolated(ctx)
    h = (0.99 * float(SitePolicy().eta_bound) - 1.0) / 2.0
    brier = []
    for c in two.centres:
        weights = [[[1.0]], [0.0], [h], [h + 1.0]]
        model = {"model": "mlp", "hidden": 1, "preprocess": two.spec(c), "weights": weights}
        # a flat recalibration candidate, so its derivatives are dominated by no one
        params = {"model": model, "target": "death_28d", "candidates": [[29.0, 0.0, 29.0]]}
        reply = ctx.round("evaluate_binary", "covid", params)
        b = (reply[SITE].get("scalars") or {}).get("brier_sum")
        if b is None:
            return False, "no Brier sum released"
        brier.append(float(b))
    # brier_a - brier_b = (1 - y)^2 - (s - y)^2 for the target (s = sigmoid(1)), ~0 for
    # everyone else, whose scores are the same in both models
    s = float(1 / (1 + np.exp(-1.0)))
    return two.verdict(((1 - s * s) - (brier[0] - brier[1])) / (2 * (1 - s)))
