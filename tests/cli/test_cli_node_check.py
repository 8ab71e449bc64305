"""``healthfed node check``: the data steward's view of every dataset of a node (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.data.dataset import render_descriptor_toml

runner = CliRunner()

COLUMNS = {
    "pid": {"type": "id"},
    "age": {"type": "numeric", "unit": "years", "bounds": [0, 120]},
    "smoker": {"type": "binary", "levels": ["No", "Yes"]},
}
GOOD = "pid,age,smoker\np1,70,Yes\np2,45,No\np3,,No\n"


def _descriptor(folder: Path, name: str, file: str, columns: dict | None = None) -> Path:
    desc = folder / f"{name}.toml"
    desc.write_text(
        render_descriptor_toml({"name": name, "file": file, "id_column": "pid"}, columns or COLUMNS)
    )
    return desc


def _node(tmp_path: Path, descriptors: list[Path]) -> Path:
    node = tmp_path / "node.toml"
    args = ["node", "init", str(node), "--name", "s1", "--sandbox"]
    for d in descriptors:
        args += ["--dataset", str(d)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return node


def test_check_goes_on_after_a_failing_dataset_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "a_header_only.csv").write_text("pid,age,smoker\n")
    pd.DataFrame(
        {"pid": pd.Series([], dtype=str), "age": pd.Series([], dtype=float), "smoker": []}
    ).astype({"smoker": str}).to_parquet(tmp_path / "b_zero.parquet")
    (tmp_path / "c_good.csv").write_text(GOOD)
    node = _node(
        tmp_path,
        [
            _descriptor(tmp_path, "a_header_only", "a_header_only.csv"),
            _descriptor(tmp_path, "b_zero", "b_zero.parquet"),
            _descriptor(tmp_path, "c_good", "c_good.csv"),
        ],
    )
    r = runner.invoke(app, ["node", "check", str(node)])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    out = " ".join(r.output.split())  # Rich wraps long lines
    assert "Traceback" not in out and "TypeError" not in out
    assert "a_header_only.csv" in out and "no rows (a header only)" in out
    assert "b_zero.parquet" in out and "no rows (zero rows)" in out
    assert "dataset 'c_good': 3 rows" in out  # checked after the two that failed
    assert "2 of 3 dataset(s) failed the check" in out


def test_check_passes_on_good_data(tmp_path: Path) -> None:
    (tmp_path / "good.csv").write_text(GOOD)
    node = _node(tmp_path, [_descriptor(tmp_path, "good", "good.csv")])
    r = runner.invoke(app, ["node", "check", str(node)])
    assert r.exit_code == 0, r.output
    assert "dataset 'good': 3 rows" in " ".join(r.output.split())
