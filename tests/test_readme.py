"""The README is a test: every shell block and every Python block, in order, from an empty folder.

A newcomer copies the README's blocks into one terminal one after the other; so does this
test, with the installed ``healthfed`` on ``PATH`` and nothing else prepared (shell
variables a block sets, such as ``$PERMIT``, carry over to the later blocks). The first
block (``make demo`` / ``make test``) is the exception: it is what runs this test, so it
is checked for its targets rather than run again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(sh|python)\n(.*?)^```$", re.S | re.M)
BLOCK_TIMEOUT_S = 600
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.M)


def readme_blocks() -> list[tuple[str, str, int]]:
    """(language, code, line number) of every ``sh`` and ``python`` block, in order."""
    text = README.read_text(encoding="utf-8")
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)
    ]


def _is_make_block(code: str) -> bool:
    lines = [ln for ln in code.splitlines() if ln.strip()]
    return bool(lines) and all(ln.startswith("make ") for ln in lines)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHFED_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["COLUMNS"] = "100"
    return env


def test_readme_has_the_blocks_a_newcomer_runs() -> None:
    blocks = readme_blocks()
    first_lang, first, _ = blocks[0]
    assert first_lang == "sh" and _is_make_block(first)
    targets = {ln.split()[1] for ln in first.splitlines() if ln.strip()}
    assert targets == {"demo", "test"}
    makefile = (ROOT / "Makefile").read_text()
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].split()
    assert ci[-2:] == ["make", "test"]
    rest = blocks[1:]
    assert sum(lang == "sh" for lang, _, _ in rest) >= 3
    assert sum(lang == "python" for lang, _, _ in rest) >= 2
    assert not [line for _, code, line in rest if _is_make_block(code)]


@pytest.mark.flower  # the walkthrough ends with `healthfed demo --engine flower`
def test_every_readme_block_runs_in_order_from_an_empty_folder(tmp_path: Path) -> None:
    work = tmp_path / "newcomer"
    work.mkdir()
    env = _env()
    state = tmp_path / "shell-variables.sh"  # one terminal: variables carry to later blocks
    state.write_text("")
    for lang, code, line in readme_blocks()[1:]:
        if lang == "sh":
            keep = " ".join(sorted(set(ASSIGNMENT.findall(code))))
            save = f'\nfor v in {keep}; do declare -p "$v" >> "{state}"; done' if keep else ""
            argv = ["bash", "-c", f'set -euo pipefail\nsource "{state}"\n{code}{save}']
        else:
            argv = [sys.executable, "-c", code]
        proc = subprocess.run(
            argv,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )
        assert proc.returncode == 0, (
            f"README.md line {line} ({lang} block) exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
        assert "Traceback" not in proc.stderr, f"README.md line {line}: {proc.stderr[-4000:]}"
    # What the walkthrough says it makes, it made.
    for made in [
        "model/model.sha256",
        "report/report.html",
        "report/report.json",
        "report-py/report.html",
        "healthfed-demo/summary.json",
        "healthfed-demo/table1.csv",
        "healthfed-demo/trust-report/report.html",
    ]:
        assert (work / made).is_file(), made
    assert list((work / "hub" / "permits").glob("P-*.json"))
