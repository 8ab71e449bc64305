"""``healthfed train|evaluate|report|predict|decide``: the researcher's and clinician's model commands.

Train a model across the nodes and save it as an artefact, evaluate it
federated, write its trust report, predict for one patient and record a
clinician's decision. What report/predict/decide do is library code in
:mod:`healthfed.trust.commands`; these functions only parse and print.
"""

# Why imports of healthfed's own modules are function-local in the CLI: they pull in
# pandas, pyarrow, DuckDB, Flower, SQLAlchemy or cryptography, and `healthfed --help`
# (and every command) must start without waiting for them. That is the only reason.

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from healthfed.cli._common import (
    DatasetOpt,
    Engine,
    EngineOpt,
    Format,
    FormatOpt,
    NodesArg,
    OutOpt,
    PermitOpt,
    PurposeOpt,
    RequesterOpt,
    console,
    open_federation,
    round_progress,
    split_required,
)
from healthfed.errors import InvalidArgument

__all__ = ["decide", "evaluate", "predict", "report", "train"]

#: The exact GLMs; training any other model shows a progress bar of its rounds.
EXACT_MODELS = ("logistic", "gaussian", "poisson")


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
) -> dict[str, Any]:
    """Train a model across the nodes (no row moves) and save it as an artefact.

    The artefact (``--out``) records the split (``--holdout`` share held out of each
    site's patients, seed 0; the rows each site trained on and held out) and the
    node files (``nodes.json``), so ``evaluate`` and ``report`` score the held-out
    rows by default.
    """
    from healthfed.compute.train import train as train_model
    from healthfed.trust.commands import record_nodes
    from healthfed.trust.report import save_trained

    names = split_required(features, "--features", "column")
    split = {"fraction": holdout, "seed": 0} if holdout else None
    provenance = {
        "dataset": dataset,
        "holdout": split,
        "engine": engine.value,
        "secure_aggregation": secure_aggregation,
    }
    with open_federation(nodes, engine, permit, requester, purpose) as fed:
        fitted = train_model(
            fed, dataset, target, names, model, l2=l2, rounds=rounds, holdout=split,
            progress=False, secure_aggregation=secure_aggregation,  # one line per round instead
        )  # fmt: skip
        artefact = save_trained(fed, dataset, fitted, out, provenance=provenance, purpose=purpose)
    record_nodes(
        out, nodes, engine=engine.value, permit=permit, requester=requester, purpose=purpose
    )
    if hasattr(fitted, "summary_frame"):
        print(_coefficient_text(fitted.summary_frame()))
    console.print(f"Sites: {', '.join(getattr(fitted, 'sites_', []))}")
    refused = getattr(fitted, "refused_", None)
    if refused:
        console.print(f"Declined: {escape(str(refused))}")
    console.print(_split_line(artefact.description), highlight=False, markup=False)
    console.print(f"Saved {out} (model hash {artefact.hash[:16]})")
    return {
        "model": str(out),
        "hash": artefact.hash,
        "sites": list(getattr(fitted, "sites_", [])),
        "declined": dict(refused or {}),
    }


def _coefficient_text(frame: Any) -> str:
    """The coefficient table, narrow: per, ratio (95% CI), p; and what the columns mean."""
    ratio = next((r for r in ("odds_ratio", "rate_ratio") if r in frame.columns), None)
    lo, hi = (f"{ratio}_lower", f"{ratio}_upper") if ratio else (frame.columns[5], frame.columns[6])
    value = ratio or "coef"
    name = {"odds_ratio": "OR", "rate_ratio": "RR"}.get(ratio or "", "coef")
    rows = {
        term: {
            "per": row.get("per", ""),
            f"{name} (95% CI)": f"{row[value]:.3g} ({row[lo]:.3g}-{row[hi]:.3g})",
            "p": f"{row['p']:.3g}",
        }
        for term, row in frame.iterrows()
    }
    import pandas as pd

    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "term"
    what = {"OR": "odds ratio", "RR": "rate ratio", "coef": "coefficient"}[name]
    return (
        table.to_string()
        + f"\n{name}: {what} for one unit of 'per' (a numeric feature: one pooled SD, "
        "the number in brackets; a level: against the reference level); p: Wald test. "
        "Intercept: at the pooled means and reference levels."
    )


