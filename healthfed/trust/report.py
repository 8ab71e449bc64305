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
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.errors import ThresholdViolation
from healthfed.trust.artefact import (
    ModelArtefact,
    _clean,
    describe_estimator,
    load_model,
    model_hash,
)
from healthfed.trust.fairness import GroupStats, SubgroupResult, wilson

__all__ = ["REPORT_FORMAT", "TrustReport", "build_report", "meta_analysis"]

REPORT_FORMAT = "healthfed.trust-report/1"
_Z = 1.959963984540054
RELIABILITY_BINS = 10


@dataclass
class TrustReport:
    """A model's trust report; ``data`` is exactly what ``report.json`` holds."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(_clean(self.data), allow_nan=False))

    def write(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``report.html`` into ``out_dir``; return the HTML path."""
        from healthfed.trust.render import render_html

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
# helpers
# --------------------------------------------------------------------------------------
def meta_analysis(estimates: list[float], ses: list[float], logit: bool = True) -> dict[str, float]:
    """DerSimonian-Laird random-effects pooling (on the logit scale for proportions/AUROC).

    Returns the pooled estimate with 95% CI, the 95% prediction interval for a
    new site, Cochran's Q and its p-value, I² and tau².
    """
    from scipy.stats import chi2, t

    est = np.asarray(estimates, dtype=float)
    se = np.asarray(ses, dtype=float)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0) & (est > 0) & (est < 1)
    est, se = est[ok], se[ok]
    k = len(est)
    nan = float("nan")
    if k < 2:
        return {"k": k, "estimate": nan, "i2": nan, "tau2": nan, "q": nan, "q_p": nan}
    if logit:
        y = np.log(est / (1 - est))
        v = (se / (est * (1 - est))) ** 2
    else:
        y, v = est, se**2
    w = 1 / v
    ybar = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - ybar) ** 2))
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    ws = 1 / (v + tau2)
    mu = float(np.sum(ws * y) / np.sum(ws))
    se_mu = math.sqrt(1 / np.sum(ws))
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    tq = float(t.ppf(0.975, k - 2)) if k > 2 else nan
    pi_half = tq * math.sqrt(tau2 + se_mu**2) if k > 2 else nan
    back = (lambda z: 1 / (1 + math.exp(-z))) if logit else (lambda z: z)
    return {
        "k": k,
        "estimate": back(mu),
        "ci_low": back(mu - _Z * se_mu),
        "ci_high": back(mu + _Z * se_mu),
        "pi_low": back(mu - pi_half) if k > 2 else nan,
        "pi_high": back(mu + pi_half) if k > 2 else nan,
        "q": q,
        "q_p": float(chi2.sf(q, k - 1)),
        "i2": i2,
        "tau2": tau2,
    }


def roc_points(pos: np.ndarray, neg: np.ndarray) -> dict[str, list[float]]:
    """ROC curve from score counts on the fine grid (thresholds from high to low)."""
    P, N = pos.sum(), neg.sum()
    tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / P]) if P else np.zeros(1)
    fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / N]) if N else np.zeros(1)
    keep = np.concatenate([[True], (np.diff(tpr) != 0) | (np.diff(fpr) != 0)])
    return {"fpr": np.round(fpr[keep], 4).tolist(), "tpr": np.round(tpr[keep], 4).tolist()}


def reliability(pos: np.ndarray, neg: np.ndarray, n_bins: int = RELIABILITY_BINS) -> list[dict]:
    """Observed event rate vs mean predicted risk in equal-width risk bins."""
    fine = len(pos)
    centres = (np.arange(fine) + 0.5) / fine
    out = []
    for b in range(n_bins):
        sel = (centres >= b / n_bins) & (centres < (b + 1) / n_bins)
        n = float(pos[sel].sum() + neg[sel].sum())
        if n < 0.5:
            continue
        mean_p = float(np.sum(centres[sel] * (pos[sel] + neg[sel])) / n)
        obs = float(pos[sel].sum() / n)
        lo, hi = wilson(pos[sel].sum(), n)
        out.append(
            {
                "bin_low": b / n_bins,
                "bin_high": (b + 1) / n_bins,
                "n": round(n, 1),
                "mean_predicted": mean_p,
                "observed": obs,
                "observed_ci_low": lo,
                "observed_ci_high": hi,
            }
        )
    return out


def _round_n(n: float | None) -> int | None:
    return None if n is None else int(round(float(n) / 10.0) * 10)


