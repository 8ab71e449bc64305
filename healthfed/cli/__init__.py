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
optout_app = typer.Typer(
    help="Patient opt-outs from secondary use (EHDS Art. 71), stored hashed.", no_args_is_help=True
)
hub_app = typer.Typer(
    help="The health data access body's hub: keys, database, register.", no_args_is_help=True
)
catalogue_app = typer.Typer(
    help="The hub's dataset catalogue (HealthDCAT-AP).", no_args_is_help=True
)
permit_app = typer.Typer(
    help="Data access applications and EHDS data permits.", no_args_is_help=True
)
audit_app = typer.Typer(help="Tamper-evident audit logs (hub and node).", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(node_app, name="node")
app.add_typer(stats_app, name="stats")
app.add_typer(hub_app, name="hub")
app.add_typer(catalogue_app, name="catalogue")
app.add_typer(permit_app, name="permit")
app.add_typer(audit_app, name="audit")
node_app.add_typer(optout_app, name="optout")

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
    """Run ``fn``; turn healthfed's errors into a one-line message and exit code 2.

    A result held for manual approval at a site is not an error: it prints which
    sites and tickets and exits with code 3.
    """
    from healthfed.errors import ApprovalPending

    try:
        return fn()
    except ApprovalPending as exc:
        err_console.print(f"[bold yellow]pending:[/] {exc}")
        raise typer.Exit(code=3) from None
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
        console.print(f"[yellow]No trust report: the nodes refused:[/] {result.report_refused}")


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
    hub_key: Annotated[
        list[str] | None,
        typer.Option(
            help="Public key of a hub whose permits this node accepts: the hub's "
            "hub_public_key.txt, or the base64 key (repeatable)."
        ),
    ] = None,
    manual: Annotated[
        list[str] | None,
        typer.Option(help="Computation whose results the site approves by hand (repeatable)."),
    ] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox", help="Ungoverned sandbox node: no permits checked (synthetic data only)."
        ),
    ] = False,
) -> None:
    """Write a node file with the default (safe) site policy for the steward to edit.

    A node trusts the hubs given with --hub-key and refuses every request without a
    permit one of them signed; --sandbox writes an ungoverned node instead.
    """
    from healthfed.node.runtime import Node, write_node_file

    if not hub_key and not sandbox:
        err_console.print(
            "[bold red]error:[/] give --hub-key (the hub whose permits this node accepts), "
            "or --sandbox for an ungoverned node on synthetic data"
        )
        raise typer.Exit(code=2)
    if hub_key and sandbox:
        err_console.print("[bold red]error:[/] --sandbox and --hub-key exclude each other")
        raise typer.Exit(code=2)
    approval = {c: "manual" for c in (manual or [])}
    path = _guard(
        lambda: write_node_file(
            node_file,
            name=name,
            descriptors=list(dataset),
            hub_keys=None if sandbox else list(hub_key or []),
            approval=approval or None,
        )
    )
    node = _guard(lambda: Node.from_toml(path))
    kind = "ungoverned sandbox" if sandbox else f"governed, trusts {len(hub_key or [])} hub key(s)"
    console.print(f"Wrote {path} (datasets: {', '.join(sorted(node.datasets))}; {kind})")


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
    gov = node.governance
    if gov is None:
        console.print("  [yellow]ungoverned sandbox node[/]: runs requests without a permit")
    else:
        console.print(
            f"  governed: trusts hub key(s) {sorted(gov.trusted_keys)}; purposes "
            f"{list(gov.accepted_purposes)}; approval default {gov.approval_default!r}"
            + (f", manual: {sorted(k for k, v in gov.approval.items() if v == 'manual')}")
        )
        console.print(f"  state: {gov.state_dir} (audit log {gov.audit_log})")
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


def _federation(
    nodes: list[Path],
    engine: Engine,
    permit: Path | None = None,
    requester: str = "researcher",
    purpose: str | None = None,
    hub: Path | None = None,
) -> Any:
    from healthfed.federation.federation import Federation

    kwargs: dict[str, Any] = {"requester": requester, "purpose": purpose}
    if permit is not None:
        kwargs["permit"] = permit
    if hub is not None:
        kwargs["hub"] = hub
    if engine is Engine.flower:
        return Federation.flower(nodes, **kwargs)
    return Federation.from_node_files(nodes, **kwargs)


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


