"""The bounded-region rule: a node evaluates researcher-chosen models only where they are smooth.

Every model computation evaluates parameters the researcher chose: GLM and Cox
coefficients, FedAvg weights, the model an evaluation scores and its
recalibration candidates. A crafted model can turn a continuous feature into an
indicator of one value -- ``tanh(1000 (age - 93) + 500)`` is 1 at age 93 and
-1 below it -- and then every released sum (a Hessian entry, a weight update, a
Brier sum) isolates the patients at that value, in one reply or as the
difference of two replies at slightly different parameters. No per-entry rule
catches the second case: each reply is a sum over everyone.

So a node evaluates a model only if every pre-activation it computes on its own
rows -- each hidden unit's input, each output logit, each recalibrated logit --
stays within ``[-bound, bound]`` (the site policy field ``eta_bound``, default
:data:`ETA_BOUND`). A pre-activation is an affine function of the standardised
features (or of the hidden units); bounded over the site's rows, its slope is at
most ``2 bound / range`` per unit of the feature, so no unit can step from one
patient to the next: neighbouring values get weights within a bounded factor,
and isolating one value needs high-order cancellation across many hidden units,
which float64 sums do not carry. This is the limit stated in the README as a
residual risk: many requests at smooth models are a (badly conditioned)
deconvolution, not an exact read-out.

Linear predictors only: two layers compose. ``sigmoid(h tanh(k (age - c)) + h)`` keeps
every pre-activation within the bound, yet steps from 1/2 to 1 within a few years of
``c``; two requests at neighbouring ``c`` isolate a patient whose age is a few years
from everyone else's. So nonlinear models are trained only with differential privacy
and not evaluated unless the site accepts that risk (:func:`require_linear_or_dp`).

For the Poisson family and Cox, whose weights are ``exp(eta)``, only the spread
``max eta - min eta`` matters (an offset cancels in the partial likelihood), so
the spread is bounded instead.
"""

from __future__ import annotations

import numpy as np

from healthfed.errors import PolicyDenied, ThresholdViolation

__all__ = ["ETA_BOUND", "check_bounded", "check_bounded_spread", "require_linear_or_dp"]

#: Default bound on every pre-activation a node evaluates. Fitted models reach 13-22 on
#: outlying patients (measured: the exact fit of the 4 x 250k speed cohort 13.4, FedAdam
#: on the test cohorts 21.4), so the earlier 12 refused real fits. At 30 a unit's slope
#: over an 80-year age range is at most 0.75 per year: a tanh unit still changes over
#: about three years, not between one patient and the next.
ETA_BOUND = 30.0


def check_bounded(what: str, values: np.ndarray, bound: float = ETA_BOUND) -> None:
    """Refuse when any of ``values`` (pre-activations on the site's rows) exceeds ``bound``.

    ``what`` names the pre-activation in the refusal ("hidden unit input",
    "model logit", ...), so the researcher sees which part of the model is out of
    the region.
    """
    values = np.asarray(values, dtype=float)
    if values.size:
        _refuse_beyond(f"the {what}", float(np.max(np.abs(values))), bound)


def check_bounded_spread(what: str, values: np.ndarray, bound: float = ETA_BOUND) -> None:
    """Refuse when the spread ``max - min`` of ``values`` exceeds ``bound`` (exp-weighted models)."""
    values = np.asarray(values, dtype=float)
    if values.size:
        _refuse_beyond(f"the {what}'s spread", float(np.ptp(values)), bound)


def _refuse_beyond(what: str, reach: float, bound: float) -> None:
    if not np.isfinite(reach) or reach > bound:
        raise ThresholdViolation(
            f"bounded-region rule: {what} reaches {reach:.3g} on this site's rows, "
            f"beyond the bound {bound:g} (policy field eta_bound) within which a node "
            "evaluates a researcher-chosen model; refused"
        )


def require_linear_or_dp(computation: str, kind: str, dp: object, policy: object) -> None:
    """Refuse a nonlinear model without differential privacy unless the site allows it.

    ``kind`` is the model kind ("logistic" is linear in the features, "mlp" is not);
    ``dp`` the request's validated DP block (``None`` when there is none, or when the
    computation has no DP variant). The policy field is ``exact_nonlinear_models``.
    """
    if kind == "logistic" or dp is not None or getattr(policy, "exact_nonlinear_models", False):
        return
    what = (
        "trains an MLP only with differential privacy (add a 'dp' block: dp= on the estimator)"
        if computation == "local_train"
        else f"does not evaluate an MLP ({computation})"
    )
    raise PolicyDenied(
        f"this site {what}: two bounded tanh layers compose into a step that isolates a "
        "patient by difference (policy field exact_nonlinear_models is false)"
    )
