"""Federated evaluation: histogram AUROC, Brier, accuracy and Newton recalibration vs pooled."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score
from test_fedavg import CENTER, FEATURES, SCALE, make_nodes, make_site

from healthfed.compute import evaluation as E
from healthfed.compute.fedavg import sigmoid
from healthfed.compute.preprocess import standardisation_spec
from healthfed.errors import ThresholdViolation
from healthfed.federation.federation import Federation
from healthfed.policy import SitePolicy

# A fixed model (as a GLM would hand it over): coefficients on the standardised design.
SPEC = standardisation_spec(FEATURES, [float(m) for m in CENTER], [float(sd) for sd in SCALE])
MODEL = {"coef": [1.5, -1.0, 0.8, -0.6], "intercept": -0.1, "preprocess": SPEC}


def local_scores(df: pd.DataFrame) -> np.ndarray:
    X = np.column_stack([(df[c["name"]] - c["center"]) / c["scale"] for c in SPEC["columns"]])
    return X @ np.array(MODEL["coef"]) + MODEL["intercept"]


def newton_logit(z: np.ndarray, y: np.ndarray, offset: bool = False) -> np.ndarray:
    """Pooled maximum-likelihood fit of y ~ a + b z (or y ~ c + offset(z)) by plain Newton."""
    theta = np.array([0.0]) if offset else np.array([0.0, 1.0])
    X = np.ones((len(z), 1)) if offset else np.column_stack([np.ones_like(z), z])
    for _ in range(100):
        eta = X @ theta + (z if offset else 0.0)
        p = sigmoid(eta)
        step = np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]), X.T @ (y - p))
        theta = theta + step
        if np.max(np.abs(step)) < 1e-14:
            break
    return theta


@pytest.fixture(scope="module")
def frames():
    return {
        "a": make_site(400, 0.0, 11),
        "b": make_site(500, 0.4, 12),
        "c": make_site(700, -0.3, 13),
    }


def test_merge_bins_meets_cell_rule_and_keeps_threshold():
    rng = np.random.default_rng(0)
    pos = rng.poisson(0.3, size=200).astype(float)
    neg = rng.poisson(0.8, size=200).astype(float)
    edges, kept = E.merge_bins(pos, neg, 5, cut=100)
    assert kept and 100 in edges and edges[0] == 0 and edges[-1] == 200
    for c in (E.merged_counts(pos, edges), E.merged_counts(neg, edges)):
        assert all(v == 0 or v >= 5 for v in c)
        assert c.sum() in (pos.sum(), neg.sum())
    # 3 positives left of the threshold cannot stand alone: merged across it.
    pos2 = np.zeros(10)
    pos2[[1, 2, 3]] = 1
    pos2[8] = 6
    edges2, kept2 = E.merge_bins(pos2, np.full(10, 2.0), 5, cut=5)
    assert not kept2
    with pytest.raises(ThresholdViolation, match="min_cell_count"):
        E.merge_bins(np.array([1.0, 2, 0]), np.array([9.0, 9, 9]), 5)


def test_auroc_bounds_contain_exact_value_after_merging():
    rng = np.random.default_rng(3)
    y = (rng.random(800) < 0.3).astype(int)
    p = sigmoid(rng.normal(size=800) + y)
    exact = roc_auc_score(y, p)
    edges, cut = E.grid_edges(1000, 0.5)
    idx = E.bin_index(p, edges)
    pos = np.bincount(idx[y == 1], minlength=1000).astype(float)
    neg = np.bincount(idx[y == 0], minlength=1000).astype(float)
    for k in (1, 5, 20):
        g, _ = E.merge_bins(pos, neg, k, cut)
        lo, hi = E.auroc_bounds([(g, E.merged_counts(pos, g))], [(g, E.merged_counts(neg, g))])
        assert lo <= exact <= hi


def test_pooled_metrics_equal_pooled_computation(tmp_path, frames):
    # Sites that release exact small cells: no minimum count and no dominance rule
    # (dominance_k = 100 %), so the score groups stay one fine bin wide.
    policy = SitePolicy(min_cell_count=1, min_subset=1, dominance_k=100.0)
    with Federation.inprocess(make_nodes(tmp_path, frames, policy)) as fed:
        res = E.evaluate_classifier(fed, "synth", MODEL, "y", threshold=0.5, bins=1000)
    pooled = pd.concat(frames.values())
    y = pooled["y"].to_numpy()
    z = local_scores(pooled)
    p = sigmoid(z)
    m = res.overall
    tie_bound = (m["auroc_max"] - m["auroc_min"]) / 2  # half the within-bin pairs
    assert tie_bound < 2e-3
    assert abs(m["auroc"] - roc_auc_score(y, p)) <= min(tie_bound + 1e-12, 1e-3)
    assert m["auroc_min"] <= roc_auc_score(y, p) <= m["auroc_max"]
    assert m["auroc_ci_low"] < m["auroc"] < m["auroc_ci_high"]
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= 0.5), abs=1e-12)
    assert m["specificity"] == pytest.approx(np.mean(p[y == 0] < 0.5), abs=1e-12)
    a, b = newton_logit(z, y)
    (c,) = newton_logit(z, y, offset=True)
    assert m["recalibration_intercept"] == pytest.approx(a, abs=1e-6)
    assert m["calibration_slope"] == pytest.approx(b, abs=1e-6)
    assert m["calibration_intercept"] == pytest.approx(c, abs=1e-6)
    assert res.rounds <= 10 and all(res.converged.values())
    # per site
    for site, df in frames.items():
        zs = local_scores(df)
        row = res.metrics[site]
        assert abs(row["auroc"] - roc_auc_score(df["y"], sigmoid(zs))) < 2e-3
        assert row["calibration_slope"] == pytest.approx(
            newton_logit(zs, df["y"].to_numpy())[1], abs=1e-6
        )
    frame = res.to_frame()
    assert list(frame.index) == ["a", "b", "c", "pooled"]
    assert {"auroc", "auroc_ci_low", "auroc_ci_high", "brier", "calibration_slope"} <= set(frame)
    d = res.to_dict()
    assert d["metrics"]["pooled"]["n"] == len(pooled)


def test_default_policy_releases_no_small_counts(tmp_path, frames):
    with Federation.inprocess(make_nodes(tmp_path, frames)) as fed:
        out = fed.round(E.EVALUATE, "synth", {"model": MODEL, "target": "y", "bins": 1000})
        assert sorted(out.replies) == ["a", "b", "c"]
        for reply in out.replies.values():
            for values in reply["counts"].values():
                assert all(v == 0 or v >= 5 for v in values)
            assert len(reply["counts"]["hist_pos"]) < 1000  # bins were merged
        res = E.evaluate_classifier(fed, "synth", MODEL, "y")
    pooled = pd.concat(frames.values())
    exact = roc_auc_score(pooled["y"], sigmoid(local_scores(pooled)))
    m = res.overall
    assert m["auroc_min"] <= exact <= m["auroc_max"]
    assert abs(m["auroc"] - exact) < 0.01
    assert not math.isnan(m["accuracy"])  # the threshold stayed an edge at every site


def test_estimator_and_holdout_round_trip(tmp_path, frames):
    from healthfed.compute.fedavg import FedAvgLogisticRegression

    hold = {"fraction": 0.3, "seed": 7}
    with Federation.inprocess(make_nodes(tmp_path, frames)) as fed:
        est = FedAvgLogisticRegression(rounds=10).fit(fed, "synth", "y", FEATURES, holdout=hold)
        res = E.evaluate_classifier(fed, "synth", est, "y", holdout=hold)
        full = E.evaluate_classifier(fed, "synth", est, "y")
    test_n = res.overall["n"]
    train_n = est.history_[-1]["n_rows"]
    assert test_n + train_n == sum(len(f) for f in frames.values())
    assert 0.2 < test_n / full.overall["n"] < 0.4
    assert res.overall["auroc"] > 0.75


def test_mlp_spec_and_site_with_too_few_events_refuses(tmp_path, frames):
    from healthfed.compute.fedavg import init_weights, logits

    weights = init_weights("mlp", 4, 3, seed=5)
    mlp = {
        "model": "mlp",
        "hidden": 3,
        "weights": [w.tolist() for w in weights],
        "preprocess": SPEC,
    }
    rare = make_site(80, 0.0, 21)
    rare["y"] = 0
    rare.loc[rare.index[:3], "y"] = 1  # 3 events < min_cell_count 5
    with Federation.inprocess(make_nodes(tmp_path / "default", frames)) as fed:
        with pytest.raises(ThresholdViolation, match="exact_nonlinear_models"):
            E.evaluate_classifier(fed, "synth", mlp, "y")
    exact = SitePolicy(exact_nonlinear_models=True)
    with Federation.inprocess(make_nodes(tmp_path, {**frames, "rare": rare}, exact)) as fed:
        res = E.evaluate_classifier(fed, "synth", mlp, "y")
    assert "rare" in res.refused and "min_cell_count" in res.refused["rare"]
    assert res.sites == ["a", "b", "c"]
    pooled = pd.concat(frames.values())
    X = (pooled[FEATURES].to_numpy() - CENTER) / SCALE
    exact = roc_auc_score(pooled["y"], sigmoid(logits("mlp", weights, X)))
    assert res.overall["auroc_min"] <= exact <= res.overall["auroc_max"]