def _run_stats(
    nodes: list[Path],
    engine: Engine,
    call: Callable[[Any], Any],
    permit: Path | None = None,
    requester: str = "researcher",
    purpose: str | None = None,
    hub: Path | None = None,
) -> Any:
    def go() -> Any:
        with (
            console.status("Running one federated round"),
            _federation(nodes, engine, permit, requester, purpose, hub) as fed,
        ):
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
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
    hub: HubReleaseOpt = None,
) -> None:
    """A Table 1 (overall and by group), pooled across sites, small cells suppressed."""
    names = _split(variables)
    if not names:
        err_console.print("[bold red]error:[/] --vars needs at least one variable")
        raise typer.Exit(code=2)
    result = _run_stats(
        nodes, engine, lambda fed: fed.table1(dataset, names, by=by),
        permit, requester, purpose, hub,
    )  # fmt: skip
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
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
    hub: HubReleaseOpt = None,
) -> None:
    """n, missing, mean, SD and quantiles (with error bounds) of numeric variables."""
    names = _split(variables)
    if not names:
        err_console.print("[bold red]error:[/] --vars needs at least one variable")
        raise typer.Exit(code=2)
    result = _run_stats(
        nodes, engine, lambda fed: fed.describe(dataset, names, by=by),
        permit, requester, purpose, hub,
    )  # fmt: skip
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
    _emit(result, fmt, out)


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
    _emit(result, fmt, out)


# --- node: opt-outs and the airlock -------------------------------------------------------------
NodeFileArg = Annotated[Path, typer.Argument(help="Node TOML file.")]


def _governed_node(node_file: Path) -> Any:
    from healthfed.errors import PolicyError
    from healthfed.node.runtime import Node

    def load() -> Any:
        node = Node.from_toml(node_file)
        if node.governance is None:
            raise PolicyError(
                f"{node_file}: ungoverned sandbox node (no [governance] table); opt-outs, "
                "approvals and audit need a governed node (`healthfed node init --hub-key ...`)"
            )
        return node

    return _guard(load)


@optout_app.command("add")
def optout_add(
    node_file: NodeFileArg,
    patient_ids: Annotated[list[str], typer.Argument(help="Patient id(s) as in the data.")],
) -> None:
    """Record opt-outs: the patients are excluded from every computation starting after this."""
    node = _governed_node(node_file)
    store = node.optouts
    added = sum(store.add(pid) for pid in patient_ids)
    node.record(
        {"action": "optout_add", "actor": "data steward", "decision": "recorded", "count": added}
    )
    console.print(f"{added} opt-out(s) recorded at {node.name} ({len(store)} in total, hashed)")


@optout_app.command("remove")
def optout_remove(
    node_file: NodeFileArg,
    patient_ids: Annotated[list[str], typer.Argument(help="Patient id(s) as in the data.")],
) -> None:
    """Withdraw opt-outs."""
    node = _governed_node(node_file)
    store = node.optouts
    removed = sum(store.remove(pid) for pid in patient_ids)
    node.record(
        {
            "action": "optout_remove",
            "actor": "data steward",
            "decision": "removed",
            "count": removed,
        }
    )
    console.print(f"{removed} opt-out(s) withdrawn at {node.name} ({len(store)} remain)")


@optout_app.command("count")
def optout_count(node_file: NodeFileArg) -> None:
    """How many patients have opted out at this node."""
    node = _governed_node(node_file)
    console.print(f"{len(node.optouts)} opt-out(s) at {node.name}")


@node_app.command("budget")
def node_budget(
    node_file: NodeFileArg,
    reset: Annotated[
        str | None, typer.Option(help="DATASET:PERMIT whose budget period to reset (audited).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why the budget is reset.")] = None,
    by: Annotated[str, typer.Option(help="Who resets it.")] = "data steward",
) -> None:
    """Privacy budget (epsilon) spent and remaining, per dataset and permit."""
    from healthfed.node.runtime import Node

    node = _guard(lambda: Node.from_toml(node_file))
    if reset:
        dataset, _, permit = reset.partition(":")
        epoch = _guard(
            lambda: node.privacy_guard.reset_budget(dataset, permit or None, by, reason or "")
        )
        console.print(
            f"Reset the budget of {dataset!r} / {permit or '-'} (period {epoch}); audited"
        )
    frame = node.privacy_guard.budget(node.policy)
    if len(frame):
        print(frame.to_string(index=False))
    else:
        console.print(f"No differentially private releases at {node.name} yet")


