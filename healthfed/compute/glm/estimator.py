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

Rounds (each a ``Federation.round``; a deployed round costs seconds):

1. ``preprocess_moments``: the shared design spec (pooled means/SDs, missing
   indicators, agreed declared levels; :mod:`healthfed.compute.preprocess`).
2. ``glm_step`` without coefficients: each site returns the weighted normal
   equations of the first IRLS iteration from R's ``glm`` starting values
   (``mu = (y + 0.5)/2`` binomial, ``y + 0.1`` Poisson, ``y`` Gaussian), so the
   first coefficients come without a guess at the aggregator. For the Gaussian family
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
``federation.min_sites`` remain (the round raises ``TooFewSites`` otherwise),
and ``sites_``/``refused_`` say who did what.
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
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from healthfed.compute.glm.combine import (
    combine_glm_step,
    newton_solve,
    quadratic_stop,
    wald_inference,
)
from healthfed.compute.glm.maths import FAMILIES, sigmoid
from healthfed.compute.glm.node import GLM_STEP
from healthfed.compute.preprocess import (
    FederatedPreprocessor,
    feature_names,
    term_units,
    transform_frame,
)
from healthfed.data.sql import validate_holdout
from healthfed.errors import DataError, FederationError, InvalidArgument

try:  # scikit-learn conventions (get_params/set_params/clone)
    from sklearn.base import BaseEstimator, ClassifierMixin
except ImportError:  # pragma: no cover
    BaseEstimator = object  # type: ignore[assignment,misc]
    ClassifierMixin = object  # type: ignore[assignment,misc]

__all__ = ["FederatedGLM", "FederatedLogisticRegression"]


