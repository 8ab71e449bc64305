"""Smoke test of ``bench/privacy_attacks.py``: its in-process part runs and its JSON has the keys.

Tiny data (a demo cohort of 2 x 200 rows, a denial-of-service list of 50 columns), the
in-process engine only. The number of leaks is not checked: it changes as protections
land; the bench itself is the measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_in_process_and_prints_its_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "privacy_attacks.py"),
            "--engines",
            "inprocess",
            "--demo-sites",
            "2",
            "--demo-rows",
            "200",
            "--dos-columns",
            "50",
            "--work-dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "attacks",
        "leaks",
        "table1_cells_released_fraction",
        "km_pooled_steps",
        "glm_max_abs_coef_diff_vs_pooled",
    ):
        assert key in report, key
    attacks = report["attacks"]
    assert isinstance(attacks, list) and len(attacks) >= 10
    classes = {a["class"].split()[0] for a in attacks}
    assert classes == {"1", "2", "3", "4", "5", "6", "7"}, classes
    for a in attacks:
        assert a["engine"] == "inprocess"
        assert isinstance(a["leak"], bool) and isinstance(a["detail"], str)
        assert a["refusal"] is None or isinstance(a["refusal"], str)
        assert not a["detail"].startswith("attack failed"), a  # every attack ran to a verdict
    assert isinstance(report["leaks"], int)
    assert report["leaks"] == sum(a["leak"] for a in attacks)
    fractions = report["table1_cells_released_fraction"]
    assert set(fractions) >= {"demo", "with_site_of_30"}
    for v in fractions.values():
        assert v is None or 0.0 <= v <= 1.0
    assert isinstance(report["km_pooled_steps"], int) and report["km_pooled_steps"] >= 0
    diff = report["glm_max_abs_coef_diff_vs_pooled"]
    assert diff is None or (isinstance(diff, float) and diff >= 0.0)
