"""The hub's view of ``subgroup_metrics`` replies: per site, per group, and pooled over sites.

:meth:`SubgroupResult.from_replies` reads each site's disclosure-filtered
release into :class:`~healthfed.compute.subgroups.pooling.GroupStats`;
:meth:`SubgroupResult.pooled` pools a group over the sites that released it (a
group released by fewer than ``min_sites`` sites is suppressed altogether) and
:meth:`SubgroupResult.metric_frame` gives the Fairlearn-style
:class:`~healthfed.compute.subgroups.metric_frame.FederatedMetricFrame`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthfed.compute.subgroups.metric_frame import FederatedMetricFrame
from healthfed.compute.subgroups.node import CELLS
from healthfed.compute.subgroups.pooling import GroupStats, SitePart

__all__ = ["SubgroupResult", "combine_subgroups"]


def _hist_from(cell: dict[str, Any] | None, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    if cell is None or "hist" not in cell:
        return None
    edges = np.rint(np.asarray(cell["hist"]["edges"], dtype=float) * bins).astype(int)
    return edges, np.asarray(cell["hist"]["counts"], dtype=float)


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


def combine_subgroups(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> Any:
    """Hub side of ``subgroup_metrics``: a :class:`SubgroupResult`."""
    return SubgroupResult.from_replies(site_replies, float(params.get("threshold", 0.5)))
