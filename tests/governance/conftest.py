"""Fixtures for the governance tests: a hub, synthetic hospitals and governed nodes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _governance_helpers import RESEARCHER, ROWS, SITES, VARIABLES, forge, grant, last_record  # noqa: F401 - shared with the tests

from healthfed.data.synth import write_covid_cohort
from healthfed.hub import Hub
from healthfed.node.runtime import write_node_file
from healthfed.policy import SitePolicy


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two synthetic hospitals' descriptors (written once per session)."""
    out = tmp_path_factory.mktemp("cohort")
    written = write_covid_cohort(out, sites=SITES, rows=ROWS, seed=5)
    return sorted(p for p in written if p.suffix == ".toml")


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    h = Hub.init(tmp_path / "hub", name="test access body")
    yield h
    h.close()


@pytest.fixture
def make_nodes(tmp_path: Path, cohort: list[Path], hub: Hub) -> Callable[..., list[Path]]:
    """Write governed node files trusting ``hub`` (options go to write_node_file)."""

    def make(**kwargs: Any) -> list[Path]:
        kwargs.setdefault("hub_keys", [hub.public_key_path])
        # Exact counts: these tests check opt-outs, approvals and permits against the
        # data's own counts; cell key perturbation is tested in tests/privacy/.
        kwargs.setdefault("policy", SitePolicy(count_perturbation="none"))
        return [
            write_node_file(
                tmp_path / "nodes" / f"{d.stem}.toml", name=d.stem, descriptors=[d], **kwargs
            )
            for d in cohort
        ]

    return make


@pytest.fixture
def node_files(make_nodes: Callable[..., list[Path]]) -> list[Path]:
    return make_nodes()


@pytest.fixture
def permit(hub: Hub, node_files: list[Path]) -> dict[str, Any]:
    return grant(hub, node_files)
