"""``healthfed node pending`` shows the values a held result would release (issue 12, item 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.data.synth import write_covid_cohort
from healthfed.errors import ApprovalPending
from healthfed.federation.federation import Federation
from healthfed.hub import Hub
from healthfed.node.airlock import ApprovalQueue
from healthfed.node.release_text import SHOWN, count_values, release_lines
from healthfed.node.runtime import Node, write_node_file
from healthfed.policy import SitePolicy

runner = CliRunner()
RESEARCHER = "alice@uni.example"


def _grant(hub: Hub, node_files: list[Path]) -> dict[str, Any]:
    for p in node_files:
        hub.publish_node(Node.from_toml(p))
    application = hub.apply(
        {
            "applicant": "Uni Example",
            "authorised_persons": [RESEARCHER],
            "purpose": "scientific_research",
            "purpose_description": "test study",
            "no_prohibited_use": True,
            "datasets": ["covid"],
            "variables": ["age", "sex", "death_28d"],
            "computations": ["table1"],
        }
    )
    expires = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    return hub.grant(application["id"], expires=expires)


@pytest.fixture
def held(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A governed node that holds a Table 1 for manual approval; (node file, held result)."""
    hub = Hub.init(tmp_path / "hub", name="test access body")
    try:
        descs = sorted(
            p for p in write_covid_cohort(tmp_path / "data", sites=2, rows=300, seed=5)
            if p.suffix == ".toml"
        )  # fmt: skip
        node_files = [
            write_node_file(
                tmp_path / "nodes" / f"{d.stem}.toml",
                name=d.stem,
                descriptors=[d],
                hub_keys=[hub.public_key_path],
                approval={"table1": "manual"},
                policy=SitePolicy(count_perturbation="none"),
            )
            for d in descs
        ]
        permit = _grant(hub, node_files)
    finally:
        hub.close()
    with pytest.raises(ApprovalPending):
        with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
            fed.table1("covid", ["age", "sex"], by="death_28d")
    node = Node.from_toml(node_files[0])
    assert node.governance is not None and node.governance.approvals is not None
    (ticket,) = ApprovalQueue(node.governance.approvals).list("pending")
    assert ticket.result is not None
    return node_files[0], ticket.result


def test_pending_shows_the_values_not_bytes(held: tuple[Path, dict[str, Any]]) -> None:
    node_file, result = held
    r = runner.invoke(app, ["node", "pending", str(node_file), "--full"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "bytes" not in out
    assert f"{count_values(result)} number(s) to release" in out
    # every released count of every table is shown, in its grid
    sex = result["tables"]["var:sex"]
    assert "table 'var:sex' (3 x 3):" in out
    for level, row, total in zip(sex["rows"], sex["counts"], sex["row_totals"], strict=True):
        line = next(x for x in out.splitlines() if x.strip().startswith(level))
        assert [int(v) if v != "-" else None for v in line.split()[1:]] == [*row, total]
    # the numeric summaries: n, mean, m2 and the histogram bins
    cell = result["numeric"]["age"]["cells"][0]
    assert f"age [0]: n {cell['n']}, mean {cell['mean']:.6g}, m2 {cell['m2']:.6g}" in out
    assert f"histogram, {len(cell['hist']['counts'])} bins: [0, " in out


def test_pending_limits_long_blocks_unless_full(held: tuple[Path, dict[str, Any]]) -> None:
    node_file, result = held
    short = "\n".join(release_lines(result))
    full = "\n".join(release_lines(result, full=True))
    bins = len(result["numeric"]["age"]["cells"][0]["hist"]["counts"])
    assert bins > SHOWN and "more; --full shows all" in short
    assert "--full" not in full
    r = runner.invoke(app, ["node", "pending", str(node_file)])
    assert r.exit_code == 0 and "more; --full shows all" in r.output


def test_release_lines_of_model_statistics() -> None:
    result = {
        "kind": "model_statistics",
        "n_rows": 300,
        "arrays": {"xwz": {"shape": [3], "data": [-96.66983847, 37.0135429, -53.35]}},
        "scalars": {"loss": 12.5},
        "counts": {"n_missing": [0, 7]},
    }
    lines = release_lines(result)
    assert lines[0] == "7 number(s) to release:"
    assert "xwz [3]: -96.6698, 37.0135, -53.35" in lines
    assert "loss: 12.5" in lines and "n_missing: 0, 7" in lines and "n_rows: 300" in lines
