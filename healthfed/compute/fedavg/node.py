"""Iterative federated training for models without a closed form: FedAvg, FedProx, FedAdam.

A logistic model and a one-hidden-layer MLP, both written in numpy, are trained
by the classic loop of federated optimisation (McMahan et al. 2017): the hub
sends the global weights, every site runs a few epochs of mini-batch SGD on its
own rows and releases only the *weight delta* and its row count, and the hub
turns the deltas into new global weights.

Why this shape
--------------
* A node never releases rows or per-row gradients: the delta is a function of
  all local rows, and the node's disclosure filter (``ModelStatistics``)
  refuses it when the site has fewer than ``min_subset`` rows or when the
  model has more weights than ``max_param_ratio`` times its rows. A 100-row
  site cannot take part in training a 200-weight MLP: that refusal is the
  policy working; the hub continues with the other sites (if at least
  ``federation.min_sites`` remain) and records the refusal in ``history_``.
* The request carries the global weights as JSON lists of floats and the
  preprocessing spec, never code or pickles, so every site builds the same
  design matrix.

Server update rules: what comes from Flower and what is ours
-----------------------------------------------------------
* ``fedavg`` and ``fedprox``: the weighted average of the sites' weights is
  Flower's own ``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords``
  (the routine ``flwr.serverapp.strategy.FedAvg.aggregate_train`` uses),
  applied to ``ArrayRecord``s holding ``global + delta``. FedProx differs from
  FedAvg only on the client (Li et al. 2020; Flower's ``FedProx`` just sends
  ``proximal-mu`` in the config), so its proximal term ``mu/2 ||w - w_global||^2``
  is implemented in our numpy ``local_sgd``.
* ``fedadam``: the adaptive server step (Reddi et al. 2021) is Flower's
  ``flwr.serverapp.strategy.FedAdam.aggregate_train`` unchanged (including its
  bias-corrected step size). Flower's strategies expect reply ``Message``\\s
  from a ``Grid``; our rounds are ``Federation.query`` calls returning
  disclosure-filtered dicts, so a small subclass (``_RecordFedAdam``) feeds the
  strategy ``RecordDict``\\s instead of messages. Flower's ``start()`` loop,
  node sampling and message construction are not used: our hub loop owns the
  rounds because it must handle refusals by name and the parameter/row policy.
* Local training (SGD, the proximal term, the models) is our own numpy code:
  Flower ships no model code.

Preprocessing spec
------------------
The minimal spec, always understood here (and built by ``fit(features=...)``
from one ``feature_moments`` round of pooled sums)::

    {"features": [{"column": "age", "center": 61.2, "scale": 14.8}, ...]}

numeric/integer/binary columns only, standardised as ``(x - center) / scale``;
rows with a missing feature or target are left out (complete cases). Any
other spec (e.g. with categorical dummies) is handed to
``healthfed.compute.preprocess`` (``n_features``, ``validate_spec``,
``design_matrix``, ``transform_frame``), so every site builds the same
design matrix; without that module such a spec is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.data.sql import holdout_sql, quote_ident, validate_holdout
from healthfed.errors import DataError, PolicyDenied, ThresholdViolation
from healthfed.privacy.model_release import (
    ModelStatistics,
    array_from_reply,
    disclose_model_statistics,
)

MODEL_KINDS = ("logistic", "mlp")
STRATEGIES = ("fedavg", "fedprox", "fedadam")
LOCAL_TRAIN = "local_train"
FEATURE_MOMENTS = "feature_moments"
_MAX_EPOCHS = 100
_MAX_HIDDEN = 512


# =====================================================================================
# Design matrix (node side and hub side)
# =====================================================================================
_PREPROCESS_API = ("n_features", "design_matrix", "transform_frame", "validate_spec")


def _is_minimal_spec(spec: Any) -> bool:
    feats = spec.get("features") if isinstance(spec, dict) else None
    return (
        isinstance(feats, list)
        and bool(feats)
        and all(isinstance(f, dict) and "column" in f for f in feats)
    )


def _preprocess_module(spec: Any) -> Any | None:
    """The shared preprocessing module for a spec that is not the minimal one.

    The minimal spec (``{"features": [{"column", "center", "scale"}]}``) is always
    handled here. Any other spec needs ``healthfed.compute.preprocess`` with
    ``n_features(spec)``, ``validate_spec(spec, descriptor)``,
    ``design_matrix(con, descriptor, spec, target=, positive=, where=) -> (X, y)``
    and ``transform_frame(frame, spec) -> X``.
    """
    if _is_minimal_spec(spec):
        return None
    try:
        from healthfed.compute import preprocess  # type: ignore[attr-defined]
    except ImportError:
        preprocess = None  # type: ignore[assignment]
    if preprocess is None or not all(hasattr(preprocess, f) for f in _PREPROCESS_API):
        raise PolicyDenied(
            "parameter 'preprocess': not the minimal spec {'features': [{'column', 'center', "
            "'scale'}]} and no compatible healthfed.compute.preprocess is installed"
        )
    return preprocess


def _fallback_features(spec: dict[str, Any]) -> list[dict[str, Any]]:
    feats = spec.get("features") if isinstance(spec, dict) else None
    if not isinstance(feats, list) or not feats:
        raise PolicyDenied("parameter 'preprocess' must hold a non-empty list 'features'")
    out = []
    for i, f in enumerate(feats):
        if not isinstance(f, dict) or not isinstance(f.get("column"), str):
            raise PolicyDenied(f"parameter 'preprocess.features[{i}]' needs a 'column' name")
        center = float(f.get("center", 0.0))
        scale = float(f.get("scale", 1.0))
        if not (math.isfinite(center) and math.isfinite(scale) and scale > 0):
            raise PolicyDenied(
                f"parameter 'preprocess.features[{i}]' ({f['column']!r}) needs finite "
                "center and a positive scale"
            )
        out.append({"column": f["column"], "center": center, "scale": scale})
    return out


def n_features(spec: dict[str, Any]) -> int:
    """Number of design-matrix columns the spec produces (no intercept column)."""
    pre = _preprocess_module(spec)
    if pre is not None:
        return int(pre.n_features(spec))
    return len(_fallback_features(spec))


def _target_sql(descriptor: Any, target: str, positive: str | None) -> str:
    spec = descriptor.column(target)
    if spec.type == "binary":
        pos = "1" if positive is None else str(positive)
        if pos not in ("0", "1"):
            raise DataError(f"parameter 'positive': binary target {target!r} has levels 0/1")
        return f"CASE WHEN {quote_ident(target)} = {int(pos)} THEN 1.0 ELSE 0.0 END"
    if spec.type == "categorical":
        if positive is None:
            raise DataError(
                f"parameter 'positive': name the positive level of categorical target {target!r}"
            )
        if spec.levels is not None and str(positive) not in spec.levels:
            raise DataError(
                f"parameter 'positive': {positive!r} is not a level of {target!r} "
                f"(levels {list(spec.levels)})"
            )
        lit = "'" + str(positive).replace("'", "''") + "'"
        return f"CASE WHEN CAST({quote_ident(target)} AS VARCHAR) = {lit} THEN 1.0 ELSE 0.0 END"
    raise DataError(
        f"parameter 'target': column {target!r} is {spec.type}; a binary classifier needs a "
        "binary or categorical target"
    )


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
    """Node side: the design matrix ``X`` and 0/1 outcome ``y`` over complete cases.

    Uses ``healthfed.compute.preprocess`` when installed, otherwise the minimal
    standardisation spec described in the module docstring.
    """
    pre = _preprocess_module(spec)
    where = holdout_sql(descriptor, holdout)
    if pre is not None:
        return pre.design_matrix(
            con, descriptor, spec, target=target, positive=positive, where=where
        )
    ysql = _target_sql(descriptor, target, positive)
    feats = _fallback_features(spec)
    cols = []
    for i, f in enumerate(feats):
        c = descriptor.column(f["column"])
        if c.type not in ("numeric", "integer", "binary"):
            raise DataError(
                f"parameter 'preprocess': column {f['column']!r} is {c.type}; the minimal spec "
                "takes numeric, integer or binary columns"
            )
        cols.append(f"CAST({quote_ident(f['column'])} AS DOUBLE) AS x{i}")
    needed = [quote_ident(f["column"]) for f in feats] + [quote_ident(target)]
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in needed)
    sql = f"SELECT {', '.join(cols)}, {ysql} AS y FROM data WHERE {not_null} AND ({where})"
    res = con.execute(sql).fetchnumpy()
    y = np.asarray(res["y"], dtype=float)
    raw = np.column_stack([np.asarray(res[f"x{i}"], dtype=float) for i in range(len(feats))])
    raw = raw.reshape(len(y), len(feats))
    center = np.array([f["center"] for f in feats])
    scale = np.array([f["scale"] for f in feats])
    return (raw - center) / scale, y


def transform_frame(frame: Any, spec: dict[str, Any]) -> np.ndarray:
    """Hub side: the same design matrix from a pandas frame (for ``predict_proba``)."""
    pre = _preprocess_module(spec)
    if pre is not None:
        return np.asarray(pre.transform_frame(frame, spec), dtype=float)
    feats = _fallback_features(spec)
    missing = [f["column"] for f in feats if f["column"] not in frame.columns]
    if missing:
        raise DataError(f"argument 'X': the frame lacks column(s) {missing}")
    raw = np.column_stack([np.asarray(frame[f["column"]], dtype=float) for f in feats])
    center = np.array([f["center"] for f in feats])
    scale = np.array([f["scale"] for f in feats])
    return (raw - center) / scale


# =====================================================================================
# Model maths (numpy)
# =====================================================================================
def init_weights(kind: str, n_in: int, hidden: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Starting weights: zeros for the logistic model, Glorot-uniform for the MLP.

    The MLP's hidden layer must not start at zero (every hidden unit would stay
    identical), so it is drawn from a seeded RNG at the hub and broadcast.
    """
    if kind == "logistic":
        return [np.zeros(n_in), np.zeros(1)]
    if kind == "mlp":
        rng = np.random.default_rng(seed)
        lim1 = math.sqrt(6.0 / (n_in + hidden))
        lim2 = math.sqrt(6.0 / (hidden + 1))
        return [
            rng.uniform(-lim1, lim1, size=(n_in, hidden)),
            np.zeros(hidden),
            rng.uniform(-lim2, lim2, size=hidden),
            np.zeros(1),
        ]
    raise PolicyDenied(f"parameter 'model': kind must be one of {list(MODEL_KINDS)}, got {kind!r}")


