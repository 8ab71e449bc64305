"""Property tests of the disclosure filter with the default policy (hypothesis).

For random small cohorts and random queries, and for random raw count tables:

* no released count lies in 1..min_cell_count-1;
* every suppressed count is not uniquely determined by the released numbers: an
  LP written independently here (x >= 0, the additivity of every table and its
  margins, margins shared with the "N" table) finds at least two values;
* statistics are released only for cells whose released count is >= min_subset,
  every released histogram bin holds >= min_subset, and the complement rule holds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _stats_helpers import site_reply  # noqa: E402

from healthfed.data.descriptor import descriptor_from_dict  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy.disclosure import CountTable, Release, disclose  # noqa: E402

# Exact counts: these properties are about suppression; the cell-key-perturbed path
# (the default) has its own properties in test_cell_key.py.
POLICY = SitePolicy(histogram_bins=20, count_perturbation="none")
K, M = POLICY.min_cell_count, POLICY.min_subset
DESC = descriptor_from_dict(
    {
        "dataset": {"name": "p", "file": "p.parquet", "id_column": "pid"},
        "columns": {
            "x": {"type": "numeric", "bounds": [0, 10]},
            "a": {"type": "categorical", "levels": ["u", "v", "w"]},
            "b": {"type": "binary"},
            "g": {"type": "categorical", "levels": ["p", "q", "r"]},
        },
    },
    base_dir=Path("."),
)


def _positions(t: dict[str, Any]) -> list[tuple[tuple[str, int, int], int | None]]:
    out = []
    for i, row in enumerate(t["counts"]):
        out += [(("c", i, j), v) for j, v in enumerate(row)]
    out += [(("r", i, 0), v) for i, v in enumerate(t["row_totals"])]
    out += [(("k", 0, j), v) for j, v in enumerate(t["col_totals"])]
    out.append((("t", 0, 0), t["total"]))
    return out


def assert_not_recoverable(tables: dict[str, Any], links: dict[str, str]) -> None:
    """Every None in ``tables`` has an LP range wider than 0 given all released numbers."""
    unknown: dict[tuple[str, tuple[str, int, int]], int] = {}
    value: dict[tuple[str, tuple[str, int, int]], int | None] = {}
    for key, t in tables.items():
        for pos, v in _positions(t):
            value[(key, pos)] = v
            if v is None:
                unknown[(key, pos)] = len(unknown)
    if not unknown:
        return
    rows: list[tuple[dict[int, float], float]] = []

    def add(terms: list[tuple[tuple[str, tuple[str, int, int]], float]]) -> None:
        coef: dict[int, float] = {}
        rhs = 0.0
        for ref, c in terms:
            if ref in unknown:
                coef[unknown[ref]] = coef.get(unknown[ref], 0.0) + c
            else:
                rhs -= c * float(value[ref])  # type: ignore[arg-type]
        if coef:
            rows.append((coef, rhs))
        else:
            assert abs(rhs) < 1e-9, "released numbers are inconsistent"

    for key, t in tables.items():
        R, C = len(t["rows"]), len(t["cols"])
        for i in range(R):
            add([((key, ("c", i, j)), 1.0) for j in range(C)] + [((key, ("r", i, 0)), -1.0)])
        for j in range(C):
            add([((key, ("c", i, j)), 1.0) for i in range(R)] + [((key, ("k", 0, j)), -1.0)])
        add([((key, ("r", i, 0)), 1.0) for i in range(R)] + [((key, ("t", 0, 0)), -1.0)])
        add([((key, ("k", 0, j)), 1.0) for j in range(C)] + [((key, ("t", 0, 0)), -1.0)])
    for key, base in links.items():
        for j in range(len(tables[key]["cols"])):
            add([((key, ("k", 0, j)), 1.0), ((base, ("c", 0, j)), -1.0)])
        add([((key, ("t", 0, 0)), 1.0), ((base, ("t", 0, 0)), -1.0)])
    n = len(unknown)
    A = np.zeros((len(rows), n))
    b = np.zeros(len(rows))
    for r, (coef, rhs) in enumerate(rows):
        for c, v in coef.items():
            A[r, c] = v
        b[r] = rhs
    kw: dict[str, Any] = {"bounds": (0, None), "method": "highs"}
    if len(rows):
        kw.update(A_eq=A, b_eq=b)
    for ref, idx in unknown.items():
        obj = np.zeros(n)
        obj[idx] = 1
        lo = linprog(obj, **kw)
        hi = linprog(-obj, **kw)
        assert lo.status == 0
        if hi.status == 3:
            continue
        assert hi.status == 0
        assert -hi.fun - lo.fun > 0.5, f"suppressed cell {ref} is determined ({lo.fun})"


def assert_no_small_counts(tables: dict[str, Any]) -> None:
    for key, t in tables.items():
        for pos, v in _positions(t):
            assert v is None or v == 0 or v >= K, (key, pos, v)


@st.composite
def cohorts(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 45))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pa = draw(st.sampled_from([[0.8, 0.15, 0.05], [0.34, 0.33, 0.33], [0.95, 0.05, 0.0]]))
    x = rng.uniform(-1, 11, n)
    x[rng.random(n) < draw(st.sampled_from([0.0, 0.05, 0.3]))] = np.nan
    a = rng.choice(["u", "v", "w"], n, p=pa).astype(object)
    a[rng.random(n) < 0.05] = None
    return pd.DataFrame(
        {
            "pid": np.arange(n),
            "x": x,
            "a": a,
            "b": pd.array(rng.integers(0, 2, n), dtype="Int32"),
            "g": rng.choice(["p", "q", "r"], n, p=[0.6, 0.3, 0.1]).astype(object),
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    df=cohorts(),
    variables=st.lists(st.sampled_from(["x", "a", "b"]), min_size=1, max_size=3, unique=True),
    by=st.sampled_from([None, "g", "b"]),
)
def test_table1_release_respects_thresholds(
    df: pd.DataFrame, variables: list[str], by: str | None
) -> None:
    variables = [v for v in variables if v != by] or ["x"]
    params: dict[str, Any] = {"variables": variables}
    if by:
        params["by"] = by
    out = site_reply(df, "table1", params, POLICY, DESC)
    tables = out["tables"]
    assert_no_small_counts(tables)
    assert_not_recoverable(tables, {k: "N" for k in tables if k != "N"})
    assert out["suppressed_cells"] == len(out["suppressed"])
    if "x" not in out["numeric"]:
        return
    block = out["numeric"]["x"]
    t = tables[block["table"]]
    n_row = t["counts"][t["rows"].index("n")]
    true_n = []
    groups = t["cols"]
    for g in groups:
        sel = (
            pd.Series(True, index=df.index)
            if g == "all"
            else (df[by].isna() if g == "(missing)" else df[by].astype(str) == g)
        )
        true_n.append(int(df.loc[sel, "x"].notna().sum()))
    for j, cell in enumerate(block["cells"]):
        if cell is not None:
            assert n_row[j] == cell["n"] == true_n[j] and cell["n"] >= M
            assert all(c >= M for c in cell["hist"]["counts"])
    if block["overall"] is not None:
        assert t["row_totals"][t["rows"].index("n")] == block["overall"]["n"] >= M
        held = [true_n[j] for j, c in enumerate(block["cells"]) if c is None and true_n[j] > 0]
        if len(groups) > 1:
            assert not held or (len(held) >= 2 and sum(held) >= M)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda r: st.integers(1, 4).flatmap(
            lambda c: st.lists(
                st.lists(st.integers(0, 12), min_size=c, max_size=c), min_size=r, max_size=r
            )
        )
    )
)
def test_random_count_tables(counts: list[list[int]]) -> None:
    a = np.array(counts)
    table = CountTable(tuple(map(str, range(a.shape[0]))), tuple(map(str, range(a.shape[1]))), a)
    out = disclose(Release("t", {"t": table}), POLICY)
    assert_no_small_counts(out["tables"])
    assert_not_recoverable(out["tables"], {})
    for (pos, v), (_, orig) in zip(
        _positions(out["tables"]["t"]),
        _positions(
            {
                "counts": a.tolist(),
                "row_totals": a.sum(1).tolist(),
                "col_totals": a.sum(0).tolist(),
                "total": int(a.sum()),
            }
        ),
        strict=True,
    ):
        assert v is None or v == orig, pos
