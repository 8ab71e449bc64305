"""What several command groups share: the console, option types, a federation, a result's output."""

# Why imports of healthfed's own modules are function-local in the CLI: they pull in
# pandas, pyarrow, DuckDB, Flower, SQLAlchemy or cryptography, and `healthfed --help`
# (and every command) must start without waiting for them. That is the only reason.

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from healthfed.errors import InvalidArgument

if TYPE_CHECKING:
    from healthfed.federation.federation import Federation

__all__ = [
    "DatasetOpt",
    "Engine",
    "EngineOpt",
    "Format",
    "FormatOpt",
    "HubReleaseOpt",
    "NodeFileArg",
    "NodesArg",
    "OutOpt",
    "PermitOpt",
    "PurposeOpt",
    "RequesterOpt",
    "console",
    "emit",
    "open_federation",
    "progress",
    "round_progress",
    "split_csv",
    "split_required",
]

console = Console()


class Engine(StrEnum):
    """Where the nodes run: in this process, or as Flower SuperNodes."""

    inprocess = "inprocess"
    flower = "flower"


class Format(StrEnum):
    """How a result is written."""

    text = "text"
    csv = "csv"
    json = "json"


NodesArg = Annotated[list[Path], typer.Argument(help="Node TOML files, one per hospital.")]
NodeFileArg = Annotated[Path, typer.Argument(help="Node TOML file.")]
DatasetOpt = Annotated[str, typer.Option(help="Dataset name held by every node.")]
EngineOpt = Annotated[Engine, typer.Option(help="inprocess or flower.")]
FormatOpt = Annotated[Format, typer.Option("--format", help="text, csv or json.")]
OutOpt = Annotated[Path | None, typer.Option(help="Write the result here instead of stdout.")]
PermitOpt = Annotated[
    Path | None, typer.Option(help="Signed data permit (JSON) to send with the request.")
]
RequesterOpt = Annotated[
    str, typer.Option(help="Who is asking; must be an authorised person of the permit.")
]
PurposeOpt = Annotated[
    str | None, typer.Option(help="Stated purpose; nodes check it equals the permit's.")
]
HubReleaseOpt = Annotated[
    Path | None,
    typer.Option("--hub", help="Release the pooled result through this hub's checks and register."),
]


def split_csv(values: str) -> list[str]:
    """The non-empty items of a comma-separated option value."""
    return [v.strip() for v in values.split(",") if v.strip()]


def split_required(values: str, option: str, noun: str) -> list[str]:
    """:func:`split_csv`, refusing an empty list (``option needs at least one noun``)."""
    names = split_csv(values)
    if not names:
        raise InvalidArgument(f"{option} needs at least one {noun}")
    return names


def open_federation(
    nodes: list[Path],
    engine: Engine,
    permit: Path | None = None,
    requester: str = "researcher",
    purpose: str | None = None,
    hub: Path | None = None,
) -> Federation:
    """The federation of ``nodes`` on ``engine``, asking as ``requester`` under ``permit``."""
    from healthfed.federation.federation import Federation

    kwargs: dict[str, Any] = {"requester": requester, "purpose": purpose}
    if permit is not None:
        kwargs["permit"] = permit
    if hub is not None:
        kwargs["hub"] = hub
    start = time.monotonic()
    if engine is Engine.flower:
        progress(
            f"Starting a Flower SuperLink and {len(nodes)} SuperNode(s) on loopback with TLS "
            "(takes a while)"
        )
        fed = Federation.flower(nodes, **kwargs)
        progress(f"Flower federation of {len(nodes)} site(s) ready after {_since(start)}")
    else:
        fed = Federation.from_node_files(nodes, **kwargs)
    fed.on_round = round_progress(start)
    return fed


def round_progress(start: float | None = None) -> Callable[[str, str, Any], None]:
    """A federation's ``on_round``: one line per round on stderr."""
    since = time.monotonic() if start is None else start
    rounds = itertools.count(1)

    def on_round(computation: str, dataset: str, outcome: Any) -> None:
        progress(
            f"round {next(rounds)}: {computation} on {dataset!r} answered by "
            f"{len(outcome.contributed)} site(s) ({_since(since)} so far)"
        )

    return on_round


def _since(start: float) -> str:
    return f"{time.monotonic() - start:.1f} s"


def progress(message: str) -> None:
    """One line of progress on stderr (stdout carries only the result)."""
    from rich.text import Text

    from healthfed.cli._errors import err_console

    err_console.print(Text(message, style="dim"), soft_wrap=True, highlight=False)


def emit(result: Any, fmt: Format, out: Path | None) -> None:
    """Write a released result as text, CSV or JSON to stdout or (atomically) to ``out``."""
    if fmt is Format.json:
        text = json.dumps(result.to_dict(), indent=2, allow_nan=False)
    elif fmt is Format.csv:
        to_csv = getattr(result, "to_csv", None)  # a readable CSV (Table 1), else the frame
        text = to_csv() if callable(to_csv) else result.to_frame().to_csv()
    else:
        text = result.to_text()
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        console.print(f"Wrote {out}")
