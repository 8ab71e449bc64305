"""``healthfed demo``: four hospitals, one federated Table 1 and a trust report, printed."""

# Why imports of healthfed's own modules are function-local in the CLI: they pull in
# pandas, pyarrow, DuckDB, Flower, SQLAlchemy or cryptography, and `healthfed --help`
# (and every command) must start without waiting for them. That is the only reason.

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from healthfed.cli._common import Engine, console

if TYPE_CHECKING:
    from healthfed.demo import DemoResult

__all__ = ["demo"]


def demo(
    engine: Annotated[Engine, typer.Option(help="Run the nodes in-process or on Flower.")] = (
        Engine.inprocess
    ),
    sites: Annotated[int, typer.Option(help="Number of hospitals.")] = 4,
    rows: Annotated[int, typer.Option(help="Admissions per hospital.")] = 5000,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("healthfed-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic cohort.")] = 0,
) -> dict[str, Any]:
    """Four hospitals, one federated Table 1 of a COVID-19 cohort; no row leaves a node."""
    from healthfed.demo import run_demo

    result = run_demo(
        engine=engine.value, sites=sites, rows=rows, out=out, seed=seed, console=console
    )
    _print_result(result)
    return dict(result.summary)


def _print_result(result: DemoResult) -> None:
    """The Table 1, then one line per thing the demo released or wrote."""
    # Plain print: the table must not be re-wrapped to the terminal width.
    print(result.table1.to_text())
    missing = result.summary.get("missing_sites") or []
    if missing:
        console.print(f"No answer in time from: {', '.join(missing)}")
    console.print(f"Patients: {result.summary['n_total']}")
    dp = result.summary["dp"]
    console.print(
        f"Differentially private mean {dp['variable']}: {dp['value']:.1f}; epsilon spent per site: "
        + ", ".join(f"{site} {eps:.2f}" for site, eps in dp["epsilon_per_site"].items())
        + " (each node's ledger: healthfed node budget NODEFILE)"
    )
    sec = result.summary["secure_sum"]
    console.print(
        f"Mean {sec['variable']} by secure aggregation ({sec['protocol']}; the hub saw only the "
        f"sum over {', '.join(sec['sites'])}): {sec['mean']:.1f} (n = {sec['n']})"
    )
    console.print(
        f"Permit {result.summary['permit_id']} (granted by the demo hub in "
        f"{result.out_dir / 'hub'}); node audit logs in {result.out_dir / 'nodes'}"
    )
    console.print(f"Wrote {result.out_dir / 'summary.json'} and {result.out_dir / 'table1.csv'}")
    if result.report_path is not None:
        console.print(f"Trust report of the COVID-19 model: {result.report_path}")
    elif result.report_refused:
        console.print(
            f"[yellow]No trust report: the nodes refused:[/] {escape(str(result.report_refused))}"
        )
