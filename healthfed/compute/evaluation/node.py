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
    node_logits,
    sigmoid,
    validate_model_params,
)
from healthfed.errors import PolicyDenied, ThresholdViolation
from healthfed.privacy.bounded_region import require_linear_or_dp
from healthfed.privacy.contributions import ContributionProfile, concat_profiles, profile_rows
from healthfed.privacy.model_release import ModelStatistics

__all__ = ["run_evaluate", "validate_evaluate"]

#: Most fine bins a request may ask for.
MAX_BINS = 100_000
#: Steepest recalibration slope ``b`` a node evaluates (see :func:`check_candidates`).
MAX_CALIBRATION_SLOPE = 4.0
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
    require_linear_or_dp("evaluation, subgroup metrics, importance", merged["model"], None, policy)
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
    bound = float(policy.eta_bound)
    z = node_logits(params["model"], params["weights"], X, bound)
    check_candidates(params["candidates"], bound)
    grad, hess = recalibration_derivatives(z, y, params["candidates"])
    arrays: dict[str, np.ndarray] = {"grad": grad, "hess": hess}
    n_top = int(policy.dominance_n)
    profiles = recalibration_profiles(z, y, params["candidates"], n_top)
    if params["stage"] == "newton":
        return ModelStatistics(arrays=arrays, n_rows=n, n_params=2, profiles=profiles)
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
    groups, kept = merge_dominated(groups, kept, cut, idx, p, y, policy)
    arrays["edges"] = groups.astype(float)
    psum_pos = np.bincount(idx[y == 1], weights=p[y == 1], minlength=nb)
    psum_neg = np.bincount(idx[y == 0], weights=p[y == 0], minlength=nb)
    arrays["psum_pos"] = merged_counts(psum_pos, groups)
    arrays["psum_neg"] = merged_counts(psum_neg, groups)
    gid = np.searchsorted(groups, idx, side="right") - 1
    for name, cls in (("psum_pos", 1), ("psum_neg", 0)):
        parts = [profile_rows(p[(gid == g) & (y == cls)], n_top) for g in range(len(groups) - 1)]
        profiles[name] = concat_profiles(*parts) if parts else profile_rows(np.zeros((0, 0)), n_top)
    profiles["brier_sum"] = profile_rows((p - y) ** 2, n_top, (1,))
    profiles["sum_p"] = profile_rows(p, n_top, (1,))
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
        profiles=profiles,
        layout=("edges", "threshold_kept"),
    )


def check_candidates(cand: np.ndarray, bound: float) -> None:
    """Keep the recalibration candidates ``a + b z`` and ``c + z`` near the bounded region.

    The aggregator chooses the candidates; a slope ``b`` of 1e4 would turn the
    (bounded, smooth) score back into an indicator of one score value. A slope up to
    :data:`MAX_CALIBRATION_SLOPE` makes a recalibrated logit at most that many times
    as steep as the model's own, and ``|a|, |c| <= eta_bound`` keeps its offset in the
    region; Newton's iterates for a real model's calibration lie well inside both.
    """
    for a, b, c in cand:
        if abs(b) > MAX_CALIBRATION_SLOPE or abs(a) > bound or abs(c) > bound:
            raise ThresholdViolation(
                f"bounded-region rule: a recalibration candidate (a={a:.3g}, b={b:.3g}, "
                f"c={c:.3g}) lies outside |b| <= {MAX_CALIBRATION_SLOPE:g}, |a|, |c| <= "
                f"{bound:g} (policy field eta_bound); refused"
            )


def merge_dominated(
    groups: np.ndarray,
    kept: bool,
    cut: int,
    idx: np.ndarray,
    p: np.ndarray,
    y: np.ndarray,
    policy: Any,
) -> tuple[np.ndarray, bool]:
    """Merge score groups further until no few patients dominate a group's score sum.

    The released group score sums (``psum_pos``/``psum_neg``) fall under the (n, k)
    dominance rule; a dominated group is merged with the neighbour that leaves the
    merged group undominated (the smaller one if both do), dropping the threshold edge
    if that is the one removed. A crafted model whose one high score sits among
    near-zero ones merges into one dominated group, which the filter then refuses.
    """
    n_top, k = int(policy.dominance_n), float(policy.dominance_k) / 100.0
    groups = np.asarray(groups)

    def dominated(lo: int, hi: int) -> bool:
        rows = (idx >= lo) & (idx < hi)
        for cls in (0, 1):
            v = p[rows & (y == cls)]
            if v.size and np.sort(v)[::-1][:n_top].sum() > k * v.sum():
                return True
        return False

    g = 0
    while len(groups) > 2 and g < len(groups) - 1:
        if not dominated(int(groups[g]), int(groups[g + 1])):
            g += 1
            continue
        options = []
        if g > 0:  # merge with the left neighbour: drop edge g
            options.append((dominated(int(groups[g - 1]), int(groups[g + 1])), g))
        if g + 2 < len(groups):  # with the right one: drop edge g + 1
            options.append((dominated(int(groups[g]), int(groups[g + 2])), g + 1))
        drop = min(options, key=lambda o: (o[0], int(groups[o[1] + 1]) - int(groups[o[1] - 1])))[1]
        if int(groups[drop]) == cut:
            kept = False
        groups = np.delete(groups, drop)
        g = max(drop - 1, 0)
    return groups, kept


def recalibration_profiles(
    z: np.ndarray, y: np.ndarray, cand: np.ndarray, n_top: int
) -> dict[str, ContributionProfile]:
    """Profiles of :func:`recalibration_derivatives`' sums from the rows' terms."""
    grads, hesses = [], []
    for a, b, c in cand:
        p = sigmoid(a + b * z)
        r = y - p
        w = p * (1.0 - p)
        pc = sigmoid(c + z)
        grads.append(profile_rows(np.column_stack([r, r * z, y - pc]), n_top))
        hesses.append(profile_rows(np.column_stack([w, w * z, w * z * z, pc * (1 - pc)]), n_top))
    K = len(cand)
    g, h = concat_profiles(*grads), concat_profiles(*hesses)
    return {
        "grad": ContributionProfile(
            g.support.reshape(K, 3), g.abs_sum.reshape(K, 3), g.top.reshape(K, 3), n_top
        ),
        "hess": ContributionProfile(
            h.support.reshape(K, 4), h.abs_sum.reshape(K, 4), h.top.reshape(K, 4), n_top
        ),
    }
