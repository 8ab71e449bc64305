"""The newcomer's path: the CLI and the demo, end to end on the in-process engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.policy import SitePolicy

runner = CliRunner()


def test_demo_writes_summary_with_released_table1(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--sites", "4", "--rows", "800", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "inprocess"
    assert summary["sites"] == ["hospital_1", "hospital_2", "hospital_3", "hospital_4"]
    # The default policy perturbs counts (cell key method): each site's N moves by <= D.
    assert abs(summary["n_total"] - 3200) <= 4 * SitePolicy().cell_key_max_deviation
    assert isinstance(summary["suppressed_cells"], int)
    # Small cells exist at 800 rows per site: perturbed to 0 or >= 5, or withheld.
    assert summary["suppressed_cells"] + summary["table1"]["perturbed_cells"] > 0
    assert "table1" in summary and summary["table1"]
    assert (out / "table1.csv").exists()
    assert "Sites contributed" in result.output


def test_synth_then_stats_table1_as_csv_and_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = runner.invoke(
        app, ["synth", "covid", "--sites", "2", "--rows", "300", "--seed", "3", "--out", str(data)]
    )
    assert r.exit_code == 0, r.output
    nodes = []
    for k in (1, 2):
        node = tmp_path / "nodes" / f"h{k}.toml"
        r = runner.invoke(
            app,
            [
                "node",
                "init",
                str(node),
                "--name",
                f"h{k}",
                "--dataset",
                str(data / f"hospital_{k}.toml"),
                "--sandbox",  # ungoverned: these stats run without a permit
            ],
        )
        assert r.exit_code == 0, r.output
        nodes.append(str(node))
    r = runner.invoke(app, ["node", "check", nodes[0]])
    assert r.exit_code == 0 and "covid" in r.output, r.output
    out_json = tmp_path / "t1.json"
    r = runner.invoke(
        app,
        [
            "stats",
            "table1",
            *nodes,
            "--vars",
            "age,sex,crp",
            "--by",
            "death_28d",
            "--format",
            "json",
            "--out",
            str(out_json),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(out_json.read_text())
    r = runner.invoke(app, ["stats", "table1", *nodes, "--vars", "age,sex", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert "age" in r.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["stats", "table1", "NODES", "--vars", "no_such_column"], "no_such_column"),
        (["stats", "table1", "NODES", "--vars", "age", "--dataset", "nope"], "nope"),
        (["stats", "table1", "missing-node.toml", "--vars", "age"], "missing-node.toml"),
    ],
)
def test_bad_input_names_the_argument_and_exits_2(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    data = tmp_path / "data"
    runner.invoke(app, ["synth", "covid", "--sites", "2", "--rows", "100", "--out", str(data)])
    nodes = []
    for k in (1, 2):
        node = tmp_path / f"h{k}.toml"
        runner.invoke(
            app,
            [
                "node",
                "init",
                str(node),
                "--name",
                f"h{k}",
                "--dataset",
                str(data / f"hospital_{k}.toml"),
                "--sandbox",  # ungoverned: these stats run without a permit
            ],
        )
        nodes.append(str(node))
    argv: list[str] = []
    for a in args:
        argv.extend(nodes if a == "NODES" else [a])
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert needle in r.output
