"""Evaluation maths: the public score grid, bin merging, AUROC, its bounds, recalibration terms.

Pure numpy, shared by the node (:mod:`.node`), the hub (:mod:`.combine`) and the
subgroup metrics (:mod:`healthfed.compute.subgroups`). Why a histogram AUROC is
exact up to within-bin pairs, and how merged bins are placed, is described in
the package docstring (:mod:`healthfed.compute.evaluation`).
"""

from __future__ import annotations

import math

import numpy as np

from healthfed.compute.fedavg import sigmoid
from healthfed.errors import ThresholdViolation

__all__ = [
    "DEFAULT_BINS",
    "auroc_bounds",
    "auroc_from_hist",
    "bin_index",
    "expand_to_fine",
    "grid_edges",
    "merge_bins",
    "merged_counts",
    "recalibration_derivatives",
]

#: Fine bins of the public score grid on [0, 1] unless a request asks for another number.
DEFAULT_BINS = 1000


def grid_edges(bins: int, threshold: float) -> tuple[np.ndarray, int]:
    """The public fine grid: ``bins`` equal bins on [0, 1] plus the threshold as an edge.

    Returns the edges and the index of the threshold edge.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    j = int(np.argmin(np.abs(edges - threshold)))
    if abs(edges[j] - threshold) > 1e-12:
        edges = np.sort(np.append(edges, threshold))
        j = int(np.searchsorted(edges, threshold))
    else:
        edges[j] = threshold
    return edges, j


def bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each probability: ``[e_i, e_{i+1})``, the last bin closed (``p >= t`` is positive)."""
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)


def _ok(c: float, k: int) -> bool:
    return c == 0 or c >= k


def _merge_segment(pos: np.ndarray, neg: np.ndarray, k: int, offset: int) -> list[int] | None:
    """Greedy adjacent merging of one segment; group start indices, or None if impossible."""
    if not (_ok(pos.sum(), k) and _ok(neg.sum(), k)):
        return None
    groups: list[list[float]] = []  # [start, pos, neg]
    start, cp, cn = 0, 0.0, 0.0
    for i in range(len(pos)):
        cp += pos[i]
        cn += neg[i]
        if cp + cn > 0 and _ok(cp, k) and _ok(cn, k):
            groups.append([start, cp, cn])
            start, cp, cn = i + 1, 0.0, 0.0
    if not groups:
        return [offset]
    groups[-1][1] += cp  # remainder (possibly only empty bins) joins the last group
    groups[-1][2] += cn
    while len(groups) > 1 and not (_ok(groups[-1][1], k) and _ok(groups[-1][2], k)):
        last = groups.pop()
        groups[-1][1] += last[1]
        groups[-1][2] += last[2]
    return [offset + int(g[0]) for g in groups]


def merge_bins(
    pos: np.ndarray, neg: np.ndarray, min_cell_count: int, cut: int | None = None
) -> tuple[np.ndarray, bool]:
    """Merge adjacent bins until every count of both labels is 0 or ``>= min_cell_count``.

    Parameters
    ----------
    pos, neg
        Counts per fine bin for each label.
    min_cell_count
        The site's smallest releasable non-zero count.
    cut
        A bin edge to keep if possible (the threshold), merging each side alone.

    Returns
    -------
    edges
        Group boundaries as fine-bin indices ``[0, ..., len(pos)]``.
    cut_kept
        Whether ``cut`` is still an edge.

    Raises
    ------
    ThresholdViolation
        The total count of a label is itself below the minimum: nothing can be released.
    """
    pos = np.asarray(pos, dtype=float)
    neg = np.asarray(neg, dtype=float)
    nb = len(pos)
    k = int(min_cell_count)
    if cut is not None and 0 < cut < nb:
        left = _merge_segment(pos[:cut], neg[:cut], k, 0)
        right = _merge_segment(pos[cut:], neg[cut:], k, cut)
        if left is not None and right is not None:
            return np.array(left + right + [nb]), True
    starts = _merge_segment(pos, neg, k, 0)
    if starts is None:
        raise ThresholdViolation(
            f"this site has between 1 and {k - 1} outcomes of one class on the evaluated rows "
            f"(policy min_cell_count/min_subset {k}); no score histogram can be released"
        )
    kept = cut is not None and (cut in starts or cut in (0, nb))
    return np.array(starts + [nb]), kept


