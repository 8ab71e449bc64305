"""``healthfed node`` and ``healthfed audit``: the data steward's commands at a hospital.

Set up and check a node, keep patients' opt-outs, read the privacy budget,
approve or reject results held for manual approval, connect the node to a hub,
and verify an audit log's hash chain.
"""

# Why imports of healthfed's own modules are function-local in the CLI: they pull in
# pandas, pyarrow, DuckDB, Flower, SQLAlchemy or cryptography, and `healthfed --help`
# (and every command) must start without waiting for them. That is the only reason.

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from healthfed.cli._common import NodeFileArg, console
from healthfed.errors import InvalidArgument, PolicyError

if TYPE_CHECKING:
    from healthfed.node.airlock import ApprovalQueue
    from healthfed.node.optout import OptOutStore
    from healthfed.node.runtime import Node

__all__ = ["audit_app", "node_app", "optout_app"]

node_app = typer.Typer(help="Set up and check a hospital node.", no_args_is_help=True)
optout_app = typer.Typer(
    help="Patient opt-outs from secondary use (EHDS Art. 71), stored hashed.", no_args_is_help=True
)
audit_app = typer.Typer(help="Tamper-evident audit logs (hub and node).", no_args_is_help=True)
node_app.add_typer(optout_app, name="optout")


def _ungoverned(node_file: Path) -> PolicyError:
    """The refusal of a command that needs a governed node."""
    return PolicyError(
        f"{node_file}: ungoverned sandbox node (no [governance] table); opt-outs, "
        "approvals and audit need a governed node (`healthfed node init --hub-key ...`)"
    )


def _governed_node(node_file: Path) -> Node:
    """The node of ``node_file``, refusing an ungoverned sandbox node."""
    from healthfed.node.runtime import Node

    node = Node.from_toml(node_file)
    if node.governance is None:
        raise _ungoverned(node_file)
    return node


def _optouts(node_file: Path) -> tuple[Node, OptOutStore]:
    """A governed node and its opt-out store (every governed node has one)."""
    node = _governed_node(node_file)
    store = node.optouts
    if store is None:
        raise _ungoverned(node_file)
    return node, store


def _approvals(node_file: Path) -> tuple[Node, ApprovalQueue]:
    """A governed node and its queue of results held for approval."""
    node = _governed_node(node_file)
    queue = node.approvals
    if queue is None:
        raise _ungoverned(node_file)
    return node, queue


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
) -> dict[str, Any]:
    """Write a node file with the default (safe) site policy for the steward to edit.

    A node trusts the hubs given with --hub-key and refuses every request without a
    permit one of them signed; --sandbox writes an ungoverned node instead.
    """
    from healthfed.node.runtime import Node, write_node_file

    if not hub_key and not sandbox:
        raise InvalidArgument(
            "give --hub-key (the hub whose permits this node accepts), "
            "or --sandbox for an ungoverned node on synthetic data"
        )
    if hub_key and sandbox:
        raise InvalidArgument("--sandbox and --hub-key exclude each other")
    approval = {c: "manual" for c in (manual or [])}
    path = write_node_file(
        node_file,
        name=name,
        descriptors=list(dataset),
        hub_keys=None if sandbox else list(hub_key or []),
        approval=approval or None,
    )
    node = Node.from_toml(path)
    kind = "ungoverned sandbox" if sandbox else f"governed, trusts {len(hub_key or [])} hub key(s)"
    console.print(f"Wrote {path} (datasets: {', '.join(sorted(node.datasets))}; {kind})")
    return {
        "node_file": str(path),
        "name": node.name,
        "datasets": sorted(node.datasets),
        "governed": not sandbox,
    }


@node_app.command("check")
def node_check(node_file: NodeFileArg) -> None:
    """Load and validate every dataset of a node; show what the node offers (steward view)."""
    from healthfed.node.runtime import Node

    node = Node.from_toml(node_file)
    for ds in node.datasets.values():
        ds.n_rows  # noqa: B018 - forces reading and validation
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


