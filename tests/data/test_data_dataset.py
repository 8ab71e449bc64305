"""NodeDataset: typed harmonised view, CSV cache, validation errors that name file and column."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import healthfed.data.dataset
from healthfed.data.dataset import NodeDataset, render_descriptor_toml
from healthfed.data.descriptor import descriptor_from_dict, load_descriptor
from healthfed.errors import DataError

COLUMNS = {
    "pid": {"type": "id"},
    "age": {"type": "numeric", "unit": "years", "bounds": [0, 120]},
    "sex": {"type": "categorical", "levels": ["female", "male"]},
    "stage": {"type": "categorical", "levels": ["1", "2", "3"]},
    "diabetes": {"type": "binary"},
    "crp": {"type": "numeric", "unit": "mg/dL", "bounds": [0, 600]},
    "visits": {"type": "integer", "bounds": [0, 100]},
}
CSV = """pid,age,sex,stage,diabetes,crp,visits,extra
p1,70,male,1,0,1.5,3,x
p2,45,female,2,1,NA,0,y
p3,81,male,3,1,12,,z
"""


def write_csv_dataset(tmp_path: Path, text: str = CSV, columns: dict | None = None) -> Path:
    (tmp_path / "site.csv").write_text(text)
    desc = tmp_path / "site.toml"
    desc.write_text(
        render_descriptor_toml(
            {"name": "demo", "file": "site.csv", "format": "csv", "id_column": "pid"},
            columns or COLUMNS,
        )
    )
    return desc


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pid": [101, 102, 103],
            "age": [70.0, 45.0, 81.0],
            "sex": pd.Categorical(["male", "female", "male"]),
            "stage": [1.0, 2.0, np.nan],  # floats from pandas: 1.0 must read as '1'
            "diabetes": [0, 1, 1],
            "crp": [1.5, np.nan, 12.0],
            "visits": [3, 0, 7],
        }
    )


def test_csv_round_trip_types_units_and_hash(tmp_path: Path) -> None:
    desc_path = write_csv_dataset(tmp_path)
    ds = NodeDataset.from_descriptor_file(desc_path, cache_dir=tmp_path / "cache")
    assert ds.name == "demo" and ds.n_rows == 3
    with ds.connect() as con:
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE data)").fetchall())
        rows = con.execute("SELECT * FROM data ORDER BY pid").fetchall()
    assert types == {
        "pid": "VARCHAR", "age": "DOUBLE", "sex": "VARCHAR", "stage": "VARCHAR",
        "diabetes": "INTEGER", "crp": "DOUBLE", "visits": "DOUBLE",
    }  # fmt: skip
    assert rows == [
        ("p1", 70.0, "male", "1", 0, 15.0, 3.0),  # crp mg/dL -> mg/L
        ("p2", 45.0, "female", "2", 1, None, 0.0),
        ("p3", 81.0, "male", "3", 1, 120.0, None),
    ]
    assert ds.content_hash() == hashlib.sha256((tmp_path / "site.csv").read_bytes()).hexdigest()


def test_parquet_round_trip_and_frame_agree(tmp_path: Path) -> None:
    df = frame()
    df.to_parquet(tmp_path / "site.parquet")
    (tmp_path / "site.toml").write_text(
        render_descriptor_toml(
            {"name": "demo", "file": "site.parquet", "format": "parquet", "id_column": "pid"},
            COLUMNS,
        )
    )
    from_file = NodeDataset.from_descriptor_file(tmp_path / "site.toml", cache_dir=tmp_path / "c")
    from_frame = NodeDataset.from_frame(df, load_descriptor(tmp_path / "site.toml"))
    query = "SELECT * FROM data ORDER BY pid"
    with from_file.connect() as a, from_frame.connect() as b:
        rows_a, rows_b = a.execute(query).fetchall(), b.execute(query).fetchall()
    assert rows_a == rows_b
    assert rows_a[0] == ("101", 70.0, "male", "1", 0, 15.0, 3.0)
    assert rows_a[2][3] is None and rows_a[1][5] is None  # NaN reads as NULL
    assert (
        from_file.content_hash()
        == hashlib.sha256((tmp_path / "site.parquet").read_bytes()).hexdigest()
    )
    assert len(from_frame.content_hash()) == 64


def test_connections_are_independent(tmp_path: Path) -> None:
    ds = NodeDataset.from_descriptor_file(write_csv_dataset(tmp_path), cache_dir=tmp_path / "c")
    a, b = ds.connect(), ds.connect()
    assert a is not b
    a.execute("CREATE TABLE scratch AS SELECT 1")
    a.close()
    assert b.execute("SELECT count(*) FROM data").fetchone() == (3,)
    assert b.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'"
    ).fetchone() == (0,)
    b.close()


def _objects(con: object) -> list[tuple]:
    return con.execute(  # type: ignore[attr-defined]
        "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND NOT temporary "
        "UNION ALL SELECT table_name, sql FROM duckdb_tables() ORDER BY ALL"
    ).fetchall()


@pytest.mark.parametrize("source", ["csv", "frame"])
def test_a_leased_connection_comes_back_as_it_was_made(tmp_path: Path, source: str) -> None:
    if source == "csv":
        ds = NodeDataset.from_descriptor_file(write_csv_dataset(tmp_path), cache_dir=tmp_path / "c")
    else:
        ds = NodeDataset.from_frame(frame(), load_descriptor(write_csv_dataset(tmp_path)))
    con = ds.lease()
    pristine = _objects(con)
    # what requests do: swap the view (opt-outs, subgroups), scratch tables
    con.execute("ALTER VIEW data RENAME TO all_rows")
    con.execute("CREATE TABLE hashes (h VARCHAR)")
    con.execute("CREATE VIEW data AS SELECT * FROM all_rows WHERE age > 50")
    con.execute("CREATE TEMP TABLE rows AS SELECT * FROM data")
    assert con.execute("SELECT count(*) FROM data").fetchone() == (2,)
    ds.give_back(con)
    again = ds.lease()
    assert again is con  # the same database, used again...
    assert _objects(again) == pristine  # ...with none of the request's objects
    assert again.execute("SELECT count(*) FROM data").fetchone() == (3,)
    ds.give_back(again)


def test_a_connection_that_failed_or_was_interrupted_is_not_reused(tmp_path: Path) -> None:
    ds = NodeDataset.from_descriptor_file(write_csv_dataset(tmp_path), cache_dir=tmp_path / "c")
    con = ds.lease()
    with pytest.raises(Exception, match="no_such_table"):
        con.execute("SELECT * FROM no_such_table")
    ds.give_back(con)  # the transaction is rolled back; the catalogue is as new: kept
    kept = ds.lease()
    assert kept is con and kept.execute("SELECT count(*) FROM data").fetchone() == (3,)
    ds.give_back(kept, reusable=False)  # e.g. the request's deadline interrupted it
    fresh = ds.lease()
    assert fresh is not con
    assert fresh.execute("SELECT count(*) FROM data").fetchone() == (3,)
    ds.give_back(fresh)


def test_csv_cache_is_reused_then_invalidated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desc = write_csv_dataset(tmp_path)
    cache = tmp_path / "cache"
    assert NodeDataset.from_descriptor_file(desc, cache_dir=cache).n_rows == 3
    cached = list(cache.glob("*.parquet"))
    assert len(cached) == 1 and not list(cache.glob(".*.tmp"))

    calls: list[Path] = []
    original = NodeDataset._to_cache
    monkeypatch.setattr(
        NodeDataset,
        "_to_cache",
        lambda self, con, path, prefix: (calls.append(path), original(self, con, path, prefix)),
    )
    assert NodeDataset.from_descriptor_file(desc, cache_dir=cache).n_rows == 3
    assert calls == []  # reused

    csv = tmp_path / "site.csv"
    csv.write_text(CSV + "p4,30,female,1,0,0.5,1,w\n")
    st = csv.stat()
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    ds = NodeDataset.from_descriptor_file(desc, cache_dir=cache)
    assert ds.n_rows == 4 and len(calls) == 1
    assert list(cache.glob("*.parquet")) == [calls[0]]  # the stale cache was removed


def test_default_cache_dir_is_next_to_the_csv(tmp_path: Path) -> None:
    ds = NodeDataset.from_descriptor_file(write_csv_dataset(tmp_path))
    assert ds.n_rows == 3
    assert list((tmp_path / ".healthfed-cache").glob("site-*.parquet"))


def test_parquet_validation_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame().to_parquet(tmp_path / "site.parquet")
    (tmp_path / "site.toml").write_text(
        render_descriptor_toml(
            {"name": "demo", "file": "site.parquet", "id_column": "pid"}, COLUMNS
        )
    )
    cache = tmp_path / "c"
    assert NodeDataset.from_descriptor_file(tmp_path / "site.toml", cache_dir=cache).n_rows == 3

    def boom(*args: object, **kwargs: object) -> int:
        raise AssertionError("rescanned an unchanged, validated file")

    monkeypatch.setattr(healthfed.data.dataset, "check_values", boom)
    assert NodeDataset.from_descriptor_file(tmp_path / "site.toml", cache_dir=cache).n_rows == 3


def test_headerless_csv_with_delimiter_and_na_values(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("a;61;?\nb;?;1\n")
    raw = {
        "dataset": {"name": "hd", "file": "d.txt", "format": "csv", "id_column": "pid"},
        "csv": {"delimiter": ";", "header": False, "na_values": ["?"]},
        "columns": {"pid": {"type": "id"}, "age": {"type": "numeric"}, "fbs": {"type": "binary"}},
    }
    ds = NodeDataset(descriptor_from_dict(raw, tmp_path), cache_dir=tmp_path / "c")
    with ds.connect() as con:
        assert con.execute("SELECT * FROM data ORDER BY pid").fetchall() == [
            ("a", 61.0, None),
            ("b", None, 1),
        ]


def test_binary_levels_give_the_coding(tmp_path: Path) -> None:
    raw = {
        "dataset": {"name": "x", "file": "x.parquet", "id_column": "pid"},
        "columns": {"pid": {"type": "id"}, "smoker": {"type": "binary", "levels": ["no", "yes"]}},
    }
    df = pd.DataFrame({"pid": ["a", "b", "c"], "smoker": ["yes", "no", None]})
    ds = NodeDataset.from_frame(df, descriptor_from_dict(raw, tmp_path))
    with ds.connect() as con:
        assert con.execute("SELECT smoker FROM data ORDER BY pid").fetchall() == [
            (1,),
            (0,),
            (None,),
        ]


# --- error paths: every message names the file and the column ----------------------------------
def _error(tmp_path: Path, text: str, columns: dict | None = None) -> str:
    desc = write_csv_dataset(tmp_path, text, columns)
    with pytest.raises(DataError) as exc:
        NodeDataset.from_descriptor_file(desc, cache_dir=tmp_path / "cache").connect()
    assert not list((tmp_path / "cache").glob("*.parquet"))  # nothing cached for invalid data
    return str(exc.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    desc = write_csv_dataset(tmp_path)
    (tmp_path / "site.csv").unlink()
    with pytest.raises(DataError, match=r"site\.csv") as exc:
        NodeDataset.from_descriptor_file(desc, cache_dir=tmp_path / "c").n_rows  # noqa: B018
    assert "not found" in str(exc.value)


def test_unreadable_parquet_is_named(tmp_path: Path) -> None:
    (tmp_path / "site.parquet").write_bytes(b"this is not parquet")
    (tmp_path / "site.toml").write_text(
        render_descriptor_toml(
            {"name": "demo", "file": "site.parquet", "id_column": "pid"}, COLUMNS
        )
    )
    with pytest.raises(DataError, match=r"site\.parquet.*Parquet"):
        NodeDataset.from_descriptor_file(tmp_path / "site.toml", cache_dir=tmp_path / "c").connect()


def test_missing_column_is_named(tmp_path: Path) -> None:
    msg = _error(tmp_path, CSV.replace("visits", "n_visits"))
    assert "site.csv" in msg and "'visits'" in msg and "n_visits" in msg


def test_value_not_a_number_names_column_value_and_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, CSV.replace("p2,45,", "p2,forty-five,"))
    assert "site.csv" in msg and "'age'" in msg and "'forty-five'" in msg and "line 3" in msg


def test_integer_column_rejects_fractions(tmp_path: Path) -> None:
    msg = _error(tmp_path, CSV.replace(",3,x", ",2.5,x"))
    assert "site.csv" in msg and "'visits'" in msg and "integer" in msg and "'2.5'" in msg


def test_undeclared_level_is_named(tmp_path: Path) -> None:
    msg = _error(tmp_path, CSV.replace("p3,81,male,3", "p3,81,male,4"))
    assert "site.csv" in msg and "'stage'" in msg and "'4'" in msg and "['1', '2', '3']" in msg


def test_binary_not_0_1_is_named(tmp_path: Path) -> None:
    msg = _error(tmp_path, CSV.replace("p2,45,female,2,1", "p2,45,female,2,yes"))
    assert "site.csv" in msg and "'diabetes'" in msg and "'yes'" in msg


def test_duplicate_and_missing_ids_are_named(tmp_path: Path) -> None:
    msg = _error(tmp_path, CSV.replace("p2,", "p1,"))
    assert "site.csv" in msg and "'pid'" in msg and "duplicate" in msg and "'p1'" in msg
    msg = _error(tmp_path, CSV.replace("p3,", ","))
    assert "site.csv" in msg and "'pid'" in msg and "missing patient id" in msg and "line 4" in msg


def test_several_problems_reported_together(tmp_path: Path) -> None:
    msg = _error(tmp_path, CSV.replace("p2,45,female", "p2,old,other"))
    assert "'age'" in msg and "'sex'" in msg


def test_unknown_unit_fails_fast_naming_dataset_and_column(tmp_path: Path) -> None:
    columns = {**COLUMNS, "crp": {"type": "numeric", "unit": "furlongs"}}
    desc = write_csv_dataset(tmp_path, CSV, columns)
    with pytest.raises(DataError) as exc:
        NodeDataset.from_descriptor_file(desc)
    assert "'demo'" in str(exc.value) and "'crp'" in str(exc.value) and "furlongs" in str(exc.value)


def test_frame_errors_name_the_column() -> None:
    df = frame().assign(diabetes=[0, 2, 1])
    raw = {"dataset": {"name": "demo", "file": "x.parquet", "id_column": "pid"}, "columns": COLUMNS}
    with pytest.raises(DataError, match=r"'diabetes'.*'2'"):
        NodeDataset.from_frame(df, descriptor_from_dict(raw, Path("/tmp"))).n_rows  # noqa: B018
