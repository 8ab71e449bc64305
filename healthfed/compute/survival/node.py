"""Node side of the survival computations: request checks, data access and what a site releases.

Every ``validate_*`` checks and normalises a request against the dataset
descriptor (``PolicyDenied``/``DataError`` naming the parameter); every ``run_*``
reads complete cases from the request's DuckDB view ``data`` and returns a
:class:`~healthfed.privacy.model_release.ModelStatistics` for the node's
disclosure filter, never rows. The small-count rules a site applies on top of
that filter (grid steps, merged Kaplan-Meier steps) are explained in the
package docstring (:mod:`healthfed.compute.survival`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.compute.survival.cox_release import (
    breslow_profiles,
    cindex_profiles,
    risk_set_profiles,
)
from healthfed.compute.survival.maths import (
    MAX_GRID_POINTS,
    breslow_stratum_terms,
    bucket_index,
    grid_spec,
    grid_time,
    harrell_pairs,
    km_merge_steps,
    km_restrict_steps,
    linear_predictor,
    risk_set_sums,
)
from healthfed.data.sql import quote_ident, sql_literal
from healthfed.errors import DataError, PolicyDenied, ThresholdViolation
from healthfed.privacy.model_release import ModelStatistics

__all__ = [
    "GRID_TOO_FINE",
    "NOT_PUBLIC_GRID",
    "public_grid",
    "run_cindex",
    "run_cox_risk_sets",
    "run_cox_stratified",
    "run_km",
    "validate_cindex",
    "validate_cox_risk_sets",
    "validate_cox_stratified",
    "validate_km",
]

#: The refusal a site gives for a grid whose steps would reveal small counts (the hub coarsens).
GRID_TOO_FINE = "time grid too fine"
#: The refusal a site gives for a ``time_grid`` that is not one of its public grids.
NOT_PUBLIC_GRID = "not a public time grid"
#: Most numbers one risk-set release may hold (grid steps x (1 + p + p(p+1)/2)).
MAX_RELEASE_FLOATS = 5_000_000
#: Most covariates a survival request may name.
MAX_FEATURES = 500


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


# --- public time grids ----------------------------------------------------------------
def _multiple(value: float, unit: float) -> int | None:
    """``value / unit`` when it is a whole number >= 1 (to rounding), else None."""
    k = value / unit
    r = round(k)
    return int(r) if r >= 1 and abs(k - r) <= 1e-9 * max(1.0, k) else None


def public_grid(grid: dict[str, Any], policy: Any, *, nested: bool) -> dict[str, Any]:
    """Refuse a ``time_grid`` that is not one of this site's public grids; return it.

    Public grids start at 0 and step by multiples of the site's ``time_grid_unit``
    ``u`` (:class:`~healthfed.policy.SitePolicy`), so no request can place an edge
    at an offset it chose (one day after another grid's edge, say). Kaplan-Meier
    (``nested=False``) accepts a width ``k * u`` or points that are multiples of ``u``:
    its release is always derived from the merged steps on ``u`` itself
    (:func:`~healthfed.compute.survival.maths.km_restrict_steps`). Risk-set sums
    (``nested=True``) accept widths ``2**j * u`` only, a nested family: the edges of
    any accepted grid are edges of every finer one, so two releases never make a
    step finer than the finer grid, which passed the small-count rule itself.
    """
    unit = float(policy.time_grid_unit)
    if unit <= 0:
        if int(policy.min_cell_count) > 1:
            raise PolicyDenied(
                f"parameter 'time_grid': {NOT_PUBLIC_GRID}: this site sets no public time grid "
                "(time_grid_unit = 0) but protects small counts, so it releases no survival "
                "counts"
            )
        return grid
    hint = f"multiples of this site's public unit time_grid_unit = {unit:g}, starting at 0"
    if "width" in grid:
        k = _multiple(float(grid["width"]), unit)
        if k is None or (nested and k & (k - 1)):
            want = "a power-of-two multiple (1, 2, 4, ...) of" if nested else "a multiple of"
            raise PolicyDenied(
                f"parameter 'time_grid': {NOT_PUBLIC_GRID}: the width {grid['width']:g} is not "
                f"{want} this site's public unit time_grid_unit = {unit:g}"
            )
        return grid
    if nested:
        raise PolicyDenied(
            f"parameter 'time_grid': {NOT_PUBLIC_GRID}: this site accepts risk-set sums on "
            f"public widths only ({{'width': 2**j * {unit:g}}}), not explicit points"
        )
    if any(_multiple(float(p), unit) is None for p in grid["points"]):
        raise PolicyDenied(f"parameter 'time_grid': {NOT_PUBLIC_GRID}: points must be {hint}")
    return grid


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
    xc = X - params["center"]
    profiles = breslow_profiles(
        t, e, X, xc, params["coef"], int(policy.dominance_n), float(policy.eta_bound)
    )
    ll, g, h = breslow_stratum_terms(t, e, xc, params["coef"])
    return ModelStatistics(
        arrays={"gradient": g, "hessian": h, "x_sum": X.sum(axis=0)},
        n_rows=n,
        n_params=p,
        scalars={"loglik": ll},
        counts={"events": [n_events]},
        profiles=profiles,
    )


# --- Cox, one baseline hazard: risk-set sums on a public grid ------------------------
def validate_cox_risk_sets(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``cox_risk_sets`` request: as ``cox_site_newton`` plus ``time_grid``."""
    out = validate_cox_stratified(params, descriptor, policy)
    if "time_grid" not in params:
        raise PolicyDenied("parameter 'time_grid' is required ({'width': w} or {'points': [...]})")
    out["time_grid"] = public_grid(grid_spec(params["time_grid"]), policy, nested=True)
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
    profiles = risk_set_profiles(
        idx, e, X, xc, params["coef"], n_steps, int(policy.dominance_n), float(policy.eta_bound)
    )
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
        profiles=profiles,
    )


