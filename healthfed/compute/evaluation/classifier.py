"""The researcher's call: evaluate a fitted binary classifier on every site's rows.

One ``full`` round brings the score histograms, sums and the first recalibration
derivatives; ``newton`` rounds then carry every row's recalibration fit (each
site and the pooled one) together until all converge. Rounds go through
``federation.round`` (:class:`~healthfed.compute.rounds.Rounds`), which applies
the federation's ``min_sites`` rule and raises :class:`~healthfed.errors.TooFewSites`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from healthfed.compute.evaluation.combine import (
    EvaluationResult,
    RecalibrationFit,
    metrics_from_first_round,
)
from healthfed.compute.evaluation.computations import EVALUATE
from healthfed.compute.evaluation.maths import DEFAULT_BINS
from healthfed.compute.rounds import RoundOutcome, Rounds
from healthfed.errors import InvalidArgument, ThresholdViolation
from healthfed.privacy.model_release import array_from_reply

__all__ = ["evaluate_classifier", "model_spec"]


def model_spec(model: Any) -> dict[str, Any]:
    """The JSON model description of a fitted estimator (``to_model_spec()``) or a dict."""
    if isinstance(model, dict):
        return model
    if hasattr(model, "to_model_spec"):
        return model.to_model_spec()
    raise InvalidArgument(
        "argument 'model' must be a JSON model description or an estimator with to_model_spec()"
    )


def evaluate_classifier(
    federation: Rounds,
    dataset: str,
    model: Any,
    target: str,
    *,
    positive: str | None = None,
    threshold: float = 0.5,
    bins: int = DEFAULT_BINS,
    holdout: dict[str, Any] | None = None,
    max_rounds: int = 25,
    tol: float = 1e-10,
) -> EvaluationResult:
    """Evaluate a fitted binary classifier on every site's rows; metrics per site and pooled.

    Parameters
    ----------
    federation
        A ``Federation`` (anything with ``round``); one round for histograms/sums
        plus the Newton rounds of the recalibration fit (typically 6-8 rounds in all).
    dataset, target, positive
        Dataset at the nodes, outcome column and its positive level.
    model
        A fitted healthfed estimator (``to_model_spec()``) or its JSON description.
    threshold
        Predicted probability at or above which a row is classified positive.
    bins
        Fine grid size of the score histograms (AUROC is exact up to within-bin pairs).
    holdout
        ``{"fraction", "seed"}``: evaluate on the ``"test"`` part of each site's
        deterministic per-patient split (the part the estimator did not train on).
    max_rounds, tol
        Newton limits; a fit not converged by then is reported as NaN.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InvalidArgument
        ``model`` is neither a JSON description nor a fitted estimator.
    TooFewSites
        Fewer sites than the federation's minimum contributed to a round.
    """
    trained = getattr(model, "holdout_", None)
    if trained and not holdout:
        warnings.warn(
            f"evaluate_classifier: the model was fitted on the training part of the split "
            f"{trained}, and no holdout was given: every row is scored, the training rows "
            "included (optimistic); pass holdout=model.holdout_",
            UserWarning,
            stacklevel=2,
        )
    base: dict[str, Any] = {
        "model": model_spec(model),
        "target": target,
        "threshold": float(threshold),
        "bins": int(bins),
    }
    if positive is not None:
        base["positive"] = str(positive)
    if holdout:
        base["holdout"] = {**holdout, "part": "test"}
    sites = list(getattr(federation, "sites", []))
    rows = ["pooled", *sites]
    newton = {r: RecalibrationFit() for r in rows}

    def ask(stage: str) -> RoundOutcome:
        cands = [newton[r].candidate() for r in rows]
        return federation.round(EVALUATE, dataset, {**base, "stage": stage, "candidates": cands})

    first = ask("full")
    contributing = sorted(first.replies)
    unknown = [s for s in contributing if s not in newton]
    if unknown:  # a site the federation did not list: no candidate slot for it
        raise ThresholdViolation(f"unexpected site(s) {unknown} answered; expected {sites}")
    # Fits only for the pooled row and contributing sites; silent sites keep a fixed slot.
    fits = {r: st for r, st in newton.items() if r == "pooled" or r in contributing}
    rounds = _recalibrate(ask, first.replies, fits, rows, contributing, max_rounds, tol)
    result = metrics_from_first_round(first.replies, base, fits, sites)
    result.refused = dict(first.refused)
    result.missing = list(first.missing)
    result.rounds = rounds
    return result


def _recalibrate(
    ask: Callable[[str], RoundOutcome],
    replies: dict[str, dict[str, Any]],
    fits: dict[str, RecalibrationFit],
    rows: list[str],
    contributing: list[str],
    max_rounds: int,
    tol: float,
) -> int:
    """Newton steps for every fit from ``replies``, one ``newton`` round for all, until converged.

    A row's derivatives sit at its candidate slot (its index in ``rows``); a fit
    whose sites stop answering is marked failed. Returns the rounds used in all.
    """
    index = {r: i for i, r in enumerate(rows)}
    rounds = 1
    while True:
        for r, st in fits.items():
            members = contributing if r == "pooled" else [r]
            if any(s not in replies for s in members):
                st.done = st.failed = True
                continue
            g = sum(array_from_reply(replies[s], "grad")[index[r]] for s in members)
            h = sum(array_from_reply(replies[s], "hess")[index[r]] for s in members)
            st.step(g, h, tol)
        if all(st.done for st in fits.values()) or rounds >= max_rounds:
            return rounds
        replies = ask("newton").replies
        rounds += 1