@dataclass
class _Newton:
    """The hub's Newton loop between rounds: coefficients, site set, last evaluation."""

    names: list[str]
    lam: float
    P: np.ndarray
    info: np.ndarray
    beta: np.ndarray | None = None
    sites: list[str] | None = None
    dev: float = float("nan")
    dev_old: float = float("nan")
    loglik: float = 0.0
    n_rows: int = 0
    prev_step: float = float("nan")
    history: list[dict[str, Any]] = field(default_factory=list)


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
        Pool every Newton round with Flower's SecAgg+ (``Federation.round(...,
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
            raise InvalidArgument(
                f"argument 'family' must be one of {list(FAMILIES)}, got {self.family!r}"
            )
        if not (isinstance(self.l2, int | float) and math.isfinite(self.l2) and self.l2 >= 0):
            raise InvalidArgument(f"argument 'l2' must be a number >= 0, got {self.l2!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise InvalidArgument(
                f"argument 'max_iter' must be a positive integer, got {self.max_iter!r}"
            )
        if not (isinstance(self.tol, int | float) and self.tol > 0):
            raise InvalidArgument(f"argument 'tol' must be > 0, got {self.tol!r}")

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
            A ``healthfed`` ``Federation`` (one ``round`` per Newton step).
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

        Raises
        ------
        InvalidArgument
            A bad estimator parameter, or neither ``features`` nor ``preprocess``.
        TooFewSites
            A round had fewer contributing sites than the federation requires.
        FederationError
            The contributing sites changed between Newton rounds.
        """
        self._check_params()
        hold = validate_holdout({**holdout, "part": "train"}) if holdout else None
        #: the split fitted on (``None``: every row); saved with the model artefact
        self.holdout_ = {k: v for k, v in hold.items() if k != "part"} if hold else None
        self.refused_: dict[str, str] = {}
        self.history_: list[dict[str, Any]] = []
        pre, rounds = self._preprocessor(
            federation, dataset, target, features, categorical, hold, preprocess
        )
        spec = pre.spec_
        base: dict[str, Any] = {"family": self.family, "preprocess": spec, "target": target}
        if positive is not None:
            base["positive"] = str(positive)
        if hold:
            base["holdout"] = hold
        st, converged, n_iter = self._newton_loop(
            federation, dataset, base, ["intercept", *feature_names(spec)]
        )
        if not converged:
            self._warn_not_converged()
        assert st.beta is not None and st.sites is not None
        self._finish(st.beta, st.info, st.lam * st.P, st.dev, st.loglik, st.n_rows, st.names)
        self.n_iter_ = n_iter
        self.rounds_ = rounds + n_iter
        self.converged_ = converged
        self.sites_ = st.sites
        self.preprocessor_ = pre
        self.target_ = target
        self.positive_ = positive
        self.feature_names_in_ = np.asarray([c["name"] for c in spec["columns"]], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _warn_not_converged(self) -> None:
        from sklearn.exceptions import ConvergenceWarning  # scikit-learn: when needed

        warnings.warn(
            f"FederatedGLM did not converge in {self.max_iter} Newton rounds "
            f"(last max |step| {self.history_[-1]['max_step']:.3g}); results are approximate",
            ConvergenceWarning,
            stacklevel=3,
        )

    def _preprocessor(
        self,
        federation: Any,
        dataset: str,
        target: str,
        features: Sequence[str] | None,
        categorical: Sequence[str] | None,
        hold: dict[str, Any] | None,
        preprocess: FederatedPreprocessor | dict[str, Any] | None,
    ) -> tuple[FederatedPreprocessor, int]:
        """The design spec: given, or fitted in one ``preprocess_moments`` round (and 1)."""
        if isinstance(preprocess, FederatedPreprocessor):
            return preprocess, 0
        if preprocess is not None:
            return FederatedPreprocessor.from_spec(preprocess), 0
        if not features:
            raise InvalidArgument("argument 'features': give feature columns or 'preprocess'")
        pre = FederatedPreprocessor(
            list(features), categorical, missing=self.missing, standardize=self.standardize
        ).fit(federation, dataset, target, n_params="design", holdout=hold)
        self.refused_.update(pre.refused_)
        return pre, 1

    def _newton_loop(
        self, federation: Any, dataset: str, base: dict[str, Any], names: list[str]
    ) -> tuple[_Newton, bool, int]:
        """The IRLS start round, then Newton rounds until converged or ``max_iter``."""
        p = len(names)
        P = np.eye(p)
        P[0, 0] = 0.0
        st = _Newton(names=names, lam=float(self.l2), P=P, info=np.eye(p), history=self.history_)
        n_iter = 0
        for it in range(self.max_iter + 1):
            agg = self._glm_round(federation, dataset, base, st, it)
            n_iter += 1
            if st.beta is None:
                st.beta = newton_solve(agg["hessian"] + st.lam * P, agg["xwz"], names)
                st.history.append(
                    {"round": it, "deviance": math.nan, "max_step": math.nan, "sites": st.sites}
                )
                continue
            if self._newton_step(st, agg, it):
                return st, True, n_iter
        return st, False, n_iter

    def _glm_round(
        self, federation: Any, dataset: str, base: dict[str, Any], st: _Newton, it: int
    ) -> dict[str, Any]:
        """One ``glm_step`` round at ``st.beta``, pooled; the site set must not change."""
        params = {**base, "beta": None if st.beta is None else st.beta.tolist()}
        secure = {"secure": True} if getattr(self, "secure_aggregation", False) else {}
        out = federation.round(GLM_STEP, dataset, params, **secure)
        self.refused_.update(out.refused)
        if st.sites is None:
            st.sites = out.contributed
        elif out.contributed != st.sites:
            raise FederationError(
                f"glm_step round {it}: contributing sites changed from {st.sites} to "
                f"{out.contributed} (refused: {out.refused}; missing: {out.missing}); "
                "a Newton fit needs the same sites in every round"
            )
        agg = combine_glm_step(out.replies, params)
        st.n_rows = int(agg["n_rows"])
        return agg

    def _newton_step(self, st: _Newton, agg: dict[str, Any], it: int) -> bool:
        """Take the Newton step from this round's sums; True when the fit has converged.

        Converged: ``max |step| < tol``, the relative change of the penalised deviance
        below ``tol`` (R's rule), or Newton's quadratic phase predicting the next step
        below ``tol`` (:func:`~healthfed.compute.glm.combine.quadratic_stop`).
        """
        assert st.beta is not None
        beta, lam, P = st.beta, st.lam, st.P
        st.info = agg["hessian"]
        st.dev = float(agg["deviance"])
        st.loglik = float(agg["loglik"])
        pen_dev = st.dev + lam * float(beta @ P @ beta)
        step = newton_solve(st.info + lam * P, agg["score"] - lam * (P @ beta), st.names)
        max_step = float(np.max(np.abs(step)))
        st.history.append(
            {"round": it, "deviance": st.dev, "max_step": max_step, "sites": st.sites}
        )
        st.beta = beta + step
        if (
            max_step < self.tol
            or (
                math.isfinite(st.dev_old)
                and abs(pen_dev - st.dev_old) / (abs(pen_dev) + 0.1) < self.tol
            )
            or quadratic_stop(st.prev_step, max_step, self.tol)
        ):
            return True
        st.dev_old = pen_dev
        st.prev_step = max_step
        return False

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
        for name, value in wald_inference(self.family, beta, info, penalty, dev, loglik, n).items():
            setattr(self, name, value)
        self.feature_names_ = names[1:]
        self._set_coef(beta)

    def _set_coef(self, beta: np.ndarray) -> None:
        self.coef_ = beta[1:].copy()
        self.intercept_: Any = float(beta[0])

    # --- prediction -----------------------------------------------------------------
    def _design(self, X: Any) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted  # scikit-learn: when needed

        check_is_fitted(self, "params_")
        return transform_frame(X, self.preprocessor_.spec_)

    def decision_function(self, X: Any) -> np.ndarray:
        """Linear predictor ``eta`` for the rows of a pandas frame of raw columns."""
        return self._design(X) @ self.params_[1:] + self.params_[0]

    def predict_mean(self, X: Any) -> np.ndarray:
        """Expected outcome ``mu``: probability, mean or rate, by family."""
        eta = self.decision_function(X)
        if self.family == "binomial":
            return sigmoid(eta)
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
        """Coefficient table: per, coef, se, z, p, CI (and odds/rate ratios for binomial/Poisson).

        ``per`` says what one unit of the term is (``per SD (14.8)`` for a numeric
        column standardised with the pooled SD, ``per unit``, ``male vs female``...).
        """
        import pandas as pd
        from sklearn.utils.validation import check_is_fitted  # scikit-learn: when needed

        check_is_fitted(self, "params_")
        if not 0 < alpha < 1:
            raise InvalidArgument(f"argument 'alpha' must be in (0, 1), got {alpha!r}")
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
        # What one unit of each term is: odds ratios are "per SD" of a standardised column.
        df.insert(0, "per", ["", *term_units(self.preprocessor_.spec_)])
        ratio = {"binomial": "odds_ratio", "poisson": "rate_ratio"}.get(self.family)
        if ratio:
            df[ratio] = np.exp(self.params_)
            df[f"{ratio}_lower"] = np.exp(lo)
            df[f"{ratio}_upper"] = np.exp(hi)
        return df

    def to_model_spec(self) -> dict[str, Any]:
        """JSON model description for federated evaluation (binomial: ``"logistic"``)."""
        from sklearn.utils.validation import check_is_fitted  # scikit-learn: when needed

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
