"""Quantiles at the aggregator from sites' merged-bin histograms, with rigorous brackets.

Method
------
Every node bins a numeric variable on the same public grid: ``policy.histogram_bins``
equal bins over the column's *declared* bounds ``[low, high]`` (values outside are
clipped into the edge bins), then merges adjacent grid bins until every released
bin holds >= ``min_subset`` patients. Bins differ between sites but all their edges
are grid points.

Bracket. Replace every value by the left edge of its bin: each value can only go
down, so every order statistic of these lower bounds is <= the same order
statistic of the true values; likewise with right edges from above. For the
sample quantile of probability ``p`` over ``N`` pooled values, defined as in
numpy/pandas (``method="linear"``): ``h = (N - 1) p`` and the quantile lies
between the order statistics ``x_(floor h)`` and ``x_(ceil h)`` (0-based), so

    lo = (floor(h)+1)-th smallest left edge  <=  quantile  <=  (ceil(h)+1)-th smallest right edge = hi.

The bracket is exact arithmetic on released counts (no distributional
assumption). Its width is at most the width of the widest merged bin that holds
the relevant order statistics (at most a few grid bins of ``(high-low)/bins``
each, wider only where data are sparse). Clipping is monotone, so for data
outside the declared bounds the bracket holds for the clipped sample; when
``low < lo`` and ``hi < high`` it holds for the raw sample. So a bracket is
``guaranteed`` only when it lies strictly inside the grid: one that reaches a
declared bound holds only if no value lay outside the bounds, which the hub cannot
see (``healthfed node check`` reports such values at the site).

Point estimate. The pooled CDF is approximated by spreading each bin's count
uniformly over the bin (piecewise linear between grid points) and inverted at
``h + 0.5`` values; this point always lies inside ``[lo, hi]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Quantile", "pooled_quantiles"]


@dataclass(frozen=True)
class Quantile:
    """One quantile: point estimate and a bracket ``[lo, hi]`` holding the sample quantile.

    ``guaranteed``: the bracket holds whatever the data (it lies strictly inside the
    declared bounds); when False it holds only if no value lay outside the bounds.
    """

    p: float
    estimate: float
    lo: float
    hi: float
    guaranteed: bool = True


def _kth(edges: np.ndarray, counts: np.ndarray, k: int) -> float:
    """The (k+1)-th smallest value when ``edges[i]`` is repeated ``counts[i]`` times."""
    order = np.argsort(edges, kind="stable")
    cum = np.cumsum(counts[order])
    return float(edges[order][int(np.searchsorted(cum, k + 1))])


def pooled_quantiles(
    hists: Sequence[tuple[Sequence[float], Sequence[int]]], probs: Sequence[float]
) -> list[Quantile]:
    """Quantiles of the union of several sites' histograms.

    Parameters
    ----------
    hists
        ``(edges, counts)`` per site; ``len(edges) == len(counts) + 1``.
    probs
        Probabilities in ``[0, 1]``.

    Returns
    -------
    list of Quantile
        Empty when the histograms hold no values.
    """
    lefts, rights, cnts = [], [], []
    for edges, counts in hists:
        e = np.asarray(edges, dtype=float)
        c = np.asarray(counts, dtype=np.int64)
        lefts.append(e[:-1])
        rights.append(e[1:])
        cnts.append(c)
    if not cnts:
        return []
    L, R, C = np.concatenate(lefts), np.concatenate(rights), np.concatenate(cnts)
    N = int(C.sum())
    if N == 0:
        return []
    low, high = float(L.min()), float(R.max())  # the grid's ends: the declared bounds
    # piecewise-linear CDF, exact at every edge any site used
    grid = np.unique(np.concatenate([L, R]))
    width = np.where(R > L, R - L, 1.0)
    frac = np.clip((grid[:, None] - L[None, :]) / width[None, :], 0.0, 1.0)
    frac = np.where(R[None, :] > L[None, :], frac, (grid[:, None] >= R[None, :]).astype(float))
    F = frac @ C.astype(float)
    out = []
    for p in probs:
        h = (N - 1) * float(p)
        klo, khi = math.floor(h), math.ceil(h)
        lo, hi = _kth(L, C, klo), _kth(R, C, khi)
        target = h + 0.5
        idx = int(np.searchsorted(F, target, side="left"))
        if idx == 0:
            est = float(grid[0])
        elif idx >= len(grid):
            est = float(grid[-1])
        else:
            f0, f1 = F[idx - 1], F[idx]
            est = float(grid[idx - 1] + (target - f0) / (f1 - f0) * (grid[idx] - grid[idx - 1]))
        out.append(
            Quantile(
                p=float(p),
                estimate=min(max(est, lo), hi),
                lo=lo,
                hi=hi,
                guaranteed=bool(low < lo and hi < high),
            )
        )
    return out