def _model_description(model: Any) -> tuple[dict[str, Any], ModelArtefact | None]:
    if isinstance(model, ModelArtefact):
        return model.description, model
    if isinstance(model, str | Path):
        art = load_model(model)
        return art.description, art
    if isinstance(model, dict) and "spec" in model:
        return model, None
    return describe_estimator(model), None


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


def _site_metrics(ev: dict[str, float], gs: GroupStats | None) -> dict[str, Any]:
    m = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in ev.items()}
    n, P = ev.get("n") or 0.0, ev.get("n_pos") or 0.0
    N = n - P
    for name, k, d in (
        ("accuracy", (ev.get("accuracy") or float("nan")) * n, n),
        ("sensitivity", (ev.get("sensitivity") or float("nan")) * P, P),
        ("specificity", (ev.get("specificity") or float("nan")) * N, N),
    ):
        lo, hi = wilson(round(k), d) if k == k else (float("nan"), float("nan"))
        m[f"{name}_ci_low"], m[f"{name}_ci_high"] = lo, hi
    if gs is not None and gs.sq is not None and gs.sq[0] > 1:
        sn, mean, m2 = gs.sq
        se = math.sqrt(m2 / (sn - 1) / sn)
        m["brier_ci_low"], m["brier_ci_high"] = max(0.0, mean - _Z * se), mean + _Z * se
    else:
        m["brier_ci_low"] = m["brier_ci_high"] = None
    return m


