"""Fairlearn-style disaggregated metrics (``MetricFrame``) built from federated aggregates.

With nothing suppressed its numbers equal ``fairlearn.metrics.MetricFrame`` on
the pooled rows (tested); suppressed groups are left out and named in ``notes``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from healthfed.errors import InvalidArgument

__all__ = ["FAIRNESS_METRICS", "FederatedMetricFrame"]

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
        raise InvalidArgument(f"method must be 'between_groups' or 'to_overall', got {method!r}")

    def ratio(self, method: str = "between_groups") -> Any:
        """Smallest ratio between groups (min / max) or to the overall value."""
        if method == "between_groups":
            return self.group_min() / self.group_max()
        if method == "to_overall":
            r = self.by_group / self.overall
            return r.where(r <= 1, 1.0 / r).min(axis=0)
        raise InvalidArgument(f"method must be 'between_groups' or 'to_overall', got {method!r}")

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