def n_weights(weights: Sequence[np.ndarray]) -> int:
    """Number of free parameters (what the parameter/row rule counts)."""
    return int(sum(np.asarray(w).size for w in weights))


def logits(kind: str, weights: Sequence[np.ndarray], X: np.ndarray) -> np.ndarray:
    """Linear predictor ``z`` so that ``P(y=1) = sigmoid(z)``."""
    if kind == "logistic":
        w, b = weights
        return X @ w + b[0]
    W1, b1, w2, b2 = weights
    return np.tanh(X @ W1 + b1) @ w2 + b2[0]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def log_loss_sum(z: np.ndarray, y: np.ndarray) -> float:
    """Summed binary cross-entropy from logits, numerically stable."""
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def loss_and_grad(
    kind: str, weights: Sequence[np.ndarray], X: np.ndarray, y: np.ndarray
) -> tuple[float, list[np.ndarray]]:
    """Mean cross-entropy and its gradient with respect to every weight array."""
    n = max(len(y), 1)
    if kind == "logistic":
        w, b = weights
        z = X @ w + b[0]
        r = (sigmoid(z) - y) / n
        return log_loss_sum(z, y) / n, [X.T @ r, np.array([r.sum()])]
    W1, b1, w2, b2 = weights
    H = np.tanh(X @ W1 + b1)
    z = H @ w2 + b2[0]
    r = (sigmoid(z) - y) / n
    dH = np.outer(r, w2) * (1.0 - H * H)
    return log_loss_sum(z, y) / n, [X.T @ dH, dH.sum(axis=0), H.T @ r, np.array([r.sum()])]


