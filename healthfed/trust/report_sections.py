"""The trust report's sections, assembled from what the report's federated rounds released.

:class:`ReportEvidence` holds every released aggregate the report uses (the
rounds are made by :func:`healthfed.trust.report.build_report`); each
``*_section`` function turns part of it into one JSON-able section of the report
(provenance, model, data, performance, calibration, fairness, explanations), and
:func:`complete_model` fills the model artefact's reference block, covariance and
provenance before its hash is taken. Nothing here talks to the federation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from healthfed.compute.evaluation import EvaluationResult
from healthfed.compute.rounds import RoundOutcome
from healthfed.trust.artefact import ModelArtefact, _code_version, model_hash
from healthfed.trust.fairness import GroupStats, SubgroupResult
from healthfed.trust.predict import predict
from healthfed.trust.report_stats import Z95, meta_analysis, reliability, roc_points, site_metrics

__all__ = [
    "OVERSIGHT",
    "ReportEvidence",
    "calibration_section",
    "complete_model",
    "data_section",
    "explanations_section",
    "fairness_section",
    "local_explanation",
    "model_section",
    "performance_section",
    "preprocess_columns",
    "provenance_section",
]

OVERSIGHT = {
    "predict": "healthfed predict MODEL --input patient.json",
    "decide": "healthfed decide MODEL --input patient.json --decision accept|override "
    "--reason TEXT --clinician NAME --audit-log FILE",
    "audit": "hash-chained JSON-lines log (healthfed.governance.audit.AuditLog)",
}
_CALIBRATION_KEYS = ("calibration_intercept", "calibration_slope", "recalibration_intercept")


@dataclass
class ReportEvidence:
    """What the report's rounds released; the report is built from this alone."""

    evaluation: EvaluationResult  # evaluate_binary: per-site and pooled metrics
    subgroups: SubgroupResult  # subgroup_metrics: "all" and each sensitive attribute
    attributes: list[str]  # "all" and the sensitive attributes, in request order
    importance: dict[str, Any]  # permutation_importance, combined
    information: dict[str, Any]  # model_information, combined
    fingerprint: dict[str, Any]  # dataset_fingerprint: content hashes, site sizes
    moments: RoundOutcome  # preprocess_moments on the training rows
    ranges: dict[str, Any]  # pooled central 99% ranges of numeric features
    medians: dict[str, float]  # pooled medians of numeric features
    rounds: int  # federated rounds used
    train_rows: dict[str, int] = field(default_factory=dict)  # per site: rows fitted on


class _Reference(Protocol):
    """What :func:`complete_model` reads (a ``ReportEvidence`` or ``ReferenceEvidence``)."""

    information: dict[str, Any]
    ranges: dict[str, Any]
    fingerprint: dict[str, Any]


