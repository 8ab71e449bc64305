"""Every node refuses a request its permit does not cover, names the check, and audits it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _governance_helpers import RESEARCHER, forge, grant, last_record

from healthfed.errors import PermitError, PermitRefusedBySites
from healthfed.federation.federation import Federation
from healthfed.governance.audit import verify_audit_log
from healthfed.governance.keys import generate_private_key, load_private_key
from healthfed.governance.permit import PermitRefused, format_time
from healthfed.hub import Hub
from healthfed.node.runtime import Node

SITES = ["hospital_1", "hospital_2"]


def refused_everywhere(
    node_files: list[Path],
    permit: Any,
    check: str,
    call: Any = None,
    requester: str = RESEARCHER,
    **fed_kwargs: Any,
) -> str:
    """Run ``call`` (default: a Table 1) and assert every site refused with ``check``."""
    call = call or (lambda fed: fed.table1("covid", ["age", "sex"], by="death_28d"))
    with (
        Federation.from_node_files(
            node_files, permit=permit, requester=requester, **fed_kwargs
        ) as fed,
        pytest.raises(PermitRefusedBySites) as err,
    ):
        call(fed)
    message = str(err.value)
    for site, path in zip(SITES, node_files, strict=True):
        assert f"permit check {check!r} failed" in message and site in message, message
        rec = last_record(path)
        assert rec["decision"] == "refused" and rec["check"] == check, rec
        assert rec["action"] == "request" and rec["actor"] == requester
        assert verify_audit_log(Node.from_toml(path).governance.audit_log).ok
    return message


def test_permit_granted_by_the_hub_runs_and_is_audited(
    hub: Hub, node_files: list[Path], permit: dict[str, Any]
) -> None:
    with Federation.from_node_files(
        node_files, permit=hub.permit_path(permit["permit"]["permit_id"]), requester=RESEARCHER
    ) as fed:
        t1 = fed.table1("covid", ["age", "sex", "crp"], by="death_28d")
    assert t1.sites == SITES and t1.n_total == 600
    for path in node_files:
        rec = last_record(path)
        assert rec["decision"] == "released"
        assert rec["permit_id"] == permit["permit"]["permit_id"]
        assert rec["released_bytes"] > 0 and isinstance(rec["suppressed_cells"], int)
        assert rec["optouts_excluded"] == 0


def test_request_without_a_permit_runs_nothing(node_files: list[Path]) -> None:
    refused_everywhere(node_files, None, "missing")


def test_altered_permit_fails_the_signature_check(
    node_files: list[Path], permit: dict[str, Any]
) -> None:
    altered = copy.deepcopy(permit)
    altered["permit"]["variables"].append("icu")  # widen the scope after signing
    refused_everywhere(node_files, altered, "signature")


def test_permit_of_another_hub_is_not_trusted(tmp_path: Path, node_files: list[Path]) -> None:
    other = Hub.init(tmp_path / "other-hub")
    try:
        permit = grant(other, node_files)  # a perfectly valid permit ... of a hub we do not trust
    finally:
        other.close()
    refused_everywhere(node_files, permit, "trusted_hub")


def test_expired_permit(hub: Hub, node_files: list[Path]) -> None:
    key = load_private_key(hub.directory / Hub.KEY)
    past = datetime.now(UTC) - timedelta(days=2)
    permit = forge(
        key, SITES, not_before=format_time(past), expires=format_time(past + timedelta(days=1))
    )
    msg = refused_everywhere(node_files, permit, "expired")
    assert "expired at" in msg


def test_not_yet_valid_permit(hub: Hub, node_files: list[Path]) -> None:
    start = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    end = (datetime.now(UTC) + timedelta(days=9)).date().isoformat()
    permit = grant(hub, node_files, not_before=start, expires=end)
    refused_everywhere(node_files, permit, "not_yet_valid")


def test_person_not_authorised(node_files: list[Path], permit: dict[str, Any]) -> None:
    refused_everywhere(node_files, permit, "requester", requester="mallory@elsewhere.example")


def test_variable_outside_scope(node_files: list[Path], permit: dict[str, Any]) -> None:
    msg = refused_everywhere(
        node_files,
        permit,
        "variables",
        call=lambda fed: fed.table1("covid", ["age", "ldh"], by="death_28d"),
    )
    assert "ldh" in msg


def test_variable_outside_scope_in_a_condition(
    node_files: list[Path], permit: dict[str, Any]
) -> None:
    refused_everywhere(
        node_files, permit, "variables", call=lambda fed: fed.count("covid", icu="1")
    )


def test_computation_outside_scope(node_files: list[Path], permit: dict[str, Any]) -> None:
    refused_everywhere(
        node_files,
        permit,
        "computation",
        call=lambda fed: fed.crosstab("covid", "sex", "death_28d"),
    )


def test_dataset_outside_scope(hub: Hub, node_files: list[Path]) -> None:
    key = load_private_key(hub.directory / Hub.KEY)
    permit = forge(key, ["hospital_9"])
    refused_everywhere(node_files, permit, "dataset")


def test_prohibited_purpose_in_a_permit_is_refused_by_the_node(
    hub: Hub, node_files: list[Path]
) -> None:
    key = load_private_key(hub.directory / Hub.KEY)
    permit = forge(key, SITES, purpose="advertising_marketing")
    msg = refused_everywhere(node_files, permit, "purpose")
    assert "not an EHDS Art. 53(1) purpose" in msg


def test_purpose_the_site_does_not_accept(
    hub: Hub, node_files: list[Path], permit: dict[str, Any]
) -> None:
    for path in node_files:  # the site narrows its accepted purposes
        text = path.read_text().replace(
            "[governance]\n", '[governance]\naccepted_purposes = ["public_health"]\n'
        )
        path.write_text(text)
    msg = refused_everywhere(node_files, permit, "purpose")
    assert "does not accept purpose 'scientific_research'" in msg


def test_stated_purpose_must_equal_the_permits(
    node_files: list[Path], permit: dict[str, Any]
) -> None:
    refused_everywhere(node_files, permit, "purpose", purpose="official_statistics")


def test_prohibited_purpose_application_is_refused_and_recorded(
    hub: Hub, node_files: list[Path]
) -> None:
    for p in node_files:
        hub.publish_node(Node.from_toml(p))
    base = {
        "applicant": "AdCorp",
        "authorised_persons": ["bob@adcorp.example"],
        "purpose_description": "target diabetics with ads",
        "no_prohibited_use": True,
        "datasets": ["covid"],
        "variables": ["diabetes"],
        "computations": ["count"],
    }
    with pytest.raises(PermitError, match=r"prohibited secondary use under EHDS Art\. 54\(c\)"):
        hub.apply({**base, "purpose": "marketing"})
    with pytest.raises(PermitError, match="has not declared"):
        hub.apply({**base, "purpose": "scientific_research", "no_prohibited_use": False})
    refused = hub.applications("refused")
    assert len(refused) == 2 and all(a["reason"] for a in refused)
    actions = [r["action"] for r in hub.audit_log.records()]
    assert actions.count("application_refused") == 2
    assert verify_audit_log(hub.audit_log.path).ok and hub.verify_audit_mirror()


def test_checks_happen_before_data_is_opened(
    node_files: list[Path], permit: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused request never connects to the dataset."""
    node = Node.from_toml(node_files[0])
    ds = node.datasets["covid"]
    monkeypatch.setattr(ds, "connect", lambda: pytest.fail("data opened before the permit check"))
    reply = node.handle(
        {"computation": "table1", "dataset": "covid", "params": {"variables": ["age"]}}
    )
    assert reply["status"] == "refused" and reply["check"] == "missing"
    reply = node.handle(
        {
            "computation": "table1",
            "dataset": "covid",
            "params": {"variables": ["ldh"]},
            "permit": permit,
            "requester": RESEARCHER,
        }
    )
    assert reply["status"] == "refused" and reply["check"] == "variables"


