"""The hub folder can be moved: no hub file stores an absolute path.

A hub, its nodes and their data are set up in one folder; a permit is granted and a
result released; the folder is then moved elsewhere (a different depth) and the
moved hub opens, verifies, grants and releases as before.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from _governance_helpers import RESEARCHER, grant

from healthfed.data.synth import write_covid_cohort
from healthfed.federation.federation import Federation
from healthfed.governance.audit import verify_audit_log
from healthfed.hub import Hub
from healthfed.node.runtime import write_node_file
from healthfed.policy import SitePolicy


def _setup(root: Path) -> list[Path]:
    written = write_covid_cohort(root / "data", sites=2, rows=300, seed=5)
    with Hub.init(root / "hub", name="movable hub") as hub:
        nodes = [
            write_node_file(
                root / "nodes" / f"{d.stem}.toml",
                name=d.stem,
                descriptors=[d],
                hub_keys=[hub.public_key_path],
                policy=SitePolicy(count_perturbation="none"),
            )
            for d in sorted(p for p in written if p.suffix == ".toml")
        ]
        permit = grant(hub, nodes)
        with Federation.from_node_files(nodes, permit=permit, requester=RESEARCHER, hub=hub) as fed:
            fed.table1("covid", ["age", "sex"], by="death_28d")
        hub.transparency()
    return nodes


def _files_naming(folder: Path, text: str) -> list[str]:
    needle = text.encode()
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def test_a_moved_hub_folder_opens_and_works(tmp_path: Path) -> None:
    original = tmp_path / "study"
    _setup(original)
    assert _files_naming(original / "hub", str(original)) == []

    moved = tmp_path / "elsewhere" / "deeper" / "study"
    moved.parent.mkdir(parents=True)
    shutil.move(original, moved)
    assert not original.exists()
    nodes = sorted((moved / "nodes").glob("*.toml"))
    with Hub.open(moved / "hub") as hub:
        assert hub.db_url == f"sqlite:///{moved / 'hub' / 'hub.sqlite'}"
        (old_permit,) = hub.permits()
        assert [r["computation"] for r in hub.releases()] == ["table1"]
        permit_file = hub.permit_path(old_permit["permit_id"])
        with Federation.from_node_files(
            nodes, permit=str(permit_file), requester=RESEARCHER, hub=hub
        ) as fed:
            assert fed.table1("covid", ["age"], by="death_28d").sites
        assert len(hub.releases()) == 2
        grant(hub, nodes)  # a new application and permit in the moved folder
        assert len(hub.permits()) == 2 and hub.verify_audit_mirror()
        hub.transparency()
    assert verify_audit_log(moved / "hub" / "audit.jsonl").ok
    assert _files_naming(moved / "hub", str(moved)) == []


def test_a_hub_written_with_an_absolute_database_path_still_opens_after_a_move(
    tmp_path: Path,
) -> None:
    """Hub folders made before the fix name their database by its absolute path."""
    old = tmp_path / "old_hub"
    with Hub.init(old, name="old") as hub:
        hub._audit("note", "test", decision="none")
    config = old / "hub.toml"
    config.write_text(
        config.read_text().replace("sqlite:///hub.sqlite", f"sqlite:///{old / 'hub.sqlite'}")
    )
    new = tmp_path / "new_hub"
    shutil.copytree(old, new)
    shutil.rmtree(old)
    with Hub.open(new) as hub:
        assert hub.db_url == f"sqlite:///{new / 'hub.sqlite'}"
        assert hub.verify_audit_mirror()
