"""The trust report of a trained model: every number from federated, disclosure-checked rounds.

:func:`build_report` runs, against the federation (nodes never release rows):

1. ``evaluate_binary`` (:func:`healthfed.compute.evaluation.evaluate_classifier`):
   per-site and pooled AUROC (DeLong CI), accuracy, sensitivity, specificity,
   Brier, calibration-in-the-large and slope (federated Newton, ~6-8 rounds);
2. ``subgroup_metrics`` (one round): confusion counts, Brier moments and score
   histograms for the whole site (``"all"``) and per group of each sensitive
   attribute, through the node's disclosure filter -- ROC and reliability
   curves, Wilson/normal CIs and the fairness MetricFrames come from it;
3. ``permutation_importance`` (one round), ``model_information`` (one round:
   reference patient, Fisher information for models without a covariance);
4. ``dataset_fingerprint`` (content hashes, site sizes), ``preprocess_moments``
   on the training rows (rows, events and missing values per site) and
   ``describe`` (pooled central 99% ranges of numeric features, for the
   out-of-distribution warnings of ``predict``).

:class:`TrustReport` holds the result as one JSON-able dict (``to_dict()``);
``write(out_dir)`` writes ``report.json`` and a self-contained ``report.html``
(plots inline, no scripts or styles from elsewhere) rendered from that dict.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthfed.compute.evaluation import evaluate_classifier
from healthfed.compute.importance import (
    MODEL_INFORMATION,
    PERMUTATION_IMPORTANCE,
    combine_information,
    combine_permutation,
)
from healthfed.compute.rounds import RoundOutcome
from healthfed.compute.subgroups import DATASET_FINGERPRINT, SUBGROUP_METRICS, combine_fingerprint
from healthfed.errors import InvalidArgument, ThresholdViolation
from healthfed.trust.artefact import (
    ModelArtefact,
    _clean,
    describe_estimator,
    load_model,
    save_model,
)
from healthfed.trust.cards import future_ai, model_card, tripod_ai
from healthfed.trust.fairness import SubgroupResult
from healthfed.trust.render import render_html
from healthfed.trust.report_sections import (
    OVERSIGHT,
    ReportEvidence,
    calibration_section,
    complete_model,
    data_section,
    explanations_section,
    fairness_section,
    local_explanation,
    model_section,
    performance_section,
    preprocess_columns,
    provenance_section,
)
from healthfed.trust.report_stats import meta_analysis

__all__ = ["REPORT_FORMAT", "TrustReport", "build_report", "meta_analysis"]

REPORT_FORMAT = "healthfed.trust-report/1"
DESCRIBE_QUANTILES = [0.005, 0.5, 0.995]


@dataclass
class TrustReport:
    """A model's trust report; ``data`` is exactly what ``report.json`` holds."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(_clean(self.data), allow_nan=False))

    def write(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``report.html`` into ``out_dir``; return the HTML path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        for name, text in (
            ("report.json", json.dumps(data, indent=1, allow_nan=False)),
            ("report.html", render_html(data)),
        ):
            tmp = out / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, out / name)
        return out / "report.html"

    @property
    def html_path(self) -> str | None:
        return self.data.get("written_to")


# --------------------------------------------------------------------------------------
# the rounds
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Asked:
    """What the researcher asked the report for (``build_report``'s arguments)."""

    dataset: str
    target: str
    positive: Any
    sensitive: tuple[str, ...] | list[str]
    threshold: float
    holdout: dict[str, Any] | None
    n_repeats: int
    synthetic: bool


class _CountedRounds:
    """``federation.round`` on one dataset, counting the federated rounds the report uses.

    The round path applies the minimum-sites rule (raising ``TooFewSites``), the
    permit and the hub's release; the report adds no check of its own.
    """

    def __init__(self, federation: Any, dataset: str) -> None:
        self.federation = federation
        self.dataset = dataset
        self.count = 0

    def __call__(self, computation: str, params: dict[str, Any]) -> RoundOutcome:
        self.count += 1
        return self.federation.round(computation, self.dataset, params)


def _subgroup_round(
    rounds: _CountedRounds,
    base: dict[str, Any],
    attributes: list[str],
    threshold: float,
    test: dict[str, Any] | None,
) -> SubgroupResult:
    """``subgroup_metrics`` (one round): the site as a whole and each sensitive attribute."""
    params = {**base, "threshold": float(threshold), "attributes": attributes}
    if test:
        params["holdout"] = test
    out = rounds(SUBGROUP_METRICS, params)
    min_sites = int(getattr(rounds.federation, "min_sites", 2))
    sub = SubgroupResult.from_replies(out.replies, threshold, min_sites)
    sub.refused = dict(out.refused)
    return sub


