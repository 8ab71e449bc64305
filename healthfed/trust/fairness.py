"""Hub side of disaggregated evaluation, as the trust layer uses it: pooled subgroup metrics.

The numbers come from the sites' ``subgroup_metrics`` replies; pooling them
(:class:`SubgroupResult`, :class:`GroupStats`, :func:`wilson`) and the
Fairlearn-style :class:`FederatedMetricFrame` are that computation's hub side
and live with it in :mod:`healthfed.compute.subgroups` (a computation's
``combine`` sits in ``compute``, below this layer). Trust reports, model cards
and the public API take them from here.
"""

from __future__ import annotations

from healthfed.compute.subgroups import (
    FAIRNESS_METRICS,
    FederatedMetricFrame,
    GroupStats,
    SubgroupResult,
    wilson,
)

__all__ = [
    "FAIRNESS_METRICS",
    "FederatedMetricFrame",
    "GroupStats",
    "SubgroupResult",
    "wilson",
]
