"""One dataset, three sources: a CSV file, a Parquet file and a frame give the same view.

Issue 12, item 1: binary columns with declared levels read from CSV were coded twice
(into the Parquet cache, then again in the view): ``levels = ["No", "Yes"]`` made every
value NULL, ``levels = ["1", "2"]`` turned 1 into NULL and 2 into 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from healthfed.data.dataset import NodeDataset, render_descriptor_toml
from healthfed.data.descriptor import descriptor_from_dict, load_descriptor

NAN = np.nan

#: Every column type, and binary/categorical levels spelled every way a steward writes them.
COLUMNS: dict[str, dict[str, Any]] = {
    "pid": {"type": "id"},
    "age": {"type": "numeric", "unit": "years", "bounds": [0, 120]},
    "crp": {"type": "numeric", "unit": "mg/dL", "bounds": [0, 600]},  # converted to mg/L
    "visits": {"type": "integer", "bounds": [0, 100]},
    "yes_no": {"type": "binary", "levels": ["No", "Yes"]},
    "one_two": {"type": "binary", "levels": ["1", "2"]},
    "one_two_float": {"type": "binary", "levels": [1, 2]},
    "zero_one_int": {"type": "binary", "levels": [0, 1]},
    "zero_one_default": {"type": "binary"},
    "zero_one_float": {"type": "binary", "levels": [0.0, 1.0]},
    "true_false": {"type": "binary", "levels": [True, False]},  # true is coded 0
    "false_true_text": {"type": "binary", "levels": ["False", "True"]},
    "bool_default": {"type": "binary"},
    "sex": {"type": "categorical", "levels": ["female", "male"]},
    "stage": {"type": "categorical", "levels": ["1", "2", "3"]},
    "stage_int_levels": {"type": "categorical", "levels": [1, 2, 3]},
    "ward": {"type": "categorical"},  # no declared levels
    "flag": {"type": "categorical", "levels": [False, True]},
}


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pid": ["p1", "p2", "p3", "p4"],
            "age": [70.0, 45.5, NAN, 81.0],
            "crp": [1.5, NAN, 12.0, 0.0],
            "visits": [3.0, 0.0, 7.0, NAN],
            "yes_no": ["Yes", "No", None, "Yes"],
            "one_two": [1, 2, 2, 1],
            "one_two_float": [1.0, 2.0, NAN, 1.0],
            "zero_one_int": [0, 1, 1, 0],
            "zero_one_default": [1.0, NAN, 0.0, 1.0],
            "zero_one_float": [0.0, 1.0, NAN, 1.0],
            "true_false": [True, False, None, True],
            "false_true_text": [False, True, True, None],
            "bool_default": [True, False, True, False],
            "sex": pd.Categorical(["male", "female", None, "male"]),
            "stage": [1.0, 2.0, NAN, 3.0],
            "stage_int_levels": [3, 1, 2, 2],
            "ward": ["A", "B", None, "A"],
            "flag": [True, None, False, True],
        }
    )


#: The view's values (ordered by pid), whatever the source.
EXPECTED = {
    "age": [70.0, 45.5, None, 81.0],
    "crp": [15.0, None, 120.0, 0.0],
    "visits": [3.0, 0.0, 7.0, None],
    "yes_no": [1, 0, None, 1],
    "one_two": [0, 1, 1, 0],
    "one_two_float": [0, 1, None, 0],
    "zero_one_int": [0, 1, 1, 0],
    "zero_one_default": [1, None, 0, 1],
    "zero_one_float": [0, 1, None, 1],
    "true_false": [0, 1, None, 0],
    "false_true_text": [0, 1, 1, None],
    "bool_default": [1, 0, 1, 0],
    "sex": ["male", "female", None, "male"],
    "stage": ["1", "2", None, "3"],
    "stage_int_levels": ["3", "1", "2", "2"],
    "ward": ["A", "B", None, "A"],
    "flag": ["true", None, "false", "true"],
}


def _descriptor(tmp_path: Path, file: str, fmt: str) -> Path:
    path = tmp_path / f"{Path(file).stem}-{fmt}.toml"
    path.write_text(
        render_descriptor_toml(
            {"name": "same", "file": file, "format": fmt, "id_column": "pid"}, COLUMNS
        )
    )
    return path


def _view(ds: NodeDataset) -> dict[str, list[Any]]:
    with ds.connect() as con:
        out = con.execute("SELECT * FROM data ORDER BY pid").fetchdf()
    return {
        c: [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in out[c]]
        for c in out.columns
    }


def _three_sources(tmp_path: Path, df: pd.DataFrame) -> dict[str, NodeDataset]:
    df.to_csv(tmp_path / "same.csv", index=False)
    df.to_parquet(tmp_path / "same.parquet", index=False)
    csv = NodeDataset.from_descriptor_file(
        _descriptor(tmp_path, "same.csv", "csv"), cache_dir=tmp_path / "cache"
    )
    parquet = NodeDataset.from_descriptor_file(
        _descriptor(tmp_path, "same.parquet", "parquet"), cache_dir=tmp_path / "cache"
    )
    frame_ds = NodeDataset.from_frame(df, load_descriptor(_descriptor(tmp_path, "x.csv", "csv")))
    return {"csv": csv, "parquet": parquet, "frame": frame_ds}


def test_csv_parquet_and_frame_give_the_same_values_for_every_type_and_spelling(
    tmp_path: Path,
) -> None:
    views = {src: _view(ds) for src, ds in _three_sources(tmp_path, frame()).items()}
    for src, view in views.items():
        assert view["pid"] == ["p1", "p2", "p3", "p4"], src
        for col, expected in EXPECTED.items():
            assert view[col] == expected, (src, col, view[col])


def test_the_csv_cache_is_read_as_typed_on_a_second_open(tmp_path: Path) -> None:
    """The second open reads the cache written by the first: still coded once."""
    first = _view(_three_sources(tmp_path, frame())["csv"])
    assert list((tmp_path / "cache").glob("*.parquet"))
    again = NodeDataset.from_descriptor_file(
        tmp_path / "same-csv.toml", cache_dir=tmp_path / "cache"
    )
    assert _view(again) == first
    assert first["yes_no"] == EXPECTED["yes_no"]


@pytest.mark.parametrize(
    ("levels", "texts", "coded"),
    [
        (["No", "Yes"], ["Yes", "No", ""], [1, 0, None]),
        (["1", "2"], ["1", "2", "2.0"], [0, 1, 1]),
        ([0, 1], ["0", "1.0", "NA"], [0, 1, None]),
        ([True, False], ["TRUE", "false", "True"], [0, 1, 0]),
        (None, ["true", "FALSE", "1"], [1, 0, 1]),
    ],
)
def test_hand_written_csv_binary_spellings(
    tmp_path: Path, levels: list[Any] | None, texts: list[str], coded: list[int | None]
) -> None:
    (tmp_path / "b.csv").write_text("pid,b\n" + "".join(f"p{i},{t}\n" for i, t in enumerate(texts)))
    spec: dict[str, Any] = {"type": "binary"}
    if levels is not None:
        spec["levels"] = levels
    raw = {
        "dataset": {"name": "b", "file": "b.csv", "id_column": "pid"},
        "columns": {"pid": {"type": "id"}, "b": spec},
    }
    ds = NodeDataset(descriptor_from_dict(raw, tmp_path), cache_dir=tmp_path / "cache")
    assert _view(ds)["b"] == coded
