"""Empty inputs (issue 12, item 3): a header-only CSV, a zero-row Parquet file, an empty frame.

Each is refused with one clear DataError naming the file (never a TypeError), and
nothing is cached for it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from healthfed.data.dataset import NodeDataset, render_descriptor_toml
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.errors import DataError

COLUMNS = {
    "pid": {"type": "id"},
    "age": {"type": "numeric", "unit": "years", "bounds": [0, 120]},
    "smoker": {"type": "binary", "levels": ["No", "Yes"]},
}


def _descriptor(tmp_path: Path, file: str) -> Path:
    path = tmp_path / f"{file}.toml"
    path.write_text(
        render_descriptor_toml({"name": "empty", "file": file, "id_column": "pid"}, COLUMNS)
    )
    return path


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pid": pd.Series([], dtype=str),
            "age": pd.Series([], dtype=float),
            "smoker": pd.Series([], dtype=str),
        }
    )


def test_header_only_csv_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("pid,age,smoker\n")
    ds = NodeDataset.from_descriptor_file(_descriptor(tmp_path, "e.csv"), tmp_path / "cache")
    with pytest.raises(DataError, match=r"e\.csv.*no rows \(a header only\)"):
        ds.validate()
    with pytest.raises(DataError, match="no rows"):
        ds.n_rows  # noqa: B018 - the same clear error on every use
    assert not list((tmp_path / "cache").glob("*"))  # nothing cached for an empty file


def test_zero_row_parquet_is_refused_naming_the_file(tmp_path: Path) -> None:
    _empty_frame().to_parquet(tmp_path / "e.parquet")
    ds = NodeDataset.from_descriptor_file(_descriptor(tmp_path, "e.parquet"), tmp_path / "cache")
    with pytest.raises(DataError, match=r"e\.parquet.*no rows \(zero rows\)"):
        ds.connect()
    assert not list((tmp_path / "cache").glob("*.json"))  # no validation stamp


def test_empty_frame_is_refused(tmp_path: Path) -> None:
    raw = {"dataset": {"name": "empty", "file": "x.csv", "id_column": "pid"}, "columns": COLUMNS}
    ds = NodeDataset.from_frame(_empty_frame(), descriptor_from_dict(raw, tmp_path))
    with pytest.raises(DataError, match="in-memory frame.*no rows"):
        ds.validate()
