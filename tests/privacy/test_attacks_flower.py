"""The attack suite over a real Flower deployment: every attack fails closed, as in-process.

One SuperLink and two SuperNodes (loopback, TLS) serve all tests of this module; the
privacy guard, the DP ledger and the differencing memory live in each node executor
process (a sandbox node keeps them in memory for the life of that process), so state
carries from one round to the next exactly as on a node driven in-process. The tests
run in file order and share that state: the DP and differencing tests rely on it.
Seven rounds in all (a round costs ~5-6 s); "more levels than allowed" stays in the
in-process suite (tests/privacy/test_attacks.py) to keep this module under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from healthfed.data.synth import write_covid_cohort
from healthfed.errors import ThresholdViolation
from healthfed.federation.federation import Federation
from healthfed.node.policy import SitePolicy
from healthfed.node.runtime import write_node_file

pytestmark = pytest.mark.flower

SITES, ROWS, SEED = 2, 300, 5
DATASET = "covid"
SITE_NAMES = ["hospital_1", "hospital_2"]
# Defaults except a small DP budget, so it runs out within two rounds.
POLICY = SitePolicy(dp_epsilon_per_request=1.0, dp_epsilon_per_permit=1.5)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("attacks_flower")
    written = write_covid_cohort(root / "data", sites=SITES, rows=ROWS, seed=SEED)
    descriptors = sorted(p for p in written if p.suffix == ".toml")
    node_files = [
        write_node_file(root / "nodes" / f"{d.stem}.toml", d.stem, [d], policy=POLICY)
        for d in descriptors
    ]
    data = {p.stem: pd.read_parquet(p) for p in written if p.suffix == ".parquet"}
    return {"root": root, "node_files": node_files, "data": data}


@pytest.fixture(scope="module")
def fed(frames: dict[str, Any]) -> Iterator[Federation]:
    with Federation.flower(
        frames["node_files"], work_dir=frames["root"] / "flower", timeout=60
    ) as federation:
        yield federation


def all_refused(fed: Federation, computation: str, params: dict[str, Any], *needles: str) -> None:
    out = fed.query(computation, DATASET, params)
    assert not out.replies, out.replies
    assert sorted(out.refused) == SITE_NAMES, (out.refused, out.errors, out.missing)
    for site, reason in out.refused.items():
        for n in needles:
            assert n in reason, (site, reason)


# --- 1. an identifier as a variable --------------------------------------------------------
def test_id_column_as_a_variable_is_refused(fed: Federation) -> None:
    with pytest.raises(ThresholdViolation) as err:
        fed.table1(DATASET, ["patient_id"])
    for site in SITE_NAMES:
        assert site in str(err.value)
    assert "patient_id" in str(err.value)


def _labels(s: pd.Series) -> pd.Series:
    """Cell labels as the nodes write them: levels as text, missing as "(missing)"."""

    def one(v: Any) -> str:
        if pd.isna(v):
            return "(missing)"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return s.map(one)


# --- 2. tiny subgroups via cross-tabs ---------------------------------------------------------
def test_tiny_subgroups_via_crosstab_are_suppressed(
    fed: Federation, frames: dict[str, Any]
) -> None:
    out = fed.query("crosstab", DATASET, {"row": "vaccination", "col": "death_28d"})
    assert sorted(out.replies) == SITE_NAMES, (out.refused, out.errors)
    n_small = 0
    for site, result in out.replies.items():
        t = result["tables"]["crosstab"]
        d = frames["data"][site]
        true = pd.DataFrame({"r": _labels(d["vaccination"]), "c": _labels(d["death_28d"])})
        truth_of = true.value_counts().to_dict()  # (row label, col label) -> patients
        for i, row in enumerate(t["rows"]):
            for j, col in enumerate(t["cols"]):
                released = t["counts"][i][j]
                assert released is None or released == 0 or released >= 5, (site, row, col)
                truth = int(truth_of.get((str(row), str(col)), 0))
                if 1 <= truth <= 4:
                    n_small += 1
                    assert released is None, (site, row, col, truth)
        assert result["suppressed_cells"] >= sum(1 for v in truth_of.values() if 1 <= v <= 4)
    assert n_small >= 1  # the data (seed 5) holds a cell of 1..4 patients: it was withheld


# --- 3. DP budget -----------------------------------------------------------------------------
def test_dp_budget_per_request_and_per_permit(fed: Federation) -> None:
    # More ε at once than a request may spend: refused before any data is read.
    all_refused(fed, "dp_mean", {"variable": "age", "epsilon": 2.0}, "dp_epsilon_per_request")
    # Sandbox requests (no permit) share one ledger entry per dataset: 1.0 fits in 1.5 ...
    ok = fed.run("dp_mean", DATASET, {"variable": "age", "epsilon": 1.0})
    assert ok.epsilon == {s: pytest.approx(1.0) for s in SITE_NAMES}
    # ... another 1.0 does not.
    all_refused(
        fed,
        "dp_mean",
        {"variable": "age", "epsilon": 1.0},
        "privacy budget exceeded",
        "dp_epsilon_per_permit",
    )


# --- 4. differencing --------------------------------------------------------------------------
def _age_cut(data: dict[str, pd.DataFrame]) -> float:
    """An age ``t`` such that "age in [0, t]" leaves out 1..4 patients at every site."""
    for t in sorted({float(a) for d in data.values() for a in d["age"].dropna()}):
        left_out = [len(d) - int(d["age"].between(0, t).sum()) for d in data.values()]
        if all(1 <= k <= 4 for k in left_out):
            return t
    raise AssertionError("no age cut leaves out 1..4 patients at both sites")


def test_all_vs_all_minus_a_few_is_refused(fed: Federation, frames: dict[str, Any]) -> None:
    cut = _age_cut(frames["data"])
    everyone = fed.query("sum", DATASET, {"variable": "age"})
    assert sorted(everyone.replies) == SITE_NAMES, everyone.refused
    all_refused(
        fed,
        "sum",
        {"variable": "age", "where": {"age": [0, cut]}},
        "differencing protection",
        "min_subset = 5",
    )
