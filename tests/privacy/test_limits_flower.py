"""Denial of service over a real Flower deployment: the crash requests are refused, nodes live.

Before the node-side limits, ``feature_moments`` over 5,000 copies of one column, sent
once through the federation, reached every node and each spent minutes and tens of GB
planning one DuckDB query until its process died. Here one SuperLink and two SuperNodes
(loopback, TLS; file-backed synthetic COVID cohorts as hospitals hold them, default site
policy) get the old crash requests -- long column lists, a deeply nested request, a
network too wide -- each refused at both sites naming the limit and its policy field,
and then an ordinary request that both sites still answer. Five rounds.
The in-process suite (tests/privacy/test_limits.py) covers every limit.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import site_outcome  # noqa: E402

from healthfed.compute.preprocess import standardisation_spec  # noqa: E402
from healthfed.data.synth import write_covid_cohort  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import write_node_file  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

pytestmark = pytest.mark.flower

DATASET = "covid"
SITE_NAMES = ["hospital_1", "hospital_2"]
N_COLUMNS = 5_000
DEFAULT = SitePolicy()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("limits_flower")
    written = write_covid_cohort(root / "data", sites=2, rows=300, seed=5)
    node_files = [
        write_node_file(root / "nodes" / f"{d.stem}.toml", d.stem, [d])
        for d in sorted(p for p in written if p.suffix == ".toml")
    ]
    with Federation.flower(node_files, work_dir=root / "flower", timeout=60) as federation:
        yield federation


def refused_everywhere(fed: Federation, computation: str, params: dict[str, Any], *needles: str):
    out = site_outcome(fed, computation, DATASET, params)
    assert not out.replies, out.replies
    assert sorted(out.refused) == SITE_NAMES, (out.refused, out.errors, out.missing)
    for site, reason in out.refused.items():
        for needle in needles:
            assert needle in reason, (site, reason)


def test_long_column_lists_are_refused_at_every_site(fed: Federation) -> None:
    refused_everywhere(
        fed,
        "feature_moments",
        {"columns": ["age"] * N_COLUMNS},
        f"'columns' lists {N_COLUMNS} items",
        f"max_request_list = {DEFAULT.max_request_list}",
        "site policy field 'max_request_list'",
    )
    refused_everywhere(
        fed, "table1", {"variables": ["age"] * N_COLUMNS}, "site policy field 'max_request_list'"
    )


def test_a_deeply_nested_request_is_refused(fed: Federation) -> None:
    deep: Any = "age"
    for _ in range(200):
        deep = {"x": deep}
    refused_everywhere(
        fed, "describe", {"variables": deep}, "site policy field 'max_request_depth'"
    )


def test_a_network_too_wide_is_refused(fed: Federation) -> None:
    spec = standardisation_spec(["age"], centers=[60.0], scales=[15.0])
    params = {"model": "mlp", "hidden": 100_000, "target": "death_28d", "preprocess": spec}
    refused_everywhere(
        fed, "local_train", params, "100000 hidden units", "site policy field 'max_hidden_units'"
    )


def test_every_node_still_answers_afterwards(fed: Federation) -> None:
    out = site_outcome(fed, "feature_moments", DATASET, {"columns": ["age", "spo2"]})
    assert sorted(out.replies) == SITE_NAMES, (out.refused, out.errors, out.missing)
    for reply in out.replies.values():
        assert reply["n_rows"] > 0
