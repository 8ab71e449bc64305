"""Federated evaluation of a fitted binary classifier: discrimination and calibration.

Each site scores its own (held-out) rows with a JSON model description it can
rebuild (``model``: ``"logistic"``/``"mlp"``, ``weights`` as lists, the
``preprocess`` spec; a GLM's ``coef``/``intercept`` is accepted too; never a
pickle) and releases only aggregates. The hub computes, per site and pooled:
accuracy, sensitivity and specificity at a threshold, AUROC with a 95% CI and
the interval of AUROC values consistent with the released bins, the Brier
score, calibration-in-the-large and the calibration slope.

Method, and why it is exact (or how far it is not)
--------------------------------------------------
* **Score histograms.** Predicted probabilities are binned on a fixed public
  grid of ``bins`` equal-width bins on [0, 1] (default 1000), with the
  threshold added as an edge so the confusion matrix is a function of the
  histogram; one histogram per label. AUROC (Mann-Whitney) from a histogram
  counts a positive/negative pair in the same bin as 1/2, so it differs from
  the exact AUROC by at most ``0.5 * sum_i pos_i neg_i / (P N)`` -- the
  within-bin pairs. That bound is computed from what was released: the
  result's ``auroc_min``/``auroc_max`` are the smallest/largest AUROC
  consistent with the released bins (all undetermined pairs lost / won).
  With 1000 fine bins and continuous scores it is typically < 1e-3.
* **Disclosure.** Every released histogram count must be 0 or at least the
  site's ``min_cell_count``; each merged bin also releases the sum of its
  scores per label (a mean), so the rule applied is ``max(min_cell_count,
  min_subset)``. Each site merges *adjacent* bins (the same merged bins for
  both labels) greedily until that holds; it merges on each side of the
  threshold separately when possible, so the threshold stays a bin edge. A
  merged bin's count is spread over the widest interval centred on its mean
  score inside the bin (keeping the mean) for the point estimate, per site and
  pooled over sites whose merged edges differ; ``auroc_min``/``auroc_max`` are
  the exact bounds over all placements consistent with the released bins
  (pairwise interval comparison: overlapping intervals are undetermined). On
  the synthetic test cohort (1,600 rows, 3 sites) the default policy leaves
  ~110 of 3x1000 bins; pooled AUROC is then off by ~1e-3 inside a [0.90,
  0.95] bound (exact 0.934). If a site could only satisfy the rule by merging
  across the threshold its accuracy/sensitivity/specificity are NaN, and so
  are the pooled ones. A site whose number of positives (or negatives) is in
  1..k-1 cannot release anything and refuses. The bin edges localise, like a
  quantile, a group of at least k patients.
* **AUROC CI.** DeLong's variance from histogram placements (each positive's
  placement is the fraction of negatives below it plus half of those in its
  bin, and vice versa), 95% normal interval clipped to [0, 1].
* **Brier score, accuracy.** Sums (Brier) and histogram counts (accuracy).
* **Calibration.** Slope and intercept of the logistic recalibration
  ``logit P(y=1) = a + b * logit(p)`` and calibration-in-the-large (``c`` in
  ``logit P(y=1) = c + logit(p)``, slope fixed at 1), fitted by federated
  Newton: every round each site returns the gradient and Hessian (2x2 and
  1x1) of its log-likelihood; the hub solves. This is exactly the pooled
  maximum-likelihood fit. ``logit(p)`` is the model's linear predictor itself
  (no clipping). To fit the per-site curves in the same rounds, the request
  carries one candidate ``(a, b, c)`` per site plus the pooled one, so every
  site sees the other sites' current recalibration estimates (these are
  per-site results the researcher reports anyway). Typically 6-8 rounds in
  total; the histogram and sums ride on the first.

Modules
-------
:mod:`.maths` (the public score grid, bin merging, AUROC and its bounds, the
recalibration derivatives), :mod:`.node` (request checks and what a site
releases), :mod:`.combine` (the hub's metrics and the recalibration Newton
state), :mod:`.computations` (the registered computation) and
:mod:`.classifier` (:func:`evaluate_classifier`, the researcher's call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthfed._lazy import lazy_getattr
from healthfed.compute.evaluation.computations import EVALUATE
from healthfed.compute.evaluation.maths import (
    DEFAULT_BINS,
    auroc_bounds,
    auroc_from_hist,
    bin_index,
    expand_to_fine,
    grid_edges,
    merge_bins,
    merged_counts,
)
from healthfed.compute.evaluation.node import validate_evaluate

if TYPE_CHECKING:
    from healthfed.compute.evaluation.classifier import evaluate_classifier, model_spec
    from healthfed.compute.evaluation.combine import METRICS, EvaluationResult

__all__ = [
    "DEFAULT_BINS",
    "EVALUATE",
    "METRICS",
    "EvaluationResult",
    "auroc_bounds",
    "auroc_from_hist",
    "bin_index",
    "evaluate_classifier",
    "expand_to_fine",
    "grid_edges",
    "merge_bins",
    "merged_counts",
    "model_spec",
    "validate_evaluate",
]


# The hub's metrics and result tables (pandas) are imported on first use (PEP 562): a
# node imports this package to register ``evaluate_binary`` and needs neither.
_LAZY = {
    "evaluate_classifier": "healthfed.compute.evaluation.classifier",
    "model_spec": "healthfed.compute.evaluation.classifier",
    "METRICS": "healthfed.compute.evaluation.combine",
    "EvaluationResult": "healthfed.compute.evaluation.combine",
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