# --- Kaplan-Meier --------------------------------------------------------------------
def validate_km(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``km_counts`` request: ``duration``, ``event``, ``time_grid``, ``subset``."""
    out = _validate_common({**params, "features": []}, descriptor, need_features=False)
    default = float(policy.time_grid_unit) or 30.0
    out["time_grid"] = public_grid(
        grid_spec(params.get("time_grid", default)), policy, nested=False
    )
    alpha = params.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise PolicyDenied("parameter 'alpha' must be in (0, 1)")
    out["alpha"] = float(alpha)
    return out


def _km_steps(idx: np.ndarray, e: np.ndarray, n_steps: int, policy: Any) -> dict[str, Any]:
    if n_steps > MAX_GRID_POINTS:
        raise PolicyDenied(
            f"parameter 'time_grid': {n_steps} grid steps; at most {MAX_GRID_POINTS} allowed"
        )
    return km_merge_steps(idx, e, n_steps, policy.min_cell_count, _m_at_risk(policy))


def _km_on_public_grid(
    t: np.ndarray, e: np.ndarray, grid: dict[str, Any], policy: Any
) -> dict[str, Any]:
    """Merge on the public unit grid, then keep only the requested grid's edges.

    Whatever public grid a request names, the release is a function of one merged
    release (the unit grid's), so no two requests can be differenced below it.
    """
    unit = float(policy.time_grid_unit)
    base = {"width": unit}
    idx = bucket_index(t, base)
    merged = _km_steps(idx, e, int(idx.max()) + 1 if idx.size else 0, policy)
    ends = np.asarray(merged["ends"], dtype=np.int64) + 1  # edge k * unit
    if "width" in grid:
        k = int(round(float(grid["width"]) / unit))
        keep = ends % k == 0
    else:
        wanted = {int(round(float(p) / unit)) for p in grid["points"]}
        keep = np.isin(ends, sorted(wanted))
    out = km_restrict_steps(merged, keep)
    out["ends"] = [int(j) for j in out["ends"]]
    out["grid"] = base
    return out


def run_km(con: Any, descriptor: Any, params: dict, policy: Any) -> ModelStatistics:
    """Merged KM steps: ends, at risk, events, censored; every count 0 or >= min_cell_count."""
    t, e, _ = _fetch(con, descriptor, params)
    grid = params["time_grid"]
    if float(policy.time_grid_unit) > 0:
        merged = _km_on_public_grid(t, e, grid, policy)
        grid = merged["grid"]
    else:  # no public grid: only a site releasing exact counts (see public_grid)
        idx = bucket_index(t, grid)
        n_steps = (
            len(grid["points"]) if "points" in grid else (int(idx.max()) + 1 if idx.size else 0)
        )
        merged = _km_steps(idx, e, n_steps, policy)
    return ModelStatistics(
        arrays={"time": grid_time(np.asarray(merged["ends"], dtype=np.int64), grid)},
        layout=("time",),  # public grid points, not a sum over patients
        n_rows=int(t.size),
        counts={
            "at_risk": merged["at_risk"],
            "events": merged["events"],
            "censored": merged["censored"],
            "remaining": [merged["remaining"]],
        },
    )


# --- Harrell's C-index ---------------------------------------------------------------
def validate_cindex(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``survival_cindex`` request: ``duration``, ``event``, ``features``, ``coef``."""
    out = _validate_common(params, descriptor, need_features=True)
    out["coef"] = _vector(params, "coef", len(out["features"]), None)
    return out


def run_cindex(con: Any, descriptor: Any, params: dict, policy: Any) -> ModelStatistics:
    """Concordant/discordant/tied comparable pairs of the linear predictor on this site's rows."""
    t, e, X = _fetch(con, descriptor, params)
    risk = linear_predictor(X, params["coef"])
    conc, disc, tied = harrell_pairs(t, e, risk)
    return ModelStatistics(
        arrays={},
        n_rows=int(t.size),
        n_params=0,
        scalars={"concordant": conc, "discordant": disc, "tied_risk": tied},
        profiles=cindex_profiles(t, e, risk, int(policy.dominance_n)),
    )
