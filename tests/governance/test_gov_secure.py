"""Secure aggregation on governed nodes: the permit, the airlock and the audit log apply."""

from __future__ import annotations

from typing import Any

import pytest
from _governance_helpers import RESEARCHER, grant, last_record

from healthfed.errors import ApprovalPending, PermitRefusedBySites
from healthfed.federation.federation import Federation
from healthfed.hub import Hub
from healthfed.node.runtime import Node


def test_secure_sum_needs_the_permit_and_is_audited(hub: Hub, node_files: Any) -> None:
    with Federation.from_node_files(node_files, requester=RESEARCHER) as fed:
        with pytest.raises(PermitRefusedBySites) as err:
            fed.secure_sum("covid", "age")
    assert "hospital_1" in str(err.value) and "permit" in str(err.value)
    assert last_record(node_files[0])["check"] == "missing"

    permit = grant(hub, node_files, computations=("table1",))
    with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
        with pytest.raises(PermitRefusedBySites) as err:
            fed.secure_sum("covid", "age")
    assert "'sum'" in str(err.value) and last_record(node_files[0])["check"] == "computation"

    permit = grant(hub, node_files, computations=("sum",))
    with Federation.from_node_files(
        node_files, permit=permit, requester=RESEARCHER, hub=hub
    ) as fed:
        res = fed.secure_sum("covid", "age")
    assert res.sites == ["hospital_1", "hospital_2"] and res.n == 600
    rec = last_record(node_files[0])
    assert rec["decision"] == "released" and rec["secure_aggregation"] is True
    assert rec["permit_id"] == permit["permit"]["permit_id"]
    (release,) = [r for r in hub.releases() if r["computation"] == "sum"]
    assert release["sites"] == ["hospital_1", "hospital_2"]


def test_secure_sum_waits_for_manual_approval(hub: Hub, make_nodes: Any) -> None:
    node_files = make_nodes(approval={"sum": "manual"})
    permit = grant(hub, node_files, computations=("sum",))

    def secure_sum() -> Any:
        with Federation.from_node_files(node_files, permit=permit, requester=RESEARCHER) as fed:
            return fed.secure_sum("covid", "age")

    with pytest.raises(ApprovalPending) as err:
        secure_sum()
    tickets = err.value.tickets
    assert sorted(tickets) == ["hospital_1", "hospital_2"]
    for path in node_files:
        node = Node.from_toml(path)
        node.decide(tickets[node.name], approve=True, by="steward")
    res = secure_sum()
    assert res.n == 600 and res.sites == ["hospital_1", "hospital_2"]
    rec = last_record(node_files[1])
    assert rec["decision"] == "released" and rec["ticket"] == tickets["hospital_2"]
