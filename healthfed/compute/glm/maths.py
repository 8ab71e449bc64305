"""The maths of an exact federated GLM: per-site score, Fisher information and deviance.

The log-likelihood of a GLM is a sum over rows, so its gradient (score) and
Hessian are sums over sites. For canonical links Newton-Raphson is IRLS/Fisher
scoring, so summing each site's ``X^T (y - mu)`` and ``X^T W X`` (``W`` =
``mu(1-mu)``, ``1`` or ``mu``) and taking the Newton step at the aggregator fits the
same model as the concatenated rows. Used by the nodes and by the tests' pooled
reference; numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from healthfed.errors import FederationError, PolicyDenied

__all__ = [
    "FAMILIES",
    "glm_derivatives",
    "glm_row_terms",
    "glm_start",
    "glm_sums",
    "glm_start_weights",
    "pack_upper",
    "sigmoid",
    "unpack_upper",
    "weighted_gram",
]

FAMILIES = ("binomial", "gaussian", "poisson")


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, overflow-free (``tanh`` form)."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


_CHUNK_ROWS = 8_192


def _block_buffer(X: np.ndarray, rows: int) -> np.ndarray:
    """A reusable row-block buffer in ``X``'s memory order (same-layout copies are fastest)."""
    if X.flags.f_contiguous and not X.flags.c_contiguous:
        return np.empty((rows, X.shape[1]), order="F")
    return np.empty((rows, X.shape[1]))


def _log1p_exp_neg_abs(eta: np.ndarray) -> np.ndarray:
    """``log1p(exp(-|eta|))``: the part of ``log(1 + exp(eta))`` beyond ``max(eta, 0)``.

    ``log(1 + exp(eta)) = max(eta, 0) + log1p(exp(-|eta|))`` is the formula of
    ``np.logaddexp(0, eta)``, written with vectorised ufuncs in one buffer (several
    times faster than ``logaddexp``'s scalar loop).
    """
    t = np.abs(eta)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    return t


def _sum_log1pexp(eta: np.ndarray) -> float:
    """``sum(log(1 + exp(eta)))``, stably (:func:`_log1p_exp_neg_abs`)."""
    return float(np.sum(_log1p_exp_neg_abs(eta)) + np.sum(np.maximum(eta, 0.0)))


def _log1pexp(eta: np.ndarray) -> np.ndarray:
    """``log(1 + exp(eta))`` per row, stably (:func:`_log1p_exp_neg_abs`)."""
    t = _log1p_exp_neg_abs(eta)
    t += np.maximum(eta, 0.0)
    return t


