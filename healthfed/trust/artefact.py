"""The model artefact: a folder of plain JSON a hospital can read, hash and check.

Layout of ``MODEL/``::

    model.json        the model description (canonical JSON, see below)
    model.sha256      sha256 hex of model.json's bytes (the *model hash*)
    evaluation.json   optional: the trust report's content (report.json) for this model

``model.json`` (``format = "healthfed.model/1"``) holds

* ``spec``: what a node or :func:`predict` needs to score a row -- ``model``
  (``"logistic"`` or ``"mlp"``), ``weights`` (nested lists; logistic:
  ``[coef, [intercept]]`` on the design matrix), ``hidden`` (MLP), and
  ``preprocess`` (the JSON preprocessing spec every site applied);
* ``estimator``, ``target``, ``positive``, ``features`` (raw columns),
  ``design_features`` (design-matrix column names);
* ``inference``: ``terms`` and ``cov_params`` (covariance of ``[intercept, *coef]``;
  GLM: the fitted covariance; FedAvg logistic: the inverse federated Fisher
  information at its weights; ``null`` for an MLP) and, for GLMs, the
  coefficient table;
* ``reference``: ``design_mean`` (the pooled mean design row, the reference
  patient of local explanations), ``ranges`` per numeric feature (declared
  bounds and the pooled central 99% of training values, from disclosure-checked
  quantile brackets), ``levels`` of categorical features, ``required`` features;
* ``training`` (settings, sites, rows, rounds, refusals, and ``split``: the
  ``holdout`` the model was fitted on -- ``{"fraction", "seed"}`` of the
  deterministic per-patient split, ``null`` for every row -- and, per site, the
  ``train_rows`` it was fitted on and the ``held_out_rows`` left for testing) and
  ``provenance`` (permit id, purpose, dataset, dataset versions, code version).

``nodes.json`` (optional, not part of the model hash) records where the model was
trained -- the node files, relative to the folder -- so that ``healthfed report
MODEL`` can evaluate it there again.

No pickles: :func:`load_model` parses JSON only and refuses an artefact whose
``model.json`` does not match its ``model.sha256``. The model hash is the sha256
of the canonical JSON (sorted keys, no whitespace, UTF-8, no NaN) of the
description, so the same model always has the same hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.compute.fedavg import logits, sigmoid
from healthfed.compute.importance import feature_groups
from healthfed.compute.preprocess import feature_names, transform_frame
from healthfed.errors import DataError

__all__ = [
    "MODEL_FORMAT",
    "ModelArtefact",
    "canonical_json",
    "describe_estimator",
    "load_model",
    "model_hash",
    "recorded_split",
    "save_model",
    "scored_rows",
]

MODEL_FORMAT = "healthfed.model/1"
SPLIT_METHOD = (
    "deterministic per-patient split at every site: hash of the patient id and the seed, "
    "the patients below the fraction held out"
)


def recorded_split(desc: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """``(known, holdout)``: the split a model description records it was fitted on.

    ``known`` is False for a model that does not record it (older artefacts, a
    description without ``training.split``); ``holdout`` is ``{"fraction", "seed"}``
    or ``None`` (fitted on every row).
    """
    split = (desc.get("training") or {}).get("split")
    if not isinstance(split, dict) or "holdout" not in split:
        return False, None
    h = split["holdout"]
    return True, ({"fraction": float(h["fraction"]), "seed": int(h.get("seed", 0))} if h else None)


def _split_text(h: dict[str, Any]) -> str:
    return f"{float(h['fraction']):.0%} held out, seed {int(h.get('seed', 0))}"


def scored_rows(desc: dict[str, Any], holdout: dict[str, Any] | None) -> tuple[str, list[str]]:
    """Which rows an evaluation on ``holdout``'s test part (``None``: all rows) scores.

    Returns ``(kind, warnings)``: ``kind`` is ``"held_out"`` (rows the model was not
    fitted on), ``"training"`` (rows it was fitted on are among them) or
    ``"unverified"`` (the model does not record its split); ``warnings`` say so in
    words when the scored rows are not held-out rows.
    """
    known, trained = recorded_split(desc)
    if not known:
        if holdout is None:
            return "training", [
                "scoring every row: the model does not record the split it was trained on, "
                "so these may be its training rows (apparent, optimistic performance)"
            ]
        return "unverified", [
            f"the model does not record the split it was trained on; the evaluation assumes "
            f"the held-out part ({_split_text(holdout)}) was not used for training"
        ]
    if trained is None:
        return "training", [
            "scoring the training rows: the model was trained on every row (no holdout), so "
            "these metrics are apparent performance and optimistic; train with --holdout "
            "to evaluate on held-out rows"
        ]
    if holdout is None:
        return "training", [
            f"scoring every row, including the rows the model was trained on (its split: "
            f"{_split_text(trained)}); these metrics are optimistic"
        ]
    if int(holdout.get("seed", 0)) == trained["seed"] and float(holdout["fraction"]) <= (
        trained["fraction"] + 1e-12
    ):
        return "held_out", []
    return "training", [
        f"the evaluation split ({_split_text(holdout)}) differs from the model's training "
        f"split ({_split_text(trained)}): the scored rows include rows the model was "
        "trained on; these metrics are optimistic"
    ]


def _clean(value: Any) -> Any:
    """JSON-able copy: numpy to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, UTF-8, NaN refused)."""
    return json.dumps(
        _clean(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def model_hash(description: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of a model description."""
    return hashlib.sha256(canonical_json(description)).hexdigest()


