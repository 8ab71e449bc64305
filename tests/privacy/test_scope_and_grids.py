"""Leak class 5 (scope) and the Kaplan-Meier part of class 3 (differencing), in-process.

Attacks first, each through the public API and compared with the data:

* **Scope.** A permit that grants ``sex``, ``crp`` and ``death_28d`` but not ``age``
  asks ``subgroup_metrics`` by the derived grouping ``age_band``: every site read
  ``age`` and released counts per age band. Now a derived variable counts as a use of
  its source (:data:`healthfed.compute.subgroups.DERIVED_VARIABLES`), so every site
  refuses with the permit check ``variables`` naming ``age``.
* **Shifted grids.** Kaplan-Meier on a 30-day grid and again on the grid shifted by
  one day (31, 61, ...): the cumulative deaths at 30 and 31 differ by the deaths on
  day 31 (often one patient). Now a grid must be a public one (multiples of the site's
  ``time_grid_unit`` from 0) and every KM release is derived from the one merged
  release on that unit grid, so no combination of public grids gives a count of 1..4.
  Risk-set sums (``cox_risk_sets``) accept nested widths ``2**j * unit`` only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import site_outcome  # noqa: E402

from healthfed.compute.preprocess import standardisation_spec  # noqa: E402
from healthfed.compute.subgroups import DERIVED_VARIABLES  # noqa: E402
from healthfed.compute.survival import KM_COUNTS, km_merge_steps  # noqa: E402
from healthfed.compute.survival.maths import bucket_index, grid_spec  # noqa: E402
from healthfed.compute.survival.node import NOT_PUBLIC_GRID  # noqa: E402
from healthfed.data.dataset import NodeDataset  # noqa: E402
from healthfed.data.descriptor import descriptor_from_dict  # noqa: E402
from healthfed.data.synth import write_covid_cohort  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.governance.permit import referenced_variables  # noqa: E402
from healthfed.hub import Hub  # noqa: E402
from healthfed.node.runtime import Node, write_node_file  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

RESEARCHER = "alice@uni.example"
SITES = ["hospital_1", "hospital_2"]
UNIT = SitePolicy().time_grid_unit  # 30: the default public unit


# --- scope: derived variables ----------------------------------------------------------------
def subgroup_params(attribute: str) -> dict[str, Any]:
    """A CRP-only model evaluated by ``attribute``: the request never names ``age``."""
    return {
        "model": {
            "model": "logistic",
            "preprocess": standardisation_spec(["crp"], centers=[60.0], scales=[50.0]),
            "weights": [[0.5], [-1.0]],
        },
        "target": "death_28d",
        "attributes": [attribute],
    }


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two governed hospitals, a hub, and two permits: without and with ``age``."""
    root = tmp_path_factory.mktemp("scope")
    written = write_covid_cohort(root / "data", sites=2, rows=300, seed=5)
    hub = Hub.init(root / "hub", name="test access body")
    node_files = [
        write_node_file(
            root / "nodes" / f"{d.stem}.toml", d.stem, [d], hub_keys=[hub.public_key_path]
        )
        for d in sorted(p for p in written if p.suffix == ".toml")
    ]
    for p in node_files:
        hub.publish_node(Node.from_toml(p))

    def permit(variables: list[str]) -> dict[str, Any]:
        app = hub.apply(
            {
                "applicant": "Uni Example",
                "authorised_persons": [RESEARCHER],
                "purpose": "scientific_research",
                "purpose_description": "fairness audit",
                "no_prohibited_use": True,
                "datasets": ["covid"],
                "variables": variables,
                "computations": ["subgroup_metrics"],
            }
        )
        return hub.grant(app["id"], expires="2099-12-31")

    data = pd.concat([pd.read_parquet(p) for p in written if p.suffix == ".parquet"])
    yield {
        "node_files": node_files,
        "without_age": permit(["sex", "crp", "death_28d"]),
        "with_age": permit(["age", "sex", "crp", "death_28d"]),
        "data": data,
    }
    hub.close()


