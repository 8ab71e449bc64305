"""Exact federated generalised linear models: logistic, Gaussian and Poisson regression.

The log-likelihood of a GLM is a sum over rows, so its gradient (score) and
Hessian are sums over sites. Newton-Raphson (for canonical links the same as
IRLS/Fisher scoring) therefore runs *exactly* across sites: every round the
hub sends the current coefficients, each site returns, for its own rows,

* the score ``X^T (y - mu)``,
* the Fisher information ``X^T W X`` (``W`` = ``mu(1-mu)``, ``1`` or ``mu``; its upper
  triangle, as it is symmetric),
* its deviance (and log-likelihood),

and the hub adds them and takes the Newton step. The fitted coefficients,
standard errors, Wald confidence intervals and p-values are those of the same
model fitted to the concatenated rows (up to floating-point rounding, ~1e-12),
which DataSHIELD's ``ds.glm`` also does; no site releases rows or per-row values.

Rounds (each a ``Federation.query``; a deployed round costs seconds):

1. ``preprocess_moments``: the shared design spec (pooled means/SDs, missing
   indicators, agreed declared levels; :mod:`healthfed.compute.preprocess`).
2. ``glm_step`` without coefficients: each site returns the weighted normal
   equations of the first IRLS iteration from R's ``glm`` starting values
   (``mu = (y + 0.5)/2`` binomial, ``y + 0.1`` Poisson, ``y`` Gaussian), so the
   first coefficients come without a guess at the hub. For the Gaussian family
   this already is the least-squares solution.
3. ``glm_step`` with coefficients, until ``max |step| < tol`` or the relative
   change of the (penalised) deviance ``|D - D_old| / (|D| + 0.1) < tol`` (R's
   rule), or when the last two steps show Newton's quadratic convergence and
   extrapolate the next step below ``tol`` (the confirmation round is then
   skipped). The last round's step is applied, so the result is converged to
   about ``tol`` squared; standard errors and the deviance come from the last
   evaluated coefficients, one (quadratically small) step before (relative
   differences ~1e-8).

Typically 6-9 rounds for logistic regression, 3 for Gaussian.

Disclosure. Each ``glm_step`` release is ``ModelStatistics`` with
``n_params`` = number of coefficients: a site declines when it has fewer than
``min_subset`` rows or more than ``max_param_ratio`` parameters per row (a
saturated model would reproduce its rows). The preprocessing round already
applies that rule (``n_params="design"``), so a too-small site declines before
shaping the standardisation; the fit uses the other sites if at least
``federation.min_sites`` remain, and ``sites_``/``refused_`` say who did what.
A site that passes the preprocessing round but declines the first
``glm_step`` (e.g. missing indicators pushed it over the ratio) is left out of
the fit; its rows then only shaped the pooled means/SDs of the spec, and the
fit is exactly the pooled fit of the contributing sites on that design.
The site set must stay the same through the Newton rounds; if it changes (a
node drops out), the fit stops with a ``FederationError`` naming the sites
rather than mixing objectives.

Penalty. ``l2 > 0`` adds ``l2/2 * ||beta||^2`` (intercept not penalised) to
half the deviance, i.e. to the negative log-likelihood for binomial/Poisson
and to ``RSS/2`` for Gaussian: ``l2 = 1/C`` of scikit-learn's
``LogisticRegression``, ``alpha`` of ``Ridge``, ``n * alpha`` of
``PoissonRegressor``. Penalised standard errors use the inverse penalised
information (a common approximation; p-values are then only indicative).

Inference: Wald z statistics for all families (as statsmodels' GLM), the
Gaussian dispersion estimated as ``RSS / (n - p)``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from healthfed.compute.preprocess import (
    FederatedPreprocessor,
    _check_structure,
    cached_design,
    feature_names,
    transform_frame,
    validate_spec,
)
from healthfed.data.sql import holdout_sql, validate_holdout
from healthfed.errors import DataError, FederationError, PolicyDenied, ThresholdViolation
from healthfed.privacy.model_release import ModelStatistics, array_from_reply

__all__ = [
    "FAMILIES",
    "GLM_STEP",
    "FederatedGLM",
    "FederatedLogisticRegression",
    "glm_derivatives",
    "glm_start",
]

GLM_STEP = "glm_step"
FAMILIES = ("binomial", "gaussian", "poisson")
_Z975 = 1.959963984540054


# =====================================================================================
# the maths (numpy; used by the nodes and by the tests' pooled reference)
# =====================================================================================
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


_CHUNK_ROWS = 8_192


def _block_buffer(X: np.ndarray, rows: int) -> np.ndarray:
    """A reusable row-block buffer in ``X``'s memory order (same-layout copies are fastest)."""
    if X.flags.f_contiguous and not X.flags.c_contiguous:
        return np.empty((rows, X.shape[1]), order="F")
    return np.empty((rows, X.shape[1]))


