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
from healthfed.compute.results import DescribeResult, combine_summary
from healthfed.compute.rounds import RoundOutcome
from healthfed.compute.subgroups import DATASET_FINGERPRINT, SUBGROUP_METRICS, combine_fingerprint
from healthfed.errors import InvalidArgument, ThresholdViolation
from healthfed.trust.artefact import (
    SPLIT_METHOD,
    ModelArtefact,
    _clean,
    describe_estimator,
    load_model,
    recorded_split,
    save_model,
    scored_rows,
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

__all__ = [
    "REPORT_FORMAT",
    "ReferenceEvidence",
    "TrustReport",
    "build_report",
    "meta_analysis",
    "reference_evidence",
    "save_trained",
]

REPORT_FORMAT = "healthfed.trust-report/1"
#: ``build_report(holdout=MODEL_SPLIT)``: evaluate on the split the model was fitted on.
MODEL_SPLIT = "model"
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

    def _repr_html_(self) -> str:
        """A notebook summary: title, pooled metrics, warnings, where the page is."""
        import html

        d = self.data
        pooled = d.get("performance", {}).get("pooled", {})

        def num(k: str) -> str:
            v = pooled.get(k)
            return "n/a" if v is None else f"{v:.3f}"

        parts = [
            f"<h4>{html.escape(str(d.get('title', 'Trust report')))}</h4>",
            f"<p>Model <code>{html.escape(str(d.get('provenance', {}).get('model_hash', ''))[:16])}"
            f"…</code>; evaluation rows: {html.escape(d.get('settings', {}).get('holdout_text', ''))}."
            f"</p><p>Pooled AUROC {num('auroc')}, Brier {num('brier')}, calibration slope "
            f"{num('calibration_slope')}.</p>",
            *(f"<p><b>Warning:</b> {html.escape(w)}</p>" for w in self.warnings),
        ]
        if self.html_path:
            parts.append(f"<p>Full report: <code>{html.escape(self.html_path)}</code></p>")
        return "".join(parts)

    @property
    def warnings(self) -> list[str]:
        """What the reader must know about the numbers (e.g. training rows were scored)."""
        return list(self.data.get("settings", {}).get("warnings", []))


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
    train_split: dict[str, Any] | None = None  # the model's own split (its training rows)
    split_known: bool = False  # whether the model records it (else: assumed = holdout)
    scored: tuple[str, tuple[str, ...]] = ("unverified", ())  # scored_rows(): kind, warnings


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


def _importance_round(
    rounds: _CountedRounds, base: dict[str, Any], n_repeats: int, test: dict[str, Any] | None
) -> dict[str, Any]:
    """Permutation importance on the evaluation rows (one round)."""
    pi_params = {**base, "n_repeats": int(n_repeats), "seed": 0}
    if test:
        pi_params["holdout"] = test
    return combine_permutation(rounds(PERMUTATION_IMPORTANCE, pi_params).replies, pi_params)


@dataclass
class ReferenceEvidence:
    """What a model's reference block is made of (released by three or four rounds).

    ``information``: ``model_information`` on the training rows (reference patient,
    Fisher information); ``train_rows``: each site's rows in that round -- the rows
    the model was fitted on (outcome recorded, the training part of the split);
    ``fingerprint``: ``dataset_fingerprint``; ``ranges``/``medians``: pooled central
    99% ranges, declared bounds and medians of the numeric features.
    """

    information: dict[str, Any]
    train_rows: dict[str, int]
    fingerprint: dict[str, Any]
    ranges: dict[str, Any]
    medians: dict[str, float]


def reference_evidence(
    rounds: _CountedRounds,
    base: dict[str, Any],
    numeric: list[str],
    train: dict[str, Any] | None,
) -> ReferenceEvidence:
    """``model_information`` (training rows), ``dataset_fingerprint`` and ``describe`` rounds."""
    info_params = dict(base)
    if train:
        info_params["holdout"] = train
    out = rounds(MODEL_INFORMATION, info_params)
    info = combine_information(out.replies, info_params)
    train_rows = {s: int(r["n_rows"]) for s, r in sorted(out.replies.items())}
    fingerprint = combine_fingerprint(rounds(DATASET_FINGERPRINT, {}).replies, {})
    ranges, medians = _numeric_ranges(rounds, numeric)
    return ReferenceEvidence(info, train_rows, fingerprint, ranges, medians)


def _numeric_ranges(
    rounds: _CountedRounds, numeric: list[str]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Pooled central 99% ranges, declared bounds and medians of the numeric features.

    One ``describe`` round. The declared bounds are the histogram grid every site
    builds over its descriptor's bounds (public metadata); when the sites declare
    different bounds, the widest. Without enough sites to release the quantiles,
    no ranges: ``predict`` then warns on nothing.
    """
    ranges: dict[str, Any] = {}
    medians: dict[str, float] = {}
    if not numeric:
        return ranges, medians
    params = {"variables": list(numeric), "quantiles": list(DESCRIBE_QUANTILES)}
    try:
        out = rounds("describe", params)
    except ThresholdViolation:
        return ranges, medians
    d = combine_summary(out.replies, params, DescribeResult)
    for f in numeric:
        grids = [r.get("numeric", {}).get(f, {}).get("grid") for r in out.replies.values()]
        declared = (
            [min(float(g[0]) for g in grids if g), max(float(g[1]) for g in grids if g)]
            if any(grids)
            else None
        )
        lo, hi, med = d.value(f, "p0.5"), d.value(f, "p99.5"), d.value(f, "p50")
        ranges[f] = {
            "low": lo if lo is not None else d.value(f, "p0.5_lo"),
            "high": hi if hi is not None else d.value(f, "p99.5_hi"),
            "support": [d.value(f, "p0.5_lo"), d.value(f, "p99.5_hi")],
            "declared": declared,
            "source": "pooled 0.5th and 99.5th percentiles from disclosure-checked "
            "histograms (all rows of the contributing sites); declared bounds from the "
            "sites' descriptors",
        }
        if med is not None:
            medians[f] = float(med)
    return ranges, medians


def _gather(federation: Any, desc: dict[str, Any], asked: _Asked) -> ReportEvidence:
    """Every round the report needs, in order, through ``federation.round``."""
    spec, holdout = desc["spec"], asked.holdout
    rounds = _CountedRounds(federation, asked.dataset)
    test = {**holdout, "part": "test"} if holdout else None
    split = asked.train_split if asked.split_known else holdout
    train = {**split, "part": "train"} if split else None
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
    importance = _importance_round(rounds, base, asked.n_repeats, test)
    features = list(desc["features"])
    pcols = preprocess_columns(spec)
    numeric = [f for f in features if pcols.get(f, {}).get("type", "numeric") == "numeric"]
    ref = reference_evidence(rounds, base, numeric, train)
    mom_params: dict[str, Any] = {"columns": [*features, asked.target], "missing": "indicator"}
    if train:
        mom_params["holdout"] = train
    moments = rounds("preprocess_moments", mom_params)
    return ReportEvidence(
        evaluation=ev,
        subgroups=sub,
        attributes=attributes,
        importance=importance,
        information=ref.information,
        fingerprint=ref.fingerprint,
        moments=moments,
        ranges=ref.ranges,
        medians=ref.medians,
        rounds=rounds.count,
        train_rows=ref.train_rows,
    )


def _held_out_rows(
    rounds: _CountedRounds, target: str, holdout: dict[str, Any] | None
) -> dict[str, int | None]:
    """Each site's held-out rows with the outcome recorded (one ``preprocess_moments`` round).

    A site that releases no count (too few rows, a small missing count) gets ``None``.
    """
    if not holdout:
        return {}
    params = {
        "columns": [target],
        "missing": "indicator",
        "holdout": {**holdout, "part": "test"},
    }
    try:
        out = rounds("preprocess_moments", params)
    except ThresholdViolation:
        return {}
    rows: dict[str, int | None] = {s: None for s in out.refused}
    for s, r in out.replies.items():
        rows[s] = int(r["n_rows"]) - int(r["counts"]["n_missing"][0])
    return dict(sorted(rows.items()))


def save_trained(
    federation: Any,
    dataset: str,
    estimator: Any,
    out: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
    permit: dict[str, Any] | None = None,
    purpose: str | None = None,
) -> ModelArtefact:
    """Save a freshly fitted classifier as a complete artefact: reference block and split.

    Four rounds on the training sites: ``model_information`` on the training rows
    (reference patient; per-site training rows; the covariance of a FedAvg model),
    ``dataset_fingerprint`` (dataset versions), ``describe`` (central 99% ranges and
    declared bounds, for ``predict``'s warnings) and ``preprocess_moments`` on the
    held-out part (per-site held-out rows). The artefact's ``training.split``
    records the holdout and those rows; ``build_report`` and ``healthfed
    evaluate`` score the held-out part by default.
    """
    desc = _model_description(estimator)
    known, trained = recorded_split(desc)
    target = str(desc["target"])
    rounds = _CountedRounds(federation, dataset)
    base: dict[str, Any] = {"model": desc["spec"], "target": target}
    if desc.get("positive") is not None:
        base["positive"] = str(desc["positive"])
    pcols = preprocess_columns(desc["spec"])
    numeric = [f for f in desc["features"] if pcols.get(f, {}).get("type", "numeric") == "numeric"]
    train = {**trained, "part": "train"} if trained else None
    split = desc.setdefault("training", {}).setdefault("split", {"method": SPLIT_METHOD})
    split.setdefault("holdout", trained if known else None)
    desc.setdefault("provenance", {}).update(provenance or {})
    try:
        ref = reference_evidence(rounds, base, numeric, train)
    except ThresholdViolation as exc:  # too few sites answered: save the model without it
        split["sites"] = {}
        split["note"] = f"per-site rows and the reference block were not released: {exc}"
        return save_model(desc, out)
    held = _held_out_rows(rounds, target, trained)
    split["sites"] = {
        s: {
            "train_rows": ref.train_rows.get(s),
            "held_out_rows": held.get(s, 0 if not trained else None),
        }
        for s in sorted(set(ref.train_rows) | set(held))
    }
    complete_model(desc, ref, dataset=dataset, permit=permit, purpose=purpose)
    return save_model(desc, out)


# --------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------
def _artefact_of(model: Any) -> ModelArtefact | None:
    """The loaded artefact when ``model`` is one (or its folder), else ``None``."""
    if isinstance(model, ModelArtefact):
        return model
    if isinstance(model, str | Path):
        return load_model(model)
    return None


def _model_description(model: Any) -> dict[str, Any]:
    """The model's JSON description (a copy), from an estimator, artefact, folder or dict."""
    if isinstance(model, ModelArtefact):
        desc = model.description
    elif isinstance(model, dict) and "spec" in model:
        desc = model
    else:
        desc = describe_estimator(model)
    return json.loads(json.dumps(_clean(desc)))


def _record_split(
    desc: dict[str, Any], holdout: dict[str, Any] | None, e: ReportEvidence, kind: str
) -> None:
    """Write the split the model was fitted on, with each site's rows, into ``desc``."""
    split = desc.setdefault("training", {}).setdefault("split", {"method": SPLIT_METHOD})
    split.setdefault("holdout", holdout)
    split["sites"] = {
        s: {
            "train_rows": e.train_rows.get(s),
            "held_out_rows": int(e.evaluation.metrics[s]["n"])
            if kind == "held_out" and s in e.evaluation.metrics
            else None,
        }
        for s in sorted(set(e.train_rows) | set(e.evaluation.sites))
    }


def _settings(federation: Any, e: ReportEvidence, asked: _Asked) -> dict[str, Any]:
    """The report's settings: the arguments, the split, the bins and the rounds used."""
    holdout = asked.holdout
    kind, warnings = asked.scored
    if holdout:
        holdout_text = (
            f"the held-out part of a deterministic per-patient split at every site, "
            f"{holdout['fraction']:.0%} held out (seed {holdout.get('seed', 0)})"
        )
        holdout_text += (
            ", not used in training"
            if kind == "held_out"
            else " (the model does not record its split: not verified)"
            if kind == "unverified"
            else ", which includes rows the model was trained on"
        )
    else:
        holdout_text = (
            "none: evaluated on all rows, including the training rows (apparent performance)"
        )
    return {
        "dataset": asked.dataset,
        "target": asked.target,
        "positive": asked.positive,
        "threshold": float(asked.threshold),
        "holdout": holdout,
        "holdout_text": holdout_text,
        "training_split": asked.train_split if asked.split_known else "not recorded",
        "scored_rows": kind,
        "warnings": list(warnings),
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
    holdout: dict[str, Any] | str | None = "model",
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
        ``"test"`` part. The default ``"model"`` is the split the model records it was
        fitted on (``training.split``); ``None`` evaluates on all rows. Whenever the
        scored rows include training rows (or the model does not record its split)
        the report says so in ``settings.warnings`` (and on its first screen).
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
    art = _artefact_of(model)
    desc = _model_description(art if art is not None else model)
    target = target or desc.get("target")
    if target is None:
        raise InvalidArgument("argument 'target': the model does not name its outcome; give it")
    positive = positive if positive is not None else desc.get("positive")
    known, trained = recorded_split(desc)
    if holdout == MODEL_SPLIT:
        holdout = trained if known else None
    if isinstance(holdout, str):
        raise InvalidArgument(f"argument 'holdout' must be a split or None, got {holdout!r}")
    kind, warns = scored_rows(desc, holdout)
    asked = _Asked(
        dataset, target, positive, sensitive, threshold, holdout, n_repeats, synthetic,
        train_split=trained, split_known=known, scored=(kind, tuple(warns)),
    )  # fmt: skip
    e = _gather(federation, desc, asked)
    if art is not None:
        # The report is about this artefact as saved: its hash is model.sha256. A copy
        # completed from this run's rounds serves the local explanation only when the
        # artefact lacks a reference block (older artefacts).
        mhash = art.hash
        if not desc.get("reference", {}).get("design_mean"):
            complete_model(desc, e, dataset=dataset, permit=permit, purpose=purpose)
    else:
        _record_split(desc, holdout, e, kind)
        mhash = complete_model(desc, e, dataset=dataset, permit=permit, purpose=purpose)
    report = _assemble(
        federation, desc, mhash, e, asked, title=title, example_patient=example_patient
    )
    tr = TrustReport(report)
    if save_model_to is not None:
        saved = save_model(art or desc, save_model_to, evaluation=tr.to_dict())
        assert saved.hash == mhash
    if out_dir is not None:
        tr.data["written_to"] = str(Path(out_dir).resolve() / "report.html")
        tr.write(out_dir)
    return tr
