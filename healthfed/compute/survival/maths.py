"""Survival maths: Breslow partial likelihood, risk-set sums, grids, Kaplan-Meier, Harrell's pairs.

Pure numpy, no data access and no federation: the nodes (:mod:`.node`), the hub
(:mod:`.combine`), the estimator (:mod:`.estimator`), the benchmark and the
tests all compute with the same functions, so node and hub agree bit for bit
where they must (:func:`linear_predictor`). The method, and why it reproduces
the pooled analysis, is described in the package docstring
(:mod:`healthfed.compute.survival`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.errors import DataError, FederationError, HealthfedError, PolicyDenied

__all__ = [
    "MAX_GRID_POINTS",
    "breslow_from_risk_sets",
    "breslow_stratum_terms",
    "bucket_index",
    "coarsen_times",
    "fit_pooled_breslow",
    "grid_spec",
    "grid_time",
    "harrell_pairs",
    "km_from_counts",
    "km_merge_steps",
    "km_restrict_steps",
    "linear_predictor",
    "newton_step",
    "risk_set_sums",
]

#: Most points a public time grid may have (an explicit grid, or steps released by a site).
MAX_GRID_POINTS = 20_000


def linear_predictor(X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``X @ coef`` summed column by column, left to right.

    A fixed summation order makes the node's scores and the hub's
    ``predict_risk`` bit-identical, so tied scores (common with one-hot
    covariates) are tied on both sides of a C-index comparison.
    """
    X = np.asarray(X, dtype=float)
    coef = np.asarray(coef, dtype=float)
    out = np.zeros(X.shape[0])
    for j in range(coef.size):
        out = out + X[:, j] * coef[j]
    return out


