"""Quantile brackets claim a guarantee only when it holds (issue 12, item 2).

A bracket holds the raw sample quantile whatever the data only when it lies strictly
inside the declared bounds; with bounds declared too narrow, values outside are
counted in the edge bins and a bracket reaching a bound may miss the quantile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from healthfed.compute.quantiles import pooled_quantiles
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    return {
        s: pd.DataFrame(
            {"pid": [f"{s}{i}" for i in range(600)], "crp": rng.lognormal(3.5, 1.0, 600)}
        )
        for s in ("h1", "h2")
    }


def _table1(frames: dict[str, pd.DataFrame], bounds: list[float]):
    raw = {
        "dataset": {"name": "c", "file": "x.parquet", "id_column": "pid"},
        "columns": {"pid": {"type": "id"}, "crp": {"type": "numeric", "bounds": bounds}},
    }
    desc = descriptor_from_dict(raw, base_dir=Path("."))
    policy = SitePolicy(count_perturbation="none")
    nodes = [
        Node(name=s, datasets={"c": NodeDataset.from_frame(df, desc)}, policy=policy)
        for s, df in frames.items()
    ]
    with Federation.inprocess(nodes) as fed:
        return fed.table1("c", ["crp"])


def test_bounds_too_narrow_the_bracket_at_the_bound_is_not_claimed() -> None:
    frames = _frames()
    pooled = np.concatenate([df["crp"].to_numpy() for df in frames.values()])
    t1 = _table1(frames, [0, 50])  # p75 of CRP here is ~65: above the declared bound
    true_p75 = float(np.quantile(pooled, 0.75))
    assert true_p75 > 50
    hi = t1.value("crp", "p75_hi")
    assert hi == 50 and not (t1.value("crp", "p75_lo") <= true_p75 <= hi)  # the bracket misses
    assert "crp p75" in t1.unguaranteed
    assert "crp p50" not in t1.unguaranteed  # the median (~33) lies inside: still guaranteed
    footer = t1.to_text()
    assert "except crp p75" in footer and "reach a declared bound" in footer
    assert t1.to_dict()["unguaranteed_brackets"] == t1.unguaranteed


def test_bounds_that_hold_every_bracket_is_guaranteed_and_holds() -> None:
    frames = _frames()
    pooled = np.concatenate([df["crp"].to_numpy() for df in frames.values()])
    t1 = _table1(frames, [0, 2000])
    assert t1.unguaranteed == []
    for p in (0.25, 0.5, 0.75):
        name = f"p{100 * p:g}"
        q = float(np.quantile(pooled, p))
        assert t1.value("crp", f"{name}_lo") <= q <= t1.value("crp", f"{name}_hi")
    assert "guaranteed to contain the pooled sample quantile." in t1.to_text()


def test_pooled_quantiles_marks_brackets_at_the_grid_ends() -> None:
    edges = [0.0, 1.0, 2.0, 3.0, 4.0]
    (q10, q50, q90) = pooled_quantiles([(edges, [10, 10, 10, 10])], [0.1, 0.5, 0.9])
    assert (q10.lo, q10.guaranteed) == (0.0, False)
    assert q50.guaranteed
    assert (q90.hi, q90.guaranteed) == (4.0, False)
