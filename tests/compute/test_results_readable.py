"""Readable results: Table 1 CSV (integers, rounding, labels, units, SMD), withheld cells, HTML."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from _stats_helpers import COLUMNS, cohort, descriptor, federate

from healthfed.policy import SitePolicy

OPEN = SitePolicy(min_cell_count=1, min_subset=1, histogram_bins=50, count_perturbation="none")
EXACT = SitePolicy(count_perturbation="none")
LABELLED = {
    **COLUMNS,
    "age": {**COLUMNS["age"], "unit": "years", "description": "Age at admission"},
    "crp": {**COLUMNS["crp"], "unit": "mg/dL", "description": "C-reactive protein"},
    "death": {"type": "binary", "description": "Died in hospital"},
    "icu": {"type": "binary", "description": "ICU stay"},
    "ward": {**COLUMNS["ward"], "description": "Ward"},
}
PARAMS = {"variables": ["age", "crp", "icu", "ward"], "by": "death"}


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    return [cohort(n, seed) for n, seed in ((400, 1), (250, 2), (600, 3))]


def _smd_numeric(a: np.ndarray, b: np.ndarray) -> float:
    return (b.mean() - a.mean()) / math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)


def _smd_categorical(a: pd.Series, b: pd.Series, levels: list[str]) -> float:
    """Yang & Dalton (2012), first level the reference; by hand."""
    p = [np.array([(s == lv).mean() for lv in levels[1:]]) for s in (a, b)]
    S = sum(np.diag(q) - np.outer(q, q) for q in p) / 2
    d = p[1] - p[0]
    return float(np.sqrt(d @ np.linalg.inv(S) @ d))


def test_table1_csv_integers_labels_units_and_smd(frames: list[pd.DataFrame]) -> None:
    res = federate(frames, "table1", PARAMS, OPEN, descriptor(LABELLED))
    text = res.to_csv()
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert list(table.columns) == [
        "variable", "label", "unit", "statistic",
        "overall", "death = no (0)", "death = yes (1)", "smd", "note",
    ]  # fmt: skip
    row = table[(table["variable"] == "N")].iloc[0]
    pooled = pd.concat(frames, ignore_index=True)
    assert row["overall"] == str(len(pooled))  # an integer, not "1250.0"
    age = table[table["variable"] == "age"].set_index("statistic")
    assert set(age["label"]) == {"Age at admission"} and set(age["unit"]) == {"years"}
    assert age.loc["n", "overall"] == str(pooled["age"].notna().sum())
    assert age.loc["missing", "overall"] == str(pooled["age"].isna().sum())
    assert "." not in age.loc["n", "overall"] + age.loc["missing", "death = yes (1)"]
    assert age.loc["mean", "overall"] == str(round(pooled["age"].mean(), 1))  # SD ~14: 1 decimal
    crp = table[table["variable"] == "crp"].set_index("statistic")
    assert set(crp["unit"]) == {"mg/L"}  # released harmonised: the canonical unit, not mg/dL
    icu = table[table["variable"] == "icu"]
    assert list(icu["statistic"][:2]) == ["n: yes (1)", "%: yes (1)"]
    # SMD: on each variable's first row, equal to the pooled computation
    dead, alive = (pooled[pooled["death"] == k] for k in (1, 0))
    smd = {v: float(table[table["variable"] == v]["smd"].iloc[0]) for v in PARAMS["variables"]}
    assert smd["age"] == pytest.approx(
        _smd_numeric(alive["age"].dropna().to_numpy(), dead["age"].dropna().to_numpy()), abs=1e-3
    )
    p0, p1 = (d["icu"].dropna().astype(float).mean() for d in (alive, dead))
    assert smd["icu"] == pytest.approx(
        (p1 - p0) / math.sqrt((p0 * (1 - p0) + p1 * (1 - p1)) / 2), abs=1e-3
    )
    assert smd["ward"] == pytest.approx(
        _smd_categorical(alive["ward"].dropna(), dead["ward"].dropna(), ["a", "b", "c", "d"]),
        abs=1e-3,
    )
    assert res.smd("age") == pytest.approx(smd["age"], abs=1e-3)
    # the formatted table shows the same headers and the SMD
    text = res.to_text()
    assert "death = yes (1)" in text and "SMD" in text and f"{smd['age']:.2f}" in text
    assert "age (years), mean (SD)" in text and "icu = yes (1), n (%)" in text
    assert "SMD: standardised mean difference, death = yes (1) vs death = no (0)" in text


def test_without_two_groups_there_is_no_smd(frames: list[pd.DataFrame]) -> None:
    res = federate(frames, "table1", {"variables": ["age"], "by": "ward"}, OPEN, descriptor())
    assert res.smd("age") is None
    assert "smd" not in res.to_table().columns


def test_withheld_cells_say_which_site_and_why(frames: list[pd.DataFrame]) -> None:
    small = cohort(60, 9)
    small.loc[small.index[:3], "ward"] = "d"
    small.loc[small.index[3:], "ward"] = small.loc[small.index[3:], "ward"].replace("d", "c")
    res = federate([*frames, small], "table1", {"variables": ["ward"]}, EXACT, descriptor())
    cells = res.withheld_cells()
    assert cells, "the small site's 3 patients in ward d must be withheld"
    d_cell = next(c for c in cells if (c["row"], c["group"]) == ("d", "overall"))
    assert d_cell["sites"] == ["site4"]
    assert "counts of 1 to min_cell_count - 1 patients" in d_cell["why"]["site4"]
    assert res.value("ward", "d") is None  # withheld, never 0
    table = res.to_table()
    note = table[(table["variable"] == "ward") & (table["statistic"] == "n: d")]["note"].iloc[0]
    assert note == "overall: withheld by site4"
    assert pd.isna(
        table[(table["variable"] == "ward") & (table["statistic"] == "n: d")]["overall"].iloc[0]
    )
    assert "Withheld by site: site4: " in res.to_text()
    d = res.to_dict()
    assert d["withheld_cells"][0]["sites"] == ["site4"] and "site4" in d["withheld_by_site"]


def test_results_render_in_notebooks(frames: list[pd.DataFrame]) -> None:
    t1 = federate(frames, "table1", PARAMS, OPEN, descriptor(LABELLED))
    html = t1._repr_html_()
    assert html.startswith("<table") and "death = yes (1)" in html and "Sites contributed" in html
    desc = federate(frames, "describe", {"variables": ["age"]}, OPEN, descriptor())
    assert "<table" in desc._repr_html_() and "mean" in desc._repr_html_()
    ct = federate(frames, "crosstab", {"row": "ward", "col": "sex"}, OPEN, descriptor())
    assert "<table" in ct._repr_html_()
    cnt = federate(frames, "count", {}, OPEN, descriptor())
    assert "<table" in cnt._repr_html_()
