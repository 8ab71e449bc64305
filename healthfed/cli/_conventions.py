"""What every ``healthfed`` command shares, applied to the whole command tree in one place.

* ``-h`` and ``--help``; ``--version`` and shell completion on the top-level command;
* ``--json`` on every command that prints a result: the result as one JSON document
  on stdout, and the messages meant for people on stderr. A command with
  ``--format`` gets ``--format json``; any other returns its result as a dict (one
  that returns nothing has its printed lines as ``{"output": [...]}``);
* examples and the exit codes at the end of every command's ``--help``.

:func:`apply_conventions` is called by the top-level group
(:class:`healthfed.cli._errors.HandledErrorsGroup`) when Typer builds it, so a new
command gets all of this without code of its own; ``tests/cli/test_cli_conventions.py``
checks every command.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = [
    "CONTEXT_SETTINGS",
    "EXAMPLES",
    "EXIT_CODES",
    "NO_RESULT",
    "apply_conventions",
    "package_version",
]

#: ``-h`` as well as ``--help`` (click passes it down to every sub-command).
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

EXIT_CODES = (
    "Exit codes: 0 success; 1 a check failed (e.g. audit verify on a tampered log); "
    "2 refused or bad input; 3 pending a site's manual approval (re-run after "
    "healthfed node approve)."
)

#: Commands that print no result (they run until stopped): no ``--json``.
NO_RESULT = {"node serve", "hub serve"}

#: At least one example per command, shown at the end of its ``--help``.
EXAMPLES: dict[str, list[str]] = {
    "demo": [
        "healthfed demo",
        "healthfed demo --engine flower --sites 4 --rows 5000 --out ./healthfed-demo",
    ],
    "train": [
        "healthfed train nodes/*.toml --target death_28d --features age,sex,spo2,crp "
        "--holdout 0.3 --out model/",
        "healthfed train nodes/*.toml --target death_28d --features age,crp --model fedavg "
        "--engine flower --out model/",
    ],
    "evaluate": ["healthfed evaluate model/ nodes/*.toml --holdout 0.3 --json"],
    "report": ["healthfed report model/ nodes/*.toml --out report/"],
    "predict": ["healthfed predict model/ --input patient.json --json"],
    "decide": [
        "healthfed decide model/ --input patient.json --decision accept --clinician dr.x "
        "--audit-log decisions.jsonl"
    ],
    "synth covid": ["healthfed synth covid --sites 4 --rows 5000 --seed 0 --out data/"],
    "synth heart-disease": ["healthfed synth heart-disease --out data/"],
    "node init": [
        "healthfed node init nodes/h1.toml --name hospital_1 --dataset data/hospital_1.toml "
        "--sandbox",
        "healthfed node init nodes/h1.toml --name hospital_1 --dataset data/hospital_1.toml "
        "--hub-key hub/hub_public_key.txt --manual table1",
    ],
    "node check": ["healthfed node check nodes/h1.toml"],
    "node describe-data": ["healthfed node describe-data data/admissions.csv"],  # on i12-data
    "node budget": ["healthfed node budget nodes/h1.toml --json"],
    "node pending": ["healthfed node pending nodes/h1.toml"],
    "node approve": ["healthfed node approve nodes/h1.toml T-0001"],
    "node reject": ["healthfed node reject nodes/h1.toml T-0001 --reason 'too granular'"],
    "node serve": [
        "healthfed node serve nodes/h1.toml --superlink hub.example.org:443 "
        "--root-certificates ca.pem"
    ],
    "node optout add": ["healthfed node optout add nodes/h1.toml hospital_1-0000042"],
    "node optout remove": ["healthfed node optout remove nodes/h1.toml hospital_1-0000042"],
    "node optout count": ["healthfed node optout count nodes/h1.toml"],
    "stats table1": [
        "healthfed stats table1 nodes/*.toml --vars age,sex,crp --by death_28d --format csv",
        "healthfed stats table1 nodes/*.toml --vars age,sex --by death_28d "
        "--permit hub/permits/P-....json --requester alice@uni.example --hub hub",
    ],
    "stats describe": ["healthfed stats describe nodes/*.toml --vars age,crp --json"],
    "stats crosstab": ["healthfed stats crosstab nodes/*.toml --row sex --col death_28d"],
    "stats sum": ["healthfed stats sum nodes/*.toml --var age --secure"],
    "hub init": ["healthfed hub init hub --name 'Health data access body'"],
    "hub key": ["healthfed hub key hub"],
    "hub transparency": ["healthfed hub transparency hub --json"],
    "hub serve": ["healthfed hub serve --work-dir hub/ --public-host hub.example.org"],
    "catalogue publish": ["healthfed catalogue publish nodes/h1.toml --hub hub"],
    "catalogue list": ["healthfed catalogue list --hub hub --json"],
    "catalogue show": ["healthfed catalogue show hospital_1/covid --hub hub"],
    "permit apply": [
        "healthfed permit apply --hub hub --applicant 'Uni X' --person alice@uni.example "
        "--purpose scientific_research --description 'Table 1 and a risk model' "
        "--dataset covid --vars age,sex,crp,death_28d --analysis table1,glm "
        "--declare-no-prohibited-use"
    ],
    "permit grant": ["healthfed permit grant A-... --hub hub --expires 2026-12-31"],
    "permit refuse": ["healthfed permit refuse A-... --hub hub --reason 'purpose unclear'"],
    "permit revoke": ["healthfed permit revoke P-... --hub hub --reason 'study ended'"],
    "permit list": ["healthfed permit list --hub hub --json"],
    "permit show": ["healthfed permit show P-... --hub hub"],
    "audit verify": ["healthfed audit verify nodes/h1.state/audit.jsonl"],
}


def package_version() -> str:
    """The installed healthfed's version (the package metadata, else the source's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("healthfed")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _epilog(path: str) -> str:
    from rich.markup import escape

    lines = ["Examples:", *(f"  $ {escape(e)}" for e in EXAMPLES.get(path, []))]
    # Typer's help joins single newlines into one paragraph: one paragraph per line.
    return "\n\n".join([*lines, EXIT_CODES])


