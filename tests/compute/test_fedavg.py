"""FedAvg / FedProx / FedAdam training across in-process nodes (numpy models, Flower rules)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from healthfed.compute import fedavg as F
from healthfed.compute.fedavg import FedAvgLogisticRegression, FederatedMLPClassifier
from healthfed.compute.preprocess import standardisation_spec
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.errors import TooFewSites
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy

FEATURES = ["x1", "x2", "x3", "x4"]
BETA = np.array([2.0, -1.5, 1.0, -1.0])
SCALE = np.array([10.0, 2.0, 1.0, 3.0])
CENTER = np.array([50.0, 10.0, 0.0, 100.0])


def make_site(n: int, shift: float, seed: int) -> pd.DataFrame:
    """Correlated features (so the first FedAvg step's direction is wrong) and site shift."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 4))
    u = np.column_stack(
        [
            e[:, 0] + shift,
            e[:, 1],
            0.7 * e[:, 0] + 0.7 * e[:, 2],
            0.6 * e[:, 1] + 0.8 * e[:, 3] - shift,
        ]
    )
    z = u @ BETA - 0.5 + shift
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    df = pd.DataFrame(u * SCALE + CENTER, columns=FEATURES)
    df["y"] = y
    df["pid"] = [f"p{seed}_{i}" for i in range(n)]
    return df


def descriptor(tmp_path):
    cols = {c: {"type": "numeric"} for c in FEATURES}
    cols["y"] = {"type": "binary"}
    cols["pid"] = {"type": "id"}
    raw = {
        "dataset": {"name": "synth", "file": "synth.parquet", "id_column": "pid"},
        "columns": cols,
    }
    return descriptor_from_dict(raw, base_dir=tmp_path)


def make_nodes(tmp_path, frames: dict[str, pd.DataFrame], policy: SitePolicy | None = None):
    from healthfed.data.dataset import NodeDataset

    desc = descriptor(tmp_path)
    return [
        Node(
            name=s,
            datasets={"synth": NodeDataset.from_frame(df, desc)},
            policy=policy or SitePolicy(),
        )
        for s, df in frames.items()
    ]


@pytest.fixture(scope="module")
def frames():
    return {"a": make_site(400, 0.0, 1), "b": make_site(500, 0.3, 2), "c": make_site(600, -0.3, 3)}


@pytest.fixture(scope="module")
def fed(tmp_path_factory, frames):
    f = Federation.inprocess(make_nodes(tmp_path_factory.mktemp("fed"), frames))
    yield f
    f.close()


def pooled_reference_auc(frames) -> float:
    pooled = pd.concat(frames.values())
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(pooled[FEATURES], pooled["y"])
    return roc_auc_score(pooled["y"], lr.predict_proba(pooled[FEATURES])[:, 1])


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (rng.random(40) < 0.4).astype(float)
    for kind in ("logistic", "mlp"):
        w = [a + rng.normal(scale=0.3, size=a.shape) for a in F.init_weights(kind, 3, 4, 1)]
        _, grads = F.loss_and_grad(kind, w, X, y)
        for i, g in enumerate(grads):
            num = np.zeros_like(g)
            for idx in np.ndindex(g.shape):
                wp = [a.copy() for a in w]
                wm = [a.copy() for a in w]
                wp[i][idx] += 1e-6
                wm[i][idx] -= 1e-6
                num[idx] = (
                    F.loss_and_grad(kind, wp, X, y)[0] - F.loss_and_grad(kind, wm, X, y)[0]
                ) / 2e-6
            np.testing.assert_allclose(g, num, atol=1e-7)


def test_server_rules_fedavg_is_weighted_mean_and_fedadam_moves_toward_it():
    g = [np.zeros(2), np.zeros(1)]
    deltas = [[np.ones(2), np.ones(1)], [3 * np.ones(2), -np.ones(1)]]
    avg = F.ServerOptimizer("fedavg").step(g, deltas, [10, 30])
    np.testing.assert_allclose(avg[0], [2.5, 2.5])
    np.testing.assert_allclose(avg[1], [-0.5])
    adam = F.ServerOptimizer("fedadam", server_lr=0.1).step(g, deltas, [10, 30])
    assert np.all(np.sign(adam[0]) == 1) and adam[1][0] < 0
    assert np.all(np.abs(adam[0]) <= 0.1 + 1e-12)  # Adam's step is bounded by eta


@pytest.mark.parametrize(
    "strategy,kwargs",
    [("fedavg", {}), ("fedprox", {"mu": 0.1}), ("fedadam", {"server_lr": 0.3})],
)
def test_logistic_reaches_pooled_auroc(fed, frames, strategy, kwargs):
    est = FedAvgLogisticRegression(strategy=strategy, rounds=30, lr=0.1, **kwargs)
    est.fit(fed, "synth", "y", FEATURES)
    pooled = pd.concat(frames.values())
    auc = roc_auc_score(pooled["y"], est.predict_proba(pooled)[:, 1])
    assert auc >= pooled_reference_auc(frames) - 0.01
    rounds = [h for h in est.history_ if h.get("step") != "feature_moments"]
    assert len(rounds) == 30 and rounds[-1]["sites"] == ["a", "b", "c"]
    assert rounds[-1]["loss"] < rounds[0]["loss"]
    assert est.coef_.shape == (1, 4) and est.predict(pooled).shape == (len(pooled),)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(clone.predict_proba(pooled), est.predict_proba(pooled))


def test_mlp_improves_loss_and_small_site_is_refused(tmp_path, frames):
    small = {**frames, "tiny": make_site(100, 0.0, 9)}
    exact = SitePolicy(exact_nonlinear_models=True)  # exact MLP updates: a stated risk
    with Federation.inprocess(make_nodes(tmp_path, small, exact)) as fed:
        est = FederatedMLPClassifier(hidden=8, rounds=15, lr=0.2, random_state=1)
        est.fit(fed, "synth", "y", FEATURES, progress=True)
    assert est.n_params_ == 4 * 8 + 8 + 8 + 1  # 49 > 0.33 * 100
    rounds = [h for h in est.history_ if h.get("step") != "feature_moments"]
    assert all(h["sites"] == ["a", "b", "c"] for h in rounds)
    assert all("tiny" in h["refused"] and "parameters" in h["refused"]["tiny"] for h in rounds)
    assert rounds[-1]["loss"] < rounds[0]["loss"] - 0.05
    assert est.sites_ == ["a", "b", "c"]
    assert len(est.coefs_) == 2 and est.coefs_[0].shape == (4, 8)
    pooled = pd.concat(frames.values())
    assert roc_auc_score(pooled["y"], est.predict_proba(pooled)[:, 1]) > 0.75


def test_bad_parameters_are_refused_by_name(fed):
    with pytest.raises(TooFewSites) as err:
        fed.round(
            "local_train",
            "synth",
            {
                "model": "logistic",
                "target": "y",
                "preprocess": standardisation_spec(["x1"]),
                "weights": [[0.0, 0.0], [0.0]],
            },
        )
    assert set(err.value.refusals) == {"a", "b", "c"}
    assert "weights" in err.value.refusals["a"]
    with pytest.raises(Exception, match="strategy"):
        FedAvgLogisticRegression(strategy="sgd").fit(fed, "synth", "y", FEATURES)