def _split_line(desc: dict[str, Any]) -> str:
    """One line: the split the artefact records and the rows per site."""
    split = desc.get("training", {}).get("split", {})
    h = split.get("holdout")
    rows = ", ".join(
        f"{s} {v.get('train_rows')}/{v.get('held_out_rows')}"
        for s, v in split.get("sites", {}).items()
    )
    head = (
        f"Split: {h['fraction']:.0%} of each site's patients held out (seed {h['seed']})"
        if h
        else "Split: none (trained on every row; evaluation will score training rows)"
    )
    return f"{head}; rows trained on/held out: {rows}"


def _warn(messages: list[str]) -> None:
    """Each message on stderr as ``WARNING: ...`` (plain text, no markup)."""
    for m in messages:
        typer.echo(f"WARNING: {m}", err=True)


def _write_evaluation(result: Any, fmt: Format, out: Path | None, scored: dict[str, Any]) -> None:
    """Print or write an evaluation: its table as text or CSV, or all of it as JSON."""
    frame = result.to_frame()
    if fmt is Format.json:
        text = json.dumps({**result.to_dict(), **scored}, indent=2, default=str)
    elif fmt is Format.csv:
        text = frame.to_csv()
    else:
        text = result.to_text()
    if out is None:
        print(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"Wrote {out}")


#: Node files come as arguments on every command (``nodes/*.toml``); ``--nodes`` (repeatable)
#: is still accepted after a model folder.
NodeFilesAfterModel = Annotated[
    list[Path] | None, typer.Argument(help="Node TOML files, one per hospital.")
]
NodesAlsoOpt = Annotated[
    list[Path] | None, typer.Option("--nodes", help="Node TOML file (repeatable; or as arguments).")
]


def _node_files(args: list[Path] | None, opts: list[Path] | None) -> list[Path]:
    return [*(args or []), *(opts or [])]


def evaluate(
    model: Annotated[Path, typer.Argument(help="Model artefact folder.")],
    node_files: NodeFilesAfterModel = None,
    nodes: NodesAlsoOpt = None,
    dataset: DatasetOpt = "covid",
    threshold: Annotated[float, typer.Option(help="Classification threshold.")] = 0.5,
    holdout: Annotated[
        float | None,
        typer.Option(
            help="Score the held-out part of this split (seed 0) instead of the model's own "
            "(default: the split recorded in the model)."
        ),
    ] = None,
    all_rows: Annotated[
        bool,
        typer.Option(
            "--all-rows",
            help="Score every row, the training rows included (apparent performance; warned).",
        ),
    ] = False,
    engine: EngineOpt = Engine.inprocess,
    fmt: FormatOpt = Format.text,
    out: OutOpt = None,
    permit: PermitOpt = None,
    requester: RequesterOpt = "researcher",
    purpose: PurposeOpt = None,
) -> None:
    """Federated evaluation of a saved classifier: per site and pooled, with 95% CIs.

    Scores the held-out rows of the split recorded in the model; says so on
    stderr (WARNING) whenever the scored rows include rows the model was trained on.
    """
    from healthfed.compute.evaluation import evaluate_classifier
    from healthfed.trust.artefact import load_model, recorded_split, scored_rows

    nodes = _node_files(node_files, nodes)
    if not nodes:  # the nodes it was trained on, as `report` does
        from healthfed.trust.commands import NODES_FILE, trained_nodes

        asked: dict[str, Any] = {"permit": permit, "requester": requester, "purpose": purpose}
        record = trained_nodes(model, asked)
        if record is None:
            raise InvalidArgument(
                f"evaluate needs the node files: healthfed evaluate MODEL NODE_FILE... "
                f"({model} has no {NODES_FILE} naming the nodes it was trained on)"
            )
        nodes, asked = record
        permit, requester, purpose = asked["permit"], asked["requester"], asked["purpose"]
        typer.echo(f"Nodes: the {len(nodes)} the model was trained on ({NODES_FILE})", err=True)
    art = load_model(model)
    if all_rows and holdout is not None:
        raise InvalidArgument("--all-rows and --holdout exclude each other")
    known, trained = recorded_split(art.description)
    if all_rows:
        split = None
    elif holdout is not None:
        split = {"fraction": holdout, "seed": 0}
    else:
        split = trained
    kind, warnings = scored_rows(art.description, split)
    _warn(warnings)
    if kind == "held_out" and split:
        typer.echo(
            f"Scored: the held-out part of each site's split ({split['fraction']:.0%}, seed "
            f"{split.get('seed', 0)}), rows the model was not trained on",
            err=True,
        )
    with open_federation(nodes, engine, permit, requester, purpose) as fed:
        result = evaluate_classifier(
            fed,
            dataset,
            art.description["spec"],
            art.target,
            threshold=threshold,
            holdout=split,
        )
    scored = {"holdout": split, "scored_rows": kind, "warnings": warnings}
    _write_evaluation(result, fmt, out, scored)


