"""Federated survival analysis: Cox proportional hazards, Kaplan-Meier curves, Harrell's C-index.

Every site keeps its rows; the hub only sees sums that the site's disclosure
filter (``ModelStatistics``) let through. What is released, and why it is
exactly the pooled analysis (or exactly the pooled analysis of coarsened
times), is documented per method below.

Cox proportional hazards (Breslow ties), fitted by federated Newton
--------------------------------------------------------------------
The Breslow log partial likelihood of one stratum is::

    l(b) = sum_i E_i x_i.b - sum_t d_t log S0(t),   S0(t) = sum_{T_j >= t} exp(x_j.b)

with gradient ``sum_t (s_t - d_t S1/S0)`` and Hessian
``-sum_t d_t (S2/S0 - (S1/S0)(S1/S0)')`` (``S1``, ``S2`` the first and second
risk-set moments, ``d_t`` events at ``t``). Each round the hub sends ``b``;
one round = one Newton step; typically 5-8 rounds (step halving if the
log-likelihood drops).

* ``stratify_by_site=True`` (**the default, recommended**): the model has one
  baseline hazard per site (``strata=site`` in lifelines). Each site computes
  its own partial log-likelihood, gradient (p) and Hessian (p x p) and the
  hub adds them: exactly the pooled stratified fit. No event time, risk set
  or per-time count leaves a site; the site's number of events is released as
  a count, so a site with 1-4 events (default ``min_cell_count`` 5) declines.
  The Hessian uses ``sum_t d_t S2(t)/S0(t) = X' diag(w_j H0(T_j)) X`` (``H0`` the
  site's Breslow cumulative hazard), so no per-time ``p x p`` matrices are formed.
* ``stratify_by_site=False``: one baseline hazard for all sites. Its risk
  sets span sites, so each site releases, per step of a *public* time grid
  (a width such as 30 days, or explicit points agreed in advance; never the
  sites' own event times), the risk-set sums ``S0, S1, S2`` and the event
  count ``d``, plus the sum of ``x`` over its events. All times are first
  coarsened to the grid: ``T' = smallest grid point >= T`` (events and
  censorings alike), so the hub's Newton fit is **exactly the pooled Breslow
  Cox fit on the coarsened times** ``T'`` (not on the exact times, unless the
  grid holds every observed time).

  Disclosure: consecutive risk-set sums differ by the patients who left the
  risk set between two grid points; if that were a single patient,
  ``S1(g_k) - S1(g_k+1)`` over ``S0(g_k) - S0(g_k+1)`` would be their
  covariate vector. So a site releases only if, at every grid step, its events
  and its censorings are each 0 or >= ``min_cell_count`` and its number at risk
  is 0 or >= ``max(min_subset, min_cell_count)``. Otherwise it refuses with
  "time grid too fine"; with ``coarsen="auto"`` the hub doubles the grid width
  and asks again (one round per try, the first Newton round at ``b = 0``).
  Even then the release describes groups as small as ``min_cell_count``
  through second moments ``S2`` at every Newton step: weaker protection than
  the stratified mode, which is why that is the default. In practice the rule
  needs many events per site and step: on Fed-TCGA-BRCA (7-45 training
  events per region) the default policy accepts only a grid with a single
  step, i.e. all times tied (see ``bench/tcga_brca.py --unstratified``).

Kaplan-Meier curves
-------------------
Sites release, per step of their grid, the number at risk at the start of the
step, events and censorings in it. A site merges adjacent fine grid steps
(from the start) until a step's events and censorings are each 0 or >=
``min_cell_count``; it stops at the first step with fewer than
``max(min_subset, min_cell_count)`` at risk, and drops its last step if the
number still at risk after it would be 1..``min_cell_count-1`` (it is
derivable). No released count is in 1..``min_cell_count-1``. The step edges
a site keeps do reveal that a dropped edge had a small count before it (like
any primary suppression, "<5" is implied, never the value). The pooled curve
uses the edges all sites kept (summing a site's steps between common edges is
exact). On a grid of all observed times with thresholds 1 the curves equal the
exact pooled KM; otherwise they are the KM of the times coarsened as above,
truncated where a site stops. Confidence intervals: Greenwood's variance with
the exponential ("log-log") transform, as lifelines' ``KaplanMeierFitter``.

Harrell's C-index
-----------------
Each site scores its own rows with the coefficients (``x.b``, summed column by
column in a fixed order so node and hub give bit-identical scores) and
releases its numbers of concordant, discordant and risk-tied comparable pairs
(``n_params=0``; the site must hold ``min_subset`` rows). A pair is comparable
when the earlier time is an event (a censoring at the same time as an event
counts as later), as in ``lifelines.utils.concordance_index``. The hub reports
the C-index per site, the mean over sites (FLamby's metric: the mean of
per-client C-indices on the client test sets) and the C-index of all
within-site pairs pooled. Pair counts reveal ranks of the events' scores; with
few events that is detailed, so sites wanting more protection should raise
``min_subset`` for evaluation data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _stats

from healthfed.compute.rounds import RoundOutcome
from healthfed.data.sql import quote_ident, sql_literal
from healthfed.errors import DataError, FederationError, PolicyDenied, ThresholdViolation, TooFewSites
from healthfed.privacy.model_release import ModelStatistics, array_from_reply

COX_STRATIFIED = "cox_site_newton"
COX_RISK_SETS = "cox_risk_sets"
KM_COUNTS = "km_counts"
CINDEX = "survival_cindex"

GRID_TOO_FINE = "time grid too fine"
MAX_GRID_POINTS = 20_000
MAX_RELEASE_FLOATS = 5_000_000
MAX_FEATURES = 500


# =====================================================================================
# Maths (pure numpy; used by nodes, hub and tests)
# =====================================================================================
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
    grid = _grid_spec(time_grid)
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


def km_from_counts(
    at_risk: np.ndarray, events: np.ndarray, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Survival, Greenwood standard error and log-log CI (as lifelines) from step counts."""
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


