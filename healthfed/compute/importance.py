"""Node-side computations for explaining a fitted binary classifier.

``permutation_importance``
    Federated permutation importance (Breiman 2001; scikit-learn's
    ``permutation_importance``) with the loss as the score: each site scores its
    evaluation rows, then, for every *raw* feature (a categorical column's dummies
    and a missing indicator move together) and every repeat, permutes that
    feature's design columns across its own rows (seeded by the request) and
    scores again. It releases only the summed log-loss and squared error per
    (feature, repeat) and the row count. The hub's importance of a feature is the
    pooled mean increase of the loss; permutation stays within sites, which
    keeps site-level dependence between features (the pooled permutation would
    mix sites).
``model_information``
    Column sums of the training design matrix (for the reference patient of
    local explanations: SHAP values are relative to the pooled mean design row)
    and, for a logistic model, the Fisher information ``X^T W X`` at the model's
    weights (intercept first) so the hub can give a FedAvg model a delta-method
    uncertainty interval. Released as ``ModelStatistics`` with the model's
    number of parameters, so the parameter-to-rows rule applies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.compute.deadline import check_deadline
from healthfed.compute.evaluation.node import validate_evaluate
from healthfed.compute.fedavg import design_from_params, log_loss_sum, node_logits, sigmoid
from healthfed.compute.glm.node import glm_profiles, missing_indicators
from healthfed.compute.registry import Computation, register
from healthfed.errors import PolicyDenied
from healthfed.privacy.contributions import ContributionProfile, concat_profiles, profile_rows
from healthfed.privacy.model_release import ModelStatistics, array_from_reply

__all__ = ["MODEL_INFORMATION", "PERMUTATION_IMPORTANCE", "feature_groups"]

PERMUTATION_IMPORTANCE = "permutation_importance"
MODEL_INFORMATION = "model_information"
MAX_REPEATS = 50


def feature_groups(spec: dict[str, Any]) -> list[tuple[str, list[int]]]:
    """``[(raw feature, design column indices)]`` of a preprocessing spec, in design order."""
    if spec.get("kind") == "healthfed.preprocess":
        out: list[tuple[str, list[int]]] = []
        j = 0
        for c in spec["columns"]:
            k = len(c["levels"]) - 1 if c["type"] == "categorical" else 1
            k += 1 if c.get("indicator") else 0
            out.append((c["name"], list(range(j, j + k))))
            j += k
        return out
    return [(f["column"], [i]) for i, f in enumerate(spec["features"])]


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    own: dict[str, Any] = {k: params[k] for k in ("n_repeats", "seed", "part") if k in params}
    return {k: v for k, v in params.items() if k not in own}, own


def validate_permutation(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``permutation_importance`` request (model as for ``evaluate_binary``)."""
    if not isinstance(params, dict):
        raise PolicyDenied("permutation_importance: params must be an object")
    base, own = _split(params)
    out = validate_evaluate(base, descriptor, policy)
    reps = own.get("n_repeats", 5)
    if not isinstance(reps, int) or isinstance(reps, bool) or not 1 <= reps <= MAX_REPEATS:
        raise PolicyDenied(f"parameter 'n_repeats' must be an integer in [1, {MAX_REPEATS}]")
    seed = own.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise PolicyDenied("parameter 'seed' must be an integer in [0, 2^31)")
    out.update(n_repeats=reps, seed=seed)
    return out


def run_permutation(
    con: Any, descriptor: Any, params: dict[str, Any], policy: Any
) -> ModelStatistics:
    X, y = design_from_params(con, descriptor, params)
    n = len(y)
    groups = feature_groups(params["preprocess"])
    if n < policy.min_subset:
        return ModelStatistics(arrays={}, n_rows=n)
    kind, w = params["model"], params["weights"]
    bound = float(policy.eta_bound)
    z = node_logits(kind, w, X, bound)
    base_ll = log_loss_sum(z, y)
    base_sq = float(np.sum((sigmoid(z) - y) ** 2))
    R = params["n_repeats"]
    ll = np.zeros((len(groups), R))
    sq = np.zeros((len(groups), R))
    n_top = int(policy.dominance_n)
    prof_ll: list[ContributionProfile] = [None] * (len(groups) * R)  # type: ignore[list-item]
    prof_sq = list(prof_ll)
    rng = np.random.default_rng(params["seed"])
    for r in range(R):
        perm = rng.permutation(n)
        for g, (_, cols) in enumerate(groups):
            check_deadline()  # the node's wall-time limit
            Xp = X.copy()
            Xp[:, cols] = X[perm][:, cols]
            zp = node_logits(kind, w, Xp, bound)
            ll[g, r] = log_loss_sum(zp, y)
            sq[g, r] = float(np.sum((sigmoid(zp) - y) ** 2))
            prof_ll[g * R + r] = profile_rows(np.logaddexp(0.0, zp) - y * zp, n_top)
            prof_sq[g * R + r] = profile_rows((sigmoid(zp) - y) ** 2, n_top)
    return ModelStatistics(
        arrays={"logloss": ll, "sqerr": sq},
        n_rows=n,
        scalars={"base_logloss": base_ll, "base_sqerr": base_sq},
        profiles={
            "logloss": concat_profiles(*prof_ll),
            "sqerr": concat_profiles(*prof_sq),
            "base_logloss": profile_rows(np.logaddexp(0.0, z) - y * z, n_top, (1,)),
            "base_sqerr": profile_rows((sigmoid(z) - y) ** 2, n_top, (1,)),
        },
    )


