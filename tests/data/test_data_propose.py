"""``node describe-data``: a proposed descriptor that loads back and fits the data (issue 12).

Also the generated pseudonymous id of a file without an id column (``generate_id``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict, load_descriptor
from healthfed.data.propose import nice_bounds, propose_descriptor
from healthfed.errors import DataError


def frame(n: int = 200, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "patient_id": [f"P{i:04d}" for i in range(n)],
            "age": rng.integers(18, 98, n).astype(float),
            "crp": rng.lognormal(3, 1, n).round(1).clip(0.2, 587),
            "smoker": rng.choice(["Yes", "No"], n),
            "stage": rng.choice([1, 2, 3], n).astype(float),
            "ward": rng.choice(["a", "b", "c", "d"], n),
            "flag": rng.choice([True, False], n),
            "died": rng.choice([0, 1], n),
        }
    )
    df.loc[::7, "crp"] = np.nan
    df.loc[::11, "smoker"] = None
    return df


def _load(tmp_path: Path, data: Path, **kwargs: object) -> tuple[dict, NodeDataset]:
    text = propose_descriptor(data, **kwargs)  # type: ignore[arg-type]
    desc = data.with_suffix(".toml")
    desc.write_text(text)
    raw = tomllib.loads(text)
    load_descriptor(desc)  # the existing loader reads it back
    return raw, NodeDataset.from_descriptor_file(desc, cache_dir=tmp_path / "cache")


def test_nice_bounds_round_outward() -> None:
    assert nice_bounds(18, 97) == (10, 100)
    assert nice_bounds(0.2, 587) == (0, 600)
    assert nice_bounds(35.1, 41.2) == (35, 42)
    for lo, hi in [(0.013, 0.93), (-2.5, 7.1), (50, 5000), (3, 3)]:
        low, high = nice_bounds(lo, hi)
        assert low <= lo and hi <= high and low < high


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_proposed_descriptor_loads_back_and_fits_the_data(tmp_path: Path, fmt: str) -> None:
    df = frame()
    data = tmp_path / f"site.{fmt}"
    if fmt == "csv":
        df.to_csv(data, index=False, sep=";", na_rep="N/A")
    else:
        df.to_parquet(data, index=False)
    raw, ds = _load(tmp_path, data, name="site")
    assert raw["dataset"] == {
        "name": "site",
        "file": f"site.{fmt}",
        "format": fmt,
        "id_column": "patient_id",
    }
    if fmt == "csv":
        assert raw["csv"]["delimiter"] == ";"
        assert "N/A" in raw["csv"]["na_values"]
    cols = raw["columns"]
    assert cols["patient_id"] == {"type": "id"}
    assert cols["age"]["type"] == "integer" and cols["age"]["bounds"] == [10, 100]
    assert cols["crp"]["type"] == "numeric"
    assert cols["crp"]["bounds"] == list(nice_bounds(df["crp"].min(), df["crp"].max()))
    assert cols["smoker"] == {"type": "binary", "levels": ["No", "Yes"]}  # "No" codes 0
    assert cols["stage"]["type"] == "integer"  # whole numbers: the steward may say categorical
    assert cols["ward"] == {"type": "categorical", "levels": ["a", "b", "c", "d"]}
    assert cols["flag"]["type"] == "binary"
    assert cols["died"] == {"type": "binary", "levels": [0, 1]}
    profile = ds.profile()
    assert profile.n_rows == 200 and profile.out_of_bounds == [] and profile.warnings == []
    assert profile.columns["crp"].missing == int(df["crp"].isna().sum())
    assert profile.columns["smoker"].levels == {
        "No": int((df["smoker"] == "No").sum()),
        "Yes": int((df["smoker"] == "Yes").sum()),
    }
    assert sum(profile.columns["flag"].levels.values()) == 200


def test_no_patient_values_in_the_proposal(tmp_path: Path) -> None:
    df = frame()
    data = tmp_path / "site.csv"
    df.to_csv(data, index=False)
    text = propose_descriptor(data)
    assert "P0001" not in text  # ids are never listed
    assert str(df["crp"].max()) not in text and str(df["age"].min()) not in text


def test_a_file_without_id_gets_a_generated_pseudonymous_id(tmp_path: Path) -> None:
    df = frame().drop(columns=["patient_id"])
    df = pd.concat([df, df.iloc[[0, 0]]], ignore_index=True)  # two repeats of row 0
    data = tmp_path / "noid.csv"
    df.to_csv(data, index=False)
    raw, ds = _load(tmp_path, data)
    assert raw["dataset"]["id_column"] == "row_id" and raw["dataset"]["generate_id"] is True
    with ds.connect() as con:
        ids = [r[0] for r in con.execute("SELECT row_id FROM data").fetchall()]
    assert len(ids) == 202 and len(set(ids)) == 202
    assert all(i.startswith("g") for i in ids)
    assert sum(i.endswith(("-2", "-3")) for i in ids) == 2  # the repeated rows
    # Stable: the same ids from a fresh load, from the Parquet file, and in another row order.
    again = NodeDataset.from_descriptor_file(data.with_suffix(".toml"), cache_dir=tmp_path / "c2")
    with again.connect() as con:
        assert [r[0] for r in con.execute("SELECT row_id FROM data").fetchall()] == ids
    df.iloc[::-1].to_parquet(tmp_path / "noid.parquet", index=False)
    d = load_descriptor(data.with_suffix(".toml"))
    pq = descriptor_from_dict(
        {
            "dataset": {
                "name": d.name,
                "file": "noid.parquet",
                "id_column": "row_id",
                "generate_id": True,
            },
            "columns": {n: {"type": c.type} for n, c in d.columns.items() if c.type != "id"}
            | {"smoker": {"type": "binary", "levels": ["No", "Yes"]}},
        },
        tmp_path,
    )
    with NodeDataset(pq, cache_dir=tmp_path / "c3").connect() as con:
        assert sorted(r[0] for r in con.execute("SELECT row_id FROM data").fetchall()) == sorted(
            ids
        )
    frame_ds = NodeDataset.from_frame(df, pq)
    with frame_ds.connect() as con:
        assert [r[0] for r in con.execute("SELECT row_id FROM data").fetchall()] == ids


def test_generate_id_refuses_a_file_that_has_the_column(tmp_path: Path) -> None:
    frame().to_csv(tmp_path / "x.csv", index=False)
    raw = {
        "dataset": {
            "name": "x",
            "file": "x.csv",
            "id_column": "patient_id",
            "generate_id": True,
        },
        "columns": {"age": {"type": "numeric"}},
    }
    ds = NodeDataset(descriptor_from_dict(raw, tmp_path), cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="generate_id is set but the data already has a column"):
        ds.validate()
    with pytest.raises(DataError, match="generate_id.*true or false"):
        descriptor_from_dict({**raw, "dataset": {**raw["dataset"], "generate_id": "yes"}}, tmp_path)


def test_a_decimal_comma_file_gets_decimal_and_numeric_columns(tmp_path: Path) -> None:
    """A spreadsheet export (``;`` and ``50,5``): the proposal says ``decimal = ","`` and the
    numbers are numbers, read back the same as from the frame."""
    df = frame()
    data = tmp_path / "site.csv"
    df.to_csv(data, index=False, sep=";", decimal=",", na_rep="NA")
    raw, ds = _load(tmp_path, data, name="site")
    assert raw["csv"]["delimiter"] == ";" and raw["csv"]["decimal"] == ","
    cols = raw["columns"]
    assert cols["crp"]["type"] == "numeric"
    assert cols["crp"]["bounds"] == list(nice_bounds(df["crp"].min(), df["crp"].max()))
    profile = ds.profile()
    assert profile.n_rows == 200 and profile.out_of_bounds == []
    assert profile.columns["crp"].missing == int(df["crp"].isna().sum())
