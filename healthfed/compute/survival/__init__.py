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
  (a width ``2**j * time_grid_unit``, a nested family, so the edges of any two
  accepted grids are those of the finer one; never explicit points or the
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
Time grids are public: they start at 0 and step by multiples of the site's
``time_grid_unit`` ``u`` (:class:`~healthfed.policy.SitePolicy`, default 30),
never at offsets a researcher chooses (:func:`.node.public_grid`). A site first
merges the steps of its unit grid ``u, 2u, ...`` (from the start) until a step's
events and censorings are each 0 or >= ``min_cell_count``; it stops at the first
step with fewer than ``max(min_subset, min_cell_count)`` at risk, and drops its
last step if the number still at risk after it would be 1..``min_cell_count-1``
(it is derivable). A request on a coarser public grid (a width ``k u`` or points
that are multiples of ``u``) gets those merged steps joined at the requested
edges only (:func:`.maths.km_restrict_steps`): every release is a function of the
one merged release, so asking on several grids (shifted by a day, say) cannot be
differenced below it. No released count is in 1..``min_cell_count-1``. The step
edges a site keeps do reveal that a dropped edge had a small count before it
(like any primary suppression, "<5" is implied, never the value).

The pooled curve is built from pooled counts on the common grid
(:func:`.combine.pool_km_steps`): at every edge any site kept, the sites' numbers
at risk and exits are added, each site's exits counted at its own next kept edge
and its unreleased tail (``remaining``) censored at its last edge (listed in
``truncated``). With thresholds 1 on an exact grid (a site with
``time_grid_unit = 0``) the curves equal the exact pooled KM; otherwise they are
the KM of the times coarsened as above. Confidence intervals: Greenwood's
variance with the exponential ("log-log") transform, as lifelines'
``KaplanMeierFitter``.

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

Modules
-------
:mod:`.maths` (pure numpy: Breslow terms, risk-set sums, grids and coarsening,
KM counts, Harrell's pairs, the Newton step, the pooled baseline fit),
:mod:`.node` (request checks and what a site releases), :mod:`.combine` (the
hub's pooling), :mod:`.computations` (the registered computations),
:mod:`.estimator` (:func:`kaplan_meier`, :func:`concordance_index`,
:class:`FederatedCoxPH`) and :mod:`.cox_rounds` (one Cox fit's rounds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthfed._lazy import lazy_getattr
from healthfed.compute.survival.computations import CINDEX, COX_RISK_SETS, COX_STRATIFIED, KM_COUNTS
from healthfed.compute.survival.maths import (
    breslow_from_risk_sets,
    breslow_stratum_terms,
    coarsen_times,
    fit_pooled_breslow,
    harrell_pairs,
    km_merge_steps,
    linear_predictor,
    newton_step,
    risk_set_sums,
)
from healthfed.compute.survival.node import GRID_TOO_FINE

if TYPE_CHECKING:
    from healthfed.compute.survival.combine import CIndexResult, KaplanMeierResult
    from healthfed.compute.survival.estimator import FederatedCoxPH, concordance_index, kaplan_meier

__all__ = [
    "CINDEX",
    "COX_RISK_SETS",
    "COX_STRATIFIED",
    "GRID_TOO_FINE",
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
    "km_merge_steps",
    "linear_predictor",
    "newton_step",
    "risk_set_sums",
]


# The researcher's estimators (scikit-learn, scipy) and the hub's results (pandas) are
# imported on first use (PEP 562): a node imports this package to register its
# computations and needs none of them.
_LAZY = {
    "CIndexResult": "healthfed.compute.survival.combine",
    "KaplanMeierResult": "healthfed.compute.survival.combine",
    "FederatedCoxPH": "healthfed.compute.survival.estimator",
    "concordance_index": "healthfed.compute.survival.estimator",
    "kaplan_meier": "healthfed.compute.survival.estimator",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