def _code_version() -> str:
    import healthfed

    version = f"healthfed {healthfed.__version__}"
    head = Path(healthfed.__file__).resolve().parent.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        if len(ref) == 40:
            version += f" (git {ref[:12]})"
    except OSError:
        pass
    return version


def describe_estimator(estimator: Any) -> dict[str, Any]:
    """The scoring spec, inference and training settings of a fitted healthfed estimator."""
    spec = dict(estimator.to_model_spec())
    if "coef" in spec:  # a GLM: coefficients on the design matrix
        if spec.get("family", "binomial") != "binomial" and spec.get("model") != "logistic":
            raise DataError("only binary classifiers (binomial GLMs) can be saved as trust models")
        spec = {
            "model": "logistic",
            "weights": [list(spec["coef"]), [float(spec["intercept"])]],
            "preprocess": spec["preprocess"],
        }
    pre = spec["preprocess"]

    features = [g for g, _ in feature_groups(pre)]
    if pre.get("kind") == "healthfed.preprocess":
        design = feature_names(pre)
    else:
        design = list(features)
    inference: dict[str, Any] = {"terms": ["intercept", *design], "cov_params": None}
    if hasattr(estimator, "cov_params_"):
        inference["cov_params"] = np.asarray(estimator.cov_params_).tolist()
        sf = estimator.summary_frame()
        inference["coefficients"] = [
            {"term": str(t), **{str(k): v for k, v in row.items()}} for t, row in sf.iterrows()
        ]
        inference["method"] = "exact federated Newton-Raphson (Wald 95% CIs)"
    params = {k: v for k, v in estimator.get_params().items() if _clean(v) == v}
    training: dict[str, Any] = {
        "estimator": type(estimator).__name__,
        "parameters": params,
        "sites": list(getattr(estimator, "sites_", [])),
        "refused": dict(getattr(estimator, "refused_", {}) or {}),
        "rounds": int(
            getattr(estimator, "rounds_", 0) or len(getattr(estimator, "history_", []) or [])
        ),
        "converged": bool(getattr(estimator, "converged_", True)),
        "n_rows": int(getattr(estimator, "nobs_", 0) or 0) or None,
    }
    if hasattr(estimator, "holdout_"):
        training["split"] = {"holdout": estimator.holdout_, "method": SPLIT_METHOD}
    return {
        "spec": spec,
        "estimator": type(estimator).__name__,
        "target": getattr(estimator, "target_", None),
        "positive": getattr(estimator, "positive_", None),
        "features": features,
        "design_features": design,
        "inference": inference,
        "training": training,
    }


