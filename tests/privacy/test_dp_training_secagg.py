"""DP federated training (clipping + Gaussian noise, ε in the ledger) and membership
inference against it (secure aggregation: tests/privacy/test_secure_aggregation.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import frame, make_node, request  # noqa: E402

from healthfed.compute.fedavg import (  # noqa: E402
    FedAvgLogisticRegression,
    loss_and_grad,  # noqa: E402
    per_example_grads,
    round_dp,
)
from healthfed.compute.preprocess import standardisation_spec  # noqa: E402
from healthfed.errors import ThresholdViolation  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

SPEC = standardisation_spec(["age", "los"], centers=[55.0, 50.0], scales=[27.5, 25.0])


def _frame(n: int, seed: int, prefix: str):
    d = frame(n, seed, prefix)
    rng = np.random.default_rng(seed + 100)
    z = (d["age"] - 60) / 10
    d["death"] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return d


def test_per_example_gradients_sum_to_the_batch_gradient() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), (rng.random(30) < 0.5).astype(float)
    for kind, w in (
        ("logistic", [rng.normal(size=3), rng.normal(size=1)]),
        (
            "mlp",
            [rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=4), rng.normal(size=1)],
        ),
    ):
        G = per_example_grads(kind, w, X, y)
        _, grads = loss_and_grad(kind, w, X, y)
        flat = np.concatenate([g.ravel() for g in grads])
        np.testing.assert_allclose(G.mean(axis=0), flat, atol=1e-10)


def test_dp_training_is_accounted_in_the_ledger_and_learns(tmp_path) -> None:
    nodes = [make_node(tmp_path, f"h{i}", _frame(600, i, f"s{i}_")) for i in range(3)]
    with Federation.inprocess(nodes) as fed:
        model = FedAvgLogisticRegression(
            rounds=10, lr=1.0, local_epochs=2, dp={"epsilon": 3.0, "clip": 1.0}
        ).fit(fed, "cohort", "death", preprocess=SPEC)
    test = _frame(2000, 99, "t")
    auc = roc_auc_score(test["death"], model.predict_proba(test)[:, 1])
    assert auc > 0.75
    for n in nodes:
        spent = n.privacy_guard.ledger.spent("cohort", "-", 1e-6)
        assert spent.epsilon == pytest.approx(3.0, rel=1e-3)  # the whole fit's ε, per site
        assert spent.releases == 10
    per_round = round_dp({"epsilon": 3.0}, 10)["epsilon"]
    assert per_round < 1.0  # within the per-request cap
    # The site's budget then stops further training under the same permit.
    with Federation.inprocess(nodes) as fed:
        with pytest.raises(ThresholdViolation, match="privacy budget exceeded"):
            FedAvgLogisticRegression(rounds=30, dp={"epsilon": 5.0}).fit(
                fed, "cohort", "death", preprocess=SPEC
            )


def test_site_can_require_dp_training(tmp_path) -> None:
    node = make_node(tmp_path, "h1", _frame(300, 1, "a"), SitePolicy(dp_required=True))
    params = {"model": "logistic", "target": "death", "preprocess": SPEC, "weights": [[0, 0], [0]]}
    r = node.handle(request("local_train", params))
    assert r["status"] == "refused" and "dp_required" in r["reason"]
    r = node.handle(request("local_train", {**params, "dp": {"epsilon": 0.5}}))
    assert r["status"] == "ok"
    assert r["result"]["privacy"]["epsilon"] == pytest.approx(0.5, rel=1e-6)
    assert r["result"]["privacy"]["mechanism"] == "gaussian"
    r = node.handle(request("local_train", {**params, "dp": {"epsilon": 0.5, "level": "client"}}))
    assert r["status"] == "ok" and r["result"]["public"]["level"] == "client"
    r = node.handle(request("local_train", {**params, "dp": {"epsilon": 2.0}}))
    assert r["status"] == "refused" and "dp_epsilon_per_request" in r["reason"]


def test_membership_inference_fails_against_dp_model(tmp_path) -> None:
    """Loss-threshold attack on members vs non-members: AUC <= 0.55 with DP at ε = 5."""
    members = {f"h{i}": _frame(150, i, f"m{i}_") for i in range(3)}
    outsiders = {f"h{i}": _frame(150, 50 + i, f"o{i}_") for i in range(3)}
    nodes = [make_node(tmp_path, s, d, SitePolicy(max_param_ratio=1.0)) for s, d in members.items()]
    with Federation.inprocess(nodes) as fed:
        model = FedAvgLogisticRegression(
            rounds=30, lr=1.0, local_epochs=1, dp={"epsilon": 5.0}
        ).fit(fed, "cohort", "death", preprocess=SPEC)

    def losses(frames):
        out = []
        for d in frames.values():
            z = model.decision_function(d)
            y = d["death"].to_numpy(float)
            out.append(np.logaddexp(0, z) - y * z)
        return np.concatenate(out)

    lin, lout = losses(members), losses(outsiders)
    auc = roc_auc_score(np.r_[np.ones(len(lin)), np.zeros(len(lout))], -np.r_[lin, lout])
    assert auc <= 0.55
