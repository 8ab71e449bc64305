"""``healthfed hub|catalogue|permit``: the health data access body's commands.

The hub's keys, database and transparency register; the dataset catalogue the
nodes publish to; data access applications and the permits granted on them; and
the hub's Flower SuperLink for a real deployment.
"""

# Why imports of healthfed's own modules are function-local in the CLI: they pull in
# pandas, pyarrow, DuckDB, Flower, SQLAlchemy or cryptography, and `healthfed --help`
# (and every command) must start without waiting for them. That is the only reason.

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from healthfed.cli._common import Format, FormatOpt, NodeFileArg, console, split_csv

if TYPE_CHECKING:
    from healthfed.hub import Hub

__all__ = ["catalogue_app", "hub_app", "permit_app"]

hub_app = typer.Typer(
    help="The health data access body's hub: keys, database, register.", no_args_is_help=True
)
catalogue_app = typer.Typer(
    help="The hub's dataset catalogue (HealthDCAT-AP).", no_args_is_help=True
)
permit_app = typer.Typer(
    help="Data access applications and EHDS data permits.", no_args_is_help=True
)

HubOpt = Annotated[
    Path, typer.Option("--hub", envvar="HEALTHFED_HUB", help="Hub folder (env HEALTHFED_HUB).")
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL overriding the hub's database.")
]


def _open_hub(directory: Path, db: str | None = None) -> Hub:
    """The hub in ``directory`` (``db`` overrides its database URL); close it after use."""
    from healthfed.hub import Hub

    return Hub.open(directory, db_url=db)


# --- hub ------------------------------------------------------------------------------------
@hub_app.command("init")
def hub_init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new hub.")],
    name: Annotated[str, typer.Option(help="The access body's name.")] = "hub",
    db: Annotated[
        str | None,
        typer.Option("--db", help="SQLAlchemy URL (default: SQLite in the folder)."),
    ] = None,
) -> dict[str, Any]:
    """Create a hub: Ed25519 signing key, database, audit log."""
    from healthfed.hub import Hub

    with Hub.init(directory, name=name, db_url=db) as hub:
        console.print(f"Hub {hub.name!r} in {hub.directory} (database {hub.db_url})")
        console.print(f"Public key (nodes trust it): {hub.public_key_path}")
        print(hub.public_key)
        return {
            "hub": hub.name,
            "directory": str(hub.directory),
            "database": hub.db_url,
            "public_key": hub.public_key,
            "public_key_file": str(hub.public_key_path),
        }


@hub_app.command("key")
def hub_key(directory: Annotated[Path, typer.Argument(help="Hub folder.")]) -> dict[str, Any]:
    """Print the hub's public key (base64) for nodes' trusted_hub_keys."""
    with _open_hub(directory) as hub:
        print(hub.public_key)
        return {"hub": hub.name, "public_key": hub.public_key, "key_id": hub.key_id}


@hub_app.command("transparency")
def hub_transparency(
    directory: Annotated[Path, typer.Argument(help="Hub folder.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default DIR/transparency).")
    ] = None,
    db: DbOpt = None,
) -> dict[str, Any]:
    """Export the transparency register (EHDS Art. 58) as JSON and HTML."""
    with _open_hub(directory, db) as hub:
        json_path, html_path = hub.transparency(out)
    console.print(f"Wrote {json_path} and {html_path}")
    return {"json": str(json_path), "html": str(html_path)}


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
    from healthfed.federation.deploy import nginx_fleet_location, serve_superlink

    hub = serve_superlink(
        work_dir,
        host=host,
        port=port,
        fleet_public_host=public_host,
        tls_dir=tls_dir,
        expose_control_api=expose_control_api,
        database=database,
    )
    console.print(f"SuperLink listening on https://{hub.address} (logs in {hub.work_dir / 'logs'})")
    console.print(f"Give hospitals this CA certificate: {hub.ca_cert}")
    console.print("Reverse proxy (nginx), inside the server block hospitals reach:")
    console.print(nginx_fleet_location(hub.address, hub.ca_cert), markup=False, highlight=False)
    hub.serve_forever()


# --- catalogue ------------------------------------------------------------------------------
@catalogue_app.command("publish")
def catalogue_publish(
    node_file: NodeFileArg, hub: HubOpt = Path("hub"), db: DbOpt = None
) -> dict[str, Any]:
    """Describe the node's datasets (counts rounded, none below the minimum) and publish them."""
    from healthfed.node.runtime import Node

    node = Node.from_toml(node_file)
    with _open_hub(hub, db) as h:
        ids = h.publish_node(node)
    console.print(f"Published {', '.join(ids)}")
    return {"published": list(ids)}


