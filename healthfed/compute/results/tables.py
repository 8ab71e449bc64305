"""Hub-side results of the count computations: ``crosstab`` and ``count``.

Pooled as :mod:`healthfed.compute.results.pooling` says: a pooled cell is ``None``
as soon as one contributing site withheld it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from healthfed.compute.results.pooling import (
    ALL,
    MISSING,
    OVERALL,
    POOLED,
    SUPP,
    TOTAL,
    disclosed_cells,
    html_table,
    perturbation_of,
    perturbed_cells,
    pool_counts,
    reply_sites,
)

__all__ = ["CountResult", "CrosstabResult"]


@dataclass
class CrosstabResult:
    """Counts of ``row`` x ``col`` with margins, pooled and per site.

    ``counts[site][(row_level, col_level)]`` with ``Total`` margins;
    ``site`` is ``"pooled"`` or a site name; ``None`` = suppressed.
    """

    row: str
    col: str
    row_levels: list[str]
    col_levels: list[str]
    sites: list[str]
    counts: dict[str, dict[tuple[str, str], int | None]]
    suppressed_cells: int
    missing_sites: list[str] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    engine: str | None = None
    elapsed_s: float = 0.0
    perturbed_cells: int = 0
    perturbation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def combine(cls, replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> CrosstabResult:
        """Pool the sites' disclosed crosstabs (a pooled cell is None if any site withheld it)."""
        sites = reply_sites(replies)
        views = {}
        for s in sites:
            t = replies[s]["tables"]["crosstab"]
            d = disclosed_cells({**t, "cols": [c if c != ALL else ALL for c in t["cols"]]})
            views[s] = {(r, TOTAL if c == OVERALL else c): v for (r, c), v in d.items()}
        rl: list[str] = []
        cl: list[str] = []
        for s in sites:
            t = replies[s]["tables"]["crosstab"]
            rl += [r for r in t["rows"] if r not in rl]
            cl += [c for c in t["cols"] if c not in cl]
        for lst in (rl, cl):
            if MISSING in lst:
                lst.remove(MISSING)
                lst.append(MISSING)
        meta = replies[sites[0]].get("meta", {})
        counts = {POOLED: pool_counts([views[s] for s in sites]), **views}
        return cls(
            row=str(params.get("row", meta.get("row"))),
            col=str(params.get("col", meta.get("col"))),
            row_levels=rl,
            col_levels=cl,
            sites=sites,
            counts=counts,
            suppressed_cells=int(sum(int(replies[s].get("suppressed_cells", 0)) for s in sites)),
            perturbed_cells=perturbed_cells(replies, sites),
            perturbation=perturbation_of(replies, sites),
        )

    def to_frame(self, per_site: bool = False, site: str = POOLED) -> pd.DataFrame:
        """Wide counts with ``Total`` margins (nullable Int64), or long with a site column."""
        rows, cols = [*self.row_levels, TOTAL], [*self.col_levels, TOTAL]
        if per_site:
            return pd.DataFrame.from_records(
                [
                    {"site": s, self.row: r, self.col: c, "count": self.counts[s].get((r, c), 0)}
                    for s in [POOLED, *self.sites]
                    for r in rows
                    for c in cols
                ]
            ).astype({"count": "Int64"})
        data = [[self.counts[site].get((r, c), 0) for c in cols] for r in rows]
        df = pd.DataFrame(data, index=pd.Index(rows, name=self.row), columns=cols, dtype="Int64")
        df.columns.name = self.col
        return df

    def to_dict(self) -> dict[str, Any]:
        rows, cols = [*self.row_levels, TOTAL], [*self.col_levels, TOTAL]

        def table(s: str) -> list[list[int | None]]:
            return [[self.counts[s].get((r, c), 0) for c in cols] for r in rows]

        return {
            "computation": "crosstab",
            "row": self.row,
            "col": self.col,
            "rows": rows,
            "cols": cols,
            "sites": self.sites,
            "missing_sites": list(self.missing_sites),
            "suppressed_cells": self.suppressed_cells,
            "perturbed_cells": self.perturbed_cells,
            "perturbation": dict(self.perturbation),
            "pooled": table(POOLED),
            "per_site": {s: table(s) for s in self.sites},
        }

    def _repr_html_(self) -> str:
        return html_table(self.to_frame(), self.to_text().split("\n\n", 1)[-1])

    def to_text(self) -> str:
        df = self.to_frame().astype(object).where(lambda d: d.notna(), SUPP)
        return (
            df.to_string() + f"\n\nSites contributed: {', '.join(self.sites)}; cells suppressed: "
            f"{self.suppressed_cells}; cells perturbed: {self.perturbed_cells}"
        )


@dataclass
class CountResult:
    """Number of patients (where ``variable == level``), pooled and per site."""

    variable: str | None
    level: str | None
    count: int | None
    per_site: dict[str, int | None]
    sites: list[str]
    suppressed_cells: int
    missing_sites: list[str] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    engine: str | None = None
    elapsed_s: float = 0.0
    perturbed_cells: int = 0
    perturbation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def combine(cls, replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> CountResult:
        """Sum the sites' released counts (None if any site withheld its count)."""
        sites = reply_sites(replies)
        per_site = {s: replies[s]["tables"]["count"]["counts"][0][0] for s in sites}
        vals = list(per_site.values())
        meta = replies[sites[0]].get("meta", {})
        return cls(
            variable=meta.get("variable"),
            level=meta.get("level"),
            count=None if any(v is None for v in vals) else int(sum(vals)),  # type: ignore[arg-type]
            per_site=per_site,
            sites=sites,
            suppressed_cells=int(sum(int(replies[s].get("suppressed_cells", 0)) for s in sites)),
            perturbed_cells=perturbed_cells(replies, sites),
            perturbation=perturbation_of(replies, sites),
        )

    def to_frame(self, per_site: bool = True) -> pd.DataFrame:
        """One row per site plus ``pooled``; column ``count`` (nullable Int64)."""
        data = {**self.per_site, POOLED: self.count}
        return pd.DataFrame(
            {"count": pd.array(list(data.values()), dtype="Int64")}, index=list(data)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "computation": "count",
            "variable": self.variable,
            "level": self.level,
            "count": self.count,
            "per_site": dict(self.per_site),
            "sites": self.sites,
            "missing_sites": list(self.missing_sites),
            "suppressed_cells": self.suppressed_cells,
            "perturbed_cells": self.perturbed_cells,
            "perturbation": dict(self.perturbation),
        }

    def _repr_html_(self) -> str:
        return html_table(self.to_frame(), self.to_text())

    def to_text(self) -> str:
        what = (
            "patients" if self.variable is None else f"patients with {self.variable} = {self.level}"
        )
        shown = SUPP if self.count is None else str(self.count)
        return f"{what}: {shown} (sites: {', '.join(self.sites)})"