@node_app.command("pending")
def node_pending(
    node_file: NodeFileArg,
    show_all: Annotated[bool, typer.Option("--all", help="Also decided tickets.")] = False,
) -> None:
    """Requests waiting for the data steward's approval, with their disclosure checks."""
    node = _governed_node(node_file)
    tickets = node.approvals.list(None if show_all else "pending")
    if not tickets:
        console.print(f"No {'' if show_all else 'pending '}requests at {node.name}")
        return
    for t in tickets:
        typer.echo(
            f"ticket {t.ticket} [{t.status}] {t.created_at}\n"
            f"  requester:   {t.requester}\n"
            f"  permit:      {t.permit_id}\n"
            f"  computation: {t.computation} on {t.dataset!r}\n"
            f"  parameters:  {json.dumps(t.params)}\n"
            f"  disclosure:  {t.checks.get('disclosure')}; suppressed cells "
            f"{t.checks.get('suppressed_cells')}; {t.checks.get('released_bytes')} bytes to release"
            + (
                f"\n  decided:     {t.decided_at} by {t.decided_by}: {t.reason or ''}"
                if t.decided_at
                else ""
            )
        )


@node_app.command("approve")
def node_approve(
    node_file: NodeFileArg,
    ticket: Annotated[str, typer.Argument(help="Ticket (or a unique prefix).")],
    by: Annotated[str, typer.Option(help="Who approves.")] = "data steward",
) -> None:
    """Approve a pending request: its kept, disclosure-checked result is released on re-send."""
    node = _governed_node(node_file)
    t = _guard(lambda: node.decide(ticket, approve=True, by=by))
    console.print(f"Approved ticket {t.ticket} ({t.computation} for {t.requester})")


@node_app.command("reject")
def node_reject(
    node_file: NodeFileArg,
    ticket: Annotated[str, typer.Argument(help="Ticket (or a unique prefix).")],
    reason: Annotated[str, typer.Option(help="Why; the requester sees it.")],
    by: Annotated[str, typer.Option(help="Who rejects.")] = "data steward",
) -> None:
    """Reject a pending request; nothing is released."""
    node = _governed_node(node_file)
    t = _guard(lambda: node.decide(ticket, approve=False, by=by, reason=reason))
    console.print(f"Rejected ticket {t.ticket} ({t.computation} for {t.requester})")


# --- hub ------------------------------------------------------------------------------------
HubOpt = Annotated[
    Path, typer.Option("--hub", envvar="HEALTHFED_HUB", help="Hub folder (env HEALTHFED_HUB).")
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL overriding the hub's database.")
]


def _hub(directory: Path, db: str | None = None) -> Any:
    from healthfed.hub import Hub

    return _guard(lambda: Hub.open(directory, db_url=db))


@hub_app.command("init")
def hub_init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new hub.")],
    name: Annotated[str, typer.Option(help="The access body's name.")] = "hub",
    db: Annotated[
        str | None,
        typer.Option("--db", help="SQLAlchemy URL (default: SQLite in the folder)."),
    ] = None,
) -> None:
    """Create a hub: Ed25519 signing key, database, audit log."""
    from healthfed.hub import Hub

    hub = _guard(lambda: Hub.init(directory, name=name, db_url=db))
    console.print(f"Hub {hub.name!r} in {hub.directory} (database {hub.db_url})")
    console.print(f"Public key (nodes trust it): {hub.public_key_path}")
    print(hub.public_key)
    hub.close()


@hub_app.command("key")
def hub_key(directory: Annotated[Path, typer.Argument(help="Hub folder.")]) -> None:
    """Print the hub's public key (base64) for nodes' trusted_hub_keys."""
    hub = _hub(directory)
    print(hub.public_key)
    hub.close()