def breslow_stratum_terms(
    time: np.ndarray, event: np.ndarray, X: np.ndarray, beta: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Breslow partial log-likelihood, gradient and Hessian of one stratum (exact times).

    Uses a stable shift of the linear predictor (it cancels) and the identity
    ``sum_t d_t S2(t)/S0(t) = X' diag(w H0(T)) X`` so memory stays ``O(n p)``.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    if event.sum() == 0:
        return 0.0, np.zeros(p), np.zeros((p, p))
    eta = X @ beta
    shift = float(eta.max())
    w = np.exp(eta - shift)
    uniq, inv = np.unique(time, return_inverse=True)
    k = uniq.size
    a0 = np.bincount(inv, weights=w, minlength=k)
    a1 = np.zeros((k, p))
    np.add.at(a1, inv, X * w[:, None])
    s0 = np.cumsum(a0[::-1])[::-1]
    s1 = np.cumsum(a1[::-1], axis=0)[::-1]
    d = np.bincount(inv, weights=event, minlength=k)
    has = d > 0
    m = s1[has] / s0[has, None]
    ll = float(eta[event > 0].sum() - np.sum(d[has] * (np.log(s0[has]) + shift)))
    grad = X[event > 0].sum(axis=0) - (d[has, None] * m).sum(axis=0)
    haz = np.zeros(k)
    haz[has] = d[has] / s0[has]
    h0 = np.cumsum(haz)  # Breslow cumulative hazard (scaled by exp(-shift)) at each time
    wh = w * h0[inv]
    hess = -(X.T @ (X * wh[:, None]) - (m * d[has, None]).T @ m)
    return ll, grad, hess


def grid_spec(
    time_grid: Any,
    error: type[HealthfedError] = PolicyDenied,
    label: str = "parameter 'time_grid'",
) -> dict[str, Any]:
    """Normalise a grid given as a width, a list of points or an already-built spec.

    Nodes check a request's grid with it (``PolicyDenied`` naming the parameter);
    the estimator checks the researcher's argument first (``error=InvalidArgument``,
    ``label="argument 'time_grid'"``), so a bad grid fails before any round.
    """
    if isinstance(time_grid, dict):
        if "width" in time_grid:
            time_grid = time_grid["width"]
        elif "points" in time_grid:
            time_grid = time_grid["points"]
        else:
            raise error(f"{label} must be {{'width': w}} or {{'points': [...]}}")
    if isinstance(time_grid, bool):
        raise error(f"{label} must be a width or a list of points")
    if isinstance(time_grid, int | float):
        w = float(time_grid)
        if not (math.isfinite(w) and w > 0):
            raise error(f"{label}: the width must be a positive number")
        return {"width": w}
    try:
        pts = np.asarray(list(time_grid), dtype=float)
    except (TypeError, ValueError):
        raise error(f"{label} must be a width or a list of numbers") from None
    if pts.ndim != 1 or pts.size == 0 or pts.size > MAX_GRID_POINTS:
        raise error(f"{label} must hold 1 to {MAX_GRID_POINTS} points, got {pts.size}")
    if not np.all(np.isfinite(pts)) or np.any(np.diff(pts) <= 0):
        raise error(f"{label}: points must be finite and strictly increasing")
    return {"points": pts.tolist()}


def bucket_index(time: np.ndarray, grid: dict[str, Any]) -> np.ndarray:
    """Grid step of each time: the smallest grid point ``>= T``.

    ``grid`` is ``{"width": w}`` (points ``w, 2w, 3w, ...``: index ``k`` is the
    point ``(k + 1) w``, so ``T = 0`` joins the first step ``[0, w]``) or
    ``{"points": [...]}`` (index ``len(points)`` means "after the last point").
    """
    time = np.asarray(time, dtype=float)
    if "width" in grid:
        k = np.ceil(time / float(grid["width"])).astype(np.int64)
        return np.maximum(k, 1) - 1
    return np.searchsorted(np.asarray(grid["points"], dtype=float), time, side="left")


def grid_time(index: np.ndarray, grid: dict[str, Any]) -> np.ndarray:
    """Time of grid points by index (``inf`` past the last explicit point)."""
    index = np.asarray(index, dtype=np.int64)
    if "width" in grid:
        return (index.astype(float) + 1.0) * float(grid["width"])
    pts = np.append(np.asarray(grid["points"], dtype=float), np.inf)
    return pts[np.minimum(index, len(pts) - 1)]


def coarsen_times(time: np.ndarray, time_grid: float | Sequence[float]) -> np.ndarray:
    """Times moved up to the grid (``T' = smallest grid point >= T``): the pooled comparison target.

    Parameters
    ----------
    time
        Durations (``>= 0``).
    time_grid
        A grid width, or increasing grid points.
    """
    grid = grid_spec(time_grid)
    return grid_time(bucket_index(time, grid), grid)


def risk_set_sums(
    idx: np.ndarray, event: np.ndarray, X: np.ndarray, beta: np.ndarray, n_steps: int
) -> dict[str, np.ndarray]:
    """Per grid step ``k < n_steps``: ``S0``, ``S1``, ``S2`` over ``{idx >= k}`` and events ``d``.

    Rows with ``idx >= n_steps`` (after the last explicit grid point) are at
    risk at every released step.
    """
    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    w = np.exp(X @ beta)
    last = max(int(idx.max()) + 1 if idx.size else 0, n_steps)
    a0 = np.bincount(idx, weights=w, minlength=last)
    a1 = np.zeros((last, p))
    np.add.at(a1, idx, X * w[:, None])
    a2 = np.zeros((last, p, p))
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(last + 1))
    for k in range(last):
        rows = order[bounds[k] : bounds[k + 1]]
        if rows.size:
            xr = X[rows]
            a2[k] = xr.T @ (xr * w[rows, None])
    s0 = np.cumsum(a0[::-1])[::-1][:n_steps]
    s1 = np.cumsum(a1[::-1], axis=0)[::-1][:n_steps]
    s2 = np.cumsum(a2[::-1], axis=0)[::-1][:n_steps]
    d = np.bincount(idx[event > 0], minlength=last)[:n_steps]
    return {"s0": s0, "s1": s1, "s2": s2, "d": d}


