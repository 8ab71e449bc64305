"""Contribution profiles of the Cox releases (``cox_site_newton``, ``cox_risk_sets``).

The model-release filter (:mod:`healthfed.privacy.model_release`) needs, for every
released number, who contributed to it. The Breslow gradient and Hessian of one
stratum decompose over rows exactly: with the cumulative hazard ``H0`` and the
risk-set means ``m(t) = S1(t) / S0(t)``,

* gradient: ``sum_j x_j (e_j - w_j H0(T_j))`` (each row's martingale residual),
* Hessian: ``sum_j [e_j m(T_j) m(T_j)' - w_j H0(T_j) x_j x_j']``,
* log-likelihood: ``sum_j e_j (eta_j - log S0(T_j))``.

Risk-set sums ``S0, S1, S2`` on a grid are sums over the rows still at risk at each
step; their profiles come from per-bucket support, ``|c|`` sums and top-``n`` cumulated
from the end (exact). As for the GLM, the linear predictor is bounded (a Cox weight
``exp(eta)`` of one patient cannot be made to dwarf everyone else's): its spread at
the site must stay within :data:`healthfed.privacy.bounded_region.ETA_BOUND`.
"""

from __future__ import annotations

import numpy as np

from healthfed.compute.glm.node import ETA_BOUND, check_trusted_region
from healthfed.privacy.contributions import (
    ContributionProfile,
    RowProfiler,
    cross_profile_blocks,
    indicator_columns,
    profile_rows,
)

__all__ = ["breslow_profiles", "cindex_profiles", "risk_set_profiles"]


def _design(X: np.ndarray, xc: np.ndarray) -> np.ndarray:
    """Centred features plus ``1 - x`` of the 0/1 columns (derivable by subtraction)."""
    ind = indicator_columns(X)
    return np.column_stack([xc, 1.0 - X[:, ind]]) if len(ind) else xc


