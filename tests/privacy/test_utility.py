"""Utility back (issue 11 f): what the per-request protections used to throw away.

* Pooled Kaplan-Meier on Fed-TCGA-BRCA (six regions, default policy) came back with
  one step: steps only where every site kept one, up to where the first site stopped
  (Canada, 3 deaths, never releases an event step). Now it is built from pooled counts
  on the common public grid and has a step wherever any region released events.
* ``describe`` with one tiny site: every pooled n/mean/quantile was NaN. Now the
  declining site is left out of the pooled values and the result says so.
* One cell of 1 at a site withheld its whole Table 1: complementary suppression picked
  a large cell in a row of zeros, could not protect it and fell back to whole tables.
  Now it picks the cheapest cells (zeros included where only an unknown is missing),
  and every result says how many values were withheld, by rule.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import frame, make_node  # noqa: E402

from healthfed.compute.survival import kaplan_meier  # noqa: E402
from healthfed.data.dataset import NodeDataset  # noqa: E402
from healthfed.data.descriptor import descriptor_from_dict  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import Node  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy.cell_constraints import build_system  # noqa: E402
from healthfed.privacy.disclosure import CountTable, Release, disclose  # noqa: E402
from healthfed.privacy.lp_audit import first_determined  # noqa: E402
from healthfed.privacy.suppression import suppress_counts  # noqa: E402

TCGA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tcga_brca"
EXACT = SitePolicy(count_perturbation="none")  # exact counts: the suppression path


# --- pooled Kaplan-Meier on TCGA-BRCA --------------------------------------------------------
@pytest.fixture(scope="module")
def tcga() -> dict[str, pd.DataFrame]:
    if not (TCGA / "brca.csv").exists():
        pytest.skip("Fed-TCGA-BRCA is not in ../shared/data")
    brca = pd.read_csv(TCGA / "brca.csv")
    split = pd.read_csv(TCGA / "train_test_split.csv")
    df = brca.merge(split[["pid", "fold2"]], on="pid")
    df["region"] = df["fold2"].str.split("_").str[1].astype(int)
    df["E"] = df["E"].astype(int)
    return {f"region_{r}": part[["pid", "T", "E"]] for r, part in df.groupby("region")}


def test_pooled_km_on_tcga_brca_is_not_empty(tcga: dict[str, pd.DataFrame]) -> None:
    cols = {"pid": {"type": "id"}, "T": {"type": "numeric"}, "E": {"type": "binary"}}
    desc = descriptor_from_dict(
        {"dataset": {"name": "brca", "file": "brca.csv", "id_column": "pid"}, "columns": cols},
        base_dir=TCGA,
    )
    nodes = [
        Node(name=s, datasets={"brca": NodeDataset.from_frame(d, desc)}) for s, d in tcga.items()
    ]
    with Federation.inprocess(nodes) as fed:
        km = kaplan_meier(fed, "brca", "T", "E", time_grid=SitePolicy().time_grid_unit)
    pooled = km[km["group"] == "pooled"]
    event_steps = int((pooled["events"] > 0).sum())
    assert event_steps >= 10, event_steps  # was 0: one censoring-only step
    for col in ("at_risk", "events", "censored"):
        assert not km[col].between(1, 4).any(), col
    # Every pooled number is a sum of the sites' released numbers at that edge.
    per_site = km[km["group"] != "pooled"]
    assert pooled["events"].sum() == per_site["events"].sum()
    assert pooled["at_risk"].iloc[0] == sum(len(d) for d in tcga.values())
    s = pooled["survival"].to_numpy()
    assert np.all(np.diff(s) <= 0) and 0.0 < s[-1] < 1.0
    # Close to the exact pooled KM (lifelines): within 0.03 at 1 and 3 years, 0.05 at 5
    # (measured 0.853 vs 0.819: the regions' unreleased tails are censored, so their
    # few late deaths are missing -- the residual bias of per-site small-count rules).
    lifelines = pytest.importorskip("lifelines")
    every = pd.concat(tcga.values())
    exact = lifelines.KaplanMeierFitter().fit(every["T"], every["E"])
    curve = pooled.set_index("time")["survival"]
    for day, tol in ((365.0, 0.03), (1095.0, 0.03), (1825.0, 0.05)):
        ours = float(curve[curve.index <= day].iloc[-1])
        assert ours == pytest.approx(float(exact.predict(day)), abs=tol), day
    # Canada (3 deaths) never releases an event step: its tail is censored, and said so.
    assert km.attrs["truncated"], km.attrs


# --- describe with a declining site -------------------------------------------------------------
def test_describe_leaves_out_a_tiny_site_and_says_so(tmp_path: Path) -> None:
    a, b, tiny = frame(300, 1), frame(250, 2, "q"), frame(3, 3, "t")
    nodes = [
        make_node(tmp_path, "a", a, EXACT),
        make_node(tmp_path, "b", b, EXACT),
        make_node(tmp_path, "tiny", tiny, EXACT),
    ]
    with Federation.inprocess(nodes) as fed:
        res = fed.describe("cohort", ["age", "los"])
    both = pd.concat([a, b])
    assert res.left_out == {"tiny": res.left_out["tiny"]} and "too few" in res.left_out["tiny"]
    assert res.value("age", "n") == len(both)  # was None (NaN in the frame)
    assert res.value("age", "mean") == pytest.approx(both["age"].mean(), rel=1e-12)
    assert res.value("los", "sd") == pytest.approx(both["los"].std(), rel=1e-9)
    assert res.value("age", "p50") is not None
    assert res.value("age", "n", site="tiny") is None  # the tiny site's own values: withheld
    assert "Left out of the pooled values" in res.to_text() and "tiny" in res.to_text()
    assert res.to_dict()["left_out"] == res.left_out


# --- complementary suppression ----------------------------------------------------------------
def table1_release(cells: np.ndarray) -> Release:
    """A Table 1's count tables: N per group, a variable with ``cells``, and a second one."""
    groups = tuple(f"g{j}" for j in range(cells.shape[1]))
    levels = tuple(f"l{i}" for i in range(cells.shape[0] - 1)) + ("(missing)",)
    n = cells.sum(axis=0)
    other = np.vstack([n, np.zeros_like(n)])
    return Release(
        "table1",
        {
            "N": CountTable(("N",), groups, n[None, :]),
            "var:v": CountTable(levels, groups, cells, margin_of="N"),
            "var:w": CountTable(("x", "(missing)"), groups, other, margin_of="N"),
        },
    )