def preprocess_columns(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{column: its preprocess entry}`` of a model with a shared preprocessor, else ``{}``."""
    pre = spec["preprocess"]
    return {c["name"]: c for c in pre.get("columns", [])} if pre.get("kind") else {}


def _round_n(n: float | None) -> int | None:
    return None if n is None else int(round(float(n) / 10.0) * 10)


# --- the model artefact ------------------------------------------------------------------
def complete_model(
    desc: dict[str, Any],
    e: _Reference,
    *,
    dataset: str,
    permit: dict[str, Any] | None,
    purpose: str | None,
) -> str:
    """Fill ``desc``'s reference block, covariance and provenance in place; return its hash."""
    features = list(desc["features"])
    pcols = preprocess_columns(desc["spec"])
    reference = {
        "design_mean": e.information["design_mean"],
        "ranges": e.ranges,
        "levels": {f: c["levels"] for f, c in pcols.items() if c["type"] == "categorical"},
        "required": features,
    }
    desc.setdefault("reference", {}).update(reference)
    inference = desc.setdefault("inference", {})
    if (
        inference.get("cov_params") is None
        and desc["spec"]["model"] == "logistic"
        and "information" in e.information
    ):
        try:
            inference["cov_params"] = np.linalg.inv(
                np.asarray(e.information["information"])
            ).tolist()
            inference["method"] = "inverse federated Fisher information at the model's weights"
        except np.linalg.LinAlgError:
            pass
    prov = desc.setdefault("provenance", {})
    body = (permit or {}).get("permit", permit or {})
    if body:
        prov["permit_id"] = body.get("permit_id")
        prov["purpose"] = body.get("purpose_description") or body.get("purpose")
    if purpose:
        prov["purpose"] = purpose
    prov["dataset"] = dataset
    prov["dataset_versions"] = {s: v["content_hash"] for s, v in e.fingerprint.items()}
    if "code_version" not in prov:
        prov["code_version"] = _code_version()
    desc["format"] = "healthfed.model/1"
    return model_hash(desc)


# --- 1. provenance, model and data -------------------------------------------------------
def provenance_section(
    desc: dict[str, Any], mhash: str, dataset: str, e: ReportEvidence
) -> dict[str, Any]:
    """Permit, purpose, model hash, code version, each site's dataset version, privacy."""
    prov = desc["provenance"]
    return {
        "permit_id": prov.get("permit_id"),
        "purpose": prov.get("purpose"),
        "model_hash": mhash,
        "code_version": prov["code_version"],
        "dataset": dataset,
        "sites": {
            s: {
                "n_rounded": _round_n(v["n_rows"]),
                "content_hash": v["content_hash"],
                "hash_kind": v["hash_kind"],
                "descriptor_sha256": v["descriptor_sha256"],
            }
            for s, v in e.fingerprint.items()
        },
        "training": desc.get("training", {}),
        "privacy": {
            "mechanism": "disclosure control at every node (small-cell suppression, minimum "
            "subset, parameter/row rule, merged histograms); no differential privacy",
            "dp_epsilon_spent": 0.0,
            "refusals": {**e.evaluation.refused, **e.subgroups.refused},
        },
    }


def _preprocess_text(spec: dict[str, Any]) -> tuple[str, str]:
    if spec.get("kind") == "healthfed.preprocess":
        missing = (
            "pooled-mean (numeric/binary) or reference-level (categorical) imputation with a "
            "missing indicator for every column missing at any site"
            if spec["missing"] == "indicator"
            else "complete cases (rows with a missing feature left out)"
        )
        text = (
            "numeric columns standardised with the pooled mean and SD; categorical columns "
            "one-hot with the first declared level as reference; binary columns 0/1"
        )
        return text, missing
    return (
        "numeric features standardised with the pooled mean and SD (one feature_moments round)",
        "complete cases (rows with a missing feature left out)",
    )


def model_section(desc: dict[str, Any], target: str, positive: Any) -> dict[str, Any]:
    """The model: estimator, features, preprocessing, missing-value handling, training."""
    pre_text, missing_text = _preprocess_text(desc["spec"]["preprocess"])
    return {
        "estimator": desc.get("estimator"),
        "kind": desc["spec"]["model"],
        "target": target,
        "positive": positive,
        "features": list(desc["features"]),
        "design_features": desc.get("design_features", []),
        "preprocessing": pre_text,
        "missing_handling": missing_text,
        "training_text": ", ".join(
            f"{k}={v}" for k, v in (desc.get("training", {}).get("parameters") or {}).items()
        )
        or "see model.json",
    }


def data_section(desc: dict[str, Any], e: ReportEvidence) -> dict[str, Any]:
    """Training and evaluation rows and events per site and pooled; missing values.

    Training rows are the rows the model was fitted on: each site's rows with the
    outcome recorded in the training part of the model's split (the rows of the
    ``model_information`` round, which builds the training design); evaluation
    rows are the rows the evaluation scored.
    """
    features = list(desc["features"])
    ev, mom = e.evaluation, e.moments
    sites: dict[str, dict[str, Any]] = {}
    train_rows = train_events = 0
    missing_pooled: dict[str, Any] = {f: 0 for f in features}
    k_target = len(features)
    for s in sorted(set(ev.sites) | set(mom.replies) | set(mom.refused) | set(e.train_rows)):
        entry: dict[str, Any] = {}
        if s in mom.replies:
            r = mom.replies[s]
            sums = r["arrays"]["sum"]["data"]
            ev_s = int(round(sums[k_target]))
            n_s = e.train_rows.get(s, int(r["n_rows"]) - int(r["counts"]["n_missing"][k_target]))
            entry.update(train_rows=n_s, train_events=ev_s)
            train_rows += n_s
            train_events += ev_s
            for f, m in zip(features, r["counts"]["n_missing"][:k_target], strict=True):
                if isinstance(missing_pooled[f], int):
                    missing_pooled[f] += int(m)
        else:
            entry["train_note"] = mom.refused.get(s, "no answer")
            if s in e.train_rows:
                entry["train_rows"] = e.train_rows[s]
                train_rows += e.train_rows[s]
            for f in features:
                missing_pooled[f] = "not released by every site"
        if s in ev.metrics:
            entry.update(test_rows=int(ev.metrics[s]["n"]), test_events=int(ev.metrics[s]["n_pos"]))
        sites[s] = entry
    return {
        "training_rows": train_rows,
        "training_events": train_events,
        "evaluation_rows": int(ev.metrics["pooled"]["n"]),
        "evaluation_events": int(ev.metrics["pooled"]["n_pos"]),
        "sites": sites,
        "missing": missing_pooled,
    }


# --- 2-3. performance, heterogeneity and calibration --------------------------------------
def _all_rows(e: ReportEvidence, row: str) -> GroupStats | None:
    """The released ``"all"`` group of site ``row``, or pooled over the sites."""
    sub = e.subgroups
    if row == "pooled":
        return sub.pooled("all", "all")
    return (sub.site_stats.get("all", {}).get(row) or {}).get("all")


def _curves(e: ReportEvidence) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """(ROC curves, reliability curves, observed/expected) per site and pooled."""
    roc, rel, oe = {}, {}, {}
    for row in [*e.evaluation.sites, "pooled"]:
        gs = _all_rows(e, row)
        fh = gs.fine_hists(e.subgroups.bins) if gs is not None else None
        if fh is not None:
            roc[row] = roc_points(*fh)
            rel[row] = reliability(*fh)
        if gs is not None and gs.score is not None and gs.score[0]:
            tp, fn = gs.cell_total("tp"), gs.cell_total("fn")
            if tp is not None and fn is not None:
                oe[row] = (tp + fn) / gs.n / gs.score[1]
    return roc, rel, oe


def performance_section(e: ReportEvidence) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the performance section, the reliability curves for the calibration section).

    Metrics per site and pooled with CIs, ROC curves, observed/expected and the
    random-effects meta-analysis of per-site AUROC.
    """
    ev = e.evaluation
    sites = ev.sites
    by_site = {s: site_metrics(ev.metrics[s], _all_rows(e, s)) for s in sites}
    pooled = site_metrics(ev.metrics["pooled"], _all_rows(e, "pooled"))
    auc_het = meta_analysis(
        [ev.metrics[s]["auroc"] for s in sites],
        [
            (ev.metrics[s]["auroc_ci_high"] - ev.metrics[s]["auroc_ci_low"]) / (2 * Z95)
            for s in sites
        ],
    )
    roc, rel, oe = _curves(e)
    performance = {
        "sites": sites,
        "pooled": pooled,
        "by_site": by_site,
        "heterogeneity": {"auroc": auc_het, "i2": auc_het.get("i2")},
        "roc": roc,
        "observed_expected": oe,
        "rounds": ev.rounds,
    }
    return performance, rel


def calibration_section(
    performance: dict[str, Any], rel: dict[str, Any], e: ReportEvidence
) -> dict[str, Any]:
    """Calibration-in-the-large and slope per site and pooled, and the reliability curves."""
    return {
        "pooled": {k: performance["pooled"].get(k) for k in _CALIBRATION_KEYS},
        "by_site": {
            s: {k: performance["by_site"][s].get(k) for k in _CALIBRATION_KEYS}
            for s in performance["sites"]
        },
        "reliability": rel,
        "converged": e.evaluation.converged,
    }


# --- 4. fairness -------------------------------------------------------------------------
def fairness_section(e: ReportEvidence) -> dict[str, Any]:
    """One MetricFrame per sensitive attribute, with the groups each site suppressed."""
    sub = e.subgroups
    frames = []
    for attr in [a for a in e.attributes if a != "all"]:
        mf = sub.metric_frame(attr)
        d = mf.to_dict()
        counts = sub.site_counts(attr)
        suppressed = sorted(
            {g for per in counts.values() for g, v in per.items() if v is None}
            | {g for g, note in mf.notes.items() if note.get("suppressed")}
        )
        d.update(
            suppressed=suppressed,
            site_counts=counts,
            groups_order=[g for g in sub.groups[attr]],
        )
        frames.append(d)
    return {
        "method": "FederatedMetricFrame on disclosure-filtered subgroup aggregates "
        "(equals fairlearn.metrics.MetricFrame on pooled rows when nothing is suppressed)",
        "age_bands": "0-17, 18-39, 40-59, 60-74, 75+ (years; fixed public cut points)",
        "frames": frames,
    }


# --- 5. explanations ---------------------------------------------------------------------
def _illustrative_patient(desc: dict[str, Any], medians: dict[str, float]) -> dict[str, Any]:
    """A patient of pooled medians and reference levels (not a real patient)."""
    pre = desc["spec"]["preprocess"]
    pcols = preprocess_columns(desc["spec"])
    patient: dict[str, Any] = {}
    for f in desc["features"]:
        c = pcols.get(f, {})
        if c.get("type") == "categorical":
            patient[f] = c["levels"][0]
        elif c.get("type") == "binary":
            patient[f] = 0
        else:
            centers = {g["column"]: g.get("center") for g in pre.get("features", [])}
            patient[f] = medians.get(f, c.get("mean", centers.get(f)))
    return patient


def local_explanation(
    desc: dict[str, Any],
    mhash: str,
    e: ReportEvidence,
    *,
    threshold: float,
    example_patient: dict[str, Any] | None,
) -> dict[str, Any]:
    """One patient's prediction, interval and explanation, as ``predict`` gives it."""
    if example_patient is None:
        example_patient = _illustrative_patient(desc, e.medians)
        note = "Illustrative patient built from pooled medians and reference levels (not a real patient)."
    else:
        note = "Example patient given by the researcher."
    art = ModelArtefact(desc, mhash, None, {"settings": {"threshold": threshold}})
    local = predict(art, example_patient, threshold=threshold).to_dict()
    local.update(patient=example_patient, note=note)
    return local


def explanations_section(
    desc: dict[str, Any], e: ReportEvidence, local: dict[str, Any]
) -> dict[str, Any]:
    """Coefficients (GLMs), federated permutation importance and one local explanation."""
    return {
        "coefficients": desc.get("inference", {}).get("coefficients"),
        "permutation_importance": e.importance,
        "local": local,
    }
