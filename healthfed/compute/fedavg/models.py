"""The models FedAvg trains, in numpy: a logistic model and a one-hidden-layer (tanh) MLP.

Weights are lists of arrays (``[coef, intercept]`` or ``[W1, b1, w2, b2]``),
sent as JSON lists and rebuilt by every site. Local training is plain
mini-batch SGD with FedProx's proximal term; the per-row gradients are what the
differentially private update clips. Flower ships no model code, so this is ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from healthfed.compute.deadline import check_deadline
from healthfed.errors import PolicyDenied
from healthfed.privacy.bounded_region import check_bounded

__all__ = [
    "MODEL_KINDS",
    "clip_rows",
    "init_weights",
    "local_sgd",
    "local_sgd_attributed",
    "log_loss_sum",
    "logits",
    "loss_and_grad",
    "n_weights",
    "node_logits",
    "per_example_grads",
    "sigmoid",
    "unflatten",
]

MODEL_KINDS = ("logistic", "mlp")


def init_weights(kind: str, n_in: int, hidden: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Starting weights: zeros for the logistic model, Glorot-uniform for the MLP.

    The MLP's hidden layer must not start at zero (every hidden unit would stay
    identical), so it is drawn from a seeded RNG at the aggregator and broadcast.
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
    return _forward(kind, weights, X)[1]


def _forward(
    kind: str, weights: Sequence[np.ndarray], X: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """The hidden units' inputs (``None`` for the logistic model) and the logits."""
    if kind == "logistic":
        w, b = weights
        return None, X @ w + b[0]
    W1, b1, w2, b2 = weights
    pre = X @ W1 + b1
    return pre, np.tanh(pre) @ w2 + b2[0]


def node_logits(
    kind: str, weights: Sequence[np.ndarray], X: np.ndarray, bound: float
) -> np.ndarray:
    """:func:`logits` of a researcher-chosen model at a node, inside the bounded region.

    Every pre-activation the model computes on the site's rows -- each hidden unit's
    input and the output logit -- must stay within ``bound`` (the site policy's
    ``eta_bound``), or the node refuses (:mod:`healthfed.privacy.bounded_region`):
    a unit pushed to +-1000 is an indicator of one feature value and isolates the
    patients who have it.
    """
    pre, z = _forward(kind, weights, X)
    if pre is not None:
        check_bounded("input of a hidden unit", pre, bound)
    check_bounded("model's logit", z, bound)
    return z


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``P(y=1)`` from the logits."""
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
    return _sgd(kind, weights, X, y, epochs, lr, batch_size, mu, seed)


StepObserver = Callable[[np.ndarray, list[np.ndarray], int], None]


def _sgd(
    kind: str,
    weights: Sequence[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    mu: float,
    seed: int,
    before_step: StepObserver | None = None,
) -> list[np.ndarray]:
    """The one SGD loop; ``before_step(batch rows, current weights, step)`` sees each step."""
    start = [np.array(w, dtype=float) for w in weights]
    cur = [w.copy() for w in start]
    rng = np.random.default_rng(seed)
    n = len(y)
    t = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch_size):
            check_deadline()  # the node's wall-time limit (no-op outside a request)
            idx = order[lo : lo + batch_size]
            if before_step is not None:
                before_step(idx, cur, t)
            _, grads = loss_and_grad(kind, cur, X[idx], y[idx])
            for i, g in enumerate(grads):
                if mu:
                    g = g + mu * (cur[i] - start[i])
                cur[i] -= lr * g
            t += 1
    return cur


def local_sgd_attributed(
    kind: str,
    weights: Sequence[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    epochs: int = 1,
    lr: float = 0.1,
    batch_size: int = 32,
    mu: float = 0.0,
    seed: int = 0,
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """:func:`local_sgd` plus each row's share of the weight update, accumulated over steps.

    The update is a sum over rows: with ``d = 1 - lr * mu`` one step maps
    ``w - w0`` to ``d (w - w0) - lr/|B| sum_{i in B} g_i(w)``, so row ``i``'s share is
    ``sum_t d^(T-1-t) (-lr/|B_t|) g_i(w_t)`` over the steps ``t`` it was in. Per-row
    gradients factor through a few per-row numbers (``g_i = x_i * r_i`` for the
    logistic model; ``x_i (x) dH_i``, ``dH_i``, ``H_i r_i``, ``r_i`` for the MLP), and
    ``x_i`` does not change between steps, so the shares are kept as those factors:
    ``O(n * hidden)`` memory, not ``O(n * weights)``. Returned keys: ``"D"`` (the
    factor multiplying ``x_i`` for the first weight array and giving the second),
    and for the MLP ``"E"`` (third array) and ``"F"`` (fourth).
    """
    n = len(y)
    steps = epochs * math.ceil(n / batch_size) if n else 0
    decay = 1.0 - lr * mu
    hidden = np.asarray(weights[1]).size if kind == "mlp" else 1
    D = np.zeros((n, hidden))
    E = np.zeros((n, hidden))
    F = np.zeros(n)

    def attribute(idx: np.ndarray, cur: list[np.ndarray], t: int) -> None:
        scale = -lr / len(idx) * decay ** (steps - 1 - t)
        xb, yb = X[idx], y[idx]
        if kind == "logistic":
            r = sigmoid(xb @ cur[0] + cur[1][0]) - yb
            D[idx, 0] += scale * r
        else:
            H = np.tanh(xb @ cur[0] + cur[1])
            r = sigmoid(H @ cur[2] + cur[3][0]) - yb
            D[idx] += scale * (r[:, None] * cur[2][None, :]) * (1.0 - H * H)
            E[idx] += scale * H * r[:, None]
            F[idx] += scale * r

    cur = _sgd(kind, weights, X, y, epochs, lr, batch_size, mu, seed, attribute)
    out: dict[str, np.ndarray] = {"D": D} if kind == "mlp" else {"D": D[:, 0]}
    if kind == "mlp":
        out.update(E=E, F=F)
    return cur, out


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


def unflatten(vec: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A flat vector back into arrays shaped like ``like``."""
    out, i = [], 0
    for w in like:
        k = int(np.asarray(w).size)
        out.append(np.asarray(vec[i : i + k]).reshape(np.shape(w)))
        i += k
    return out


def clip_rows(G: np.ndarray, clip: float) -> np.ndarray:
    """Each row of ``G`` scaled down to L2 norm at most ``clip``."""
    norms = np.linalg.norm(G, axis=1)
    return G * np.minimum(1.0, clip / np.maximum(norms, 1e-12))[:, None]
