"""Hub-side results of the differentially private statistics and the threshold-path sum."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from healthfed.compute.results.pooling import html_table

__all__ = ["DPResult", "SumResult"]


@dataclass
class DPResult:
    """A pooled DP statistic: ``value``, ``per_site`` values and each site's ε and δ."""

    computation: str
    value: Any
    per_site: dict[str, Any]
    epsilon: dict[str, float]
    delta: dict[str, float]
    public: dict[str, Any] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "computation": self.computation,
            "value": self.value,
            "per_site": self.per_site,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "public": self.public,
            "sites": self.sites,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per site plus ``pooled``: the value and each site's ε and δ."""
        rows = {
            s: {"value": v, "epsilon": self.epsilon.get(s), "delta": self.delta.get(s)}
            for s, v in self.per_site.items()
        }
        rows["pooled"] = {"value": self.value, "epsilon": None, "delta": None}
        return pd.DataFrame.from_dict(rows, orient="index")

    def _repr_html_(self) -> str:
        return html_table(self.to_frame(), f"{self.computation}: differentially private")


@dataclass
class SumResult:
    """A pooled threshold-path sum: ``sum``, ``n``, ``mean`` and per-site values."""

    sum: float
    n: int
    mean: float
    per_site: dict[str, dict[str, float]]
    sites: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sum": self.sum,
            "n": self.n,
            "mean": self.mean,
            "per_site": self.per_site,
            "sites": self.sites,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per released part (a site, or the secure aggregate) and the pooled row."""
        rows = {k: {"sum": v["sum"], "n": v["n"]} for k, v in self.per_site.items()}
        rows["pooled"] = {"sum": self.sum, "n": self.n}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame["mean"] = frame["sum"] / frame["n"].where(frame["n"] > 0)
        return frame

    def to_text(self) -> str:
        return f"{self.to_frame().to_string()}\nsites in the sum: {', '.join(self.sites) or 'none'}"

    def _repr_html_(self) -> str:
        return html_table(self.to_frame(), f"sites in the sum: {', '.join(self.sites) or 'none'}")
