"""The README's model path: train -> evaluate -> report, on the held-out rows the artefact records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from _cli_helpers import sandbox_nodes
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.data.sql import holdout_sql
from healthfed.node.runtime import Node

runner = CliRunner()
FEATURES = "age,sex,spo2,crp"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("model-path")
    return sandbox_nodes(root, sites=3, rows=900, node_dir=root / "nodes")


def _rows(node_file: str, holdout: dict | None) -> int:
    """Rows with the outcome recorded in one part of a node's split (test privilege)."""
    ds = Node.from_toml(node_file).dataset("covid")
    con = ds.connect()
    try:
        where = holdout_sql(ds.descriptor, holdout) if holdout else "TRUE"
        df: pd.DataFrame = con.execute(
            f"SELECT count(*) AS n FROM data WHERE {where} AND death_28d IS NOT NULL"
        ).df()
    finally:
        con.close()
    return int(df["n"][0])


def _train(nodes: list[str], out: Path, *extra: str) -> None:
    r = runner.invoke(
        app,
        ["train", *nodes, "--target", "death_28d", "--features", FEATURES, *extra,
         "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output


def test_artefact_records_its_split_and_report_uses_the_held_out_rows(
    nodes: list[str], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    _train(nodes, model, "--holdout", "0.3")
    desc = json.loads((model / "model.json").read_text())
    split = desc["training"]["split"]
    assert split["holdout"] == {"fraction": 0.3, "seed": 0}
    for k, node in enumerate(nodes, start=1):
        site = split["sites"][f"h{k}"]
        assert site["train_rows"] == _rows(node, {"fraction": 0.3, "seed": 0, "part": "train"})
        assert site["held_out_rows"] == _rows(node, {"fraction": 0.3, "seed": 0, "part": "test"})
    assert sum(s["train_rows"] for s in split["sites"].values()) == desc["training"]["n_rows"]
    assert desc["reference"]["ranges"]["age"]["declared"] == [0.0, 110.0]

    # the README's line: no --nodes, no evaluation.json -- evaluated where it was trained
    r = runner.invoke(app, ["report", str(model), "--out", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    assert "WARNING" not in r.stderr
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rep["provenance"]["model_hash"] == (model / "model.sha256").read_text().strip()
    assert rep["settings"]["holdout"] == {"fraction": 0.3, "seed": 0}
    assert rep["settings"]["scored_rows"] == "held_out" and rep["settings"]["warnings"] == []
    train_rows = sum(s["train_rows"] for s in split["sites"].values())
    held_rows = sum(s["held_out_rows"] for s in split["sites"].values())
    assert rep["data"]["training_rows"] == train_rows
    assert rep["data"]["evaluation_rows"] == held_rows
    item10 = next(i for i in rep["tripod_ai"] if i["item"] == "10")
    assert f"Training {train_rows} rows" in item10["content"]
    assert f"evaluation {held_rows} rows" in item10["content"]

    # with --nodes too: the held-out rows, not the training rows
    r = runner.invoke(
        app,
        ["report", str(model), "--out", str(tmp_path / "r2"),
         *[a for n in nodes for a in ("--nodes", n)]],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rep2 = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert rep2["data"]["evaluation_rows"] == held_rows
    assert rep2["provenance"]["model_hash"] == rep["provenance"]["model_hash"]


def test_evaluate_scores_held_out_rows_by_default_and_warns_otherwise(
    nodes: list[str], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    _train(nodes, model, "--holdout", "0.3")
    split = json.loads((model / "model.json").read_text())["training"]["split"]
    node_args = [a for n in nodes for a in ("--nodes", n)]

    r = runner.invoke(app, ["evaluate", str(model), *node_args, "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "WARNING" not in r.stderr
    assert "Scored: the held-out part of each site's split (30%, seed 0)" in r.stderr
    out = json.loads(r.stdout)
    assert out["scored_rows"] == "held_out" and out["holdout"] == {"fraction": 0.3, "seed": 0}
    for site, v in split["sites"].items():
        assert out["metrics"][site]["n"] == v["held_out_rows"]

    r = runner.invoke(app, ["evaluate", str(model), *node_args, "--all-rows", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "WARNING: scoring every row, including the rows the model was trained on" in r.stderr
    assert json.loads(r.stdout)["scored_rows"] == "training"

    r = runner.invoke(
        app, ["evaluate", str(model), *node_args, "--holdout", "0.5", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    assert "differs from the model's training split" in r.stderr

    # Without node files: the nodes the model was trained on (nodes.json), like `report`.
    r = runner.invoke(app, ["evaluate", str(model), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert f"the {len(nodes)} the model was trained on (nodes.json)" in r.stderr
    assert json.loads(r.stdout)["scored_rows"] == "held_out"
    (model / "nodes.json").unlink()
    r = runner.invoke(app, ["evaluate", str(model)])
    assert r.exit_code == 2 and "has no nodes.json" in r.output


def test_a_model_trained_on_every_row_is_reported_as_apparent_performance(
    nodes: list[str], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    _train(nodes, model)
    split = json.loads((model / "model.json").read_text())["training"]["split"]
    assert split["holdout"] is None
    assert all(v["held_out_rows"] == 0 for v in split["sites"].values())

    r = runner.invoke(app, ["evaluate", str(model), *[a for n in nodes for a in ("--nodes", n)]])
    assert r.exit_code == 0, r.output
    assert "WARNING: scoring the training rows" in r.stderr

    r = runner.invoke(app, ["report", str(model), "--out", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    assert "WARNING: scoring the training rows" in r.stderr
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rep["settings"]["scored_rows"] == "training"
    assert "apparent performance" in rep["settings"]["warnings"][0]
    assert "Warning: scoring the training rows" in (tmp_path / "report" / "report.html").read_text()


def test_report_without_nodes_or_record_names_the_fix(nodes: list[str], tmp_path: Path) -> None:
    model = tmp_path / "model"
    _train(nodes, model, "--holdout", "0.3")
    (model / "nodes.json").unlink()
    r = runner.invoke(app, ["report", str(model), "--out", str(tmp_path / "report")])
    assert r.exit_code == 2
    assert "give --nodes" in r.output
    assert not (tmp_path / "report").exists()


def test_predict_warns_by_feature_and_gives_no_class_when_mostly_imputed(
    nodes: list[str], tmp_path: Path
) -> None:
    model = tmp_path / "model"
    six = "age,sex,vaccination,diabetes,spo2,crp"
    r = runner.invoke(
        app,
        ["train", *nodes, "--target", "death_28d", "--features", six, "--holdout", "0.3",
         "--out", str(model)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    patient = tmp_path / "patient.json"
    patient.write_text(json.dumps({"age": 130, "spo2": 40}))  # 4 of 6 missing
    r = runner.invoke(
        app,
        ["predict", str(model), "--input", str(patient), "--threshold", "0.5", "--json"],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert "WARNING: 'age' = 130 is outside its declared bounds [0, 110]" in r.stderr
    assert "WARNING: 'spo2' = 40 is outside its declared bounds [50, 100]" in r.stderr
    assert out["classification"] is None
    assert out["no_class_reason"].startswith("4 of 6 inputs are missing and were imputed")
    assert out["out_of_distribution"] is True
    why = {(x["feature"], x["reason"]) for x in out["ood_reasons"]}
    assert {("age", "outside declared bounds"), ("spo2", "outside declared bounds")} <= why
    assert len(why) == 6
    r = runner.invoke(app, ["predict", str(model), "--input", str(patient), "--threshold", "0.5"])
    assert r.exit_code == 0, r.output
    assert "NO CLASS: 4 of 6 inputs" in r.stdout and "OUT OF DISTRIBUTION: age" in r.stdout


def test_readable_train_evaluate_and_table1_output(nodes: list[str], tmp_path: Path) -> None:
    model = tmp_path / "model"
    r = runner.invoke(
        app,
        ["train", *nodes, "--target", "death_28d", "--features", "age,sex,crp", "--holdout", "0.3",
         "--out", str(model)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    table = r.stdout.split("\nOR: ")[0].splitlines()
    assert table[0].split() == ["per", "OR", "(95%", "CI)", "p"]
    age = next(line for line in table if line.startswith("age "))
    assert "per SD (" in age
    assert "male vs female" in next(line for line in table if line.startswith("sex_male"))
    assert "OR: odds ratio for one unit of 'per'" in r.stdout
    assert max(len(line) for line in table) < 90

    r = runner.invoke(app, ["evaluate", str(model), *[a for n in nodes for a in ("--nodes", n)]])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["n", "events", "AUROC"]
    assert all(len(line) < 90 for line in lines[:6])
    pooled = next(line for line in lines if line.startswith("pooled"))
    assert "." not in pooled.split()[1]  # n is an integer
    assert "n: rows scored; events: rows with the outcome; AUROC:" in r.stdout
    assert "P >= 0.5 is called positive" in r.stdout

    r = runner.invoke(
        app,
        ["stats", "table1", *nodes, "--vars", "age,crp,sex,diabetes", "--by", "death_28d",
         "--format", "csv"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    head, *rows = r.stdout.strip().splitlines()
    assert head == (
        "variable,label,unit,statistic,overall,death_28d = no (0),death_28d = yes (1),smd,note"
    )
    n_row = next(x for x in rows if x.startswith("N,")).split(",")
    assert all(v.isdigit() for v in n_row[4:7])  # integers, not 4500.0
    age_n = next(x for x in rows if x.startswith("age,") and ",n," in x).split(",")
    assert age_n[1:3] == ["Age at admission", "years"] and float(age_n[7]) > 0.5  # SMD
    crp_mean = next(x for x in rows if x.startswith("crp,") and ",mean," in x).split(",")
    assert crp_mean[2] == "mg/L" and "." not in crp_mean[4]  # SD > 100: whole numbers
