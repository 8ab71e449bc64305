"""The one round path: model fits, evaluation and trust reports are released through the hub.

Before the restructure only ``Federation.run`` went through the hub; an estimator's
rounds skipped it, so a revoked permit still fitted models. Now every round is a
``Federation.round``: the hub re-checks the permit and records the release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _governance_helpers import RESEARCHER, grant

from healthfed import FederatedLogisticRegression, build_report, evaluate_classifier
from healthfed.compute import registered_computations
from healthfed.errors import PermitError
from healthfed.federation.federation import Federation
from healthfed.hub import Hub

FEATURES = ["age", "sex", "crp"]
HOLDOUT = {"fraction": 0.3, "seed": 1}


@pytest.fixture
def model_permit(hub: Hub, node_files: list[Path]) -> dict[str, Any]:
    return grant(hub, node_files, computations=tuple(registered_computations()))


def _fit(fed: Federation) -> FederatedLogisticRegression:
    return FederatedLogisticRegression().fit(fed, "covid", "death_28d", FEATURES, holdout=HOLDOUT)


def test_a_granted_fit_is_recorded_in_the_register(
    hub: Hub, node_files: list[Path], model_permit: dict[str, Any]
) -> None:
    with Federation.from_node_files(
        node_files, permit=model_permit, requester=RESEARCHER, hub=hub
    ) as fed:
        model = _fit(fed)
    assert model.coef_.size >= len(FEATURES)
    pid = model_permit["permit"]["permit_id"]
    released = [r for r in hub.releases() if r["permit_id"] == pid]
    computations = {r["computation"] for r in released}
    assert "glm_step" in computations  # every Newton round, not only Federation.run
    assert all(r["sites"] == ["hospital_1", "hospital_2"] for r in released)
    register = hub.transparency()[1].read_text()
    assert pid in register and "glm_step" in register


def test_a_revoked_permit_gets_no_fit_evaluation_or_report(
    hub: Hub, node_files: list[Path], model_permit: dict[str, Any], tmp_path: Path
) -> None:
    pid = model_permit["permit"]["permit_id"]
    with Federation.from_node_files(
        node_files, permit=model_permit, requester=RESEARCHER, hub=hub
    ) as fed:
        model = _fit(fed)
        before = len(hub.releases())
        hub.revoke(pid, "ethics approval withdrawn")
        with pytest.raises(PermitError, match="revoked"):
            _fit(fed)
        with pytest.raises(PermitError, match="revoked"):
            evaluate_classifier(fed, "covid", model, "death_28d", holdout=HOLDOUT)
        with pytest.raises(PermitError, match="revoked"):
            build_report(fed, "covid", model, "death_28d", out_dir=tmp_path / "report")
    assert len(hub.releases()) == before
    assert not (tmp_path / "report").exists()
