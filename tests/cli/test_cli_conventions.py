"""CLI conventions on every command: -h, --version, completion, --json, exit codes, examples,
node files as arguments, progress on stderr."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import click
import pytest
import typer
from _cli_helpers import sandbox_nodes
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.cli._conventions import EXAMPLES, NO_RESULT

runner = CliRunner()


def _leaf_commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: str) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            found[path] = cmd

    walk(typer.main.get_command(app), "")
    return found


def test_version_help_and_completion() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"healthfed {version('healthfed')}"
    r = runner.invoke(app, ["-h"])
    assert r.exit_code == 0
    for text in ("--install-completion", "--show-completion", "--version", "Examples:"):
        assert text in r.stdout, text
    assert "3 pending a site's manual approval" in " ".join(r.stdout.split())


def test_every_command_has_h_examples_exit_codes_and_json() -> None:
    commands = _leaf_commands()
    assert set(commands) <= set(EXAMPLES), set(commands) - set(EXAMPLES)
    for path, cmd in commands.items():
        opts = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        assert ("--json" in opts) == (path not in NO_RESULT), path
        r = runner.invoke(app, [*path.split(), "-h"])
        assert r.exit_code == 0, (path, r.output)
        flat = " ".join(r.stdout.split())
        assert "Examples: $ healthfed " + path in flat, (path, flat[-400:])
        assert "Exit codes: 0 success" in flat and "3 pending" in flat, path


def test_node_files_are_arguments_on_every_command() -> None:
    for path, cmd in _leaf_commands().items():
        for p in cmd.params:
            if p.name in ("nodes", "node_files", "node_file"):
                assert isinstance(p, click.Argument) or "--nodes" in getattr(p, "opts", ()), path
        names = {p.name for p in cmd.params if isinstance(p, click.Argument)}
        if any(isinstance(p, click.Option) and "--nodes" in p.opts for p in cmd.params):
            assert "node_files" in names, f"{path}: --nodes without node files as arguments"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("study")
    r = runner.invoke(
        app, ["synth", "covid", "--sites", "2", "--rows", "400", "--out", str(root / "data"),
              "--json"]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    written = json.loads(r.stdout)["written"]
    assert sum(p.endswith(".toml") for p in written) == 2
    r = runner.invoke(app, ["hub", "init", str(root / "hub"), "--json"])
    assert r.exit_code == 0, r.output
    hub = json.loads(r.stdout)
    assert hub["public_key_file"].endswith("hub_public_key.txt")
    nodes = []
    for i in (1, 2):
        r = runner.invoke(
            app,
            ["node", "init", str(root / f"h{i}.toml"), "--name", f"hospital_{i}", "--dataset",
             str(root / "data" / f"hospital_{i}.toml"), "--hub-key", hub["public_key_file"],
             "--json"],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["governed"] is True
        nodes.append(root / f"h{i}.toml")
    return {"root": root, "hub": root / "hub", "h1": nodes[0], "h2": nodes[1]}


def test_json_results_on_stdout_and_messages_on_stderr(study: dict[str, Path]) -> None:
    hub = str(study["hub"])
    r = runner.invoke(app, ["catalogue", "publish", str(study["h1"]), "--hub", hub, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"published": ["hospital_1/covid"]}
    assert "Published" in r.stderr
    r = runner.invoke(app, ["permit", "list", "--hub", hub, "--json"])
    assert json.loads(r.stdout) == {"applications": [], "permits": []}
    r = runner.invoke(app, ["node", "optout", "count", str(study["h1"]), "--json"])
    assert json.loads(r.stdout) == {"node": "hospital_1", "total": 0}
    r = runner.invoke(app, ["catalogue", "show", "hospital_1/covid", "--hub", hub, "--json"])
    assert json.loads(r.stdout)["identifier"] == "hospital_1/covid" and r.stderr == ""

    log = study["hub"] / "audit.jsonl"
    r = runner.invoke(app, ["audit", "verify", str(log), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    lines = log.read_text().splitlines()
    tampered = study["root"] / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0].replace("hub_init", "hub_xxxx"), *lines[1:]]) + "\n")
    r = runner.invoke(app, ["audit", "verify", str(tampered), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False


def test_federated_commands_print_progress_on_stderr(tmp_path: Path) -> None:
    nodes = sandbox_nodes(tmp_path, sites=2, rows=400)
    r = runner.invoke(app, ["stats", "table1", *nodes, "--vars", "age", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["computation"] == "table1"
    assert "round 1: table1 on 'covid' answered by 2 site(s)" in r.stderr
    model = tmp_path / "model"
    r = runner.invoke(
        app, ["train", *nodes, "--target", "death_28d", "--features", "age", "--holdout", "0.3",
              "--out", str(model), "--json"]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sites"] == ["h1", "h2"]
    assert "round 2: glm_step" in r.stderr and "Saved" in r.stderr
    # The node files come as arguments after the model, as on every other command.
    r = runner.invoke(app, ["evaluate", str(model), *nodes, "--holdout", "0.3", "--json"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.stdout)["metrics"]) >= {"h1", "h2"}
    assert "round 1: evaluate_binary" in r.stderr
    r = runner.invoke(app, ["evaluate", str(model)])  # the nodes it was trained on
    assert r.exit_code == 0 and "trained on (nodes.json)" in r.stderr, r.output
    r = runner.invoke(app, ["report", str(model), *nodes, "--out", str(tmp_path / "rep"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["html"].endswith("report.html")
    assert "round 1: " in r.stderr and "subgroup_metrics" in r.stderr


@pytest.mark.flower
def test_flower_engine_says_what_it_is_waiting_for(tmp_path: Path) -> None:
    nodes = sandbox_nodes(tmp_path, sites=2, rows=300)
    r = runner.invoke(app, ["stats", "sum", *nodes, "--var", "age", "--engine", "flower", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] > 0
    assert "Starting a Flower SuperLink and 2 SuperNode(s)" in r.stderr
    assert "Flower federation of 2 site(s) ready after" in r.stderr
    assert "round 1: sum" in r.stderr
