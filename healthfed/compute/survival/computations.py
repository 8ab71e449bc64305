"""The four survival computations a node answers, as registered: name, node side, aggregator side.

Importing this module registers them (:mod:`healthfed.compute.registry`); the
estimator names them by the constants below.
"""

from __future__ import annotations

from healthfed._lazy import imported_on_call
from healthfed.compute.registry import Computation, register
from healthfed.compute.survival.node import (
    run_cindex,
    run_cox_risk_sets,
    run_cox_stratified,
    run_km,
    validate_cindex,
    validate_cox_risk_sets,
    validate_cox_stratified,
    validate_km,
)

__all__ = ["CINDEX", "COX_RISK_SETS", "COX_STRATIFIED", "KM_COUNTS"]

# the hub's pooling (pandas result tables), imported when a round is combined
_COMBINE = {
    name: imported_on_call("healthfed.compute.survival.combine", name)
    for name in ("combine_cindex", "combine_cox_risk_sets", "combine_cox_stratified", "combine_km")
}

COX_STRATIFIED = "cox_site_newton"
COX_RISK_SETS = "cox_risk_sets"
KM_COUNTS = "km_counts"
CINDEX = "survival_cindex"

register(
    Computation(
        name=COX_STRATIFIED,
        description="Cox PH (Breslow), stratified by site: this site's partial log-likelihood, "
        "gradient and Hessian at the aggregator's coefficients.",
        validate=validate_cox_stratified,
        run=run_cox_stratified,
        combine=_COMBINE["combine_cox_stratified"],
    )
)
register(
    Computation(
        name=COX_RISK_SETS,
        description="Cox PH (Breslow), one baseline hazard: risk-set sums S0/S1/S2 and event "
        "counts per step of a public time grid (steps with 1..k-1 events or censorings refused).",
        validate=validate_cox_risk_sets,
        run=run_cox_risk_sets,
        combine=_COMBINE["combine_cox_risk_sets"],
    )
)
register(
    Computation(
        name=KM_COUNTS,
        description="Kaplan-Meier counts (at risk, events, censored) per grid step, merged so "
        "every count is 0 or >= min_cell_count.",
        validate=validate_km,
        run=run_km,
        combine=_COMBINE["combine_km"],
    )
)
register(
    Computation(
        name=CINDEX,
        description="Harrell's C-index pair counts (concordant, discordant, tied) of a linear "
        "risk score on this site's rows.",
        validate=validate_cindex,
        run=run_cindex,
        combine=_COMBINE["combine_cindex"],
    )
)
