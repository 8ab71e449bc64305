"""A governed node holding one hospital's file twice (a copy under a second name), and permits.

Used by the population tests (budget and memory): the attacker is a researcher with
several ordinary, granted permits; the site registered the same patients as two
datasets (``covid`` and ``covid_copy``, a byte copy of the file).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from healthfed.data.synth import write_covid_cohort
from healthfed.hub import Hub
from healthfed.node.runtime import Node, write_node_file
from healthfed.policy import SitePolicy

RESEARCHER = "alice@uni.example"
VARIABLES = ["age", "sex", "crp", "diabetes", "death_28d"]
COMPUTATIONS = ("count", "crosstab", "sum", "table1", "dp_count", "dp_sum")


def write_site(root: Path, policy: SitePolicy | None = None, hub: Hub | None = None) -> Path:
    """One node file with ``covid`` and ``covid_copy`` (same patients, copied file)."""
    written = write_covid_cohort(root / "data", sites=1, rows=300, seed=11)
    desc = next(p for p in written if p.suffix == ".toml")
    parquet = next(p for p in written if p.suffix == ".parquet")
    shutil.copy(parquet, root / "data" / "copy.parquet")
    copy = root / "data" / "copy.toml"
    text = desc.read_text(encoding="utf-8")
    text = text.replace('name = "covid"', 'name = "covid_copy"', 1)
    text = text.replace(f'file = "{parquet.name}"', 'file = "copy.parquet"', 1)
    copy.write_text(text, encoding="utf-8")
    kwargs: dict[str, Any] = {"policy": policy or SitePolicy()}
    if hub is not None:
        kwargs["hub_keys"] = [hub.public_key_path]
    return write_node_file(root / "nodes" / "hospital_1.toml", "hospital_1", [desc, copy], **kwargs)


def truth(node_file: Path) -> pd.DataFrame:
    node = Node.from_toml(node_file)
    return pd.read_parquet(node.datasets["covid"].descriptor.path)


def grant(hub: Hub, node_file: Path) -> dict[str, Any]:
    """A fresh, ordinary permit over both dataset names."""
    hub.publish_node(Node.from_toml(node_file))
    app = hub.apply(
        {
            "applicant": "Uni Example",
            "authorised_persons": [RESEARCHER],
            "purpose": "scientific_research",
            "purpose_description": "test study",
            "no_prohibited_use": True,
            "datasets": ["covid", "covid_copy"],
            "variables": VARIABLES,
            "computations": list(COMPUTATIONS),
        }
    )
    expires = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    return hub.grant(app["id"], expires=expires)


def ask(
    node: Node, computation: str, params: dict[str, Any], permit: Any, dataset: str = "covid"
) -> dict[str, Any]:
    """One request as the researcher sends it (through the hub or directly)."""
    return node.handle(
        {
            "computation": computation,
            "dataset": dataset,
            "params": params,
            "permit": permit,
            "requester": RESEARCHER,
            "purpose": "scientific_research",
            "request_id": "r",
        }
    )


def refused(reply: dict[str, Any], *needles: str) -> str:
    assert reply["status"] == "refused", reply
    for n in needles:
        assert n in reply["reason"], reply["reason"]
    return str(reply["reason"])
