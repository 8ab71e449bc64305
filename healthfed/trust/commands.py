"""What the ``healthfed report|predict|decide`` commands do (the CLI only parses arguments).

A library API, not CLI code: tests and notebooks call these functions directly.
Each raises healthfed errors; the CLI turns them into messages and exit codes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthfed.errors import DataError
from healthfed.federation.federation import Federation
from healthfed.trust.artefact import load_model
from healthfed.trust.predict import Prediction, predict, record_decision
from healthfed.trust.report import TrustReport, build_report

__all__ = ["decide_command", "predict_command", "read_patient", "report_command"]


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

    With ``node_files`` the model is evaluated again across those nodes (in
    process); without, the report is rendered from the evaluation stored in the
    artefact (``evaluation.json``), which the nodes produced when it was saved.
    """
    art = load_model(model)
    if not node_files:
        if art.evaluation is None:
            raise DataError(
                f"{model}: the artefact holds no evaluation.json; give --nodes to evaluate it"
            )
        if art.evaluation.get("provenance", {}).get("model_hash") != art.hash:
            raise DataError(f"{model}: evaluation.json was made for another model (hash differs)")
        report = TrustReport(dict(art.evaluation))
        report.data["written_to"] = str(Path(out).resolve() / "report.html")
        return report.write(out)
    stored = art.evaluation or {}
    settings = stored.get("settings", {})
    dataset = (
        dataset or settings.get("dataset") or art.description.get("provenance", {}).get("dataset")
    )
    if not dataset:
        raise DataError("--dataset: name the dataset at the nodes")
    with Federation.from_node_files(node_files, **(federation_kwargs or {})) as fed:
        rep = build_report(
            fed,
            dataset,
            art,
            art.target,
            sensitive=tuple(sensitive or settings.get("sensitive") or ("sex", "age_band")),
            threshold=threshold if threshold is not None else settings.get("threshold", 0.5),
            holdout=settings.get("holdout"),
            out_dir=out,
        )
    return Path(rep.data["written_to"])


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
