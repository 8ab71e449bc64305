"""The CLI's one error mapping: refusals exit 2, held results 3, and a crash shows no locals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import healthfed.data.synth
from healthfed.cli import app
from healthfed.errors import ApprovalPending, PermitRefused

runner = CliRunner()

#: Runs `healthfed synth covid --out OUT` as the console script does, with the
#: command's dependency replaced by one that crashes holding a patient value.
CRASHING_COMMAND = """
import os, sys
import healthfed.data.synth

def write_covid_cohort(out, **kwargs):
    patient_value = os.environ["HEALTHFED_TEST_SECRET"]  # a local the traceback must not show
    raise RuntimeError("unexpected failure inside a command")

healthfed.data.synth.write_covid_cohort = write_covid_cohort
from healthfed.cli import main
sys.argv = ["healthfed", "synth", "covid", "--out", sys.argv[1]]
main()
"""


def _raise(error: Exception) -> Any:
    def dependency(*args: Any, **kwargs: Any) -> Any:
        raise error

    return dependency


def test_a_result_held_for_approval_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    held = ApprovalPending("held for the data steward at h1", {"h1": "T-0001"})
    monkeypatch.setattr(healthfed.data.synth, "write_covid_cohort", _raise(held))
    r = runner.invoke(app, ["synth", "covid", "--out", str(tmp_path)])
    assert r.exit_code == 3, r.output
    assert "pending" in r.output and "held for the data steward at h1" in r.output


def test_a_refusal_exits_2_with_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    refused = PermitRefused("expired", "the permit expired on 2001-01-01")
    monkeypatch.setattr(healthfed.data.synth, "write_covid_cohort", _raise(refused))
    r = runner.invoke(app, ["synth", "covid", "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "error: permit check 'expired' failed" in r.output
    assert "Traceback" not in r.output


def test_a_bad_option_exits_2_naming_it(tmp_path: Path) -> None:
    r = runner.invoke(app, ["synth", "covid", "--sites", "0", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "--sites and --rows must be positive" in r.output
    r = runner.invoke(app, ["node", "init", str(tmp_path / "n.toml"), "--name", "n",
                            "--dataset", "d.toml", "--sandbox", "--hub-key", "k"])  # fmt: skip
    assert r.exit_code == 2 and "exclude each other" in r.output


def test_a_crash_prints_no_local_variables(tmp_path: Path) -> None:
    assert app.pretty_exceptions_show_locals is False
    secret = "PATIENT-4711-SPO2-83"
    env = {k: v for k, v in os.environ.items() if k != "_TYPER_STANDARD_TRACEBACK"}
    env["HEALTHFED_TEST_SECRET"] = secret
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_COMMAND, str(tmp_path / secret)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "unexpected failure inside a command" in proc.stderr  # it did crash, loudly
    assert secret not in proc.stdout + proc.stderr