def combine_permutation(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict:
    """Pooled mean increase of log-loss and Brier per raw feature (mean and SD over repeats)."""
    n = sum(int(r["n_rows"]) for r in site_replies.values())
    ll = np.sum([array_from_reply(r, "logloss") for r in site_replies.values()], axis=0)
    sq = np.sum([array_from_reply(r, "sqerr") for r in site_replies.values()], axis=0)
    b_ll = sum(float(r["scalars"]["base_logloss"]) for r in site_replies.values())
    b_sq = sum(float(r["scalars"]["base_sqerr"]) for r in site_replies.values())
    names = (
        [g for g, _ in feature_groups(params["model"]["preprocess"])]
        if isinstance(params.get("model"), dict) and "preprocess" in params["model"]
        else [f"f{i}" for i in range(len(ll))]
    )
    d_ll = (np.asarray(ll) - b_ll) / n
    d_sq = (np.asarray(sq) - b_sq) / n
    return {
        "features": names,
        "logloss_increase": d_ll.mean(axis=1).tolist(),
        "logloss_increase_sd": d_ll.std(axis=1, ddof=1).tolist()
        if d_ll.shape[1] > 1
        else [0.0] * len(names),
        "brier_increase": d_sq.mean(axis=1).tolist(),
        "brier_increase_sd": d_sq.std(axis=1, ddof=1).tolist()
        if d_sq.shape[1] > 1
        else [0.0] * len(names),
        "base_logloss": b_ll / n,
        "base_brier": b_sq / n,
        "n": n,
        "sites": sorted(site_replies),
    }


def validate_information(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``model_information`` request (model as for ``evaluate_binary``)."""
    if not isinstance(params, dict):
        raise PolicyDenied("model_information: params must be an object")
    return validate_evaluate(params, descriptor, policy)


def run_information(
    con: Any, descriptor: Any, params: dict[str, Any], policy: Any
) -> ModelStatistics:
    X, y = design_from_params(con, descriptor, params)
    n, p = X.shape
    n_params = p + 1 if params["model"] == "logistic" else 0
    if n < policy.min_subset or n_params > policy.max_param_ratio * n:
        return ModelStatistics(arrays={}, n_rows=n, n_params=n_params)
    arrays = {"sum_x": X.sum(axis=0)}
    Xi = np.column_stack([np.ones(n), X])
    bound = float(policy.eta_bound)
    mu = (
        sigmoid(node_logits("logistic", params["weights"], X, bound))
        if n_params
        else np.full(n, 0.5)
    )
    w = mu * (1.0 - mu)
    missing = missing_indicators(params["preprocess"])
    full = glm_profiles(Xi, w, {"sum_x": np.ones(n)}, int(policy.dominance_n), missing)
    ones = full["sum_x"]
    profiles = {
        "sum_x": ContributionProfile(ones.support[1:], ones.abs_sum[1:], ones.top[1:], ones.n_top),
        "sum_x~complements": full["sum_x~complements"],
    }
    if params["model"] == "logistic":
        arrays["information"] = (Xi * w[:, None]).T @ Xi
        profiles["information"] = _symmetric(full["hessian"], p + 1)
        profiles["information~complements"] = full["hessian~complements"]
    return ModelStatistics(arrays=arrays, n_rows=n, n_params=n_params, profiles=profiles)


def _symmetric(packed: ContributionProfile, q: int) -> ContributionProfile:
    """A packed upper-triangle profile spread over the full symmetric matrix."""
    pos = np.zeros((q, q), dtype=int)
    iu = np.triu_indices(q)
    pos[iu] = np.arange(len(iu[0]))
    pos = np.triu(pos) + np.triu(pos, 1).T
    ex = None if packed.exempt is None else packed.exempt[pos]
    return ContributionProfile(
        packed.support[pos], packed.abs_sum[pos], packed.top[pos], packed.n_top, None, ex
    )


def combine_information(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict:
    n = sum(int(r["n_rows"]) for r in site_replies.values())
    out: dict[str, Any] = {
        "n": n,
        "design_mean": (
            np.sum([array_from_reply(r, "sum_x") for r in site_replies.values()], axis=0) / n
        ).tolist(),
        "sites": sorted(site_replies),
    }
    if all("information" in r["arrays"] for r in site_replies.values()):
        out["information"] = np.sum(
            [array_from_reply(r, "information") for r in site_replies.values()], axis=0
        ).tolist()
    return out


def _register() -> None:
    register(
        Computation(
            name=PERMUTATION_IMPORTANCE,
            description="Summed log-loss and squared error of a binary classifier with each raw "
            "feature permuted within the site (federated permutation importance).",
            validate=validate_permutation,
            run=run_permutation,
            combine=combine_permutation,
        )
    )
    register(
        Computation(
            name=MODEL_INFORMATION,
            description="Design-matrix column sums and the logistic Fisher information at given "
            "weights (reference patient and uncertainty of a fitted model).",
            validate=validate_information,
            run=run_information,
            combine=combine_information,
        )
    )


_register()
