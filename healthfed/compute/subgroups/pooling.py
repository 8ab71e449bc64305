"""Pooling one group's released subgroup numbers over sites: counts, moments, histograms, CIs.

A :class:`GroupStats` holds what each site released for one group (one
:class:`SitePart` per site, ``None`` where the site's filter suppressed a
number) and pools each metric over the sites that released everything it
needs: proportions with Wilson intervals, the Brier score by Chan's pooled
moments, AUROC from the merged score histograms (:func:`expand_merged` puts
them back on the fine grid the way the filter merged them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthfed.compute.evaluation.maths import auroc_bounds, auroc_from_hist
from healthfed.compute.subgroups.node import CELLS

__all__ = ["NEEDS", "GroupStats", "SitePart", "expand_merged", "wilson"]

_Z = 1.959963984540054


def wilson(k: float, n: float) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``k / n`` (NaNs when ``n == 0``)."""
    if not n or n <= 0 or k is None:
        return float("nan"), float("nan")
    p = k / n
    den = 1.0 + _Z**2 / n
    mid = (p + _Z**2 / (2 * n)) / den
    half = _Z * math.sqrt(p * (1 - p) / n + _Z**2 / (4 * n * n)) / den
    return max(0.0, min(p, mid - half)), min(1.0, max(p, mid + half))


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _chan(
    a: tuple[float, float, float], b: tuple[float, float, float]
) -> tuple[float, float, float]:
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    if n == 0:
        return (0.0, 0.0, 0.0)
    d = mb - ma
    return (n, ma + d * nb / n, sa + sb + d * d * na * nb / n)


@dataclass
class SitePart:
    """What one site released for one group (``None`` = suppressed by its filter)."""

    site: str
    n: float
    cells: dict[str, float | None]
    sq: tuple[float, float, float] | None
    score: tuple[float, float, float] | None
    hists: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None
    k: int = 1  # smallest released non-zero histogram count at the site (its merging unit)


#: Confusion cells each metric needs; a site contributes to a metric only if all are released.
NEEDS: dict[str, tuple[str, ...]] = {
    "n_pos": ("tp", "fn"),
    "accuracy": ("tp", "tn"),
    "sensitivity": ("tp", "fn"),
    "specificity": ("fp", "tn"),
    "selection_rate": ("tp", "fp"),
    "false_positive_rate": ("fp", "tn"),
    "false_negative_rate": ("tp", "fn"),
    "ppv": ("tp", "fp"),
    "observed_rate": ("tp", "fn"),
}