def report(
    model: Annotated[Path, typer.Argument(help="Model artefact folder (model.json).")],
    out: Annotated[Path, typer.Option(help="Folder for report.html and report.json.")],
    node_files: NodeFilesAfterModel = None,
    nodes: NodesAlsoOpt = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name at the nodes (default: the model's).")
    ] = None,
    sensitive: Annotated[
        list[str] | None, typer.Option(help="Attribute to disaggregate by (repeatable).")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Classification threshold.")] = None,
    permit: PermitOpt = None,
    requester: Annotated[
        str | None,
        typer.Option(help="Who is asking (default: who trained the model, else 'researcher')."),
    ] = None,
    purpose: PurposeOpt = None,
) -> dict[str, Any]:
    """Write the model's trust report (one self-contained HTML page + JSON).

    Evaluates on the held-out rows of the split recorded in the model; a warning
    (stderr and in the report) says when training rows are scored.
    """
    from healthfed.trust.commands import report_command

    kwargs: dict[str, Any] = {
        "requester": requester,
        "purpose": purpose,
        "permit": permit,
        "on_round": round_progress(),
    }
    path = report_command(
        model,
        out,
        _node_files(node_files, nodes) or None,
        dataset=dataset,
        sensitive=sensitive,
        threshold=threshold,
        federation_kwargs=kwargs,
    )
    data = json.loads(path.with_name("report.json").read_text(encoding="utf-8"))
    _warn(list(data.get("settings", {}).get("warnings", [])))
    console.print(f"Model hash {data['provenance']['model_hash'][:16]}")
    console.print(f"Wrote {path} and {path.with_name('report.json')}")
    return {"html": str(path), "json": str(path.with_name("report.json"))}


def predict(
    model: Annotated[Path, typer.Argument(help="Model artefact folder.")],
    input: Annotated[Path, typer.Option("--input", help="Patient JSON file (raw values).")],
    threshold: Annotated[float | None, typer.Option(help="Classification threshold.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Probability, 95% interval, local explanation and out-of-distribution warnings.

    A value outside the declared bounds or the training range is named with the
    reason (``ood_reasons`` in --json); with most inputs missing (imputed) no class
    is given.
    """
    from healthfed.trust.commands import predict_command

    pred = predict_command(model, input, threshold)
    if as_json:
        _warn(pred.warnings)  # loud on stderr too; the JSON holds them and ood_reasons
        print(json.dumps(pred.to_dict(), indent=1))
    else:
        print(pred.to_text())


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
) -> dict[str, Any]:
    """Record a clinician's accept/override of the model's prediction in the audit log."""
    from healthfed.trust.commands import decide_command

    pred, rec = decide_command(model, input, decision, reason, clinician, audit_log, patient_ref)
    print(pred.to_text())
    console.print(
        f"Recorded {rec['decision']} as record {rec['seq']} (hash {rec['hash'][:12]}...) "
        f"in {audit_log}"
    )
    return {"prediction": pred.to_dict(), "record": rec}