def _sum_log1pexp(eta: np.ndarray) -> float:
    """``sum(log(1 + exp(eta)))``, stably: ``max(eta, 0) + log1p(exp(-|eta|))``.

    The formula of ``np.logaddexp(0, eta)``, written with vectorised ufuncs
    (several times faster than ``logaddexp``'s scalar loop).
    """
    t = np.abs(eta)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    return float(np.sum(t) + np.sum(np.maximum(eta, 0.0)))


def weighted_gram(X: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """``X^T diag(w) X`` for ``w >= 0``, in row blocks through one small reused buffer.

    Each block is scaled by ``sqrt(w)`` and multiplied by its own transpose (a
    BLAS ``syrk``), so no ``n x p`` temporary is allocated per round: on a node
    that is faster (cache-resident blocks) and avoids touching fresh memory.
    """
    n, p = X.shape
    H = np.zeros((p, p))
    if n == 0:
        return H
    buf = _block_buffer(X, min(_CHUNK_ROWS, n))
    sw = None if w is None else np.sqrt(w)
    for lo in range(0, n, _CHUNK_ROWS):
        xc = X[lo : lo + _CHUNK_ROWS]
        b = buf[: len(xc)]
        if sw is None:
            b[...] = xc
        else:
            np.multiply(xc, sw[lo : lo + _CHUNK_ROWS, None], out=b)
        H += b.T @ b
    return H


def glm_derivatives(
    family: str, X: np.ndarray, y: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Score, Fisher information, deviance and log-likelihood at ``beta`` over these rows.

    ``X`` includes the intercept column. For canonical links the observed and
    expected information coincide, so Newton-Raphson is Fisher scoring (IRLS).
    The Gaussian log-likelihood needs the pooled RSS and is returned as 0.

    One pass over ``X`` in row blocks: each block's linear predictor, mean,
    weights, score, deviance and ``syrk`` Gram update are computed while the
    block is in cache, and every temporary is block-sized (no ``n``-length or
    ``n x p`` array is allocated per round).
    """
    if family not in FAMILIES:
        raise PolicyDenied(f"parameter 'family' must be one of {list(FAMILIES)}, got {family!r}")
    n, p = X.shape
    H = np.zeros((p, p))
    score = np.zeros(p)
    loglik = 0.0
    deviance = 0.0
    if n == 0:
        return score, H, deviance, loglik
    beta = np.asarray(beta, dtype=np.float64)
    buf = _block_buffer(X, min(_CHUNK_ROWS, n))
    if family == "poisson":
        from scipy.special import gammaln, xlogy
    for lo in range(0, n, _CHUNK_ROWS):
        xc = X[lo : lo + _CHUNK_ROWS]
        yc = y[lo : lo + _CHUNK_ROWS]
        b = buf[: len(xc)]
        eta = xc @ beta
        if family == "binomial":
            mu = _sigmoid(eta)
            loglik += float(yc @ eta) - _sum_log1pexp(eta)
            w = mu * (1.0 - mu)
            resid = yc - mu
        elif family == "poisson":
            mu = np.exp(eta)
            ye = float(yc @ eta)
            loglik += ye - float(np.sum(mu)) - float(np.sum(gammaln(yc + 1.0)))
            deviance += 2.0 * (float(np.sum(xlogy(yc, yc))) - ye - float(np.sum(yc - mu)))
            w = mu
            resid = yc - mu
        else:  # gaussian
            resid = yc - eta
            deviance += float(resid @ resid)
            w = None
        score += resid @ xc
        if w is None:
            b[...] = xc
        else:
            np.sqrt(w, out=w)
            np.multiply(xc, w[:, None], out=b)
        H += b.T @ b
    if family == "binomial":
        deviance = -2.0 * loglik
    return score, H, deviance, loglik


def glm_start(family: str, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted normal equations ``(X^T W X, X^T W z)`` of IRLS from R's starting values."""
    if family == "binomial":
        mu = (y + 0.5) / 2.0
        eta = np.log(mu / (1.0 - mu))
        w = mu * (1.0 - mu)
    elif family == "poisson":
        mu = y + 0.1
        eta = np.log(mu)
        w = mu
    elif family == "gaussian":
        return weighted_gram(X), X.T @ y
    else:
        raise PolicyDenied(f"parameter 'family' must be one of {list(FAMILIES)}, got {family!r}")
    z = eta + (y - mu) / w
    return weighted_gram(X, w), X.T @ (w * z)


# =====================================================================================
# node side: the registered computation
# =====================================================================================
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
    if params["beta"] is None:
        xtwx, xtwz = glm_start(params["family"], X, y)
        return ModelStatistics(arrays={"hessian": _pack(xtwx), "xwz": xtwz}, n_rows=n, n_params=p)
    score, hessian, deviance, loglik = glm_derivatives(params["family"], X, y, params["beta"])
    return ModelStatistics(
        arrays={"score": score, "hessian": _pack(hessian)},
        n_rows=n,
        n_params=p,
        scalars={"deviance": deviance, "loglik": loglik},
    )


def _pack(H: np.ndarray) -> np.ndarray:
    """Upper triangle (row-major) of a symmetric matrix: halves the bytes on the wire."""
    return H[np.triu_indices(H.shape[0])]


def _unpack(v: np.ndarray) -> np.ndarray:
    p = int(round((math.sqrt(8 * len(v) + 1) - 1) / 2))
    if p * (p + 1) // 2 != len(v):
        raise FederationError(f"glm_step: a packed Hessian of length {len(v)} is not triangular")
    H = np.zeros((p, p))
    H[np.triu_indices(p)] = v
    return H + np.triu(H, 1).T


def combine_glm_step(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict:
    """Hub side: the pooled sums of one round (the Newton loop lives in ``FederatedGLM``).

    Each site sends the Hessian's upper triangle; the pooled one is returned as a matrix.
    """
    sites = sorted(site_replies)
    first = site_replies[sites[0]]
    out: dict[str, Any] = {
        "sites": sites,
        "n_rows": sum(int(r["n_rows"]) for r in site_replies.values()),
    }
    for name in first["arrays"]:
        out[name] = np.sum([array_from_reply(site_replies[s], name) for s in sites], axis=0)
    out["hessian"] = _unpack(out["hessian"])
    for name in first.get("scalars", {}):
        out[name] = float(sum(float(site_replies[s]["scalars"][name]) for s in sites))
    return out


def _register() -> None:
    from healthfed.compute.registry import Computation, register

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


_register()


# =====================================================================================
# hub side: the estimator
# =====================================================================================
try:  # scikit-learn conventions (get_params/set_params/clone)
    from sklearn.base import BaseEstimator, ClassifierMixin
except ImportError:  # pragma: no cover
    BaseEstimator = object  # type: ignore[assignment,misc]
    ClassifierMixin = object  # type: ignore[assignment,misc]


def _two_sided_p(z: np.ndarray) -> np.ndarray:
    """``2 * P(Z > |z|)`` for a standard normal ``Z`` (via ``erfc``, accurate in the tails)."""
    return np.array([math.erfc(abs(v) / math.sqrt(2.0)) if np.isfinite(v) else np.nan for v in z])


def _solve(A: np.ndarray, b: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Solve the Newton system; a singular design is a data problem, named."""
    zero = [names[i] for i in range(len(names)) if A[i, i] <= 1e-12 * max(1.0, A[0, 0])]
    if zero:
        raise DataError(
            f"design column(s) {zero} are constant zero over the contributing sites' rows "
            "(e.g. a level nobody has); drop them or use a penalty"
        )
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        raise DataError(
            "the pooled information matrix is singular: collinear design columns "
            f"among {list(names)}"
        ) from None


def _quadratic_stop(prev_step: float, step: float, tol: float) -> bool:
    """True when Newton is visibly in its quadratic phase and the next step is < ``tol``.

    Near the optimum Newton's steps shrink as ``s_{k+1} ~ c * s_k**2``. With ``c``
    estimated from the last two steps, the step just applied leaves an error of about
    ``c * step**2``; when that is below ``tol`` (and the contraction ``c * step`` is
    clearly < 1, i.e. not the linear regime of a flat or separated likelihood) the
    confirmation round would only measure it, so it is skipped: one deployed round
    (seconds) less per fit.
    """
    if not (math.isfinite(prev_step) and prev_step > 0 and step > 0):
        return False
    c = step / prev_step**2
    return c * step < 0.1 and c * step**2 < tol


class FederatedGLM(BaseEstimator):
    """Exact federated GLM by Newton-Raphson over summed site statistics.

    Parameters
    ----------
    family
        ``"binomial"`` (logistic), ``"gaussian"`` (linear) or ``"poisson"`` (log link).
    l2
        Ridge penalty ``l2/2 * ||beta||^2`` on half the deviance (not on the
        intercept); see the module docstring for the scikit-learn equivalents.
    max_iter
        Most Newton rounds after the IRLS start round.
    tol
        Convergence on ``max |step|`` or the relative deviance change.
    standardize
        Z-score numeric columns with the pooled mean/SD (coefficients are then
        per pooled SD; predictions are unaffected without a penalty).
    missing
        ``"indicator"`` (pooled-mean imputation + indicator) or ``"drop"``.
    secure_aggregation
        Pool every Newton round with Flower's SecAgg+ (``Federation.query(...,
        secure=True)``): the hub sees only the summed score and Hessian, never a
        site's own. The preprocessing round (pooled means, SDs, level counts) stays
        an ordinary disclosure-checked round.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Coefficients of the design columns ``feature_names_``.
    intercept_ : float
    params_ : ndarray
        ``[intercept_, *coef_]``; ``bse_``, ``pvalues_``, ``zvalues_`` and
        ``conf_int_`` (shape ``(p, 2)``, 95% Wald) follow this order.
    cov_params_ : ndarray
        Estimated covariance of ``params_``.
    deviance_, loglik_, aic_, dispersion_, nobs_ : float / int
    n_iter_ : int
        ``glm_step`` rounds (including the start round); ``rounds_`` adds the
        preprocessing round.
    converged_ : bool
    sites_ : list of str
        Sites whose rows are in the fit; ``refused_`` maps declining sites to reasons.
    preprocessor_ : FederatedPreprocessor
        Its ``spec_`` is the design every site built; ``predict*`` apply it.
    history_ : list of dict
        Per round: ``round``, ``deviance``, ``max_step``, ``sites``.
    """

    def __init__(
        self,
        family: str = "binomial",
        l2: float = 0.0,
        max_iter: int = 25,
        tol: float = 1e-10,
        standardize: bool = True,
        missing: str = "indicator",
        secure_aggregation: bool = False,
    ) -> None:
        self.family = family
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.missing = missing
        self.secure_aggregation = secure_aggregation

    # --- fitting --------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.family not in FAMILIES:
            raise PolicyDenied(
                f"argument 'family' must be one of {list(FAMILIES)}, got {self.family!r}"
            )
        if not (isinstance(self.l2, int | float) and math.isfinite(self.l2) and self.l2 >= 0):
            raise PolicyDenied(f"argument 'l2' must be a number >= 0, got {self.l2!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise PolicyDenied(
                f"argument 'max_iter' must be a positive integer, got {self.max_iter!r}"
            )
        if not (isinstance(self.tol, int | float) and self.tol > 0):
            raise PolicyDenied(f"argument 'tol' must be > 0, got {self.tol!r}")

    def fit(
        self,
        federation: Any,
        dataset: str,
        target: str,
        features: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        *,
        positive: str | None = None,
        holdout: dict[str, Any] | None = None,
        preprocess: FederatedPreprocessor | dict[str, Any] | None = None,
    ) -> FederatedGLM:
        """Fit across the federation's sites.

        Parameters
        ----------
        federation
            A ``healthfed`` ``Federation`` (one ``query`` per round).
        dataset, target
            Dataset name at the nodes and the outcome column.
        features
            Feature columns (numeric, binary, categorical). Ignored when
            ``preprocess`` is given.
        categorical
            Columns to one-hot (categorical-typed columns always are).
        positive
            Level of ``target`` counted as 1 for ``binomial`` (default ``"1"``).
        holdout
            ``{"fraction", "seed"}``: fit on the ``"train"`` part of each site's
            deterministic per-patient split (as ``FedAvgLogisticRegression``).
        preprocess
            A fitted ``FederatedPreprocessor`` or spec to reuse (saves a round).

        Returns
        -------
        self
        """
        self._check_params()
        min_sites = int(getattr(federation, "min_sites", 2))
        hold = validate_holdout({**holdout, "part": "train"}) if holdout else None
        self.refused_: dict[str, str] = {}
        self.history_: list[dict[str, Any]] = []
        rounds = 0
        if preprocess is None:
            if not features:
                raise PolicyDenied("argument 'features': give feature columns or 'preprocess'")
            pre = FederatedPreprocessor(
                list(features), categorical, missing=self.missing, standardize=self.standardize
            ).fit(federation, dataset, target, n_params="design", holdout=hold)
            rounds += 1
            self.refused_.update(pre.refused_)
        elif isinstance(preprocess, FederatedPreprocessor):
            pre = preprocess
        else:
            spec = _check_structure(preprocess)
            pre = FederatedPreprocessor([c["name"] for c in spec["columns"]])
            pre.spec_ = spec
            pre.feature_names_ = feature_names(spec)
            pre.sites_, pre.refused_, pre.missing_sites_ = [], {}, []
        spec = pre.spec_
        names = ["intercept", *feature_names(spec)]
        p = len(names)
        P = np.eye(p)
        P[0, 0] = 0.0
        lam = float(self.l2)
        base: dict[str, Any] = {"family": self.family, "preprocess": spec, "target": target}
        if positive is not None:
            base["positive"] = str(positive)
        if hold:
            base["holdout"] = hold
        beta: np.ndarray | None = None
        sites: list[str] | None = None
        info = np.eye(p)
        dev = dev_old = float("nan")
        loglik = 0.0
        n_rows = 0
        converged = False
        n_iter = 0
        prev_step = math.nan
        for it in range(self.max_iter + 1):
            params = {**base, "beta": None if beta is None else beta.tolist()}
            secure = {"secure": True} if getattr(self, "secure_aggregation", False) else {}
            out = federation.round(GLM_STEP, dataset, params, **secure)
            rounds += 1
            n_iter += 1
            self.refused_.update(out.refused)
            if len(out.contributed) < min_sites:
                raise ThresholdViolation(
                    f"glm_step round {it}: {len(out.contributed)} site(s) contributed "
                    f"({', '.join(out.contributed) or 'none'}), at least {min_sites} needed; "
                    f"refused: {out.refused}; missing: {out.missing}; errors: {out.errors}"
                )
            if sites is None:
                sites = out.contributed
            elif out.contributed != sites:
                raise FederationError(
                    f"glm_step round {it}: contributing sites changed from {sites} to "
                    f"{out.contributed} (refused: {out.refused}; missing: {out.missing}); "
                    "a Newton fit needs the same sites in every round"
                )
            agg = combine_glm_step(out.replies, params)
            n_rows = int(agg["n_rows"])
            if beta is None:
                beta = _solve(agg["hessian"] + lam * P, agg["xwz"], names)
                self.history_.append(
                    {
                        "round": it,
                        "deviance": float("nan"),
                        "max_step": float("nan"),
                        "sites": sites,
                    }
                )
                continue
            info = agg["hessian"]
            dev = float(agg["deviance"])
            loglik = float(agg["loglik"])
            pen_dev = dev + lam * float(beta @ P @ beta)
            step = _solve(info + lam * P, agg["score"] - lam * (P @ beta), names)
            max_step = float(np.max(np.abs(step)))
            self.history_.append(
                {"round": it, "deviance": dev, "max_step": max_step, "sites": sites}
            )
            beta = beta + step
            if (
                max_step < self.tol
                or (
                    math.isfinite(dev_old)
                    and abs(pen_dev - dev_old) / (abs(pen_dev) + 0.1) < self.tol
                )
                or _quadratic_stop(prev_step, max_step, self.tol)
            ):
                converged = True
                break
            dev_old = pen_dev
            prev_step = max_step
        if not converged:
            from sklearn.exceptions import ConvergenceWarning

            warnings.warn(
                f"FederatedGLM did not converge in {self.max_iter} Newton rounds "
                f"(last max |step| {self.history_[-1]['max_step']:.3g}); results are approximate",
                ConvergenceWarning,
                stacklevel=2,
            )
        assert beta is not None and sites is not None
        self._finish(beta, info, lam * P, dev, loglik, n_rows, names)
        self.n_iter_ = n_iter
        self.rounds_ = rounds
        self.converged_ = converged
        self.sites_ = sites
        self.preprocessor_ = pre
        self.target_ = target
        self.positive_ = positive
        self.feature_names_in_ = np.asarray([c["name"] for c in spec["columns"]], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _finish(
        self,
        beta: np.ndarray,
        info: np.ndarray,
        penalty: np.ndarray,
        dev: float,
        loglik: float,
        n: int,
        names: list[str],
    ) -> None:
        p = len(beta)
        if self.family == "gaussian":
            dispersion = dev / max(n - p, 1)
            loglik = -0.5 * n * (math.log(2.0 * math.pi * dev / n) + 1.0) if dev > 0 else math.inf
        else:
            dispersion = 1.0
        cov = dispersion * np.linalg.inv(info + penalty)
        bse = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = beta / bse
        self.params_ = beta
        self.cov_params_ = cov
        self.bse_ = bse
        self.zvalues_ = z
        self.pvalues_ = _two_sided_p(z)
        self.conf_int_ = np.column_stack([beta - _Z975 * bse, beta + _Z975 * bse])
        self.dispersion_ = float(dispersion)
        self.deviance_ = float(dev)
        self.loglik_ = float(loglik)
        self.aic_ = float(-2.0 * loglik + 2.0 * (p + (1 if self.family == "gaussian" else 0)))
        self.nobs_ = int(n)
        self.feature_names_ = names[1:]
        self._set_coef(beta)

    def _set_coef(self, beta: np.ndarray) -> None:
        self.coef_ = beta[1:].copy()
        self.intercept_: Any = float(beta[0])

    # --- prediction -----------------------------------------------------------------
    def _design(self, X: Any) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "params_")
        return transform_frame(X, self.preprocessor_.spec_)

    def decision_function(self, X: Any) -> np.ndarray:
        """Linear predictor ``eta`` for the rows of a pandas frame of raw columns."""
        return self._design(X) @ self.params_[1:] + self.params_[0]

    def predict_mean(self, X: Any) -> np.ndarray:
        """Expected outcome ``mu``: probability, mean or rate, by family."""
        eta = self.decision_function(X)
        if self.family == "binomial":
            return _sigmoid(eta)
        if self.family == "poisson":
            return np.exp(eta)
        return eta

    def predict_proba(self, X: Any) -> np.ndarray:
        """``[P(y=0), P(y=1)]`` per row (binomial only)."""
        if self.family != "binomial":
            raise DataError(f"predict_proba needs family='binomial', this model is {self.family!r}")
        p = self.predict_mean(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Class 0/1 at probability 0.5 (binomial), otherwise the expected outcome."""
        if self.family == "binomial":
            return (self.predict_mean(X) >= 0.5).astype(int)
        return self.predict_mean(X)

    # --- reporting ------------------------------------------------------------------
    def summary_frame(self, alpha: float = 0.05) -> Any:
        """Coefficient table: coef, se, z, p, CI (and odds/rate ratios for binomial/Poisson)."""
        import pandas as pd
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "params_")
        if not 0 < alpha < 1:
            raise PolicyDenied(f"argument 'alpha' must be in (0, 1), got {alpha!r}")
        q = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        lo, hi = self.params_ - q * self.bse_, self.params_ + q * self.bse_
        pct = f"{100 * (1 - alpha):g}%"
        df = pd.DataFrame(
            {
                "coef": self.params_,
                "se": self.bse_,
                "z": self.zvalues_,
                "p": self.pvalues_,
                f"ci_lower_{pct}": lo,
                f"ci_upper_{pct}": hi,
            },
            index=pd.Index(["intercept", *self.feature_names_], name="term"),
        )
        ratio = {"binomial": "odds_ratio", "poisson": "rate_ratio"}.get(self.family)
        if ratio:
            df[ratio] = np.exp(self.params_)
            df[f"{ratio}_lower"] = np.exp(lo)
            df[f"{ratio}_upper"] = np.exp(hi)
        return df

    def to_model_spec(self) -> dict[str, Any]:
        """JSON model description for federated evaluation (binomial: ``"logistic"``)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "params_")
        spec = {
            "coef": [float(v) for v in self.params_[1:]],
            "intercept": float(self.params_[0]),
            "preprocess": json.loads(json.dumps(self.preprocessor_.spec_)),
        }
        if self.family == "binomial":
            spec["model"] = "logistic"
        else:
            spec["family"] = self.family
        return spec


class FederatedLogisticRegression(ClassifierMixin, FederatedGLM):
    """Exact federated logistic regression (``FederatedGLM(family="binomial")``).

    As scikit-learn's ``LogisticRegression``: ``coef_`` has shape ``(1, p)``,
    ``intercept_`` shape ``(1,)`` and ``classes_`` is ``[0, 1]``. Parameters
    as in :class:`FederatedGLM` (``l2 = 1/C``).
    """

    family = "binomial"

    def __init__(
        self,
        l2: float = 0.0,
        max_iter: int = 25,
        tol: float = 1e-10,
        standardize: bool = True,
        missing: str = "indicator",
        secure_aggregation: bool = False,
    ) -> None:
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.missing = missing
        self.secure_aggregation = secure_aggregation

    def _set_coef(self, beta: np.ndarray) -> None:
        self.coef_ = beta[1:].reshape(1, -1).copy()
        self.intercept_ = np.array([beta[0]])
        self.classes_ = np.array([0, 1])
