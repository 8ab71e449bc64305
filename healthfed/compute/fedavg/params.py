"""Checks of the JSON parameters shared by the model computations (FedAvg and evaluation).

A request carries the model kind, its weights as JSON lists and the
preprocessing spec, never code or pickles; every check here names the
offending parameter, and the spec is checked against this site's descriptor
(:func:`healthfed.compute.preprocess.validate_spec`) so every site builds the
same design matrix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from healthfed.compute.fedavg.models import MODEL_KINDS
from healthfed.compute.preprocess import n_features, validate_spec
from healthfed.data.sql import validate_holdout
from healthfed.errors import PolicyDenied

__all__ = ["FEATURE_MOMENTS", "LOCAL_TRAIN", "MAX_HIDDEN", "validate_model_params"]

LOCAL_TRAIN = "local_train"
FEATURE_MOMENTS = "feature_moments"
MAX_HIDDEN = 512


def _as_weights(raw: Any, kind: str, n_in: int, hidden: int | None) -> list[np.ndarray]:
    """The weights of a request as arrays, checked against the model's shapes."""
    if not isinstance(raw, list):
        raise PolicyDenied("parameter 'weights' must be a list of arrays (JSON lists)")
    try:
        arrays = [np.asarray(a, dtype=float) for a in raw]
    except (TypeError, ValueError):
        raise PolicyDenied("parameter 'weights' must hold numbers only") from None
    shapes: list[tuple[int, ...]]
    if kind == "logistic":
        shapes = [(n_in,), (1,)]
    else:
        h = int(hidden or 0)
        shapes = [(n_in, h), (h,), (h,), (1,)]
    got = [a.shape for a in arrays]
    if got != shapes:
        raise PolicyDenied(
            f"parameter 'weights': shapes {got} do not match a {kind} model with {n_in} "
            f"features (expected {shapes})"
        )
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise PolicyDenied("parameter 'weights' must be finite")
    return arrays


def _int_param(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """An integer parameter in ``[lo, hi]`` (``default`` when absent)."""
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise PolicyDenied(f"parameter {name!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _float_param(params: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    """A finite number parameter in ``[lo, hi]`` (``default`` when absent)."""
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyDenied(f"parameter {name!r} must be a number, got {value!r}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise PolicyDenied(f"parameter {name!r} must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def validate_model_params(params: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    """Shared checks of ``model``/``hidden``/``weights``/``preprocess``/``target``."""
    if not isinstance(params, dict):
        raise PolicyDenied("parameters must be an object")
    kind = params.get("model", "logistic")
    if kind not in MODEL_KINDS:
        raise PolicyDenied(f"parameter 'model' must be one of {list(MODEL_KINDS)}, got {kind!r}")
    target = params.get("target")
    if not isinstance(target, str):
        raise PolicyDenied("parameter 'target' must name the outcome column")
    descriptor.column(target)
    spec = params.get("preprocess")
    if not isinstance(spec, dict):
        raise PolicyDenied("parameter 'preprocess' must be the preprocessing spec (an object)")
    spec = validate_spec(spec, descriptor)
    n_in = n_features(spec)
    hidden = None
    if kind == "mlp":
        hidden = _int_param(params, "hidden", 16, 1, MAX_HIDDEN)
    weights = _as_weights(params.get("weights"), kind, n_in, hidden)
    positive = params.get("positive")
    return {
        **params,
        "model": kind,
        "target": target,
        "positive": None if positive is None else str(positive),
        "preprocess": spec,
        "hidden": hidden,
        "weights": weights,
        "holdout": validate_holdout(params.get("holdout")),
    }
