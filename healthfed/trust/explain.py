"""Local explanations of one prediction: exact linear contributions or Shapley values.

Both are on the log-odds scale and relative to the *reference patient*, the
pooled mean design row of the training data (``reference.design_mean`` of the
artefact, from a disclosure-checked federated round), so they add up exactly:
``base_value + sum(contributions) = logit(probability)``.

* Logistic models: ``w_j (x_j - xbar_j)`` summed over the design columns of each
  raw feature (a categorical column's dummies and a missing indicator count for
  their feature). These are exactly the (interventional) SHAP values of a
  linear model with the mean as background.
* Other models (the MLP): *baseline Shapley values* with the reference patient
  as the baseline -- exact by enumerating all coalitions of raw features when
  there are at most ``EXACT_MAX`` features, otherwise estimated from random
  permutations (seeded). For a logistic model both methods give the same numbers
  (tested).
"""

from __future__ import annotations

import math

import numpy as np

from healthfed.compute.fedavg import logits
from healthfed.compute.importance import feature_groups

__all__ = ["EXACT_MAX", "linear_contributions", "shapley_contributions"]

EXACT_MAX = 14


def linear_contributions(
    weights: list[np.ndarray], spec: dict, x: np.ndarray, mean: np.ndarray
) -> tuple[float, dict[str, float]]:
    """Base value and per-feature contributions of a logistic model (log-odds)."""
    w, b = np.asarray(weights[0], dtype=float), float(np.asarray(weights[1]).ravel()[0])
    base = b + float(w @ mean)
    out = {}
    for name, cols in feature_groups(spec):
        out[name] = float(np.sum(w[cols] * (x[cols] - mean[cols])))
    return base, out


def shapley_contributions(
    kind: str,
    weights: list[np.ndarray],
    spec: dict,
    x: np.ndarray,
    mean: np.ndarray,
    n_permutations: int = 512,
    seed: int = 0,
) -> tuple[float, dict[str, float], str]:
    """Baseline Shapley values of ``logit f`` at ``x`` against the reference ``mean``.

    Returns the base value, the contributions and the method used
    (``"exact"`` or ``"sampled (N permutations)"``).
    """
    groups = feature_groups(spec)
    k = len(groups)
    base = float(logits(kind, weights, mean[None, :])[0])
    if k <= EXACT_MAX:
        masks = np.arange(2**k)
        member = ((masks[:, None] >> np.arange(k)[None, :]) & 1).astype(bool)  # (2^k, k)
        Z = np.repeat(mean[None, :], len(masks), axis=0)
        for i, (_, cols) in enumerate(groups):
            Z[np.ix_(member[:, i], np.asarray(cols, dtype=np.intp))] = x[cols]
        f = logits(kind, weights, Z)
        size = member.sum(axis=1)
        fact = [math.factorial(s) for s in range(k + 1)]
        wts = np.array([fact[s] * fact[k - s - 1] / fact[k] if s < k else 0.0 for s in size])
        phi = {}
        for i, (name, _) in enumerate(groups):
            without = ~member[:, i]
            m = masks[without]
            phi[name] = float(np.sum(wts[without] * (f[m | (1 << i)] - f[m])))
        return base, phi, "exact"
    rng = np.random.default_rng(seed)
    phi_arr = np.zeros(k)
    for _ in range(n_permutations):
        order = rng.permutation(k)
        Z = np.repeat(mean[None, :], k + 1, axis=0)
        for step, i in enumerate(order, start=1):
            Z[step:, groups[i][1]] = x[groups[i][1]]
        f = logits(kind, weights, Z)
        phi_arr[order] += np.diff(f)
    phi_arr /= n_permutations
    return (
        base,
        {g: float(v) for (g, _), v in zip(groups, phi_arr, strict=True)},
        (f"sampled ({n_permutations} permutations)"),
    )