@catalogue_app.command("list")
def catalogue_list(
    hub: HubOpt = Path("hub"), db: DbOpt = None, fmt: FormatOpt = Format.text
) -> None:
    """The datasets in the hub's catalogue."""
    with _open_hub(hub, db) as h:
        entries = h.catalogue()
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
) -> dict[str, Any]:
    """One catalogue entry, as JSON."""
    with _open_hub(hub, db) as h:
        entry = h.catalogue_entry(identifier)
    print(json.dumps(entry, indent=2, ensure_ascii=False))
    return dict(entry)


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
    analysis: Annotated[
        list[str] | None,
        typer.Option(
            "--analysis",
            help="Analysis to be granted, repeatable or comma-separated: table1, descriptives, "
            "dp_statistics, glm, cox, fedavg, evaluation, trust_report.",
        ),
    ] = None,
    computation: Annotated[
        list[str] | None,
        typer.Option(help="A registered computation by name (older permits; prefer --analysis)."),
    ] = None,
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
) -> dict[str, Any]:
    """File a data access application (EHDS Art. 67) with the hub."""
    application = {
        "applicant": applicant,
        "authorised_persons": person,
        "purpose": purpose,
        "purpose_description": description,
        "no_prohibited_use": declare_no_prohibited_use,
        "datasets": dataset,
        "variables": split_csv(variables),
        "analyses": [n for a in analysis or [] for n in split_csv(a)],
        "computations": [n for c in computation or [] for n in split_csv(c)],
        "data_form": form,
        "period_start": start,
        "period_end": end,
        "safeguards": safeguards,
    }
    with _open_hub(hub, db) as h:
        record = h.apply(application)
    console.print(f"Application {record['id']} submitted ({', '.join(record['datasets'])})")
    print(record["id"])
    return dict(record)


@permit_app.command("grant")
def permit_grant(
    application_id: Annotated[str, typer.Argument(help="Application id.")],
    expires: Annotated[
        str,
        typer.Option(help="Last valid day (date), ISO time (UTC) or a number of days, e.g. 90d."),
    ],
    not_before: Annotated[str | None, typer.Option(help="First valid date/time.")] = None,
    min_cell_count: Annotated[
        int | None, typer.Option(help="Output rule: minimum cell count (stricter than sites').")
    ] = None,
    by: Annotated[str, typer.Option(help="Who decides.")] = "access body",
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> dict[str, Any]:
    """Grant an application: sign its permit with the hub's key."""
    rules = {"min_cell_count": min_cell_count} if min_cell_count else None
    with _open_hub(hub, db) as h:
        signed = h.grant(
            application_id, expires, not_before=not_before, output_rules=rules, actor=by
        )
        pid = signed["permit"]["permit_id"]
        path = h.permit_path(pid)
    console.print(f"Granted permit {pid}, valid until {signed['permit']['expires']}: {path}")
    print(path)
    return {"permit_id": pid, "path": str(path), "permit": signed["permit"]}


@permit_app.command("refuse")
def permit_refuse(
    application_id: Annotated[str, typer.Argument(help="Application id.")],
    reason: Annotated[str, typer.Option(help="Why (recorded and shown to the applicant).")],
    by: Annotated[str, typer.Option(help="Who decides.")] = "access body",
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> dict[str, Any]:
    """Refuse an application, with a reason."""
    with _open_hub(hub, db) as h:
        record = h.refuse(application_id, reason, actor=by)
    console.print(f"Refused application {application_id}")
    return dict(record)


@permit_app.command("revoke")
def permit_revoke(
    permit_id: Annotated[str, typer.Argument(help="Permit id.")],
    reason: Annotated[str, typer.Option(help="Why.")],
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> dict[str, Any]:
    """Revoke a permit at the hub: no further results are released under it."""
    with _open_hub(hub, db) as h:
        h.revoke(permit_id, reason)
    console.print(f"Revoked permit {permit_id}")
    return {"permit_id": permit_id, "status": "revoked", "reason": reason}


@permit_app.command("list")
def permit_list(hub: HubOpt = Path("hub"), db: DbOpt = None) -> dict[str, Any]:
    """Applications and permits at the hub."""
    with _open_hub(hub, db) as h:
        apps, permits = h.applications(), h.permits()
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
    return {"applications": apps, "permits": permits}


@permit_app.command("show")
def permit_show(
    identifier: Annotated[str, typer.Argument(help="Permit or application id.")],
    hub: HubOpt = Path("hub"),
    db: DbOpt = None,
) -> dict[str, Any]:
    """A signed permit (P-...) or an application (A-...), as JSON."""
    with _open_hub(hub, db) as h:
        doc = h.application(identifier) if identifier.startswith("A-") else h.permit(identifier)
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    return dict(doc)
