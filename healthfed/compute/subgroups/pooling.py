"""Hub side of disaggregated evaluation: pooled subgroup metrics and a MetricFrame.

The sites' ``subgroup_metrics`` replies (see :mod:`healthfed.compute.subgroups`)
hold, per attribute and group, confusion counts (``None`` when the site's
filter suppressed them), moments of the squared error and of the predicted
probability, and merged score histograms per confusion cell. This module pools
them over the sites whose numbers were released and builds
:class:`FederatedMetricFrame`, which follows Fairlearn's ``MetricFrame``
(``overall``, ``by_group``, ``difference()``, ``ratio()``, ``group_min()``,
``group_max()``); with nothing suppressed its numbers equal
``fairlearn.metrics.MetricFrame`` on the pooled rows (tested).

A group suppressed at a site is excluded from that group's pooled numbers and
listed in ``suppressed_at``; a group whose numbers were released by fewer than
``min_sites`` sites is shown as suppressed altogether.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthfed.compute.evaluation import auroc_bounds, auroc_from_hist

__all__ = [
    "FAIRNESS_METRICS",
    "FederatedMetricFrame",
    "GroupStats",
    "SubgroupResult",
    "wilson",
]

CELLS = ("tp", "fn", "fp", "tn")
_Z = 1.959963984540054
#: Metrics of a :class:`FederatedMetricFrame`, in display order.
FAIRNESS_METRICS = (
    "n",
    "n_pos",
    "accuracy",
    "sensitivity",
    "specificity",
    "selection_rate",
    "false_positive_rate",
    "false_negative_rate",
    "ppv",
    "brier",
    "auroc",
    "mean_predicted",
    "observed_rate",
    "oe_ratio",
)


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


def _hist_from(cell: dict[str, Any] | None, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    if cell is None or "hist" not in cell:
        return None
    edges = np.rint(np.asarray(cell["hist"]["edges"], dtype=float) * bins).astype(int)
    return edges, np.asarray(cell["hist"]["counts"], dtype=float)


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


def _moments_from(cell: dict[str, Any] | None) -> tuple[float, float, float] | None:
    if cell is None:
        return None
    return (float(cell["n"]), float(cell["mean"]), float(cell["m2"]))


@dataclass
class SubgroupResult:
    """Released subgroup numbers per attribute, group and site, and their pooling.

    Attributes
    ----------
    site_stats
        ``{attribute: {site: {group: GroupStats | None}}}``; ``None`` = suppressed there.
    groups
        ``{attribute: [group labels]}`` in the sites' fixed order.
    """

    threshold: float
    bins: int
    groups: dict[str, list[str]]
    site_stats: dict[str, dict[str, dict[str, GroupStats | None]]]
    min_sites: int = 2
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        first = next(iter(self.site_stats.values()), {})
        return sorted(first)

    @classmethod
    def from_replies(
        cls, replies: dict[str, dict[str, Any]], threshold: float, min_sites: int = 2
    ) -> SubgroupResult:
        groups: dict[str, list[str]] = {}
        stats: dict[str, dict[str, dict[str, GroupStats | None]]] = {}
        bins = 0
        for site, r in sorted(replies.items()):
            bins = int(r["meta"]["bins"])
            released = [
                c
                for name, ns in r["numeric"].items()
                if name.startswith("hist.")
                for cell in [*ns["cells"], ns.get("overall")]
                if cell is not None and "hist" in cell
                for c in cell["hist"]["counts"]
                if c > 0
            ]
            k_site = int(min(released)) if released else 1
            for attr, labels in r["meta"]["attributes"].items():
                groups.setdefault(attr, list(labels))
                conf = r["tables"][f"conf.{attr}"]
                ntab = r["tables"][f"n.{attr}"]
                num = r["numeric"]
                per: dict[str, GroupStats | None] = {}
                for j, g in enumerate(labels):
                    n = ntab["counts"][0][j]
                    if n is None:
                        per[g] = None
                        continue
                    counts = [conf["counts"][i][j] for i in range(4)]
                    cells = {
                        c: (None if v is None else float(v))
                        for c, v in zip(CELLS, counts, strict=True)
                    }
                    hists: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = {}
                    for i, c in enumerate(CELLS):
                        h = _hist_from(num[f"hist.{c}.{attr}"]["cells"][j], bins)
                        if h is None and (counts[i] is None or counts[i] > 0):
                            hists = None
                            break
                        assert hists is not None
                        hists[c] = [] if h is None else [h]
                    zero = (0.0, 0.0, 0.0)
                    part = SitePart(
                        site=site,
                        n=float(n),
                        cells=cells,
                        sq=_moments_from(num[f"sqerr.{attr}"]["cells"][j]) if n else zero,
                        score=_moments_from(num[f"score.{attr}"]["cells"][j]) if n else zero,
                        hists=hists,
                        k=k_site,
                    )
                    per[g] = GroupStats(parts=[part])
                stats.setdefault(attr, {})[site] = per
        return cls(threshold, bins, groups, stats, min_sites)

    # --- pooling --------------------------------------------------------------------
    def pooled(self, attribute: str, group: str) -> GroupStats | None:
        """The group's numbers over the sites that released them (``None`` if < min_sites)."""
        total = GroupStats()
        for site, per in sorted(self.site_stats[attribute].items()):
            gs = per.get(group)
            if gs is None:
                total.suppressed_at.append(site)
                continue
            if gs.n == 0:
                continue
            total.parts += gs.parts
        if len(total.parts) < self.min_sites:
            return None
        return total

    def _supp(self, attribute: str, group: str) -> list[str]:
        return sorted(s for s, per in self.site_stats[attribute].items() if per.get(group) is None)

    def site_counts(self, attribute: str) -> dict[str, dict[str, int | None]]:
        """``{site: {group: n or None}}`` (``None`` = suppressed at that site)."""
        return {
            s: {g: (None if gs is None else int(gs.n)) for g, gs in per.items()}
            for s, per in self.site_stats[attribute].items()
        }

    def metric_frame(self, attribute: str, overall_attribute: str = "all") -> FederatedMetricFrame:
        """A MetricFrame-like view of ``attribute`` (groups with pooled n == 0 are left out)."""
        by: dict[str, dict[str, float]] = {}
        notes: dict[str, dict[str, Any]] = {}
        for g in self.groups[attribute]:
            gs = self.pooled(attribute, g)
            if gs is None:
                if any(per.get(g) is None for per in self.site_stats[attribute].values()):
                    notes[g] = {"suppressed": True, "suppressed_at": self._supp(attribute, g)}
                continue
            if gs.n == 0:
                continue
            m = gs.metrics(self.bins, self.min_sites)
            excluded = m.pop("excluded")
            by[g] = m
            notes[g] = {
                "suppressed": False,
                "suppressed_at": gs.suppressed_at,
                "excluded": excluded,
                "partial": gs.partial,
                "sites": gs.sites,
            }
        src = overall_attribute if overall_attribute in self.groups else attribute
        if src == attribute:
            tot = GroupStats()
            for g in self.groups[attribute]:
                gs = self.pooled(attribute, g)
                if gs is not None:
                    tot.parts += gs.parts
            overall = tot.metrics(self.bins)
        else:
            gs = self.pooled(src, self.groups[src][0])
            overall = gs.metrics(self.bins) if gs is not None else {}
        overall.pop("excluded", None)
        return FederatedMetricFrame(attribute, by, overall, notes)


