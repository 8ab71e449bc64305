"""The one place where the command line turns errors into messages and exit codes.

Commands do not catch errors: they raise healthfed's (a bad option is an
:class:`~healthfed.errors.InvalidArgument`), and :class:`HandledErrorsGroup`, the
class of the top-level command group, catches them around every command, prints
one line that names what is wrong and exits with :func:`healthfed.errors.exit_code`:
2 for a refusal or bad input, 3 for a result held for a site's manual approval
(not an error: re-run once the sites approved). ``healthfed audit verify`` exits 1
on a tampered log itself, because that is the check's verdict, not an error.

Anything else is a bug and crashes with a traceback; the app is built with
``pretty_exceptions_show_locals=False`` so that a crash never prints local
variables (patient values, signed permits).
"""

from __future__ import annotations

from typing import Any

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from healthfed.errors import ApprovalPending, HealthfedError, exit_code

__all__ = ["HANDLED", "HandledErrorsGroup", "err_console", "report_error"]

err_console = Console(stderr=True)

#: What a command may raise for its user to read. A plain ``ValueError`` is
#: included because code written to scikit-learn's conventions (and the standard
#: library, e.g. a malformed date) raises it for a bad argument.
HANDLED: tuple[type[Exception], ...] = (HealthfedError, ValueError)


def report_error(error: Exception) -> int:
    """Print ``error`` as one line on stderr and return its exit code."""
    label, style = (
        ("pending: ", "bold yellow")
        if isinstance(error, ApprovalPending)
        else ("error: ", "bold red")
    )
    # A Text, not markup: a message's own brackets ("[low, high]", "[csv]") are printed
    # as they are; soft wrap keeps the message on one line for scripts and logs.
    err_console.print(Text.assemble((label, style), _one_line(str(error))), soft_wrap=True)
    return exit_code(error)


def _one_line(message: str) -> str:
    """``message`` on one line (a wrapped library message, e.g. DuckDB's, has newlines)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


class HandledErrorsGroup(TyperGroup):
    """The top-level group: every command (and sub-group) runs inside its ``invoke``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from healthfed.cli._conventions import apply_conventions

        apply_conventions(self)  # -h, --json, examples and exit codes on every command

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn a handled error into its message and exit code."""
        try:
            return super().invoke(ctx)
        except HANDLED as error:
            raise typer.Exit(code=report_error(error)) from None