# =====================================================================================
# Node side: parameter checks and data access
# =====================================================================================
def _grid_spec(time_grid: Any) -> dict[str, Any]:
    """Normalise a grid given as a width, a list of points or an already-built spec."""
    if isinstance(time_grid, dict):
        if "width" in time_grid:
            time_grid = time_grid["width"]
        elif "points" in time_grid:
            time_grid = time_grid["points"]
        else:
            raise PolicyDenied("parameter 'time_grid' must be {'width': w} or {'points': [...]}")
    if isinstance(time_grid, bool):
        raise PolicyDenied("parameter 'time_grid' must be a width or a list of points")
    if isinstance(time_grid, int | float):
        w = float(time_grid)
        if not (math.isfinite(w) and w > 0):
            raise PolicyDenied("parameter 'time_grid': the width must be a positive number")
        return {"width": w}
    try:
        pts = np.asarray(list(time_grid), dtype=float)
    except (TypeError, ValueError):
        raise PolicyDenied("parameter 'time_grid' must be a width or a list of numbers") from None
    if pts.ndim != 1 or pts.size == 0 or pts.size > MAX_GRID_POINTS:
        raise PolicyDenied(
            f"parameter 'time_grid' must hold 1 to {MAX_GRID_POINTS} points, got {pts.size}"
        )
    if not np.all(np.isfinite(pts)) or np.any(np.diff(pts) <= 0):
        raise PolicyDenied("parameter 'time_grid': points must be finite and strictly increasing")
    return {"points": pts.tolist()}


def _validate_common(
    params: dict[str, Any], descriptor: Any, *, need_features: bool
) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise PolicyDenied("parameters must be an object")
    out: dict[str, Any] = {}
    for name in ("duration", "event"):
        col = params.get(name)
        if not isinstance(col, str):
            raise PolicyDenied(f"parameter {name!r} must name a column")
        spec = descriptor.column(col)
        allowed = ("numeric", "integer") if name == "duration" else ("binary", "numeric", "integer")
        if spec.type not in allowed:
            raise DataError(f"parameter {name!r}: column {col!r} is {spec.type}, not {allowed}")
        out[name] = col
    feats = params.get("features", [])
    if feats is None:
        feats = []
    if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
        raise PolicyDenied("parameter 'features' must be a list of column names")
    if need_features and not feats:
        raise PolicyDenied("parameter 'features' must name at least one covariate")
    if len(feats) > MAX_FEATURES or len(set(feats)) != len(feats):
        raise PolicyDenied(
            f"parameter 'features' must hold at most {MAX_FEATURES} distinct column names"
        )
    for f in feats:
        spec = descriptor.column(f)
        if spec.type not in ("numeric", "integer", "binary"):
            raise DataError(
                f"parameter 'features': column {f!r} is {spec.type}; use numeric, integer or "
                "binary (one-hot encode categorical columns)"
            )
    out["features"] = list(feats)
    subset = params.get("subset")
    if subset is not None:
        if not isinstance(subset, dict) or not subset:
            raise PolicyDenied("parameter 'subset' must be an object {column: level}")
        clean = {}
        for col, level in subset.items():
            spec = descriptor.column(col)
            if spec.type not in ("categorical", "binary"):
                raise DataError(
                    f"parameter 'subset': column {col!r} is {spec.type}; subsets select a level "
                    "of a categorical or binary column"
                )
            level = str(level)
            if spec.levels is not None and level not in spec.levels and level not in ("0", "1"):
                raise DataError(
                    f"parameter 'subset': {level!r} is not a level of {col!r} "
                    f"(levels {list(spec.levels)})"
                )
            clean[col] = level
        subset = clean
    out["subset"] = subset
    return out


def _vector(params: dict[str, Any], name: str, p: int, default: float | None) -> np.ndarray:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise PolicyDenied(f"parameter {name!r} is required (a list of {p} numbers)")
        return np.full(p, float(default))
    if not isinstance(raw, list) or len(raw) != p:
        raise PolicyDenied(f"parameter {name!r} must be a list of {p} numbers (one per feature)")
    try:
        v = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise PolicyDenied(f"parameter {name!r} must hold numbers only") from None
    if not np.all(np.isfinite(v)):
        raise PolicyDenied(f"parameter {name!r} must be finite")
    return v


