"""The ``healthfed`` command line. The only place errors become exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from healthfed.errors import HealthfedError

app = typer.Typer(
    help="healthfed: federated statistics and AI on health data that never leaves the hospital.",
    no_args_is_help=True,
    add_completion=False,
)
synth_app = typer.Typer(help="Write synthetic or bundled example datasets.", no_args_is_help=True)
node_app = typer.Typer(help="Set up and check a hospital node.", no_args_is_help=True)
stats_app = typer.Typer(help="Federated statistics across nodes.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(node_app, name="node")
app.add_typer(stats_app, name="stats")

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


class Engine(StrEnum):
    inprocess = "inprocess"
    flower = "flower"


class Format(StrEnum):
    text = "text"
    csv = "csv"
    json = "json"


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn healthfed's errors into a one-line message and exit code 2."""
    try:
        return fn()
    except (HealthfedError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None


# --- demo ---------------------------------------------------------------------------
@app.command()
def demo(
    engine: Annotated[Engine, typer.Option(help="Run the nodes in-process or on Flower.")] = (
        Engine.inprocess
    ),
    sites: Annotated[int, typer.Option(help="Number of hospitals.")] = 4,
    rows: Annotated[int, typer.Option(help="Admissions per hospital.")] = 5000,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("healthfed-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic cohort.")] = 0,
) -> None:
    """Four hospitals, one federated Table 1 of a COVID-19 cohort; no row leaves a node."""
    from healthfed.demo import run_demo

    result = _guard(
        lambda: run_demo(
            engine=engine.value, sites=sites, rows=rows, out=out, seed=seed, console=console
        )
    )
    # Plain print: the table must not be re-wrapped to the terminal width.
    print(result.table1.to_text())
    missing = result.summary.get("missing_sites") or []
    if missing:
        console.print(f"No answer in time from: {', '.join(missing)}")
    console.print(f"Patients: {result.summary['n_total']}")
    console.print(f"Wrote {result.out_dir / 'summary.json'} and {result.out_dir / 'table1.csv'}")