def breslow_from_risk_sets(
    beta: np.ndarray,
    d: np.ndarray,
    event_x_sum: np.ndarray,
    s0: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Breslow log-likelihood, gradient and Hessian from pooled per-step risk-set sums."""
    has = np.asarray(d) > 0
    if np.any(s0[has] <= 0):
        raise FederationError("risk-set sums are inconsistent: an event step has an empty risk set")
    dd = np.asarray(d, dtype=float)[has]
    m = s1[has] / s0[has, None]
    ll = float(event_x_sum @ beta - np.sum(dd * np.log(s0[has])))
    grad = event_x_sum - (dd[:, None] * m).sum(axis=0)
    hess = -(np.einsum("k,kij->ij", dd / s0[has], s2[has]) - (m * dd[:, None]).T @ m)
    return ll, grad, hess


def harrell_pairs(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, chunk: int = 2048
) -> tuple[int, int, int]:
    """Concordant, discordant and risk-tied comparable pairs (Harrell; lifelines' rules).

    ``(i, j)`` is comparable when ``E_i = 1`` and ``T_i < T_j``, or ``T_i = T_j``
    with ``E_j = 0``. Concordant: the earlier one has the higher risk score.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float) > 0
    risk = np.asarray(risk, dtype=float)
    conc = disc = tied = 0
    ev = np.flatnonzero(event)
    for lo in range(0, ev.size, chunk):
        i = ev[lo : lo + chunk]
        ti, ri = time[i, None], risk[i, None]
        comp = (time[None, :] > ti) | ((time[None, :] == ti) & ~event[None, :])
        conc += int(np.sum(comp & (ri > risk[None, :])))
        disc += int(np.sum(comp & (ri < risk[None, :])))
        tied += int(np.sum(comp & (ri == risk[None, :])))
    return conc, disc, tied


def km_merge_steps(
    idx: np.ndarray,
    event: np.ndarray,
    n_steps: int,
    min_cell_count: int,
    min_at_risk: int,
) -> dict[str, Any]:
    """Node side: merge fine grid steps so every released count is 0 or large enough.

    Returns the kept step-end indices, at-risk/events/censored per kept step
    and the number still at risk after the last kept step (``remaining``).
    """
    c = int(min_cell_count)
    last = max(int(idx.max()) + 1 if idx.size else 0, n_steps)
    leave = np.bincount(idx, minlength=last)
    dead = np.bincount(idx[event > 0], minlength=last)
    cens = leave - dead

    def ok(v: int) -> bool:
        return v == 0 or v >= c

    ends: list[int] = []
    at_risk: list[int] = []
    events: list[int] = []
    censored: list[int] = []
    n_start = int(idx.size)
    acc_d = acc_c = 0
    for k in range(n_steps):
        if n_start == 0 or n_start < min_at_risk:
            break
        acc_d += int(dead[k])
        acc_c += int(cens[k])
        if ok(acc_d) and ok(acc_c):
            ends.append(k)
            at_risk.append(n_start)
            events.append(acc_d)
            censored.append(acc_c)
            n_start -= acc_d + acc_c
            acc_d = acc_c = 0
    remaining = n_start
    while ends and 0 < remaining < c:
        ends.pop()
        remaining = at_risk.pop()
        events.pop()
        censored.pop()
    return {
        "ends": ends,
        "at_risk": at_risk,
        "events": events,
        "censored": censored,
        "remaining": remaining,
    }


def km_restrict_steps(merged: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """Node side: the merged steps of :func:`km_merge_steps` joined so only ``keep`` edges stay.

    Every kept step is a union of whole merged steps, so each count is a sum of counts
    that are 0 or ``>= min_cell_count`` (hence 0 or ``>= min_cell_count`` too), its number
    at risk is a merged step's, and ``remaining`` is the number at risk at the start of
    the next merged step (or the merged ``remaining``): everything is a function of the
    merged release, so releases on different public grids add nothing to it.
    """
    keep = np.asarray(keep, dtype=bool)
    ends = list(merged["ends"])
    if keep.size != len(ends):
        raise ValueError("keep must hold one flag per merged step")
    out: dict[str, Any] = {"ends": [], "at_risk": [], "events": [], "censored": []}
    start = 0
    for j, flag in enumerate(keep.tolist()):
        if not flag:
            continue
        out["ends"].append(ends[j])
        out["at_risk"].append(int(merged["at_risk"][start]))
        out["events"].append(int(sum(merged["events"][start : j + 1])))
        out["censored"].append(int(sum(merged["censored"][start : j + 1])))
        start = j + 1
    if start < len(ends):
        out["remaining"] = int(merged["at_risk"][start])
    else:
        out["remaining"] = int(merged["remaining"])
    return out


def km_from_counts(
    at_risk: np.ndarray, events: np.ndarray, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Survival, Greenwood standard error and log-log CI (as lifelines) from step counts."""
    from scipy import stats as _stats  # scipy only for the hub's intervals

    n = np.asarray(at_risk, dtype=float)
    d = np.asarray(events, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.where(n > 0, np.log(n - d) - np.log(n), 0.0))
        var_terms = np.where((n > 0) & (n > d), d / (n * (n - d)), 0.0)
        cs = np.cumsum(var_terms)
        s = np.exp(log_s)
        z = _stats.norm.ppf(1 - alpha / 2)
        lower = np.exp(-np.exp(np.log(-log_s) - z * np.sqrt(cs) / log_s))
        upper = np.exp(-np.exp(np.log(-log_s) + z * np.sqrt(cs) / log_s))
    lower = np.where(np.isnan(lower), 1.0, lower)
    upper = np.where(np.isnan(upper), 1.0, upper)
    return s, s * np.sqrt(cs), lower, upper


def newton_step(h: np.ndarray, g: np.ndarray, features: list[str]) -> np.ndarray:
    """The Newton step ``-h^-1 g`` by Cholesky of ``-h``; a singular information names the features."""
    try:
        chol = np.linalg.cholesky(-h)
    except np.linalg.LinAlgError:
        raise DataError(
            "argument 'features': the partial-likelihood information matrix is singular or not "
            "positive definite (collinear or constant covariates, e.g. a full set of one-hot "
            f"columns among {features}); drop a column or set l2 > 0"
        ) from None
    y = np.linalg.solve(chol, g)
    return np.linalg.solve(chol.T, y)


def fit_pooled_breslow(
    time: np.ndarray,
    event: np.ndarray,
    X: np.ndarray,
    strata: np.ndarray | None = None,
    l2: float = 0.0,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Pooled (single-machine) Breslow Cox by Newton: ``(coef, se, loglik)``.

    The baseline the federated fit must reproduce; used by the benchmark.
    """
    import pandas as pd  # the pooled baseline only: nodes never run it

    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    groups = (
        [np.arange(len(time))]
        if strata is None
        else [np.flatnonzero(np.asarray(strata) == s) for s in pd.unique(np.asarray(strata))]
    )
    center = X.mean(axis=0)
    Xc = X - center

    def total(b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        ll, g, h = 0.0, np.zeros(p), np.zeros((p, p))
        for rows in groups:
            a, bb, c = breslow_stratum_terms(time[rows], event[rows], Xc[rows], b)
            ll, g, h = ll + a, g + bb, h + c
        return ll - 0.5 * l2 * b @ b, g - l2 * b, h - l2 * np.eye(p)

    beta = np.zeros(p)
    ll, g, h = total(beta)
    for _ in range(max_iter):
        step = newton_step(h, g, [str(i) for i in range(p)])
        if np.max(np.abs(step)) < tol:
            beta = beta + step
            break
        t = 1.0
        while True:
            cand = beta + t * step
            ll2, g2, h2 = total(cand)
            if ll2 >= ll - 1e-12 * max(1.0, abs(ll)) or t < 1e-9:
                break
            t /= 2
        beta, ll, g, h = cand, ll2, g2, h2
    ll, g, h = total(beta)
    se = np.sqrt(np.diag(np.linalg.inv(-h)))
    return beta, se, float(ll + 0.5 * l2 * beta @ beta)
