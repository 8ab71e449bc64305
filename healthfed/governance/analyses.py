"""Analyses a researcher applies for, and the computations each one lets a node run.

A researcher asks for *analyses* (``table1``, ``glm``, ``cox``, ``fedavg``,
``evaluation``, ``trust_report``, ...), not for healthfed's internal computations
(``glm_step``, ``preprocess_moments``, ...). A permit names the analyses it grants in
its ``analyses`` field; a node allows a request whose computation belongs to one of
them (:func:`allowed_computations`). The table below is the one place that says which
computations an analysis needs; ``tests/governance/test_gov_analyses.py`` runs every
analysis under a permit that grants only it.

A permit may still name computations directly in its ``computations`` field (permits
granted before analyses existed do); those are allowed literally.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ANALYSES",
    "Analysis",
    "allowed_computations",
    "analysis_names",
    "analyses_using",
    "split_scope",
]


@dataclass(frozen=True)
class Analysis:
    """An analysis a permit can grant: its name, what it is, the computations it runs."""

    name: str
    description: str
    computations: tuple[str, ...]


ANALYSES: dict[str, Analysis] = {
    a.name: a
    for a in (
        Analysis("table1", "Table 1: baseline characteristics, optionally by group", ("table1",)),
        Analysis(
            "descriptives",
            "summary statistics, cross-tables, counts and sums",
            ("describe", "crosstab", "count", "sum"),
        ),
        Analysis(
            "dp_statistics",
            "differentially private counts, sums, means, histograms and quantiles",
            ("dp_count", "dp_sum", "dp_mean", "dp_histogram", "dp_quantiles"),
        ),
        Analysis(
            "glm",
            "generalised linear models (logistic, Gaussian, Poisson), exact federated fit",
            ("preprocess_moments", "glm_step"),
        ),
        Analysis(
            "cox",
            "Cox proportional hazards and Kaplan-Meier survival curves",
            ("cox_risk_sets", "cox_site_newton", "km_counts"),
        ),
        Analysis(
            "fedavg",
            "models trained by federated averaging (logistic regression, MLP)",
            ("preprocess_moments", "feature_moments", "local_train"),
        ),
        Analysis(
            "evaluation",
            "performance of a fitted model, per site, pooled and per subgroup",
            ("evaluate_binary", "subgroup_metrics", "survival_cindex"),
        ),
        Analysis(
            "trust_report",
            "a model's trust report: evaluation, fairness, explanations, data description",
            (
                "evaluate_binary",
                "subgroup_metrics",
                "permutation_importance",
                "model_information",
                "dataset_fingerprint",
                "describe",
                "preprocess_moments",
            ),
        ),
    )
}


def analysis_names() -> list[str]:
    """The analyses a permit can grant, in the table's order."""
    return list(ANALYSES)


def allowed_computations(analyses: Iterable[str], computations: Iterable[str] = ()) -> set[str]:
    """The computations a permit allows: those of its ``analyses`` plus its literal ones.

    An analysis name this version of healthfed does not know allows nothing.
    """
    allowed = set(computations)
    for name in analyses:
        a = ANALYSES.get(name)
        if a is not None:
            allowed.update(a.computations)
    return allowed


def analyses_using(computation: str) -> list[str]:
    """The analyses that include ``computation`` (for refusal messages)."""
    return [a.name for a in ANALYSES.values() if computation in a.computations]


def split_scope(names: Iterable[str], registered: Iterable[str]) -> tuple[list[str], list[str]]:
    """``names`` as (analyses, computations): analysis names first, then registered computations.

    ``table1`` is both an analysis and a computation; it is taken as the analysis (which
    allows exactly that computation). Raises :class:`ValueError` naming the unknown names.
    """
    known = set(registered)
    analyses: list[str] = []
    computations: list[str] = []
    unknown: list[str] = []
    for name in names:
        if name in ANALYSES:
            analyses.append(name)
        elif name in known:
            computations.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"unknown analysis {', '.join(repr(u) for u in sorted(set(unknown)))}; "
            f"analyses: {', '.join(ANALYSES)}"
        )
    return sorted(set(analyses)), sorted(set(computations))