def _explanation_rounds(
    rounds: _CountedRounds,
    base: dict[str, Any],
    n_repeats: int,
    test: dict[str, Any] | None,
    train: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Permutation importance on the evaluation rows, model information on the training rows."""
    pi_params = {**base, "n_repeats": int(n_repeats), "seed": 0}
    if test:
        pi_params["holdout"] = test
    importance = combine_permutation(rounds(PERMUTATION_IMPORTANCE, pi_params).replies, pi_params)
    info_params = dict(base)
    if train:
        info_params["holdout"] = train
    info = combine_information(rounds(MODEL_INFORMATION, info_params).replies, info_params)
    return importance, info


def _numeric_ranges(
    rounds: _CountedRounds, numeric: list[str]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Pooled central 99% ranges and medians of the numeric features (one ``describe`` round).

    Without enough sites to release them, no ranges: ``predict`` then warns on nothing.
    """
    ranges: dict[str, Any] = {}
    medians: dict[str, float] = {}
    if not numeric:
        return ranges, medians
    rounds.count += 1
    try:
        d = rounds.federation.describe(rounds.dataset, numeric, quantiles=DESCRIBE_QUANTILES)
    except ThresholdViolation:
        return ranges, medians
    for f in numeric:
        lo, hi, med = d.value(f, "p0.5"), d.value(f, "p99.5"), d.value(f, "p50")
        ranges[f] = {
            "low": lo if lo is not None else d.value(f, "p0.5_lo"),
            "high": hi if hi is not None else d.value(f, "p99.5_hi"),
            "support": [d.value(f, "p0.5_lo"), d.value(f, "p99.5_hi")],
            "source": "pooled 0.5th and 99.5th percentiles from disclosure-checked "
            "histograms (all rows of the contributing sites)",
        }
        if med is not None:
            medians[f] = float(med)
    return ranges, medians


def _gather(federation: Any, desc: dict[str, Any], asked: _Asked) -> ReportEvidence:
    """Every round the report needs, in order, through ``federation.round``."""
    spec, holdout = desc["spec"], asked.holdout
    rounds = _CountedRounds(federation, asked.dataset)
    test = {**holdout, "part": "test"} if holdout else None
    train = {**holdout, "part": "train"} if holdout else None
    base: dict[str, Any] = {"model": spec, "target": asked.target}
    if asked.positive is not None:
        base["positive"] = str(asked.positive)
    ev = evaluate_classifier(
        federation,
        asked.dataset,
        spec,
        asked.target,
        positive=asked.positive,
        threshold=asked.threshold,
        holdout=holdout,
    )
    rounds.count += ev.rounds
    attributes = ["all", *[a for a in asked.sensitive if a != "all"]]
    sub = _subgroup_round(rounds, base, attributes, asked.threshold, test)
    importance, info = _explanation_rounds(rounds, base, asked.n_repeats, test, train)
    fingerprint = combine_fingerprint(rounds(DATASET_FINGERPRINT, {}).replies, {})
    features = list(desc["features"])
    mom_params: dict[str, Any] = {"columns": [*features, asked.target], "missing": "indicator"}
    if train:
        mom_params["holdout"] = train
    moments = rounds("preprocess_moments", mom_params)
    pcols = preprocess_columns(spec)
    numeric = [f for f in features if pcols.get(f, {}).get("type", "numeric") == "numeric"]
    ranges, medians = _numeric_ranges(rounds, numeric)
    return ReportEvidence(
        evaluation=ev,
        subgroups=sub,
        attributes=attributes,
        importance=importance,
        information=info,
        fingerprint=fingerprint,
        moments=moments,
        ranges=ranges,
        medians=medians,
        rounds=rounds.count,
    )


# --------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------
def _model_description(model: Any) -> dict[str, Any]:
    """The model's JSON description (a copy), from an estimator, artefact, folder or dict."""
    if isinstance(model, ModelArtefact):
        desc = model.description
    elif isinstance(model, str | Path):
        desc = load_model(model).description
    elif isinstance(model, dict) and "spec" in model:
        desc = model
    else:
        desc = describe_estimator(model)
    return json.loads(json.dumps(_clean(desc)))


def _settings(federation: Any, e: ReportEvidence, asked: _Asked) -> dict[str, Any]:
    """The report's settings: the arguments, the split, the bins and the rounds used."""
    holdout = asked.holdout
    holdout_text = (
        f"deterministic per-patient hash split at every site, {holdout['fraction']:.0%} held out "
        f"(seed {holdout.get('seed', 0)})"
        if holdout
        else "none: evaluated on the training rows (apparent performance)"
    )
    return {
        "dataset": asked.dataset,
        "target": asked.target,
        "positive": asked.positive,
        "threshold": float(asked.threshold),
        "holdout": holdout,
        "holdout_text": holdout_text,
        "sensitive": list(asked.sensitive),
        "score_bins": e.subgroups.bins,
        "evaluation_bins": e.evaluation.bins,
        "synthetic": asked.synthetic,
        "federated_rounds": e.rounds,
        "engine": getattr(federation, "engine", None),
    }


def _assemble(
    federation: Any,
    desc: dict[str, Any],
    mhash: str,
    e: ReportEvidence,
    asked: _Asked,
    *,
    title: str | None,
    example_patient: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report's dict, section by section (what ``report.json`` holds)."""
    local = local_explanation(
        desc, mhash, e, threshold=asked.threshold, example_patient=example_patient
    )
    performance, reliability_curves = performance_section(e)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "title": title or f"Trust report: {desc.get('estimator')} for {asked.target}",
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "settings": _settings(federation, e, asked),
        "provenance": provenance_section(desc, mhash, asked.dataset, e),
        "model": model_section(desc, asked.target, asked.positive),
        "data": data_section(desc, e),
        "performance": performance,
        "calibration": calibration_section(performance, reliability_curves, e),
        "fairness": fairness_section(e),
        "explanations": explanations_section(desc, e, local),
        "oversight": dict(OVERSIGHT),
    }
    report["model_card"] = model_card(report)
    report["tripod_ai"] = tripod_ai(report)
    report["future_ai"] = future_ai(report)
    return report


def build_report(
    federation: Any,
    dataset: str,
    model: Any,
    target: str | None = None,
    *,
    sensitive: tuple[str, ...] | list[str] = ("sex", "age_band"),
    threshold: float = 0.5,
    positive: str | None = None,
    holdout: dict[str, Any] | None = None,
    permit: dict[str, Any] | None = None,
    purpose: str | None = None,
    example_patient: dict[str, Any] | None = None,
    n_repeats: int = 5,
    title: str | None = None,
    synthetic: bool = False,
    out_dir: str | Path | None = None,
    save_model_to: str | Path | None = None,
) -> TrustReport:
    """Evaluate ``model`` across the federation and assemble its trust report.

    Parameters
    ----------
    federation
        A ``Federation`` over the sites holding ``dataset``.
    dataset, target, positive
        Dataset name, outcome column (default: the model's) and its positive level.
    model
        A fitted healthfed binary classifier (``FederatedLogisticRegression``,
        ``FedAvgLogisticRegression``, ``FederatedMLPClassifier``), a model
        artefact folder or a loaded :class:`~healthfed.trust.artefact.ModelArtefact`.
    sensitive
        Attributes to disaggregate by: categorical/binary columns and ``"age_band"``
        (derived at the nodes from ``age``, cut points 18/40/60/75; it counts as a use
        of ``age``, so a governed node refuses it unless the permit grants ``age``).
    threshold
        Probability at or above which a patient is classified positive.
    holdout
        ``{"fraction", "seed"}`` of the training split: the report evaluates on the
        ``"test"`` part. Without it the report evaluates on all rows (apparent performance).
    permit, purpose
        The data permit (signed or its body) and/or purpose, for provenance.
    example_patient
        Raw values of the patient whose prediction is explained in section 5
        (default: an illustrative patient built from pooled medians and reference levels).
    n_repeats
        Repeats of federated permutation importance.
    out_dir
        If given, write ``report.html`` and ``report.json`` there.
    save_model_to
        If given, also save the model artefact (with the report as its
        ``evaluation.json``) to this folder.

    Returns
    -------
    TrustReport
    """
    desc = _model_description(model)
    target = target or desc.get("target")
    if target is None:
        raise InvalidArgument("argument 'target': the model does not name its outcome; give it")
    positive = positive if positive is not None else desc.get("positive")
    asked = _Asked(dataset, target, positive, sensitive, threshold, holdout, n_repeats, synthetic)
    e = _gather(federation, desc, asked)
    mhash = complete_model(desc, e, dataset=dataset, permit=permit, purpose=purpose)
    report = _assemble(
        federation, desc, mhash, e, asked, title=title, example_patient=example_patient
    )
    tr = TrustReport(report)
    if save_model_to is not None:
        saved = save_model(desc, save_model_to, evaluation=tr.to_dict())
        assert saved.hash == mhash
    if out_dir is not None:
        tr.data["written_to"] = str(Path(out_dir).resolve() / "report.html")
        tr.write(out_dir)
    return tr
