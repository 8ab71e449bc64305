"""Node side of FedAvg: the registered ``local_train`` and ``feature_moments`` computations.

A node never releases rows or per-row gradients: ``local_train`` releases the
*weight delta* of a few local epochs from the global weights and its row
count, and the node's disclosure filter (``ModelStatistics``) refuses it when
the site has fewer than ``min_subset`` rows or when the model has more weights
than ``max_param_ratio`` times its rows. ``feature_moments`` releases the sums
and sums of squares of numeric features over the complete cases training will
use (pooled standardisation in one round; summable, so it can be a secure
round). Every design matrix is built from the request's preprocessing spec
(:mod:`healthfed.compute.preprocess`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.compute.fedavg.combine import combine_feature_moments, combine_local_train
from healthfed.compute.fedavg.dp_training import dp_local_update, validate_dp_training
from healthfed.compute.fedavg.models import (
    local_sgd_attributed,
    log_loss_sum,
    n_weights,
    node_logits,
)
from healthfed.compute.fedavg.params import (
    FEATURE_MOMENTS,
    LOCAL_TRAIN,
    _float_param,
    _int_param,
    validate_model_params,
)
from healthfed.compute.preprocess import design_matrix
from healthfed.compute.registry import Computation, register
from healthfed.data.sql import holdout_sql, quote_ident, validate_holdout
from healthfed.errors import DataError, PolicyDenied
from healthfed.privacy.bounded_region import require_linear_or_dp
from healthfed.privacy.contributions import (
    ContributionProfile,
    cross_profile_blocks,
    indicator_columns,
    profile_rows,
)
from healthfed.privacy.model_release import ModelStatistics, disclose_model_statistics

__all__ = [
    "build_design",
    "design_from_params",
    "run_feature_moments",
    "run_local_train",
    "validate_feature_moments",
    "validate_local_train",
]

_MAX_EPOCHS = 100


def design_from_params(
    con: Any, descriptor: Any, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`build_design` from a validated model request's ``preprocess``, ``target``,
    ``positive`` and ``holdout`` (what every model-scoring computation passes)."""
    return build_design(
        con,
        descriptor,
        params["preprocess"],
        params["target"],
        params["positive"],
        params["holdout"],
    )