@node_app.command("budget")
def node_budget(
    node_file: NodeFileArg,
    reset: Annotated[
        str | None, typer.Option(help="DATASET:PERMIT whose budget period to reset (audited).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why the budget is reset.")] = None,
    by: Annotated[str, typer.Option(help="Who resets it.")] = "data steward",
) -> dict[str, Any]:
    """Privacy budget (epsilon) spent and remaining, per patient population and permit."""
    from healthfed.node.runtime import Node

    node = Node.from_toml(node_file)
    if reset:
        dataset, _, permit = reset.partition(":")
        epoch = node.privacy_guard.reset_budget(dataset, permit or None, by, reason or "")
        console.print(
            f"Reset the budget of {dataset!r} / {permit or '-'} (period {epoch}); audited"
        )
    frame = node.privacy_guard.budget(node.policy)
    if len(frame):
        print(frame.to_string(index=False))
    else:
        console.print(f"No differentially private releases at {node.name} yet")
    return {"node": node.name, "budget": json.loads(frame.to_json(orient="records"))}


@node_app.command("pending")
def node_pending(
    node_file: NodeFileArg,
    show_all: Annotated[bool, typer.Option("--all", help="Also decided tickets.")] = False,
) -> None:
    """Requests waiting for the data steward's approval, with their disclosure checks."""
    node, queue = _approvals(node_file)
    tickets = queue.list(None if show_all else "pending")
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
) -> dict[str, Any]:
    """Approve a pending request: its kept, disclosure-checked result is released on re-send."""
    node = _governed_node(node_file)
    t = node.decide(ticket, approve=True, by=by)
    console.print(f"Approved ticket {t.ticket} ({t.computation} for {t.requester})")
    return {"ticket": t.ticket, "decision": "approved", "computation": t.computation}


@node_app.command("reject")
def node_reject(
    node_file: NodeFileArg,
    ticket: Annotated[str, typer.Argument(help="Ticket (or a unique prefix).")],
    reason: Annotated[str, typer.Option(help="Why; the requester sees it.")],
    by: Annotated[str, typer.Option(help="Who rejects.")] = "data steward",
) -> dict[str, Any]:
    """Reject a pending request; nothing is released."""
    node = _governed_node(node_file)
    t = node.decide(ticket, approve=False, by=by, reason=reason)
    console.print(f"Rejected ticket {t.ticket} ({t.computation} for {t.requester})")
    return {"ticket": t.ticket, "decision": "rejected", "computation": t.computation}


@node_app.command("serve")
def node_serve(
    node_file: NodeFileArg,
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
    from healthfed.federation.deploy import serve_node

    node = serve_node(
        node_file,
        superlink=superlink,
        root_certificates=root_certificates,
        port=port,
        work_dir=work_dir,
    )
    console.print(f"{node.site}: connected to {superlink}; logs in {node.work_dir / 'logs'}")
    node.serve_forever()


# --- opt-outs ----------------------------------------------------------------------------
@optout_app.command("add")
def optout_add(
    node_file: NodeFileArg,
    patient_ids: Annotated[list[str], typer.Argument(help="Patient id(s) as in the data.")],
) -> dict[str, Any]:
    """Record opt-outs: the patients are excluded from every computation starting after this."""
    node, store = _optouts(node_file)
    added = sum(store.add(pid) for pid in patient_ids)
    node.record(
        {"action": "optout_add", "actor": "data steward", "decision": "recorded", "count": added}
    )
    console.print(f"{added} opt-out(s) recorded at {node.name} ({len(store)} in total, hashed)")
    return {"node": node.name, "added": added, "total": len(store)}


@optout_app.command("remove")
def optout_remove(
    node_file: NodeFileArg,
    patient_ids: Annotated[list[str], typer.Argument(help="Patient id(s) as in the data.")],
) -> dict[str, Any]:
    """Withdraw opt-outs."""
    node, store = _optouts(node_file)
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
    return {"node": node.name, "removed": removed, "total": len(store)}


@optout_app.command("count")
def optout_count(node_file: NodeFileArg) -> dict[str, Any]:
    """How many patients have opted out at this node."""
    node, store = _optouts(node_file)
    console.print(f"{len(store)} opt-out(s) at {node.name}")
    return {"node": node.name, "total": len(store)}


# --- audit ---------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(
    path: Annotated[Path, typer.Argument(help="Audit log (hub or node).")],
) -> dict[str, Any]:
    """Check an audit log's hash chain; exit 1 naming the first bad record if tampered with."""
    from healthfed.governance.audit import verify_audit_log

    report = verify_audit_log(path)
    result = {"path": str(path), "ok": bool(report.ok), "report": str(report)}
    if report.ok:
        typer.echo(str(report))
        return result
    typer.echo(f"TAMPERED: {report}", err=True)
    verdict = typer.Exit(code=1)  # the check's verdict, not an error (see cli/_errors.py)
    verdict.result = result  # type: ignore[attr-defined]  # printed by --json
    raise verdict
