"""Opt-outs (EHDS Art. 71) and the node's airlock (manual approval and release)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _governance_helpers import RESEARCHER, grant, last_record
from typer.testing import CliRunner

from healthfed.cli import app
from healthfed.errors import ApprovalPending, ThresholdViolation
from healthfed.federation.federation import Federation
from healthfed.governance.audit import verify_audit_log
from healthfed.hub import Hub
from healthfed.node.runtime import Node, round_count

runner = CliRunner()


def flat(result: Any) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _count(node_files: list[Path], permit: dict[str, Any]) -> Any:
    with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
        return fed.count("covid")


def _table1(node_files: list[Path], permit: dict[str, Any]) -> Any:
    with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
        return fed.table1("covid", ["age", "sex"], by="death_28d")


def test_opted_out_patients_are_excluded_and_the_count_is_audited_rounded(
    node_files: list[Path], permit: dict[str, Any]
) -> None:
    before = _count(node_files, permit)
    assert before.per_site["hospital_1"] == 300
    ids = [f"hospital_1-{i:07d}" for i in range(1, 8)]  # 7 patients opt out
    r = runner.invoke(app, ["node", "optout", "add", str(node_files[0]), *ids])
    assert r.exit_code == 0, flat(r)
    after = _count(node_files, permit)
    assert after.per_site["hospital_1"] == 293
    assert after.per_site["hospital_2"] == 300
    rec = last_record(node_files[0])
    assert rec["decision"] == "released"
    assert rec["optouts_excluded"] == round_count(7, 5) == 5  # rounded, never the exact number
    assert last_record(node_files[1])["optouts_excluded"] == 0
    # The store holds hashes only.
    store = Node.from_toml(node_files[0]).optouts
    raw = store.path.read_bytes()
    assert all(i.encode() not in raw for i in ids)
    assert ids[0] in store and len(store) == 7
    # Statistics see the exclusion too (every computation reads the filtered view).
    with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
        t1 = fed.table1("covid", ["age"], by="death_28d")
    assert (
        t1.value("age", "n", site="hospital_1") + t1.value("age", "missing", site="hospital_1")
        == 293
    )
    # Withdrawing opt-outs re-admits the patients. (Withdrawing only two would make the
    # count differ from the one released before by two patients: the node-wide cohort
    # memory refuses that as differencing, so all seven come back, and the cohort is
    # again the first one released.)
    r = runner.invoke(app, ["node", "optout", "remove", str(node_files[0]), *ids])
    assert r.exit_code == 0, flat(r)
    assert _count(node_files, permit).per_site["hospital_1"] == before.per_site["hospital_1"]
    assert verify_audit_log(store.path.parent / "audit.jsonl").ok


def test_ungoverned_node_has_no_optout_store(tmp_path: Path, cohort: list[Path]) -> None:
    from healthfed.node.runtime import write_node_file

    path = write_node_file(tmp_path / "s.toml", "sandbox", [cohort[0]])
    r = runner.invoke(app, ["node", "optout", "add", str(path), "x"])
    assert r.exit_code == 2 and "ungoverned" in flat(r)


def test_manual_approval_pending_then_approve_releases(hub: Hub, make_nodes: Any) -> None:
    node_files = make_nodes(approval={"table1": "manual"})
    permit = grant(hub, node_files)

    with pytest.raises(ApprovalPending) as err:
        _table1(node_files, permit)
    tickets = err.value.tickets
    assert sorted(tickets) == ["hospital_1", "hospital_2"]
    assert f"pending approval at site hospital_1 (ticket {tickets['hospital_1']})" in str(err.value)
    # Re-sending before approval: still pending, same ticket (nothing released).
    with pytest.raises(ApprovalPending) as again:
        _table1(node_files, permit)
    assert again.value.tickets == tickets
    assert last_record(node_files[0])["decision"] == "pending"
    # The steward's view shows requester, permit, computation, parameters and checks.
    r = runner.invoke(app, ["node", "pending", str(node_files[0])])
    assert r.exit_code == 0, flat(r)
    for needle in (tickets["hospital_1"], RESEARCHER, permit["permit"]["permit_id"], "table1",
                   '"age"', "disclosure: passed", "suppressed cells"):  # fmt: skip
        assert needle in flat(r), (needle, flat(r))
    for path, site in zip(node_files, ("hospital_1", "hospital_2"), strict=True):
        r = runner.invoke(app, ["node", "approve", str(path), tickets[site], "--by", "steward"])
        assert r.exit_code == 0, flat(r)
    assert last_record(node_files[0])["action"] == "approve"
    t1 = _table1(node_files, permit)
    assert t1.sites == ["hospital_1", "hospital_2"] and t1.n_total == 600
    rec = last_record(node_files[0])
    assert rec["decision"] == "released" and rec["ticket"] == tickets["hospital_1"]
    r = runner.invoke(app, ["node", "pending", str(node_files[0])])
    assert "No pending requests" in flat(r)
    assert verify_audit_log(Node.from_toml(node_files[0]).governance.audit_log).ok


def test_an_approved_result_computed_before_an_opt_out_is_not_released_again(
    hub: Hub, make_nodes: Any
) -> None:
    """Attack: re-send an approved request after a patient opted out, to get the kept result
    (which still counts them) -- the opt-out must hold for it too (found by the README test)."""
    node_files = make_nodes(approval={"table1": "manual"})
    permit = grant(hub, node_files)

    with pytest.raises(ApprovalPending) as err:
        _table1(node_files, permit)
    tickets = err.value.tickets
    for path, site in zip(node_files, ("hospital_1", "hospital_2"), strict=True):
        assert runner.invoke(app, ["node", "approve", str(path), tickets[site]]).exit_code == 0
    _table1(node_files, permit)  # released once, as approved
    r = runner.invoke(app, ["node", "optout", "add", str(node_files[0]), "hospital_1-0000042"])
    assert r.exit_code == 0, flat(r)
    with pytest.raises((ApprovalPending, ThresholdViolation)) as after:
        _table1(node_files, permit)
    records = Node.from_toml(node_files[0]).audit.records()[-2:]
    assert records[0]["decision"] == "superseded", records
    assert records[0]["ticket"] == tickets["hospital_1"]
    assert records[1]["decision"] != "released", records
    if isinstance(after.value, ApprovalPending):  # a new ticket, computed without the patient
        assert after.value.tickets["hospital_1"] != tickets["hospital_1"]
    # hospital_2 had no opt-out: its approved result is still the same release.
    assert last_record(node_files[1])["decision"] == "released"
    assert verify_audit_log(Node.from_toml(node_files[0]).governance.audit_log).ok


def test_manual_approval_rejected_is_refused_with_the_reason(hub: Hub, make_nodes: Any) -> None:
    node_files = make_nodes(approval={"count": "manual"})
    permit = grant(hub, node_files)
    with pytest.raises(ApprovalPending) as err:
        with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
            fed.count("covid")
    ticket = err.value.tickets["hospital_2"]
    r = runner.invoke(
        app, ["node", "reject", str(node_files[1]), ticket, "--reason", "too granular"]
    )
    assert r.exit_code == 0, flat(r)
    approve = err.value.tickets["hospital_1"]
    assert runner.invoke(app, ["node", "approve", str(node_files[0]), approve]).exit_code == 0
    with pytest.raises(ThresholdViolation, match="rejected the release .*too granular"):
        with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
            fed.count("covid")
    assert last_record(node_files[1])["decision"] == "refused"
    # A decided ticket cannot be decided again.
    r = runner.invoke(app, ["node", "approve", str(node_files[1]), ticket])
    assert r.exit_code == 2 and "already rejected" in flat(r)


def test_cli_stats_reports_pending_with_exit_code_3(hub: Hub, make_nodes: Any) -> None:
    node_files = make_nodes(approval={"table1": "manual"})
    permit = grant(hub, node_files)
    path = hub.permit_path(permit["permit"]["permit_id"])
    args = ["stats", "table1", *map(str, node_files), "--vars", "age", "--permit", str(path),
            "--requester", RESEARCHER]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 3, flat(r)
    assert "pending approval at site hospital_1" in flat(r)
