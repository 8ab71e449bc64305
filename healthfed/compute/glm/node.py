"""Node side of ``glm_step``: one site's score, Fisher information and deviance.

Each ``glm_step`` release is ``ModelStatistics`` with ``n_params`` = number of
coefficients: a site declines when it has fewer than ``min_subset`` rows or
more than ``max_param_ratio`` parameters per row (a saturated model would
reproduce its rows). Without coefficients a site returns the weighted normal
equations of the first IRLS iteration from R's ``glm`` starting values, so the
hub's first coefficients come without a guess. The Hessian travels as its upper
triangle. The design matrix is built once per (data, spec, outcome, row filter)
and cached in the node process, so a round is one matrix product.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.compute.glm.combine import combine_glm_step
from healthfed.compute.glm.maths import FAMILIES, glm_derivatives, glm_start, pack_upper
from healthfed.compute.preprocess import cached_design, feature_names, validate_spec
from healthfed.compute.registry import Computation, register
from healthfed.data.sql import holdout_sql, validate_holdout
from healthfed.errors import PolicyDenied
from healthfed.privacy.model_release import ModelStatistics

__all__ = ["GLM_STEP", "run_glm_step", "validate_glm_step"]

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
    if params["beta"] is None:
        xtwx, xtwz = glm_start(params["family"], X, y)
        return ModelStatistics(
            arrays={"hessian": pack_upper(xtwx), "xwz": xtwz}, n_rows=n, n_params=p
        )
    score, hessian, deviance, loglik = glm_derivatives(params["family"], X, y, params["beta"])
    return ModelStatistics(
        arrays={"score": score, "hessian": pack_upper(hessian)},
        n_rows=n,
        n_params=p,
        scalars={"deviance": deviance, "loglik": loglik},
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
