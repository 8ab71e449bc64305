"""Differentially private measurements (through OpenDP) and the DP release type.

Every noisy number a node releases is made here, by an OpenDP measurement whose
privacy map gives its cost; nothing else can make one. A computation returns a
:class:`DPRelease` whose values are :class:`Noisy` objects sealed by this module,
and :func:`disclose_dp` (the DP branch of the node's disclosure filter) refuses a
release holding anything else, composes the parts' costs itself (a computation
cannot under-report) and checks them against the site's per-request cap.

Privacy unit and neighbouring datasets: one patient = one row of the dataset
(the descriptor's id column is unique per row); neighbouring datasets differ by
adding or removing one patient (OpenDP's ``symmetric_distance``, ``d_in = 1``).

Mechanisms
----------
``"laplace"`` (pure ε-DP, OpenDP ``make_laplace``: discrete Laplace on integer
counts, Laplace on float sums) and ``"gaussian"`` (ρ-zCDP, OpenDP
``make_gaussian``: discrete Gaussian on counts). A request states the ε it wants
(for the Gaussian at the site's δ, ``policy.dp_delta``); parts of one release
(e.g. the sum and the count of a mean) split it evenly. Noise scales are found
with OpenDP's ``binary_search_param`` so that OpenDP's own privacy map — which
accounts for floating-point rounding of sums — stays within the target.

Sensitivities: a count changes by at most 1; a histogram's count vector by at
most 1 in L1 and L2 (one patient is in one bin); a sum is computed by OpenDP's
``make_clamp >> make_sum`` chain from the values clamped to the bounds declared in
the dataset descriptor, never from bounds read off the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthfed.errors import PolicyDenied, PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.ledger import Charge, compose, rho_for_epsilon

__all__ = [
    "DP_FORMAT",
    "MECHANISMS",
    "DPBudget",
    "DPRelease",
    "Noisy",
    "disclose_dp",
    "noisy_count",
    "noisy_counts",
    "noisy_sum",
    "noisy_vector",
    "postprocess",
]

DP_FORMAT = "healthfed.dp/1"
MECHANISMS = ("laplace", "gaussian")
_SEAL = object()


def _dp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True)
class DPBudget:
    """What one request may spend: ``epsilon`` with ``mechanism``, at the site's ``delta``."""

    epsilon: float
    mechanism: str = "laplace"
    delta: float = 1e-6

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise PolicyDenied(
                f"parameter 'mechanism' must be one of {list(MECHANISMS)}, got {self.mechanism!r}"
            )
        e = self.epsilon
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e) or e <= 0:
            raise PolicyDenied(f"parameter 'epsilon' must be a positive number, got {e!r}")

    @property
    def charge(self) -> Charge:
        """The cost of spending all of this budget in one release."""
        if self.mechanism == "laplace":
            return Charge.pure(self.epsilon)
        return Charge.zcdp(rho_for_epsilon(self.epsilon, self.delta), self.delta)

    def part(self, k: int) -> float:
        """Target of one of ``k`` equal parts, in the mechanism's unit (ε or ρ)."""
        if self.mechanism == "laplace":
            return self.epsilon / k
        return rho_for_epsilon(self.epsilon, self.delta) / k


class Noisy:
    """One noisy output of an OpenDP measurement with its cost; only this module makes one."""

    __slots__ = ("_seal", "charge", "scale", "value")

    def __init__(self, value: Any, charge: Charge, scale: float, seal: object) -> None:
        if seal is not _SEAL:
            raise PrivacyError("Noisy values are made only by healthfed.privacy.dp measurements")
        self._seal = seal
        self.value = value
        self.charge = charge
        self.scale = float(scale)

    @property
    def sealed(self) -> bool:
        return self._seal is _SEAL


def _calibrated(make: Any, d_in: Any, target: float) -> tuple[Any, float]:
    """The measurement ``make(scale)`` with the smallest scale whose map(d_in) <= target."""
    dp = _dp()
    scale = dp.binary_search_param(make, d_in=d_in, d_out=target, T=float)
    return make(scale), float(scale)


def _cost(meas: Any, d_in: Any, mechanism: str, delta: float) -> Charge:
    d_out = float(meas.map(d_in))
    if mechanism == "laplace":
        return Charge.pure(d_out)
    return Charge.zcdp(d_out, delta)