@hub_app.command("transparency")
def hub_transparency(
    directory: Annotated[Path, typer.Argument(help="Hub folder.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default DIR/transparency).")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Export the transparency register (EHDS Art. 58) as JSON and HTML."""
    hub = _hub(directory, db)
    json_path, html_path = _guard(lambda: hub.transparency(out))
    hub.close()
    console.print(f"Wrote {json_path} and {html_path}")


# --- catalogue ------------------------------------------------------------------------------
@catalogue_app.command("publish")
def catalogue_publish(node_file: NodeFileArg, hub: HubOpt = Path("hub"), db: DbOpt = None) -> None:
    """Describe the node's datasets (counts rounded, none below the minimum) and publish them."""
    from healthfed.node.runtime import Node

    node = _guard(lambda: Node.from_toml(node_file))
    h = _hub(hub, db)
    ids = _guard(lambda: h.publish_node(node))
    h.close()
    console.print(f"Published {', '.join(ids)}")


@catalogue_app.command("list")
def catalogue_list(
    hub: HubOpt = Path("hub"), db: DbOpt = None, fmt: FormatOpt = Format.text
) -> None:
    """The datasets in the hub's catalogue."""
    h = _hub(hub, db)
    entries = h.catalogue()
    h.close()
    if fmt is Format.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    if not entries:
        console.print("The catalogue is empty")
    for e in entries:
        typer.echo(
            f"{e['identifier']}  {e['title']}  records {e['number_of_records']}, "
            f"individuals {e['number_of_unique_individuals']}, {len(e['variables'])} variables"
        )


@catalogue_app.command("show")
def catalogue_show(
    identifier: Annotated[str, typer.Argument(help="Entry id, e.g. hospital_1/covid.")],
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> None:
    """One catalogue entry, as JSON."""
    h = _hub(hub, db)
    entry = _guard(lambda: h.catalogue_entry(identifier))
    h.close()
    print(json.dumps(entry, indent=2, ensure_ascii=False))


# --- permits --------------------------------------------------------------------------------
@permit_app.command("apply")
def permit_apply(
    applicant: Annotated[str, typer.Option(help="Applicant (the future permit holder).")],
    person: Annotated[list[str], typer.Option(help="Authorised person (repeatable).")],
    purpose: Annotated[
        str,
        typer.Option(
            help="EHDS Art. 53(1) purpose: public_health, policy_regulation, "
            "official_statistics, education, scientific_research, improving_care."
        ),
    ],
    description: Annotated[str, typer.Option(help="What the data will be used for.")],
    dataset: Annotated[
        list[str], typer.Option(help="Catalogue id (site/dataset) or dataset name (repeatable).")
    ],
    variables: Annotated[str, typer.Option("--vars", help="Comma-separated variables.")],
    computation: Annotated[list[str], typer.Option(help="Computation name (repeatable).")],
    declare_no_prohibited_use: Annotated[
        bool,
        typer.Option(
            "--declare-no-prohibited-use",
            help="Declare that none of the EHDS Art. 54 prohibited uses apply (required).",
        ),
    ] = False,
    form: Annotated[str, typer.Option(help="anonymised or pseudonymised.")] = "anonymised",
    start: Annotated[str | None, typer.Option(help="Requested period start (date).")] = None,
    end: Annotated[str | None, typer.Option(help="Requested period end (date).")] = None,
    safeguards: Annotated[str | None, typer.Option(help="Safeguards planned.")] = None,
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> None:
    """File a data access application (EHDS Art. 67) with the hub."""
    h = _hub(hub, db)
    application = {
        "applicant": applicant,
        "authorised_persons": person,
        "purpose": purpose,
        "purpose_description": description,
        "no_prohibited_use": declare_no_prohibited_use,
        "datasets": dataset,
        "variables": _split(variables),
        "computations": computation,
        "data_form": form,
        "period_start": start,
        "period_end": end,
        "safeguards": safeguards,
    }
    try:
        record = _guard(lambda: h.apply(application))
    finally:
        h.close()
    console.print(f"Application {record['id']} submitted ({', '.join(record['datasets'])})")
    print(record["id"])


@permit_app.command("grant")
def permit_grant(
    application_id: Annotated[str, typer.Argument(help="Application id.")],
    expires: Annotated[str, typer.Option(help="Last valid day (date) or ISO time, UTC.")],
    not_before: Annotated[str | None, typer.Option(help="First valid date/time.")] = None,
    min_cell_count: Annotated[
        int | None, typer.Option(help="Output rule: minimum cell count (stricter than sites').")
    ] = None,
    by: Annotated[str, typer.Option(help="Who decides.")] = "access body",
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> None:
    """Grant an application: sign its permit with the hub's key."""
    h = _hub(hub, db)
    rules = {"min_cell_count": min_cell_count} if min_cell_count else None
    try:
        signed = _guard(
            lambda: h.grant(
                application_id, expires, not_before=not_before, output_rules=rules, actor=by
            )
        )
        pid = signed["permit"]["permit_id"]
        path = h.permit_path(pid)
    finally:
        h.close()
    console.print(f"Granted permit {pid}, valid until {signed['permit']['expires']}: {path}")
    print(path)


@permit_app.command("refuse")
def permit_refuse(
    application_id: Annotated[str, typer.Argument(help="Application id.")],
    reason: Annotated[str, typer.Option(help="Why (recorded and shown to the applicant).")],
    by: Annotated[str, typer.Option(help="Who decides.")] = "access body",
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> None:
    """Refuse an application, with a reason."""
    h = _hub(hub, db)
    try:
        _guard(lambda: h.refuse(application_id, reason, actor=by))
    finally:
        h.close()
    console.print(f"Refused application {application_id}")


@permit_app.command("revoke")
def permit_revoke(
    permit_id: Annotated[str, typer.Argument(help="Permit id.")],
    reason: Annotated[str, typer.Option(help="Why.")],
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> None:
    """Revoke a permit at the hub: no further results are released under it."""
    h = _hub(hub, db)
    try:
        _guard(lambda: h.revoke(permit_id, reason))
    finally:
        h.close()
    console.print(f"Revoked permit {permit_id}")


@permit_app.command("list")
def permit_list(hub: HubOpt = Path("hub"), db: DbOpt = None) -> None:
    """Applications and permits at the hub."""
    h = _hub(hub, db)
    apps, permits = h.applications(), h.permits()
    h.close()
    for a in apps:
        typer.echo(
            f"application {a['id']}  [{a['status']}]  {a['applicant']}  {a['purpose']}"
            + (f"  reason: {a['reason']}" if a.get("reason") else "")
        )
    for p in permits:
        typer.echo(
            f"permit {p['permit_id']}  [{p['status']}]  {p['holder']}  {p['purpose']}  "
            f"{p['not_before']} .. {p['expires']}"
        )


@permit_app.command("show")
def permit_show(
    identifier: Annotated[str, typer.Argument(help="Permit or application id.")],
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> None:
    """A signed permit (P-...) or an application (A-...), as JSON."""
    h = _hub(hub, db)
    try:
        doc = _guard(
            lambda: (
                h.application(identifier) if identifier.startswith("A-") else h.permit(identifier)
            )
        )
    finally:
        h.close()
    print(json.dumps(doc, indent=2, ensure_ascii=False))


# --- audit ----------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(path: Annotated[Path, typer.Argument(help="Audit log (hub or node).")]) -> None:
    """Check an audit log's hash chain; exit 1 naming the first bad record if tampered with."""
    from healthfed.governance.audit import verify_audit_log

    report = _guard(lambda: verify_audit_log(path))
    if report.ok:
        typer.echo(str(report))
        return
    typer.echo(f"TAMPERED: {report}", err=True)
    raise typer.Exit(code=1)


# --- deployment ------------------------------------------------------------------------
@hub_app.command("serve")
def hub_serve(
    work_dir: Annotated[
        Path, typer.Option(help="Kept across restarts: tls/, logs/, home/.")
    ] = Path("healthfed-hub"),
    public_host: Annotated[
        str | None,
        typer.Option(help="Name(s)/IP(s) hospitals connect to (the proxy), comma-separated."),
    ] = None,
    host: Annotated[str, typer.Option(help="Bind address; keep it on loopback.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="SuperLink port (all APIs).")] = 8000,
    tls_dir: Annotated[
        Path | None, typer.Option(help="ca.pem, server.pem, server.key from your PKI.")
    ] = None,
    database: Annotated[Path | None, typer.Option(help="SuperLink state file.")] = None,
    expose_control_api: Annotated[
        bool, typer.Option(help="Allow a non-loopback bind (the Control API has no login).")
    ] = False,
) -> None:
    """Start the hub's Flower SuperLink with TLS; publish only /v1/fleet/ through a proxy."""
    from healthfed.federation.serve import nginx_fleet_location, serve_hub

    hub = _guard(
        lambda: serve_hub(
            work_dir,
            host=host,
            port=port,
            fleet_public_host=public_host,
            tls_dir=tls_dir,
            expose_control_api=expose_control_api,
            database=database,
        )
    )
    console.print(f"SuperLink listening on https://{hub.address} (logs in {hub.work_dir / 'logs'})")
    console.print(f"Give hospitals this CA certificate: {hub.ca_cert}")
    console.print("Reverse proxy (nginx), inside the server block hospitals reach:")
    console.print(nginx_fleet_location(hub.address, hub.ca_cert), markup=False, highlight=False)
    _guard(hub.serve_forever)


@node_app.command("serve")
def node_serve(
    node_file: Annotated[Path, typer.Argument(help="Node TOML file.")],
    superlink: Annotated[str, typer.Option(help="The hub's Fleet address, HOST:PORT.")],
    root_certificates: Annotated[Path, typer.Option(help="The hub's ca.pem.")],
    work_dir: Annotated[
        Path | None, typer.Option(help="Logs and local secrets (default: temporary).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Local Runtime API port on 127.0.0.1 (default: free).")
    ] = None,
) -> None:
    """Connect this hospital's node to the hub (outbound only) and answer requests."""
    from healthfed.federation.serve import serve_node

    node = _guard(
        lambda: serve_node(
            node_file,
            superlink=superlink,
            root_certificates=root_certificates,
            port=port,
            work_dir=work_dir,
        )
    )
    console.print(f"{node.site}: connected to {superlink}; logs in {node.work_dir / 'logs'}")
    _guard(node.serve_forever)


# --- models ------------------------------------------------------------------------------
@app.command()
def train(
    nodes: NodesArg,
    target: Annotated[str, typer.Option(help="Outcome column.")],
    features: Annotated[str, typer.Option(help="Comma-separated feature columns.")],
    out: Annotated[Path, typer.Option(help="Model artefact folder to write.")],
    dataset: DatasetOpt = "covid",
    model: Annotated[
        str,
        typer.Option(
            help="logistic | gaussian | poisson (exact) or fedavg | fedprox | fedadam | mlp."
        ),
    ] = "logistic",
    l2: Annotated[float, typer.Option(help="L2 penalty (exact GLMs; not on the intercept).")] = 0.0,
    rounds: Annotated[int, typer.Option(help="Rounds for the iterative models.")] = 30,
    holdout: Annotated[
        float | None, typer.Option(help="Hold out this share of each site's patients for testing.")
    ] = None,
    secure_aggregation: Annotated[
        bool,
        typer.Option(
            help="Pool every training round with Flower's SecAgg+ (no site's own update "
            "or gradient reaches the hub)."
        ),
    ] = False,
    engine: EngineOpt = Engine.inprocess,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
) -> None:
    """Train a model across the nodes (no row moves) and save it as an artefact."""
    from healthfed.compute.train import train as train_model
    from healthfed.trust.artefact import save_model

    names = _split(features)
    if not names:
        err_console.print("[bold red]error:[/] --features needs at least one column")
        raise typer.Exit(code=2)
    split = {"fraction": holdout, "seed": 0} if holdout else None

    def go() -> Any:
        with _federation(nodes, engine, permit, requester, purpose) as fed:
            fitted = train_model(
                fed,
                dataset,
                target,
                names,
                model,
                l2=l2,
                rounds=rounds,
                holdout=split,
                progress=model not in ("logistic", "gaussian", "poisson"),
                secure_aggregation=secure_aggregation,
            )
        provenance = {
            "dataset": dataset,
            "holdout": split,
            "engine": engine.value,
            "secure_aggregation": secure_aggregation,
        }
        return fitted, save_model(fitted, out, provenance=provenance)

    fitted, artefact = _guard(go)
    if hasattr(fitted, "summary_frame"):
        print(fitted.summary_frame().to_string())
    console.print(f"Sites: {', '.join(getattr(fitted, 'sites_', []))}")
    refused = getattr(fitted, "refused_", None)
    if refused:
        console.print(f"Declined: {refused}")
    console.print(f"Saved {out} (model hash {artefact.hash[:16]})")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model artefact folder.")],
    nodes: Annotated[list[Path], typer.Option("--nodes", help="Node TOML files (repeatable).")],
    dataset: DatasetOpt = "covid",
    threshold: Annotated[float, typer.Option(help="Classification threshold.")] = 0.5,
    holdout: Annotated[
        float | None, typer.Option(help="Evaluate on the held-out share used in training.")
    ] = None,
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
) -> None:
    """Federated evaluation of a saved classifier: per site and pooled, with 95% CIs."""
    from healthfed.compute.evaluation import evaluate_classifier
    from healthfed.trust.artefact import load_model

    def go() -> Any:
        art = load_model(model)
        split = {"fraction": holdout, "seed": 0, "part": "test"} if holdout else None
        with _federation(nodes, engine, permit, requester, purpose) as fed:
            return evaluate_classifier(
                fed,
                dataset,
                art.description["spec"],
                art.target,
                threshold=threshold,
                holdout=split,
            )

    result = _guard(go)
    frame = result.to_frame()
    if fmt is Format.json:
        text = json.dumps(result.to_dict(), indent=2, default=str)
    elif fmt is Format.csv:
        text = frame.to_csv()
    else:
        text = frame.to_string()
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"Wrote {out}")


# --- trust ------------------------------------------------------------------------------
@app.command()
def report(
    model: Annotated[Path, typer.Argument(help="Model artefact folder (model.json).")],
    out: Annotated[Path, typer.Option(help="Folder for report.html and report.json.")],
    nodes: Annotated[
        list[Path] | None,
        typer.Option("--nodes", help="Node TOML files: re-evaluate across them (repeatable)."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name at the nodes (default: the model's).")
    ] = None,
    sensitive: Annotated[
        list[str] | None, typer.Option(help="Attribute to disaggregate by (repeatable).")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Classification threshold.")] = None,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
) -> None:
    """Write the model's trust report (one self-contained HTML page + JSON)."""
    from healthfed.trust.commands import report_command

    kwargs: dict[str, Any] = {"requester": requester, "purpose": purpose}
    if permit is not None:
        kwargs["permit"] = permit
    path = _guard(
        lambda: report_command(
            model,
            out,
            nodes or None,
            dataset=dataset,
            sensitive=sensitive,
            threshold=threshold,
            federation_kwargs=kwargs,
        )
    )
    console.print(f"Wrote {path} and {path.with_name('report.json')}")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model artefact folder.")],
    input: Annotated[Path, typer.Option("--input", help="Patient JSON file (raw values).")],
    threshold: Annotated[float | None, typer.Option(help="Classification threshold.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Probability, 95% interval, local explanation and out-of-distribution warnings."""
    from healthfed.trust.commands import predict_command

    pred = _guard(lambda: predict_command(model, input, threshold))
    print(json.dumps(pred.to_dict(), indent=1) if as_json else pred.to_text())


@app.command()
def decide(
    model: Annotated[Path, typer.Argument(help="Model artefact folder.")],
    input: Annotated[Path, typer.Option("--input", help="Patient JSON file.")],
    decision: Annotated[str, typer.Option(help="accept or override.")],
    clinician: Annotated[str, typer.Option(help="Who decides.")],
    audit_log: Annotated[Path, typer.Option("--audit-log", help="Hash-chained JSONL audit log.")],
    reason: Annotated[str, typer.Option(help="Reason (required for override).")] = "",
    patient_ref: Annotated[
        str | None, typer.Option(help="Local pseudonymous patient reference.")
    ] = None,
) -> None:
    """Record a clinician's accept/override of the model's prediction in the audit log."""
    from healthfed.trust.commands import decide_command

    pred, rec = _guard(
        lambda: decide_command(model, input, decision, reason, clinician, audit_log, patient_ref)
    )
    print(pred.to_text())
    console.print(
        f"Recorded {rec['decision']} as record {rec['seq']} (hash {rec['hash'][:12]}...) "
        f"in {audit_log}"
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
