"""The end-to-end demo: four hospitals, one federated Table 1, nothing row-level moves.

``run_demo`` is what ``healthfed demo`` and ``make demo`` run: it synthesises
a COVID-19 admissions cohort per hospital, gives each hospital a node (its
data file, descriptor and default site policy), starts the federation on the
chosen engine and computes a Table 1 by 28-day death in one round. Each node
suppresses small cells before anything leaves it.

It runs under governance, as a real study would: a local hub (``OUT/hub``,
the health data access body) is created, each node trusts its key and
publishes its catalogue entry, a researcher applies for the Table 1 variables
and computation for scientific research, the hub grants a signed permit, and
every node checks that permit before touching data and audits its decision
(``OUT/nodes/<site>.state/audit.jsonl``). The pooled result is released through
the hub's checks and appears in its transparency register.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from healthfed.data.synth import write_covid_cohort
from healthfed.errors import HealthfedError, InvalidArgument
from healthfed.federation.federation import Federation
from healthfed.hub import Hub
from healthfed.node.runtime import Node, write_node_file
from healthfed.trust.demo import write_demo_report

__all__ = [
    "DEMO_RESEARCHER",
    "DP_COMPUTATION",
    "DEMO_ANALYSES",
    "TABLE1_BY",
    "TABLE1_VARIABLES",
    "DemoResult",
    "grant_demo_permit",
    "prepare_nodes",
    "run_demo",
]

TABLE1_VARIABLES = [
    "age",
    "sex",
    "vaccination",
    "diabetes",
    "hypertension",
    "copd",
    "ckd",
    "obesity",
    "spo2",
    "resp_rate",
    "heart_rate",
    "temperature",
    "crp",
    "d_dimer",
    "lymphocytes",
    "ldh",
    "creatinine",
    "icu",
]
TABLE1_BY = "death_28d"
DEMO_RESEARCHER = "researcher@university.example"
PERMIT_DAYS = 30


@dataclass
class DemoResult:
    """What the demo released and wrote (``summary`` is ``out/summary.json``)."""

    summary: dict[str, Any]
    table1: Any
    out_dir: Path
    report_path: Path | None = None
    report_refused: str | None = None


def prepare_nodes(
    out_dir: Path, sites: int, rows: int, seed: int = 0, hub_key: str | Path | None = None
) -> list[Path]:
    """Synthesise each hospital's data and write one node file per hospital.

    With ``hub_key`` (a hub's public key file or base64 key) the nodes are governed
    and trust that hub; without it they are ungoverned sandbox nodes.
    """
    data_dir = out_dir / "data"
    written = write_covid_cohort(data_dir, sites=sites, rows=rows, seed=seed)
    descriptors = sorted(p for p in written if p.suffix == ".toml")
    return [
        write_node_file(
            out_dir / "nodes" / f"{d.stem}.toml",
            name=d.stem,
            descriptors=[d],
            hub_keys=None if hub_key is None else [hub_key],
        )
        for d in descriptors
    ]


#: The demo's differentially private statistic (charged to each node's budget ledger).
DP_COMPUTATION, DP_VARIABLE, DP_EPSILON = "dp_mean", "age", 0.5

#: The demo's secure sum (Flower SecAgg+: the hub sees only the total over the sites).
SECURE_VARIABLE = "age"

#: The analyses the demo's permit grants (healthfed.governance.analyses maps them to the
#: computations the nodes run): Table 1, the DP mean, the secure sum, and training,
#: evaluating and reporting the model.
DEMO_ANALYSES = ["table1", "dp_statistics", "descriptives", "glm", "evaluation", "trust_report"]


def grant_demo_permit(hub: Any, node_files: list[Path]) -> dict[str, Any]:
    """Publish the nodes' catalogue entries, apply for the demo study and grant it."""
    for path in node_files:
        hub.publish_node(Node.from_toml(path))
    application = hub.apply(
        {
            "applicant": "Demo University, Department of Epidemiology",
            "authorised_persons": [DEMO_RESEARCHER],
            "purpose": "scientific_research",
            "purpose_description": (
                "Baseline characteristics (Table 1) of COVID-19 admissions by 28-day death, "
                "and training and evaluating a 28-day mortality risk model"
            ),
            "no_prohibited_use": True,
            "datasets": ["covid"],
            "variables": [*TABLE1_VARIABLES, TABLE1_BY],
            "analyses": DEMO_ANALYSES,
            "data_form": "anonymised",
        }
    )
    expires = (datetime.now(UTC) + timedelta(days=PERMIT_DAYS)).date().isoformat()
    return hub.grant(application["id"], expires=expires, actor="demo access body")


def _check_arguments(engine: str, sites: int, rows: int) -> None:
    """Refuse a demo that could not run (a pooled release needs 2 sites)."""
    if engine not in ("inprocess", "flower"):
        raise InvalidArgument(f"--engine must be 'inprocess' or 'flower', got {engine!r}")
    if sites < 2:
        raise InvalidArgument(
            f"--sites must be at least 2 (a pooled release needs 2 sites), got {sites}"
        )
    if rows < 1:
        raise InvalidArgument(f"--rows must be positive, got {rows}")


@contextmanager
def _step(progress: Progress, description: str) -> Iterator[None]:
    """One line of the demo's progress, ticked off when its block finishes."""
    task = progress.add_task(description, total=None)
    yield
    progress.update(task, completed=1, total=1)


@dataclass
class _Released:
    """What the demo's rounds released, before it is written down."""

    table1: Any
    dp: Any
    secure: Any
    report_path: Path | None = None
    report_refused: str | None = None


def _start_federation(
    engine: str, node_files: list[Path], out_dir: Path, governance: dict[str, Any]
) -> Federation:
    """The demo's federation on ``engine``, asking under the demo permit."""
    if engine == "inprocess":
        return Federation.from_node_files(node_files, **governance)
    return Federation.flower(node_files, work_dir=out_dir / "flower", **governance)


def _run_rounds(
    federation: Federation,
    progress: Progress,
    out_dir: Path,
    permit: dict[str, Any],
    report: bool,
) -> _Released:
    """Table 1, the DP mean, the secure sum and (with ``report``) the model's trust report."""
    with _step(progress, "Federated Table 1 by 28-day death (one round)"):
        table1 = federation.table1("covid", TABLE1_VARIABLES, by=TABLE1_BY)
    with _step(
        progress, f"Differentially private mean {DP_VARIABLE} (epsilon {DP_EPSILON} per site)"
    ):
        dp = federation.run(
            DP_COMPUTATION, "covid", {"variable": DP_VARIABLE, "epsilon": DP_EPSILON}
        )
    with _step(
        progress, f"Secure sum of {SECURE_VARIABLE} (Flower SecAgg+, no site's own sum seen)"
    ):
        secure = federation.secure_sum("covid", SECURE_VARIABLE)
    released = _Released(table1, dp, secure)
    if report:
        with _step(progress, "Training the 28-day mortality model and writing its trust report"):
            try:
                released.report_path = write_demo_report(
                    federation, out_dir / "trust-report", permit=permit
                )
            except HealthfedError as exc:
                # Fail closed and say why: e.g. at a few hundred rows per site a
                # node refuses to release missing-value counts under 5.
                released.report_refused = str(exc)
    return released


def _summary(engine: str, permit_id: str, released: _Released) -> dict[str, Any]:
    """``summary.json``: what was released, under which permit."""
    table1, dp, secure = released.table1, released.dp, released.secure
    return {
        "engine": engine,
        "sites": list(table1.sites),
        "missing_sites": list(getattr(table1, "missing_sites", [])),
        "n_total": table1.n_total,
        "by": TABLE1_BY,
        "table1": table1.to_dict(),
        "suppressed_cells": int(table1.suppressed_cells),
        "permit_id": permit_id,
        "dp": {
            "computation": DP_COMPUTATION,
            "variable": DP_VARIABLE,
            "value": dp.value,
            "epsilon_per_site": dict(sorted(dp.epsilon.items())),
            "delta_per_site": dict(sorted(dp.delta.items())),
        },
        "secure_sum": {
            "variable": SECURE_VARIABLE,
            "n": secure.n,
            "mean": secure.mean,
            "sites": list(secure.sites),
            "protocol": "Flower SecAgg+",
        },
        "trust_report": None if released.report_path is None else str(released.report_path),
        "trust_report_refused": released.report_refused,
    }


def run_demo(
    engine: str = "inprocess",
    sites: int = 4,
    rows: int = 5000,
    out: str | Path = "healthfed-demo",
    seed: int = 0,
    console: Console | None = None,
    report: bool = True,
) -> DemoResult:
    """Run the demo end to end and write ``out/summary.json``.

    With ``report`` (the default) it ends by training the COVID-19 model across the
    nodes and writing its trust report to ``out/trust-report/report.html``.
    """
    _check_arguments(engine, sites, rows)
    console = console or Console()
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        hub = Hub.open_or_init(out_dir / "hub", name="demo health data access body")
        try:
            with _step(progress, f"Synthesising {sites} hospitals x {rows} admissions"):
                node_files = prepare_nodes(out_dir, sites, rows, seed, hub_key=hub.public_key_path)
            with _step(progress, "Catalogue, application and permit at the local hub"):
                permit = grant_demo_permit(hub, node_files)
            governance = {"permit": permit, "requester": DEMO_RESEARCHER, "hub": hub}
            with _step(progress, f"Starting the federation ({engine})"):
                federation = _start_federation(engine, node_files, out_dir, governance)
            try:
                released = _run_rounds(federation, progress, out_dir, permit, report)
            finally:
                federation.close()
        finally:
            hub.close()
    summary = _summary(engine, permit["permit"]["permit_id"], released)
    tmp = out_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, out_dir / "summary.json")
    (out_dir / "table1.csv").write_text(released.table1.to_csv(), encoding="utf-8")
    return DemoResult(
        summary=summary,
        table1=released.table1,
        out_dir=out_dir,
        report_path=released.report_path,
        report_refused=released.report_refused,
    )