def _measure_scalar_int(value: int, mechanism: str, target: float, delta: float) -> Noisy:
    dp = _dp()
    space = dp.atom_domain(T=int), dp.absolute_distance(T=int)

    def make(scale: float) -> Any:
        if mechanism == "laplace":
            return dp.m.make_laplace(*space, scale)
        return dp.m.make_gaussian(*space, scale)

    meas, scale = _calibrated(make, 1, target)
    return Noisy(int(meas(int(value))), _cost(meas, 1, mechanism, delta), scale, _SEAL)


def noisy_count(n: int, budget: DPBudget, parts: int = 1) -> Noisy:
    """Noisy patient count (sensitivity 1 under adding/removing a patient)."""
    return _measure_scalar_int(int(n), budget.mechanism, budget.part(parts), budget.delta)


def noisy_counts(counts: Sequence[int], budget: DPBudget, parts: int = 1) -> Noisy:
    """Noisy histogram: a count vector in which one patient is in exactly one cell.

    Adding or removing a patient changes the vector by 1 in L1 and in L2, so the
    Laplace (L1) and Gaussian (L2) mechanisms use ``d_in = 1``.
    """
    dp = _dp()
    k = len(counts)
    if k == 0:
        raise PrivacyError("a histogram needs at least one cell")
    dom = dp.vector_domain(dp.atom_domain(T=int), size=k)
    mech = budget.mechanism

    def make(scale: float) -> Any:
        if mech == "laplace":
            return dp.m.make_laplace(dom, dp.l1_distance(T=int), scale)
        return dp.m.make_gaussian(dom, dp.l2_distance(T=int), scale)

    meas, scale = _calibrated(make, 1, budget.part(parts))
    out = [int(v) for v in meas([int(c) for c in counts])]
    return Noisy(out, _cost(meas, 1, mech, budget.delta), scale, _SEAL)


def noisy_sum(
    values: Sequence[float], bounds: tuple[float, float], budget: DPBudget, parts: int = 1
) -> Noisy:
    """Noisy sum of ``values`` clamped to declared ``bounds`` (OpenDP clamp >> sum >> noise)."""
    dp = _dp()
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise PolicyDenied(f"declared bounds {bounds!r} are not a finite interval")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()
    mech = budget.mechanism

    def make(scale: float) -> Any:
        chain = space >> dp.t.then_clamp((lo, hi))
        chain = chain >> dp.t.then_sum()
        if mech == "laplace":
            return chain >> dp.m.then_laplace(scale)
        return chain >> dp.m.then_gaussian(scale)

    meas, scale = _calibrated(make, 1, budget.part(parts))
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return Noisy(float(meas(x.tolist())), _cost(meas, 1, mech, budget.delta), scale, _SEAL)


def noisy_vector(
    vector: Sequence[float], l2_sensitivity: float, rho: float, delta: float = 1e-6
) -> Noisy:
    """Gaussian noise on a float vector whose L2 sensitivity is ``l2_sensitivity``.

    Used by DP federated training (clipped per-patient gradients: sensitivity =
    clipping norm). Cost: ``rho``-zCDP as mapped by OpenDP's ``make_gaussian``.
    """
    dp = _dp()
    v = np.asarray(vector, dtype=float).ravel()
    if not np.all(np.isfinite(v)):
        raise PrivacyError("refusing to add noise to a non-finite vector")
    dom = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=int(v.size))

    def make(scale: float) -> Any:
        return dp.m.make_gaussian(dom, dp.l2_distance(T=float), scale)

    meas, scale = _calibrated(make, float(l2_sensitivity), float(rho))
    out = np.asarray(meas(v.tolist()), dtype=float)
    cost = Charge.zcdp(float(meas.map(float(l2_sensitivity))), delta)
    return Noisy(out, cost, scale, _SEAL)


def postprocess(value: Any, parents: Sequence[Noisy]) -> Noisy:
    """A value computed *only* from ``parents``' noisy values (and public facts).

    Post-processing costs nothing more: the result carries the composed cost of its
    parents (zCDP/basic, the tighter). The caller's obligation — checked by review,
    not by Python — is that ``value`` does not read private data again.
    """
    if not parents or not all(isinstance(p, Noisy) and p.sealed for p in parents):
        raise PrivacyError("post-processing needs sealed noisy parents")
    delta = max([p.charge.delta for p in parents] + [1e-12])
    s = compose([p.charge for p in parents], delta)
    mechs = "+".join(sorted({p.charge.mechanism for p in parents}))
    scale = min(p.scale for p in parents)
    return Noisy(value, Charge(s.epsilon, s.delta, s.rho, mechs), scale, _SEAL)


