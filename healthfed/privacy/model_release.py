"""What a node may release for model fitting and evaluation: summed statistics.

Model fitting needs per-site sums over rows (gradients, Hessians, risk-set
sums, score histograms), never rows. Before such a release leaves a node the
site's policy is checked, as DataSHIELD does for GLMs:

* at least ``min_subset`` rows contributed (a gradient over 2 patients is
  nearly their data);
* the number of parameters is at most ``max_param_ratio`` times the number
  of rows (otherwise a saturated model reproduces the rows);
* every count released alongside (``counts``) is 0 or at least
  ``min_cell_count``;
* **the release invariant**: every released array and scalar carries a
  :class:`~healthfed.privacy.contributions.ContributionProfile` computed from its
  per-row contributions, and every entry is a sum over 0 or at least
  ``min_cell_count`` rows (support) that no ``dominance_n`` rows dominate (more than
  ``dominance_k`` % of the sum of absolute contributions). A zero over a population
  of ``1 .. min_cell_count-1`` rows is withheld too. Derived numbers (e.g. the
  complement cells an intercept makes computable) come as extra profiles named
  ``"<array>~<what>"`` and are checked the same way. Arrays that are a release's
  layout, not sums over patients (bin edges, grid times, declared levels), are named
  in ``layout`` by the node's own code. **Fail closed**: an array or
  scalar without a profile is refused.

This is the one place the rule is enforced for every model computation (GLM steps,
FedAvg updates, evaluation sums, Cox risk sets, moments), whatever coefficients,
weights or model the request chose.

A failed check raises ``ThresholdViolation`` naming the rule; the node then
refuses the request with that reason and releases nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from healthfed.errors import PrivacyError, ThresholdViolation
from healthfed.policy import SitePolicy
from healthfed.privacy.contributions import ContributionProfile


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
    profiles
        A contribution profile per array and scalar name (and extra ones for derived
        numbers, ``"<name>~<what>"``); see the module docstring.
    layout
        Names of arrays or scalars that are not sums over patients (bin edges, grid
        times, declared levels, flags); released without a profile.
    """

    arrays: dict[str, np.ndarray]
    n_rows: int
    n_params: int = 0
    scalars: dict[str, float] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)
    profiles: dict[str, ContributionProfile] = field(default_factory=dict)
    layout: tuple[str, ...] = ()


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
    check_invariant(release, policy)
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


def check_invariant(release: ModelStatistics, policy: SitePolicy) -> None:
    """The release invariant (support and dominance per entry); fail closed."""
    for name, arr in release.arrays.items():
        if name in release.layout:
            continue
        _check_entries(name, np.asarray(arr, dtype=float), release.profiles.get(name), policy)
    for name, value in release.scalars.items():
        if name in release.layout:
            continue
        _check_entries(name, np.asarray([value], dtype=float), release.profiles.get(name), policy)
    for name, prof in release.profiles.items():
        if "~" in name:
            _check_entries(name, None, prof, policy)


def _check_entries(
    name: str, values: np.ndarray | None, prof: ContributionProfile | None, policy: SitePolicy
) -> None:
    if prof is None:
        raise PrivacyError(
            f"statistic {name!r} carries no contribution profile; nothing released (fail closed)"
        )
    flat = prof.ravel()
    if values is not None:
        values = values.ravel()
    if values is not None and values.size != flat.size:
        raise PrivacyError(f"statistic {name!r}: its contribution profile does not match it")
    if flat.n_top < int(policy.dominance_n):
        raise PrivacyError(f"statistic {name!r}: profile computed for too small a dominance n")
    if flat.exempt is not None:
        keep = ~np.asarray(flat.exempt, dtype=bool)
        pop = None if flat.population is None else np.asarray(flat.population)[keep]
        flat = ContributionProfile(
            np.asarray(flat.support)[keep],
            np.asarray(flat.abs_sum)[keep],
            np.asarray(flat.top)[keep],
            flat.n_top,
            pop,
        )
        values = None if values is None else values[keep]
    m = int(policy.min_cell_count)
    support = np.asarray(flat.support)
    if np.any((support > 0) & (support < m)):
        raise ThresholdViolation(
            f"support rule: an entry of {name!r} is a sum over 1 to {m - 1} patients "
            f"(min_cell_count {m}); refused"
        )
    if values is not None and np.any((support == 0) & (values != 0)):
        raise PrivacyError(f"statistic {name!r}: non-zero entry without contributors; refused")
    if flat.population is not None:
        pop = np.asarray(flat.population)
        if np.any((support == 0) & (pop > 0) & (pop < m)):
            raise ThresholdViolation(
                f"zero-cell rule: an entry of {name!r} is a zero over a group of 1 to {m - 1} "
                "patients; refused"
            )
    k = float(policy.dominance_k) / 100.0
    abs_sum = np.asarray(flat.abs_sum)
    # The top-n of |c| never exceeds the sum of |c|; profiles keep the sums in single
    # precision and the exact top-n in double, so clamp before comparing.
    top = np.minimum(np.asarray(flat.top), abs_sum)
    if np.any(top > k * abs_sum * (1 + 1e-12)):
        raise ThresholdViolation(
            f"dominance rule ({policy.dominance_n}, {policy.dominance_k:g}): in an entry of "
            f"{name!r} the {policy.dominance_n} largest contributions make up more than "
            f"{policy.dominance_k:g} % of the total; refused"
        )


def array_from_reply(reply: dict, name: str) -> np.ndarray:
    """Hub side: rebuild a numpy array from a disclosed ModelStatistics reply."""
    spec = reply["arrays"][name]
    return np.asarray(spec["data"], dtype=float).reshape(spec["shape"])