class FederatedMetricFrame:
    """Fairlearn-style disaggregated metrics built from federated aggregates.

    Attributes
    ----------
    overall : pandas.Series
        Metrics over all evaluation rows.
    by_group : pandas.DataFrame
        One row per released group (index named after the attribute).
    notes : dict
        Per group: ``suppressed`` (no pooled numbers), ``suppressed_at`` (sites whose
        cells were suppressed and are excluded), ``partial`` (sites without moments/histograms).
    """

    def __init__(
        self,
        attribute: str,
        by_group: dict[str, dict[str, float]],
        overall: dict[str, float],
        notes: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        import pandas as pd

        self.attribute = attribute
        cols = [m for m in FAIRNESS_METRICS]
        frame = pd.DataFrame.from_dict(by_group, orient="index")
        frame = frame.reindex(columns=[c for c in frame.columns]) if len(frame) else frame
        frame.index.name = attribute
        self._full = frame
        self.by_group = frame[[c for c in cols if c in frame.columns]] if len(frame) else frame
        self._overall_full = pd.Series(overall, dtype=float)
        self.overall = self._overall_full.reindex([c for c in cols if c in overall])
        self.notes = notes or {}

    @property
    def metrics(self) -> list[str]:
        return list(self.by_group.columns)

    def group_min(self) -> Any:
        return self.by_group.min(axis=0)

    def group_max(self) -> Any:
        return self.by_group.max(axis=0)

    def difference(self, method: str = "between_groups") -> Any:
        """Largest gap between groups (``between_groups``) or to the overall value (``to_overall``)."""
        if method == "between_groups":
            return self.group_max() - self.group_min()
        if method == "to_overall":
            return (self.by_group - self.overall).abs().max(axis=0)
        raise ValueError(f"method must be 'between_groups' or 'to_overall', got {method!r}")

    def ratio(self, method: str = "between_groups") -> Any:
        """Smallest ratio between groups (min / max) or to the overall value."""
        if method == "between_groups":
            return self.group_min() / self.group_max()
        if method == "to_overall":
            r = self.by_group / self.overall
            return r.where(r <= 1, 1.0 / r).min(axis=0)
        raise ValueError(f"method must be 'between_groups' or 'to_overall', got {method!r}")

    def ci(self, group: str, metric: str) -> tuple[float, float]:
        """95% CI of ``metric`` in ``group`` when one is available (else NaNs)."""
        row = self._full.loc[group]
        lo, hi = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
        return (
            float("nan") if lo is None else float(lo),
            float("nan") if hi is None else float(hi),
        )

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            v = float(v)
            return None if math.isnan(v) or math.isinf(v) else v

        return {
            "attribute": self.attribute,
            "overall": {k: clean(v) for k, v in self._overall_full.items()},
            "by_group": {
                str(g): {k: clean(v) for k, v in row.items()} for g, row in self._full.iterrows()
            },
            "difference": {k: clean(v) for k, v in self.difference().items()},
            "ratio": {k: clean(v) for k, v in self.ratio().items()},
            "groups": self.notes,
        }
