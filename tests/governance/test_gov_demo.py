"""The demo runs through a permit granted by a local hub."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from healthfed.demo import DEMO_ANALYSES, DP_COMPUTATION, run_demo
from healthfed.governance.audit import verify_audit_log
from healthfed.hub import Hub


def test_demo_runs_under_a_permit_of_its_local_hub(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_demo(sites=2, rows=300, out=out, console=Console(file=io.StringIO()), report=False)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("engine", "sites", "n_total", "table1", "suppressed_cells", "permit_id"):
        assert key in summary
    pid = summary["permit_id"]
    assert pid == result.summary["permit_id"] and pid.startswith("P-")
    with Hub.open(out / "hub") as hub:
        assert hub.permit(pid)["permit"]["purpose"] == "scientific_research"
        body = hub.permit(pid)["permit"]
        assert body["analyses"] == sorted(DEMO_ANALYSES) and body["computations"] == []
        releases = hub.releases()  # Table 1, the DP mean and the secure sum
        assert [r["computation"] for r in releases] == ["table1", DP_COMPUTATION, "sum"]
        for release in releases:
            assert release["permit_id"] == pid and release["sites"] == summary["sites"]
        assert len(hub.catalogue()) == 2
    assert verify_audit_log(out / "hub" / "audit.jsonl").ok
    for site in summary["sites"]:
        log = out / "nodes" / f"{site}.state" / "audit.jsonl"
        assert verify_audit_log(log).ok
        records = [json.loads(line) for line in log.read_text().splitlines()]
        dp, secure = records[-2], records[-1]
        assert dp["permit_id"] == pid and dp["decision"] == "released"
        assert dp["computation"] == DP_COMPUTATION and dp["dp_epsilon"] > 0
        assert secure["computation"] == "sum" and secure["secure_aggregation"] is True
        assert secure["decision"] == "released"
    # Running again in the same folder reuses the hub and grants a fresh permit.
    again = run_demo(sites=2, rows=300, out=out, console=Console(file=io.StringIO()), report=False)
    assert again.summary["permit_id"] != pid
