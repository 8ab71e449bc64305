"""Shared helpers for the statistics and disclosure tests (not a conftest: fixtures stay local)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from healthfed.compute import get_computation
from healthfed.data.descriptor import DatasetDescriptor, descriptor_from_dict
from healthfed.policy import SitePolicy
from healthfed.privacy.disclosure import disclose

COLUMNS: dict[str, dict[str, Any]] = {
    "age": {"type": "numeric", "bounds": [0, 120]},
    "crp": {"type": "numeric", "bounds": [0, 600]},
    "los": {"type": "integer", "bounds": [0, 100]},
    "weight": {"type": "numeric"},  # no declared bounds
    "sex": {"type": "categorical", "levels": ["female", "male"]},
    "ward": {"type": "categorical", "levels": ["a", "b", "c", "d"]},
    "icu": {"type": "binary"},
    "death": {"type": "binary"},
}


def descriptor(columns: dict[str, dict[str, Any]] | None = None) -> DatasetDescriptor:
    """A descriptor over the test columns (the file is never read)."""
    return descriptor_from_dict(
        {
            "dataset": {"name": "cohort", "file": "cohort.parquet", "id_column": "pid"},
            "columns": columns or COLUMNS,
        },
        base_dir=Path("."),
    )


def cohort(n: int, seed: int, missing: float = 0.05) -> pd.DataFrame:
    """A random cohort typed as NodeDataset's view is (DOUBLE, INTEGER 0/1, VARCHAR, NULL)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "pid": np.arange(n),
            "age": rng.normal(62, 14, n),
            "crp": rng.lognormal(3, 1, n),
            "los": rng.poisson(6, n).astype(float),
            "weight": rng.normal(80, 12, n),
            "sex": rng.choice(["female", "male"], n).astype(object),
            "ward": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object),
            "icu": rng.integers(0, 2, n).astype(float),
            "death": (rng.random(n) < 0.3).astype(float),
        }
    )
    for col in ("age", "crp", "los", "sex", "ward", "icu"):
        df.loc[rng.random(n) < missing, col] = None
    df["icu"] = df["icu"].astype("Int32")
    df["death"] = df["death"].astype("Int32")
    return df


def connect(df: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("data", df)
    return con


def site_reply(
    df: pd.DataFrame,
    computation: str,
    params: dict[str, Any],
    policy: SitePolicy,
    desc: DatasetDescriptor | None = None,
) -> dict[str, Any]:
    """What one node sends: validate -> run -> disclose."""
    comp = get_computation(computation)
    desc = desc or descriptor()
    checked = comp.validate(dict(params), desc, policy)
    con = connect(df)
    try:
        return disclose(comp.run(con, desc, checked, policy), policy)
    finally:
        con.close()


def federate(
    frames: list[pd.DataFrame],
    computation: str,
    params: dict[str, Any],
    policy: SitePolicy,
    desc: DatasetDescriptor | None = None,
) -> Any:
    replies = {
        f"site{k + 1}": site_reply(df, computation, params, policy, desc)
        for k, df in enumerate(frames)
    }
    return get_computation(computation).combine(replies, params)