# --- synth ----------------------------------------------------------------------------
@synth_app.command("covid")
def synth_covid(
    out: Annotated[Path, typer.Option(help="Folder for one Parquet + descriptor per site.")],
    sites: Annotated[int, typer.Option(help="Number of hospitals.")] = 4,
    rows: Annotated[int, typer.Option(help="Admissions per hospital.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
) -> None:
    """A synthetic COVID-19 admissions cohort, one Parquet file per hospital."""
    from healthfed.data.synth import write_covid_cohort

    if sites < 1 or rows < 1:
        err_console.print("[bold red]error:[/] --sites and --rows must be positive")
        raise typer.Exit(code=2)
    with console.status(f"Synthesising {sites} x {rows} admissions"):
        paths = _guard(lambda: write_covid_cohort(out, sites=sites, rows=rows, seed=seed))
    for path in paths:
        console.print(str(path))


@synth_app.command("heart-disease")
def synth_heart_disease(
    out: Annotated[Path, typer.Option(help="Folder for the four hospitals' files.")],
) -> None:
    """The bundled UCI Heart Disease data (4 real hospitals, CC BY 4.0) as node datasets."""
    from healthfed.data.heart_disease import write_heart_disease

    for path in _guard(lambda: write_heart_disease(out)):
        console.print(str(path))


# --- node -------------------------------------------------------------------------------
@node_app.command("init")
def node_init(
    node_file: Annotated[Path, typer.Argument(help="Node TOML file to write.")],
    name: Annotated[str, typer.Option(help="The site's name.")],
    dataset: Annotated[list[Path], typer.Option(help="Dataset descriptor TOML (repeatable).")],
) -> None:
    """Write a node file with the default (safe) site policy for the steward to edit."""
    from healthfed.node.runtime import Node, write_node_file

    path = _guard(lambda: write_node_file(node_file, name=name, descriptors=list(dataset)))
    node = _guard(lambda: Node.from_toml(path))
    console.print(f"Wrote {path} (datasets: {', '.join(sorted(node.datasets))})")


@node_app.command("check")
def node_check(node_file: Annotated[Path, typer.Argument(help="Node TOML file.")]) -> None:
    """Load and validate every dataset of a node; show what the node offers (steward view)."""
    from healthfed.node.runtime import Node

    def check() -> Node:
        node = Node.from_toml(node_file)
        for ds in node.datasets.values():
            ds.n_rows  # noqa: B018 - forces reading and validation
        return node

    node = _guard(check)
    console.print(f"[bold]{node.name}[/]  policy: {node.policy.to_dict()}")
    for name, ds in sorted(node.datasets.items()):
        cols = ", ".join(f"{c.name}:{c.type}" for c in ds.descriptor.columns.values())
        console.print(f"  dataset {name!r}: {ds.n_rows} rows; columns {cols}")


# --- stats ----------------------------------------------------------------------------
NodesArg = Annotated[list[Path], typer.Argument(help="Node TOML files, one per hospital.")]
DatasetOpt = Annotated[str, typer.Option(help="Dataset name held by every node.")]
EngineOpt = Annotated[Engine, typer.Option(help="inprocess or flower.")]
FormatOpt = Annotated[Format, typer.Option("--format", help="text, csv or json.")]
OutOpt = Annotated[Path | None, typer.Option(help="Write the result here instead of stdout.")]


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _federation(nodes: list[Path], engine: Engine) -> Any:
    from healthfed.federation.federation import Federation

    if engine is Engine.flower:
        return Federation.flower(nodes)
    return Federation.from_node_files(nodes)


def _emit(result: Any, fmt: Format, out: Path | None) -> None:
    if fmt is Format.json:
        text = json.dumps(result.to_dict(), indent=2, allow_nan=False)
    elif fmt is Format.csv:
        text = result.to_frame().to_csv()
    else:
        text = result.to_text()
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        console.print(f"Wrote {out}")


def _run_stats(nodes: list[Path], engine: Engine, call: Callable[[Any], Any]) -> Any:
    def go() -> Any:
        with console.status("Running one federated round"), _federation(nodes, engine) as fed:
            return call(fed)

    return _guard(go)


@stats_app.command("table1")
def stats_table1(
    nodes: NodesArg,
    dataset: DatasetOpt = "covid",
    variables: Annotated[str, typer.Option("--vars", help="Comma-separated variables.")] = "",
    by: Annotated[str | None, typer.Option(help="Grouping variable (categorical).")] = None,
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
) -> None:
    """A Table 1 (overall and by group), pooled across sites, small cells suppressed."""
    names = _split(variables)
    if not names:
        err_console.print("[bold red]error:[/] --vars needs at least one variable")
        raise typer.Exit(code=2)
    result = _run_stats(nodes, engine, lambda fed: fed.table1(dataset, names, by=by))
    _emit(result, fmt, out)


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
) -> None:
    """n, missing, mean, SD and quantiles (with error bounds) of numeric variables."""
    names = _split(variables)
    if not names:
        err_console.print("[bold red]error:[/] --vars needs at least one variable")
        raise typer.Exit(code=2)
    result = _run_stats(nodes, engine, lambda fed: fed.describe(dataset, names, by=by))
    _emit(result, fmt, out)


@stats_app.command("crosstab")
def stats_crosstab(
    nodes: NodesArg,
    row: Annotated[str, typer.Option(help="Row variable (categorical).")],
    col: Annotated[str, typer.Option(help="Column variable (categorical).")],
    dataset: DatasetOpt = "covid",
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
) -> None:
    """Counts of two categorical variables with margins."""
    result = _run_stats(nodes, engine, lambda fed: fed.crosstab(dataset, row, col))
    _emit(result, fmt, out)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
