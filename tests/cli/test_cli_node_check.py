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


def test_out_of_bounds_fails_the_check_with_rounded_counts_and_no_value(tmp_path: Path) -> None:
    rows = "".join(f"p{i},{40 + i % 30},No\n" for i in range(40))
    (tmp_path / "oob.csv").write_text("pid,age,smoker\n" + rows + "p99,987654.5,Yes\n")
    node = _node(tmp_path, [_descriptor(tmp_path, "oob", "oob.csv")])
    r = runner.invoke(app, ["node", "check", str(node)])
    assert r.exit_code == 1, r.output
    out = " ".join(r.output.split())
    assert "dataset 'oob': 41 rows; FAILED" in out
    assert "~5 above" in out and "out of bounds: age (counts rounded to a multiple of 5)" in out
    assert "987654" not in out and "9.87" not in out
    r = runner.invoke(app, ["node", "check", str(node), "--allow-out-of-bounds"])
    assert r.exit_code == 0, r.output
    assert "OK (out of bounds allowed)" in r.output


def test_check_json(tmp_path: Path) -> None:
    import json

    (tmp_path / "good.csv").write_text(GOOD)
    (tmp_path / "empty.csv").write_text("pid,age,smoker\n")
    cols = {**COLUMNS, "lactate": {"type": "numeric", "bounds": [0, 30]}}
    (tmp_path / "nolac.csv").write_text("pid,age,smoker,lactate\np1,50,Yes,\np2,60,No,\n")
    node = _node(
        tmp_path,
        [
            _descriptor(tmp_path, "good", "good.csv"),
            _descriptor(tmp_path, "empty", "empty.csv"),
            _descriptor(tmp_path, "nolac", "nolac.csv", cols),
        ],
    )
    r = runner.invoke(app, ["node", "check", str(node), "--json"])
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["node"] == "s1" and out["ok"] is False and out["failed"] == ["empty"]
    good = out["datasets"]["good"]
    assert good["ok"] and good["rows"] == 3
    assert good["columns"]["age"]["missing"] == 1
    assert good["columns"]["smoker"]["levels"] == {"No": 2, "Yes": 1}
    assert good["columns"]["age"]["bounds"] == [0, 120]
    assert out["datasets"]["empty"]["ok"] is False
    assert "no rows" in out["datasets"]["empty"]["errors"][0]
    nolac = out["datasets"]["nolac"]
    assert nolac["ok"] and nolac["warnings"] == ["column 'lactate': every value is missing"]


def test_a_broken_descriptor_does_not_stop_the_check(tmp_path: Path) -> None:
    (tmp_path / "good.csv").write_text(GOOD)
    good = _descriptor(tmp_path, "good", "good.csv")
    broken = _descriptor(tmp_path, "broken", "good.csv")
    node = _node(tmp_path, [broken, good])
    broken.write_text(broken.read_text().replace('type = "numeric"', 'type = "number"'))
    r = runner.invoke(app, ["node", "check", str(node)])
    assert r.exit_code == 1, r.output
    out = " ".join(r.output.split())
    assert "descriptor 'broken.toml': FAILED" in out and "'type' must be one of" in out
    assert "dataset 'good': 3 rows; OK" in out
    assert "1 of 2 dataset(s) failed the check: broken.toml" in out