def test_age_band_without_age_in_the_permit_is_refused(governed: dict[str, Any]) -> None:
    with Federation.from_node_files(
        governed["node_files"], permit=governed["without_age"], requester=RESEARCHER
    ) as fed:
        out = site_outcome(fed, "subgroup_metrics", "covid", subgroup_params("age_band"))
    # The attack's target: patients per age band, read from 'age'. Nothing comes back.
    assert not out.replies, "a site released age-band counts under a permit without 'age'"
    assert sorted(out.refused) == SITES
    for reason in out.refused.values():
        assert "'variables'" in reason and "'age'" in reason, reason


def test_age_band_with_age_in_the_permit_runs(governed: dict[str, Any]) -> None:
    with Federation.from_node_files(
        governed["node_files"], permit=governed["with_age"], requester=RESEARCHER
    ) as fed:
        out = site_outcome(fed, "subgroup_metrics", "covid", subgroup_params("age_band"))
    assert sorted(out.replies) == SITES, out.refused
    released = sum(
        v or 0 for r in out.replies.values() for v in r["tables"]["n.age_band"]["counts"][0]
    )
    assert 0 < released <= len(governed["data"])


def test_every_derived_variable_counts_its_sources() -> None:
    assert DERIVED_VARIABLES["age_band"] == ("age",)
    for name, sources in DERIVED_VARIABLES.items():
        found = referenced_variables({"attributes": [name]}, ["sex"], DERIVED_VARIABLES)
        assert set(sources) <= found, name
    # Without the map, the derived name is invisible to the check (what leaked).
    assert referenced_variables({"attributes": ["age_band"]}, ["age", "sex"]) == set()


# --- differencing: Kaplan-Meier on shifted grids ------------------------------------------------
SURV_COLUMNS = {
    "pid": {"type": "id"},
    "days": {"type": "integer"},
    "dead": {"type": "binary"},
}


