"""Hub side of ``evaluate_binary``: metrics per site and pooled from the released aggregates.

:func:`metrics_from_first_round` turns the first round's histograms and sums
into discrimination metrics and sets the calibration metrics from one
:class:`RecalibrationFit` per row; :func:`evaluate_classifier
<healthfed.compute.evaluation.classifier.evaluate_classifier>` drives those fits
to convergence, ``combine_evaluate`` (a single ``Federation.run``) takes one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from healthfed.compute.evaluation.maths import (
    DEFAULT_BINS,
    auroc_bounds,
    auroc_from_hist,
    expand_to_fine,
    grid_edges,
)
from healthfed.privacy.model_release import array_from_reply

__all__ = [
    "METRICS",
    "EvaluationResult",
    "RecalibrationFit",
    "combine_evaluate",
    "metrics_from_first_round",
]

_Z95 = 1.959963984540054

METRICS = (
    "n",
    "n_pos",
    "accuracy",
    "sensitivity",
    "specificity",
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "auroc_min",
    "auroc_max",
    "brier",
    "calibration_intercept",
    "calibration_slope",
    "recalibration_intercept",
    "released_bins",
)


#: What the columns of :meth:`EvaluationResult.summary_frame` mean (``{t}``: the threshold).
SUMMARY_LEGEND = (
    "n: rows scored; events: rows with the outcome; AUROC: area under the ROC curve "
    "(0.5 = chance, 1 = perfect; DeLong 95% CI); acc, sens, spec: accuracy, sensitivity and "
    "specificity when P >= {t} is called positive; Brier: mean squared error of the "
    "predicted risk (lower is better); slope: calibration slope (1 = ideal, < 1 = risks too "
    "extreme). All columns, bounds and calibration-in-the-large: --format csv or json."
)


@dataclass
class EvaluationResult:
    """Per-site and pooled evaluation metrics (rows: sites, then ``"pooled"``).

    Attributes
    ----------
    metrics
        ``{row: {metric: value}}``; metrics listed in ``METRICS``.
    threshold, bins
        Classification threshold and fine-grid size.
    refused, missing
        Sites that refused (with reason) or did not answer.
    rounds
        Federated rounds used (1 + Newton rounds).
    converged
        Per row, whether the recalibration Newton fit converged.
    """

    metrics: dict[str, dict[str, float]]
    threshold: float
    bins: int
    refused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    rounds: int = 1
    converged: dict[str, bool] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        return [k for k in self.metrics if k != "pooled"]

    @property
    def overall(self) -> dict[str, float]:
        """The pooled row (Fairlearn's ``MetricFrame.overall`` idea)."""
        return self.metrics["pooled"]

    def to_frame(self) -> Any:
        """A pandas frame: one row per site plus ``"pooled"``, one column per metric."""
        frame = pd.DataFrame.from_dict(self.metrics, orient="index")
        frame.index.name = "site"
        return frame[[m for m in METRICS if m in frame.columns]]

    @property
    def by_site(self) -> Any:
        return self.to_frame().drop(index="pooled")

    def summary_frame(self) -> Any:
        """The narrow table people read: n, events, AUROC (95% CI), accuracy, sensitivity,
        specificity, Brier, calibration slope; one row per site plus ``pooled``, as text.

        :data:`SUMMARY_LEGEND` explains the columns.
        """

        def num(v: Any, d: int = 3) -> str:
            return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"

        rows = {}
        for r, m in self.metrics.items():
            rows[r] = {
                "n": str(int(m["n"])),
                "events": str(int(m["n_pos"])),
                "AUROC (95% CI)": f"{num(m.get('auroc'))} "
                f"({num(m.get('auroc_ci_low'))}-{num(m.get('auroc_ci_high'))})",
                "acc": num(m.get("accuracy")),
                "sens": num(m.get("sensitivity")),
                "spec": num(m.get("specificity")),
                "Brier": num(m.get("brier")),
                "slope": num(m.get("calibration_slope"), 2),
            }
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "site"
        return frame

    def to_text(self) -> str:
        """:meth:`summary_frame` and the legend of its columns (the full table: ``to_frame``)."""
        legend = SUMMARY_LEGEND.replace("{t}", f"{self.threshold:g}")
        out = self.summary_frame().to_string() + "\n\n" + legend
        if self.refused:
            out += "\nDeclined: " + "; ".join(f"{s}: {w}" for s, w in self.refused.items())
        if self.missing:
            out += "\nNo answer: " + ", ".join(self.missing)
        return out

    def _repr_html_(self) -> str:
        import html

        legend = SUMMARY_LEGEND.replace("{t}", f"{self.threshold:g}")
        return (
            self.summary_frame().to_html(border=0)
            + "<pre style='white-space:pre-wrap'>"
            + html.escape(legend)
            + "</pre>"
        )

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        return {
            "metrics": {r: {k: clean(v) for k, v in m.items()} for r, m in self.metrics.items()},
            "threshold": self.threshold,
            "bins": self.bins,
            "refused": dict(self.refused),
            "missing": list(self.missing),
            "rounds": self.rounds,
            "converged": dict(self.converged),
        }


def _site_hist(reply: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """``(edges, pos, neg, mean_pos, mean_neg)`` of one site's released histogram."""
    edges = array_from_reply(reply, "edges").astype(int)
    pos = np.asarray(reply["counts"]["hist_pos"], dtype=float)
    neg = np.asarray(reply["counts"]["hist_neg"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mpos = array_from_reply(reply, "psum_pos") / pos
        mneg = array_from_reply(reply, "psum_neg") / neg
    return edges, pos, neg, mpos, mneg


def _confusion(
    edges: np.ndarray, pos: np.ndarray, neg: np.ndarray, cut: int
) -> tuple[float, float]:
    """Positives at or above and negatives below the threshold edge ``cut`` (must be an edge)."""
    above = edges[:-1] >= cut
    return float(pos[above].sum()), float(neg[~above].sum())


def _disc_metrics(
    hists: list[tuple[np.ndarray, ...]],
    kept: bool,
    cut: int,
    grid: np.ndarray,
    brier_sum: float,
) -> dict[str, float]:
    n_fine = len(grid) - 1
    P = float(sum(h[1].sum() for h in hists))
    N = float(sum(h[2].sum() for h in hists))
    n = P + N
    fpos = np.sum([expand_to_fine(h[1], h[0], n_fine, h[3], grid) for h in hists], axis=0)
    fneg = np.sum([expand_to_fine(h[2], h[0], n_fine, h[4], grid) for h in hists], axis=0)
    auc, var = auroc_from_hist(fpos, fneg)
    lo, hi = auroc_bounds([(h[0], h[1]) for h in hists], [(h[0], h[2]) for h in hists])
    half = _Z95 * math.sqrt(var) if var == var else float("nan")
    out = {
        "n": n,
        "n_pos": P,
        "auroc": auc,
        "auroc_ci_low": max(0.0, auc - half) if auc == auc else float("nan"),
        "auroc_ci_high": min(1.0, auc + half) if auc == auc else float("nan"),
        "auroc_min": lo,
        "auroc_max": hi,
        "brier": brier_sum / n if n else float("nan"),
        "released_bins": float(sum(len(h[1]) for h in hists)),
    }
    nan = float("nan")
    if kept:
        tp = tn = 0.0
        for h in hists:
            a, b = _confusion(h[0], h[1], h[2], cut)
            tp += a
            tn += b
        out.update(
            accuracy=(tp + tn) / n,
            sensitivity=tp / P if P else nan,
            specificity=tn / N if N else nan,
        )
    else:
        out.update(accuracy=nan, sensitivity=nan, specificity=nan)
    return out


class RecalibrationFit:
    """Hub-side Newton state for one recalibration fit (2-parameter and offset-only)."""

    def __init__(self) -> None:
        self.theta = np.array([0.0, 1.0])
        self.c = 0.0
        self.done = False
        self.failed = False

    def candidate(self) -> list[float]:
        return [float(self.theta[0]), float(self.theta[1]), float(self.c)]

    def step(self, g: np.ndarray, h: np.ndarray, tol: float) -> None:
        if self.done:
            return
        H = np.array([[h[0], h[1]], [h[1], h[2]]])
        try:
            d = np.linalg.solve(H, g[:2])
        except np.linalg.LinAlgError:
            self.done = self.failed = True
            return
        dc = g[2] / h[3] if h[3] > 0 else float("nan")
        if not (np.all(np.isfinite(d)) and math.isfinite(dc)):
            self.done = self.failed = True
            return
        self.theta = self.theta + d
        self.c += dc
        if max(float(np.max(np.abs(d))), abs(dc)) < tol:
            self.done = True


def metrics_from_first_round(
    replies: dict[str, dict[str, Any]],
    params: dict[str, Any],
    newton: dict[str, RecalibrationFit],
    sites: list[str] | None,
) -> EvaluationResult:
    """Discrimination metrics from the first round's replies; calibration from ``newton``.

    ``newton`` maps a row (a site or ``"pooled"``) to its recalibration fit; empty,
    it is filled with one Newton step from ``(0, 1, 0)`` per row (a single round).
    With ``sites`` given (several rounds), a fit that did not converge is NaN.
    """
    threshold = float(params.get("threshold", 0.5))
    bins = int(params.get("bins", DEFAULT_BINS))
    edges, cut = grid_edges(bins, threshold)
    metrics: dict[str, dict[str, float]] = {}
    hists = {s: _site_hist(replies[s]) for s in sorted(replies)}
    kept = {s: bool(replies[s]["scalars"]["threshold_kept"]) for s in replies}
    brier = {s: float(replies[s]["scalars"]["brier_sum"]) for s in replies}
    for s in sorted(replies):
        metrics[s] = _disc_metrics([hists[s]], kept[s], cut, edges, brier[s])
    metrics["pooled"] = _disc_metrics(
        list(hists.values()), all(kept.values()), cut, edges, sum(brier.values())
    )
    if not newton:  # single round: one Newton step from (0, 1, 0)
        for row, rs in [(s, [s]) for s in sorted(replies)] + [("pooled", sorted(replies))]:
            st = RecalibrationFit()
            g = sum(array_from_reply(replies[s], "grad")[0] for s in rs)
            h = sum(array_from_reply(replies[s], "hess")[0] for s in rs)
            st.step(g, h, 0.0)
            newton[row] = st
    for row, st in newton.items():
        if row in metrics:
            bad = st.failed or not st.done and sites is not None
            metrics[row]["calibration_intercept"] = float("nan") if bad else st.c
            metrics[row]["calibration_slope"] = float("nan") if bad else float(st.theta[1])
            metrics[row]["recalibration_intercept"] = float("nan") if bad else float(st.theta[0])
    return EvaluationResult(
        metrics=metrics,
        threshold=threshold,
        bins=bins,
        converged={r: st.done and not st.failed for r, st in newton.items()},
    )


def combine_evaluate(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> Any:
    """Single-round ``Federation.run``: metrics with calibration after one Newton step.

    Use :func:`~healthfed.compute.evaluation.evaluate_classifier` for the converged
    calibration fit.
    """
    return metrics_from_first_round(site_replies, params, {}, None)
