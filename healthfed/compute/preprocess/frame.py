"""Hub side: the design matrix of a pandas frame, built exactly as the sites build theirs.

Used for prediction (``predict_proba`` of every estimator, the trust tools) on
rows the researcher holds, in the canonical units of the descriptors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from healthfed.compute.preprocess.spec import check_spec
from healthfed.errors import DataError

__all__ = ["transform_frame"]


def _as_level_strings(values: Any) -> np.ndarray:
    """Values as level strings the way the node's view reads them (1.0 -> '1'); None = missing."""
    import pandas as pd

    s = pd.Series(values)
    out = np.empty(len(s), dtype=object)
    for i, v in enumerate(s.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            out[i] = None
        elif isinstance(v, bool):
            out[i] = str(int(v))
        elif isinstance(v, float) and v == math.trunc(v) and abs(v) < 1e15:
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out


def transform_frame(frame: Any, spec: dict[str, Any]) -> np.ndarray:
    """Hub side: the design matrix (no intercept) of a pandas frame of raw columns.

    The frame's numeric columns must be in the canonical units of the
    descriptors. Missing values are imputed exactly as at the nodes. With
    ``missing="drop"`` a missing value is still imputed (prediction needs a
    row per input row); the spec then has no indicator for it.

    Raises
    ------
    DataError
        A column is absent, not numeric, or holds an undeclared level.
    """
    import pandas as pd

    spec = check_spec(spec)
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    absent = [c["name"] for c in spec["columns"] if c["name"] not in frame.columns]
    if absent:
        raise DataError(f"argument 'X': the frame lacks column(s) {absent}")
    n = len(frame)
    cols: list[np.ndarray] = []
    for c in spec["columns"]:
        raw = frame[c["name"]]
        if c["type"] == "categorical":
            s = _as_level_strings(raw)
            isna = np.array([v is None for v in s], dtype=bool)
            bad = sorted({v for v in s if v is not None and v not in c["levels"]})
            if bad:
                raise DataError(
                    f"argument 'X': column {c['name']!r} holds undeclared level(s) {bad[:5]}; "
                    f"declared levels: {c['levels']}"
                )
            for lev in c["levels"][1:]:
                cols.append(np.array([v == lev for v in s], dtype=np.float64))
        else:
            if c["type"] == "binary" and not pd.api.types.is_numeric_dtype(raw):
                s = _as_level_strings(raw)
                lv = {c["levels"][0]: 0.0, c["levels"][1]: 1.0, "0": 0.0, "1": 1.0}
                bad = sorted({v for v in s if v is not None and v not in lv})
                if bad:
                    raise DataError(
                        f"argument 'X': binary column {c['name']!r} holds {bad[:5]}; "
                        f"levels: {c['levels']}"
                    )
                x = np.array([np.nan if v is None else lv[v] for v in s], dtype=np.float64)
            else:
                try:
                    x = (
                        pd.to_numeric(raw, errors="raise")
                        .astype("float64")
                        .to_numpy(dtype=np.float64, na_value=np.nan)
                    )
                except (TypeError, ValueError):
                    raise DataError(f"argument 'X': column {c['name']!r} must be numeric") from None
            isna = np.isnan(x)
            x = np.where(isna, c["mean"], x)
            cols.append((x - c["center"]) / c["scale"])
        if c["indicator"]:
            cols.append(isna.astype(np.float64))
    if not cols:
        return np.empty((n, 0))
    return np.column_stack(cols).astype(np.float64, copy=False)