@dataclass
class GroupStats:
    """A group's released numbers at one site or pooled over sites, metric by metric.

    Each metric is pooled over the sites that released every number it needs
    (e.g. specificity needs ``fp`` and ``tn``); ``excluded`` names, per metric,
    the sites left out because their filter suppressed one of those numbers.
    """

    parts: list[SitePart] = field(default_factory=list)
    suppressed_at: list[str] = field(default_factory=list)

    @property
    def sites(self) -> list[str]:
        return [p.site for p in self.parts]

    @property
    def n(self) -> float:
        return float(sum(p.n for p in self.parts))

    def cell_total(self, cell: str) -> float | None:
        """Sum of a confusion cell over the sites, ``None`` if a site suppressed it."""
        vals = [p.cells[cell] for p in self.parts]
        return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[arg-type]

    @property
    def complete(self) -> bool:
        return all(
            all(v is not None for v in p.cells.values())
            and p.sq is not None
            and p.hists is not None
            for p in self.parts
        )

    @property
    def partial(self) -> list[str]:
        return [
            p.site
            for p in self.parts
            if any(v is None for v in p.cells.values()) or p.sq is None or p.hists is None
        ]

    @property
    def sq(self) -> tuple[float, float, float] | None:
        return self._moments("sq")

    @property
    def score(self) -> tuple[float, float, float] | None:
        return self._moments("score")

    def _moments(self, name: str) -> tuple[float, float, float] | None:
        acc: tuple[float, float, float] = (0.0, 0.0, 0.0)
        for p in self.parts:
            m = getattr(p, name)
            if m is None:
                return None
            acc = _chan(acc, m)
        return acc

    def _pooled_moments(self, name: str) -> tuple[tuple[float, float, float] | None, list[str]]:
        acc: tuple[float, float, float] = (0.0, 0.0, 0.0)
        exc = []
        for p in self.parts:
            m = getattr(p, name)
            if m is None:
                exc.append(p.site)
            else:
                acc = _chan(acc, m)
        return (acc if len(exc) < len(self.parts) else None), exc

    def _pool(self, cells: tuple[str, ...]) -> tuple[dict[str, float], float, list[str]]:
        sums = dict.fromkeys(cells, 0.0)
        n = 0.0
        excluded = []
        for p in self.parts:
            if any(p.cells[c] is None for c in cells):
                excluded.append(p.site)
                continue
            for c in cells:
                sums[c] += float(p.cells[c])  # type: ignore[arg-type]
            n += p.n
        return sums, n, excluded

    def metrics(self, bins: int, min_sites: int = 1) -> dict[str, Any]:
        """Point estimates and 95% CIs (Wilson for proportions, normal for Brier, DeLong AUROC).

        The ``excluded`` entry maps each metric to the sites left out of it; a
        metric that fewer than ``min_sites`` sites could contribute to is NaN
        (a pooled number over one site would be that site's own number).
        """
        nan = float("nan")
        few = len(self.parts) - min_sites  # most sites that may be excluded
        out: dict[str, Any] = {"n": self.n}
        excluded: dict[str, list[str]] = {}

        def prop(name: str, num: tuple[str, ...], den: tuple[str, ...] | None) -> None:
            need = tuple(dict.fromkeys(num + (den or ())))
            sums, n, exc = self._pool(need)
            if exc:
                excluded[name] = exc
            if len(exc) > few:
                out[name] = out[f"{name}_ci_low"] = out[f"{name}_ci_high"] = nan
                return
            k = sum(sums[c] for c in num)
            d = sum(sums[c] for c in den) if den else n
            out[name] = _div(k, d)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = wilson(k, d)

        sums, _, exc = self._pool(("tp", "fn"))
        out["n_pos"] = sums["tp"] + sums["fn"] if len(exc) <= few else nan
        if exc:
            excluded["n_pos"] = exc
        prop("accuracy", ("tp", "tn"), None)
        if "accuracy" in excluded:  # accuracy needs every cell of a site: tp + tn over its n
            sums4, n4, exc4 = self._pool(CELLS)
            excluded["accuracy"] = exc4
            k = sums4["tp"] + sums4["tn"]
            out["accuracy"] = _div(k, n4) if n4 and len(exc4) <= few else nan
            out["accuracy_ci_low"], out["accuracy_ci_high"] = wilson(k, n4)
        prop("sensitivity", ("tp",), ("tp", "fn"))
        prop("specificity", ("tn",), ("fp", "tn"))
        prop("selection_rate", ("tp", "fp"), None)
        prop("false_positive_rate", ("fp",), ("fp", "tn"))
        prop("false_negative_rate", ("fn",), ("tp", "fn"))
        prop("ppv", ("tp",), ("tp", "fp"))
        prop("observed_rate", ("tp", "fn"), None)
        sq, exc = self._pooled_moments("sq")
        if exc:
            excluded["brier"] = exc
        if sq is not None and sq[0] > 0 and len(exc) <= few:
            sn, mean, m2 = sq
            se = math.sqrt(m2 / max(sn - 1, 1) / sn)
            out.update(
                brier=mean, brier_ci_low=max(0.0, mean - _Z * se), brier_ci_high=mean + _Z * se
            )
        else:
            out.update(brier=nan, brier_ci_low=nan, brier_ci_high=nan)
        score, exc = self._pooled_moments("score")
        if score is not None and score[0] > 0 and len(exc) <= few:
            out["mean_predicted"] = score[1]
            out["oe_ratio"] = _div(out["observed_rate"], score[1])
        else:
            out["mean_predicted"] = out["oe_ratio"] = nan
        with_hists = [p for p in self.parts if p.hists is not None]
        if len(with_hists) < len(self.parts):
            excluded["auroc"] = [p.site for p in self.parts if p.hists is None]
        if len(self.parts) - len(with_hists) <= few:
            out.update(GroupStats(with_hists).auroc(bins))
        else:
            out.update(GroupStats([]).auroc(bins))
        out["excluded"] = excluded
        return out

    def fine_hists(self, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Positives' and negatives' score counts on the fine grid (merged bins spread evenly)."""
        if not self.parts or any(p.hists is None for p in self.parts):
            return None
        pos, neg = np.zeros(bins), np.zeros(bins)
        for p in self.parts:
            for c in CELLS:
                for edges, counts in p.hists[c]:  # type: ignore[index]
                    fine = expand_merged(counts, edges, bins, p.k)
                    if c in ("tp", "fn"):
                        pos += fine
                    else:
                        neg += fine
        return pos, neg

    def auroc(self, bins: int) -> dict[str, float]:
        nan = float("nan")
        out = dict.fromkeys(
            ("auroc", "auroc_ci_low", "auroc_ci_high", "auroc_min", "auroc_max"), nan
        )
        fh = self.fine_hists(bins)
        if fh is None or fh[0].sum() <= 0 or fh[1].sum() <= 0:
            return out
        auc, var = auroc_from_hist(*fh)
        half = _Z * math.sqrt(var) if var == var else nan
        hs = [p.hists for p in self.parts]
        lo, hi = auroc_bounds(
            [h for d in hs for c in ("tp", "fn") for h in d[c]],  # type: ignore[index]
            [h for d in hs for c in ("fp", "tn") for h in d[c]],  # type: ignore[index]
        )
        out.update(
            auroc=auc,
            auroc_ci_low=max(0.0, auc - half),
            auroc_ci_high=min(1.0, auc + half),
            auroc_min=lo,
            auroc_max=hi,
        )
        return out


def expand_merged(counts: np.ndarray, edges: np.ndarray, bins: int, k: int) -> np.ndarray:
    """Place merged histogram counts back on the fine grid, using how the filter merges.

    The disclosure filter merges grid bins left to right and closes a merged bin
    at the first grid bin where it reaches ``k`` (the site's ``min_subset``), so
    that last grid bin holds at least ``count - (k - 1)`` values and the rest of
    the merged bin fewer than ``k``. Those are put on the last bin and the
    remaining ``k - 1`` are spread evenly; the final merged bin (which also
    absorbs trailing empty bins) is spread evenly. With ``k = 1`` this is exact.
    """
    out = np.zeros(bins)
    last = len(counts) - 1
    for i, c in enumerate(np.asarray(counts, dtype=float)):
        a, b = int(edges[i]), int(edges[i + 1])
        if c <= 0 or b <= a:
            continue
        if i == last or b - a == 1:
            out[a:b] += c / (b - a)
            continue
        spread = min(float(k - 1), c - 1.0)
        out[b - 1] += c - spread
        out[a:b] += spread / (b - a)
    return out
