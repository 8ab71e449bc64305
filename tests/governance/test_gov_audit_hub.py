"""Tamper-evident audit logs, the hub's catalogue, applications and transparency register."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _governance_helpers import RESEARCHER, grant
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import ColumnSpec, DatasetDescriptor
from healthfed.errors import PermitError
from healthfed.federation.federation import Federation
from healthfed.governance.audit import AuditLog, verify_audit_log
from healthfed.governance.catalogue import catalogue_count
from healthfed.hub import Hub
from healthfed.node.catalogue import describe_dataset
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy

runner = CliRunner()


def flat(result: Any) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(result.output.split())


# --- audit ------------------------------------------------------------------------------------
@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        audit.append({"action": "request", "actor": f"user{i}", "decision": "released", "n": i})
    return audit


def _verify_cli(path: Path) -> Any:
    return runner.invoke(app, ["audit", "verify", str(path)])


def test_intact_log_verifies(log: AuditLog) -> None:
    r = _verify_cli(log.path)
    assert r.exit_code == 0 and "5 record(s), hash chain intact" in flat(r)


def test_one_byte_edit_fails_naming_the_record(log: AuditLog) -> None:
    raw = bytearray(log.path.read_bytes())
    lines = raw.split(b"\n")
    offset = sum(len(ln) + 1 for ln in lines[:2]) + lines[2].index(b"user2") + 4
    raw[offset] = ord("9")  # user2 -> user9 in the third record
    log.path.write_bytes(bytes(raw))
    r = _verify_cli(log.path)
    assert r.exit_code == 1, flat(r)
    assert "line 3" in flat(r) and "changed" in flat(r)
    report = verify_audit_log(log.path)
    assert not report.ok and report.bad_line == 3


def test_removed_record_fails(log: AuditLog) -> None:
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:1] + lines[2:]))
    report = verify_audit_log(log.path)
    assert not report.ok and report.bad_line == 2


def test_reordered_records_fail(log: AuditLog) -> None:
    lines = log.path.read_text().splitlines(keepends=True)
    lines[1], lines[3] = lines[3], lines[1]
    log.path.write_text("".join(lines))
    report = verify_audit_log(log.path)
    assert not report.ok and report.bad_line == 2


def test_truncated_tail_fails_through_the_head(log: AuditLog) -> None:
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:-1]))
    r = _verify_cli(log.path)
    assert r.exit_code == 1 and "removed from the end" in flat(r)


def test_appends_continue_the_chain_across_instances(log: AuditLog) -> None:
    AuditLog(log.path).append({"action": "x"})
    assert verify_audit_log(log.path).records == 6


def test_node_audit_log_edit_detected(
    hub: Hub, node_files: list[Path], permit: dict[str, Any]
) -> None:
    with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
        fed.count("covid")
        fed.count("covid")
    path = Node.from_toml(node_files[0]).governance.audit_log
    assert _verify_cli(path).exit_code == 0
    text = path.read_text()
    path.write_text(text.replace('"released_bytes":', '"released_bytes":1', 1))
    r = _verify_cli(path)
    assert r.exit_code == 1 and "line 1" in flat(r)


# --- catalogue --------------------------------------------------------------------------------
def test_catalogue_counts_are_rounded_and_never_below_the_minimum(tmp_path: Path) -> None:
    assert catalogue_count(3, 5) == "<5"
    assert catalogue_count(5, 5) == 5 or catalogue_count(5, 5) == 10
    assert catalogue_count(7, 5) == 10 and catalogue_count(1234, 5) == 1230
    desc = DatasetDescriptor(
        name="tiny",
        path=tmp_path / "none.parquet",
        format="parquet",
        id_column="pid",
        columns={
            "pid": ColumnSpec("pid", "id"),
            "age": ColumnSpec("age", "numeric", unit="years", bounds=(0, 120)),
        },
        title="Three patients",
    )
    df = pd.DataFrame({"pid": ["a", "b", "c"], "age": [30.0, 40.0, 50.0]})
    node = Node("small_site", {"tiny": NodeDataset.from_frame(df, desc)})
    entry = describe_dataset(node, "tiny")
    assert entry["number_of_records"] == "<5"
    assert entry["number_of_unique_individuals"] == "<5"
    assert [v["name"] for v in entry["variables"]] == ["age"]  # the id column is not a variable
    assert entry["variables"][0]["unit"] == "years"


def test_catalogue_publish_list_show_cli(hub: Hub, node_files: list[Path]) -> None:
    for p in node_files:
        r = runner.invoke(app, ["catalogue", "publish", str(p), "--hub", str(hub.directory)])
        assert r.exit_code == 0, flat(r)
    r = runner.invoke(app, ["catalogue", "list", "--hub", str(hub.directory)])
    assert r.exit_code == 0 and "hospital_1/covid" in flat(r) and "records 300" in flat(r)
    r = runner.invoke(app, ["catalogue", "show", "hospital_2/covid", "--hub", str(hub.directory)])
    entry = json.loads(flat(r))
    for field in ("identifier", "title", "description", "publisher", "access_rights",
                  "legal_basis", "temporal_coverage", "spatial_coverage", "number_of_records",
                  "number_of_unique_individuals", "health_category", "coding_systems",
                  "variables", "provenance", "quality_notes"):  # fmt: skip
        assert field in entry
    assert entry["number_of_records"] == 300
    crp = next(v for v in entry["variables"] if v["name"] == "crp")
    assert crp["unit"] == "mg/L" and crp["type"] == "numeric"
    assert "patient_id" not in {v["name"] for v in entry["variables"]}
    r = runner.invoke(app, ["catalogue", "show", "nowhere/x", "--hub", str(hub.directory)])
    assert r.exit_code == 2 and "nowhere/x" in flat(r)


def test_application_is_checked_against_the_catalogue(hub: Hub, node_files: list[Path]) -> None:
    for p in node_files:
        hub.publish_node(Node.from_toml(p))
    app_doc = {
        "applicant": "Uni",
        "authorised_persons": [RESEARCHER],
        "purpose": "scientific_research",
        "purpose_description": "x",
        "no_prohibited_use": True,
        "datasets": ["covid"],
        "variables": ["age", "no_such_var"],
        "computations": ["table1"],
    }
    with pytest.raises(PermitError, match="no_such_var"):
        hub.apply(app_doc)
    with pytest.raises(PermitError, match="unknown analysis .exfiltrate."):
        hub.apply({**app_doc, "variables": ["age"], "computations": ["exfiltrate"]})
    ok = hub.apply({**app_doc, "variables": ["age"]})
    assert ok["datasets"] == ["hospital_1/covid", "hospital_2/covid"]
    with pytest.raises(PermitError, match="not in the future"):
        hub.grant(ok["id"], expires="2001-01-01")


# --- the whole CLI flow and the transparency register -----------------------------------------
def test_cli_flow_hub_permit_stats_transparency(tmp_path: Path, cohort: list[Path]) -> None:
    hub_dir = tmp_path / "hub"
    r = runner.invoke(app, ["hub", "init", str(hub_dir), "--name", "HDAB test"])
    assert r.exit_code == 0, flat(r)
    nodes = []
    for d in cohort:
        node = tmp_path / "nodes" / f"{d.stem}.toml"
        r = runner.invoke(app, ["node", "init", str(node), "--name", d.stem, "--dataset", str(d),
                                "--hub-key", str(hub_dir / "hub_public_key.txt")])  # fmt: skip
        assert r.exit_code == 0 and "governed" in flat(r), flat(r)
        r = runner.invoke(app, ["catalogue", "publish", str(node), "--hub", str(hub_dir)])
        assert r.exit_code == 0, flat(r)
        nodes.append(str(node))
    r = runner.invoke(app, ["node", "init", str(tmp_path / "x.toml"), "--name", "x",
                            "--dataset", str(cohort[0])])  # fmt: skip
    assert r.exit_code == 2 and "--hub-key" in flat(r)
    r = runner.invoke(
        app,
        ["permit", "apply", "--hub", str(hub_dir), "--applicant", "Uni Example",
         "--person", RESEARCHER, "--purpose", "scientific_research",
         "--description", "Table 1 of admissions", "--dataset", "covid",
         "--vars", "age,sex,death_28d", "--computation", "table1",
         "--declare-no-prohibited-use"],
    )  # fmt: skip
    assert r.exit_code == 0, flat(r)
    app_id = r.output.strip().splitlines()[-1]
    r = runner.invoke(app, ["permit", "grant", app_id, "--hub", str(hub_dir),
                            "--expires", "2099-12-31"])  # fmt: skip
    assert r.exit_code == 0, flat(r)
    permit_path = r.output.strip().splitlines()[-1]
    signed = json.loads(Path(permit_path).read_text())
    assert signed["permit"]["expires"] == "2100-01-01T00:00:00Z"
    assert signed["signature"]["alg"] == "Ed25519"
    # A refused application, for the register's count.
    r = runner.invoke(
        app,
        ["permit", "apply", "--hub", str(hub_dir), "--applicant", "AdCorp", "--person", "b@x",
         "--purpose", "advertising", "--description", "ads", "--dataset", "covid",
         "--vars", "age", "--computation", "count", "--declare-no-prohibited-use"],
    )  # fmt: skip
    assert r.exit_code == 2 and "Art. 54" in flat(r)
    # Without the permit nothing runs; with it (and the hub) the result is released.
    r = runner.invoke(app, ["stats", "table1", *nodes, "--vars", "age,sex", "--by", "death_28d"])
    assert r.exit_code == 2 and "permit check 'missing' failed" in flat(r)
    out = tmp_path / "t1.json"
    r = runner.invoke(
        app,
        ["stats", "table1", *nodes, "--vars", "age,sex", "--by", "death_28d", "--format", "json",
         "--out", str(out), "--permit", permit_path, "--requester", RESEARCHER,
         "--hub", str(hub_dir)],
    )  # fmt: skip
    assert r.exit_code == 0, flat(r)
    # The nodes' default policy perturbs counts (cell key method): each site's N within D.
    assert (
        abs(json.loads(out.read_text())["n_total"] - 600) <= 2 * SitePolicy().cell_key_max_deviation
    )
    r = runner.invoke(app, ["permit", "list", "--hub", str(hub_dir)])
    assert app_id in flat(r) and "refused" in flat(r) and "granted" in flat(r)
    r = runner.invoke(app, ["hub", "transparency", str(hub_dir), "--out", str(tmp_path / "tr")])
    assert r.exit_code == 0, flat(r)
    register = json.loads((tmp_path / "tr" / "transparency.json").read_text())
    pid = signed["permit"]["permit_id"]
    assert [p["permit_id"] for p in register["permits"]] == [pid]
    assert register["permits"][0]["holder"] == "Uni Example"
    assert register["permits"][0]["purpose"] == "scientific_research"
    assert register["permits"][0]["datasets"] == ["hospital_1/covid", "hospital_2/covid"]
    assert register["refused_applications"] == 1
    (release,) = register["released_results"]
    assert release["permit_id"] == pid and release["computation"] == "table1"
    assert release["sites"] == ["hospital_1", "hospital_2"]
    assert release["perturbed_cells"] > 0  # the register names the noise and its parameters
    assert release["perturbation"]["hospital_1"]["method"] == "cell_key"
    page = (tmp_path / "tr" / "transparency.html").read_text()
    assert pid in page and "Uni Example" in page and "table1" in page
    for path in [
        hub_dir / "audit.jsonl",
        *(Path(n).with_suffix(".state") / "audit.jsonl" for n in nodes),
    ]:
        r = _verify_cli(path)
        assert r.exit_code == 0, flat(r)


def test_hub_withholds_release_under_a_revoked_permit(
    hub: Hub, node_files: list[Path], permit: dict[str, Any]
) -> None:
    hub.revoke(permit["permit"]["permit_id"], "ethics approval withdrawn")
    with (
        Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER, hub=hub) as fed,
        pytest.raises(PermitError, match="revoked"),
    ):
        fed.count("covid")
    last = hub.audit_log.records()[-1]
    assert last["action"] == "release" and last["decision"] == "withheld"
    assert hub.releases() == []


def test_check_active_refuses_a_revoked_expired_or_foreign_permit_before_a_round(
    hub: Hub, node_files: list[Path], permit: dict[str, Any], tmp_path: Path
) -> None:
    pid = permit["permit"]["permit_id"]
    scope = {"requester": RESEARCHER, "computation": "count", "dataset": "covid"}
    before = len(hub.audit_log.records())
    assert hub.check_active(permit, **scope)["permit_id"] == pid
    assert len(hub.audit_log.records()) == before  # a passing check records nothing
    for change, match in (
        ({"requester": "mallory@x.example"}, "requester"),
        ({"computation": "table1_raw"}, "computation"),
        ({"dataset": "other"}, "'\\*/other' is not in permit"),
    ):
        with pytest.raises(PermitError, match=match):
            hub.check_active(permit, **{**scope, **change})
    later = datetime.now(UTC) + timedelta(days=30)
    with pytest.raises(PermitError, match="expired"):
        hub.check_active(permit, **scope, now=later)
    with Hub.init(tmp_path / "other", name="another access body") as other:
        with pytest.raises(PermitError, match="not a hub key this site trusts"):
            other.check_active(permit, **scope)
    hub.revoke(pid, "ethics approval withdrawn")
    with pytest.raises(PermitError, match="revoked"):
        hub.check_active(permit, **scope)
    last = hub.audit_log.records()[-1]
    assert last["action"] == "release" and last["decision"] == "withheld"
    assert last["permit_id"] == pid and "revoked" in last["reason"]
    assert hub.releases() == []


def test_permit_output_rules_tighten_the_site_policy(hub: Hub, node_files: list[Path]) -> None:
    strict = grant(hub, node_files, output_rules={"min_cell_count": 50})
    lax = grant(hub, node_files)
    with Federation.from_node_files(node_files, permit=lax, requester=RESEARCHER) as fed:
        a = fed.table1("covid", ["sex"], by="death_28d")
    with Federation.from_node_files(node_files, permit=strict, requester=RESEARCHER) as fed:
        b = fed.table1("covid", ["sex"], by="death_28d")
    assert b.suppressed_cells > a.suppressed_cells
