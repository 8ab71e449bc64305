"""The researcher's model commands: train, evaluate, report, predict, decide."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli_helpers import sandbox_nodes
from typer.testing import CliRunner

from healthfed.cli import app

runner = CliRunner()
FEATURES = "age,sex,vaccination,spo2,crp,diabetes"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return sandbox_nodes(tmp_path_factory.mktemp("models"), sites=3, rows=1500)


def test_train_evaluate_report_predict_decide(nodes: list[str], tmp_path: Path) -> None:
    model = tmp_path / "model"
    r = runner.invoke(
        app,
        ["train", *nodes, "--target", "death_28d", "--features", FEATURES,
         "--holdout", "0.3", "--out", str(model)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "OR: odds ratio" in r.output and (model / "model.json").exists()

    r = runner.invoke(
        app,
        ["evaluate", str(model), *[a for n in nodes for a in ("--nodes", n)],
         "--holdout", "0.3", "--format", "json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "pooled" in r.output and "auroc" in r.output

    r = runner.invoke(
        app,
        [
            "report",
            str(model),
            "--out",
            str(tmp_path / "rep"),
            *[a for n in nodes for a in ("--nodes", n)],
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.html").exists()

    patient = tmp_path / "p.json"
    patient.write_text(json.dumps({"age": 80, "sex": "male", "vaccination": "full", "spo2": 87,
                                   "crp": 150, "diabetes": 1}))  # fmt: skip
    r = runner.invoke(app, ["predict", str(model), "--input", str(patient), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{") :])
    assert 0.0 < out["probability"] < 1.0

    log = tmp_path / "decisions.jsonl"
    r = runner.invoke(
        app,
        ["decide", str(model), "--input", str(patient), "--decision", "override",
         "--reason", "already on palliative pathway", "--clinician", "dr.a", "--audit-log", str(log)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["audit", "verify", str(log)]).exit_code == 0


def test_fedadam_trains_with_categorical_features(nodes: list[str], tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        ["train", *nodes, "--target", "death_28d", "--features", "age,sex,vaccination",
         "--model", "fedadam", "--rounds", "5", "--out", str(tmp_path / "m")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "model.json").exists()


def test_unknown_model_kind_exits_2(nodes: list[str], tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["train", *nodes, "--target", "death_28d", "--features", "age", "--model", "xgboost",
              "--out", str(tmp_path / "m")]
    )  # fmt: skip
    assert r.exit_code == 2
    assert "xgboost" in r.output


def test_secure_aggregation_from_the_command_line(nodes: list[str], tmp_path: Path) -> None:
    clear = runner.invoke(app, ["stats", "sum", *nodes, "--var", "age", "--format", "json"])
    secure = runner.invoke(
        app, ["stats", "sum", *nodes, "--var", "age", "--secure", "--format", "json"]
    )
    assert clear.exit_code == 0 and secure.exit_code == 0, (clear.output, secure.output)
    c, s = json.loads(clear.stdout), json.loads(secure.stdout)
    assert s["n"] == c["n"] and abs(s["sum"] - c["sum"]) < 1e-5
    assert list(s["per_site"]) == ["(secure aggregate)"] and s["sites"] == ["h1", "h2", "h3"]

    model = tmp_path / "secure_model"
    r = runner.invoke(
        app,
        ["train", *nodes, "--target", "death_28d", "--features", "age,spo2",
         "--secure-aggregation", "--out", str(model)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((model / "model.json").read_text())["provenance"]["secure_aggregation"]
