"""Shared helpers of the governance tests (imported by name; fixtures stay in conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from healthfed.governance.permit import PERMIT_FORMAT, format_time, sign_permit
from healthfed.hub import Hub
from healthfed.node.runtime import Node

RESEARCHER = "alice@uni.example"
VARIABLES = ["age", "sex", "crp", "diabetes", "death_28d"]
SITES = 2
ROWS = 300


def grant(
    hub: Hub,
    node_files: list[Path],
    *,
    variables: list[str] = VARIABLES,
    computations: tuple[str, ...] = ("table1", "count", "describe"),
    persons: tuple[str, ...] = (RESEARCHER,),
    **grant_kwargs: Any,
) -> dict[str, Any]:
    """Publish the nodes' catalogue entries, apply and grant; returns the signed permit."""
    for p in node_files:
        hub.publish_node(Node.from_toml(p))
    app = hub.apply(
        {
            "applicant": "Uni Example",
            "authorised_persons": list(persons),
            "purpose": "scientific_research",
            "purpose_description": "test study",
            "no_prohibited_use": True,
            "datasets": ["covid"],
            "variables": list(variables),
            "computations": list(computations),
        }
    )
    grant_kwargs.setdefault("expires", (datetime.now(UTC) + timedelta(days=10)).date().isoformat())
    return hub.grant(app["id"], **grant_kwargs)


def forge(key: Any, sites: list[str], **overrides: Any) -> dict[str, Any]:
    """A permit signed directly with ``key`` (e.g. already expired), bypassing the hub's checks."""
    now = datetime.now(UTC)
    body = {
        "format": PERMIT_FORMAT,
        "permit_id": "P-forged",
        "application_id": "A-forged",
        "issuer": {"hub": "x", "key_id": "x"},
        "holder": "Uni Example",
        "authorised_persons": [RESEARCHER],
        "purpose": "scientific_research",
        "purpose_description": "test",
        "datasets": [f"{s}/covid" for s in sites],
        "variables": VARIABLES,
        "computations": ["table1", "count"],
        "data_form": "anonymised",
        "output_rules": {"min_cell_count": 5, "min_subset": 5, "min_sites": 2},
        "issued_at": format_time(now),
        "not_before": format_time(now - timedelta(days=1)),
        "expires": format_time(now + timedelta(days=1)),
        **overrides,
    }
    return sign_permit(body, key)


def last_record(node_file: Path) -> dict[str, Any]:
    node = Node.from_toml(node_file)
    records = node.audit.records()
    assert records, f"no audit record at {node.name}"
    return records[-1]
