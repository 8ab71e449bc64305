"""The node-wide memory of released cohorts, per patient population (leak class 3), in-process.

Attacks (each one worked before: the memory was per permit and dataset name, covered
only ``where``/``holdout`` filters of some computations, and compared cohort sizes):

* "all" vs "all minus one" under two permits (and under the copy's name);
* three cohorts whose pairwise differences are all >= 5 but whose combination
  isolates one patient (two intervals overlapping at one value);
* four cohorts, no two or three of which isolate anyone, whose sum and differences
  give one patient's count and length of stay
  ({age in [30, 70.5], female} + {.., male} - {age in [30, 70], died} - {.., survived});
* ``count`` / ``crosstab`` before and after a patient's opt-out (gives the opted-out
  patient's sex and diabetes status);
* new rows between two releases of the same cohort.

The memory keeps the *patient set* of every exact release (keyed id hashes), so all
of these are refused, across permits, names and restarts.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _population_helpers import ask, grant, refused, truth, write_site  # noqa: E402
from _privacy_helpers import frame, make_node, request  # noqa: E402

from healthfed.data.dataset import NodeDataset  # noqa: E402
from healthfed.errors import ThresholdViolation  # noqa: E402
from healthfed.hub import Hub  # noqa: E402
from healthfed.node.runtime import Node  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy.differencing import CohortMemory, Released  # noqa: E402


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    h = Hub.init(tmp_path / "hub", name="test access body")
    yield h
    h.close()


def test_all_vs_all_minus_one_under_two_permits(tmp_path: Path, hub: Hub) -> None:
    node_file = write_site(tmp_path, hub=hub)
    data = truth(node_file)
    top = data["age"].max()
    below = float(data.loc[data["age"] < top, "age"].max())
    assert 1 <= int((data["age"] == top).sum()) < 5  # "all minus the oldest"
    p1, p2 = grant(hub, node_file), grant(hub, node_file)
    node = Node.from_toml(node_file)
    first = ask(node, "sum", {"variable": "crp"}, p1)
    assert first["status"] == "ok", first
    minus = {"variable": "crp", "where": {"age": [0.0, below]}}
    refused(ask(node, "sum", minus, p2), "differencing protection", "min_subset = 5")
    refused(ask(node, "sum", minus, p2, "covid_copy"), "differencing protection")
    # A restarted node remembers (the memory is SQLite in the node's state folder).
    refused(ask(Node.from_toml(node_file), "sum", minus, p2), "differencing protection")


@pytest.fixture
def fifty() -> pd.DataFrame:
    d = frame(400, 7)
    d.loc[d["age"] == 50.0, "age"] = 50.1
    d.loc[5, "age"] = 50.0  # the one patient aged exactly 50
    return d


def test_two_intervals_overlapping_at_one_value(tmp_path: Path, fifty: pd.DataFrame) -> None:
    node = make_node(tmp_path, "h1", fifty)
    low = node.handle(request("sum", {"variable": "los", "where": {"age": [0, 50]}}))
    high = node.handle(request("sum", {"variable": "los", "where": {"age": [50, 110]}}))
    assert low["status"] == high["status"] == "ok", (low, high)
    # Pairwise, "all" differs from each interval by far more than 5 patients, but
    # low + high - all would be patient 5's length of stay.
    reason = refused(node.handle(request("sum", {"variable": "los"})), "differencing protection")
    assert "overlapping cohorts" in reason
    # In another order the last of the three is refused.
    other = make_node(tmp_path, "h2", fifty)
    assert other.handle(request("sum", {"variable": "los"}))["status"] == "ok"
    assert other.handle(request("count", {}))["status"] == "ok"  # same patients: fine
    ok = other.handle(request("sum", {"variable": "los", "where": {"age": [0, 50]}}))
    assert ok["status"] == "ok"
    refused(
        other.handle(request("sum", {"variable": "los", "where": {"age": [50, 110]}})),
        "overlapping cohorts",
    )


@pytest.fixture
def lone() -> pd.DataFrame:
    """400 patients, exactly one of them aged in (70, 70.5]."""
    d = frame(400, 8)
    d.loc[(d["age"] > 70) & (d["age"] <= 70.5), "age"] = 70.6
    d.loc[9, "age"] = 70.3
    return d


FOUR_COHORTS = [
    ({"age": [30, 70.5], "sex": "female"}, +1),
    ({"age": [30, 70.5], "sex": "male"}, +1),
    ({"age": [30, 70], "death": 1}, -1),
    ({"age": [30, 70], "death": 0}, -1),
]


def _in(d: pd.DataFrame, where: dict[str, Any]) -> pd.Series:
    lo, hi = where["age"]
    keep = d["age"].between(lo, hi)
    for name, value in where.items():
        if name != "age":
            keep &= d[name] == value
    return keep


def test_four_cohorts_whose_combination_isolates_one_patient(
    tmp_path: Path, lone: pd.DataFrame
) -> None:
    # The attack, checked against the data: the four cohorts' (count, sum of los),
    # added and subtracted, are the patient aged 70.3 and their length of stay, and
    # ``sum`` releases exact counts and sums.
    victim = lone[(lone["age"] > 70) & (lone["age"] <= 70.5)]
    assert len(victim) == 1
    n = sum(sign * int(_in(lone, w).sum()) for w, sign in FOUR_COHORTS)
    los = sum(sign * float(lone.loc[_in(lone, w), "los"].sum()) for w, sign in FOUR_COHORTS)
    assert (n, los) == (1, float(victim["los"].iloc[0]))
    node = make_node(tmp_path, "h1", lone)
    replies = [
        node.handle(request("sum", {"variable": "los", "where": where}))
        for where, _ in FOUR_COHORTS
    ]
    assert [r["status"] for r in replies[:3]] == ["ok"] * 3, replies
    for reply, (where, _) in zip(replies[:3], FOUR_COHORTS, strict=False):
        assert reply["result"]["counts"]["n"] == [int(_in(lone, where).sum())]  # exact
    reason = refused(replies[3], "differencing protection", "a combination of several cohorts")
    assert "count of 1 patient(s)" in reason and "combined with 3 released earlier" in reason
    # In any order, whichever request completes the combination is refused, and the
    # same cohorts under a site with exact counts too (the memory is not the noise).
    policies = {"default": SitePolicy(), "exact": SitePolicy(count_perturbation="none")}
    for order in ([3, 2, 1, 0], [0, 2, 1, 3], [2, 0, 3, 1]):
        for label, policy in policies.items():
            again = make_node(tmp_path, f"h{label}{order}", lone, policy)
            statuses = [
                again.handle(request("sum", {"variable": "los", "where": FOUR_COHORTS[i][0]}))[
                    "status"
                ]
                for i in order
            ]
            assert statuses == ["ok", "ok", "ok", "refused"], (label, order, statuses)


def test_count_and_crosstab_before_and_after_an_opt_out(tmp_path: Path, hub: Hub) -> None:
    node_file = write_site(tmp_path, hub=hub)
    data = truth(node_file)
    victim = str(data["patient_id"].iloc[17])
    p1, p2 = grant(hub, node_file), grant(hub, node_file)
    node = Node.from_toml(node_file)
    table = {"row": "sex", "col": "diabetes"}
    assert ask(node, "crosstab", table, p1)["status"] == "ok"
    assert ask(node, "count", {}, p1)["status"] == "ok"
    assert node.optouts is not None
    node.optouts.add(victim)
    # The same tables without the victim would give their sex and diabetes by subtraction.
    for who in (Node.from_toml(node_file), node):
        refused(ask(who, "crosstab", table, p1), "differencing protection", "joined or left")
        refused(ask(who, "count", {}, p2), "differencing protection")
        refused(ask(who, "crosstab", table, p2, "covid_copy"), "differencing protection")
    # Once min_subset patients have left, the table describes a different cohort enough.
    for pid in data["patient_id"].iloc[20:24]:
        node.optouts.add(str(pid))
    assert ask(node, "crosstab", table, p2)["status"] == "ok"


def test_new_rows_between_two_releases(tmp_path: Path) -> None:
    d = frame(300, 9)
    node = make_node(tmp_path, "h1", d)
    assert node.handle(request("count", {}))["status"] == "ok"
    desc = node.datasets["cohort"].descriptor
    more = pd.concat([d, frame(2, 10, prefix="new")], ignore_index=True)
    node.datasets["cohort"] = NodeDataset.from_frame(more, desc)
    refused(node.handle(request("count", {})), "differencing protection", "joined or left")
    more = pd.concat([d, frame(6, 10, prefix="new")], ignore_index=True)
    node.datasets["cohort"] = NodeDataset.from_frame(more, desc)
    assert node.handle(request("count", {}))["status"] == "ok"


# --- the invariant -------------------------------------------------------------------------
MIN_SUBSET = 3
UNIVERSE = 12


def _bits(members: frozenset[int]) -> int:
    return sum(1 << i for i in members)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.frozensets(st.integers(0, UNIVERSE - 1)), min_size=1, max_size=12))
def test_remembered_cohorts_never_isolate_few(cohorts: list[frozenset[int]]) -> None:
    """Whatever cohorts a researcher asks for, the accepted ones isolate nobody.

    Checked by brute force: no two accepted cohorts differ by 1..min_subset-1
    patients, no three give such a set's count by inclusion-exclusion
    (``|A| + |C| - |U|`` when ``U`` is ``A`` union ``C``; ``|U| - |A|`` for nested ones),
    and no linear combination of any number of them is such a set's indicator.
    """
    memory = CohortMemory(None)
    accepted: list[frozenset[int]] = []
    for c in cohorts:
        r = Released(_bits(c), len(c), "{}")
        try:
            memory.check("pop", r, MIN_SUBSET)
        except ThresholdViolation:
            continue
        memory.remember("pop", r, "d", "-", "sum")
        accepted.append(c)
    small = range(1, MIN_SUBSET)
    for a in accepted:
        for b in accepted:
            assert len(a - b) not in small
            for u in accepted:
                if a != b and u == a | b and u not in (a, b):
                    assert len(a & b) not in small
    # Any number of cohorts: no set of 1..MIN_SUBSET-1 patients has an indicator in
    # the span of the accepted ones (its count would follow by adding and
    # subtracting), except a small accepted cohort itself (its own release's rules).
    if accepted:
        rows = np.array([[float(i in c) for i in range(UNIVERSE)] for c in accepted])
        rank = np.linalg.matrix_rank(rows)
        for size in small:
            for members in itertools.combinations(range(UNIVERSE), size):
                if frozenset(members) in accepted:
                    continue
                v = np.zeros(UNIVERSE)
                v[list(members)] = 1.0
                assert np.linalg.matrix_rank(np.vstack([rows, v])) > rank, (accepted, members)
    memory.close()
