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
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from healthfed.cli._common import NodeFileArg, console
from healthfed.errors import InvalidArgument, PolicyError

if TYPE_CHECKING:
    from healthfed.data.profile import DatasetProfile
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


def _check_lines(profile: DatasetProfile, allow_oob: bool) -> list[str]:
    """The readable summary of one dataset's check (no patient value, out of bounds rounded)."""
    oob = profile.out_of_bounds
    verdict = "OK" if not oob else ("OK (out of bounds allowed)" if allow_oob else "FAILED")
    lines = [f"  dataset {profile.name!r}: {profile.n_rows} rows; {verdict}  ({profile.file})"]
    rows = [("column", "type", "missing", "out of bounds", "bounds / levels")]
    for c in profile.columns.values():
        pct = f" ({100 * c.missing / profile.n_rows:.0f}%)" if c.missing else ""
        out = ""
        if c.bounds is not None:
            parts = [f"~{c.below} below"] if c.below else []
            parts += [f"~{c.above} above"] if c.above else []
            out = ", ".join(parts) or "none"
        if c.bounds is not None:
            lo, hi = (f"{b:g}" for b in c.bounds)
            detail = f"[{lo}, {hi}]" + (f" {c.unit}" if c.unit else "")
        elif c.levels is not None:
            shown = list(c.levels.items())
            detail = ", ".join(f"{k}: {v}" for k, v in shown[:12])
            detail += f" ... ({len(shown)} levels)" if len(shown) > 12 else ""
        else:
            detail = c.unit or ""
        rows.append((c.name, c.type, f"{c.missing}{pct}", out, detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("    " + "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    if oob:
        lines.append(
            f"    out of bounds: {', '.join(oob)} (counts rounded to a multiple of 5): they move "
            "means and SDs while histograms and quantiles count them at the bounds; fix the "
            "data or the declared bounds"
            + ("" if not allow_oob else " (allowed by --allow-out-of-bounds)")
        )
    lines += [f"    warning: {w}" for w in profile.warnings]
    return lines


@node_app.command("check")
def node_check(
    node_file: NodeFileArg,
    allow_out_of_bounds: Annotated[
        bool,
        typer.Option(
            "--allow-out-of-bounds", help="Pass a dataset with values outside declared bounds."
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the check as one JSON object.")
    ] = False,
) -> None:
    """Load and validate every dataset of a node; show what the node offers (steward view).

    Per dataset: rows, missing values per column, values outside the declared bounds
    (counts rounded to a multiple of 5, never the values), level counts and warnings
    (an all-missing column, a unit that fits the values far better than the declared
    one). Every dataset is checked, also after one fails. Exit 1 if a dataset failed:
    invalid or empty data, or values out of bounds (unless --allow-out-of-bounds).
    """
    from healthfed.errors import HealthfedError
    from healthfed.node.runtime import Node

    failed: dict[str, str] = {}  # dataset name (or descriptor path) -> why
    node = Node.from_toml(node_file, dataset_errors=failed)
    profiles: dict[str, DatasetProfile] = {}
    for name, ds in node.datasets.items():
        try:
            profiles[name] = ds.profile()
        except HealthfedError as exc:
            failed[name] = str(exc)
    oob = {n for n, p in profiles.items() if p.out_of_bounds}
    failing = sorted(set(failed) | (set() if allow_out_of_bounds else oob))
    gov = node.governance
    if as_json:
        out = {
            "node": node.name,
            "governed": gov is not None,
            "policy": node.policy.to_dict(),
            "datasets": {
                name: (
                    {**profiles[name].to_dict(), "ok": name not in failing}
                    if name in profiles
                    else {"name": name, "errors": [failed[name]], "ok": False}
                )
                for name in sorted({*node.datasets, *failed})
            },
            "failed": failing,
            "ok": not failing,
        }
        typer.echo(json.dumps(out, indent=2, allow_nan=False))
    else:
        policy = ", ".join(f"{k} {v}" for k, v in node.policy.to_dict().items())
        typer.echo(textwrap.fill(f"{node.name}  policy: {policy}", 100, subsequent_indent="    "))
        if gov is None:
            console.print("  [yellow]ungoverned sandbox node[/]: runs requests without a permit")
        else:
            console.print(
                f"  governed: trusts hub key(s) {sorted(gov.trusted_keys)}; purposes "
                f"{list(gov.accepted_purposes)}; approval default {gov.approval_default!r}"
                + (f", manual: {sorted(k for k, v in gov.approval.items() if v == 'manual')}")
            )
            console.print(f"  state: {gov.state_dir} (audit log {gov.audit_log})")
        for name in sorted({*node.datasets, *failed}):
            if name in failed:
                what = "dataset" if name in node.datasets else "descriptor"
                typer.echo(f"  {what} {name!r}: FAILED")
                typer.echo("    " + failed[name].replace("\n", "\n    "))
            else:
                typer.echo("\n".join(_check_lines(profiles[name], allow_out_of_bounds)))
    if failing:
        typer.echo(
            f"{len(failing)} of {len({*node.datasets, *failed})} dataset(s) failed the check: "
            f"{', '.join(failing)}",
            err=True,
        )
        raise typer.Exit(code=1)  # the check's verdict, not an error (see cli/_errors.py)


@node_app.command("describe-data")
def node_describe_data(
    data_file: Annotated[Path, typer.Argument(help="The CSV or Parquet file to describe.")],
    name: Annotated[
        str | None, typer.Option(help="Dataset name (default: the file's stem).")
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(help="The patient id column (default: guessed; none: a generated id)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the descriptor here (refuses to overwrite) instead of stdout."),
    ] = None,
) -> None:
    """Propose a dataset descriptor (TOML) for a data file, for the steward to review.

    Types, levels, bounds (the observed range rounded outward: replace them with
    public clinical limits), the CSV's delimiter and missing-value spellings. No
    patient value is printed except category levels. Example:

        healthfed node describe-data data/site.csv --out data/site.toml
    """
    from healthfed.data.propose import propose_descriptor

    if out is not None and out.exists():
        raise InvalidArgument(f"--out {out}: exists; move it away or choose another path")
    text = propose_descriptor(
        data_file,
        name=name,
        id_column=id_column,
        descriptor_dir=out.parent if out is not None else None,
    )
    if out is None:
        typer.echo(text, nl=False)
        return
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    typer.echo(f"Wrote {out}: review it, then `healthfed node init ... --dataset {out}`", err=True)


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
    full: Annotated[
        bool, typer.Option("--full", help="Show every value (default: the first 24 per block).")
    ] = False,
) -> None:
    """Requests waiting for the data steward's approval: who asks, what, and the values to release.

    The values are the disclosure-checked result as it leaves the node on approval:
    count tables (withheld cells '-'), numeric summaries with their histogram bins,
    model statistics.
    """
    from healthfed.node.release_text import release_lines

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
            f"{t.checks.get('suppressed_cells')}"
            + (
                f"\n  decided:     {t.decided_at} by {t.decided_by}: {t.reason or ''}"
                if t.decided_at
                else ""
            )
        )
        if t.result is not None:
            lines = release_lines(t.result, full=full)
            typer.echo("  release:     " + lines[0])
            typer.echo("\n".join("    " + line for line in lines[1:]))


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
