"""What a node may release for model fitting and evaluation: summed statistics.

Model fitting needs per-site sums over rows (gradients, Hessians, risk-set
sums, score histograms), never rows. Before such a release leaves a node the
site's policy is checked, as DataSHIELD does for GLMs:

* at least ``min_subset`` rows contributed (a gradient over 2 patients is
  nearly their data);
* the number of parameters is at most ``max_param_ratio`` times the number
  of rows (otherwise a saturated model reproduces the rows);
* every count released alongside (``counts``) is 0 or at least
  ``min_cell_count``.

A failed check raises ``ThresholdViolation`` naming the rule; the node then
refuses the request with that reason and releases nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from healthfed.errors import PrivacyError, ThresholdViolation
from healthfed.policy import SitePolicy


@dataclass
class ModelStatistics:
    """Summed statistics a node computed for one model-fitting or evaluation step.

    Parameters
    ----------
    arrays
        Sums over rows, e.g. ``{"gradient": g, "hessian": H}``.
    n_rows
        Rows that contributed to the sums.
    n_params
        Free parameters of the model being fitted (0 for pure evaluation).
    scalars
        Other summed numbers (e.g. log-likelihood).
    counts
        Counts released with the sums; each must be 0 or >= min_cell_count.
    """

    arrays: dict[str, np.ndarray]
    n_rows: int
    n_params: int = 0
    scalars: dict[str, float] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)


def disclose_model_statistics(release: ModelStatistics, policy: SitePolicy) -> dict:
    """Check ``release`` against the site policy and turn it into plain JSON types."""
    if not isinstance(release, ModelStatistics):
        raise PrivacyError("refusing to release an object that is not ModelStatistics")
    n = int(release.n_rows)
    if n < policy.min_subset:
        raise ThresholdViolation(
            f"only {'fewer than ' + str(policy.min_subset) if n else 'no'} rows match at this "
            f"site; the policy's minimum subset is {policy.min_subset}"
        )
    if release.n_params and release.n_params > policy.max_param_ratio * n:
        raise ThresholdViolation(
            f"model has {release.n_params} parameters, more than the policy's "
            f"{policy.max_param_ratio:g} parameters per row allows for this site's rows"
        )
    for name, values in release.counts.items():
        for v in values:
            if 0 < int(v) < policy.min_cell_count:
                raise ThresholdViolation(
                    f"count {name!r} has a cell below the policy minimum {policy.min_cell_count}"
                )
    arrays = {}
    for name, arr in release.arrays.items():
        a = np.asarray(arr, dtype=float)
        if not np.all(np.isfinite(a)):
            raise PrivacyError(f"statistic {name!r} is not finite; nothing released")
        arrays[name] = {"shape": list(a.shape), "data": a.ravel().tolist()}
    scalars = {}
    for name, value in release.scalars.items():
        if not math.isfinite(float(value)):
            raise PrivacyError(f"statistic {name!r} is not finite; nothing released")
        scalars[name] = float(value)
    return {
        "kind": "model_statistics",
        "n_rows": n,
        "arrays": arrays,
        "scalars": scalars,
        "counts": {k: [int(v) for v in vs] for k, vs in release.counts.items()},
    }


def array_from_reply(reply: dict, name: str) -> np.ndarray:
    """Hub side: rebuild a numpy array from a disclosed ModelStatistics reply."""
    spec = reply["arrays"][name]
    return np.asarray(spec["data"], dtype=float).reshape(spec["shape"])
