"""``healthfed node describe-data FILE``: propose a descriptor, then check it (issue 12)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.data.descriptor import load_descriptor

runner = CliRunner()

CSV = "pid,age,sex,smoker\n" + "".join(
    f"p{i},{20 + (i * 7) % 70},{'female' if i % 3 else 'male'},{'yes' if i % 4 else 'no'}\n"
    for i in range(60)
)


def test_describe_data_to_stdout_is_the_descriptor(tmp_path: Path) -> None:
    (tmp_path / "site.csv").write_text(CSV)
    r = runner.invoke(app, ["node", "describe-data", str(tmp_path / "site.csv")])
    assert r.exit_code == 0, r.output
    (tmp_path / "site.toml").write_text(r.stdout)
    d = load_descriptor(tmp_path / "site.toml")
    assert d.id_column == "pid" and d.path == (tmp_path / "site.csv").resolve()
    assert d.columns["smoker"].levels == ("no", "yes")
    assert d.columns["age"].bounds == (20.0, 90.0)


def test_describe_data_out_then_node_check(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "site.csv").write_text(CSV.replace("pid,", "x,").replace("\np", "\nq"))
    desc = tmp_path / "descriptors" / "site.toml"
    desc.parent.mkdir()
    args = ["node", "describe-data", str(data / "site.csv"), "--name", "site", "--out", str(desc)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    d = load_descriptor(desc)
    assert d.path == (data / "site.csv").resolve()  # 'file' is relative to the descriptor
    assert d.name == "site" and d.generate_id and d.id_column == "row_id"  # "x" is no id name
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "exists" in r.output  # never overwritten
    node = tmp_path / "node.toml"
    r = runner.invoke(
        app, ["node", "init", str(node), "--name", "s1", "--dataset", str(desc), "--sandbox"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["node", "check", str(node)])
    assert r.exit_code == 0, r.output
    assert "dataset 'site': 60 rows; OK" in r.output


def test_describe_data_missing_file(tmp_path: Path) -> None:
    r = runner.invoke(app, ["node", "describe-data", str(tmp_path / "nope.csv")])
    assert r.exit_code == 2 and "not found" in r.output
