"""Nodes import and keep their audit log where ``fcntl`` does not exist (Windows servers).

The audit log's append lock is :mod:`filelock` (``flock`` on POSIX, ``LockFileEx`` on
Windows). Here ``fcntl`` is made unimportable, as on Windows, and a node, the hub and
the CLI still import and append; appends from several processes keep one intact chain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from healthfed.governance.audit import AuditLog, verify_audit_log

ROOT = Path(__file__).resolve().parents[2]

WITHOUT_FCNTL = """
import sys, warnings
sys.modules["fcntl"] = None  # `import fcntl` raises ImportError, as on Windows
warnings.simplefilter("ignore")  # filelock says it falls back to its portable lock
import healthfed.node.runtime, healthfed.hub, healthfed.cli
from healthfed.governance.audit import AuditLog, verify_audit_log
log = AuditLog(sys.argv[1])
for i in range(3):
    log.append({"action": "test", "i": i})
report = verify_audit_log(sys.argv[1])
assert report.ok and report.records == 3, report
print("ok")
"""

APPENDER = """
import sys
from healthfed.governance.audit import AuditLog
log = AuditLog(sys.argv[1])
for i in range(int(sys.argv[2])):
    log.append({"action": "test", "writer": sys.argv[3], "i": i})
"""


def test_no_module_of_healthfed_imports_fcntl() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "healthfed").rglob("*.py")
        if "import fcntl" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_a_node_imports_and_audits_without_fcntl(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL, str(tmp_path / "audit.jsonl")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_appends_from_several_processes_keep_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    AuditLog(log).append({"action": "start"})
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(log), "40", f"w{k}"])
        for k in range(3)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    report = verify_audit_log(log)
    assert report.ok and report.records == 1 + 3 * 40, report