def surv_frame(n: int, seed: int) -> pd.DataFrame:
    """Integer follow-up days (0..720) with ~0.4 exits a day: single deaths on many days."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": [f"s{seed}_{i}" for i in range(n)],
            "days": rng.integers(0, 721, n).astype(float),
            "dead": (rng.random(n) < 0.5).astype(int),
        }
    )


@pytest.fixture(scope="module")
def surv() -> Iterator[dict[str, Any]]:
    desc = descriptor_from_dict(
        {
            "dataset": {"name": "surv", "file": "x.parquet", "id_column": "pid"},
            "columns": SURV_COLUMNS,
        },
        base_dir=Path("."),
    )
    frames = {s: surv_frame(300, k) for k, s in enumerate(SITES, start=1)}
    nodes = [
        Node(name=s, datasets={"surv": NodeDataset.from_frame(frames[s], desc)}) for s in SITES
    ]
    with Federation.inprocess(nodes) as fed:
        yield {"fed": fed, "frames": frames}


def km_params(grid: Any) -> dict[str, Any]:
    return {"duration": "days", "event": "dead", "time_grid": grid}


def deaths_on(frame: pd.DataFrame, day: float) -> int:
    return int(((frame["days"] == day) & (frame["dead"] == 1)).sum())


def cumulative(reply: dict[str, Any]) -> dict[float, tuple[int, int, int]]:
    """Edge -> (deaths up to it, censorings up to it, still at risk after it) of one reply."""
    c = reply["counts"]
    times = np.asarray(reply["arrays"]["time"]["data"], dtype=float).ravel()
    total = c["at_risk"][0] if c["at_risk"] else None
    out, d_sum, c_sum = {}, 0, 0
    for t, n, d, cens in zip(times, c["at_risk"], c["events"], c["censored"], strict=True):
        d_sum, c_sum = d_sum + d, c_sum + cens
        out[float(t)] = (d_sum, c_sum, n - d - cens)
    assert total is None or all(v[0] + v[1] + v[2] == total for v in out.values())
    return out


def bare_km_edges(t: np.ndarray, e: np.ndarray, grid: dict[str, Any]) -> dict[float, int]:
    """Edge -> cumulative deaths, as a site merged on the requested grid before public grids."""
    spec = grid_spec(grid)
    idx = bucket_index(t, spec)
    n_steps = len(spec["points"]) if "points" in spec else int(idx.max()) + 1
    m = km_merge_steps(idx, e, n_steps, 5, 5)
    ends = np.asarray(m["ends"], dtype=np.int64)
    times = (ends + 1) * spec["width"] if "width" in spec else np.asarray(spec["points"])[ends]
    return dict(zip(times.tolist(), np.cumsum(m["events"]).tolist(), strict=True))


def test_unprotected_shifted_grids_would_give_single_deaths(surv: dict[str, Any]) -> None:
    """The attack against the bare merge (no public grid): it does recover single deaths."""
    frame = surv["frames"]["hospital_1"]
    t, e = frame["days"].to_numpy(float), frame["dead"].to_numpy(float)
    a = bare_km_edges(t, e, {"width": 30.0})
    b = bare_km_edges(t, e, {"points": [1.0 + 30 * k for k in range(25)]})  # shifted a day
    recovered = [(b[d] - a[d - 1], deaths_on(frame, d)) for d in b if d - 1 in a]
    assert recovered and all(got == truth for got, truth in recovered)
    assert any(1 <= got <= 4 for got, _ in recovered)  # single deaths on named days


def test_shifted_grid_is_refused_by_every_site(surv: dict[str, Any]) -> None:
    fed = surv["fed"]
    base = site_outcome(fed, KM_COUNTS, "surv", km_params({"width": 30.0}))
    assert sorted(base.replies) == SITES
    for grid in (
        {"points": [31.0, 61.0, 91.0]},  # shifted by one day
        {"width": 31.0},
        {"width": 1.0},
        {"points": [30.0, 31.0]},
    ):
        out = site_outcome(fed, KM_COUNTS, "surv", km_params(grid))
        assert not out.replies, grid
        assert sorted(out.refused) == SITES
        assert all(NOT_PUBLIC_GRID in r for r in out.refused.values()), out.refused


def test_cox_risk_sets_take_nested_public_widths_only(surv: dict[str, Any]) -> None:
    fed = surv["fed"]
    for grid in ({"width": 90.0}, {"width": 31.0}, {"points": [60.0, 120.0]}):
        params = {"duration": "days", "event": "dead", "features": ["dead"], "time_grid": grid}
        out = site_outcome(fed, "cox_risk_sets", "surv", params)
        assert not out.replies
        assert all(NOT_PUBLIC_GRID in r for r in out.refused.values()), out.refused


public_grids = st.one_of(
    st.integers(1, 12).map(lambda k: {"width": UNIT * k}),
    st.lists(st.integers(1, 25), min_size=1, max_size=12, unique=True).map(
        lambda ks: {"points": [UNIT * k for k in sorted(ks)]}
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(grids=st.lists(public_grids, min_size=2, max_size=5))
def test_no_combination_of_public_grids_isolates_a_few_patients(
    surv: dict[str, Any], grids: list[dict[str, Any]]
) -> None:
    """Whatever public grids are asked, every difference between released edges is 0 or >= 5."""
    fed = surv["fed"]
    known: dict[str, dict[float, tuple[int, int, int]]] = {s: {} for s in SITES}
    for grid in grids:
        out = site_outcome(fed, KM_COUNTS, "surv", km_params(grid), min_sites=1)
        for site, reply in out.replies.items():
            for edge, value in cumulative(reply).items():
                assert known[site].setdefault(edge, value) == value  # consistent releases
    for site, edges in known.items():
        frame = surv["frames"][site]
        rows = [(0.0, (0, 0, len(frame)))] if edges else []
        rows += sorted(edges.items())
        for (_, (d0, c0, _r0)), (t1, (d1, c1, r1)) in zip(rows, rows[1:], strict=False):
            for diff in (d1 - d0, c1 - c0):
                assert diff == 0 or diff >= 5, (site, t1, diff)
            assert r1 == 0 or r1 >= 5
            assert d1 == int(((frame["days"] <= t1) & (frame["dead"] == 1)).sum())
