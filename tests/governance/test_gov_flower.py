"""Node-side permit checks over a real Flower deployment (SuperLink + SuperNodes, loopback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _governance_helpers import RESEARCHER, grant, last_record

from healthfed.errors import PermitRefusedBySites
from healthfed.federation.federation import Federation
from healthfed.hub import Hub


@pytest.mark.flower
def test_flower_nodes_refuse_an_untrusted_permit_and_accept_a_trusted_one(
    tmp_path: Path, hub: Hub, node_files: list[Path], permit: dict[str, Any]
) -> None:
    other = Hub.init(tmp_path / "other-hub")
    try:
        untrusted = grant(other, node_files)
    finally:
        other.close()
    fed = Federation.flower(
        node_files, work_dir=tmp_path / "flower", permit=untrusted, requester=RESEARCHER, timeout=60
    )
    try:
        with pytest.raises(PermitRefusedBySites) as err:
            fed.count("covid")
        for site in ("hospital_1", "hospital_2"):
            assert "permit check 'trusted_hub' failed" in str(err.value) and site in str(err.value)
        # The node executor (another process) wrote the decision to the node's audit log.
        for path in node_files:
            rec = last_record(path)
            assert rec["decision"] == "refused" and rec["check"] == "trusted_hub"
        result = fed.with_permit(permit).count("covid")
    finally:
        fed.close()
    assert result.count == 600 and result.engine == "flower"
    assert last_record(node_files[0])["decision"] == "released"