def test_node_clock_decides_validity(
    hub: Hub, node_files: list[Path], permit: dict[str, Any]
) -> None:
    node = Node.from_toml(node_files[0])
    node.clock = lambda: datetime.now(UTC) + timedelta(days=30)
    reply = node.handle(
        {
            "computation": "count",
            "dataset": "covid",
            "params": {},
            "permit": permit,
            "requester": RESEARCHER,
        }
    )
    assert reply["check"] == "expired"


def test_permit_refused_names_check() -> None:
    exc = PermitRefused("expired", "permit P-1 expired", "P-1")
    assert isinstance(exc, PermitError) and exc.check == "expired" and "'expired'" in str(exc)


def test_untrusted_key_listed_in_other_key_file(tmp_path: Path, cohort: list[Path]) -> None:
    """A node trusting a base64 key (not a file) accepts only that key's permits."""
    from healthfed.governance.keys import public_key_b64
    from healthfed.node.runtime import write_node_file

    key = generate_private_key()
    path = write_node_file(
        tmp_path / "n.toml", "hospital_1", [cohort[0]], hub_keys=[public_key_b64(key)]
    )
    node = Node.from_toml(path)
    request = {"computation": "count", "dataset": "covid", "params": {}, "requester": RESEARCHER}
    ok = node.handle({**request, "permit": forge(key, ["hospital_1"])})
    assert ok["status"] == "ok", ok
    bad = node.handle({**request, "permit": forge(generate_private_key(), ["hospital_1"])})
    assert bad["check"] == "trusted_hub"


def test_expiry_as_a_number_of_days(hub: Hub, node_files: list[Path]) -> None:
    """``--expires 90d``: valid for 90 days from its start, so a script's permit never goes stale."""
    start = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    body = grant(hub, node_files, not_before=start, expires="90d")["permit"]
    nbf = datetime.fromisoformat(body["not_before"].replace("Z", "+00:00"))
    exp = datetime.fromisoformat(body["expires"].replace("Z", "+00:00"))
    assert exp - nbf == timedelta(days=90)
    for bad in ("0d", "-5d", "90 days", "d"):
        with pytest.raises(PermitError, match="grant"):
            grant(hub, node_files, expires=bad)