def _fetch(
    con: Any, descriptor: Any, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Complete cases: durations, 0/1 events and the feature matrix (never leaves the node)."""
    feats = params["features"]
    cols = [params["duration"], params["event"], *feats]
    sel = [f"CAST({quote_ident(params['duration'])} AS DOUBLE) AS t"]
    sel.append(f"CAST({quote_ident(params['event'])} AS DOUBLE) AS e")
    sel += [f"CAST({quote_ident(f)} AS DOUBLE) AS x{i}" for i, f in enumerate(feats)]
    where = [f"{quote_ident(c)} IS NOT NULL" for c in dict.fromkeys(cols)]
    for col, level in (params.get("subset") or {}).items():
        spec = descriptor.column(col)
        if spec.type == "binary" and spec.levels is not None and level in spec.levels:
            level = str(spec.levels.index(level))
        where.append(f"CAST({quote_ident(col)} AS VARCHAR) = {sql_literal(level)}")
    res = con.execute(f"SELECT {', '.join(sel)} FROM data WHERE {' AND '.join(where)}").fetchnumpy()
    t = np.asarray(res["t"], dtype=float)
    e = np.asarray(res["e"], dtype=float)
    X = np.zeros((len(t), len(feats)))
    for i in range(len(feats)):
        X[:, i] = np.asarray(res[f"x{i}"], dtype=float)
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise DataError(
            f"parameter 'duration': column {params['duration']!r} has negative "
            "or non-finite durations"
        )
    if np.any((e != 0) & (e != 1)):
        raise DataError(f"parameter 'event': column {params['event']!r} must be coded 0/1")
    return t, e, X


def _m_at_risk(policy: Any) -> int:
    return max(int(policy.min_subset), int(policy.min_cell_count))


# --- Cox, stratified by site ---------------------------------------------------------
def validate_cox_stratified(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``cox_site_newton`` request (``coef`` and ``center``: one number per feature)."""
    out = _validate_common(params, descriptor, need_features=True)
    p = len(out["features"])
    out["coef"] = _vector(params, "coef", p, 0.0)
    out["center"] = _vector(params, "center", p, 0.0)
    return out


def run_cox_stratified(con: Any, descriptor: Any, params: dict, policy: Any) -> ModelStatistics:
    """This site's Breslow partial log-likelihood, gradient and Hessian at ``coef``."""
    t, e, X = _fetch(con, descriptor, params)
    n, p = X.shape
    n_events = int(e.sum())
    if n < policy.min_subset or p > policy.max_param_ratio * n:
        return ModelStatistics(arrays={}, n_rows=n, n_params=p)  # the filter refuses, by rule
    ll, g, h = breslow_stratum_terms(t, e, X - params["center"], params["coef"])
    return ModelStatistics(
        arrays={"gradient": g, "hessian": h, "x_sum": X.sum(axis=0)},
        n_rows=n,
        n_params=p,
        scalars={"loglik": ll},
        counts={"events": [n_events]},
    )


def combine_cox_stratified(site_replies: dict[str, dict], params: dict) -> dict[str, Any]:
    """Sum of the sites' log-likelihoods, gradients and Hessians (one Newton step's input)."""
    ll = sum(float(r["scalars"]["loglik"]) for r in site_replies.values())
    g = np.sum([array_from_reply(r, "gradient") for r in site_replies.values()], axis=0)
    h = np.sum([array_from_reply(r, "hessian") for r in site_replies.values()], axis=0)
    return {
        "loglik": ll,
        "gradient": g.tolist(),
        "hessian": h.tolist(),
        "sites": sorted(site_replies),
    }


# --- Cox, one baseline hazard: risk-set sums on a public grid ------------------------
def validate_cox_risk_sets(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``cox_risk_sets`` request: as ``cox_site_newton`` plus ``time_grid``."""
    out = validate_cox_stratified(params, descriptor, policy)
    if "time_grid" not in params:
        raise PolicyDenied("parameter 'time_grid' is required ({'width': w} or {'points': [...]})")
    out["time_grid"] = _grid_spec(params["time_grid"])
    return out


def _check_grid_cells(idx: np.ndarray, e: np.ndarray, policy: Any) -> None:
    c = int(policy.min_cell_count)
    m = _m_at_risk(policy)
    leave = np.bincount(idx)
    dead = np.bincount(idx[e > 0], minlength=leave.size)
    cens = leave - dead
    at_risk = np.cumsum(leave[::-1])[::-1]
    small = ((dead > 0) & (dead < c)) | ((cens > 0) & (cens < c)) | ((at_risk > 0) & (at_risk < m))
    if np.any(small):
        raise ThresholdViolation(
            f"{GRID_TOO_FINE} for this site's policy: a grid step would reveal 1 to {c - 1} "
            f"events or censorings, or fewer than {m} patients at risk; use a coarser "
            "'time_grid'"
        )


def run_cox_risk_sets(con: Any, descriptor: Any, params: dict, policy: Any) -> ModelStatistics:
    """Per grid step risk-set sums ``S0, S1, S2`` (upper triangle) and event counts."""
    t, e, X = _fetch(con, descriptor, params)
    n, p = X.shape
    if n < policy.min_subset or p > policy.max_param_ratio * n:
        return ModelStatistics(arrays={}, n_rows=n, n_params=p)
    grid = params["time_grid"]
    idx = bucket_index(t, grid)
    if "points" in grid:
        n_steps = len(grid["points"])
        if np.any((idx >= n_steps) & (e > 0)):
            raise PolicyDenied(
                "parameter 'time_grid': an event lies after the last grid point; extend the grid"
            )
    else:
        n_steps = int(idx.max()) + 1 if n else 0
    tri = p * (p + 1) // 2
    if n_steps * (1 + p + tri) > MAX_RELEASE_FLOATS:
        raise PolicyDenied(
            f"parameter 'time_grid': {n_steps} grid steps x {p} features is too large a "
            "release; use a coarser grid"
        )
    _check_grid_cells(idx, e, policy)
    xc = X - params["center"]
    sums = risk_set_sums(idx, e, xc, params["coef"], n_steps)
    iu = np.triu_indices(p)
    return ModelStatistics(
        arrays={
            "s0": sums["s0"],
            "s1": sums["s1"],
            "s2": sums["s2"][:, iu[0], iu[1]],
            "event_x_sum": xc[e > 0].sum(axis=0),
            "x_sum": X.sum(axis=0),
        },
        n_rows=n,
        n_params=p,
        counts={"events": [int(v) for v in sums["d"]]},
    )


def pool_risk_sets(site_replies: dict[str, dict], p: int) -> dict[str, np.ndarray]:
    """Hub side: add the sites' per-step sums (shorter releases are padded with empty risk sets)."""
    k = max(len(r["counts"]["events"]) for r in site_replies.values())
    iu = np.triu_indices(p)
    out = {
        "d": np.zeros(k),
        "s0": np.zeros(k),
        "s1": np.zeros((k, p)),
        "s2": np.zeros((k, p, p)),
        "event_x_sum": np.zeros(p),
    }
    for r in site_replies.values():
        d = np.asarray(r["counts"]["events"], dtype=float)
        kk = d.size
        out["d"][:kk] += d
        out["s0"][:kk] += array_from_reply(r, "s0").reshape(kk)
        out["s1"][:kk] += array_from_reply(r, "s1").reshape(kk, p)
        tri = array_from_reply(r, "s2").reshape(kk, -1)
        full = np.zeros((kk, p, p))
        full[:, iu[0], iu[1]] = tri
        full[:, iu[1], iu[0]] = tri
        out["s2"][:kk] += full
        out["event_x_sum"] += array_from_reply(r, "event_x_sum")
    return out


def combine_cox_risk_sets(site_replies: dict[str, dict], params: dict) -> dict[str, Any]:
    """Pooled Breslow log-likelihood, gradient and Hessian at ``coef`` from the sites' sums."""
    beta = np.asarray(params.get("coef"), dtype=float)
    pooled = pool_risk_sets(site_replies, beta.size)
    ll, g, h = breslow_from_risk_sets(
        beta, pooled["d"], pooled["event_x_sum"], pooled["s0"], pooled["s1"], pooled["s2"]
    )
    return {
        "loglik": ll,
        "gradient": g.tolist(),
        "hessian": h.tolist(),
        "sites": sorted(site_replies),
    }


# --- Kaplan-Meier --------------------------------------------------------------------
def validate_km(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``km_counts`` request: ``duration``, ``event``, ``time_grid``, ``subset``."""
    out = _validate_common({**params, "features": []}, descriptor, need_features=False)
    out["time_grid"] = _grid_spec(params.get("time_grid", 30.0))
    alpha = params.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise PolicyDenied("parameter 'alpha' must be in (0, 1)")
    out["alpha"] = float(alpha)
    return out


def run_km(con: Any, descriptor: Any, params: dict, policy: Any) -> ModelStatistics:
    """Merged KM steps: ends, at risk, events, censored; every count 0 or >= min_cell_count."""
    t, e, _ = _fetch(con, descriptor, params)
    grid = params["time_grid"]
    idx = bucket_index(t, grid)
    if "points" in grid:
        n_steps = len(grid["points"])
    else:
        n_steps = int(idx.max()) + 1 if idx.size else 0
    if n_steps > MAX_GRID_POINTS:
        raise PolicyDenied(
            f"parameter 'time_grid': {n_steps} grid steps; at most {MAX_GRID_POINTS} allowed"
        )
    merged = km_merge_steps(idx, e, n_steps, policy.min_cell_count, _m_at_risk(policy))
    return ModelStatistics(
        arrays={"time": grid_time(np.asarray(merged["ends"], dtype=np.int64), grid)},
        n_rows=int(t.size),
        counts={
            "at_risk": merged["at_risk"],
            "events": merged["events"],
            "censored": merged["censored"],
            "remaining": [merged["remaining"]],
        },
    )


@dataclass
class KaplanMeierResult:
    """Per-site and pooled Kaplan-Meier curves.

    Attributes
    ----------
    frame
        One row per released step: ``group`` (site name or ``"pooled"``),
        ``time`` (step end), ``at_risk``, ``events``, ``censored``, ``survival``,
        ``std_err`` (Greenwood), ``ci_lower``, ``ci_upper``.
    sites
        Sites whose counts entered the curves.
    refused, missing_sites
        Sites that declined (with reason) or did not answer (set by ``Federation.run``).
    """

    frame: pd.DataFrame
    sites: list[str]
    refused: dict[str, str] = field(default_factory=dict)
    missing_sites: list[str] = field(default_factory=list)

    def curve(self, group: str = "pooled") -> pd.DataFrame:
        """The rows of one curve, indexed by time."""
        return self.frame[self.frame["group"] == group].set_index("time")


def _km_rows(
    group: str, time: np.ndarray, n: np.ndarray, d: np.ndarray, c: np.ndarray, alpha: float
) -> pd.DataFrame:
    s, se, lo, hi = km_from_counts(n, d, alpha)
    frame = pd.DataFrame(
        {
            "group": group,
            "time": time,
            "at_risk": n.astype(int),
            "events": d.astype(int),
            "censored": c.astype(int),
            "survival": s,
            "std_err": se,
            "ci_lower": lo,
            "ci_upper": hi,
        }
    )
    # Steps where nothing happened carry no information (the curve is flat there).
    return frame[(frame["events"] + frame["censored"]) > 0].reset_index(drop=True)


def combine_km(site_replies: dict[str, dict], params: dict) -> KaplanMeierResult:
    """Per-site curves, and the pooled curve on the step ends every site kept."""
    alpha = float(params.get("alpha", 0.05))
    frames = []
    sites: dict[str, dict[str, Any]] = {}
    for s in sorted(site_replies):
        r = site_replies[s]
        k = len(r["counts"]["at_risk"])
        info: dict[str, Any] = {
            "time": array_from_reply(r, "time").reshape(k),
            "n": np.asarray(r["counts"]["at_risk"], dtype=float),
            "d": np.asarray(r["counts"]["events"], dtype=float),
            "c": np.asarray(r["counts"]["censored"], dtype=float),
            "remaining": int(r["counts"]["remaining"][0]),
        }
        sites[s] = info
        frames.append(_km_rows(s, info["time"], info["n"], info["d"], info["c"], alpha))
    # Pooled: keep edges that every site kept (a finished site, remaining == 0, contributes
    # nothing after its last step), up to where the first unfinished site stops.
    ends = [
        i["time"][-1] if i["time"].size else -np.inf for i in sites.values() if i["remaining"] > 0
    ]
    stop = (
        min(ends)
        if ends
        else max((i["time"][-1] for i in sites.values() if i["time"].size), default=-np.inf)
    )
    common = None
    for i in sites.values():
        kept = set(i["time"][i["time"] <= stop].tolist())
        last = i["time"][-1] if i["time"].size else -np.inf
        if i["remaining"] == 0:
            other = set().union(*(set(j["time"].tolist()) for j in sites.values()))
            kept |= {t for t in other if last < t <= stop}
        common = kept if common is None else common & kept
    edges = np.array(sorted(common or []), dtype=float)
    if edges.size:
        n_p = np.zeros(edges.size)
        d_p = np.zeros(edges.size)
        c_p = np.zeros(edges.size)
        for i in sites.values():
            j = np.searchsorted(edges, i["time"], side="left")  # merged step of each site step
            inside = j < edges.size
            np.add.at(d_p, j[inside], i["d"][inside])
            np.add.at(c_p, j[inside], i["c"][inside])
            first = np.full(edges.size, -1)
            for pos in range(i["time"].size - 1, -1, -1):
                if inside[pos]:
                    first[j[pos]] = pos
            n_p += np.where(first >= 0, i["n"][np.maximum(first, 0)], 0.0)
        keep = n_p > 0
        frames.insert(0, _km_rows("pooled", edges[keep], n_p[keep], d_p[keep], c_p[keep], alpha))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return KaplanMeierResult(frame=frame, sites=sorted(site_replies))


# --- Harrell's C-index ---------------------------------------------------------------
def validate_cindex(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``survival_cindex`` request: ``duration``, ``event``, ``features``, ``coef``."""
    out = _validate_common(params, descriptor, need_features=True)
    out["coef"] = _vector(params, "coef", len(out["features"]), None)
    return out


def run_cindex(con: Any, descriptor: Any, params: dict, policy: Any) -> ModelStatistics:
    """Concordant/discordant/tied comparable pairs of the linear predictor on this site's rows."""
    t, e, X = _fetch(con, descriptor, params)
    conc, disc, tied = harrell_pairs(t, e, linear_predictor(X, params["coef"]))
    return ModelStatistics(
        arrays={},
        n_rows=int(t.size),
        n_params=0,
        scalars={"concordant": conc, "discordant": disc, "tied_risk": tied},
    )


@dataclass
class CIndexResult:
    """Harrell's C-index per site, their mean (FLamby's metric) and all within-site pairs pooled.

    Attributes
    ----------
    by_site
        Frame indexed by site: ``n_rows``, ``comparable``, ``concordant``,
        ``discordant``, ``tied_risk``, ``cindex`` (NaN without comparable pairs).
    mean_over_sites
        Plain mean of the per-site C-indices (sites with no comparable pair left out).
    pooled
        ``(concordant + tied/2) / comparable`` over all sites' pairs (pairs never span sites).
    """

    by_site: pd.DataFrame
    mean_over_sites: float
    pooled: float
    refused: dict[str, str] = field(default_factory=dict)
    missing_sites: list[str] = field(default_factory=list)

    @property
    def sites(self) -> list[str]:
        return list(self.by_site.index)


def combine_cindex(site_replies: dict[str, dict], params: dict) -> CIndexResult:
    rows = {}
    for s in sorted(site_replies):
        sc = site_replies[s]["scalars"]
        conc, disc, tied = (int(round(sc[k])) for k in ("concordant", "discordant", "tied_risk"))
        comp = conc + disc + tied
        rows[s] = {
            "n_rows": int(site_replies[s]["n_rows"]),
            "comparable": comp,
            "concordant": conc,
            "discordant": disc,
            "tied_risk": tied,
            "cindex": (conc + 0.5 * tied) / comp if comp else float("nan"),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "site"
    comp = int(frame["comparable"].sum()) if len(frame) else 0
    pooled = (
        (frame["concordant"].sum() + 0.5 * frame["tied_risk"].sum()) / comp if comp else math.nan
    )
    valid = frame["cindex"].dropna() if len(frame) else pd.Series(dtype=float)
    mean = float(valid.mean()) if len(valid) else math.nan
    return CIndexResult(by_site=frame, mean_over_sites=mean, pooled=float(pooled))


def _register() -> None:
    from healthfed.compute.registry import Computation, register

    register(
        Computation(
            name=COX_STRATIFIED,
            description="Cox PH (Breslow), stratified by site: this site's partial log-likelihood, "
            "gradient and Hessian at the hub's coefficients.",
            validate=validate_cox_stratified,
            run=run_cox_stratified,
            combine=combine_cox_stratified,
        )
    )
    register(
        Computation(
            name=COX_RISK_SETS,
            description="Cox PH (Breslow), one baseline hazard: risk-set sums S0/S1/S2 and event "
            "counts per step of a public time grid (steps with 1..k-1 events or censorings refused).",
            validate=validate_cox_risk_sets,
            run=run_cox_risk_sets,
            combine=combine_cox_risk_sets,
        )
    )
    register(
        Computation(
            name=KM_COUNTS,
            description="Kaplan-Meier counts (at risk, events, censored) per grid step, merged so "
            "every count is 0 or >= min_cell_count.",
            validate=validate_km,
            run=run_km,
            combine=combine_km,
        )
    )
    register(
        Computation(
            name=CINDEX,
            description="Harrell's C-index pair counts (concordant, discordant, tied) of a linear "
            "risk score on this site's rows.",
            validate=validate_cindex,
            run=run_cindex,
            combine=combine_cindex,
        )
    )


_register()


# =====================================================================================
# Hub side
# =====================================================================================
def kaplan_meier(
    federation: Any,
    dataset: str,
    duration: str,
    event: str,
    time_grid: float | Sequence[float] = 30.0,
    *,
    subset: dict[str, str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Pooled and per-site Kaplan-Meier curves with Greenwood (log-log) confidence intervals.

    Parameters
    ----------
    federation
        A ``Federation``; one round.
    dataset, duration, event
        Dataset name at the nodes, the duration column (``>= 0``) and the 0/1 event column.
    time_grid
        Grid width in the duration's unit (points ``w, 2w, ...``) or increasing
        grid points. Times are moved up to the next grid point; each site then
        merges steps until its counts pass its policy (see the module docstring).
    subset
        ``{column: level}`` rows to keep at every site (e.g. a train/test fold).
    alpha
        1 - confidence level.

    Returns
    -------
    pandas.DataFrame
        Columns ``group`` (``"pooled"`` then each site), ``time``, ``at_risk``,
        ``events``, ``censored``, ``survival``, ``std_err``, ``ci_lower``,
        ``ci_upper``; ``frame.attrs`` holds ``sites``, ``refused``, ``missing_sites``.
    """
    params: dict[str, Any] = {
        "duration": duration,
        "event": event,
        "time_grid": _grid_spec(time_grid),
        "alpha": float(alpha),
    }
    if subset:
        params["subset"] = dict(subset)
    result = federation.run(KM_COUNTS, dataset, params)
    result.refused = dict(getattr(result, "refusals", {}) or {})
    frame = result.frame
    frame.attrs.update(
        {
            "sites": result.sites,
            "refused": dict(result.refused),
            "missing_sites": list(result.missing_sites),
        }
    )
    return frame


def concordance_index(
    federation: Any,
    dataset: str,
    duration: str,
    event: str,
    features: Sequence[str],
    coef: Sequence[float],
    *,
    subset: dict[str, str] | None = None,
) -> CIndexResult:
    """Harrell's C-index of the risk score ``x.coef`` per site, mean over sites and pooled pairs.

    Higher score = higher hazard (earlier event), as a Cox linear predictor.
    """
    params: dict[str, Any] = {
        "duration": duration,
        "event": event,
        "features": list(features),
        "coef": [float(c) for c in coef],
    }
    if subset:
        params["subset"] = dict(subset)
    result = federation.run(CINDEX, dataset, params)
    result.refused = dict(getattr(result, "refusals", {}) or {})
    return result


try:  # scikit-learn conventions (get_params/set_params/clone)
    from sklearn.base import BaseEstimator
except ImportError:  # pragma: no cover
    BaseEstimator = object  # type: ignore[assignment,misc]


class FederatedCoxPH(BaseEstimator):
    """Cox proportional hazards model fitted exactly across sites by federated Newton.

    Parameters
    ----------
    stratify_by_site
        ``True`` (default, recommended): one baseline hazard per site; sites
        release only their own gradient and Hessian. ``False``: one baseline
        hazard; sites release risk-set sums per step of the public ``time_grid``
        and the fit is the pooled Cox on times coarsened to that grid.
    l2
        Ridge penalty: maximises ``l(b) - l2/2 * ||b||^2`` on the features' own
        scale (not divided by n; lifelines' ``penalizer`` on standardised
        features corresponds to ``l2 = n * penalizer`` there). Use it when
        one-hot columns are collinear or constant.
    ties
        Only ``"breslow"``.
    time_grid
        Unstratified mode only: grid width (in the duration's unit) or increasing points.
    coarsen
        Unstratified mode with a width grid: ``"auto"`` doubles the width (up
        to ``max_coarsen`` times) while a site refuses with "time grid too fine";
        ``"none"`` leaves such sites out.
    max_iter, tol
        Newton rounds at most; stop when the largest Newton step is below ``tol``.
    alpha
        1 - confidence level of ``conf_int_``.

    Attributes
    ----------
    coef_, bse_ : ndarray (p,)
        Log hazard ratios and their standard errors (inverse of the penalised
        observed information).
    conf_int_ : ndarray (p, 2)
        Wald intervals.
    hazard_ratios_ : pandas.Series
        ``exp(coef_)`` by feature.
    variance_matrix_ : ndarray (p, p)
    log_likelihood_ : float
        Partial log-likelihood (unpenalised) at ``coef_``.
    means_ : ndarray (p,)
        Pooled feature means of the rows used (to centre partial hazards).
    sites_, refused_ : list, dict
        Sites that contributed; sites that declined (reason).
    n_rows_, n_events_ : int
    n_iter_ : int
        Newton rounds (grid tries not included; see ``history_``).
    time_grid_ : dict or None
        The grid the unstratified fit used (``{"width": w}`` or ``{"points": ...}``).
    history_ : list of dict
        Per round: ``loglik``, ``max_step``, ``sites``, ``refused``.
    """

    def __init__(
        self,
        stratify_by_site: bool = True,
        l2: float = 0.0,
        ties: str = "breslow",
        time_grid: float | Sequence[float] = 30.0,
        coarsen: str = "auto",
        max_coarsen: int = 12,
        max_iter: int = 50,
        tol: float = 1e-9,
        alpha: float = 0.05,
    ) -> None:
        self.stratify_by_site = stratify_by_site
        self.l2 = l2
        self.ties = ties
        self.time_grid = time_grid
        self.coarsen = coarsen
        self.max_coarsen = max_coarsen
        self.max_iter = max_iter
        self.tol = tol
        self.alpha = alpha

    # --- fitting ----------------------------------------------------------------------
    def fit(
        self,
        federation: Any,
        dataset: str,
        duration: str,
        event: str,
        features: Sequence[str],
        *,
        subset: dict[str, str] | None = None,
    ) -> FederatedCoxPH:
        """Fit across the federation's sites.

        Parameters
        ----------
        federation
            A ``Federation``; one ``query`` per Newton round.
        dataset, duration, event
            Dataset name, duration column (``>= 0``) and 0/1 event column.
        features
            Numeric, integer or binary covariates (one-hot encode categoricals).
        subset
            ``{column: level}`` rows to keep at every site (e.g. ``{"fold": "train"}``).

        Returns
        -------
        self
        """
        if self.ties != "breslow":
            raise PolicyDenied(f"argument 'ties': only 'breslow' is implemented, got {self.ties!r}")
        if self.coarsen not in ("auto", "none"):
            raise PolicyDenied("argument 'coarsen' must be 'auto' or 'none'")
        l2 = float(self.l2)
        if not (math.isfinite(l2) and l2 >= 0):
            raise PolicyDenied("argument 'l2' must be a non-negative number")
        features = list(features)
        if not features:
            raise PolicyDenied("argument 'features' must name at least one covariate")
        p = len(features)
        min_sites = int(getattr(federation, "min_sites", 2))
        base: dict[str, Any] = {"duration": duration, "event": event, "features": features}
        if subset:
            base["subset"] = dict(subset)
        computation = COX_STRATIFIED if self.stratify_by_site else COX_RISK_SETS
        grid = None if self.stratify_by_site else _grid_spec(self.time_grid)
        self.history_: list[dict[str, Any]] = []
        beta = np.zeros(p)
        center = np.zeros(p)

        def ask(b: np.ndarray, c: np.ndarray, g: dict[str, Any] | None) -> Any:
            params = {**base, "coef": b.tolist(), "center": c.tolist()}
            if g is not None:
                params["time_grid"] = g
            try:
                return federation.round(computation, dataset, params)
            except TooFewSites as exc:  # a grid too fine everywhere: coarsen below, or fail
                if g is None or not any(GRID_TOO_FINE in r for r in exc.refusals.values()):
                    raise
                return RoundOutcome(replies={}, refused=exc.refusals, checks=exc.checks)

        out = ask(beta, center, grid)
        if grid is not None and "width" in grid and self.coarsen == "auto":
            tries = 0
            while _grid_refusals(out) and tries < int(self.max_coarsen):
                self.history_.append(
                    {
                        "round": "grid",
                        "time_grid": dict(grid),
                        "sites": sorted(out.replies),
                        "refused": dict(out.refused),
                    }
                )
                grid = {"width": grid["width"] * 2.0}
                tries += 1
                out = ask(beta, center, grid)
        self._require(out, min_sites, "first round")
        sites = sorted(out.replies)
        n_rows = sum(int(r["n_rows"]) for r in out.replies.values())
        x_sum = np.sum([array_from_reply(r, "x_sum") for r in out.replies.values()], axis=0)
        means = x_sum / n_rows
        # Centring changes neither the estimates nor the likelihood (sum_t d_t = #events);
        # it keeps exp(x.b) in range at the nodes.
        center = means

        def evaluate(o: Any, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
            if sorted(o.replies) != sites:
                raise FederationError(
                    f"the contributing sites changed during the Newton fit (first {sites}, now "
                    f"{sorted(o.replies)}; refused: {o.refused}; missing: {o.missing}); the "
                    "objective would change, so the fit stops"
                )
            if self.stratify_by_site:
                res = combine_cox_stratified(o.replies, {})
            else:
                res = combine_cox_risk_sets(o.replies, {"coef": b.tolist()})
            ll = float(res["loglik"])
            g = np.asarray(res["gradient"])
            h = np.asarray(res["hessian"])
            return ll - 0.5 * l2 * float(b @ b), g - l2 * b, h - l2 * np.eye(p), ll

        pen_ll, g, h, ll = evaluate(out, beta)
        prev = (beta, pen_ll, g, h, ll)
        self._check_information(h, features)
        n_iter = 1
        converged = False
        step = np.zeros(p)
        while True:
            b0, pll0, g0, h0, ll0 = prev
            step = _newton_step(h0, g0, features)
            self.history_.append(
                {
                    "round": n_iter,
                    "loglik": ll0,
                    "penalized_loglik": pll0,
                    "max_step": float(np.max(np.abs(step))),
                    "sites": sites,
                    "refused": dict(out.refused),
                }
            )
            if np.max(np.abs(step)) < self.tol:
                converged = True
                break
            if n_iter >= self.max_iter:
                break
            halvings = 0
            while True:
                cand = b0 + step
                out = ask(cand, center, grid)
                n_iter += 1
                self._require(out, min_sites, f"round {n_iter}")
                pll, g, h, ll = evaluate(out, cand)
                if pll >= pll0 - 1e-12 * max(1.0, abs(pll0)) or halvings >= 30:
                    break
                step = step / 2.0
                halvings += 1
            prev = (cand, pll, g, h, ll)
        b_fin, pll_fin, g_fin, h_fin, ll_fin = prev
        self.coef_ = b_fin + step if converged else b_fin
        info = -h_fin
        self.variance_matrix_ = np.linalg.inv(info)
        self.bse_ = np.sqrt(np.diag(self.variance_matrix_))
        z = _stats.norm.ppf(1 - self.alpha / 2)
        self.conf_int_ = np.column_stack([self.coef_ - z * self.bse_, self.coef_ + z * self.bse_])
        self.feature_names_in_ = np.asarray(features, dtype=object)
        self.n_features_in_ = p
        self.hazard_ratios_ = pd.Series(np.exp(self.coef_), index=features, name="exp(coef)")
        self.log_likelihood_ = ll_fin
        self.means_ = means
        self.sites_ = sites
        self.refused_ = dict(out.refused)
        self.missing_ = list(out.missing)
        self.n_rows_ = n_rows
        self.n_events_ = int(sum(sum(r["counts"]["events"]) for r in out.replies.values()))
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.time_grid_ = grid
        self.duration_ = duration
        self.event_ = event
        return self

    @staticmethod
    def _require(out: Any, min_sites: int, label: str) -> None:
        if len(out.replies) < min_sites:
            raise ThresholdViolation(
                f"Cox fit, {label}: {len(out.replies)} site(s) contributed "
                f"({', '.join(sorted(out.replies)) or 'none'}), at least {min_sites} needed; "
                f"refused: {out.refused}; missing: {out.missing}"
            )

    @staticmethod
    def _check_information(h: np.ndarray, features: list[str]) -> None:
        flat = [f for f, v in zip(features, np.diag(h), strict=True) if abs(v) < 1e-12]
        if flat:
            raise DataError(
                f"argument 'features': {flat} carry no information in the risk sets "
                "(constant within every risk set); drop them or set l2 > 0"
            )

    # --- prediction -------------------------------------------------------------------
    def _matrix(self, X: Any) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "coef_")
        if isinstance(X, pd.DataFrame):
            names = [str(f) for f in self.feature_names_in_]
            missing = [f for f in names if f not in X.columns]
            if missing:
                raise DataError(f"argument 'X': the frame lacks feature column(s) {missing}")
            return X[names].to_numpy(dtype=float)
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
            raise DataError(f"argument 'X' must have {self.n_features_in_} columns")
        return arr

    def predict_risk(self, X: Any) -> np.ndarray:
        """Risk score ``x.coef_`` (higher = earlier event); what the nodes score for the C-index."""
        return linear_predictor(self._matrix(X), self.coef_)

    def predict_log_partial_hazard(self, X: Any) -> np.ndarray:
        """``(x - means_).coef_``, as lifelines."""
        return linear_predictor(self._matrix(X) - self.means_, self.coef_)

    def predict_partial_hazard(self, X: Any) -> np.ndarray:
        """``exp((x - means_).coef_)``, as lifelines' ``predict_partial_hazard``."""
        return np.exp(self.predict_log_partial_hazard(X))

    def summary_frame(self) -> pd.DataFrame:
        """Coefficients, hazard ratios, standard errors, CIs, z and p (lifelines' column names)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "coef_")
        ci = 100 * (1 - self.alpha)
        z = self.coef_ / self.bse_
        frame = pd.DataFrame(
            {
                "coef": self.coef_,
                "exp(coef)": np.exp(self.coef_),
                "se(coef)": self.bse_,
                f"coef lower {ci:g}%": self.conf_int_[:, 0],
                f"coef upper {ci:g}%": self.conf_int_[:, 1],
                f"exp(coef) lower {ci:g}%": np.exp(self.conf_int_[:, 0]),
                f"exp(coef) upper {ci:g}%": np.exp(self.conf_int_[:, 1]),
                "z": z,
                "p": 2 * _stats.norm.sf(np.abs(z)),
            },
            index=pd.Index([str(f) for f in self.feature_names_in_], name="covariate"),
        )
        return frame

    def concordance(
        self,
        federation: Any,
        dataset: str,
        *,
        duration: str | None = None,
        event: str | None = None,
        subset: dict[str, str] | None = None,
    ) -> CIndexResult:
        """Federated Harrell's C-index of this model on ``dataset`` (e.g. the sites' test rows)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "coef_")
        return concordance_index(
            federation,
            dataset,
            duration or self.duration_,
            event or self.event_,
            [str(f) for f in self.feature_names_in_],
            self.coef_.tolist(),
            subset=subset,
        )


def _grid_refusals(out: Any) -> list[str]:
    return [s for s, reason in out.refused.items() if GRID_TOO_FINE in reason]


def _newton_step(h: np.ndarray, g: np.ndarray, features: list[str]) -> np.ndarray:
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
        step = _newton_step(h, g, [str(i) for i in range(p)])
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


__all__ = [
    "CINDEX",
    "COX_RISK_SETS",
    "COX_STRATIFIED",
    "KM_COUNTS",
    "CIndexResult",
    "FederatedCoxPH",
    "KaplanMeierResult",
    "breslow_from_risk_sets",
    "breslow_stratum_terms",
    "coarsen_times",
    "concordance_index",
    "fit_pooled_breslow",
    "harrell_pairs",
    "kaplan_meier",
    "linear_predictor",
    "risk_set_sums",
]
