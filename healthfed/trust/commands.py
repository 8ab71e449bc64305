"""What the ``healthfed report|predict|decide`` commands do (the CLI only parses arguments).

A library API, not CLI code: tests and notebooks call these functions directly.
Each raises healthfed errors; the CLI turns them into messages and exit codes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthfed.errors import DataError
from healthfed.federation.federation import Federation
from healthfed.trust.artefact import ModelArtefact, load_model, recorded_split
from healthfed.trust.predict import Prediction, predict, record_decision
from healthfed.trust.report import MODEL_SPLIT, TrustReport, build_report

__all__ = [
    "NODES_FILE",
    "decide_command",
    "predict_command",
    "read_patient",
    "recorded_nodes",
    "trained_nodes",
    "record_nodes",
    "report_command",
]

#: Where a model folder records the nodes it was trained on (not part of the model hash).
NODES_FILE = "nodes.json"


def record_nodes(
    model: str | Path,
    node_files: Sequence[str | Path],
    *,
    engine: str = "inprocess",
    permit: str | Path | None = None,
    requester: str | None = None,
    purpose: str | None = None,
) -> Path:
    """Write ``MODEL/nodes.json``: the node files (relative to the folder) and how it asked."""
    folder = Path(model).resolve()

    def rel(p: str | Path) -> str:
        return os.path.relpath(Path(p).resolve(), folder)

    body = {
        "node_files": [rel(p) for p in node_files],
        "engine": engine,
        "permit": None if permit is None else rel(permit),
        "requester": requester,
        "purpose": purpose,
    }
    path = folder / NODES_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def recorded_nodes(model: str | Path) -> dict[str, Any] | None:
    """``MODEL/nodes.json`` with its paths resolved against the folder, or ``None``."""
    art_dir = Path(model)
    folder = art_dir.parent if art_dir.is_file() else art_dir
    path = folder / NODES_FILE
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        files = [folder / p for p in body["node_files"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a healthfed nodes record ({exc})") from None
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise DataError(
            f"{path}: the node file(s) the model was trained on are gone: {', '.join(missing)}; "
            "give --nodes"
        )
    body["node_files"] = files
    if body.get("permit"):
        body["permit"] = folder / body["permit"]
    return dict(body)


def trained_nodes(
    model: str | Path, asked: dict[str, Any]
) -> tuple[list[Path], dict[str, Any]] | None:
    """The node files the model was trained on (``nodes.json``) and ``asked`` with its unset
    ``permit``/``requester``/``purpose`` taken from that record; ``None`` without a record."""
    recorded = recorded_nodes(model)
    if recorded is None:
        return None
    filled = dict(asked)
    for key in ("permit", "requester", "purpose"):
        if filled.get(key) is None and recorded.get(key) is not None:
            filled[key] = recorded[key]
    return list(recorded["node_files"]), filled


def read_patient(path: str | Path) -> dict[str, Any]:
    """A patient's raw values from a JSON object file (``-`` is not supported: use a file)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"--input: file not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"--input {p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"--input {p}: must hold one JSON object of field: value")
    return data


def report_command(
    model: str | Path,
    out: str | Path,
    node_files: Sequence[str | Path] | None = None,
    *,
    dataset: str | None = None,
    sensitive: list[str] | None = None,
    threshold: float | None = None,
    federation_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``out/report.html`` + ``report.json`` for a saved model; return the HTML path.

    With ``node_files`` the model is evaluated across those nodes (in process).
    Without, the report is rendered from the evaluation stored in the artefact
    (``evaluation.json``) if it has one, else the model is evaluated across the
    nodes it was trained on (``nodes.json``, written by ``healthfed train``). The
    evaluation scores the held-out rows of the split the model records; the
    report's ``settings.warnings`` says when it scores training rows.
    """
    art = load_model(model)
    kwargs = dict(federation_kwargs or {})
    if not node_files:
        if art.evaluation is not None:
            return _render_stored(art, model, out)
        trained = trained_nodes(model, kwargs)
        if trained is None:
            raise DataError(
                f"{model}: no evaluation.json and no {NODES_FILE} (where the model was "
                "trained); give --nodes to evaluate it"
            )
        node_files, kwargs = trained
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k == "purpose"}
    stored = art.evaluation or {}
    settings = stored.get("settings", {})
    dataset = (
        dataset or settings.get("dataset") or art.description.get("provenance", {}).get("dataset")
    )
    if not dataset:
        raise DataError("--dataset: name the dataset at the nodes")
    known, _ = recorded_split(art.description)
    holdout = MODEL_SPLIT if known else settings.get("holdout")
    with Federation.from_node_files(node_files, **kwargs) as fed:
        rep = build_report(
            fed,
            dataset,
            art,
            art.target,
            sensitive=tuple(sensitive or settings.get("sensitive") or ("sex", "age_band")),
            threshold=threshold if threshold is not None else settings.get("threshold", 0.5),
            holdout=holdout,
            out_dir=out,
        )
    return Path(rep.data["written_to"])


def _render_stored(art: ModelArtefact, model: str | Path, out: str | Path) -> Path:
    """The report stored with the artefact (``evaluation.json``), checked against its hash."""
    assert art.evaluation is not None
    if art.evaluation.get("provenance", {}).get("model_hash") != art.hash:
        raise DataError(f"{model}: evaluation.json was made for another model (hash differs)")
    report = TrustReport(dict(art.evaluation))
    report.data["written_to"] = str(Path(out).resolve() / "report.html")
    return report.write(out)


def predict_command(
    model: str | Path, input_path: str | Path, threshold: float | None = None
) -> Prediction:
    """One patient's prediction from a JSON file."""
    return predict(model, read_patient(input_path), threshold=threshold)


def decide_command(
    model: str | Path,
    input_path: str | Path,
    decision: str,
    reason: str,
    clinician: str,
    audit_log: str | Path,
    patient_ref: str | None = None,
) -> tuple[Prediction, dict[str, Any]]:
    """Predict for the patient, then record the clinician's decision in the audit log."""
    pred = predict_command(model, input_path)
    rec = record_decision(
        model,
        pred,
        decision,
        reason,
        clinician=clinician,
        audit_log=audit_log,
        patient_ref=patient_ref,
    )
    return pred, rec