# --------------------------------------------------------------------------------------
# The release type and its disclosure filter
# --------------------------------------------------------------------------------------
def _public_ok(x: Any) -> bool:
    """Public facts: strings, booleans, None, finite numbers (declared bounds, grid edges)."""
    if x is None or isinstance(x, str | bool):
        return True
    if isinstance(x, int | float):
        return math.isfinite(float(x))
    if isinstance(x, list | tuple):
        return all(_public_ok(v) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _public_ok(v) for k, v in x.items())
    return False


@dataclass(frozen=True)
class DPRelease:
    """A differentially private release: noisy values only, plus public facts.

    Parameters
    ----------
    computation
        The registered computation's name.
    values
        Output name -> :class:`Noisy` (from this module's measurements).
    public
        Facts that are not functions of the data: declared bounds, grid edges,
        the requested quantile levels, the filter used. Numbers are allowed here
        only because they are declared in the request or descriptor; the
        computation builds this dict from its validated parameters.
    """

    computation: str
    values: dict[str, Noisy]
    public: dict[str, Any] = field(default_factory=dict)


def release_charge(release: DPRelease, delta: float) -> Charge:
    """The composed cost of all parts of ``release`` (basic or zCDP, the tighter)."""
    parts = [v.charge for v in release.values.values()]
    s = compose(parts, delta)
    mechs = sorted({c.mechanism for c in parts})
    return Charge(s.epsilon, s.delta, s.rho, "+".join(mechs) or "none")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None:
        raise PrivacyError("a noisy value must be a number or a list of numbers")
    v = float(value)
    if not math.isfinite(v):
        raise PrivacyError("a noisy value to be released is not finite")
    return int(value) if isinstance(value, int | np.integer) else v


def disclose_dp(release: DPRelease, policy: SitePolicy) -> dict[str, Any]:
    """The DP branch of the disclosure filter: check, compose, and serialise.

    Returns
    -------
    dict
        ``{"format": "healthfed.dp/1", "computation", "values", "public",
        "privacy": {"epsilon", "delta", "rho", "mechanism", "composition",
        "parts"}}`` — every DP release reports its ε and δ.

    Raises
    ------
    PrivacyError
        A value is not a sealed :class:`Noisy`, a public fact is not plain data,
        or the release's ε/δ exceed the site's per-request cap / ``dp_delta``.
    """
    if not isinstance(release, DPRelease):
        raise PrivacyError(f"DP disclosure refused a {type(release).__name__}")
    if not isinstance(release.values, dict) or not release.values:
        raise PrivacyError("a DP release holds no values")
    for name, v in release.values.items():
        if not isinstance(v, Noisy) or not v.sealed:
            raise PrivacyError(
                f"DP release value {name!r} was not produced by an OpenDP measurement; "
                "nothing released"
            )
    if not isinstance(release.public, dict) or not _public_ok(release.public):
        raise PrivacyError("DP release 'public' may hold only plain, finite public facts")
    charge = release_charge(release, float(policy.dp_delta))
    if charge.delta > float(policy.dp_delta) * (1 + 1e-12):
        raise PrivacyError(f"DP release δ = {charge.delta:.3g} exceeds dp_delta")
    if charge.epsilon > float(policy.dp_epsilon_per_request) + 1e-9:
        raise PrivacyError(
            f"DP release ε = {charge.epsilon:.4g} exceeds this site's dp_epsilon_per_request = "
            f"{policy.dp_epsilon_per_request:g}; nothing released"
        )
    parts = {
        name: {"mechanism": v.charge.mechanism, "scale": v.scale, **_cost_dict(v.charge)}
        for name, v in release.values.items()
    }
    return {
        "format": DP_FORMAT,
        "computation": str(release.computation),
        "values": {name: _jsonable(v.value) for name, v in release.values.items()},
        "public": release.public,
        "privacy": {
            **_cost_dict(charge),
            "mechanism": charge.mechanism,
            "composition": "basic or zCDP (tighter), see healthfed.privacy.ledger",
            "parts": parts,
        },
    }


def _cost_dict(c: Charge) -> dict[str, float]:
    return {"epsilon": float(c.epsilon), "delta": float(c.delta), "rho": float(c.rho)}