def local_sgd(
    kind: str,
    weights: Sequence[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    epochs: int = 1,
    lr: float = 0.1,
    batch_size: int = 32,
    mu: float = 0.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """Mini-batch SGD on one site's rows, with FedProx's proximal term when ``mu > 0``.

    The proximal term ``mu/2 ||w - w_global||^2`` keeps a site's local optimum
    near the global weights, which limits client drift when sites differ.
    """
    start = [np.array(w, dtype=float) for w in weights]
    cur = [w.copy() for w in start]
    rng = np.random.default_rng(seed)
    n = len(y)
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            _, grads = loss_and_grad(kind, cur, X[idx], y[idx])
            for i, g in enumerate(grads):
                if mu:
                    g = g + mu * (cur[i] - start[i])
                cur[i] -= lr * g
    return cur


# =====================================================================================
# Node side: the registered computations
# =====================================================================================
def _as_weights(raw: Any, kind: str, n_in: int, hidden: int | None) -> list[np.ndarray]:
    if not isinstance(raw, list):
        raise PolicyDenied("parameter 'weights' must be a list of arrays (JSON lists)")
    try:
        arrays = [np.asarray(a, dtype=float) for a in raw]
    except (TypeError, ValueError):
        raise PolicyDenied("parameter 'weights' must hold numbers only") from None
    shapes: list[tuple[int, ...]]
    if kind == "logistic":
        shapes = [(n_in,), (1,)]
    else:
        h = int(hidden or 0)
        shapes = [(n_in, h), (h,), (h,), (1,)]
    got = [a.shape for a in arrays]
    if got != shapes:
        raise PolicyDenied(
            f"parameter 'weights': shapes {got} do not match a {kind} model with {n_in} "
            f"features (expected {shapes})"
        )
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise PolicyDenied("parameter 'weights' must be finite")
    return arrays


def _int_param(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise PolicyDenied(f"parameter {name!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _float_param(params: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyDenied(f"parameter {name!r} must be a number, got {value!r}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise PolicyDenied(f"parameter {name!r} must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def validate_model_params(params: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    """Shared checks of ``model``/``hidden``/``weights``/``preprocess``/``target``."""
    if not isinstance(params, dict):
        raise PolicyDenied("parameters must be an object")
    kind = params.get("model", "logistic")
    if kind not in MODEL_KINDS:
        raise PolicyDenied(f"parameter 'model' must be one of {list(MODEL_KINDS)}, got {kind!r}")
    target = params.get("target")
    if not isinstance(target, str):
        raise PolicyDenied("parameter 'target' must name the outcome column")
    descriptor.column(target)
    spec = params.get("preprocess")
    if not isinstance(spec, dict):
        raise PolicyDenied("parameter 'preprocess' must be the preprocessing spec (an object)")
    pre = _preprocess_module(spec)
    if pre is not None:
        spec = pre.validate_spec(spec, descriptor)
    else:
        for f in _fallback_features(spec):
            descriptor.column(f["column"])
    n_in = n_features(spec)
    hidden = None
    if kind == "mlp":
        hidden = _int_param(params, "hidden", 16, 1, _MAX_HIDDEN)
    weights = _as_weights(params.get("weights"), kind, n_in, hidden)
    positive = params.get("positive")
    return {
        **params,
        "model": kind,
        "target": target,
        "positive": None if positive is None else str(positive),
        "preprocess": spec,
        "hidden": hidden,
        "weights": weights,
        "holdout": validate_holdout(params.get("holdout")),
    }


def validate_local_train(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``local_train`` request; every error names the parameter."""
    out = validate_model_params(params, descriptor)
    out["epochs"] = _int_param(params, "epochs", 1, 1, _MAX_EPOCHS)
    out["batch_size"] = _int_param(params, "batch_size", 32, 1, 1_000_000)
    out["seed"] = _int_param(params, "seed", 0, 0, 2**31 - 1)
    out["lr"] = _float_param(params, "lr", 0.1, 1e-8, 10.0)
    out["mu"] = _float_param(params, "mu", 0.0, 0.0, 1e4)
    out["dp"] = validate_dp_training(params.get("dp"), policy)
    if out["dp"] is None:
        out.pop("dp")
    return out


DP_LEVELS = ("sample", "client")
_DP_COUNT_SHARE = 0.05


def validate_dp_training(dp: Any, policy: Any) -> dict[str, Any] | None:
    """Check the ``dp`` block of ``local_train``: ``{"epsilon", "clip"?, "level"?}``.

    ``epsilon`` is this round's ε at the site's ``dp_delta`` (Gaussian mechanism,
    zCDP); ``clip`` the L2 clipping norm; ``level`` ``"sample"`` (default: each
    patient's gradient clipped, full-batch noisy gradient steps) or ``"client"``
    (the site's whole update clipped, noise on the update). The planned cost goes to
    ``dp["planned"]`` for the node's privacy guard.
    """
    if dp is None:
        return None
    from healthfed.privacy.ledger import Charge, rho_for_epsilon

    if not isinstance(dp, dict):
        raise PolicyDenied("parameter 'dp' must be an object {epsilon, clip, level}")
    unknown = sorted(set(dp) - {"epsilon", "clip", "level", "planned", "delta"})
    if unknown:
        raise PolicyDenied(f"parameter 'dp': unknown field(s) {unknown}")
    eps = _float_param(dp, "epsilon", 0.0, 1e-6, 1e3)
    clip = _float_param(dp, "clip", 1.0, 1e-6, 1e6)
    level = dp.get("level", "sample")
    if level not in DP_LEVELS:
        raise PolicyDenied(f"parameter 'dp.level' must be one of {list(DP_LEVELS)}")
    delta = float(getattr(policy, "dp_delta", 1e-6))
    cap = float(getattr(policy, "dp_epsilon_per_request", 1.0))
    if eps > cap + 1e-12:
        from healthfed.errors import BudgetExceeded

        raise BudgetExceeded(
            f"local_train: ε = {eps:g} per round requested; this site allows at most "
            f"ε = {cap:g} per request (dp_epsilon_per_request)"
        )
    rho = rho_for_epsilon(eps, delta)
    return {
        "epsilon": eps,
        "clip": clip,
        "level": level,
        "delta": delta,
        "planned": Charge.zcdp(rho, delta).to_dict(),
    }


def per_example_grads(
    kind: str, weights: Sequence[np.ndarray], X: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Per-row gradients of the cross-entropy, flattened: shape ``(n, n_weights)``."""
    if kind == "logistic":
        w, b = weights
        r = sigmoid(X @ w + b[0]) - y
        return np.column_stack([X * r[:, None], r])
    W1, b1, w2, b2 = weights
    H = np.tanh(X @ W1 + b1)
    r = sigmoid(H @ w2 + b2[0]) - y
    dH = (r[:, None] * w2[None, :]) * (1.0 - H * H)
    gW1 = (X[:, :, None] * dH[:, None, :]).reshape(len(y), -1)
    return np.column_stack([gW1, dH, H * r[:, None], r])


def _unflatten(vec: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    out, i = [], 0
    for w in like:
        k = int(np.asarray(w).size)
        out.append(np.asarray(vec[i : i + k]).reshape(np.shape(w)))
        i += k
    return out


def _clip_rows(G: np.ndarray, clip: float) -> np.ndarray:
    norms = np.linalg.norm(G, axis=1)
    return G * np.minimum(1.0, clip / np.maximum(norms, 1e-12))[:, None]


def dp_local_update(
    kind: str,
    weights: Sequence[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    dp: dict[str, Any],
    epochs: int = 1,
    lr: float = 0.1,
    mu: float = 0.0,
    batch_size: int = 32,
    seed: int = 0,
) -> Any:
    """One site's differentially private update (a :class:`~healthfed.privacy.dp.DPRelease`).

    The round's ρ (from ``dp["epsilon"]`` at ``dp["delta"]``) is split: 5 % for a
    noisy row count (released as ``n_rows``, used for weighting and for the mean
    gradient), the rest for the update:

    * ``level="sample"``: ``epochs`` full-batch gradient steps; each step releases
      (inside the node) the sum of the per-patient gradients clipped to L2 norm
      ``clip`` plus Gaussian noise (OpenDP ``make_gaussian``, L2 sensitivity
      ``clip``), so one patient changes each noisy sum by at most ``clip``;
      steps compose in zCDP (ρ adds up).
    * ``level="client"``: the usual local SGD, then the site's whole update
      (``global + delta`` difference) clipped to norm ``clip`` and noised once. A
      patient can move a clipped update anywhere in the ball, so the sensitivity is
      ``2 * clip`` — costly, but honest.

    Everything released is post-processing of these OpenDP measurements.
    """
    from healthfed.privacy.dp import DPRelease, noisy_vector, postprocess
    from healthfed.privacy.dp import noisy_count as _noisy_count
    from healthfed.privacy.ledger import rho_for_epsilon

    delta = float(dp["delta"])
    rho = rho_for_epsilon(float(dp["epsilon"]), delta)
    clip = float(dp["clip"])
    n_noisy = _noisy_count_rho(len(y), _DP_COUNT_SHARE * rho, delta, _noisy_count)
    n_hat = max(float(n_noisy.value), 1.0)
    rho_update = (1.0 - _DP_COUNT_SHARE) * rho
    start = [np.array(w, dtype=float) for w in weights]
    flat0 = np.concatenate([w.ravel() for w in start])
    parts = [n_noisy]
    if dp["level"] == "sample":
        cur = [w.copy() for w in start]
        rho_step = rho_update / max(int(epochs), 1)
        for _ in range(max(int(epochs), 1)):
            G = _clip_rows(per_example_grads(kind, cur, X, y), clip)
            g = noisy_vector(G.sum(axis=0), clip, rho_step, delta)
            parts.append(g)
            step = np.asarray(g.value) / n_hat
            flat = np.concatenate([w.ravel() for w in cur])
            if mu:
                step = step + mu * (flat - flat0)
            cur = _unflatten(flat - lr * step, start)
        delta_vec = np.concatenate([w.ravel() for w in cur]) - flat0
        upd = postprocess(delta_vec, parts[1:])
    else:
        w1 = local_sgd(
            kind, start, X, y, epochs=epochs, lr=lr, batch_size=batch_size, mu=mu, seed=seed
        )
        d = np.concatenate([w.ravel() for w in w1]) - flat0
        d = d * min(1.0, clip / max(float(np.linalg.norm(d)), 1e-12))
        upd = noisy_vector(d, 2.0 * clip, rho_update, delta)
        parts.append(upd)
    return DPRelease(
        LOCAL_TRAIN,
        {"delta": upd, "n_rows": n_noisy},
        {"shapes": [list(np.shape(w)) for w in start], "level": dp["level"]},
    )


def _noisy_count_rho(n: int, rho: float, delta: float, noisy_count: Any) -> Any:
    from healthfed.privacy.dp import DPBudget
    from healthfed.privacy.ledger import zcdp_epsilon

    return noisy_count(int(n), DPBudget(zcdp_epsilon(rho, delta), "gaussian", delta))


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
    loss0 = log_loss_sum(logits(kind, w0, X), y)
    w1 = local_sgd(
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
    return ModelStatistics(arrays=arrays, n_rows=n, n_params=n_params, scalars={"loss_sum": loss0})


def combine_local_train(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict:
    """Hub side of a single ``fed.run('local_train')``: the row-weighted mean delta.

    Iterative training is driven by the estimators' own loop of
    ``Federation.query`` calls; this combine exists so one round can also be
    run through ``Federation.run``.
    """
    deltas, ns = _replies_to_deltas(site_replies)
    total = sum(ns)
    mean = [
        np.sum([n * d[i] for d, n in zip(deltas, ns, strict=True)], axis=0) / total
        for i in range(len(deltas[0]))
    ]
    return {"delta": [m.tolist() for m in mean], "n_rows": total, "sites": sorted(site_replies)}


def _round_loss(replies: dict[str, dict[str, Any]], ns: list[int]) -> float:
    """Pooled loss of the round's starting model (NaN with DP: sites do not release it)."""
    try:
        return sum(float(replies[s]["scalars"]["loss_sum"]) for s in replies) / sum(ns)
    except (KeyError, TypeError):
        return float("nan")


def _replies_to_deltas(
    replies: dict[str, dict[str, Any]],
) -> tuple[list[list[np.ndarray]], list[int]]:
    deltas, ns = [], []
    for site in sorted(replies):
        reply = replies[site]
        if reply.get("format") == "healthfed.dp/1":
            shapes = reply["public"]["shapes"]
            vec = np.asarray(reply["values"]["delta"], dtype=float)
            like = [np.zeros(tuple(sh)) for sh in shapes]
            deltas.append(_unflatten(vec, like))
            ns.append(max(int(reply["values"]["n_rows"]), 1))
            continue
        k = len(reply["arrays"])
        deltas.append([array_from_reply(reply, f"delta_{i}") for i in range(k)])
        ns.append(int(reply["n_rows"]))
    return deltas, ns


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

    One round gives the hub the pooled means/SDs for the minimal
    standardisation spec (the same rows ``local_train`` will use).
    """
    cols = params["columns"]
    needed = [quote_ident(c) for c in cols] + (
        [quote_ident(params["target"])] if params["target"] else []
    )
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in needed)
    where = holdout_sql(descriptor, params["holdout"])
    sums = ", ".join(f"SUM(CAST({quote_ident(c)} AS DOUBLE))" for c in cols)
    sqs = ", ".join(
        f"SUM(CAST({quote_ident(c)} AS DOUBLE) * CAST({quote_ident(c)} AS DOUBLE))" for c in cols
    )
    row = con.execute(
        f"SELECT COUNT(*), {sums}, {sqs} FROM data WHERE {not_null} AND ({where})"
    ).fetchone()
    n = int(row[0])
    k = len(cols)
    s = np.array([v or 0.0 for v in row[1 : 1 + k]], dtype=float)
    ss = np.array([v or 0.0 for v in row[1 + k :]], dtype=float)
    return ModelStatistics(arrays={"sum": s, "sumsq": ss}, n_rows=n)


def combine_feature_moments(site_replies: dict[str, dict[str, Any]], params: dict) -> dict:
    """Pooled means and SDs, as the minimal preprocessing spec."""
    n = sum(int(r["n_rows"]) for r in site_replies.values())
    s = np.sum([array_from_reply(r, "sum") for r in site_replies.values()], axis=0)
    ss = np.sum([array_from_reply(r, "sumsq") for r in site_replies.values()], axis=0)
    mean = s / n
    var = np.maximum(ss / n - mean**2, 0.0) * n / max(n - 1, 1)
    sd = np.sqrt(var)
    return {
        "features": [
            {"column": c, "center": float(m), "scale": float(v) if v > 0 else 1.0}
            for c, m, v in zip(params["columns"], mean, sd, strict=True)
        ]
    }


def _register() -> None:
    from healthfed.compute.registry import Computation, register

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


_register()


# =====================================================================================
# Hub side: server update rules
# =====================================================================================
def _records(
    global_w: Sequence[np.ndarray], deltas: list[list[np.ndarray]], ns: list[int]
) -> list[Any]:
    """Sites' updated weights as Flower ``RecordDict``\\s weighted by ``num-examples``."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    out = []
    for d, n in zip(deltas, ns, strict=True):
        arrays = ArrayRecord(
            {
                f"w{i}": Array(np.asarray(g + di, dtype=float))
                for i, (g, di) in enumerate(zip(global_w, d, strict=True))
            }
        )
        out.append(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": n})}))
    return out


def _make_fedadam(eta: float, beta_1: float, beta_2: float, tau: float) -> Any:
    """Flower's FedAdam fed with ``RecordDict``\\s instead of reply messages."""
    from flwr.serverapp.strategy import FedAdam, FedAvg
    from flwr.serverapp.strategy.strategy_utils import (
        aggregate_arrayrecords,
        aggregate_metricrecords,
    )

    class _RecordAverage(FedAvg):
        # Sits between FedOpt and FedAvg in the MRO: FedAdam.aggregate_train's
        # super() call lands here and gets the plain weighted average.
        def aggregate_train(self, server_round: int, replies: Any) -> Any:  # type: ignore[override]
            records = list(replies)
            return (
                aggregate_arrayrecords(records, self.weighted_by_key),
                aggregate_metricrecords(records, self.weighted_by_key),
            )

    class _RecordFedAdam(FedAdam, _RecordAverage):
        pass

    return _RecordFedAdam(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)


class ServerOptimizer:
    """Turns the sites' deltas into new global weights with one of the strategies.

    Parameters
    ----------
    strategy
        ``"fedavg"``, ``"fedprox"`` (same server rule as FedAvg) or ``"fedadam"``.
    server_lr, beta_1, beta_2, tau
        FedAdam's ``eta``, moment decays and adaptivity (Reddi et al. 2021).
    """

    def __init__(
        self,
        strategy: str = "fedavg",
        server_lr: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        if strategy not in STRATEGIES:
            raise PolicyDenied(f"argument 'strategy' must be one of {list(STRATEGIES)}")
        self.strategy = strategy
        self._flower = (
            _make_fedadam(server_lr, beta_1, beta_2, tau) if strategy == "fedadam" else None
        )
        self._round = 0

    def step(
        self, global_w: Sequence[np.ndarray], deltas: list[list[np.ndarray]], ns: list[int]
    ) -> list[np.ndarray]:
        from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

        self._round += 1
        records = _records(global_w, deltas, ns)
        if self._flower is None:
            agg = aggregate_arrayrecords(records, "num-examples")
        else:
            self._flower.current_arrays = {
                f"w{i}": np.asarray(g, dtype=float) for i, g in enumerate(global_w)
            }
            agg, _ = self._flower.aggregate_train(self._round, records)
        return [agg[f"w{i}"].numpy().astype(float) for i in range(len(global_w))]


# =====================================================================================
# Hub side: the estimators
# =====================================================================================
try:  # scikit-learn conventions (get_params/set_params/clone) when it is installed
    from sklearn.base import BaseEstimator, ClassifierMixin
except ImportError:  # pragma: no cover
    BaseEstimator = object  # type: ignore[assignment,misc]
    ClassifierMixin = object  # type: ignore[assignment,misc]


class _FederatedBinaryClassifier(ClassifierMixin, BaseEstimator):
    """Shared hub loop of the federated binary classifiers (see subclasses)."""

    _kind = "logistic"

    def _hidden(self) -> int | None:
        return None

    def _secure(self) -> dict[str, Any]:
        """``query`` keywords: SecAgg+ rounds only when asked (plain federations need none)."""
        return {"secure": True} if getattr(self, "secure_aggregation", False) else {}

    def fit(
        self,
        federation: Any,
        dataset: str,
        target: str,
        features: Sequence[str] | None = None,
        *,
        positive: str | None = None,
        preprocess: dict[str, Any] | None = None,
        holdout: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> _FederatedBinaryClassifier:
        """Train across the federation's sites.

        Parameters
        ----------
        federation
            A ``healthfed`` ``Federation``; one ``query`` per round.
        dataset, target
            Dataset name at the nodes and the binary/categorical outcome column.
        features
            Numeric columns for the minimal standardisation spec (pooled means
            and SDs come from one extra ``feature_moments`` round). Ignored when
            ``preprocess`` is given.
        positive
            Level of ``target`` counted as 1 (default ``"1"`` for binary columns).
        preprocess
            A ready preprocessing spec (JSON object), e.g. from
            ``healthfed.compute.preprocess``.
        holdout
            ``{"fraction", "seed"}``: train on the complementary ``"train"`` part of
            each site's deterministic per-patient split (evaluate on ``"test"``).
        progress
            Show a Rich progress bar over rounds.

        Returns
        -------
        self
        """
        if self.strategy not in STRATEGIES:
            raise PolicyDenied(
                f"argument 'strategy' must be one of {list(STRATEGIES)}, got {self.strategy!r}"
            )
        min_sites = int(getattr(federation, "min_sites", 2))
        self.history_: list[dict[str, Any]] = []
        hold = validate_holdout({**holdout, "part": "train"}) if holdout else None
        if preprocess is None:
            if not features:
                raise PolicyDenied("argument 'features': give feature columns or 'preprocess'")
            preprocess = self._moments_spec(
                federation, dataset, target, list(features), hold, min_sites
            )
        self.preprocess_ = preprocess
        n_in = n_features(preprocess)
        weights = init_weights(self._kind, n_in, self._hidden() or 0, self.random_state)
        self.n_params_ = n_weights(weights)
        opt = ServerOptimizer(self.strategy, self.server_lr, self.beta_1, self.beta_2, self.tau)
        mu = self.mu if self.strategy == "fedprox" else 0.0
        base = {
            "model": self._kind,
            "target": target,
            "preprocess": preprocess,
            "epochs": self.local_epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "mu": mu,
        }
        if self._kind == "mlp":
            base["hidden"] = self._hidden()
        dp_cfg = getattr(self, "dp", None)
        if dp_cfg:
            base["dp"] = round_dp(dp_cfg, self.rounds)
        if positive is not None:
            base["positive"] = str(positive)
        if hold:
            base["holdout"] = hold
        bar = _progress(progress, self.rounds, f"{self.strategy} rounds")
        try:
            for r in range(1, self.rounds + 1):
                params = {
                    **base,
                    "weights": [w.tolist() for w in weights],
                    "seed": (self.random_state * 1_000_003 + r) % 2**31,
                }
                out = federation.round(LOCAL_TRAIN, dataset, params, **self._secure())
                if len(out.contributed) < min_sites:
                    raise ThresholdViolation(
                        f"round {r}: {len(out.contributed)} site(s) contributed "
                        f"({', '.join(out.contributed) or 'none'}), at least {min_sites} "
                        f"needed; refused: {out.refused}; missing: {out.missing}"
                    )
                deltas, ns = _replies_to_deltas(out.replies)
                loss = _round_loss(out.replies, ns)
                self.history_.append(
                    {
                        "round": r,
                        "loss": loss,
                        "sites": out.contributed,
                        "n_rows": int(sum(ns)),
                        "refused": dict(out.refused),
                        "missing": list(out.missing),
                    }
                )
                weights = opt.step(weights, deltas, ns)
                if bar is not None:
                    bar[0].update(bar[1], advance=1, description=f"{self.strategy} loss {loss:.4f}")
        finally:
            if bar is not None:
                bar[0].stop()
        self.weights_ = weights
        self.classes_ = np.array([0, 1])
        self.sites_ = sorted({s for h in self.history_ if h["round"] > 0 for s in h["sites"]})
        self.n_features_in_ = n_in
        self.target_ = target
        self.positive_ = positive
        return self

    def _moments_spec(
        self,
        federation: Any,
        dataset: str,
        target: str,
        features: list[str],
        hold: dict[str, Any] | None,
        min_sites: int,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"columns": features, "target": target}
        if hold:
            params["holdout"] = hold
        out = federation.round(FEATURE_MOMENTS, dataset, params, **self._secure())
        if len(out.contributed) < min_sites:
            raise ThresholdViolation(
                f"feature_moments: {len(out.contributed)} site(s) contributed, at least {min_sites} "
                f"needed; refused: {out.refused}; missing: {out.missing}"
            )
        spec = combine_feature_moments(out.replies, params)
        self.history_.append(
            {
                "round": 0,
                "loss": float("nan"),
                "sites": out.contributed,
                "n_rows": sum(int(r["n_rows"]) for r in out.replies.values()),
                "refused": dict(out.refused),
                "missing": list(out.missing),
                "step": "feature_moments",
            }
        )
        return spec

    # --- prediction ---------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "weights_")
        return logits(self._kind, self.weights_, transform_frame(X, self.preprocess_))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[P(y=0), P(y=1)]`` for the rows of a pandas frame."""
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def to_model_spec(self) -> dict[str, Any]:
        """JSON description a node can rebuild (used by federated evaluation)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "weights_")
        spec: dict[str, Any] = {
            "model": self._kind,
            "weights": [np.asarray(w).tolist() for w in self.weights_],
            "preprocess": self.preprocess_,
        }
        if self._kind == "mlp":
            spec["hidden"] = self._hidden()
        return spec


class FedAvgLogisticRegression(_FederatedBinaryClassifier):
    """Logistic regression trained by FedAvg, FedProx or FedAdam.

    Use it when an iterative, gradient-based fit is wanted (e.g. to compare
    with the exact federated Newton GLM, or as the simplest FedAvg model).

    Parameters
    ----------
    strategy
        ``"fedavg"``, ``"fedprox"`` or ``"fedadam"``.
    rounds
        Federated rounds (each is one ``Federation.query``).
    local_epochs, lr, batch_size
        Local SGD at every site per round.
    mu
        FedProx proximal weight (used only with ``strategy="fedprox"``).
    server_lr, beta_1, beta_2, tau
        FedAdam server step size, moment decays and adaptivity.
    random_state
        Seeds initial weights and the sites' batch order.
    dp
        Differentially private training: ``{"epsilon": total ε of the fit, "clip"?: L2
        norm (1.0), "level"?: "sample" (per-patient clipping, default) or "client",
        "delta"?: 1e-6}``. The budget is split over ``rounds`` (zCDP) and every
        site adds its own Gaussian noise and charges its ledger; see
        ``dp_local_update``. ``history_`` losses are NaN (sites release no loss).
    secure_aggregation
        Pool every round (and the standardisation moments) with Flower's SecAgg+:
        the hub sees only the sum of the sites' row-weighted updates, never one
        site's update (``Federation.query(..., secure=True)``). Needed when a site's
        policy sets ``secure_aggregation_required``; combines with ``dp``.

    Attributes
    ----------
    weights_ : list of ndarray
        ``[coef (p,), intercept (1,)]`` on the standardised design matrix.
    coef_, intercept_ : ndarray
        The same, in scikit-learn's shapes ``(1, p)`` and ``(1,)``.
    history_ : list of dict
        Per round: pooled training loss of the round's starting model,
        contributing ``sites``, ``n_rows``, ``refused`` (site -> reason), ``missing``.
    preprocess_ : dict
        The preprocessing spec every site used.
    """

    _kind = "logistic"

    def __init__(
        self,
        strategy: str = "fedavg",
        rounds: int = 20,
        local_epochs: int = 1,
        lr: float = 0.1,
        batch_size: int = 32,
        mu: float = 0.01,
        server_lr: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        random_state: int = 0,
        dp: dict[str, Any] | None = None,
        secure_aggregation: bool = False,
    ) -> None:
        self.strategy = strategy
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.mu = mu
        self.server_lr = server_lr
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.tau = tau
        self.random_state = random_state
        self.dp = dp
        self.secure_aggregation = secure_aggregation

    @property
    def coef_(self) -> np.ndarray:
        return np.asarray(self.weights_[0]).reshape(1, -1)

    @property
    def intercept_(self) -> np.ndarray:
        return np.asarray(self.weights_[1]).reshape(1)


class FederatedMLPClassifier(_FederatedBinaryClassifier):
    """A one-hidden-layer (tanh) MLP for a binary outcome, trained by FedAvg/FedProx/FedAdam.

    Parameters
    ----------
    hidden
        Hidden units. The model has ``p*hidden + 2*hidden + 1`` weights; a site
        releases a delta only when that is at most ``max_param_ratio`` times its
        rows, so smaller sites are refused (reported in ``history_``).
    Other parameters as in ``FedAvgLogisticRegression``.

    Attributes
    ----------
    weights_ : list of ndarray
        ``[W1 (p, hidden), b1 (hidden,), w2 (hidden,), b2 (1,)]``.
    coefs_ : list of ndarray
        ``[W1, w2]`` as in scikit-learn's ``MLPClassifier``; ``intercepts_`` ``[b1, b2]``.
    history_, preprocess_
        As in ``FedAvgLogisticRegression``.
    """

    _kind = "mlp"

    def __init__(
        self,
        hidden: int = 16,
        strategy: str = "fedavg",
        rounds: int = 20,
        local_epochs: int = 1,
        lr: float = 0.1,
        batch_size: int = 32,
        mu: float = 0.01,
        server_lr: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        random_state: int = 0,
        dp: dict[str, Any] | None = None,
        secure_aggregation: bool = False,
    ) -> None:
        self.hidden = hidden
        self.strategy = strategy
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.mu = mu
        self.server_lr = server_lr
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.tau = tau
        self.random_state = random_state
        self.dp = dp
        self.secure_aggregation = secure_aggregation

    def _hidden(self) -> int | None:
        return int(self.hidden)

    @property
    def coefs_(self) -> list[np.ndarray]:
        return [self.weights_[0], self.weights_[2].reshape(-1, 1)]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        return [self.weights_[1], self.weights_[3]]


def round_dp(dp: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Split a training run's DP budget over its rounds (zCDP: ρ adds up per round).

    ``dp = {"epsilon": total ε for the whole fit, "delta"?: δ (default 1e-6),
    "clip"?: 1.0, "level"?: "sample"}`` -> the per-round ``dp`` block of
    ``local_train``: ``ε_round`` with ``rounds * ρ(ε_round) = ρ(ε_total)`` at δ.
    The sites' ledgers charge each round; the total stays within ``epsilon``
    (plus the sites' other releases under the permit).
    """
    from healthfed.privacy.ledger import rho_for_epsilon, zcdp_epsilon

    if not isinstance(dp, dict) or "epsilon" not in dp:
        raise PolicyDenied("argument 'dp' must be {'epsilon': total ε, 'clip'?, 'level'?}")
    delta = float(dp.get("delta", 1e-6))
    rho = rho_for_epsilon(float(dp["epsilon"]), delta) / max(int(rounds), 1)
    out = {"epsilon": zcdp_epsilon(rho, delta) * (1 - 1e-9), "clip": float(dp.get("clip", 1.0))}
    if "level" in dp:
        out["level"] = dp["level"]
    return out


def _progress(enabled: bool, total: int, label: str) -> tuple[Any, Any] | None:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task


__all__ = [
    "FedAvgLogisticRegression",
    "FederatedMLPClassifier",
    "ServerOptimizer",
    "build_design",
    "init_weights",
    "local_sgd",
    "logits",
    "sigmoid",
    "transform_frame",
]
