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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from healthfed.errors import HealthfedError
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node, write_node_file

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
    from healthfed.data.synth import write_covid_cohort

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

#: What training, evaluating and reporting the demo's model asks of the nodes.
MODEL_COMPUTATIONS = [
    "describe",
    "preprocess_moments",
    "glm_step",
    "evaluate_binary",
    "subgroup_metrics",
    "dataset_fingerprint",
    "permutation_importance",
    "model_information",
]


def grant_demo_permit(hub: Any, node_files: list[Path]) -> dict[str, Any]:
    """Publish the nodes' catalogue entries, apply for the demo study and grant it."""
    from datetime import UTC, datetime, timedelta

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
            "computations": ["table1", DP_COMPUTATION, "sum", *MODEL_COMPUTATIONS],
            "data_form": "anonymised",
        }
    )
    expires = (datetime.now(UTC) + timedelta(days=PERMIT_DAYS)).date().isoformat()
    return hub.grant(application["id"], expires=expires, actor="demo access body")


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
    if engine not in ("inprocess", "flower"):
        raise ValueError(f"--engine must be 'inprocess' or 'flower', got {engine!r}")
    if sites < 2:
        raise ValueError(
            f"--sites must be at least 2 (a pooled release needs 2 sites), got {sites}"
        )
    if rows < 1:
        raise ValueError(f"--rows must be positive, got {rows}")
    console = console or Console()
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        from healthfed.hub import Hub

        hub = Hub.open_or_init(out_dir / "hub", name="demo health data access body")
        step = progress.add_task(f"Synthesising {sites} hospitals x {rows} admissions", total=None)
        node_files = prepare_nodes(out_dir, sites, rows, seed, hub_key=hub.public_key_path)
        progress.update(step, completed=1, total=1)
        step = progress.add_task("Catalogue, application and permit at the local hub", total=None)
        permit = grant_demo_permit(hub, node_files)
        permit_id = permit["permit"]["permit_id"]
        progress.update(step, completed=1, total=1)
        step = progress.add_task(f"Starting the federation ({engine})", total=None)
        governance: dict[str, Any] = {"permit": permit, "requester": DEMO_RESEARCHER, "hub": hub}
        try:
            if engine == "inprocess":
                federation = Federation.from_node_files(node_files, **governance)
            else:
                federation = Federation.flower(
                    node_files, work_dir=out_dir / "flower", **governance
                )
        except BaseException:
            hub.close()
            raise
        progress.update(step, completed=1, total=1)
        try:
            step = progress.add_task("Federated Table 1 by 28-day death (one round)", total=None)
            table1 = federation.table1("covid", TABLE1_VARIABLES, by=TABLE1_BY)
            progress.update(step, completed=1, total=1)
            step = progress.add_task(
                f"Differentially private mean {DP_VARIABLE} (epsilon {DP_EPSILON} per site)",
                total=None,
            )
            dp = federation.run(
                DP_COMPUTATION, "covid", {"variable": DP_VARIABLE, "epsilon": DP_EPSILON}
            )
            progress.update(step, completed=1, total=1)
            step = progress.add_task(
                f"Secure sum of {SECURE_VARIABLE} (Flower SecAgg+, no site's own sum seen)",
                total=None,
            )
            secure = federation.secure_sum("covid", SECURE_VARIABLE)
            progress.update(step, completed=1, total=1)
            report_path = None
            report_refused: str | None = None
            if report:
                from healthfed.trust.demo import write_demo_report

                step = progress.add_task(
                    "Training the 28-day mortality model and writing its trust report", total=None
                )
                try:
                    report_path = write_demo_report(
                        federation, out_dir / "trust-report", permit=permit
                    )
                except HealthfedError as exc:
                    # Fail closed and say why: e.g. at a few hundred rows per site a
                    # node refuses to release missing-value counts under 5.
                    report_refused = str(exc)
                progress.update(step, completed=1, total=1)
        finally:
            federation.close()
            hub.close()
    released = table1.to_dict()
    summary = {
        "engine": engine,
        "sites": list(table1.sites),
        "missing_sites": list(getattr(table1, "missing_sites", [])),
        "n_total": table1.n_total,
        "by": TABLE1_BY,
        "table1": released,
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
        "trust_report": None if report_path is None else str(report_path),
        "trust_report_refused": report_refused,
    }
    tmp = out_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, out_dir / "summary.json")
    table1.to_frame().to_csv(out_dir / "table1.csv")
    return DemoResult(
        summary=summary,
        table1=table1,
        out_dir=out_dir,
        report_path=report_path,
        report_refused=report_refused,
    )
