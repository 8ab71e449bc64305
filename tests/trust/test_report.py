"""The trust report: numbers equal pooled computations; the HTML renders in headless Chromium."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _chromium import chromium_binary, render_page
from _trust_helpers import FEATURES, HOLDOUT, TARGET, pooled_rows
from sklearn.metrics import accuracy_score, brier_score_loss, recall_score, roc_auc_score

from healthfed.node.runtime import Node
from healthfed.trust import build_report, load_model

T = 0.2


def newton(z: np.ndarray, y: np.ndarray, offset: bool) -> np.ndarray:
    X = np.ones((len(z), 1)) if offset else np.column_stack([np.ones_like(z), z])
    th = np.zeros(X.shape[1]) if offset else np.array([0.0, 1.0])
    for _ in range(100):
        p = 1 / (1 + np.exp(-(X @ th + (z if offset else 0))))
        step = np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]), X.T @ (y - p))
        th = th + step
        if np.max(np.abs(step)) < 1e-13:
            break
    return th


@pytest.fixture(scope="module")
def report(fed, glm, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rep = build_report(
        fed,
        "covid",
        glm,
        TARGET,
        sensitive=("sex", "age_band"),
        threshold=T,
        holdout=HOLDOUT,
        purpose="test",
        out_dir=out,
        save_model_to=out / "model",
    )
    return rep, out


def test_report_numbers_equal_pooled(report, glm, node_files):
    rep, out = report
    r = json.loads((out / "report.json").read_text())
    assert r == rep.to_dict()
    df = pooled_rows(node_files)
    p = glm.predict_proba(df[FEATURES])[:, 1]
    y = df[TARGET].to_numpy()
    z = np.log(p / (1 - p))
    for row, mask in [("pooled", np.ones(len(df), bool))] + [
        (s, (df["site"] == s).to_numpy()) for s in r["performance"]["sites"]
    ]:
        m = r["performance"]["pooled"] if row == "pooled" else r["performance"]["by_site"][row]
        yy, pp, zz = y[mask], p[mask], z[mask]
        assert m["n"] == len(yy) and m["n_pos"] == yy.sum()
        exact = roc_auc_score(yy, pp)
        assert m["auroc_min"] - 1e-12 <= exact <= m["auroc_max"] + 1e-12
        assert abs(m["auroc"] - exact) < 0.1 * (m["auroc_ci_high"] - m["auroc_ci_low"])
        assert m["accuracy"] == pytest.approx(accuracy_score(yy, pp >= T), abs=1e-12)
        assert m["sensitivity"] == pytest.approx(recall_score(yy, pp >= T), abs=1e-12)
        assert m["specificity"] == pytest.approx(recall_score(1 - yy, pp < T), abs=1e-12)
        assert m["brier"] == pytest.approx(brier_score_loss(yy, pp), rel=1e-9)
        assert m["brier_ci_low"] < m["brier"] < m["brier_ci_high"]
        a_b = newton(zz, yy, offset=False)
        assert m["calibration_slope"] == pytest.approx(a_b[1], abs=1e-6)
        assert m["calibration_intercept"] == pytest.approx(newton(zz, yy, offset=True)[0], abs=1e-6)
    # provenance: content hashes are the nodes' own; sizes rounded
    for path in node_files:
        node = Node.from_toml(path)
        site = r["provenance"]["sites"][node.name]
        assert site["content_hash"] == node.dataset("covid").content_hash()
        assert site["n_rounded"] == 1500
    # training data description equals the training rows
    train = pooled_rows(node_files, part="train")
    assert r["data"]["training_rows"] == len(train)
    # A site whose design has two-way cells of 1..4 patients (hospital_3 here: e.g. 4 fully
    # vaccinated men) declines the exact GLM under the node's release invariant, whose
    # X'X released those cells before; the model's rows are the contributing sites'.
    assert glm.nobs_ == int(train["site"].isin(glm.sites_).sum())
    assert r["data"]["training_events"] == int(train[TARGET].sum())
    assert r["data"]["missing"]["spo2"] == int(train["spo2"].isna().sum())
    # coefficients are the GLM's
    coef = {c["term"]: c for c in r["explanations"]["coefficients"]}
    assert coef["age"]["coef"] == pytest.approx(float(glm.summary_frame().loc["age", "coef"]))
    # the local explanation adds up
    loc = r["explanations"]["local"]
    assert loc["base_value"] + sum(loc["contributions"].values()) == pytest.approx(
        math.log(loc["probability"] / (1 - loc["probability"])), abs=1e-9
    )
    # sections and checklists
    assert {s["section"] for s in r["model_card"]} >= {"Model details", "Ethical considerations"}
    statuses = {i["status"] for i in r["tripod_ai"]}
    assert statuses >= {"filled", "authors"}
    assert any(f["met"] == "yes" for f in r["future_ai"])
    frames = {f["attribute"]: f for f in r["fairness"]["frames"]}
    assert set(frames) == {"sex", "age_band"}
    assert set(frames["sex"]["by_group"]) == {"female", "male"}


def test_model_artefact_is_the_reported_model(report, glm, node_files):
    rep, out = report
    art = load_model(out / "model")
    assert art.hash == rep.to_dict()["provenance"]["model_hash"]
    assert art.evaluation["provenance"]["model_hash"] == art.hash
    df = pooled_rows(node_files).head(50)
    np.testing.assert_allclose(
        art.predict_proba(df[FEATURES]), glm.predict_proba(df[FEATURES])[:, 1], atol=1e-12
    )


def test_html_is_self_contained_and_shows_suppression(report):
    _, out = report
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<link rel='stylesheet'" not in html
    assert html.count("data:image/png;base64,") >= 8
    assert "suppressed" in html
    r = json.loads((out / "report.json").read_text())
    assert r["provenance"]["model_hash"] in html
    for s in r["performance"]["sites"]:
        assert s in html
    assert f"{r['performance']['pooled']['auroc']:.3f}" in html


def test_html_renders_in_headless_chromium(report, tmp_path):
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (make test installs it: apt-get install chromium)")
    _, out = report
    shot = tmp_path / "report.png"
    page = render_page(out / "report.html", shot, width=1280, height=2000)
    assert page["errors"] == [], page["errors"]
    assert page["marker"] == "ok" and not page["title"].startswith("JS-ERROR")
    assert page["images"] >= 8 and page["broken"] == 0
    assert page["resources"] == []  # nothing fetched
    assert page["h2"][:2] == ["1. Provenance", "2. Performance"] and len(page["h2"]) == 7
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    print(f"screenshot: {shot}")
