"""Node side of ``evaluate_binary``: check the request, score the site's rows, release aggregates.

The site rebuilds the model from its JSON description (never a pickle), scores
its (held-out) rows and releases merged score histograms per label, Brier and
score sums, and the recalibration gradients and Hessians at the aggregator's
candidates, as a :class:`~healthfed.privacy.model_release.ModelStatistics` for
its disclosure filter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.compute.evaluation.maths import (
    DEFAULT_BINS,
    bin_index,
    grid_edges,
    merge_bins,
    merged_counts,
    recalibration_derivatives,
)
from healthfed.compute.fedavg import (
    _float_param,
    _int_param,
    design_from_params,
    logits,
    sigmoid,
    validate_model_params,
)
from healthfed.errors import PolicyDenied
from healthfed.privacy.model_release import ModelStatistics

__all__ = ["run_evaluate", "validate_evaluate"]

#: Most fine bins a request may ask for.
MAX_BINS = 100_000
#: Most recalibration candidates (one per site plus the pooled one) a request may carry.
MAX_CANDIDATES = 1000


def _model_spec_params(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise PolicyDenied("parameter 'model' must be a JSON model description (an object)")
    spec = dict(spec)
    if "coef" in spec:  # a GLM: coefficients on the preprocessing spec's design matrix
        spec["weights"] = [list(spec.pop("coef")), [float(spec.pop("intercept", 0.0))]]
        spec["model"] = "logistic"
    spec.setdefault("model", "logistic")
    return spec


def validate_evaluate(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check an ``evaluate_binary`` request; every error names the parameter."""
    if not isinstance(params, dict):
        raise PolicyDenied("parameters must be an object")
    spec = _model_spec_params(params.get("model"))
    merged = validate_model_params(
        {
            **spec,
            "target": params.get("target"),
            "positive": params.get("positive"),
            "holdout": params.get("holdout"),
        },
        descriptor,
    )
    stage = params.get("stage", "full")
    if stage not in ("full", "newton"):
        raise PolicyDenied("parameter 'stage' must be 'full' or 'newton'")
    cands = params.get("candidates", [[0.0, 1.0, 0.0]])
    if (
        not isinstance(cands, list)
        or not 1 <= len(cands) <= MAX_CANDIDATES
        or not all(isinstance(c, list) and len(c) == 3 for c in cands)
    ):
        raise PolicyDenied(f"parameter 'candidates' must be 1..{MAX_CANDIDATES} triples [a, b, c]")
    cand = np.asarray(cands, dtype=float)
    if not np.all(np.isfinite(cand)):
        raise PolicyDenied("parameter 'candidates' must be finite")
    return {
        **merged,
        "stage": stage,
        "candidates": cand,
        "threshold": _float_param(params, "threshold", 0.5, 0.0, 1.0),
        "bins": _int_param(params, "bins", DEFAULT_BINS, 1, MAX_BINS),
    }


def run_evaluate(con: Any, descriptor: Any, params: dict[str, Any], policy: Any) -> ModelStatistics:
    """Score the site's rows; release histograms (merged), sums and Newton derivatives."""
    X, y = design_from_params(con, descriptor, params)
    n = len(y)
    if n < policy.min_subset:
        return ModelStatistics(arrays={}, n_rows=n, n_params=2)  # the filter refuses it
    z = logits(params["model"], params["weights"], X)
    grad, hess = recalibration_derivatives(z, y, params["candidates"])
    arrays: dict[str, np.ndarray] = {"grad": grad, "hess": hess}
    if params["stage"] == "newton":
        return ModelStatistics(arrays=arrays, n_rows=n, n_params=2)
    p = sigmoid(z)
    edges, cut = grid_edges(params["bins"], params["threshold"])
    idx = bin_index(p, edges)
    nb = len(edges) - 1
    pos = np.bincount(idx[y == 1], minlength=nb).astype(float)
    neg = np.bincount(idx[y == 0], minlength=nb).astype(float)
    # Group score sums are released too (their means place the pooled mass), so
    # every non-empty group must also satisfy the min_subset rule for means.
    k = max(int(policy.min_cell_count), int(policy.min_subset))
    groups, kept = merge_bins(pos, neg, k, cut=cut)
    arrays["edges"] = groups.astype(float)
    psum_pos = np.bincount(idx[y == 1], weights=p[y == 1], minlength=nb)
    psum_neg = np.bincount(idx[y == 0], weights=p[y == 0], minlength=nb)
    arrays["psum_pos"] = merged_counts(psum_pos, groups)
    arrays["psum_neg"] = merged_counts(psum_neg, groups)
    return ModelStatistics(
        arrays=arrays,
        n_rows=n,
        n_params=2,
        scalars={
            "brier_sum": float(np.sum((p - y) ** 2)),
            "sum_p": float(p.sum()),
            "threshold_kept": float(kept),
        },
        counts={
            "hist_pos": [int(v) for v in merged_counts(pos, groups)],
            "hist_neg": [int(v) for v in merged_counts(neg, groups)],
        },
    )
