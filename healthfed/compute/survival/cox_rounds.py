"""The rounds of one Cox fit: a fixed request, a fixed set of sites, the penalised objective.

:class:`FederatedCoxPH` asks one round per Newton step through
:class:`CoxRounds`; each round's replies are pooled into a :class:`NewtonPoint`
(penalised log-likelihood, gradient and Hessian at the coefficients asked).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from healthfed.compute.rounds import RoundOutcome, Rounds
from healthfed.compute.survival.combine import combine_cox_risk_sets, combine_cox_stratified
from healthfed.compute.survival.computations import COX_STRATIFIED
from healthfed.errors import FederationError

__all__ = ["CoxRounds", "NewtonPoint"]


class NewtonPoint(NamedTuple):
    """The penalised objective at ``beta``: log-likelihood, gradient, Hessian; ``ll`` unpenalised."""

    beta: np.ndarray
    pll: float
    g: np.ndarray
    h: np.ndarray
    ll: float


class CoxRounds:
    """The rounds of one Cox fit: a fixed request, a fixed set of sites, the penalised objective."""

    def __init__(
        self,
        federation: Rounds,
        dataset: str,
        computation: str,
        base: dict[str, Any],
        l2: float,
        features: list[str],
    ) -> None:
        self.federation = federation
        self.dataset = dataset
        self.computation = computation
        self.base = base
        self.l2 = l2
        self.features = features
        self.sites: list[str] = []  # the first round's contributors; every round must match

    def ask(
        self, beta: np.ndarray, center: np.ndarray, grid: dict[str, Any] | None
    ) -> RoundOutcome:
        params = {**self.base, "coef": beta.tolist(), "center": center.tolist()}
        if grid is not None:
            params["time_grid"] = grid
        return self.federation.round(self.computation, self.dataset, params)

    def objective(self, out: RoundOutcome, beta: np.ndarray) -> NewtonPoint:
        """Pool one round's replies at ``beta``; the contributors must not change mid-fit."""
        if sorted(out.replies) != self.sites:
            raise FederationError(
                f"the contributing sites changed during the Newton fit (first {self.sites}, now "
                f"{sorted(out.replies)}; refused: {out.refused}; missing: {out.missing}); the "
                "objective would change, so the fit stops"
            )
        if self.computation == COX_STRATIFIED:
            res = combine_cox_stratified(out.replies, {})
        else:
            res = combine_cox_risk_sets(out.replies, {"coef": beta.tolist()})
        ll = float(res["loglik"])
        g = np.asarray(res["gradient"])
        h = np.asarray(res["hessian"])
        l2, p = self.l2, len(self.features)
        return NewtonPoint(
            beta, ll - 0.5 * l2 * float(beta @ beta), g - l2 * beta, h - l2 * np.eye(p), ll
        )
