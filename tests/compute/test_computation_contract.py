"""One contract over every registered computation (scikit-learn's ``check_estimator`` idea).

The requests are the ones healthfed's own estimators, evaluation, report and
statistics send (recorded at the nodes while they run), so the contract covers
exactly what researchers can reach. For each computation:

* ``validate`` (through the node) refuses an unknown parameter, naming it;
* ``run`` returns only a release type the node's disclosure filter knows
  (``Release``, ``DPRelease``, ``ModelStatistics``), and the node's reply is what
  the filter made of it;
* ``combine`` tolerates a site that declined (it pools the remaining sites).

A computation registered without being reachable here fails the test: add the
call that reaches it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import healthfed.compute  # noqa: F401 - registers the computations
from healthfed import (
    FedAvgLogisticRegression,
    FederatedCoxPH,
    FederatedLogisticRegression,
    build_report,
    evaluate_classifier,
    kaplan_meier,
)
from healthfed.compute import get_computation, registered_computations
from healthfed.compute.survival import concordance_index
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy
from healthfed.privacy import guard
from healthfed.privacy.disclosure import Release
from healthfed.privacy.dp import DPRelease
from healthfed.privacy.model_release import ModelStatistics

SITES = ("north", "centre", "south")
FEATURES = ["age", "sex", "crp", "diabetes"]
HOLDOUT = {"fraction": 0.3, "seed": 2}
UNKNOWN = "zz_not_a_parameter"


def _frame(seed: int, n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(62, 12, n).clip(20, 100)
    crp = rng.gamma(2.0, 30.0, n).clip(0, 400)
    sex = rng.choice(["F", "M"], n)
    diabetes = (rng.random(n) < 0.3).astype(int)
    eta = -4 + 0.05 * (age - 60) + 0.01 * crp + 0.4 * diabetes
    death = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    t_event = rng.exponential(200 / np.exp(0.6 * diabetes + 0.02 * (age - 60)))
    t_cens = rng.uniform(0, 400, n)
    return pd.DataFrame(
        {
            "pid": [f"{seed}-{i}" for i in range(n)],
            "age": age,
            "sex": sex,
            "crp": crp,
            "diabetes": diabetes,
            "death_28d": death,
            "time": np.minimum(t_event, t_cens).round(),
            "dead": (t_event <= t_cens).astype(int),
        }
    )


def _descriptor() -> Any:
    cols = {
        "pid": {"type": "id"},
        "age": {"type": "numeric", "bounds": [0, 110], "unit": "years"},
        "sex": {"type": "categorical", "levels": ["F", "M"]},
        "crp": {"type": "numeric", "bounds": [0, 500], "unit": "mg/L"},
        "diabetes": {"type": "binary"},
        "death_28d": {"type": "binary"},
        "time": {"type": "numeric", "bounds": [0, 1000], "unit": "days"},
        "dead": {"type": "binary"},
    }
    raw = {"dataset": {"name": "cohort", "file": "x.parquet", "id_column": "pid"}, "columns": cols}
    return descriptor_from_dict(raw, base_dir=Path("."))


class RecordingNode(Node):
    """A node that keeps the first request it answered for each computation."""

    def handle(self, request: dict[str, Any], *, secure: bool = False) -> dict[str, Any]:
        reply = super().handle(request, secure=secure)
        if reply.get("status") == "ok":
            RECORDED.setdefault(request["computation"], copy.deepcopy(request))
        return reply


RECORDED: dict[str, dict[str, Any]] = {}


def _nodes() -> list[Node]:
    desc = _descriptor()
    policy = SitePolicy(dp_epsilon_per_permit=50.0, dp_epsilon_per_request=1.0)
    return [
        RecordingNode(
            name=site, datasets={"cohort": NodeDataset.from_frame(_frame(i), desc)}, policy=policy
        )
        for i, site in enumerate(SITES)
    ]


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    """Run every researcher-facing path once; returns the nodes and the recorded requests."""
    RECORDED.clear()
    nodes = _nodes()
    with Federation.inprocess(nodes) as fed:
        fed.table1("cohort", ["age", "sex", "crp"], by="death_28d")
        fed.describe("cohort", ["age", "crp"])
        fed.crosstab("cohort", "sex", "diabetes")
        fed.count("cohort", sex="F")
        fed.run("sum", "cohort", {"variable": "age"})
        for name, extra in (
            ("dp_count", {}),
            ("dp_sum", {"variable": "age"}),
            ("dp_mean", {"variable": "age"}),
            ("dp_histogram", {"variable": "sex"}),
            ("dp_quantiles", {"variable": "age", "quantiles": [0.5]}),
        ):
            fed.run(name, "cohort", {**extra, "epsilon": 0.5})
        lr = FederatedLogisticRegression().fit(
            fed, "cohort", "death_28d", FEATURES, holdout=HOLDOUT
        )
        evaluate_classifier(fed, "cohort", lr, "death_28d", holdout=HOLDOUT)
        build_report(fed, "cohort", lr, "death_28d", holdout=HOLDOUT, n_repeats=1)
        FedAvgLogisticRegression(rounds=1).fit(fed, "cohort", "death_28d", ["age", "crp"])
        cox = FederatedCoxPH().fit(fed, "cohort", "time", "dead", ["age", "diabetes"])
        FederatedCoxPH(stratify_by_site=False, time_grid=30.0).fit(
            fed, "cohort", "time", "dead", ["age", "diabetes"]
        )
        concordance_index(fed, "cohort", "time", "dead", ["age", "diabetes"], cox.coef_)
        kaplan_meier(fed, "cohort", "time", "dead")
    return {"nodes": nodes, "requests": dict(RECORDED)}


def test_every_registered_computation_is_reached(recorded: dict[str, Any]) -> None:
    assert sorted(recorded["requests"]) == registered_computations()


@pytest.mark.parametrize("name", registered_computations())
def test_validate_refuses_an_unknown_parameter(recorded: dict[str, Any], name: str) -> None:
    request = copy.deepcopy(recorded["requests"][name])
    request["params"][UNKNOWN] = 1
    for node in recorded["nodes"]:
        reply = Node.handle(node, request)
        assert reply["status"] == "refused", (name, reply)
        assert UNKNOWN in reply["reason"]


@pytest.mark.parametrize("name", registered_computations())
def test_run_returns_a_release_and_the_node_replies_the_filtered_one(
    recorded: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    filtered: list[Any] = []
    original = guard.disclose_any

    def spy(release: Any, policy: SitePolicy) -> dict[str, Any]:
        seen.append(release)
        out = original(release, policy)
        filtered.append(out)
        return out

    # The node's one filter, wherever the node module imported it from.
    for module in list(sys.modules.values()):
        if getattr(module, "disclose_any", None) is original:
            monkeypatch.setattr(module, "disclose_any", spy)
    node = recorded["nodes"][0]
    reply = Node.handle(node, copy.deepcopy(recorded["requests"][name]))
    assert reply["status"] == "ok", reply
    assert len(seen) == 1 and isinstance(seen[0], Release | DPRelease | ModelStatistics)
    assert reply["result"] == filtered[0]


@pytest.mark.parametrize("name", registered_computations())
def test_combine_tolerates_a_declining_site(recorded: dict[str, Any], name: str) -> None:
    request = recorded["requests"][name]
    replies = {}
    for node in recorded["nodes"][1:]:  # the first site declined
        reply = Node.handle(node, copy.deepcopy(request))
        assert reply["status"] == "ok", reply
        replies[node.name] = reply["result"]
    result = get_computation(name).combine(replies, request["params"])
    assert result is not None
