"""The steward's check of a dataset (issue 12, item 2): out of bounds, booleans, units, missing.

Values outside the declared bounds are counted (rounded, never shown); a Parquet
boolean column declared numeric is refused; an all-missing column and a column whose
values fit another unit far better than the declared one get a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from healthfed.data.dataset import NodeDataset, render_descriptor_toml
from healthfed.data.profile import rounded_count
from healthfed.errors import DataError


def _dataset(tmp_path: Path, df: pd.DataFrame, columns: dict[str, Any]) -> NodeDataset:
    df.to_parquet(tmp_path / "d.parquet", index=False)
    desc = tmp_path / "d.toml"
    desc.write_text(
        render_descriptor_toml(
            {"name": "d", "file": "d.parquet", "id_column": "pid"},
            {"pid": {"type": "id"}, **columns},
        )
    )
    return NodeDataset.from_descriptor_file(desc, cache_dir=tmp_path / "cache")


def _cohort(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": [f"p{i}" for i in range(n)],
            "age": rng.uniform(20, 95, n).round(),
            "crp": rng.lognormal(3.5, 1.0, n).clip(0.2, 590),  # mg/L: median ~33
        }
    )


def test_rounded_count() -> None:
    assert [rounded_count(n) for n in (0, 1, 4, 7, 8, 12, 13, 1001)] == [
        0,
        5,
        5,
        5,
        10,
        10,
        15,
        1000,
    ]


def test_out_of_bounds_values_are_counted_rounded(tmp_path: Path) -> None:
    df = _cohort()
    df.loc[0, "age"] = 1e6  # the value of issue 12: moves the mean to ~2,559
    df.loc[1:7, "age"] = -3.0  # 7 below
    ds = _dataset(tmp_path, df, {"age": {"type": "numeric", "unit": "years", "bounds": [0, 110]}})
    p = ds.profile()
    age = p.columns["age"]
    assert (age.below, age.above) == (5, 5)  # 7 and 1, rounded (1 shows as 5)
    assert p.out_of_bounds == ["age"]
    assert "1000000" not in str(p.to_dict()) and "1e+06" not in str(p.to_dict())


def test_values_within_bounds_pass(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, _cohort(), {"age": {"type": "numeric", "bounds": [0, 110]}})
    p = ds.profile()
    assert p.out_of_bounds == [] and p.warnings == []
    assert p.n_rows == 400 and p.columns["age"].missing == 0


@pytest.mark.parametrize("declared", ["numeric", "integer"])
def test_parquet_boolean_declared_numeric_is_refused(tmp_path: Path, declared: str) -> None:
    df = pd.DataFrame({"pid": ["a", "b", "c"], "smoker": [True, False, True]})
    ds = _dataset(tmp_path, df, {"smoker": {"type": declared}})
    with pytest.raises(DataError, match=r"'smoker' \(.*\) declared numeric but the Parquet"):
        ds.validate()
    with pytest.raises(DataError, match='type = "binary"'):
        ds.profile()


def test_all_missing_column_gets_a_warning(tmp_path: Path) -> None:
    df = _cohort().assign(lactate=np.nan, ward=None)
    ds = _dataset(
        tmp_path,
        df,
        {
            "age": {"type": "numeric", "bounds": [0, 110]},
            "lactate": {"type": "numeric", "bounds": [0, 30]},
            "ward": {"type": "categorical", "levels": ["a", "b"]},
        },
    )
    p = ds.profile()
    assert p.warnings == [
        "column 'lactate': every value is missing",
        "column 'ward': every value is missing",
    ]
    assert p.columns["lactate"].missing == 400
    assert p.out_of_bounds == []  # a warning, not a failure


def test_crp_in_mg_dl_declared_as_mg_l_gets_a_unit_warning(tmp_path: Path) -> None:
    df = _cohort()
    df["crp"] = df["crp"] / 10  # the file holds mg/dL
    ds = _dataset(tmp_path, df, {"crp": {"type": "numeric", "unit": "mg/L", "bounds": [0, 600]}})
    (warning,) = ds.profile().warnings
    assert warning.startswith("column 'crp': its values fit unit 'mg/dl' better than")
    assert "'mg/L'" in warning and "unit" in warning


def test_crp_declared_in_its_unit_gets_no_warning(tmp_path: Path) -> None:
    for unit, scale in (("mg/L", 1.0), ("mg/dL", 0.1)):
        df = _cohort()
        df["crp"] = df["crp"] * scale
        ds = _dataset(tmp_path, df, {"crp": {"type": "numeric", "unit": unit, "bounds": [0, 600]}})
        assert ds.profile().warnings == [], unit


def test_crp_in_mg_l_declared_as_mg_dl_is_out_of_bounds_and_says_which_unit(
    tmp_path: Path,
) -> None:
    ds = _dataset(
        tmp_path, _cohort(), {"crp": {"type": "numeric", "unit": "mg/dL", "bounds": [0, 600]}}
    )
    p = ds.profile()
    assert p.out_of_bounds == ["crp"]  # x10: many values above 600 mg/L
    (warning,) = p.warnings
    assert "fit unit 'mg/l' better than the declared 'mg/dL'" in warning
    assert "fall outside the declared bounds" in warning


def test_temperature_in_fahrenheit_declared_celsius(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"pid": [f"p{i}" for i in range(300)], "temp": rng.normal(98.6, 1.2, 300)})
    ds = _dataset(tmp_path, df, {"temp": {"type": "numeric", "unit": "°C", "bounds": [33, 43]}})
    p = ds.profile()
    assert p.out_of_bounds == ["temp"]
    assert "fit unit '°f'" in p.warnings[0]