def breslow_profiles(
    t: np.ndarray,
    e: np.ndarray,
    X: np.ndarray,
    xc: np.ndarray,
    beta: np.ndarray,
    n_top: int,
    eta_bound: float = ETA_BOUND,
) -> dict[str, ContributionProfile]:
    """Profiles of ``cox_site_newton``'s gradient, Hessian, ``x_sum`` and log-likelihood."""
    eta = xc @ beta
    check_trusted_region("poisson", eta, eta_bound)
    n, p = xc.shape
    w = np.exp(eta - (float(eta.max()) if n else 0.0))
    uniq, inv = np.unique(t, return_inverse=True)
    a0 = np.bincount(inv, weights=w, minlength=uniq.size)
    a1 = np.zeros((uniq.size, p))
    np.add.at(a1, inv, xc * w[:, None])
    s0 = np.cumsum(a0[::-1])[::-1]
    s1 = np.cumsum(a1[::-1], axis=0)[::-1]
    d = np.bincount(inv, weights=e, minlength=uniq.size)
    haz = np.where(d > 0, d / np.where(s0 > 0, s0, 1.0), 0.0)
    wh = w * np.cumsum(haz)[inv]
    m = s1[inv] / np.where(s0[inv] > 0, s0[inv], 1.0)[:, None] * (e > 0)[:, None]
    Z = _design(X, xc)
    q = Z.shape[1]
    resid = e - wh

    iu = np.triu_indices(q)
    mz = np.column_stack([m, np.zeros((n, q - p))])
    hess = RowProfiler(len(iu[0]), n_top)
    step = max(1, (1 << 20) // max(len(iu[0]), 1))
    for lo in range(0, n, step):
        z, mm, h = Z[lo : lo + step], mz[lo : lo + step], wh[lo : lo + step, None]
        # row j's exact Hessian share: e_j m m' - wh_j z z' (upper triangle)
        hess.add(mm[:, iu[0]] * mm[:, iu[1]] - h * z[:, iu[0]] * z[:, iu[1]])
    hprof = hess.profile()
    own = (iu[0] < p) & (iu[1] < p)
    vec = cross_profile_blocks(lambda lo, hi: (Z[lo:hi], resid[lo:hi, None]), n, n_top).ravel()
    raw = _design(X, X)
    xs = cross_profile_blocks(lambda lo, hi: (raw[lo:hi], np.ones((hi - lo, 1))), n, n_top)
    xs = xs.ravel()
    ll = np.where(e > 0, eta - np.log(np.where(s0[inv] > 0, s0[inv], 1.0)) - float(eta.max()), 0.0)
    return {
        "gradient": _take(vec, np.arange(q) < p),
        "gradient~complements": _take(vec, np.arange(q) >= p),
        "hessian": _symmetric(_take(hprof, own), p),
        "hessian~complements": _take(hprof, ~own),
        "x_sum": _take(xs, np.arange(q) < p),
        "x_sum~complements": _take(xs, np.arange(q) >= p),
        "loglik": profile_rows(ll, n_top, (1,)),
    }


def _take(prof: ContributionProfile, mask: np.ndarray) -> ContributionProfile:
    return ContributionProfile(
        prof.support[..., mask], prof.abs_sum[..., mask], prof.top[..., mask], prof.n_top
    )


def _symmetric(packed: ContributionProfile, p: int) -> ContributionProfile:
    """A packed upper-triangle profile spread over the full symmetric ``p x p`` matrix."""
    pos = np.zeros((p, p), dtype=int)
    iu = np.triu_indices(p)
    pos[iu] = np.arange(len(iu[0]))
    pos = np.triu(pos) + np.triu(pos, 1).T
    return ContributionProfile(
        packed.support[pos], packed.abs_sum[pos], packed.top[pos], packed.n_top
    )


def risk_set_profiles(
    idx: np.ndarray,
    e: np.ndarray,
    X: np.ndarray,
    xc: np.ndarray,
    beta: np.ndarray,
    n_steps: int,
    n_top: int,
    eta_bound: float = ETA_BOUND,
) -> dict[str, ContributionProfile]:
    """Profiles of ``cox_risk_sets``' ``s0``, ``s1``, ``s2`` (packed), event and x sums."""
    eta = xc @ beta
    check_trusted_region("poisson", eta, eta_bound)
    n, p = xc.shape
    w = np.exp(eta)
    Z = _design(X, xc)
    q = Z.shape[1]
    last = max(int(idx.max()) + 1 if n else 0, n_steps)
    iu = np.triu_indices(q)
    out: dict[str, ContributionProfile] = {}
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(last + 1))
    m = 1 + q + len(iu[0])
    sup, ab = np.zeros((last, m)), np.zeros((last, m))
    tops = np.zeros((last, n_top, m))
    for k in range(last):
        rows = order[bounds[k] : bounds[k + 1]]
        if rows.size == 0:
            continue
        z, wr = Z[rows], w[rows]
        C = np.column_stack([wr, z * wr[:, None], (z[:, iu[0]] * z[:, iu[1]]) * wr[:, None]])
        sup[k] = np.count_nonzero(C, axis=0)
        a = np.abs(C)
        ab[k] = a.sum(axis=0)
        if a.shape[0] > n_top:
            a = -np.partition(-a, n_top - 1, axis=0)[:n_top]
        tops[k, : a.shape[0]] = a
    # the n largest over the rows at risk at step k: merge the buckets' from the end
    top = np.zeros((last, m))
    run = np.zeros((n_top, m))
    for k in range(last - 1, -1, -1):
        both = np.concatenate([run, tops[k]], axis=0)
        run = -np.partition(-both, n_top - 1, axis=0)[:n_top]
        top[k] = run.sum(axis=0)
    sup, ab = (np.cumsum(a[::-1], axis=0)[::-1][:n_steps] for a in (sup, ab))
    top = top[:n_steps]
    prof = ContributionProfile(np.rint(sup).astype(np.int64), ab, top, n_top)
    own2 = (iu[0] < p) & (iu[1] < p)
    cols = {
        "s0": np.arange(m) == 0,
        "s1": (np.arange(m) >= 1) & (np.arange(m) < 1 + p),
        "s1~complements": (np.arange(m) >= 1 + p) & (np.arange(m) < 1 + q),
        "s2": np.concatenate([np.zeros(1 + q, dtype=bool), own2]),
        "s2~complements": np.concatenate([np.zeros(1 + q, dtype=bool), ~own2]),
    }
    for name, mask in cols.items():
        out[name] = _take(prof, mask)
    out["s0"] = ContributionProfile(
        out["s0"].support[:, 0], out["s0"].abs_sum[:, 0], out["s0"].top[:, 0], n_top
    )
    ev = cross_profile_blocks(
        lambda lo, hi: (Z[lo:hi], (e[lo:hi] > 0).astype(float)[:, None]), n, n_top
    ).ravel()
    out["event_x_sum"] = _take(ev, np.arange(q) < p)
    out["event_x_sum~complements"] = _take(ev, np.arange(q) >= p)
    raw = _design(X, X)
    xs = cross_profile_blocks(lambda lo, hi: (raw[lo:hi], np.ones((hi - lo, 1))), n, n_top)
    out["x_sum"] = _take(xs.ravel(), np.arange(q) < p)
    out["x_sum~complements"] = _take(xs.ravel(), np.arange(q) >= p)
    return out


def cindex_profiles(
    t: np.ndarray, e: np.ndarray, risk: np.ndarray, n_top: int, chunk: int = 2048
) -> dict[str, ContributionProfile]:
    """Profiles of Harrell's pair counts: each comparable pair counts half to each of its rows.

    Pairs are those of :func:`healthfed.compute.survival.maths.harrell_pairs`.
    """
    time = np.asarray(t, dtype=float)
    event = np.asarray(e, dtype=float) > 0
    risk = np.asarray(risk, dtype=float)
    share = np.zeros((time.size, 3))
    ev = np.flatnonzero(event)
    for lo in range(0, ev.size, chunk):
        i = ev[lo : lo + chunk]
        ti, ri = time[i, None], risk[i, None]
        comp = (time[None, :] > ti) | ((time[None, :] == ti) & ~event[None, :])
        for k, rel in enumerate((ri > risk[None, :], ri < risk[None, :], ri == risk[None, :])):
            pairs = comp & rel
            share[i, k] += 0.5 * pairs.sum(axis=1)
            share[:, k] += 0.5 * pairs.sum(axis=0)
    return {
        name: profile_rows(share[:, k], n_top, (1,))
        for k, name in enumerate(("concordant", "discordant", "tied_risk"))
    }
