"""Node side of ``preprocess_moments``: what a site releases so the hub can build the spec.

Per column the number of missing values (a count: 0 or at least
``min_cell_count``, else the site declines and names the column), the sum and
the centred sum of squares of observed values (only when at least
``min_subset`` values were observed), and its declared level lists, plus the
row count. The request may carry the number of model parameters so the
parameter-to-rows rule is applied up front: a site too small for the model
declines at this round, before it has shaped the standardisation.

The statistics are computed in numpy from the node's raw column store
(:mod:`healthfed.compute.preprocess.cache`), the same one DuckDB scan the fit's
design matrix is later assembled from.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from healthfed.compute.preprocess.cache import raw_columns, raw_structure
from healthfed.compute.preprocess.combine import TYPE_CODES, combine_moments
from healthfed.compute.preprocess.spec import MAX_COLUMNS, MISSING_MODES
from healthfed.compute.registry import Computation, register
from healthfed.data.sql import holdout_sql, validate_holdout
from healthfed.errors import DataError, PolicyDenied, ThresholdViolation
from healthfed.privacy.contributions import (
    ContributionProfile,
    concat_profiles,
    profile_rows,
)
from healthfed.privacy.model_release import ModelStatistics

__all__ = ["PREPROCESS_MOMENTS", "run_moments", "validate_moments"]

PREPROCESS_MOMENTS = "preprocess_moments"


def _column_kinds(cols: list[str], cat: list[str], descriptor: Any, policy: Any) -> dict[str, str]:
    """Each feature's kind (numeric, binary, categorical) from this site's descriptor."""
    kinds: dict[str, str] = {}
    for c in cols:
        spec = descriptor.column(c)
        if spec.type == "id":
            raise PolicyDenied(f"parameter 'columns': {c!r} is the patient id column")
        if spec.type == "categorical":
            if spec.levels is None:
                raise DataError(
                    f"parameter 'columns': categorical column {c!r} declares no levels; "
                    "one-hot encoding needs the declared levels"
                )
            if len(spec.levels) > policy.max_levels:
                raise PolicyDenied(
                    f"parameter 'columns': {c!r} has {len(spec.levels)} levels, more than this "
                    f"site's max_levels = {policy.max_levels}"
                )
            kinds[c] = "categorical"
        elif c in cat and spec.type != "binary":  # a binary column one-hot is itself
            raise DataError(
                f"parameter 'categorical': {c!r} is {spec.type} at this site, not categorical"
            )
        else:
            kinds[c] = "binary" if spec.type == "binary" else "numeric"
    return kinds


def _check_columns(params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The ``columns`` and ``categorical`` lists of a request, checked."""
    cols = params.get("columns")
    if (
        not isinstance(cols, list)
        or not cols
        or len(cols) > MAX_COLUMNS
        or not all(isinstance(c, str) and c for c in cols)
    ):
        raise PolicyDenied(f"parameter 'columns' must be a list of 1..{MAX_COLUMNS} column names")
    if len(set(cols)) != len(cols):
        raise PolicyDenied("parameter 'columns' lists a column twice")
    cat = params.get("categorical") or []
    if not isinstance(cat, list) or not all(isinstance(c, str) for c in cat):
        raise PolicyDenied("parameter 'categorical' must be a list of column names")
    extra = sorted(set(cat) - set(cols))
    if extra:
        raise PolicyDenied(f"parameter 'categorical': {extra} not in 'columns'")
    return cols, cat