def _has_option(cmd: click.Command, opt: str) -> bool:
    return any(isinstance(p, click.Option) and opt in p.opts for p in cmd.params)


def _json_callback(callback: Callable[..., Any], has_format: bool) -> Callable[..., Any]:
    """``callback`` taking ``json_output``: with it, the result as JSON on stdout."""

    @functools.wraps(callback)
    def run(*args: Any, json_output: bool = False, **kwargs: Any) -> Any:
        if not json_output:
            return callback(*args, **kwargs)
        if has_format:
            from healthfed.cli._common import Format

            kwargs["fmt"] = Format.json
            return callback(*args, **kwargs)
        printed = io.StringIO()
        verdict: click.exceptions.Exit | None = None
        with contextlib.redirect_stdout(printed):
            try:
                result = callback(*args, **kwargs)
            except click.exceptions.Exit as exit_:  # a check's verdict (audit verify: 1)
                verdict, result = exit_, getattr(exit_, "result", None)
        text = printed.getvalue()
        if result is None:
            result = {"output": [line for line in text.splitlines() if line]}
        elif not _is_json(text):  # a document the command printed is the result itself
            sys.stderr.write(text)  # the messages for people
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
        if verdict is not None:
            raise verdict
        return result

    return run


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _apply(cmd: click.Command, path: str) -> None:
    if isinstance(cmd, click.Group):
        cmd.context_settings = {**CONTEXT_SETTINGS, **(cmd.context_settings or {})}
        for name, sub in cmd.commands.items():
            _apply(sub, f"{path} {name}".strip())
        return
    if getattr(cmd, "_healthfed_conventions", False):
        return
    cmd._healthfed_conventions = True  # type: ignore[attr-defined]
    cmd.context_settings = {**CONTEXT_SETTINGS, **(cmd.context_settings or {})}
    cmd.epilog = _epilog(path)
    if path in NO_RESULT or _has_option(cmd, "--json") or cmd.callback is None:
        return
    has_format = any(p.name == "fmt" for p in cmd.params)
    cmd.params.append(
        click.Option(
            ["--json", "json_output"],
            is_flag=True,
            default=False,
            help="Print the result as JSON on stdout (messages go to stderr).",
        )
    )
    cmd.callback = _json_callback(cmd.callback, has_format)


def apply_conventions(group: click.Group) -> None:
    """Give every command of ``group`` -h, --json, examples and the exit codes (idempotent)."""
    _apply(group, "")