def test_a_cell_of_one_beside_a_row_of_zeros_keeps_the_rest_of_table1() -> None:
    # The case: protecting the 1 needs a second unknown in column g0, whose only
    # other non-zero cell (50) sits in a row of zeros; the old choice then withheld all.
    cells = np.array([[58, 47, 27], [0, 23, 29], [35, 1, 35], [50, 0, 0], [0, 0, 0]])
    out = disclose(table1_release(cells), EXACT)
    assert out["tables"]["N"]["counts"] == [cells.sum(axis=0).tolist()]
    assert out["tables"]["var:w"]["counts"][0] == cells.sum(axis=0).tolist()
    v = out["tables"]["var:v"]["counts"]
    assert v[2][1] is None  # the 1 is withheld
    assert sum(x is None for row in v for x in row) <= 8
    assert out["withheld"]["primary"] == 1 and out["withheld"]["complementary"] >= 3
    assert out["suppressed_cells"] == sum(out["withheld"].values())


@st.composite
def tables_with_a_one(draw: Any) -> np.ndarray:
    rows, cols = draw(st.integers(2, 4)), draw(st.integers(2, 3))
    values = draw(st.lists(st.integers(5, 60), min_size=rows * cols, max_size=rows * cols))
    zeros = draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))
    a = np.array([0 if z else v for v, z in zip(values, zeros, strict=True)]).reshape(rows, cols)
    i, j = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
    a[i, j] = 1
    other = (j + 1) % cols
    a[i, other] = max(a[i, other], 10)  # one small cell, not a small row (its total is >= 5)
    a[(i + 1) % rows] += 10  # every group holds >= 5 patients
    return np.vstack([a, np.zeros((1, cols), dtype=int)])


@settings(max_examples=60, deadline=None)
@given(cells=tables_with_a_one())
def test_one_small_cell_never_withholds_another_table(cells: np.ndarray) -> None:
    release = table1_release(cells)
    system = build_system(release.tables)
    supp = suppress_counts(system, EXACT)
    # Protection: released counts are 0 or >= 5, and no withheld count can be derived.
    vals = np.asarray(system.values)
    assert not np.any(~supp & (vals > 0) & (vals < 5))
    assert first_determined(system, supp) is None
    # Utility: the N table and the other variable stay released (only v's cells are hit).
    hit = {system.table_of[v] for v in np.flatnonzero(supp)}
    assert hit == {"var:v"}, (hit, cells.tolist())
