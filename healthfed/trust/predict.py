"""Human oversight of one prediction: probability, uncertainty, explanation, warnings, decision.

:func:`predict` scores one patient (a dict of raw values in the descriptors'
canonical units) with a saved model artefact and returns a :class:`Prediction`:

* ``probability`` and a 95% ``interval`` -- for logistic models from the
  covariance of the coefficients by the delta method on the log-odds scale
  (``eta +- 1.96 sqrt(x' V x)``, transformed back; no bootstrap); ``None`` for
  models without a covariance (the MLP), with the reason in ``interval_note``;
* ``contributions`` per raw feature (log-odds, relative to the reference
  patient; see :mod:`healthfed.trust.explain`) and ``base_value``;
* ``warnings`` when the input is outside the training distribution: a value
  outside the declared bounds or outside the central 99% of training values, a
  required value missing (it is then imputed as the sites did: pooled mean or
  reference level, plus the missing indicator if the model has one), unknown
  fields (ignored). An undeclared category level cannot be encoded and raises.
  Each warning names the feature; ``out_of_distribution`` is true exactly when
  ``ood_reasons`` (feature, reason, detail) is not empty.
* no ``classification`` when more than :data:`MAX_IMPUTED_SHARE` of the model's
  inputs were imputed (``no_class_reason`` says why): the probability is then
  mostly the imputed values' and is flagged, not turned into a confident class.

:func:`record_decision` appends the clinician's accept/override (with a reason)
to a tamper-evident, hash-chained audit log
(:class:`healthfed.governance.audit.AuditLog`). The record holds the model hash,
the prediction and a sha256 of the input, not the input itself.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.errors import DataError
from healthfed.governance.audit import AuditLog
from healthfed.trust.artefact import ModelArtefact, canonical_json, load_model
from healthfed.trust.explain import linear_contributions, shapley_contributions

__all__ = ["DECISIONS", "MAX_IMPUTED_SHARE", "Prediction", "predict", "record_decision"]

DECISIONS = ("accept", "override")
#: Above this share of imputed inputs a prediction gets no class (see the module docstring).
MAX_IMPUTED_SHARE = 0.5
_Z = 1.959963984540054


@dataclass
class Prediction:
    """One patient's prediction, as shown to the clinician."""

    probability: float
    interval: tuple[float, float] | None
    linear_predictor: float
    base_value: float
    contributions: dict[str, float]
    explanation_method: str
    warnings: list[str]
    out_of_distribution: bool
    model_hash: str
    input_sha256: str
    threshold: float | None = None
    classification: int | None = None
    interval_note: str = ""
    imputed: list[str] = field(default_factory=list)
    ood_reasons: list[dict[str, Any]] = field(default_factory=list)
    no_class_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d

    def _repr_html_(self) -> str:
        """The prediction as a notebook shows it (the text, warnings first-class)."""
        import html

        return "<pre style='white-space:pre-wrap'>" + html.escape(self.to_text()) + "</pre>"

    def to_text(self) -> str:
        lines = [f"P({'event'}) = {self.probability:.3f}"]
        if self.interval is not None:
            lines[0] += f"  (95% CI {self.interval[0]:.3f}-{self.interval[1]:.3f})"
        if self.classification is not None:
            lines.append(
                f"classified {'positive' if self.classification else 'negative'} "
                f"at threshold {self.threshold:g}"
            )
        elif self.no_class_reason:
            lines.append(f"NO CLASS: {self.no_class_reason}")
        if self.out_of_distribution:
            lines.append(
                "OUT OF DISTRIBUTION: "
                + "; ".join(f"{r['feature']} ({r['reason']})" for r in self.ood_reasons)
            )
        lines.append(
            f"contributions (log-odds vs the reference patient, {self.explanation_method}):"
        )
        for k, v in sorted(self.contributions.items(), key=lambda kv: -abs(kv[1])):
            lines.append(f"  {k:<24} {v:+.3f}")
        for w in self.warnings:
            lines.append(f"WARNING: {w}")
        return "\n".join(lines)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _check_inputs(
    art: ModelArtefact, patient: dict[str, Any]
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(warnings, imputed features, out-of-distribution reasons) of one patient's input."""
    ref = art.description.get("reference", {})
    ranges = ref.get("ranges", {})
    spec = art.spec["preprocess"]
    cols = {c["name"]: c for c in spec.get("columns", [])} if spec.get("kind") else {}
    warnings: list[str] = []
    imputed: list[str] = []
    reasons: list[dict[str, Any]] = []

    def flag(feature: str, reason: str, detail: str) -> None:
        warnings.append(detail)
        reasons.append({"feature": feature, "reason": reason, "detail": detail})

    unknown = sorted(set(patient) - set(art.features))
    if unknown:
        warnings.append(f"unknown field(s) ignored: {', '.join(unknown)}")
    numeric = [f for f in art.features if cols.get(f, {}).get("type", "numeric") == "numeric"]
    if numeric and not ranges:
        warnings.append(
            "this model records no training ranges or declared bounds: numeric values "
            "are not checked"
        )
    for f in art.features:
        v = patient.get(f)
        if _is_missing(v) and not spec.get("kind"):
            raise DataError(
                f"patient field {f!r} is missing; this model (trained on complete cases with the "
                "minimal preprocessing spec) cannot score a patient without it"
            )
        if _is_missing(v):
            imputed.append(f)
            c = cols.get(f, {})
            how = (
                "the reference level"
                if c.get("type") == "categorical"
                else f"the pooled training mean ({c['mean']:.4g})"
                if "mean" in c
                else "the pooled training mean"
            )
            if spec.get("missing") == "drop":
                flag(
                    f,
                    "missing",
                    f"required value '{f}' is missing; this model was trained on complete "
                    f"cases only, so it was imputed with {how} and the prediction is unreliable",
                )
            else:
                flag(f, "missing", f"required value '{f}' is missing; imputed with {how}")
            continue
        c = cols.get(f)
        if c is not None and c["type"] in ("categorical", "binary"):
            text = str(int(v)) if isinstance(v, bool | int) and c["type"] == "binary" else str(v)
            allowed = list(c.get("levels", []))
            if c["type"] == "binary":
                allowed += ["0", "1"]
            if text not in allowed:
                raise DataError(
                    f"patient field {f!r}: {v!r} is not a declared level ({c.get('levels')}); "
                    "the model cannot score it"
                )
            continue
        try:
            x = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DataError(f"patient field {f!r}: {v!r} is not a number") from None
        if not math.isfinite(x):
            raise DataError(f"patient field {f!r}: {v!r} is not a finite number")
        r = ranges.get(f)
        if not r:
            continue
        declared = r.get("declared")
        if declared and not declared[0] <= x <= declared[1]:
            flag(
                f,
                "outside declared bounds",
                f"'{f}' = {x:g} is outside its declared bounds [{declared[0]:g}, {declared[1]:g}] "
                "(no site's descriptor allows it: check the value and its unit)",
            )
        elif (
            r.get("low") is not None
            and r.get("high") is not None
            and not (r["low"] <= x <= r["high"])
        ):
            flag(
                f,
                "outside training range",
                f"'{f}' = {x:g} is outside the range seen in training "
                f"(central 99% of training values, [{r['low']:.4g}, {r['high']:.4g}])",
            )
    return warnings, imputed, reasons


def predict(
    model: str | Path | ModelArtefact,
    patient: dict[str, Any],
    *,
    threshold: float | None = None,
) -> Prediction:
    """Score one patient with a saved model; see the module docstring.

    Parameters
    ----------
    model
        A model artefact folder (or its ``model.json``) or a loaded :class:`ModelArtefact`.
    patient
        Raw values by column name, in the canonical units of the descriptors.
    threshold
        Classification threshold (default: the one the model was evaluated at, if stored).

    Raises
    ------
    DataError
        A value cannot be encoded (not a number, undeclared level).
    """
    import pandas as pd

    art = model if isinstance(model, ModelArtefact) else load_model(model)
    if not isinstance(patient, dict):
        raise DataError("the patient must be a JSON object of field: value")
    warnings, imputed, reasons = _check_inputs(art, patient)
    frame = pd.DataFrame([{f: patient.get(f) for f in art.features}])
    for f in art.features:
        if all(_is_missing(v) for v in frame[f]):
            frame[f] = frame[f].astype(object)
    X = art.design(frame)
    x = X[0]
    eta = float(art.linear_predictor(X)[0])
    p = 1.0 / (1.0 + math.exp(-eta))
    weights = art.weights()
    ref = art.description.get("reference", {})
    mean = np.asarray(ref.get("design_mean") or np.zeros_like(x), dtype=float)
    spec = art.spec["preprocess"]
    if art.kind == "logistic":
        base, contrib = linear_contributions(weights, spec, x, mean)
        method = "exact linear contributions (= SHAP values of the linear model)"
    else:
        base, contrib, how = shapley_contributions(art.kind, weights, spec, x, mean)
        method = f"baseline Shapley values, {how}"
    interval = None
    note = ""
    cov = art.cov_params()
    if art.kind == "logistic" and cov is not None:
        xi = np.concatenate([[1.0], x])
        se = float(math.sqrt(max(xi @ cov @ xi, 0.0)))
        interval = (1 / (1 + math.exp(-(eta - _Z * se))), 1 / (1 + math.exp(-(eta + _Z * se))))
        note = "95% CI of the predicted risk from the coefficient covariance (delta method, logit scale)"
    else:
        note = "no interval: this model has no coefficient covariance"
    if threshold is None:
        threshold = (art.evaluation or {}).get("settings", {}).get("threshold")
    classification = None if threshold is None else int(p >= threshold)
    no_class = ""
    n_in = len(art.features)
    if imputed and len(imputed) > MAX_IMPUTED_SHARE * n_in:
        no_class = (
            f"{len(imputed)} of {n_in} inputs are missing and were imputed "
            f"({', '.join(imputed)}): the probability mostly reflects the imputed values, "
            "so no class is given; do not use it for a decision"
        )
        warnings.append(no_class)
        classification = None
    return Prediction(
        probability=p,
        interval=interval,
        linear_predictor=eta,
        base_value=base,
        contributions=contrib,
        explanation_method=method,
        warnings=warnings,
        out_of_distribution=bool(reasons),
        model_hash=art.hash,
        input_sha256=hashlib.sha256(canonical_json(patient)).hexdigest(),
        threshold=threshold,
        classification=classification,
        interval_note=note,
        imputed=imputed,
        ood_reasons=reasons,
        no_class_reason=no_class,
    )


def record_decision(
    model: str | Path | ModelArtefact,
    prediction: Prediction | dict[str, Any],
    decision: str,
    reason: str = "",
    *,
    clinician: str,
    audit_log: str | Path,
    patient_ref: str | None = None,
) -> dict[str, Any]:
    """Append a clinician's accept/override of a prediction to the hash-chained audit log.

    Parameters
    ----------
    model
        The artefact the prediction came from (its hash must match the prediction's).
    prediction
        What :func:`predict` returned (or its ``to_dict()``).
    decision
        ``"accept"`` or ``"override"``; an override needs a ``reason``.
    clinician
        Who decided (recorded as the record's ``who``).
    audit_log
        The JSON-lines audit log (created if missing).
    patient_ref
        Optional local pseudonymous reference of the patient (never the raw input).

    Returns
    -------
    dict
        The appended record (with ``seq``, ``prev_hash`` and ``hash``).
    """

    if decision not in DECISIONS:
        raise DataError(f"argument 'decision' must be one of {list(DECISIONS)}, got {decision!r}")
    if decision == "override" and not reason.strip():
        raise DataError("argument 'reason': an override needs a reason")
    if not clinician or not str(clinician).strip():
        raise DataError("argument 'clinician' must name who decided")
    art = model if isinstance(model, ModelArtefact) else load_model(model)
    pred = prediction.to_dict() if isinstance(prediction, Prediction) else dict(prediction)
    if pred.get("model_hash") != art.hash:
        raise DataError(
            f"the prediction was made with model {str(pred.get('model_hash'))[:12]}…, "
            f"not with {art.hash[:12]}…"
        )
    record = {
        "kind": "clinical_decision",
        "who": str(clinician),
        "what": "accept/override of a model prediction",
        "decision": decision,
        "reason": reason,
        "model_hash": art.hash,
        "model_path": str(art.path) if art.path else None,
        "probability": pred.get("probability"),
        "interval": pred.get("interval"),
        "warnings": list(pred.get("warnings") or []),
        "input_sha256": pred.get("input_sha256"),
        "patient_ref": patient_ref,
    }
    return AuditLog(audit_log).append(record)
