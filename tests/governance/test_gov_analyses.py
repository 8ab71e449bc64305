"""Permits name analyses (table1, glm, cox, ...); healthfed maps them to its computations.

Every analysis runs under a permit that grants only it (so the table in
``healthfed.governance.analyses`` is complete), a computation outside the granted
analyses is refused naming the analysis it belongs to, and a permit that lists
computation names (granted before analyses existed) still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _governance_helpers import RESEARCHER, forge, grant
from typer.testing import CliRunner

from healthfed import (
    FedAvgLogisticRegression,
    FederatedCoxPH,
    FederatedLogisticRegression,
    build_report,
    evaluate_classifier,
)
from healthfed.cli import app
from healthfed.compute import registered_computations
from healthfed.errors import HealthfedError, PermitError
from healthfed.federation.federation import Federation
from healthfed.governance.analyses import ANALYSES, allowed_computations, split_scope
from healthfed.hub import Hub

FEATURES = ["age", "sex", "crp"]
VARS = ["age", "sex", "crp", "ldh", "death_28d"]
HOLDOUT = {"fraction": 0.3, "seed": 1}


def _fed(node_files: list[Path], permit: dict[str, Any], hub: Hub) -> Federation:
    return Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER, hub=hub)


def _granted(hub: Hub, node_files: list[Path], *analyses: str) -> dict[str, Any]:
    return grant(hub, node_files, variables=VARS, computations=analyses)


def test_every_analysis_maps_to_registered_computations() -> None:
    registered = set(registered_computations())
    for a in ANALYSES.values():
        assert a.computations and set(a.computations) <= registered, a.name
    for name in ("table1", "glm", "cox", "fedavg", "evaluation", "trust_report"):
        assert name in ANALYSES
    assert split_scope(["glm", "table1", "count"], registered) == (["glm", "table1"], ["count"])
    with pytest.raises(ValueError, match="unknown analysis 'regression'"):
        split_scope(["regression"], registered)
    assert allowed_computations(["glm"], ["count"]) == {"glm_step", "preprocess_moments", "count"}
    assert allowed_computations(["from_a_newer_version"]) == set()


def test_a_permit_for_table1_and_glm_fits_the_glm_and_nothing_else(
    hub: Hub, node_files: list[Path]
) -> None:
    permit = _granted(hub, node_files, "table1", "glm")
    body = permit["permit"]
    assert body["analyses"] == ["glm", "table1"] and body["computations"] == []
    with _fed(node_files, permit, hub) as fed:
        assert fed.table1("covid", ["age", "sex"], by="death_28d").sites
        model = FederatedLogisticRegression().fit(fed, "covid", "death_28d", FEATURES)
        assert model.coef_.size >= len(FEATURES)
        with pytest.raises(PermitError) as info:
            evaluate_classifier(fed, "covid", model, "death_28d")
    msg = str(info.value)
    assert "evaluate_binary" in msg and "evaluation" in msg and "glm" in msg


def test_fedavg_evaluation_and_trust_report_each_run_under_their_analysis(
    hub: Hub, node_files: list[Path], tmp_path: Path
) -> None:
    with _fed(node_files, _granted(hub, node_files, "fedavg"), hub) as fed:
        fedavg = FedAvgLogisticRegression(rounds=2).fit(fed, "covid", "death_28d", ["age", "crp"])
    assert fedavg.coef_.size == 2
    glm_permit = grant(hub, node_files, variables=VARS, computations=("glm",))
    with _fed(node_files, glm_permit, hub) as fed:
        model = FederatedLogisticRegression().fit(
            fed, "covid", "death_28d", FEATURES, holdout=HOLDOUT
        )
    with _fed(node_files, _granted(hub, node_files, "evaluation"), hub) as fed:
        assert evaluate_classifier(fed, "covid", model, "death_28d").sites
    with _fed(node_files, _granted(hub, node_files, "trust_report"), hub) as fed:
        report = build_report(
            fed, "covid", model, "death_28d", sensitive=("sex",), holdout=HOLDOUT,
            n_repeats=1, out_dir=tmp_path / "report",
        )  # fmt: skip
    assert (tmp_path / "report" / "report.html").exists() and report is not None


def test_cox_runs_under_the_cox_analysis(hub: Hub, node_files: list[Path]) -> None:
    # ldh stands in for a duration: the test is about the permit's scope, not survival.
    with _fed(node_files, _granted(hub, node_files, "cox"), hub) as fed:
        model = FederatedCoxPH().fit(fed, "covid", "ldh", "death_28d", ["age"])
    assert model.coef_.shape == (1,)


def test_a_permit_listing_computation_names_still_works(hub: Hub, node_files: list[Path]) -> None:
    legacy = forge(hub._key, ["hospital_1", "hospital_2"], computations=["table1", "count"])
    assert "analyses" not in legacy["permit"]
    with Federation.from_node_files(node_files, permit=legacy, requester=RESEARCHER) as fed:
        assert fed.table1("covid", ["age"], by="death_28d").sites
        with pytest.raises(HealthfedError, match="part of the analysis descriptives"):
            fed.describe("covid", ["age"])


def test_cli_permit_apply_takes_analyses(hub: Hub, node_files: list[Path]) -> None:
    from healthfed.node.runtime import Node

    for p in node_files:
        hub.publish_node(Node.from_toml(p))
    hub_dir = str(hub.directory)
    hub.close()
    args = [
        "permit", "apply", "--hub", hub_dir, "--applicant", "Uni X", "--person", RESEARCHER,
        "--purpose", "scientific_research", "--description", "d", "--dataset", "covid",
        "--vars", "age,sex", "--declare-no-prohibited-use",
    ]  # fmt: skip
    runner = CliRunner()
    ok = runner.invoke(app, [*args, "--analysis", "table1,glm"])
    assert ok.exit_code == 0, ok.output
    app_id = ok.output.strip().splitlines()[-1]
    bad = runner.invoke(app, [*args, "--analysis", "regression"])
    assert bad.exit_code == 2 and "unknown analysis 'regression'" in bad.output
    with Hub.open(hub_dir) as h:
        assert h.application(app_id)["analyses"] == ["glm", "table1"]
