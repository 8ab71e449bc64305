"""Shared helpers of the trust tests (imported by name; fixtures stay in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import healthfed.compute  # noqa: F401 - registers the computations
from healthfed.data.sql import holdout_sql
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy

SITES, ROWS = 3, 1500
HOLDOUT = {"fraction": 0.3, "seed": 7}
FEATURES = ["age", "sex", "vaccination", "diabetes", "ckd", "spo2", "resp_rate", "crp"]
TARGET = "death_28d"


def federation(node_files: list[Path], policy: SitePolicy | None = None) -> Federation:
    nodes = [Node.from_toml(p) for p in node_files]
    if policy is not None:
        nodes = [Node(n.name, n.datasets, policy) for n in nodes]
    return Federation.inprocess(nodes)


def pooled_rows(node_files: list[Path], part: str | None = "test") -> pd.DataFrame:
    """The harmonised rows the nodes see (test privilege: the reference for pooled metrics)."""
    frames = []
    for p in node_files:
        node = Node.from_toml(p)
        ds = node.dataset("covid")
        con = ds.connect()
        try:
            where = holdout_sql(ds.descriptor, {**HOLDOUT, "part": part}) if part else "TRUE"
            df = con.execute(f"SELECT * FROM data WHERE {where}").df()
        finally:
            con.close()
        df["site"] = node.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def age_band(age: pd.Series) -> pd.Series:
    return pd.cut(
        age,
        [-float("inf"), 18, 40, 60, 75, float("inf")],
        right=False,
        labels=["0-17", "18-39", "40-59", "60-74", "75+"],
    ).astype(object)
