"""Model card (Mitchell et al. 2019), TRIPOD+AI checklist and FUTURE-AI evidence from a run.

Everything software can know is filled from the report's data; everything it
cannot (clinical context, intended users, ethics review...) is marked
``"to be written by the authors"`` (status ``"authors"``), never invented.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUTHORS", "future_ai", "model_card", "tripod_ai"]

AUTHORS = "To be written by the authors."


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _perf_line(m: dict[str, Any]) -> str:
    return (
        f"AUROC {_fmt(m.get('auroc'))} (95% CI {_fmt(m.get('auroc_ci_low'))}-"
        f"{_fmt(m.get('auroc_ci_high'))}), Brier {_fmt(m.get('brier'))}, calibration slope "
        f"{_fmt(m.get('calibration_slope'), 2)}, calibration-in-the-large "
        f"{_fmt(m.get('calibration_intercept'), 2)}"
    )


def model_card(r: dict[str, Any]) -> list[dict[str, str]]:
    """Sections of a model card: ``[{"section", "content", "status"}]``."""
    return [*_card_model_and_use(r), *_card_evaluation(r)]


def _card_model_and_use(r: dict[str, Any]) -> list[dict[str, str]]:
    """Model details, intended and out-of-scope uses, factors."""
    prov, model = r["provenance"], r["model"]
    sens = ", ".join(f["attribute"] for f in r["fairness"]["frames"])
    return [
        {
            "section": "Model details",
            "content": (
                f"{model['estimator']} ({model['kind']}) predicting {model['target']} from "
                f"{len(model['features'])} features ({', '.join(model['features'])}); trained by "
                f"federated learning across {len(prov['sites'])} sites with no row leaving a site. "
                f"Model hash sha256:{prov['model_hash']}. Code: {prov['code_version']}."
            ),
            "status": "filled",
        },
        {
            "section": "Intended use",
            "content": (
                f"Purpose stated in the data permit: {prov.get('purpose') or 'none recorded'}. "
                + AUTHORS
                + " (intended users, clinical setting, decision supported)"
            ),
            "status": "partial",
        },
        {
            "section": "Out-of-scope uses",
            "content": (
                "Populations outside the training ranges (the predict command warns), other "
                "outcomes or time horizons, and any use without clinician oversight. " + AUTHORS
            ),
            "status": "partial",
        },
        {
            "section": "Factors",
            "content": f"Evaluated across sites and the sensitive attributes {sens}.",
            "status": "filled",
        },
    ]


def _card_evaluation(r: dict[str, Any]) -> list[dict[str, str]]:
    """Metrics, evaluation and training data, analyses, ethics, caveats."""
    pooled = r["performance"]["pooled"]
    sites = ", ".join(f"{s} (~{v['n_rounded']})" for s, v in r["provenance"]["sites"].items())
    return [
        {
            "section": "Metrics",
            "content": (
                f"AUROC with DeLong 95% CI, accuracy, sensitivity and specificity at threshold "
                f"{r['settings']['threshold']:g} (Wilson CIs), Brier score, calibration-in-the-large "
                "and slope, by site, pooled and by subgroup; differences and ratios between groups."
            ),
            "status": "filled",
        },
        {
            "section": "Evaluation data",
            "content": (
                f"Held-out rows of every site ({r['data']['evaluation_rows']} rows, "
                f"{r['data']['evaluation_events']} events); split: {r['settings']['holdout_text']}."
            ),
            "status": "filled",
        },
        {
            "section": "Training data",
            "content": (
                f"Dataset '{r['settings']['dataset']}' at {sites}; "
                f"{r['data']['training_rows']} training rows "
                f"({r['data']['training_events']} events)."
            ),
            "status": "filled",
        },
        {
            "section": "Quantitative analyses",
            "content": "Pooled: "
            + _perf_line(pooled)
            + ". Per site and per subgroup: see sections 2-4.",
            "status": "filled",
        },
        {"section": "Ethical considerations", "content": AUTHORS, "status": "authors"},
        {
            "section": "Caveats and recommendations",
            "content": (
                "Subgroups too small at a site are suppressed there and excluded from pooled "
                "subgroup numbers (listed in section 4). AUROC from released score histograms is "
                "exact up to within-bin ties (bounds given). "
                + (
                    "Synthetic data: not for clinical use. "
                    if r["settings"].get("synthetic")
                    else ""
                )
                + AUTHORS
            ),
            "status": "partial",
        },
    ]


def tripod_ai(r: dict[str, Any]) -> list[dict[str, str]]:
    """TRIPOD+AI (Collins et al., BMJ 2024) items: filled from the run or left to the authors."""
    d = r["data"]
    per_site = "; ".join(
        f"{s}: train {v.get('train_rows', 'n/a')} rows / {v.get('train_events', 'n/a')} events, "
        f"test {v.get('test_rows', 'n/a')} / {v.get('test_events', 'n/a')}"
        for s, v in d["sites"].items()
    )
    miss = (
        "; ".join(f"{c}: {v}" for c, v in d["missing"].items() if v not in (0, "0"))
        or "no missing values in the model's features"
    )
    items = [*_tripod_methods(r, per_site, miss), *_tripod_results(r, per_site)]
    return [
        {
            "item": i,
            "topic": t,
            "content": c if c is not None else AUTHORS,
            "status": "authors" if c is None else ("partial" if AUTHORS in c else "filled"),
        }
        for i, t, c in items
    ]


def _tripod_methods(
    r: dict[str, Any], per_site: str, miss: str
) -> list[tuple[str, str, str | None]]:
    """TRIPOD+AI items 1-12: title to analytical methods (``None``: for the authors)."""
    d, model = r["data"], r["model"]
    return [
        ("1", "Title", None),
        ("2", "Abstract", None),
        ("3a-c", "Background and objectives", None),
        (
            "5a",
            "Data sources",
            f"Dataset '{r['settings']['dataset']}' at {len(d['sites'])} sites; "
            f"versions (sha256) in the provenance section.",
        ),
        ("5b", "Dates of data collection", None),
        ("6a", "Setting and eligibility", None),
        ("7", "Data preparation", f"Shared federated preprocessing: {model['preprocessing']}."),
        (
            "8a",
            "Outcome definition",
            f"Outcome column '{model['target']}' (positive level "
            f"{model.get('positive') or '1'}); " + AUTHORS,
        ),
        (
            "9a",
            "Predictors",
            f"{', '.join(model['features'])}; design columns: "
            f"{', '.join(model['design_features'])}.",
        ),
        (
            "10",
            "Sample size",
            f"Training {d['training_rows']} rows with {d['training_events']} "
            f"events; evaluation {d['evaluation_rows']} rows with {d['evaluation_events']} events. "
            f"Per site: {per_site}.",
        ),
        (
            "11",
            "Missing data",
            f"Missing values per feature (training rows, pooled): {miss}. "
            f"Handling: {model['missing_handling']}.",
        ),
        (
            "12a-c",
            "Analytical methods / model specification",
            f"{model['estimator']}; {model['training_text']}. Full specification (weights and "
            "preprocessing) in model.json.",
        ),
        (
            "12d",
            "Heterogeneity across clusters",
            "Random-effects meta-analysis (DerSimonian-Laird) "
            f"of per-site AUROC on the logit scale: I² = {_fmt(r['performance']['heterogeneity'].get('i2'), 2)}.",
        ),
        (
            "12e",
            "Performance measures",
            "AUROC (DeLong CI), Brier, accuracy/sensitivity/specificity "
            f"(Wilson CIs) at threshold {r['settings']['threshold']:g}, calibration-in-the-large and slope.",
        ),
        ("12f", "Model updating / recalibration", None),
        (
            "12g",
            "Fairness",
            f"Subgroup analyses by {', '.join(f['attribute'] for f in r['fairness']['frames'])}"
            " with differences and ratios.",
        ),
    ]


def _tripod_results(r: dict[str, Any], per_site: str) -> list[tuple[str, str, str | None]]:
    """TRIPOD+AI items 14-27: open science, results, discussion (``None``: for the authors)."""
    prov = r["provenance"]
    pooled = r["performance"]["pooled"]
    fair = "; ".join(
        f"{f['attribute']}: {len(f['by_group'])} groups"
        + (f", suppressed: {', '.join(f['suppressed'])}" if f["suppressed"] else "")
        for f in r["fairness"]["frames"]
    )
    return [
        (
            "14",
            "Ethical approval",
            f"Data permit: {prov.get('permit_id') or 'none recorded'}. " + AUTHORS,
        ),
        ("15", "Funding", None),
        ("16", "Conflicts of interest", None),
        (
            "18a",
            "Data and code availability",
            f"Code: {prov['code_version']}; data stay at the sites (federated). " + AUTHORS,
        ),
        ("19", "Patient and public involvement", None),
        ("20a", "Participants flow and characteristics", f"{per_site}."),
        ("23a", "Model performance with CIs", _perf_line(pooled) + "."),
        (
            "23b",
            "Calibration",
            f"Calibration-in-the-large {_fmt(pooled.get('calibration_intercept'), 3)}, "
            f"slope {_fmt(pooled.get('calibration_slope'), 3)}; reliability plots overall and per site.",
        ),
        ("23c", "Subgroup results", fair + "."),
        (
            "24",
            "Model specification for use",
            "model.json (weights, preprocessing, feature list); "
            f"model hash {prov['model_hash'][:16]}…",
        ),
        ("26", "Interpretation and limitations", None),
        (
            "27a-c",
            "Usability and implementation",
            "Predict command with uncertainty interval, local "
            "explanation, out-of-distribution warnings and audited accept/override. " + AUTHORS,
        ),
    ]


def future_ai(r: dict[str, Any]) -> list[dict[str, str]]:
    """FUTURE-AI (Lekadir et al., BMJ 2025) principles this run meets, with the evidence."""
    perf = r["performance"]
    het = perf["heterogeneity"]
    supp = [s for f in r["fairness"]["frames"] for s in f["suppressed"]]
    return [
        {
            "principle": "Fairness",
            "recommendation": "Evaluate performance across subgroups",
            "met": "yes",
            "evidence": "Section 4: metrics by "
            + ", ".join(f["attribute"] for f in r["fairness"]["frames"])
            + (f"; suppressed groups listed ({', '.join(supp)})" if supp else ""),
        },
        {
            "principle": "Universality",
            "recommendation": "Evaluate on data from multiple sites",
            "met": "yes" if len(perf["sites"]) >= 2 else "no",
            "evidence": f"{len(perf['sites'])} sites, heterogeneity I² = {_fmt(het.get('i2'), 2)}",
        },
        {
            "principle": "Traceability",
            "recommendation": "Record provenance and an audit trail",
            "met": "yes",
            "evidence": "Model hash, dataset content hashes, code version, permit id; "
            "clinician decisions go to a hash-chained audit log",
        },
        {
            "principle": "Usability",
            "recommendation": "Provide human oversight at the point of use",
            "met": "yes",
            "evidence": "predict: probability, 95% interval, local explanation, "
            "out-of-distribution warnings; accept/override with reason",
        },
        {
            "principle": "Robustness",
            "recommendation": "Report calibration and uncertainty",
            "met": "yes",
            "evidence": "Section 3 calibration; CIs for every performance metric",
        },
        {
            "principle": "Explainability",
            "recommendation": "Provide global and local explanations",
            "met": "yes",
            "evidence": "Section 5: "
            + ("odds ratios with CIs, " if r["explanations"]["coefficients"] else "")
            + "federated permutation importance, local contributions",
        },
        {
            "principle": "Robustness",
            "recommendation": "External validation on independent data",
            "met": "partial",
            "evidence": "held-out rows of the training sites only; " + AUTHORS,
        },
        {
            "principle": "Universality",
            "recommendation": "Clinical evaluation and monitoring plan",
            "met": "no",
            "evidence": AUTHORS,
        },
    ]
