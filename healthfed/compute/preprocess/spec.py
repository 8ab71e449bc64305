"""The preprocessing spec: the one JSON description of a design matrix every model uses.

Every site must turn its rows into *the same* design matrix, otherwise a
federated model is fitted on different features at different sites. The spec
fixes everything that would otherwise be decided from local data::

    {"kind": "healthfed.preprocess", "version": 1, "missing": "indicator",
     "standardize": true, "n_rows": 1000,
     "columns": [
       {"name": "age", "type": "numeric", "mean": 61.2, "center": 61.2, "scale": 14.8,
        "indicator": false},
       {"name": "diabetes", "type": "binary", "levels": ["0", "1"], "mean": 0.21,
        "center": 0.0, "scale": 1.0, "indicator": true},
       {"name": "sex", "type": "categorical", "levels": ["female", "male"],
        "indicator": false}]}

Design columns, in spec order: a numeric/binary column gives
``(coalesce(x, mean) - center) / scale`` then ``<x>_missing`` if flagged; a
categorical column gives ``<x>_<level>`` for ``levels[1:]`` then
``<x>_missing`` if flagged. No intercept column (models add their own).
``missing="drop"`` fits on complete cases (rows with a missing feature or
outcome left out) and has no indicators.

A ``numeric`` entry may name a binary column: its 0/1 coding is then used as a
number (standardised with the entry's centre and scale), which is how
:func:`standardisation_spec` describes a plain "(x - center) / scale" model such
as the one FedAvg's ``feature_moments`` round fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from healthfed.errors import DataError, InvalidArgument, PolicyDenied

__all__ = [
    "MAX_COLUMNS",
    "MISSING_MODES",
    "SPEC_KIND",
    "SPEC_VERSION",
    "check_spec",
    "feature_names",
    "n_features",
    "standardisation_spec",
    "term_units",
    "validate_spec",
]

SPEC_KIND = "healthfed.preprocess"
SPEC_VERSION = 1
MISSING_MODES = ("indicator", "drop")
MAX_COLUMNS = 500
# Descriptor types a spec entry of each type may name.
_DESCRIPTOR_TYPES = {
    "numeric": ("numeric", "integer", "binary"),
    "binary": ("binary",),
    "categorical": ("categorical",),
}


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyDenied(f"parameter 'preprocess': {what} must be a finite number, got {value!r}")
    return float(value)


def _check_numeric(c: dict[str, Any], where: str) -> dict[str, Any]:
    """A normalised numeric/binary entry: mean, center, scale (> 0), binary levels."""
    name = c["name"]
    entry: dict[str, Any] = {
        "name": name,
        "type": c["type"],
        "mean": _num(c.get("mean", 0.0), f"'{where}.mean' ({name!r})"),
        "center": _num(c.get("center", 0.0), f"'{where}.center' ({name!r})"),
        "scale": _num(c.get("scale", 1.0), f"'{where}.scale' ({name!r})"),
        "indicator": bool(c.get("indicator", False)),
    }
    if entry["scale"] <= 0:
        raise PolicyDenied(f"parameter '{where}.scale' ({name!r}) must be > 0")
    if c["type"] == "binary":
        levels = c.get("levels", ["0", "1"])
        if not isinstance(levels, list) or len(levels) != 2:
            raise PolicyDenied(f"parameter '{where}.levels' ({name!r}) must list 2 levels")
        entry["levels"] = [str(v) for v in levels]
    return entry


def _check_categorical(c: dict[str, Any], where: str) -> dict[str, Any]:
    """A normalised categorical entry: its distinct levels (the first is the reference)."""
    name = c["name"]
    levels = c.get("levels")
    if (
        not isinstance(levels, list)
        or len(levels) < 1
        or len({str(v) for v in levels}) != len(levels)
    ):
        raise PolicyDenied(
            f"parameter '{where}.levels' ({name!r}) must be a list of distinct levels"
        )
    return {
        "name": name,
        "type": "categorical",
        "levels": [str(v) for v in levels],
        "indicator": bool(c.get("indicator", False)),
    }


def _check_column(c: Any, i: int, missing: str) -> dict[str, Any]:
    where = f"preprocess.columns[{i}]"
    if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
        raise PolicyDenied(f"parameter '{where}' needs a column 'name'")
    ctype = c.get("type")
    if ctype in ("numeric", "binary"):
        entry = _check_numeric(c, where)
    elif ctype == "categorical":
        entry = _check_categorical(c, where)
    else:
        raise PolicyDenied(
            f"parameter '{where}.type' ({c['name']!r}) must be 'numeric', 'binary' or "
            f"'categorical', got {ctype!r}"
        )
    if missing == "drop" and entry["indicator"]:
        raise PolicyDenied(
            f"parameter '{where}.indicator' ({c['name']!r}): no missing indicators with "
            "missing='drop'"
        )
    return entry


def check_spec(spec: Any) -> dict[str, Any]:
    """Structural check of a spec (hub or node side); returns a normalised copy.

    Raises
    ------
    PolicyDenied
        The spec is not a healthfed preprocessing spec of a supported version, or an
        entry is malformed (the message names the entry).
    """
    if not isinstance(spec, dict) or spec.get("kind") != SPEC_KIND:
        raise PolicyDenied(
            f"parameter 'preprocess' must be a healthfed preprocessing spec (kind {SPEC_KIND!r})"
        )
    if spec.get("version") != SPEC_VERSION:
        raise PolicyDenied(
            f"parameter 'preprocess': version {spec.get('version')!r} is not supported "
            f"(this node understands version {SPEC_VERSION})"
        )
    missing = spec.get("missing", "indicator")
    if missing not in MISSING_MODES:
        raise PolicyDenied(f"parameter 'preprocess.missing' must be one of {list(MISSING_MODES)}")
    cols = spec.get("columns")
    if not isinstance(cols, list) or not cols or len(cols) > MAX_COLUMNS:
        raise PolicyDenied(
            f"parameter 'preprocess.columns' must be a list of 1..{MAX_COLUMNS} column entries"
        )
    out_cols: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, c in enumerate(cols):
        entry = _check_column(c, i, missing)
        if entry["name"] in seen:
            raise PolicyDenied(
                f"parameter 'preprocess.columns[{i}]': column {entry['name']!r} is listed twice"
            )
        seen.add(entry["name"])
        out_cols.append(entry)
    out = {
        "kind": SPEC_KIND,
        "version": SPEC_VERSION,
        "missing": missing,
        "standardize": bool(spec.get("standardize", True)),
        "columns": out_cols,
    }
    if "n_rows" in spec:
        out["n_rows"] = int(spec["n_rows"])
    return out


def validate_spec(spec: Any, descriptor: Any, policy: Any = None) -> dict[str, Any]:
    """Node side: check a spec against this site's descriptor (and policy).

    Types must match the declared ones (a ``numeric`` entry may also name a binary
    column, used as its 0/1 code) and a categorical or binary entry's levels must
    equal the *declared* levels exactly (same order: the first is the reference).

    Raises
    ------
    PolicyDenied
        The spec is malformed or a column has more levels than ``max_levels``.
    DataError
        A column is unknown here, has another type, or declares other levels.
    """
    out = check_spec(spec)
    max_levels = getattr(policy, "max_levels", None)
    for c in out["columns"]:
        col = descriptor.column(c["name"])
        if col.type == "id":
            raise PolicyDenied(
                f"parameter 'preprocess': {c['name']!r} is the patient id column, never a feature"
            )
        if col.type not in _DESCRIPTOR_TYPES[c["type"]]:
            raise DataError(
                f"parameter 'preprocess': column {c['name']!r} is {col.type} at this site, "
                f"the spec treats it as {c['type']}"
            )
        if c["type"] in ("categorical", "binary"):
            declared = list(col.levels or ())
            if declared != c["levels"]:
                raise DataError(
                    f"parameter 'preprocess': column {c['name']!r} declares levels {declared} "
                    f"at this site, the spec uses {c['levels']}"
                )
            if max_levels is not None and len(declared) > max_levels:
                raise PolicyDenied(
                    f"parameter 'preprocess': column {c['name']!r} has {len(declared)} levels, "
                    f"more than this site's max_levels = {max_levels}"
                )
    return out


def feature_names(spec: dict[str, Any]) -> list[str]:
    """Names of the design-matrix columns the spec produces, in order (no intercept)."""
    names: list[str] = []
    for c in check_spec(spec)["columns"]:
        if c["type"] == "categorical":
            names += [f"{c['name']}_{lev}" for lev in c["levels"][1:]]
        else:
            names.append(c["name"])
        if c["indicator"]:
            names.append(f"{c['name']}_missing")
    return names


def term_units(spec: dict[str, Any]) -> list[str]:
    """What a one-unit change of each design column means, in :func:`feature_names` order.

    A standardised numeric column: ``per SD (<scale>)`` -- its coefficient (and odds
    ratio) is per pooled standard deviation; an unstandardised one: ``per unit``; a
    binary column ``1 vs 0``; a categorical level ``<level> vs <reference>``; a
    missing-value indicator ``missing vs observed``.
    """
    units: list[str] = []
    for c in check_spec(spec)["columns"]:
        if c["type"] == "categorical":
            units += [f"{lev} vs {c['levels'][0]}" for lev in c["levels"][1:]]
        elif c["type"] == "binary":
            units.append("1 vs 0")
        elif c.get("scale", 1.0) != 1.0:
            units.append(f"per SD ({c['scale']:.3g})")
        else:
            units.append("per unit")
        if c["indicator"]:
            units.append("missing vs observed")
    return units


def n_features(spec: dict[str, Any]) -> int:
    """Number of design-matrix columns (no intercept column)."""
    return len(feature_names(spec))


def standardisation_spec(
    columns: Sequence[str],
    centers: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    *,
    n_rows: int | None = None,
) -> dict[str, Any]:
    """A spec that standardises numeric columns as ``(x - center) / scale`` on complete cases.

    The simplest design a model can be given without a ``preprocess_moments``
    round: FedAvg's ``feature_moments`` round (pooled means/SDs) and hand-written
    standardisations (e.g. from declared bounds) are described with it, so every
    model reads one spec format. Rows with a missing feature or outcome are left
    out (``missing="drop"``). A binary column may be listed; its 0/1 code is
    standardised like a number.

    Parameters
    ----------
    columns
        Feature columns (numeric, integer or binary), in design order.
    centers, scales
        Per column; default 0 and 1 (the raw values). Scales must be > 0.
    n_rows
        Rows the centres and scales were computed from (recorded in the spec).

    Raises
    ------
    InvalidArgument
        No columns, a column listed twice, lengths differ, or a centre/scale is not
        finite (or a scale not positive).
    """
    cols = list(columns)
    if not cols or not all(isinstance(c, str) and c for c in cols) or len(set(cols)) != len(cols):
        raise InvalidArgument("argument 'columns' must list distinct column names")
    center = [0.0] * len(cols) if centers is None else [float(v) for v in centers]
    scale = [1.0] * len(cols) if scales is None else [float(v) for v in scales]
    if len(center) != len(cols) or len(scale) != len(cols):
        raise InvalidArgument("arguments 'centers' and 'scales' need one value per column")
    for name, m, s in zip(cols, center, scale, strict=True):
        if not (math.isfinite(m) and math.isfinite(s) and s > 0):
            raise InvalidArgument(
                f"column {name!r} needs a finite center and a positive scale, got {m!r}, {s!r}"
            )
    spec: dict[str, Any] = {
        "kind": SPEC_KIND,
        "version": SPEC_VERSION,
        "missing": "drop",
        "standardize": True,
        "columns": [
            {"name": c, "type": "numeric", "mean": m, "center": m, "scale": s, "indicator": False}
            for c, m, s in zip(cols, center, scale, strict=True)
        ],
    }
    if n_rows is not None:
        spec["n_rows"] = int(n_rows)
    return spec
