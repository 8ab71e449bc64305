"""Sandbox hospitals made through the CLI, as a newcomer makes them (synth, then node init)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from healthfed.cli import app

runner = CliRunner()


def sandbox_nodes(root: Path, sites: int, rows: int, node_dir: Path | None = None) -> list[str]:
    """``healthfed synth covid`` into ``root/d``, then one sandbox node file per hospital.

    The nodes are named ``h1``, ``h2``, ... and their files ``node_dir/h<k>.toml``
    (default ``root``); returns the node files.
    """
    data = root / "d"
    r = runner.invoke(
        app, ["synth", "covid", "--sites", str(sites), "--rows", str(rows), "--out", str(data)]
    )
    assert r.exit_code == 0, r.output
    files = []
    for k in range(1, sites + 1):
        node = (node_dir or root) / f"h{k}.toml"
        r = runner.invoke(
            app,
            ["node", "init", str(node), "--name", f"h{k}", "--sandbox",
             "--dataset", str(data / f"hospital_{k}.toml")],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        files.append(str(node))
    return files