# --------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------
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
        (derived at the nodes from ``age``, cut points 18/40/60/75).
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
    from healthfed.compute.evaluation import evaluate_classifier
    from healthfed.compute.importance import (
        MODEL_INFORMATION,
        PERMUTATION_IMPORTANCE,
        combine_information,
        combine_permutation,
    )
    from healthfed.compute.subgroups import (
        DATASET_FINGERPRINT,
        SUBGROUP_METRICS,
        combine_fingerprint,
    )
    from healthfed.trust.cards import future_ai, model_card, tripod_ai

    desc, art = _model_description(model)
    desc = json.loads(json.dumps(_clean(desc)))
    spec = desc["spec"]
    target = target or desc.get("target")
    if target is None:
        raise ValueError("argument 'target': the model does not name its outcome; give it")
    positive = positive if positive is not None else desc.get("positive")
    min_sites = int(getattr(federation, "min_sites", 2))
    rounds = 0

    def query(name: str, params: dict[str, Any]) -> Any:
        nonlocal rounds
        rounds += 1
        out = federation.round(name, dataset, params)
        if len(out.replies) < min_sites:
            raise ThresholdViolation(
                f"{name!r} on {dataset!r}: {len(out.replies)} site(s) contributed, at least "
                f"{min_sites} needed; refused: {out.refused}; missing: {out.missing}"
            )
        return out

    test = {**holdout, "part": "test"} if holdout else None
    train = {**holdout, "part": "train"} if holdout else None
    base: dict[str, Any] = {"model": spec, "target": target}
    if positive is not None:
        base["positive"] = str(positive)

    # 1. performance + calibration (evaluate_binary)
    ev = evaluate_classifier(
        federation, dataset, spec, target, positive=positive, threshold=threshold, holdout=holdout
    )
    rounds += ev.rounds
    # 2. subgroups (one round)
    attrs = ["all", *[a for a in sensitive if a != "all"]]
    sg_params = {**base, "threshold": float(threshold), "attributes": attrs}
    if test:
        sg_params["holdout"] = test
    sg_out = query(SUBGROUP_METRICS, sg_params)
    sub = SubgroupResult.from_replies(sg_out.replies, threshold, min_sites)
    sub.refused = dict(sg_out.refused)
    # 3. explanations
    pi_params = {**base, "n_repeats": int(n_repeats), "seed": 0}
    if test:
        pi_params["holdout"] = test
    importance = combine_permutation(query(PERMUTATION_IMPORTANCE, pi_params).replies, pi_params)
    info_params = dict(base)
    if train:
        info_params["holdout"] = train
    info = combine_information(query(MODEL_INFORMATION, info_params).replies, info_params)
    # 4. provenance and data description
    fp = combine_fingerprint(query(DATASET_FINGERPRINT, {}).replies, {})
    features = list(desc["features"])
    mom_params: dict[str, Any] = {"columns": [*features, target], "missing": "indicator"}
    if train:
        mom_params["holdout"] = train
    rounds += 1
    mom = federation.round("preprocess_moments", dataset, mom_params)
    pre = spec["preprocess"]
    pcols = {c["name"]: c for c in pre.get("columns", [])} if pre.get("kind") else {}
    numeric = [f for f in features if (pcols.get(f, {}).get("type", "numeric") == "numeric")]
    ranges: dict[str, Any] = {}
    medians: dict[str, float] = {}
    if numeric:
        rounds += 1
        try:
            d = federation.describe(dataset, numeric, quantiles=[0.005, 0.5, 0.995])
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
        except ThresholdViolation:
            pass
    # --- the model artefact's reference block and covariance -----------------------------
    reference = {
        "design_mean": info["design_mean"],
        "ranges": ranges,
        "levels": {f: c["levels"] for f, c in pcols.items() if c["type"] == "categorical"},
        "required": features,
    }
    desc.setdefault("reference", {}).update(reference)
    inference = desc.setdefault("inference", {})
    if (
        inference.get("cov_params") is None
        and spec["model"] == "logistic"
        and "information" in info
    ):
        try:
            inference["cov_params"] = np.linalg.inv(np.asarray(info["information"])).tolist()
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
    prov["dataset_versions"] = {s: v["content_hash"] for s, v in fp.items()}
    if "code_version" not in prov:
        from healthfed.trust.artefact import _code_version

        prov["code_version"] = _code_version()
    desc["format"] = "healthfed.model/1"
    mhash = model_hash(desc)

    # --- sections ------------------------------------------------------------------------
    sites = ev.sites
    all_stats = sub.site_stats.get("all", {})
    by_site = {s: _site_metrics(ev.metrics[s], (all_stats.get(s) or {}).get("all")) for s in sites}
    pooled_gs = sub.pooled("all", "all")
    pooled = _site_metrics(ev.metrics["pooled"], pooled_gs)
    auc_het = meta_analysis(
        [ev.metrics[s]["auroc"] for s in sites],
        [
            (ev.metrics[s]["auroc_ci_high"] - ev.metrics[s]["auroc_ci_low"]) / (2 * _Z)
            for s in sites
        ],
    )
    oe = {}
    roc, rel = {}, {}
    for row in [*sites, "pooled"]:
        gs = pooled_gs if row == "pooled" else (all_stats.get(row) or {}).get("all")
        fh = gs.fine_hists(sub.bins) if gs is not None else None
        if fh is not None:
            roc[row] = roc_points(*fh)
            rel[row] = reliability(*fh)
        if gs is not None and gs.score is not None and gs.score[0]:
            tp, fn = gs.cell_total("tp"), gs.cell_total("fn")
            if tp is not None and fn is not None:
                oe[row] = (tp + fn) / gs.n / gs.score[1]
    frames = []
    for attr in [a for a in attrs if a != "all"]:
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
    # local explanation of one (illustrative) patient
    if example_patient is None:
        example_patient = {}
        for f in features:
            c = pcols.get(f, {})
            if c.get("type") == "categorical":
                example_patient[f] = c["levels"][0]
            elif c.get("type") == "binary":
                example_patient[f] = 0
            else:
                centers = {g["column"]: g.get("center") for g in pre.get("features", [])}
                example_patient[f] = medians.get(f, c.get("mean", centers.get(f)))
        example_note = "Illustrative patient built from pooled medians and reference levels (not a real patient)."
    else:
        example_note = "Example patient given by the researcher."
    from healthfed.trust.predict import predict

    tmp_art = ModelArtefact(desc, mhash, None, {"settings": {"threshold": threshold}})
    local = predict(tmp_art, example_patient, threshold=threshold).to_dict()
    local.update(patient=example_patient, note=example_note)

    pre_text, missing_text = _preprocess_text(pre)
    # training / evaluation data description
    data_sites: dict[str, dict[str, Any]] = {}
    train_rows = train_events = 0
    missing_pooled: dict[str, Any] = {f: 0 for f in features}
    k_target = len(features)
    for s in sorted(set(sites) | set(mom.replies) | set(mom.refused)):
        entry: dict[str, Any] = {}
        if s in mom.replies:
            r = mom.replies[s]
            n_s = int(r["n_rows"])
            sums = r["arrays"]["sum"]["data"]
            ev_s = int(round(sums[k_target]))
            entry.update(train_rows=n_s, train_events=ev_s)
            train_rows += n_s
            train_events += ev_s
            for f, m in zip(features, r["counts"]["n_missing"][:k_target], strict=True):
                if isinstance(missing_pooled[f], int):
                    missing_pooled[f] += int(m)
        else:
            entry["train_note"] = mom.refused.get(s, "no answer")
            for f in features:
                missing_pooled[f] = "not released by every site"
        if s in ev.metrics:
            entry.update(test_rows=int(ev.metrics[s]["n"]), test_events=int(ev.metrics[s]["n_pos"]))
        data_sites[s] = entry

    holdout_text = (
        f"deterministic per-patient hash split at every site, {holdout['fraction']:.0%} held out "
        f"(seed {holdout.get('seed', 0)})"
        if holdout
        else "none: evaluated on the training rows (apparent performance)"
    )
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "title": title or f"Trust report: {desc.get('estimator')} for {target}",
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "settings": {
            "dataset": dataset,
            "target": target,
            "positive": positive,
            "threshold": float(threshold),
            "holdout": holdout,
            "holdout_text": holdout_text,
            "sensitive": list(sensitive),
            "score_bins": sub.bins,
            "evaluation_bins": ev.bins,
            "synthetic": synthetic,
            "federated_rounds": rounds,
            "engine": getattr(federation, "engine", None),
        },
        "provenance": {
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
                for s, v in fp.items()
            },
            "training": desc.get("training", {}),
            "privacy": {
                "mechanism": "disclosure control at every node (small-cell suppression, minimum "
                "subset, parameter/row rule, merged histograms); no differential privacy",
                "dp_epsilon_spent": 0.0,
                "refusals": {**ev.refused, **sub.refused},
            },
        },
        "model": {
            "estimator": desc.get("estimator"),
            "kind": spec["model"],
            "target": target,
            "positive": positive,
            "features": features,
            "design_features": desc.get("design_features", []),
            "preprocessing": pre_text,
            "missing_handling": missing_text,
            "training_text": ", ".join(
                f"{k}={v}" for k, v in (desc.get("training", {}).get("parameters") or {}).items()
            )
            or "see model.json",
        },
        "data": {
            "training_rows": train_rows,
            "training_events": train_events,
            "evaluation_rows": int(ev.metrics["pooled"]["n"]),
            "evaluation_events": int(ev.metrics["pooled"]["n_pos"]),
            "sites": data_sites,
            "missing": missing_pooled,
        },
        "performance": {
            "sites": sites,
            "pooled": pooled,
            "by_site": by_site,
            "heterogeneity": {"auroc": auc_het, "i2": auc_het.get("i2")},
            "roc": roc,
            "observed_expected": oe,
            "rounds": ev.rounds,
        },
        "calibration": {
            "pooled": {
                k: pooled.get(k)
                for k in ("calibration_intercept", "calibration_slope", "recalibration_intercept")
            },
            "by_site": {
                s: {
                    k: by_site[s].get(k)
                    for k in (
                        "calibration_intercept",
                        "calibration_slope",
                        "recalibration_intercept",
                    )
                }
                for s in sites
            },
            "reliability": rel,
            "converged": ev.converged,
        },
        "fairness": {
            "method": "FederatedMetricFrame on disclosure-filtered subgroup aggregates "
            "(equals fairlearn.metrics.MetricFrame on pooled rows when nothing is suppressed)",
            "age_bands": "0-17, 18-39, 40-59, 60-74, 75+ (years; fixed public cut points)",
            "frames": frames,
        },
        "explanations": {
            "coefficients": desc.get("inference", {}).get("coefficients"),
            "permutation_importance": importance,
            "local": local,
        },
        "oversight": {
            "predict": "healthfed predict MODEL --input patient.json",
            "decide": "healthfed decide MODEL --input patient.json --decision accept|override "
            "--reason TEXT --clinician NAME --audit-log FILE",
            "audit": "hash-chained JSON-lines log (healthfed.governance.audit.AuditLog)",
        },
    }
    report["model_card"] = model_card(report)
    report["tripod_ai"] = tripod_ai(report)
    report["future_ai"] = future_ai(report)
    tr = TrustReport(report)
    if save_model_to is not None:
        from healthfed.trust.artefact import save_model

        saved = save_model(desc, save_model_to, evaluation=tr.to_dict())
        assert saved.hash == mhash
    if out_dir is not None:
        tr.data["written_to"] = str(Path(out_dir).resolve() / "report.html")
        tr.write(out_dir)
    return tr
