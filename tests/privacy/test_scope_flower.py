"""Scope and public time grids over a real Flower deployment, as in-process.

One SuperLink and two governed SuperNodes (loopback) serve the module; each node holds
two datasets (the synthetic COVID cohort and ``surv``, integer follow-up days) and the
hub grants three permits. Four rounds: ``age_band`` under a permit without ``age``
(refused, check ``variables``), the same under a permit with ``age`` (released),
Kaplan-Meier on a grid shifted by one day (refused: not a public grid), and on the
public grid (pooled curve from pooled counts, no count of 1..4). The in-process suite
(tests/privacy/test_scope_and_grids.py, test_utility.py) has the attacks' truth checks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import site_outcome  # noqa: E402
from test_scope_and_grids import (  # noqa: E402
    RESEARCHER,
    SITES,
    SURV_COLUMNS,
    UNIT,
    km_params,
    subgroup_params,
    surv_frame,
)

from healthfed.compute.survival import KM_COUNTS  # noqa: E402
from healthfed.compute.survival.combine import combine_km  # noqa: E402
from healthfed.compute.survival.node import NOT_PUBLIC_GRID  # noqa: E402
from healthfed.data.dataset import render_descriptor_toml  # noqa: E402
from healthfed.data.synth import write_covid_cohort  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.hub import Hub  # noqa: E402
from healthfed.node.runtime import Node, write_node_file  # noqa: E402

pytestmark = pytest.mark.flower


def _surv_descriptor(folder: Path, k: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    surv_frame(300, k).to_parquet(folder / f"surv_{k}.parquet", index=False)
    dataset = {"name": "surv", "file": f"surv_{k}.parquet", "format": "parquet", "id_column": "pid"}
    path = folder / f"surv_{k}.toml"
    path.write_text(render_descriptor_toml(dataset, SURV_COLUMNS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("scope_flower")
    written = write_covid_cohort(root / "data", sites=2, rows=300, seed=5)
    hub = Hub.init(root / "hub", name="test access body")
    covid = sorted(p for p in written if p.suffix == ".toml")
    node_files = [
        write_node_file(
            root / "nodes" / f"{d.stem}.toml",
            d.stem,
            [d, _surv_descriptor(root / "surv", k)],
            hub_keys=[hub.public_key_path],
        )
        for k, d in enumerate(covid, start=1)
    ]
    for p in node_files:
        hub.publish_node(Node.from_toml(p))

    def permit(dataset: str, variables: list[str], computation: str) -> dict[str, Any]:
        app = hub.apply(
            {
                "applicant": "Uni Example",
                "authorised_persons": [RESEARCHER],
                "purpose": "scientific_research",
                "purpose_description": "fairness audit and survival",
                "no_prohibited_use": True,
                "datasets": [dataset],
                "variables": variables,
                "computations": [computation],
            }
        )
        return hub.grant(app["id"], expires="2099-12-31")

    without_age = permit("covid", ["sex", "crp", "death_28d"], "subgroup_metrics")
    with_age = permit("covid", ["age", "sex", "crp", "death_28d"], "subgroup_metrics")
    surv = permit("surv", ["days", "dead"], KM_COUNTS)
    fed = Federation.flower(
        node_files,
        work_dir=root / "flower",
        permit=without_age,
        requester=RESEARCHER,
        timeout=60,
    )
    try:
        yield {"fed": fed, "with_age": with_age, "surv": surv}
    finally:
        fed.close()
        hub.close()


def test_age_band_needs_age_in_the_permit(world: dict[str, Any]) -> None:
    fed = world["fed"]
    out = site_outcome(fed, "subgroup_metrics", "covid", subgroup_params("age_band"))
    assert not out.replies
    assert sorted(out.refused) == SITES, (out.refused, out.errors, out.missing)
    for reason in out.refused.values():
        assert "'variables'" in reason and "'age'" in reason, reason
    ok = site_outcome(
        fed.with_permit(world["with_age"]), "subgroup_metrics", "covid", subgroup_params("age_band")
    )
    assert sorted(ok.replies) == SITES, ok.refused


def test_km_on_a_shifted_grid_is_refused_and_public_grid_pools(world: dict[str, Any]) -> None:
    fed = world["fed"].with_permit(world["surv"])
    out = site_outcome(fed, KM_COUNTS, "surv", km_params({"points": [31.0, 61.0, 91.0]}))
    assert not out.replies and sorted(out.refused) == SITES
    assert all(NOT_PUBLIC_GRID in r for r in out.refused.values()), out.refused
    out = site_outcome(fed, KM_COUNTS, "surv", km_params({"width": UNIT}))
    assert sorted(out.replies) == SITES, out.refused
    km = combine_km(out.replies, km_params({"width": UNIT})).frame
    pooled = km[km["group"] == "pooled"]
    assert int((pooled["events"] > 0).sum()) >= 10
    for col in ("at_risk", "events", "censored"):
        assert not km[col].between(1, 4).any()
    frames = pd.concat([surv_frame(300, k) for k in (1, 2)])
    assert pooled["at_risk"].iloc[0] == len(frames)
    assert np.all(np.diff(pooled["survival"].to_numpy()) <= 0)
