"""The ``healthfed`` command line: one Typer app made of the command groups below.

Each module holds one role's commands: :mod:`~healthfed.cli.data` (``synth``),
:mod:`~healthfed.cli.node` (``node``, ``audit``), :mod:`~healthfed.cli.stats`,
:mod:`~healthfed.cli.hub` (``hub``, ``catalogue``, ``permit``),
:mod:`~healthfed.cli.model` (``train``, ``evaluate``, ``report``, ``predict``,
``decide``) and :mod:`~healthfed.cli.demo`. Errors become exit codes in one place,
:mod:`healthfed.cli._errors`; a crash never prints local variables.
"""

from __future__ import annotations

from typing import Annotated

import typer

from healthfed.cli import demo as _demo
from healthfed.cli import model as _model
from healthfed.cli._conventions import CONTEXT_SETTINGS, EXIT_CODES, package_version
from healthfed.cli._errors import HandledErrorsGroup
from healthfed.cli.data import synth_app
from healthfed.cli.hub import catalogue_app, hub_app, permit_app
from healthfed.cli.node import audit_app, node_app
from healthfed.cli.stats import stats_app

__all__ = ["app", "main"]

app = typer.Typer(
    cls=HandledErrorsGroup,
    help="healthfed: federated statistics and AI on health data that never leaves the hospital.",
    epilog="\n\n".join(
        [
            "Examples:",
            "  $ healthfed demo",
            "  $ healthfed stats table1 nodes/*.toml --vars age,sex --by death_28d --json",
            "  $ healthfed COMMAND -h      (every command's options, examples and exit codes)",
            EXIT_CODES,
        ]
    ),
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
    # A crash's traceback must never show local variables: patient values, signed permits.
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"healthfed {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


app.command()(_demo.demo)
for _command in (_model.train, _model.evaluate, _model.report, _model.predict, _model.decide):
    app.command()(_command)
app.add_typer(synth_app, name="synth")
app.add_typer(node_app, name="node")
app.add_typer(stats_app, name="stats")
app.add_typer(hub_app, name="hub")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(permit_app, name="permit")
app.add_typer(audit_app, name="audit")


def main() -> None:
    """Console-script entry point (``healthfed = "healthfed.cli:main"``)."""
    app()
