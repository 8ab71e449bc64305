"""Node side of ``glm_step``: one site's score, Fisher information and deviance.

Each ``glm_step`` release is ``ModelStatistics`` with ``n_params`` = number of
coefficients: a site declines when it has fewer than ``min_subset`` rows or
more than ``max_param_ratio`` parameters per row (a saturated model would
reproduce its rows). Without coefficients a site returns the weighted normal
equations of the first IRLS iteration from R's ``glm`` starting values, so the
hub's first coefficients come without a guess. The Hessian travels as its upper
triangle. The design matrix is built once per (data, spec, outcome, row filter)
and cached in the node process, so a round is one matrix product.

Every released number carries its contribution profile
(:mod:`healthfed.privacy.contributions`): the score, the information's entries and
the deviance are sums over rows, profiled from the rows' residuals, weights and
log-likelihood terms, with the complements ``1 - x`` of 0/1 columns (the intercept
makes ``sum (1-x) c`` derivable). The model-release filter refuses any entry over
fewer than ``min_cell_count`` rows or dominated by a few (so the first round's
``X'X`` over dummies no longer gives 2 x 2 cells under ``min_cell_count``).

One exemption, a stated residual risk: the cross-products of a missing-value indicator
(``<x>_missing``) with another non-intercept column are not checked. Values of vitals and
labs missing completely at random at 1-4 % make those cells (e.g. "SpO2 and CRP both
missing") 1..4 patients at every realistic site, so checking them would refuse every
fit with ``missing="indicator"``; they reveal a missingness pattern of a few patients,
not a recorded value. The indicator's own count (and its complement) is checked.

Trusted iterates: a bounded linear predictor
-------------------------------------------
The researcher chooses ``beta``. Coefficients that push every row's linear predictor
to +-50 except at one value make every IRLS weight (numerically) zero but one patient's,
and the Hessian becomes that patient's record. The node therefore evaluates only
inside a bounded region, checked on its own rows: ``|eta_i| <= eta_bound`` (a site
policy field, default ``ETA_BOUND``) for the
binomial family (probabilities within ``[1e-13, 1 - 1e-13]`` at the default 30) and a spread
``max eta - min eta <= eta_bound`` for the Poisson family (weights ``exp(eta)``).
The Gaussian family's weights do not depend on ``beta``. Outside the region the node
refuses naming the rule. Together with the per-entry support and dominance rules no
single request can isolate a patient: the linear predictor is affine in the
features and bounded over the site's rows, so neighbouring values get weights within
a bounded factor of each other (the rule is shared with every model computation,
:mod:`healthfed.privacy.bounded_region`), and a few heavy rows over many tiny ones
fail dominance.

Why not a node-side fit session that verifies each step? A site sees only its own
sums; the hub's Newton step depends on the other sites' sums, which a site cannot
check without authenticated peer releases (any ``beta`` is the Newton step of some
invented "other sites"). That needs signed site releases and is left open.

Limits (residual risk): the region bounds what one request can do, not what several
can. Two requests at coefficients ``beta_a`` and ``beta_b`` give two known weightings
of the same rows; their difference is a sum over the rows whose weights differ, and
with chosen coefficients (e.g. a shift on one dummy) exact algebra over several
releases recovers counts of cells the single releases do not show (three-way counts,
for instance). Counter-measures across requests (perturbation by cell key, a node-wide
memory of evaluated points) belong to the cross-request protection, not to this step.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from healthfed.compute.glm.combine import combine_glm_step
from healthfed.compute.glm.maths import (
    FAMILIES,
    glm_row_terms,
    glm_start,
    glm_start_weights,
    glm_sums,
    pack_upper,
)
from healthfed.compute.preprocess import cached_design, feature_names, validate_spec
from healthfed.compute.registry import Computation, register
from healthfed.data.sql import holdout_sql, validate_holdout
from healthfed.errors import PolicyDenied
from healthfed.privacy.bounded_region import ETA_BOUND, check_bounded, check_bounded_spread
from healthfed.privacy.contributions import (
    ContributionProfile,
    DesignProfiles,
    profile_rows,
    refine_threshold,
)
from healthfed.privacy.model_release import ModelStatistics

__all__ = ["ETA_BOUND", "GLM_STEP", "glm_profiles", "run_glm_step", "validate_glm_step"]

GLM_STEP = "glm_step"


def validate_glm_step(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``glm_step`` request; every error names the parameter."""
    if not isinstance(params, dict):
        raise PolicyDenied("glm_step: params must be an object")
    allowed = {"family", "preprocess", "target", "positive", "beta", "holdout"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PolicyDenied(f"glm_step: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    family = params.get("family", "binomial")
    if family not in FAMILIES:
        raise PolicyDenied(f"parameter 'family' must be one of {list(FAMILIES)}, got {family!r}")
    target = params.get("target")
    if not isinstance(target, str):
        raise PolicyDenied("parameter 'target' must name the outcome column")
    descriptor.column(target)
    spec = validate_spec(params.get("preprocess"), descriptor, policy)
    if any(c["name"] == target for c in spec["columns"]):
        raise PolicyDenied(f"parameter 'preprocess': the target {target!r} is also a feature")
    p = len(feature_names(spec)) + 1
    beta = params.get("beta")
    if beta is not None:
        if (
            not isinstance(beta, list)
            or len(beta) != p
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in beta)
        ):
            raise PolicyDenied(
                f"parameter 'beta' must be a list of {p} numbers (intercept first) or null"
            )
        beta = np.asarray(beta, dtype=float)
        if not np.all(np.isfinite(beta)):
            raise PolicyDenied("parameter 'beta' must be finite")
    positive = params.get("positive")
    holdout = validate_holdout(params.get("holdout"))
    return {
        "family": family,
        "preprocess": spec,
        "target": target,
        "positive": None if positive is None else str(positive),
        "beta": beta,
        "holdout": holdout,
        "where": holdout_sql(descriptor, holdout),
        "n_params": p,
    }


def run_glm_step(con: Any, descriptor: Any, params: dict[str, Any], policy: Any) -> ModelStatistics:
    """Node side: score, information and deviance at ``beta`` (or IRLS start without it).

    The design matrix is built once per (data, spec, outcome, row filter) and
    cached in the node process, so a round is one matrix product.
    """
    X, y = cached_design(
        con,
        descriptor,
        params["preprocess"],
        params["target"],
        params["positive"],
        params["where"],
        params["family"],
    )
    n, p = len(y), int(params["n_params"])
    if n < policy.min_subset or p > policy.max_param_ratio * n:
        # Nothing computed: the node's disclosure filter refuses with the rule's reason.
        return ModelStatistics(arrays={}, n_rows=n, n_params=p)
    family, n_top = params["family"], int(policy.dominance_n)
    missing = missing_indicators(params["preprocess"])
    if params["beta"] is None:
        xtwx, xtwz = glm_start(family, X, y)
        w, z = glm_start_weights(family, y)
        profiles = glm_profiles(X, w, {"xwz": w * z}, n_top, missing, policy.dominance_k)
        return ModelStatistics(
            arrays={"hessian": pack_upper(xtwx), "xwz": xtwz},
            n_rows=n,
            n_params=p,
            profiles=profiles,
        )
    eta = X @ params["beta"]
    check_trusted_region(family, eta, float(policy.eta_bound))
    resid, w, ll, dev = glm_row_terms(family, eta, y)
    score, hessian, deviance, loglik = glm_sums(family, X, resid, w, ll, dev)
    profiles = glm_profiles(X, w, {"score": resid}, n_top, missing, policy.dominance_k)
    profiles["loglik"] = profile_rows(ll, n_top, (1,))
    profiles["deviance"] = profile_rows(dev, n_top, (1,))
    return ModelStatistics(
        arrays={"score": score, "hessian": pack_upper(hessian)},
        n_rows=n,
        n_params=p,
        scalars={"deviance": deviance, "loglik": loglik},
        profiles=profiles,
    )


def check_trusted_region(family: str, eta: np.ndarray, bound: float = ETA_BOUND) -> None:
    """Refuse coefficients outside the bounded linear-predictor region (module docstring)."""
    if family == "binomial":
        check_bounded("binomial GLM's linear predictor", eta, bound)
    elif family != "gaussian":
        check_bounded_spread(f"{family} GLM's linear predictor", eta, bound)


def missing_indicators(spec: dict[str, Any]) -> np.ndarray:
    """Design positions (intercept = 0) of the spec's missing-value indicator columns."""
    out, j = [], 1
    for c in spec["columns"]:
        j += len(c["levels"]) - 1 if c["type"] == "categorical" else 1
        if c.get("indicator"):
            out.append(j)
            j += 1
    return np.asarray(out, dtype=int)


def glm_profiles(
    X: np.ndarray,
    w: np.ndarray,
    vectors: dict[str, np.ndarray],
    n_top: int,
    missing: np.ndarray | None = None,
    dominance_k: float | None = None,
) -> dict[str, ContributionProfile]:
    """Profiles of ``X' diag(w) X`` (packed upper) and of each ``X' v``, with derived cells.

    ``X`` has the intercept first, so for a 0/1 column ``x`` the sums over ``1 - x``
    are derivable by subtraction: they are profiled under ``"<name>~complements"``.
    ``missing``: positions of missing-value indicators; the Hessian entries pairing one
    with another (non-intercept) column are exempt (see the module docstring).
    ``dominance_k``: the policy's ``k``; entries it decides on the cheap bound skip the
    exact top-n (:func:`~healthfed.privacy.contributions.refine_threshold`: same verdicts).
    """
    n, p = X.shape
    prof = design_profiles(X)
    ind, q = prof.ind, prof.q
    refine = refine_threshold(dominance_k)
    full = prof.gram(w, n_top, refine)
    iu = np.triu_indices(q)
    own = (iu[0] < p) & (iu[1] < p)
    if missing is not None and len(missing):
        base = np.concatenate([np.arange(p), ind])
        bi, bj = base[iu[0]], base[iu[1]]
        flagged = np.isin(bi, missing) | np.isin(bj, missing)
        exempt = flagged & (bi != bj) & (bi != 0) & (bj != 0)
        full = ContributionProfile(full.support, full.abs_sum, full.top, full.n_top, None, exempt)
    out = {"hessian": _select(full, own), "hessian~complements": _select(full, ~own)}
    mask = np.arange(q) < p
    for name, v in vectors.items():
        vp = prof.cross(v, n_top, refine)
        out[name] = _select(vp, mask)
        out[f"{name}~complements"] = _select(vp, ~mask)
    return out


# The designs of the last few fits (one per dataset and spec): a node answers every
# round of a fit on the same cached matrix, so its weight-free profile parts are kept.
_PROFILES: OrderedDict[int, tuple[weakref.ref[np.ndarray], DesignProfiles]] = OrderedDict()
_PROFILES_KEPT = 4
_PROFILES_LOCK = threading.RLock()  # RLock: the weak reference's callback may run inside


def design_profiles(X: np.ndarray) -> DesignProfiles:
    """The :class:`DesignProfiles` of ``X``, kept while ``X`` (the cached design) lives.

    Keyed by the array's identity and checked through a weak reference, so a new
    matrix (new data, spec or filter) never reuses another's counts. Designs are
    read-only once cached (:func:`healthfed.compute.preprocess.cached_design`).
    """
    key = id(X)
    with _PROFILES_LOCK:
        hit = _PROFILES.get(key)
        if hit is not None and hit[0]() is X and not X.flags.writeable:
            _PROFILES.move_to_end(key)
            return hit[1]
    prof = DesignProfiles(X)
    if X.flags.writeable:  # a caller's own matrix may change: do not keep its counts
        return prof

    def forget(_ref: Any, key: int = key) -> None:
        with _PROFILES_LOCK:
            hit = _PROFILES.get(key)
            if hit is not None and hit[0]() is None:
                del _PROFILES[key]

    with _PROFILES_LOCK:
        _PROFILES[key] = (weakref.ref(X, forget), prof)
        while len(_PROFILES) > _PROFILES_KEPT:
            _PROFILES.popitem(last=False)
    return prof


def _select(prof: ContributionProfile, mask: np.ndarray) -> ContributionProfile:
    ex = None if prof.exempt is None else prof.exempt[mask]
    return ContributionProfile(
        prof.support[mask], prof.abs_sum[mask], prof.top[mask], prof.n_top, None, ex
    )


register(
    Computation(
        name=GLM_STEP,
        description="One Newton/IRLS step of a GLM (binomial, gaussian, poisson): the site's "
        "score, Fisher information and deviance at the given coefficients.",
        validate=validate_glm_step,
        run=run_glm_step,
        combine=combine_glm_step,
    )
)
