"""Model artefact, predict (interval, explanation, OOD warnings), audited decisions, other models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _trust_helpers import HOLDOUT, TARGET, federation, pooled_rows

from healthfed.compute.fedavg import FedAvgLogisticRegression, FederatedMLPClassifier
from healthfed.compute.preprocess import standardisation_spec
from healthfed.errors import DataError, HealthfedError
from healthfed.governance.audit import verify_audit_log
from healthfed.policy import SitePolicy
from healthfed.trust import build_report, load_model, predict, record_decision, save_model
from healthfed.trust.commands import decide_command, predict_command, report_command
from healthfed.trust.explain import linear_contributions, shapley_contributions

PATIENT = {
    "age": 81,
    "sex": "male",
    "vaccination": "unvaccinated",
    "diabetes": 1,
    "ckd": 1,
    "spo2": 86,
    "resp_rate": 30,
    "crp": 160,
}


@pytest.fixture(scope="module")
def saved(fed, glm, tmp_path_factory):
    out = tmp_path_factory.mktemp("oversight")
    build_report(
        fed,
        "covid",
        glm,
        TARGET,
        threshold=0.3,
        holdout=HOLDOUT,
        out_dir=out / "r",
        save_model_to=out / "model",
    )
    return out


def test_artefact_roundtrip_hash_and_tamper_detection(saved, tmp_path):
    art = load_model(saved / "model")
    again = save_model(art, tmp_path / "copy")
    assert again.hash == art.hash == load_model(tmp_path / "copy").hash
    assert (saved / "model" / "model.sha256").read_text().strip() == art.hash
    text = (tmp_path / "copy" / "model.json").read_text()
    (tmp_path / "copy" / "model.json").write_text(text.replace('"age"', '"agE"', 1))
    with pytest.raises(DataError, match="was changed"):
        load_model(tmp_path / "copy")
    assert "pickle" not in text


def test_predict_probability_interval_contributions(saved, glm, node_files):
    pred = predict(saved / "model", PATIENT)
    import pandas as pd

    p_ref = glm.predict_proba(pd.DataFrame([PATIENT]))[0, 1]
    assert pred.probability == pytest.approx(p_ref, abs=1e-12)
    lo, hi = pred.interval
    assert lo < pred.probability < hi and hi - lo < 0.5
    # delta method by hand from the GLM's covariance
    x = np.concatenate([[1.0], glm._design(pd.DataFrame([PATIENT]))[0]])
    se = math.sqrt(x @ glm.cov_params_ @ x)
    assert math.log(hi / (1 - hi)) == pytest.approx(
        pred.linear_predictor + 1.959963984540054 * se, abs=1e-9
    )
    assert pred.base_value + sum(pred.contributions.values()) == pytest.approx(
        pred.linear_predictor, abs=1e-9
    )
    assert pred.contributions["age"] > 0 and pred.contributions["spo2"] > 0  # old, hypoxic
    assert pred.warnings == [] and not pred.out_of_distribution
    assert pred.classification == 1 and pred.threshold == 0.3


def test_out_of_distribution_warnings(saved):
    odd = {**PATIENT, "spo2": None, "resp_rate": 60.0, "age": 104, "shoe_size": 44}
    pred = predict(saved / "model", odd)
    text = " | ".join(pred.warnings)
    assert pred.out_of_distribution
    assert "'spo2' is missing" in text and "imputed" in text
    assert "'resp_rate' = 60 is outside the range seen in training" in text
    assert "unknown field(s) ignored: shoe_size" in text
    with pytest.raises(DataError, match="not a declared level"):
        predict(saved / "model", {**PATIENT, "sex": "unknown"})
    with pytest.raises(DataError, match="not a number"):
        predict(saved / "model", {**PATIENT, "age": "old"})


def test_decisions_go_to_the_hash_chained_audit_log(saved, tmp_path):
    log = tmp_path / "audit.jsonl"
    patient = tmp_path / "patient.json"
    patient.write_text(json.dumps(PATIENT))
    pred, rec = decide_command(saved / "model", patient, "accept", "", "dr_a", log)
    assert rec["seq"] == 1 and rec["decision"] == "accept" and rec["model_hash"] == pred.model_hash
    rec2 = record_decision(
        saved / "model",
        pred,
        "override",
        "recent ICU discharge, risk underestimated",
        clinician="dr_b",
        audit_log=log,
        patient_ref="local-123",
    )
    assert rec2["prev_hash"] == rec["hash"]
    assert verify_audit_log(log).ok and verify_audit_log(log).records == 2
    first = json.loads(log.read_text().splitlines()[0])
    assert not set(PATIENT) & set(first) and "input_sha256" in first  # raw input is not logged
    with pytest.raises(DataError, match="needs a reason"):
        record_decision(saved / "model", pred, "override", "  ", clinician="dr_b", audit_log=log)
    with pytest.raises(DataError, match="decision"):
        record_decision(saved / "model", pred, "maybe", "x", clinician="dr_b", audit_log=log)
    lines = log.read_text().splitlines()
    lines[0] = lines[0].replace('"accept"', '"override"')
    log.write_text("\n".join(lines) + "\n")
    assert not verify_audit_log(log).ok
    assert predict_command(saved / "model", patient).probability == pytest.approx(pred.probability)


def test_report_command_from_artefact_and_from_nodes(saved, node_files, tmp_path):
    html = report_command(saved / "model", tmp_path / "a")
    assert html.exists() and (tmp_path / "a" / "report.json").exists()
    html2 = report_command(saved / "model", tmp_path / "b", node_files)
    r = json.loads((tmp_path / "b" / "report.json").read_text())
    assert html2.exists() and r["settings"]["threshold"] == 0.3
    assert r["provenance"]["model_hash"] == load_model(saved / "model").hash


def test_shapley_equals_linear_contributions_for_a_linear_model():
    rng = np.random.default_rng(0)
    spec = standardisation_spec([f"x{i}" for i in range(6)])
    w = [rng.normal(size=6), np.array([0.3])]
    x, mean = rng.normal(size=6), rng.normal(size=6)
    b1, c1 = linear_contributions(w, spec, x, mean)
    b2, c2, how = shapley_contributions("logistic", w, spec, x, mean)
    assert how == "exact" and b1 == pytest.approx(b2)
    assert all(c1[k] == pytest.approx(c2[k], abs=1e-12) for k in c1)
    b3, c3, how3 = shapley_contributions("logistic", w, spec, x, mean, n_permutations=64)
    assert how3 == "exact"


def test_fedavg_and_mlp_reports(fed, node_files, tmp_path):
    numeric = ["age", "spo2", "resp_rate", "crp", "diabetes"]
    lr = FedAvgLogisticRegression(strategy="fedadam", rounds=15, server_lr=0.1).fit(
        fed, "covid", TARGET, numeric, holdout=HOLDOUT
    )
    rep = build_report(
        fed, "covid", lr, TARGET, holdout=HOLDOUT, sensitive=("sex",), save_model_to=tmp_path / "lr"
    )
    r = rep.to_dict()
    assert r["explanations"]["coefficients"] is None
    assert len(r["explanations"]["permutation_importance"]["features"]) == len(numeric)
    art = load_model(tmp_path / "lr")
    assert art.cov_params() is not None  # inverse federated Fisher information
    pt = {"age": 70, "spo2": 90, "resp_rate": 24, "crp": 80, "diabetes": 0}
    assert predict(art, pt).interval is not None
    with pytest.raises(HealthfedError, match="exact_nonlinear_models"):
        FederatedMLPClassifier(hidden=4, rounds=5).fit(
            fed, "covid", TARGET, numeric, holdout=HOLDOUT
        )
    exact = federation(node_files, SitePolicy(exact_nonlinear_models=True))
    mlp = FederatedMLPClassifier(hidden=4, rounds=5).fit(
        exact, "covid", TARGET, numeric, holdout=HOLDOUT
    )
    rep2 = build_report(
        exact,
        "covid",
        mlp,
        TARGET,
        holdout=HOLDOUT,
        sensitive=("sex",),
        out_dir=tmp_path / "mlp",
        save_model_to=tmp_path / "mlp" / "model",
    )
    pred = predict(tmp_path / "mlp" / "model", pt)
    assert pred.interval is None and "exact" in pred.explanation_method
    assert pred.base_value + sum(pred.contributions.values()) == pytest.approx(
        pred.linear_predictor, abs=1e-9
    )
    assert (tmp_path / "mlp" / "report.html").exists() and rep2.to_dict()["model"]["kind"] == "mlp"
    df = pooled_rows(node_files).head(5)
    np.testing.assert_allclose(
        load_model(tmp_path / "mlp" / "model").predict_proba(df[numeric]),
        mlp.predict_proba(df[numeric])[:, 1],
        atol=1e-12,
    )
    exact.close()


def test_write_demo_report(fed, tmp_path):
    from healthfed.trust import write_demo_report

    path = write_demo_report(fed, tmp_path / "demo")
    assert path == (tmp_path / "demo" / "report.html").resolve() and path.exists()
    r = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert r["settings"]["synthetic"] and set(f["attribute"] for f in r["fairness"]["frames"]) == {
        "sex",
        "age_band",
        "vaccination",
    }
    assert load_model(tmp_path / "demo" / "model").hash == r["provenance"]["model_hash"]


def test_predict_names_features_out_of_bounds_and_why(saved):
    desc = load_model(saved / "model").description
    assert desc["reference"]["ranges"]["age"]["declared"] == [0.0, 110.0]
    assert desc["reference"]["ranges"]["spo2"]["declared"] == [50.0, 100.0]
    pred = predict(saved / "model", {**PATIENT, "age": 130, "spo2": 40}, threshold=0.3)
    text = " | ".join(pred.warnings)
    assert "'age' = 130 is outside its declared bounds [0, 110]" in text
    assert "'spo2' = 40 is outside its declared bounds [50, 100]" in text
    assert pred.out_of_distribution
    assert [(r["feature"], r["reason"]) for r in pred.ood_reasons] == [
        ("age", "outside declared bounds"),
        ("spo2", "outside declared bounds"),
    ]
    assert pred.to_dict()["ood_reasons"][0]["detail"].startswith("'age' = 130")
    assert "OUT OF DISTRIBUTION: age (outside declared bounds)" in pred.to_text()
    # inside the bounds, outside the central 99% seen in training
    low = desc["reference"]["ranges"]["resp_rate"]["high"] + 1
    pred = predict(saved / "model", {**PATIENT, "resp_rate": low})
    assert [(r["feature"], r["reason"]) for r in pred.ood_reasons] == [
        ("resp_rate", "outside training range")
    ]
    # in range: no reasons, not out of distribution
    pred = predict(saved / "model", PATIENT)
    assert pred.ood_reasons == [] and not pred.out_of_distribution


def test_predict_gives_no_class_when_most_inputs_are_imputed(saved):
    few = {k: PATIENT[k] for k in ("age", "sex", "vaccination")}  # 5 of 8 missing
    pred = predict(saved / "model", few, threshold=0.3)
    assert pred.classification is None
    assert pred.no_class_reason.startswith("5 of 8 inputs are missing and were imputed")
    assert "no class is given" in " | ".join(pred.warnings)
    assert "NO CLASS: 5 of 8 inputs" in pred.to_text()
    assert "NO CLASS: 5 of 8 inputs" in pred._repr_html_()
    assert pred.out_of_distribution
    assert {r["feature"] for r in pred.ood_reasons} == {
        "diabetes",
        "ckd",
        "spo2",
        "resp_rate",
        "crp",
    }
    assert all(r["reason"] == "missing" for r in pred.ood_reasons)
    half = {k: v for k, v in PATIENT.items() if k not in ("diabetes", "ckd", "spo2", "crp")}
    pred = predict(saved / "model", half, threshold=0.3)  # 4 of 8: still classified, flagged
    assert pred.classification is not None and pred.no_class_reason == ""
    assert pred.out_of_distribution


def test_results_have_html_for_notebooks(saved, fed, glm):
    from healthfed.compute.evaluation import evaluate_classifier
    from healthfed.trust.report import TrustReport

    rep = TrustReport(json.loads((saved / "r" / "report.json").read_text()))
    html = rep._repr_html_()
    assert "Pooled AUROC" in html and rep.data["provenance"]["model_hash"][:16] in html
    ev = evaluate_classifier(fed, "covid", glm, TARGET, holdout=HOLDOUT)
    html = ev._repr_html_()
    assert html.startswith("<table") and "AUROC (95% CI)" in html and "rows scored" in html
    assert "pooled" in ev.to_text() and "Brier" in ev.to_text()
    assert list(glm.summary_frame()["per"][:2]) == [
        "",
        "per SD (" + f"{glm.preprocessor_.spec_['columns'][0]['scale']:.3g})",
    ]


def test_evaluating_a_split_model_on_every_row_warns(fed, glm):
    from healthfed.compute.evaluation import evaluate_classifier

    assert glm.holdout_ == HOLDOUT
    with pytest.warns(UserWarning, match="the training rows included"):
        evaluate_classifier(fed, "covid", glm, TARGET)
