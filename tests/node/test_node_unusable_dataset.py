"""A request on a dataset that fails its check gets a clear refusal (issue 12, item 3).

Not "internal error", and nothing of the steward's detail: no file path, no line,
no example value (those are for ``healthfed node check`` at the site).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from healthfed.data.dataset import NodeDataset, render_descriptor_toml
from healthfed.node.runtime import Node

COLUMNS = {
    "pid": {"type": "id"},
    "age": {"type": "numeric", "unit": "years", "bounds": [0, 120]},
    "smoker": {"type": "binary", "levels": ["No", "Yes"]},
}


def _dataset(tmp_path: Path, name: str, file: str) -> NodeDataset:
    desc = tmp_path / f"{name}.toml"
    desc.write_text(
        render_descriptor_toml({"name": name, "file": file, "id_column": "pid"}, COLUMNS)
    )
    return NodeDataset.from_descriptor_file(desc, cache_dir=tmp_path / "cache")


def _node(tmp_path: Path) -> Node:
    (tmp_path / "header_only.csv").write_text("pid,age,smoker\n")
    pd.DataFrame(
        {"pid": pd.Series([], dtype=str), "age": pd.Series([], dtype=float), "smoker": []}
    ).astype({"smoker": str}).to_parquet(tmp_path / "zero.parquet")
    (tmp_path / "bad.csv").write_text("pid,age,smoker\np1,SECRET-7,Yes\np2,40,No\n")
    datasets = {
        "header_only": _dataset(tmp_path, "header_only", "header_only.csv"),
        "zero": _dataset(tmp_path, "zero", "zero.parquet"),
        "bad": _dataset(tmp_path, "bad", "bad.csv"),
        "gone": _dataset(tmp_path, "gone", "gone.csv"),
    }
    return Node(name="s1", datasets=datasets)


def test_requests_on_empty_or_invalid_data_are_refused_clearly(tmp_path: Path) -> None:
    node = _node(tmp_path)
    for dataset, why in [
        ("header_only", "it has no rows"),
        ("zero", "it has no rows"),
        ("bad", "its data do not match the descriptor"),
        ("gone", "its data file is missing or unreadable"),
    ]:
        for computation, params in [
            ("table1", {"variables": ["age", "smoker"]}),
            ("describe", {"variables": ["age"]}),
            ("count", {}),
        ]:
            reply = node.handle({"computation": computation, "dataset": dataset, "params": params})
            assert reply["status"] == "refused", reply
            assert reply["kind"] == "DataError"
            reason = reply["reason"]
            assert f"dataset {dataset!r} is not usable ({why})" in reason
            assert "node check" in reason
            assert "internal error" not in reason
            assert str(tmp_path) not in reason and "SECRET" not in reason and "line" not in reason


def test_out_of_bounds_values_are_logged_at_the_node_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = "".join(f"p{i},{30 + i},No\n" for i in range(30))
    (tmp_path / "oob.csv").write_text("pid,age,smoker\n" + rows + "p99,987654.5,Yes\n")
    node = Node(name="s1", datasets={"oob": _dataset(tmp_path, "oob", "oob.csv")})
    request = {"computation": "describe", "dataset": "oob", "params": {"variables": ["age"]}}
    with caplog.at_level(logging.WARNING, logger="healthfed.node.runtime"):
        assert node.handle(request)["status"] == "ok"
        assert node.handle(request)["status"] == "ok"
    warnings = [
        r.getMessage() for r in caplog.records if "outside the declared bounds" in r.message
    ]
    assert len(warnings) == 1
    assert "'oob'" in warnings[0] and "['age']" in warnings[0] and "987654" not in warnings[0]


def test_prewarm_names_the_unusable_datasets_and_requests_stay_refused(tmp_path: Path) -> None:
    """A data worker checks every dataset when it starts; that changes no answer."""
    node = _node(tmp_path)
    rows = "".join(f"p{i},{30 + i},No\n" for i in range(30))
    (tmp_path / "good.csv").write_text("pid,age,smoker\n" + rows)
    node.datasets["good"] = _dataset(tmp_path, "good", "good.csv")
    assert node.prewarm() == ["bad", "gone", "header_only", "zero"]
    assert node.prewarm() == ["bad", "gone", "header_only", "zero"]  # the same again
    request = {"computation": "count", "dataset": "bad", "params": {}}
    reply = node.handle(request)
    assert reply["status"] == "refused" and "is not usable" in reply["reason"]
    fresh = _node(tmp_path)
    fresh.datasets["good"] = _dataset(tmp_path, "good", "good.csv")
    count = {"computation": "count", "dataset": "good", "params": {}}
    assert node.handle(count) == fresh.handle(count)  # the same release, prewarmed or not
