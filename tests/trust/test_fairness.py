"""Subgroup metrics from federated aggregates equal fairlearn's MetricFrame on pooled rows."""

from __future__ import annotations

import numpy as np
import pytest
from _trust_helpers import FEATURES, HOLDOUT, TARGET, age_band, federation, pooled_rows
from fairlearn.metrics import (
    MetricFrame,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_negative_rate,
)
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from healthfed.compute.subgroups import SUBGROUP_METRICS
from healthfed.policy import SitePolicy
from healthfed.trust.fairness import SubgroupResult

T = 0.25


def thr(fn):
    return lambda y, p: fn(y, (np.asarray(p) >= T).astype(int))


def if_pos(fn):  # undefined (NaN) without positives, as healthfed reports it
    return lambda y, p: fn(y, p) if np.sum(y) > 0 else np.nan


def if_neg(fn):
    return lambda y, p: fn(y, p) if np.sum(1 - np.asarray(y)) > 0 else np.nan


METRICS = {
    "accuracy": thr(accuracy_score),
    "sensitivity": if_pos(thr(recall_score)),
    "specificity": if_neg(thr(true_negative_rate)),
    "selection_rate": thr(selection_rate),
    "false_positive_rate": if_neg(thr(false_positive_rate)),
    "false_negative_rate": if_pos(thr(false_negative_rate)),
    "ppv": thr(lambda y, p: precision_score(y, p, zero_division=np.nan)),
    "brier": lambda y, p: brier_score_loss(y, p),
    "mean_predicted": lambda y, p: float(np.mean(p)),
    "observed_rate": lambda y, p: float(np.mean(y)),
}


def subgroups(fed, model, attributes):
    params = {
        "model": model.to_model_spec(),
        "target": TARGET,
        "threshold": T,
        "attributes": ["all", *attributes],
        "holdout": {**HOLDOUT, "part": "test"},
    }
    out = fed.round(SUBGROUP_METRICS, "covid", params)
    return out, SubgroupResult.from_replies(out.replies, T)


@pytest.fixture(scope="module")
def open_fed(node_files):
    f = federation(node_files, SitePolicy(min_cell_count=1, min_subset=1))
    yield f
    f.close()


def test_metric_frame_equals_fairlearn_on_pooled_rows(open_fed, glm, node_files):
    _, res = subgroups(open_fed, glm, ["sex", "age_band", "vaccination"])
    df = pooled_rows(node_files)
    p = glm.predict_proba(df[FEATURES])[:, 1]
    y = df[TARGET].to_numpy()
    sens = {"sex": df["sex"], "age_band": age_band(df["age"]), "vaccination": df["vaccination"]}
    for attr, feature in sens.items():
        ours = res.metric_frame(attr)
        ref = MetricFrame(
            metrics=METRICS, y_true=y, y_pred=p, sensitive_features=feature.rename(attr)
        )
        cols = list(METRICS)
        order = [str(g) for g in ref.by_group.index]
        assert sorted(ours.by_group.index) == sorted(order)
        np.testing.assert_allclose(
            ours.by_group.loc[order, cols].to_numpy(float),
            ref.by_group[cols].to_numpy(float),
            rtol=1e-9,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            ours.overall[cols].to_numpy(float), ref.overall[cols].to_numpy(float), rtol=1e-9
        )
        np.testing.assert_allclose(
            ours.difference()[cols].to_numpy(float),
            ref.difference()[cols].to_numpy(float),
            rtol=1e-9,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            ours.ratio()[cols].to_numpy(float), ref.ratio()[cols].to_numpy(float), rtol=1e-9
        )
        np.testing.assert_allclose(
            ours.difference("to_overall")[cols].to_numpy(float),
            ref.difference(method="to_overall")[cols].to_numpy(float),
            rtol=1e-9,
            atol=1e-12,
        )
        assert ours.by_group["n"].sum() == len(df)
        # AUROC per group from merged score histograms: inside the released bounds, close to exact
        for g, row in ours._full.iterrows():
            mask = (feature == g).to_numpy()
            if len(set(y[mask])) < 2:
                continue
            exact = roc_auc_score(y[mask], p[mask])
            assert row["auroc_min"] - 1e-12 <= exact <= row["auroc_max"] + 1e-12
            # well inside the CI (the CI is what a reader acts on)
            assert (
                abs(row["auroc"] - exact)
                <= 0.15 * (row["auroc_ci_high"] - row["auroc_ci_low"]) + 1e-3
            )


def test_small_groups_are_suppressed_not_shown(fed, glm, node_files):
    out, res = subgroups(fed, glm, ["age_band"])
    released = []
    for reply in out.replies.values():
        for t in reply["tables"].values():
            released += [v for row in t["counts"] for v in row if v is not None]
    assert all(v == 0 or v >= 5 for v in released)
    counts = res.site_counts("age_band")
    assert any(v is None for per in counts.values() for v in per.values()), counts
    mf = res.metric_frame("age_band")
    # a pooled metric never rests on fewer than two sites
    for g, note in mf.notes.items():
        if g in mf.by_group.index and not np.isnan(mf.by_group.loc[g, "sensitivity"]):
            n_sites = len(note["sites"]) - len(note["excluded"].get("sensitivity", []))
            assert n_sites >= 2
    df = pooled_rows(node_files)
    # groups that nobody suppressed still equal the pooled computation
    bands = age_band(df["age"])
    p = glm.predict_proba(df[FEATURES])[:, 1]
    for g, note in mf.notes.items():
        if g in mf.by_group.index and not note["suppressed_at"] and not note["excluded"]:
            m = (bands == g).to_numpy()
            assert mf.by_group.loc[g, "brier"] == pytest.approx(
                brier_score_loss(df[TARGET][m], p[m]), rel=1e-9
            )