@dataclass
class ModelArtefact:
    """A loaded model: its JSON description, hash and (optional) stored evaluation."""

    description: dict[str, Any]
    hash: str
    path: Path | None = None
    evaluation: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def spec(self) -> dict[str, Any]:
        return self.description["spec"]

    @property
    def kind(self) -> str:
        return str(self.spec["model"])

    @property
    def features(self) -> list[str]:
        return list(self.description["features"])

    @property
    def target(self) -> str:
        return str(self.description["target"])

    def weights(self) -> list[np.ndarray]:
        return [np.asarray(w, dtype=float) for w in self.spec["weights"]]

    def design(self, frame: Any) -> np.ndarray:
        """The design matrix of a pandas frame of raw columns (as the sites built it)."""

        return transform_frame(frame, self.spec["preprocess"])

    def linear_predictor(self, X: np.ndarray) -> np.ndarray:

        return logits(self.kind, self.weights(), np.atleast_2d(X))

    def predict_proba(self, frame: Any) -> np.ndarray:
        """``P(y=1)`` per row of a pandas frame."""

        return sigmoid(self.linear_predictor(self.design(frame)))

    def cov_params(self) -> np.ndarray | None:
        cov = self.description.get("inference", {}).get("cov_params")
        return None if cov is None else np.asarray(cov, dtype=float)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(
    model: Any,
    path: str | Path,
    *,
    reference: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
) -> ModelArtefact:
    """Write a model artefact folder (``model.json``, ``model.sha256``, ``evaluation.json``).

    Parameters
    ----------
    model
        A fitted healthfed estimator (``to_model_spec()``), a description dict
        (as :func:`describe_estimator` returns) or a :class:`ModelArtefact`.
    path
        The folder to write (created).
    reference, provenance, training, inference
        Merged into the description (see the module docstring).
    evaluation
        The trust report's content (``TrustReport.to_dict()``), stored alongside.

    Returns
    -------
    ModelArtefact
    """
    if isinstance(model, ModelArtefact):
        desc = json.loads(canonical_json(model.description))
        if evaluation is None:
            evaluation = model.evaluation
    elif isinstance(model, dict):
        desc = json.loads(canonical_json(model))
    else:
        desc = describe_estimator(model)
    desc["format"] = MODEL_FORMAT
    for key, extra in (
        ("reference", reference),
        ("provenance", provenance),
        ("training", training),
        ("inference", inference),
    ):
        if extra:
            desc[key] = {**desc.get(key, {}), **extra}
    desc.setdefault("provenance", {})
    desc["provenance"].setdefault("code_version", _code_version())
    desc.setdefault("reference", {})
    desc = json.loads(canonical_json(desc))
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    body = canonical_json(desc)
    digest = hashlib.sha256(body).hexdigest()
    _write_atomic(out / "model.json", body + b"\n")
    _write_atomic(out / "model.sha256", (digest + "\n").encode())
    if evaluation is not None:
        _write_atomic(
            out / "evaluation.json",
            json.dumps(_clean(evaluation), indent=1, allow_nan=False).encode("utf-8"),
        )
    return ModelArtefact(desc, digest, out, evaluation)


def load_model(path: str | Path) -> ModelArtefact:
    """Read and verify a model artefact folder (or its ``model.json``); JSON only, no pickles.

    Raises
    ------
    DataError
        The folder or files are missing, not JSON, of an unknown format, or
        ``model.json`` does not match ``model.sha256`` (it was changed).
    """
    p = Path(path)
    folder = p.parent if p.is_file() else p
    mj = folder / "model.json"
    try:
        raw = mj.read_bytes()
    except FileNotFoundError:
        raise DataError(f"model artefact not found: {mj}") from None
    try:
        desc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{mj}: not valid JSON ({exc})") from None
    if not isinstance(desc, dict) or desc.get("format") != MODEL_FORMAT:
        raise DataError(f"{mj}: not a healthfed model (format must be {MODEL_FORMAT!r})")
    for key in ("spec", "features", "target"):
        if key not in desc:
            raise DataError(f"{mj}: missing field {key!r}")
    digest = model_hash(desc)
    stored = folder / "model.sha256"
    if stored.exists():
        expected = stored.read_text().strip()
        if expected != digest:
            raise DataError(
                f"{mj}: content hash {digest[:12]}… does not match {stored.name} "
                f"({expected[:12]}…); the model file was changed"
            )
    evaluation = None
    ev = folder / "evaluation.json"
    if ev.exists():
        try:
            evaluation = json.loads(ev.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{ev}: not valid JSON ({exc})") from None
    return ModelArtefact(desc, digest, folder, evaluation)
