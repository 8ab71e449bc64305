"""Disaggregated evaluation of a binary classifier (fairness) and dataset fingerprints.

``subgroup_metrics`` (node side) scores the site's evaluation rows with a JSON
model description (as ``evaluate_binary`` does) and releases, **through the
node's ordinary disclosure filter** (:func:`healthfed.privacy.disclosure.disclose`),
one :class:`~healthfed.privacy.disclosure.Release` holding, for every requested
sensitive attribute ``a`` and each of its groups ``g``:

* ``n.a``: 1 x G table, the rows per group;
* ``conf.a``: 4 x G table ``tp, fn, fp, tn`` at the threshold, its column totals
  linked to ``n.a`` (so primary and secondary suppression and the exact LP audit
  treat both as one system);
* ``sqerr.a``/``score.a``: moments of the squared error (Brier) and of the
  predicted probability per group, tied to ``n.a`` (released only for groups of
  at least ``min_subset``, with the complement rule against the site total);
* ``hist.<cell>.a`` for ``cell`` in ``tp, fn, fp, tn``: score histograms on a
  fixed public grid of ``bins`` bins over [0, 1], each tied to its confusion
  cell; the filter merges bins to ``min_subset`` patients. Positives' scores are
  ``tp`` + ``fn`` (disjoint: above/below the threshold), so AUROC, ROC curves and
  reliability curves per group come out of released histograms only.

Attribute ``"all"`` is the site as one group; ``"age_band"`` is derived node side
from ``age`` with the fixed public cut points :data:`AGE_BANDS` (a permit must grant
``age`` for it: :data:`DERIVED_VARIABLES` maps every derived name to its sources); any other
attribute must be a categorical or binary column (declared levels, plus
``"(missing)"``). A group too small at a site comes back as ``None`` cells and
is shown as suppressed by the hub.

``dataset_fingerprint`` releases the dataset's content hash (sha256 of the
data file; for in-memory data, of its DuckDB row hashes) and the site's row
count as a disclosure-checked count, for a model's provenance.

Hub side: the sites' replies are pooled over the sites whose numbers were
released (:class:`SubgroupResult`) into a :class:`FederatedMetricFrame`, which
follows Fairlearn's ``MetricFrame`` (``overall``, ``by_group``,
``difference()``, ``ratio()``, ``group_min()``, ``group_max()``); with nothing
suppressed its numbers equal ``fairlearn.metrics.MetricFrame`` on the pooled
rows (tested). A group suppressed at a site is excluded from that group's
pooled numbers and listed in ``suppressed_at``; a group whose numbers were
released by fewer than ``min_sites`` sites is shown as suppressed altogether.
The aggregator side lives here, below ``healthfed.trust``, because it is this
computation's ``combine``; :mod:`healthfed.trust.fairness` is where reports
take it from.

Modules
-------
:mod:`.node` (``subgroup_metrics`` at a site), :mod:`.fingerprint`
(``dataset_fingerprint``), :mod:`.pooling` (one group's numbers over sites),
:mod:`.result` (:class:`SubgroupResult`, the combine), :mod:`.metric_frame`
(:class:`FederatedMetricFrame`) and :mod:`.computations` (registration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthfed._lazy import lazy_getattr
from healthfed.compute.subgroups import computations as computations  # registers both
from healthfed.compute.subgroups.fingerprint import DATASET_FINGERPRINT, combine_fingerprint
from healthfed.compute.subgroups.node import (
    AGE_BAND_LABELS,
    AGE_BANDS,
    CELLS,
    DERIVED_VARIABLES,
    SUBGROUP_METRICS,
    attribute_groups,
)
from healthfed.compute.subgroups.pooling import GroupStats, SitePart, expand_merged, wilson

if TYPE_CHECKING:
    from healthfed.compute.subgroups.metric_frame import FAIRNESS_METRICS, FederatedMetricFrame
    from healthfed.compute.subgroups.result import SubgroupResult, combine_subgroups

__all__ = [
    "AGE_BANDS",
    "AGE_BAND_LABELS",
    "CELLS",
    "DATASET_FINGERPRINT",
    "DERIVED_VARIABLES",
    "FAIRNESS_METRICS",
    "SUBGROUP_METRICS",
    "FederatedMetricFrame",
    "GroupStats",
    "SitePart",
    "SubgroupResult",
    "attribute_groups",
    "combine_fingerprint",
    "combine_subgroups",
    "expand_merged",
    "wilson",
]


# The hub's results (pandas) are imported on first use (PEP 562): a node imports this
# package for its computations and derived variables and never builds a result.
_LAZY = {
    "FAIRNESS_METRICS": "healthfed.compute.subgroups.metric_frame",
    "FederatedMetricFrame": "healthfed.compute.subgroups.metric_frame",
    "SubgroupResult": "healthfed.compute.subgroups.result",
    "combine_subgroups": "healthfed.compute.subgroups.result",
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
