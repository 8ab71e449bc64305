"""``healthfed stats``: federated statistics, one round across the nodes, released pooled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from healthfed.cli._common import (
    DatasetOpt,
    Engine,
    EngineOpt,
    Format,
    FormatOpt,
    HubReleaseOpt,
    NodesArg,
    OutOpt,
    PermitOpt,
    PurposeOpt,
    RequesterOpt,
    emit,
    open_federation,
    split_required,
)

__all__ = ["stats_app"]

stats_app = typer.Typer(help="Federated statistics across nodes.", no_args_is_help=True)


def _run_stats(
    nodes: list[Path],
    engine: Engine,
    call: Callable[[Any], Any],
    permit: Path | None = None,
    requester: str = "researcher",
    purpose: str | None = None,
    hub: Path | None = None,
) -> Any:
    """Open the federation, run ``call(federation)`` (one round) and close it."""
    with open_federation(nodes, engine, permit, requester, purpose, hub) as fed:
        return call(fed)  # open_federation prints the round's progress on stderr


@stats_app.command("table1")
def stats_table1(
    nodes: NodesArg,
    dataset: DatasetOpt = "covid",
    variables: Annotated[str, typer.Option("--vars", help="Comma-separated variables.")] = "",
    by: Annotated[str | None, typer.Option(help="Grouping variable (categorical).")] = None,
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
    hub: HubReleaseOpt = None,
) -> None:
    """A Table 1 (overall and by group), pooled across sites, small cells suppressed."""
    names = split_required(variables, "--vars", "variable")
    result = _run_stats(
        nodes, engine, lambda fed: fed.table1(dataset, names, by=by),
        permit, requester, purpose, hub,
    )  # fmt: skip
    emit(result, fmt, out)


@stats_app.command("describe")
def stats_describe(
    nodes: NodesArg,
    dataset: DatasetOpt = "covid",
    variables: Annotated[
        str, typer.Option("--vars", help="Comma-separated numeric variables.")
    ] = "",
    by: Annotated[str | None, typer.Option(help="Grouping variable (categorical).")] = None,
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
    hub: HubReleaseOpt = None,
) -> None:
    """n, missing, mean, SD and quantiles (with error bounds) of numeric variables."""
    names = split_required(variables, "--vars", "variable")
    result = _run_stats(
        nodes, engine, lambda fed: fed.describe(dataset, names, by=by),
        permit, requester, purpose, hub,
    )  # fmt: skip
    emit(result, fmt, out)


@stats_app.command("crosstab")
def stats_crosstab(
    nodes: NodesArg,
    row: Annotated[str, typer.Option(help="Row variable (categorical).")],
    col: Annotated[str, typer.Option(help="Column variable (categorical).")],
    dataset: DatasetOpt = "covid",
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
    hub: HubReleaseOpt = None,
) -> None:
    """Counts of two categorical variables with margins."""
    result = _run_stats(
        nodes, engine, lambda fed: fed.crosstab(dataset, row, col),
        permit, requester, purpose, hub,
    )  # fmt: skip
    emit(result, fmt, out)


@stats_app.command("sum")
def stats_sum(
    nodes: NodesArg,
    variable: Annotated[str, typer.Option("--var", help="Numeric variable to sum.")],
    dataset: DatasetOpt = "covid",
    secure: Annotated[
        bool,
        typer.Option(help="Pool with Flower's SecAgg+: no site's own sum reaches the hub."),
    ] = False,
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
    hub: HubReleaseOpt = None,
) -> None:
    """Sum, n and mean of a numeric variable (sites under min_subset or dominated decline)."""
    params = {"variable": variable}
    result = _run_stats(
        nodes, engine, lambda fed: fed.run("sum", dataset, params, secure=secure),
        permit, requester, purpose, hub,
    )  # fmt: skip
    emit(result, fmt, out)
