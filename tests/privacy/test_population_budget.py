"""One privacy budget per patient population (leak class 4), in-process.

Attacks: a second permit gets a fresh DP budget on the same patients; the same file
registered as two datasets gets a fresh budget. Before the population ledger both
worked: the ledger was keyed by permit and dataset name. Now per-permit caps stay
(``dp_epsilon_per_permit`` on the population) and the population has a lifetime cap
(``dp_epsilon_per_dataset``, default 10) over every permit, dataset name and epoch.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _population_helpers import ask, grant, refused, write_site  # noqa: E402

from healthfed.data.dataset import NodeDataset  # noqa: E402
from healthfed.hub import Hub  # noqa: E402
from healthfed.node.runtime import Node  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy.guard import PrivacyGuard  # noqa: E402
from healthfed.privacy.ledger import Charge  # noqa: E402
from healthfed.privacy.population import PopulationRegistry  # noqa: E402

DP = {"epsilon": 1.0}


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    h = Hub.init(tmp_path / "hub", name="test access body")
    yield h
    h.close()


def _spend(node: Node, permit: Any, dataset: str) -> int:
    """Send dp_count until refused; the number of releases it got."""
    n = 0
    while ask(node, "dp_count", DP, permit, dataset)["status"] == "ok":
        n += 1
        assert n < 50
    return n


def test_second_permit_and_copied_file_share_the_population_budget(
    tmp_path: Path, hub: Hub
) -> None:
    node_file = write_site(tmp_path, hub=hub)
    node = Node.from_toml(node_file)
    p1, p2, p3 = grant(hub, node_file), grant(hub, node_file), grant(hub, node_file)
    # Permit 1 spends its per-permit budget on "covid" ...
    assert _spend(node, p1, "covid") == 5
    # ... and gets nothing more by naming the copy of the same file.
    refused(ask(node, "dp_count", DP, p1, "covid_copy"), "dp_epsilon_per_permit")
    # Permit 2 gets its own per-permit budget, but on the population's lifetime account.
    assert _spend(node, p2, "covid_copy") == 5
    # A third permit (and any further one) finds the lifetime cap spent: ε 10 in all.
    reason = refused(ask(node, "dp_count", DP, p3, "covid"), "dp_epsilon_per_dataset")
    assert "lifetime" in reason and "covid" in reason
    # It survives a restart of the node process.
    again = Node.from_toml(node_file)
    refused(ask(again, "dp_count", DP, p3, "covid_copy"), "dp_epsilon_per_dataset")
    guard = again.privacy_guard
    assert guard.population("covid_copy") == guard.population("covid") == "covid"
    assert guard.ledger.lifetime("covid").epsilon == pytest.approx(10.0)
    # Without the population the attacker would have had 5 per (permit, name): 30 here.
    frame = guard.budget()
    assert set(frame["population"]) == {"covid"}


def test_lifetime_cap_is_not_reset_with_a_permit_budget(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = []
    guard = PrivacyGuard(tmp_path / "state", SitePolicy(), audit=records.append)
    policy = SitePolicy(dp_epsilon_per_dataset=6.0)
    for _ in range(5):
        guard.ledger.charge("pop", "P1", Charge.pure(1.0), policy, "dp_count")
    guard.reset_budget("pop", "P1", "steward", "new year")
    guard.ledger.charge("pop", "P1", Charge.pure(1.0), policy, "dp_count")
    with pytest.raises(Exception, match="dp_epsilon_per_dataset"):
        guard.ledger.charge("pop", "P1", Charge.pure(1.0), policy, "dp_count")
    assert records and records[0]["action"] == "privacy_budget_reset"


def test_overlapping_ids_merge_populations_and_their_budgets(tmp_path: Path) -> None:
    """An extract registered first under its own name is merged with the full table."""
    import pandas as pd

    reg = PopulationRegistry(tmp_path / "p.sqlite")
    moved: list[tuple[str, str]] = []
    a, _ = reg.resolve("extract", ["h1", "h2"], None, lambda o, n: moved.append((o, n)))
    b, _ = reg.resolve("other", ["h9"], None, None)
    assert (a, b) == ("extract", "other")
    c, idx = reg.resolve("full", ["h1", "h2", "h3", "h9"], None, lambda o, n: moved.append((o, n)))
    assert c == "extract" and ("other", "extract") in moved and len(set(idx)) == 4
    assert reg.population_of("other") == "extract"
    # A descriptor may name the population of re-pseudonymised copies explicitly.
    d, _ = reg.resolve("repseudonymised", ["x1"], "extract", None)
    assert d == "extract"
    reg.close()
    again = PopulationRegistry(tmp_path / "p.sqlite")  # persistent
    assert again.population_of("full") == "extract"
    assert pd.Series(again.resolve("full", ["h1"], None, None)[1]).tolist() == [idx[0]]


def test_sandbox_copy_under_two_names_shares_the_budget(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _privacy_helpers import descriptor, frame

    df = frame(200, 3)
    desc = descriptor(tmp_path)
    a = NodeDataset.from_frame(df, desc)
    b = NodeDataset.from_frame(df.copy(), dataclasses.replace(desc, name="cohort2"))
    node = Node(name="s", datasets={"cohort": a, "cohort2": b}, policy=SitePolicy())

    def dp(ds: str) -> str:
        return node.handle(
            {"computation": "dp_count", "dataset": ds, "params": DP, "request_id": "r"}
        )["status"]

    assert [dp("cohort") for _ in range(3)] == ["ok"] * 3
    assert [dp("cohort2") for _ in range(3)] == ["ok", "ok", "refused"]  # 5 per permit "-"
