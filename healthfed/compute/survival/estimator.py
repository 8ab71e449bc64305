"""The researcher's side of federated survival analysis: Kaplan-Meier, C-index, Cox PH.

:func:`kaplan_meier` and :func:`concordance_index` take one round each;
:class:`FederatedCoxPH` takes one round per Newton step (plus, in the
unstratified mode, one per grid it has to coarsen). Every round goes through
``federation.round`` (:class:`~healthfed.compute.rounds.Rounds`), which applies
the federation's ``min_sites`` rule and raises
:class:`~healthfed.errors.TooFewSites`; the only refusal handled here is "time
grid too fine", which the Cox fit answers by doubling the grid width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _stats
from sklearn.base import BaseEstimator  # scikit-learn conventions (get_params/set_params/clone)
from sklearn.utils.validation import check_is_fitted

from healthfed.compute.rounds import RoundOutcome, Rounds
from healthfed.compute.survival.combine import CIndexResult, combine_cindex, combine_km
from healthfed.compute.survival.computations import (
    CINDEX,
    COX_RISK_SETS,
    COX_STRATIFIED,
    KM_COUNTS,
)
from healthfed.compute.survival.cox_rounds import CoxRounds, NewtonPoint
from healthfed.compute.survival.maths import grid_spec, linear_predictor, newton_step
from healthfed.compute.survival.node import GRID_TOO_FINE
from healthfed.errors import DataError, InvalidArgument, TooFewSites
from healthfed.privacy.model_release import array_from_reply

__all__ = ["FederatedCoxPH", "concordance_index", "kaplan_meier"]


def kaplan_meier(
    federation: Rounds,
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
        A ``Federation`` (anything with ``round``); one round.
    dataset, duration, event
        Dataset name at the nodes, the duration column (``>= 0``) and the 0/1 event column.
    time_grid
        Grid width in the duration's unit (points ``w, 2w, ...``) or increasing
        grid points, from the sites' public grids: multiples of their
        ``time_grid_unit`` (default 30) starting at 0; a site refuses any other
        grid. Times are moved up to the next grid point; each site then merges
        steps until its counts pass its policy (see :mod:`healthfed.compute.survival`).
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
        "time_grid": grid_spec(time_grid, InvalidArgument, "argument 'time_grid'"),
        "alpha": float(alpha),
    }
    if subset:
        params["subset"] = dict(subset)
    out = federation.round(KM_COUNTS, dataset, params)
    result = combine_km(out.replies, params)
    result.refused = dict(out.refused)
    result.missing_sites = list(out.missing)
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
    federation: Rounds,
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
    out = federation.round(CINDEX, dataset, params)
    result = combine_cindex(out.replies, params)
    result.refused = dict(out.refused)
    result.missing_sites = list(out.missing)
    return result


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
        federation: Rounds,
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
            A ``Federation`` (anything with ``round``); one round per Newton step.
        dataset, duration, event
            Dataset name, duration column (``>= 0``) and 0/1 event column.
        features
            Numeric, integer or binary covariates (one-hot encode categoricals).
        subset
            ``{column: level}`` rows to keep at every site (e.g. ``{"fold": "train"}``).

        Returns
        -------
        self

        Raises
        ------
        InvalidArgument
            A bad estimator or ``fit`` argument (named).
        TooFewSites
            Fewer sites than the federation's minimum contributed to a round.
        """
        features = self._checked_features(features)
        base: dict[str, Any] = {"duration": duration, "event": event, "features": features}
        if subset:
            base["subset"] = dict(subset)
        computation = COX_STRATIFIED if self.stratify_by_site else COX_RISK_SETS
        grid = (
            None
            if self.stratify_by_site
            else grid_spec(self.time_grid, InvalidArgument, "argument 'time_grid'")
        )
        rounds = CoxRounds(federation, dataset, computation, base, float(self.l2), features)
        self.history_: list[dict[str, Any]] = []
        out, grid = self._first_round(rounds, grid)
        rounds.sites = sorted(out.replies)
        n_rows = sum(int(r["n_rows"]) for r in out.replies.values())
        x_sum = np.sum([array_from_reply(r, "x_sum") for r in out.replies.values()], axis=0)
        means = x_sum / n_rows
        point = rounds.objective(out, np.zeros(len(features)))
        self._check_information(point.h, features)
        # Centring on the pooled means changes neither the estimates nor the likelihood
        # (sum_t d_t = #events); it keeps exp(x.b) in range at the nodes.
        point, step, out, n_iter, converged = self._newton(rounds, point, out, means, grid)
        self._store_fit(point, step, converged, features, means, n_rows)
        self.sites_ = rounds.sites
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

    def _checked_features(self, features: Sequence[str]) -> list[str]:
        """Check the estimator's arguments before any round; the features as a list."""
        if self.ties != "breslow":
            raise InvalidArgument(
                f"argument 'ties': only 'breslow' is implemented, got {self.ties!r}"
            )
        if self.coarsen not in ("auto", "none"):
            raise InvalidArgument("argument 'coarsen' must be 'auto' or 'none'")
        l2 = float(self.l2)
        if not (math.isfinite(l2) and l2 >= 0):
            raise InvalidArgument("argument 'l2' must be a non-negative number")
        features = list(features)
        if not features:
            raise InvalidArgument("argument 'features' must name at least one covariate")
        return features

    def _first_round(
        self, rounds: CoxRounds, grid: dict[str, Any] | None
    ) -> tuple[RoundOutcome, dict[str, Any] | None]:
        """The first round at ``b = 0``, and the grid it was answered on.

        With a width grid and ``coarsen="auto"``, a round that some site refuses as
        "time grid too fine" is asked again on a grid twice as wide (at most
        ``max_coarsen`` times), also when so many sites refused that the round
        failed; if the last grid still fails, that ``TooFewSites`` is raised.
        """
        zero = np.zeros(len(rounds.features))
        if grid is None or "width" not in grid or self.coarsen != "auto":
            return rounds.ask(zero, zero, grid), grid
        tries = 0
        while True:
            failure: TooFewSites | None = None
            try:
                out = rounds.ask(zero, zero, grid)
            except TooFewSites as exc:
                if not any(GRID_TOO_FINE in r for r in exc.refusals.values()):
                    raise
                out = RoundOutcome(replies={}, refused=exc.refusals, checks=exc.checks)
                failure = exc
            if not _grid_refusals(out) or tries >= int(self.max_coarsen):
                if failure is not None:
                    raise failure
                return out, grid
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

    def _newton(
        self,
        rounds: CoxRounds,
        point: NewtonPoint,
        out: RoundOutcome,
        center: np.ndarray,
        grid: dict[str, Any] | None,
    ) -> tuple[NewtonPoint, np.ndarray, RoundOutcome, int, bool]:
        """Newton steps with step halving, one round each, from the first round's ``point``.

        Returns the last point, the last Newton step computed there, the last
        round, the number of rounds and whether the step fell below ``tol``.
        """
        n_iter = 1
        while True:
            step = newton_step(point.h, point.g, rounds.features)
            self.history_.append(
                {
                    "round": n_iter,
                    "loglik": point.ll,
                    "penalized_loglik": point.pll,
                    "max_step": float(np.max(np.abs(step))),
                    "sites": rounds.sites,
                    "refused": dict(out.refused),
                }
            )
            if np.max(np.abs(step)) < self.tol:
                return point, step, out, n_iter, True
            if n_iter >= self.max_iter:
                return point, step, out, n_iter, False
            halvings = 0
            while True:
                beta = point.beta + step
                out = rounds.ask(beta, center, grid)
                n_iter += 1
                cand = rounds.objective(out, beta)
                if cand.pll >= point.pll - 1e-12 * max(1.0, abs(point.pll)) or halvings >= 30:
                    break
                step = step / 2.0
                halvings += 1
            point = cand

    def _store_fit(
        self,
        point: NewtonPoint,
        step: np.ndarray,
        converged: bool,
        features: list[str],
        means: np.ndarray,
        n_rows: int,
    ) -> None:
        """Coefficients (the last step taken when converged), covariance, intervals, names."""
        self.coef_ = point.beta + step if converged else point.beta
        info = -point.h
        self.variance_matrix_ = np.linalg.inv(info)
        self.bse_ = np.sqrt(np.diag(self.variance_matrix_))
        z = _stats.norm.ppf(1 - self.alpha / 2)
        self.conf_int_ = np.column_stack([self.coef_ - z * self.bse_, self.coef_ + z * self.bse_])
        self.feature_names_in_ = np.asarray(features, dtype=object)
        self.n_features_in_ = len(features)
        self.hazard_ratios_ = pd.Series(np.exp(self.coef_), index=features, name="exp(coef)")
        self.log_likelihood_ = point.ll
        self.means_ = means

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
        check_is_fitted(self, "coef_")
        if isinstance(X, pd.DataFrame):
            names = [str(f) for f in self.feature_names_in_]
            missing = [f for f in names if f not in X.columns]
            if missing:
                raise InvalidArgument(f"argument 'X': the frame lacks feature column(s) {missing}")
            return X[names].to_numpy(dtype=float)
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
            raise InvalidArgument(f"argument 'X' must have {self.n_features_in_} columns")
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
        """Coefficients, hazard ratios, standard errors, CIs, z and p (lifelines' column names).

        ``per`` says what one unit is: covariates are not standardised, so every
        hazard ratio is per unit of its covariate.
        """
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
        # Covariates enter on their own scale (no standardisation): a hazard ratio is per unit.
        frame.insert(0, "per", "per unit")
        return frame

    def concordance(
        self,
        federation: Rounds,
        dataset: str,
        *,
        duration: str | None = None,
        event: str | None = None,
        subset: dict[str, str] | None = None,
    ) -> CIndexResult:
        """Federated Harrell's C-index of this model on ``dataset`` (e.g. the sites' test rows)."""
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


def _grid_refusals(out: RoundOutcome) -> list[str]:
    return [s for s, reason in out.refused.items() if GRID_TOO_FINE in reason]
