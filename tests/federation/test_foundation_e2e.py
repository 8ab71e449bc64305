"""End to end through real node files: federated Table 1 equals the pooled computation.

Pooled numbers are computed here, in a test only, on the concatenated rows with the
same unit harmonisation; nodes never see each other's rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthfed.data.synth import generate_covid_cohort
from healthfed.demo import prepare_nodes, run_demo
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy
from healthfed.privacy.cellkey import SECRET_FILE

SITES, ROWS, SEED = 3, 1500, 11


@pytest.fixture(scope="module")
def node_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return prepare_nodes(tmp_path_factory.mktemp("e2e"), SITES, ROWS, seed=SEED)


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    frames = generate_covid_cohort(sites=SITES, rows=ROWS, seed=SEED)
    frames["hospital_2"] = frames["hospital_2"].assign(crp=frames["hospital_2"]["crp"] * 10)
    return pd.concat(frames.values(), ignore_index=True)


def test_table1_equals_pooled_with_unit_harmonisation(
    node_files: list[Path], pooled: pd.DataFrame
) -> None:
    nodes = [Node.from_toml(p) for p in node_files]
    for node in nodes:  # thresholds off so every number can be compared
        node.policy = SitePolicy(min_cell_count=1, min_subset=1, count_perturbation="none")
    with Federation.inprocess(nodes) as fed:
        t1 = fed.table1("covid", ["age", "crp", "sex", "diabetes"], by="death_28d")
    assert t1.sites == ["hospital_1", "hospital_2", "hospital_3"]
    assert t1.n_total == len(pooled)
    for group, rows in [
        ("overall", pooled),
        *[(str(g), d) for g, d in pooled.groupby("death_28d")],
    ]:
        for var in ("age", "crp"):
            x = rows[var].dropna()
            assert t1.value(var, "n", group) == len(x)
            assert t1.value(var, "mean", group) == pytest.approx(x.mean(), rel=1e-9)
            assert t1.value(var, "sd", group) == pytest.approx(x.std(ddof=1), rel=1e-9)
            med, lo, hi = (t1.value(var, r, group) for r in ("p50", "p50_lo", "p50_hi"))
            true_median = float(np.quantile(x.to_numpy(), 0.5))
            assert lo <= true_median <= hi and lo <= med <= hi
        assert t1.value("sex", "male", group) == int((rows["sex"] == "male").sum())
        assert t1.value("diabetes", "1", group) == int((rows["diabetes"] == 1).sum())


def test_default_policy_suppresses_and_never_releases_small_counts(node_files: list[Path]) -> None:
    with Federation.from_node_files(node_files) as fed:
        ct = fed.crosstab("covid", "vaccination", "death_28d")
    released = [v for v in ct.to_frame().to_numpy().ravel() if pd.notna(v)]
    assert all(v == 0 or v >= 5 for v in released)


def test_refusal_reason_reaches_the_researcher(node_files: list[Path]) -> None:
    from healthfed.errors import ThresholdViolation

    with Federation.from_node_files(node_files) as fed, pytest.raises(ThresholdViolation) as err:
        fed.table1("covid", ["patient_id"])
    assert "patient_id" in str(err.value)


@pytest.mark.flower
def test_demo_on_flower_matches_inprocess(tmp_path: Path) -> None:
    """`healthfed demo --engine flower`: real SuperLink/SuperNodes, same released numbers."""
    # The model + trust report part is covered in-process (tests/trust); over Flower it
    # would add ~15 rounds of seconds each.
    a = run_demo(engine="inprocess", sites=2, rows=400, out=tmp_path / "a", report=False)
    # The same nodes: each site keeps its record-key secret (cell key method), so the
    # perturbed counts are the same numbers on both engines.
    for secret in (tmp_path / "a" / "nodes").glob(f"*.state/{SECRET_FILE}"):
        target = tmp_path / "b" / secret.relative_to(tmp_path / "a")
        target.parent.mkdir(parents=True)
        shutil.copy2(secret, target)
    b = run_demo(engine="flower", sites=2, rows=400, out=tmp_path / "b", report=False)
    assert b.summary["engine"] == "flower"
    assert b.summary["sites"] == ["hospital_1", "hospital_2"]
    assert b.summary["table1"]["pooled"] == a.summary["table1"]["pooled"]
    assert b.summary["suppressed_cells"] == a.summary["suppressed_cells"]
    assert (tmp_path / "b" / "summary.json").exists()