def build_design(
    con: Any,
    descriptor: Any,
    spec: dict[str, Any],
    target: str,
    positive: str | None = None,
    holdout: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Node side: the spec's design matrix ``X`` and the 0/1 outcome ``y``.

    Rows with a missing outcome (and, for ``missing="drop"`` specs, a missing
    feature) are left out; ``holdout`` keeps one part of the per-patient split.
    """
    where = holdout_sql(descriptor, holdout)
    return design_matrix(con, descriptor, spec, target=target, positive=positive, where=where)


def validate_local_train(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``local_train`` request; every error names the parameter."""
    out = validate_model_params(params, descriptor)
    out["epochs"] = _int_param(params, "epochs", 1, 1, _MAX_EPOCHS)
    out["batch_size"] = _int_param(params, "batch_size", 32, 1, 1_000_000)
    out["seed"] = _int_param(params, "seed", 0, 0, 2**31 - 1)
    out["lr"] = _float_param(params, "lr", 0.1, 1e-8, 10.0)
    out["mu"] = _float_param(params, "mu", 0.0, 0.0, 1e4)
    out["dp"] = validate_dp_training(params.get("dp"), policy)
    require_linear_or_dp(LOCAL_TRAIN, out["model"], out["dp"], policy)
    if out["dp"] is None:
        out.pop("dp")
    return out


def run_local_train(
    con: Any, descriptor: Any, params: dict[str, Any], policy: Any
) -> ModelStatistics:
    """Train locally from the global weights; release the weight delta and row count.

    Also released: the summed log-loss of the *global* weights on the local
    rows (``loss_sum``), so the hub can report the pooled training loss of
    each round's starting model without another round.
    """
    X, y = design_from_params(con, descriptor, params)
    kind, w0 = params["model"], params["weights"]
    n = len(y)
    n_params = n_weights(w0)
    if n < policy.min_subset or n_params > policy.max_param_ratio * n:
        # Do not even train: the disclosure filter would refuse the release anyway.
        if params.get("dp"):
            disclose_model_statistics(
                ModelStatistics(arrays={}, n_rows=n, n_params=n_params), policy
            )
        return ModelStatistics(arrays={}, n_rows=n, n_params=n_params)
    z0 = node_logits(kind, w0, X, float(policy.eta_bound))  # refuses outside the region
    if params.get("dp"):
        return dp_local_update(
            kind,
            w0,
            X,
            y,
            params["dp"],
            epochs=params["epochs"],
            lr=params["lr"],
            mu=params["mu"],
            batch_size=params["batch_size"],
            seed=params["seed"],
        )
    loss0 = log_loss_sum(z0, y)
    w1, shares = local_sgd_attributed(
        kind,
        w0,
        X,
        y,
        epochs=params["epochs"],
        lr=params["lr"],
        batch_size=params["batch_size"],
        mu=params["mu"],
        seed=params["seed"],
    )
    arrays = {f"delta_{i}": a - b for i, (a, b) in enumerate(zip(w1, w0, strict=True))}
    n_top = int(policy.dominance_n)
    profiles = update_profiles(kind, X, shares, n_top)
    profiles["loss_sum"] = profile_rows(np.logaddexp(0.0, z0) - y * z0, n_top, (1,))
    return ModelStatistics(
        arrays=arrays,
        n_rows=n,
        n_params=n_params,
        scalars={"loss_sum": loss0},
        profiles=profiles,
    )


def update_profiles(
    kind: str, X: np.ndarray, shares: dict[str, np.ndarray], n_top: int
) -> dict[str, ContributionProfile]:
    """Contribution profiles of a ``local_train`` update from the rows' shares.

    The first weight array's entries are ``sum_i x_ij D_ik``; the bias (second array)
    is ``sum_i D_ik``, so for a 0/1 feature ``sum_i (1 - x_ij) D_ik`` is derivable and
    profiled as ``delta_0~complements``.
    """
    D = shares["D"].reshape(len(X), -1)
    ind = indicator_columns(X)
    d = X.shape[1]

    def block(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        xc = X[lo:hi]
        z = np.column_stack([xc, 1.0 - xc[:, ind]]) if len(ind) else xc
        return z, D[lo:hi]

    full = cross_profile_blocks(block, len(X), n_top)
    h = D.shape[1]
    own = _rows(full, slice(0, d), (d, h) if kind == "mlp" else (d,))
    rest = _rows(full, slice(d, None), (-1,))
    out = {"delta_0": own, "delta_0~complements": rest}
    out["delta_1"] = profile_rows(D, n_top, (h,))
    if kind == "mlp":
        out["delta_2"] = profile_rows(shares["E"], n_top, (h,))
        out["delta_3"] = profile_rows(shares["F"], n_top, (1,))
    return out


def _rows(prof: ContributionProfile, rows: slice, shape: tuple[int, ...]) -> ContributionProfile:
    return ContributionProfile(
        prof.support[rows].reshape(shape),
        prof.abs_sum[rows].reshape(shape),
        prof.top[rows].reshape(shape),
        prof.n_top,
    )


def validate_feature_moments(params: dict[str, Any], descriptor: Any, policy: Any) -> dict:
    """Check a ``feature_moments`` request: ``columns`` (numeric), ``target``, ``holdout``."""
    cols = params.get("columns")
    if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
        raise PolicyDenied("parameter 'columns' must be a non-empty list of column names")
    for c in cols:
        spec = descriptor.column(c)
        if spec.type not in ("numeric", "integer", "binary"):
            raise DataError(f"parameter 'columns': {c!r} is {spec.type}, not numeric")
    target = params.get("target")
    if target is not None:
        descriptor.column(target)
    return {"columns": cols, "target": target, "holdout": validate_holdout(params.get("holdout"))}


def run_feature_moments(
    con: Any, descriptor: Any, params: dict[str, Any], policy: Any
) -> ModelStatistics:
    """Sums and sums of squares of the features over the complete cases used for training.

    One round gives the hub the pooled means/SDs of a
    :func:`~healthfed.compute.preprocess.standardisation_spec` (the same rows
    ``local_train`` will use).
    """
    cols = params["columns"]
    needed = [quote_ident(c) for c in cols] + (
        [quote_ident(params["target"])] if params["target"] else []
    )
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in needed)
    where = holdout_sql(descriptor, params["holdout"])
    select = ", ".join(f"CAST({quote_ident(c)} AS DOUBLE) AS v{i}" for i, c in enumerate(cols))
    values = con.execute(f"SELECT {select} FROM data WHERE {not_null} AND ({where})").fetchnumpy()
    V = np.column_stack([np.asarray(values[f"v{i}"], dtype=float) for i in range(len(cols))])
    n = V.shape[0]
    n_top = int(policy.dominance_n)
    ind = indicator_columns(V)
    profiles = {
        "sum": profile_rows(V, n_top),
        "sumsq": profile_rows(V * V, n_top),
        # n_rows - sum counts the zeros of a 0/1 column
        "sum~complements": profile_rows(1.0 - V[:, ind], n_top),
    }
    return ModelStatistics(
        arrays={"sum": V.sum(axis=0), "sumsq": (V * V).sum(axis=0)},
        n_rows=n,
        profiles=profiles,
    )


register(
    Computation(
        name=LOCAL_TRAIN,
        description="Local SGD epochs from global weights (FedAvg/FedProx/FedAdam); "
        "releases the weight delta and row count.",
        validate=validate_local_train,
        run=run_local_train,
        combine=combine_local_train,
    )
)
register(
    Computation(
        name=FEATURE_MOMENTS,
        description="Sums and sums of squares of numeric features over complete cases "
        "(pooled standardisation for federated training).",
        validate=validate_feature_moments,
        run=run_feature_moments,
        combine=combine_feature_moments,
    )
)
