"""``healthfed synth``: write synthetic or bundled example datasets for nodes to serve."""

# Why imports of healthfed's own modules are function-local in the CLI: they pull in
# pandas, pyarrow, DuckDB, Flower, SQLAlchemy or cryptography, and `healthfed --help`
# (and every command) must start without waiting for them. That is the only reason.

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from healthfed.cli._common import console
from healthfed.errors import InvalidArgument

__all__ = ["synth_app"]

synth_app = typer.Typer(help="Write synthetic or bundled example datasets.", no_args_is_help=True)


@synth_app.command("covid")
def synth_covid(
    out: Annotated[Path, typer.Option(help="Folder for one Parquet + descriptor per site.")],
    sites: Annotated[int, typer.Option(help="Number of hospitals.")] = 4,
    rows: Annotated[int, typer.Option(help="Admissions per hospital.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
) -> dict[str, Any]:
    """A synthetic COVID-19 admissions cohort, one Parquet file per hospital."""
    from healthfed.data.synth import write_covid_cohort

    if sites < 1 or rows < 1:
        raise InvalidArgument("--sites and --rows must be positive")
    with console.status(f"Synthesising {sites} x {rows} admissions"):
        paths = write_covid_cohort(out, sites=sites, rows=rows, seed=seed)
    for path in paths:
        console.print(str(path))
    return {"written": [str(p) for p in paths]}


@synth_app.command("heart-disease")
def synth_heart_disease(
    out: Annotated[Path, typer.Option(help="Folder for the four hospitals' files.")],
) -> dict[str, Any]:
    """The bundled UCI Heart Disease data (4 real hospitals, CC BY 4.0) as node datasets."""
    from healthfed.data.heart_disease import write_heart_disease

    paths = write_heart_disease(out)
    for path in paths:
        console.print(str(path))
    return {"written": [str(p) for p in paths]}