def validate_moments(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``preprocess_moments`` request; every error names the parameter.

    Parameters (JSON): ``columns`` (feature names), ``categorical`` (names to
    one-hot; categorical-typed columns are one-hot anyway), ``target``,
    ``missing``, ``n_params`` (int, or ``"design"``: 1 + this site's design
    columns without indicators), ``holdout``.
    """
    if not isinstance(params, dict):
        raise PolicyDenied("preprocess_moments: params must be an object")
    allowed = {"columns", "categorical", "target", "missing", "n_params", "holdout", "positive"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PolicyDenied(f"preprocess_moments: unknown parameter(s) {unknown}")
    cols, cat = _check_columns(params)
    target = params.get("target")
    if target is not None:
        if not isinstance(target, str):
            raise PolicyDenied("parameter 'target' must be a column name")
        descriptor.column(target)
        if target in cols:
            raise PolicyDenied(f"parameter 'columns': the target {target!r} cannot be a feature")
    kinds = _column_kinds(cols, cat, descriptor, policy)
    missing = params.get("missing", "indicator")
    if missing not in MISSING_MODES:
        raise PolicyDenied(f"parameter 'missing' must be one of {list(MISSING_MODES)}")
    n_params = params.get("n_params", 0)
    if n_params == "design":
        n_params = 1 + sum(
            len(descriptor.column(c).levels) - 1 if k == "categorical" else 1
            for c, k in kinds.items()
        )
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 0:
        raise PolicyDenied("parameter 'n_params' must be a non-negative integer or 'design'")
    return {
        "columns": list(cols),
        "kinds": kinds,
        "target": target,
        "missing": missing,
        "n_params": n_params,
        "holdout": validate_holdout(params.get("holdout")),
    }


def _levels_array(levels: list[str]) -> np.ndarray:
    """Declared levels as a JSON byte array (a release carries arrays only)."""
    return np.frombuffer(json.dumps(levels).encode(), dtype=np.uint8)


def run_moments(con: Any, descriptor: Any, params: dict[str, Any], policy: Any) -> ModelStatistics:
    """Node side: row count, missing counts, sums and centred sums of squares, declared levels.

    One DuckDB scan, into the node's raw column store (:func:`cached_design`
    assembles the fit's design matrix from it, so the fit's rounds do not scan
    again); the statistics are computed from it in numpy (deterministic: a
    repeated round gives bit-identical moments). Means/SDs of a column observed in fewer than
    ``min_subset`` rows are not released (the site declines, naming the column).
    """
    cols, kinds = params["columns"], params["kinds"]
    structure = raw_structure(descriptor, [(c, kinds[c]) for c in cols])
    _, raw = raw_columns(
        con,
        descriptor,
        structure,
        params["missing"],
        params["target"],
        holdout_sql(descriptor, params["holdout"]),
    )
    n = raw.n
    k = len(cols)
    sums, m2, n_missing, types = np.zeros(k), np.zeros(k), [], np.zeros(k)
    arrays: dict[str, np.ndarray] = {}
    n_top = int(policy.dominance_n)
    prof: dict[str, list[ContributionProfile]] = {"sum": [], "m2": [], "sum~complements": []}
    for i, c in enumerate(cols):
        missing = raw.missing(c)
        miss = int(np.count_nonzero(missing))
        n_obs = n - miss
        if 0 < miss < policy.min_cell_count:
            raise ThresholdViolation(
                f"column {c!r} has fewer than {policy.min_cell_count} missing values at this "
                "site; that count is not released (drop the column or use missing='drop')"
            )
        n_missing.append(miss)
        types[i] = TYPE_CODES[kinds[c]]
        if kinds[c] == "categorical":
            arrays[f"levels.{c}"] = _levels_array(list(descriptor.column(c).levels))
            prof["sum"].append(profile_rows(np.zeros((0, 1)), n_top))
            prof["m2"].append(profile_rows(np.zeros((0, 1)), n_top))
            continue
        if 0 < n_obs < policy.min_subset:
            raise ThresholdViolation(
                f"column {c!r} is observed in fewer than {policy.min_subset} rows at this site; "
                "its mean is not released"
            )
        x = raw.cols[c] if not miss else raw.cols[c][~missing]
        d = x - (float(np.sum(x)) / n_obs if n_obs else 0.0)
        if n_obs:
            sums[i] = float(np.sum(x))
            if n_obs > 1:
                m2[i] = float(d @ d)
        prof["sum"].append(profile_rows(x, n_top))
        prof["m2"].append(profile_rows(d * d if n_obs > 1 else np.zeros((0, 1)), n_top))
        if kinds[c] == "binary":  # n_obs - sum counts the zeros
            prof["sum~complements"].append(profile_rows(1.0 - x, n_top))
        if kinds[c] == "binary":
            arrays[f"levels.{c}"] = _levels_array(list(descriptor.column(c).levels or ("0", "1")))
    arrays.update({"sum": sums, "m2": m2, "types": types})
    profiles = {name: concat_profiles(*ps) for name, ps in prof.items() if ps}
    return ModelStatistics(
        arrays=arrays,
        n_rows=n,
        n_params=int(params["n_params"]),
        counts={"n_missing": n_missing},
        profiles=profiles,
        layout=("types", *(a for a in arrays if a.startswith("levels."))),
    )


register(
    Computation(
        name=PREPROCESS_MOMENTS,
        description="Row count, missing counts, sums and centred sums of squares of "
        "features, declared levels: the shared preprocessing spec in one round.",
        validate=validate_moments,
        run=run_moments,
        combine=combine_moments,
    )
)