def merged_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum fine-bin ``values`` within the groups given by ``edges``."""
    return np.add.reduceat(np.asarray(values, dtype=float), edges[:-1]) if len(values) else values


def expand_to_fine(
    counts: np.ndarray,
    edges: np.ndarray,
    n_fine: int,
    means: np.ndarray | None = None,
    grid: np.ndarray | None = None,
) -> np.ndarray:
    """Spread each group's count over its fine bins (for pooling sites with different bins).

    Without ``means`` the spread is uniform over the group's fine bins. With the
    group's mean score (and the fine ``grid`` edges) the count is spread
    uniformly over the widest interval centred on that mean inside the group,
    which keeps the group's mean and removes most of the bias of wide tail bins.
    """
    counts = np.asarray(counts, dtype=float)
    widths = np.diff(edges)
    if means is None or grid is None:
        return np.repeat(counts / widths, widths)[:n_fine]
    out = np.zeros(n_fine)
    for i, c in enumerate(counts):
        a, b = int(edges[i]), int(edges[i + 1])
        if c <= 0:
            continue
        m = float(means[i])
        lo, hi = grid[a], grid[b]
        if not (math.isfinite(m) and lo <= m <= hi):
            out[a:b] += c / (b - a)
            continue
        h = min(m - lo, hi - m)
        if h <= 0:
            j = min(max(int(np.searchsorted(grid, m, side="right")) - 1, a), b - 1)
            out[j] += c
            continue
        left = np.maximum(grid[a:b], m - h)
        right = np.minimum(grid[a + 1 : b + 1], m + h)
        out[a:b] += c * np.clip(right - left, 0.0, None) / (2.0 * h)
    return out


def auroc_from_hist(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """AUROC (ties in a bin count 1/2) and DeLong's variance from ordered bin counts."""
    pos = np.asarray(pos, dtype=float)
    neg = np.asarray(neg, dtype=float)
    P, N = pos.sum(), neg.sum()
    if P <= 0 or N <= 0:
        return float("nan"), float("nan")
    neg_below = np.cumsum(neg) - neg
    pos_above = P - np.cumsum(pos)
    v10 = (neg_below + 0.5 * neg) / N  # placement of a positive in each bin
    v01 = (pos_above + 0.5 * pos) / P  # placement of a negative in each bin
    auc = float(np.sum(pos * v10) / P)
    s10 = np.sum(pos * (v10 - auc) ** 2) / max(P - 1, 1)
    s01 = np.sum(neg * (v01 - auc) ** 2) / max(N - 1, 1)
    return auc, float(s10 / P + s01 / N)


def auroc_bounds(
    pos_groups: list[tuple[np.ndarray, np.ndarray]], neg_groups: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[float, float]:
    """Smallest and largest AUROC consistent with released bins.

    ``pos_groups``/``neg_groups``: per site, ``(edges, counts)`` in fine-bin
    indices. A positive in fine bins ``[a1, a2)`` certainly outranks a negative
    in ``[b1, b2)`` when ``a1 >= b2``, certainly not when ``a2 <= b1``;
    otherwise (overlap, including the same bin) the pair is undetermined.
    """

    def flat(groups: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
        lo, hi, c = [], [], []
        for edges, counts in groups:
            lo.append(edges[:-1])
            hi.append(edges[1:])
            c.append(np.asarray(counts, dtype=float))
        return np.concatenate(lo), np.concatenate(hi), np.concatenate(c)

    plo, phi, pc = flat(pos_groups)
    nlo, nhi, nc = flat(neg_groups)
    P, N = pc.sum(), nc.sum()
    if P <= 0 or N <= 0:
        return float("nan"), float("nan")
    order = np.argsort(nhi, kind="stable")
    cum_hi = np.concatenate([[0.0], np.cumsum(nc[order])])
    # negatives with nhi <= a1: certainly below
    below = cum_hi[np.searchsorted(nhi[order], plo, side="right")]
    order2 = np.argsort(nlo, kind="stable")
    cum_lo = np.concatenate([[0.0], np.cumsum(nc[order2])])
    # negatives with nlo >= a2: certainly above
    above = N - cum_lo[np.searchsorted(nlo[order2], phi, side="left")]
    wins = float(np.sum(pc * below))
    undetermined = float(np.sum(pc * (N - below - above)))
    return wins / (P * N), (wins + undetermined) / (P * N)


def recalibration_derivatives(
    z: np.ndarray, y: np.ndarray, cand: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood gradients and Hessians of the recalibration models at each candidate.

    Returns ``grad`` (K, 3): ``[d/da, d/db]`` of ``y ~ a + b z`` and ``d/dc`` of
    ``y ~ c + offset(z)``; ``hess`` (K, 4): ``[W, W z, W z^2]`` (the 2x2 information)
    and the 1x1 information of the offset model.
    """
    K = len(cand)
    grad = np.zeros((K, 3))
    hess = np.zeros((K, 4))
    for i, (a, b, c) in enumerate(cand):
        p = sigmoid(a + b * z)
        r = y - p
        w = p * (1.0 - p)
        pc = sigmoid(c + z)
        grad[i] = [r.sum(), (r * z).sum(), (y - pc).sum()]
        hess[i] = [w.sum(), (w * z).sum(), (w * z * z).sum(), (pc * (1.0 - pc)).sum()]
    return grad, hess