def weighted_gram(X: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """``X^T diag(w) X`` for ``w >= 0``, in row blocks through one small reused buffer.

    Each block is scaled by ``sqrt(w)`` and multiplied by its own transpose (a
    BLAS ``syrk``), so no ``n x p`` temporary is allocated per round: on a node
    that is faster (cache-resident blocks) and avoids touching fresh memory.
    """
    n, p = X.shape
    H = np.zeros((p, p))
    if n == 0:
        return H
    buf = _block_buffer(X, min(_CHUNK_ROWS, n))
    sw = None if w is None else np.sqrt(w)
    for lo in range(0, n, _CHUNK_ROWS):
        xc = X[lo : lo + _CHUNK_ROWS]
        b = buf[: len(xc)]
        if sw is None:
            b[...] = xc
        else:
            np.multiply(xc, sw[lo : lo + _CHUNK_ROWS, None], out=b)
        H += b.T @ b
    return H


def glm_derivatives(
    family: str, X: np.ndarray, y: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Score, Fisher information, deviance and log-likelihood at ``beta`` over these rows.

    ``X`` includes the intercept column. For canonical links the observed and
    expected information coincide, so Newton-Raphson is Fisher scoring (IRLS).
    The Gaussian log-likelihood needs the pooled RSS and is returned as 0.

    One pass over ``X`` in row blocks: each block's linear predictor, mean,
    weights, score, deviance and ``syrk`` Gram update are computed while the
    block is in cache, and every temporary is block-sized (no ``n``-length or
    ``n x p`` array is allocated per round).
    """
    if family not in FAMILIES:
        raise PolicyDenied(f"parameter 'family' must be one of {list(FAMILIES)}, got {family!r}")
    n, p = X.shape
    H = np.zeros((p, p))
    score = np.zeros(p)
    loglik = 0.0
    deviance = 0.0
    if n == 0:
        return score, H, deviance, loglik
    beta = np.asarray(beta, dtype=np.float64)
    buf = _block_buffer(X, min(_CHUNK_ROWS, n))
    if family == "poisson":
        from scipy.special import gammaln, xlogy  # scipy only when a Poisson fit needs it
    for lo in range(0, n, _CHUNK_ROWS):
        xc = X[lo : lo + _CHUNK_ROWS]
        yc = y[lo : lo + _CHUNK_ROWS]
        b = buf[: len(xc)]
        eta = xc @ beta
        if family == "binomial":
            mu = sigmoid(eta)
            loglik += float(yc @ eta) - _sum_log1pexp(eta)
            w = mu * (1.0 - mu)
            resid = yc - mu
        elif family == "poisson":
            mu = np.exp(eta)
            ye = float(yc @ eta)
            loglik += ye - float(np.sum(mu)) - float(np.sum(gammaln(yc + 1.0)))
            deviance += 2.0 * (float(np.sum(xlogy(yc, yc))) - ye - float(np.sum(yc - mu)))
            w = mu
            resid = yc - mu
        else:  # gaussian
            resid = yc - eta
            deviance += float(resid @ resid)
            w = None
        score += resid @ xc
        if w is None:
            b[...] = xc
        else:
            np.sqrt(w, out=w)
            np.multiply(xc, w[:, None], out=b)
        H += b.T @ b
    if family == "binomial":
        deviance = -2.0 * loglik
    return score, H, deviance, loglik


def glm_row_terms(
    family: str, eta: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row at the linear predictor ``eta``: residual, IRLS weight, log-likelihood, deviance.

    What :func:`glm_derivatives` sums (its score is ``X' resid``, its information
    ``X' diag(w) X``); the node's release filter needs them row by row to profile who
    contributed to each released number.
    """
    if family == "binomial":
        mu = sigmoid(eta)
        ll = y * eta - _log1pexp(eta)
        return y - mu, mu * (1.0 - mu), ll, -2.0 * ll
    if family == "poisson":
        from scipy.special import gammaln, xlogy  # scipy only when a Poisson fit needs it

        mu = np.exp(eta)
        ll = y * eta - mu - gammaln(y + 1.0)
        return y - mu, mu, ll, 2.0 * (xlogy(y, y) - y * eta - (y - mu))
    resid = y - eta
    return resid, np.ones_like(eta), np.zeros_like(eta), resid * resid


def glm_sums(
    family: str,
    X: np.ndarray,
    resid: np.ndarray,
    w: np.ndarray,
    ll: np.ndarray,
    dev: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """:func:`glm_derivatives`' four numbers from :func:`glm_row_terms`' rows.

    A node needs the row terms anyway (its release filter profiles them), so the
    round sums them instead of computing the linear predictor, the means and the
    log-likelihood a second time: score ``X' resid``, information ``X' diag(w) X``,
    deviance and log-likelihood (the Gaussian's returned as 0, as there). Equal to
    :func:`glm_derivatives` up to the order of summation (pinned by tests).
    """
    score = X.T @ resid
    H = weighted_gram(X, None if family == "gaussian" else w)
    if family == "gaussian":
        return score, H, float(np.sum(dev)), 0.0
    loglik = float(np.sum(ll))
    deviance = -2.0 * loglik if family == "binomial" else float(np.sum(dev))
    return score, H, deviance, loglik


def glm_start_weights(family: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IRLS weights ``w`` and working response ``z`` at R's starting values."""
    if family == "binomial":
        mu = (y + 0.5) / 2.0
        eta = np.log(mu / (1.0 - mu))
        w = mu * (1.0 - mu)
    elif family == "poisson":
        mu = y + 0.1
        eta = np.log(mu)
        w = mu
    else:
        return np.ones_like(y, dtype=float), np.asarray(y, dtype=float)
    return w, eta + (y - mu) / w


def glm_start(family: str, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted normal equations ``(X^T W X, X^T W z)`` of IRLS from R's starting values."""
    if family == "binomial":
        mu = (y + 0.5) / 2.0
        eta = np.log(mu / (1.0 - mu))
        w = mu * (1.0 - mu)
    elif family == "poisson":
        mu = y + 0.1
        eta = np.log(mu)
        w = mu
    elif family == "gaussian":
        return weighted_gram(X), X.T @ y
    else:
        raise PolicyDenied(f"parameter 'family' must be one of {list(FAMILIES)}, got {family!r}")
    z = eta + (y - mu) / w
    return weighted_gram(X, w), X.T @ (w * z)


def pack_upper(H: np.ndarray) -> np.ndarray:
    """Upper triangle (row-major) of a symmetric matrix: halves the bytes on the wire."""
    return H[np.triu_indices(H.shape[0])]


def unpack_upper(v: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle :func:`pack_upper` gave."""
    p = int(round((math.sqrt(8 * len(v) + 1) - 1) / 2))
    if p * (p + 1) // 2 != len(v):
        raise FederationError(f"glm_step: a packed Hessian of length {len(v)} is not triangular")
    H = np.zeros((p, p))
    H[np.triu_indices(p)] = v
    return H + np.triu(H, 1).T
