"""The attack suite over a real Flower deployment: every attack fails closed, as in-process.

One SuperLink and two SuperNodes (loopback, TLS) serve all tests of this module; the
privacy guard, the DP ledger and the differencing memory live in each node executor
process (a sandbox node keeps them in memory for the life of that process), so state
carries from one round to the next exactly as on a node driven in-process. The tests
run in file order and share that state: the DP and differencing tests rely on it.

Each node holds two datasets: the synthetic COVID cohort and ``cohort``, built like the
in-process suite's (tests/privacy/_privacy_helpers.py) with its attack targets planted
(see ``_cohort_frame``; the sites' ``cohort`` descriptors differ on purpose, see
``_cohort_columns``, so one round checks two refusal paths). Each dataset has its own
DP ledger and differencing memory, so the two never interfere.

Run over Flower, mirroring tests/privacy/test_attacks.py: an identifier as a variable;
tiny subgroups via cross-tabs and via subgroup metrics; the DP budget per request and
per permit (repeating one DP query until the budget is spent); all-vs-all-minus-a-few
differencing; more levels than allowed; min/max and quantile reconstruction; dominated
sums and sums over fewer than ``min_subset`` patients; membership inference against
DP training. Seventeen rounds in all (a round costs ~5-6 s).

Membership inference runs last, against a model trained with DP-FL by the node
executors. "Site requires DP" and "site requires secure aggregation" (node-wide
policies) run over Flower in tests/privacy/test_secure_aggregation_flower.py. Only in
the in-process suite: the zCDP composition of many Gaussian releases (a dozen rounds or
more), differencing through data changes and holdout splits, and forged DP releases (no
network involved).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import COLUMNS, SUBGROUP_BY_WARD, frame, site_outcome  # noqa: E402

from healthfed.data.dataset import render_descriptor_toml  # noqa: E402
from healthfed.data.synth import write_covid_cohort  # noqa: E402
from healthfed.errors import ThresholdViolation  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import write_node_file  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

pytestmark = pytest.mark.flower

SITES, ROWS, SEED = 2, 300, 5
DATASET = "covid"
COHORT = "cohort"  # the second dataset of every node, see _cohort_frame
SITE_NAMES = ["hospital_1", "hospital_2"]
# Defaults except a small DP budget, so it runs out within two rounds.
POLICY = SitePolicy(dp_epsilon_per_request=1.0, dp_epsilon_per_permit=1.5)
MAX_LEVELS = POLICY.max_levels  # 40, the default
CLINICS = [f"c{i:02d}" for i in range(MAX_LEVELS + 5)]  # more levels than allowed
WEIGHT_BOUNDS = [0, 250]  # declared at hospital_2 only


def _cohort_columns(k: int) -> dict[str, dict[str, Any]]:
    """Site ``k``'s ``cohort`` descriptor: the in-process suite's columns, plus ``clinic``.

    The two sites declare ``clinic`` and ``weight`` differently (as real sites' descriptors
    may differ), so one round checks two refusal paths:

    ==========  ==================  ============================
    column      hospital_1          hospital_2
    ==========  ==================  ============================
    ``clinic``  45 declared levels  no declared levels (45 seen)
    ``weight``  no declared bounds  bounds ``WEIGHT_BOUNDS``
    ==========  ==================  ============================
    """
    if k == 1:
        clinic: dict[str, Any] = {"type": "categorical", "levels": CLINICS}
        return {**COLUMNS, "clinic": clinic}
    weight = {**COLUMNS["weight"], "bounds": WEIGHT_BOUNDS}
    return {**COLUMNS, "weight": weight, "clinic": {"type": "categorical"}}


def _cohort_frame(k: int) -> pd.DataFrame:
    """Site ``k``'s ``cohort``: the in-process suite's cohort with its attack targets.

    As there: one patient aged 109 (all others <= 100) and three patients on ward
    ``d`` (all others on ``a``); every one of the 45 clinics is seen. At hospital_1 two
    patients hold 1.9 of the 1.94 million of income (the sum is dominated);
    hospital_2 keeps ordinary incomes (no dominance).
    """
    d = frame(400, k, prefix=f"h{k}_")
    d.loc[0, "age"] = 109.0
    d.loc[d.index[1:], "age"] = d.loc[d.index[1:], "age"].clip(upper=100.0)
    d["ward"] = "a"
    d.loc[:2, "ward"] = "d"
    d["clinic"] = pd.Series([CLINICS[i % len(CLINICS)] for i in range(len(d))], dtype=object)
    if k == 1:
        d["income"] = 100.0
        d.loc[0, "income"] = 1_000_000.0
        d.loc[1, "income"] = 900_000.0
    return d


def _write_cohort(folder: Path, k: int) -> Path:
    """Write site ``k``'s ``cohort`` (Parquet and descriptor); return the descriptor path."""
    folder.mkdir(parents=True, exist_ok=True)
    _cohort_frame(k).to_parquet(folder / f"cohort_{k}.parquet", index=False)
    dataset = {
        "name": COHORT,
        "file": f"cohort_{k}.parquet",
        "format": "parquet",
        "id_column": "pid",
    }
    path = folder / f"cohort_{k}.toml"
    path.write_text(render_descriptor_toml(dataset, _cohort_columns(k)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("attacks_flower")
    written = write_covid_cohort(root / "data", sites=SITES, rows=ROWS, seed=SEED)
    descriptors = sorted(p for p in written if p.suffix == ".toml")
    node_files = [
        write_node_file(
            root / "nodes" / f"{d.stem}.toml",
            d.stem,
            [d, _write_cohort(root / "cohort", k)],
            policy=POLICY,
        )
        for k, d in enumerate(descriptors, start=1)
    ]
    data = {p.stem: pd.read_parquet(p) for p in written if p.suffix == ".parquet"}
    return {"root": root, "node_files": node_files, "data": data}


@pytest.fixture(scope="module")
def fed(frames: dict[str, Any]) -> Iterator[Federation]:
    with Federation.flower(
        frames["node_files"], work_dir=frames["root"] / "flower", timeout=60
    ) as federation:
        yield federation


def all_refused(
    fed: Federation,
    computation: str,
    params: dict[str, Any],
    *needles: str,
    dataset: str = DATASET,
) -> None:
    out = site_outcome(fed, computation, dataset, params)
    assert not out.replies, out.replies
    assert sorted(out.refused) == SITE_NAMES, (out.refused, out.errors, out.missing)
    for site, reason in out.refused.items():
        for n in needles:
            assert n in reason, (site, reason)


def refused_by_site(
    fed: Federation, computation: str, params: dict[str, Any], needles: dict[str, list[str]]
) -> None:
    """Both sites refuse the ``cohort`` request, each naming its own problem."""
    out = site_outcome(fed, computation, COHORT, params)
    assert not out.replies, out.replies
    assert sorted(out.refused) == SITE_NAMES, (out.refused, out.errors, out.missing)
    for site, reason in out.refused.items():
        for n in needles[site]:
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
    out = site_outcome(fed, "crosstab", DATASET, {"row": "vaccination", "col": "death_28d"})
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
                    # Withheld, or (cell key method, the default) perturbed to 0 or >= 5.
                    assert released is None or result["perturbed_cells"] > 0, (site, row, col)
        small = sum(1 for v in truth_of.values() if 1 <= v <= 4)
        assert result["suppressed_cells"] + result["perturbed_cells"] >= small
    assert n_small >= 1  # the data (seed 5) holds a cell of 1..4 patients: it was withheld


# --- 3. DP budget -----------------------------------------------------------------------------
def test_dp_budget_per_request_and_per_permit(fed: Federation) -> None:
    # More ε at once than a request may spend: refused before any data is read.
    all_refused(fed, "dp_mean", {"variable": "age", "epsilon": 2.0}, "dp_epsilon_per_request")
    # Sandbox requests (no permit) share one ledger entry per dataset: 1.0 fits in 1.5 ...
    ok = fed.run("dp_mean", DATASET, {"variable": "age", "epsilon": 1.0})
    assert ok.epsilon == {s: pytest.approx(1.0) for s in SITE_NAMES}
    # ... the same query again does not (repeated-query averaging runs out of budget).
    all_refused(
        fed,
        "dp_mean",
        {"variable": "age", "epsilon": 1.0},
        "privacy budget exceeded",
        "spent ε = 1 of 1.5",
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
    everyone = site_outcome(fed, "sum", DATASET, {"variable": "age"})
    assert sorted(everyone.replies) == SITE_NAMES, everyone.refused
    all_refused(
        fed,
        "sum",
        {"variable": "age", "where": {"age": [0, cut]}},
        "differencing protection",
        "min_subset = 5",
    )


# --- 5. more levels than allowed --------------------------------------------------------------
def test_more_levels_than_allowed(fed: Federation) -> None:
    limit = f"max_levels = {MAX_LEVELS}"
    # 45 clinics: no cross-tab, whether the levels are declared (hospital_1) or only
    # seen in the data (hospital_2) ...
    all_refused(fed, "crosstab", {"row": "clinic", "col": "sex"}, "'clinic'", limit, dataset=COHORT)
    # ... no DP histogram over them (hospital_1: too many; hospital_2: DP needs declared
    # levels, never read off the data: the min/max-and-quantiles attack's check) ...
    refused_by_site(
        fed,
        "dp_histogram",
        {"variable": "clinic"},
        {"hospital_1": ["'clinic'", limit], "hospital_2": ["'clinic'", "no declared levels"]},
    )
    # ... nor more histogram bins than levels allowed.
    all_refused(
        fed, "dp_histogram", {"variable": "age", "bins": MAX_LEVELS + 1}, "bins requested", limit
    )


# --- 6. reconstruction through min/max and quantiles ----------------------------------------
def test_min_max_and_quantile_reconstruction(fed: Federation) -> None:
    out = site_outcome(fed, "describe", COHORT, {"variables": ["age"]})
    assert sorted(out.replies) == SITE_NAMES, (out.refused, out.errors)
    for site, result in out.replies.items():
        cell = result["numeric"]["age"]["cells"][0]
        assert "min" not in cell and "max" not in cell, site  # the 109-year-old stays hidden
        assert all(c >= 5 for c in cell["hist"]["counts"]), site  # every bin holds >= 5
    # DP quantiles need declared bounds, never read off the data (hospital_1 declares
    # none for weight) ...
    q = site_outcome(
        fed, "dp_quantiles", COHORT, {"variable": "weight", "quantiles": [0.5, 0.99]}, min_sites=1
    )
    assert sorted(q.refused) == ["hospital_1"], (q.refused, q.errors, q.missing)
    assert "'weight'" in q.refused["hospital_1"], q.refused
    assert "no declared bounds" in q.refused["hospital_1"], q.refused
    # ... and where declared (hospital_2) the grid is the declared bounds, not the data's.
    assert sorted(q.replies) == ["hospital_2"], q.replies
    released = q.replies["hospital_2"]
    assert released["privacy"]["epsilon"] <= 1.0
    assert max(released["public"]["edges"]) == float(WEIGHT_BOUNDS[1])
    # (DP histograms need declared levels: checked at hospital_2 in test 5.)


# --- 7. tiny subgroups via subgroup metrics ---------------------------------------------------
def test_tiny_subgroups_via_subgroup_metrics_are_suppressed(fed: Federation) -> None:
    params = SUBGROUP_BY_WARD
    out = site_outcome(fed, "subgroup_metrics", COHORT, params)
    assert sorted(out.replies) == SITE_NAMES, (out.refused, out.errors)
    for site, result in out.replies.items():
        n = result["tables"]["n.ward"]
        j = n["cols"].index("d")
        assert n["counts"][0][j] is None, site  # three patients on ward d: withheld
        ward_keys = [k for k in result["numeric"] if k.endswith(".ward")]
        assert ward_keys, (site, sorted(result["numeric"]))
        for key in ward_keys:
            # no score/error statistics for 3 patients
            assert result["numeric"][key]["cells"][j] is None, (site, key)


# --- 8. dominance of sums ---------------------------------------------------------------------
def test_dominated_sum_is_refused(fed: Federation) -> None:
    # hospital_1's income sum is dominated by two patients; hospital_2's is not.
    out = site_outcome(fed, "sum", COHORT, {"variable": "income"}, min_sites=1)
    assert sorted(out.refused) == ["hospital_1"], (out.refused, out.errors, out.missing)
    assert "dominance rule (2, 85)" in out.refused["hospital_1"], out.refused
    assert sorted(out.replies) == ["hospital_2"], out.replies
    # A sum over the one patient aged 105..110 is refused at both sites.
    all_refused(
        fed, "sum", {"variable": "los", "where": {"age": [105, 110]}}, "min_subset", dataset=COHORT
    )


# --- 9. membership inference against a DP model trained over Flower ---------------------------
def test_membership_inference_against_dp_training_over_flower(fed: Federation) -> None:
    """DP-FL run by the node executors (ε charged there); the loss attack stays at chance.

    Runs last: hospital_2 spent ε = 1 (Laplace) of its 1.5 ``cohort`` budget above, so
    the fit asks for 0.4 in one Gaussian round (a second Gaussian release would push the
    summed δ past the site's δ and the ledger to zCDP composition, ε ≈ 5.8); both sites'
    rows are the members and fresh patients from the same generator the non-members.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from healthfed.compute.fedavg import FedAvgLogisticRegression
    from healthfed.compute.preprocess import standardisation_spec

    spec = standardisation_spec(["age", "los"], centers=[55.0, 6.0], scales=[27.5, 3.0])
    model = FedAvgLogisticRegression(rounds=1, lr=0.5, dp={"epsilon": 0.4}).fit(
        fed, COHORT, "death", preprocess=spec
    )
    assert model.history_[-1]["sites"] == SITE_NAMES

    def losses(d: pd.DataFrame) -> np.ndarray:
        z = model.decision_function(d)
        y = d["death"].to_numpy(float)
        return np.logaddexp(0, z) - y * z

    members = np.concatenate([losses(_cohort_frame(k)) for k in (1, 2)])
    outsiders = np.concatenate([losses(frame(400, 50 + k, prefix=f"o{k}_")) for k in (1, 2)])
    labels = np.r_[np.ones(len(members)), np.zeros(len(outsiders))]
    auc = roc_auc_score(labels, -np.r_[members, outsiders])
    assert auc <= 0.55, auc
    # The budget is really charged at the nodes: more DP training is refused at hospital_2.
    out = site_outcome(
        fed,
        "local_train",
        COHORT,
        {
            "model": "logistic",
            "target": "death",
            "preprocess": spec,
            "weights": [[0.0, 0.0], [0.0]],
            "epochs": 1,
            "lr": 0.5,
            "batch_size": 32,
            "mu": 0.0,
            "seed": 1,
            "dp": {"epsilon": 0.4, "delta": 1e-6, "clip": 1.0, "level": "sample"},
        },
        min_sites=1,
    )
    assert "hospital_2" in out.refused and "ε" in out.refused["hospital_2"], out.refused
