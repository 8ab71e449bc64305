"""Exact encoding of a site's released sums for Flower's SecAgg+, and back.

healthfed sums site vectors with Flower's SecAgg+ (``flwr.client.mod.secaggplus_mod``
at the node, ``flwr.server.workflow.SecAggPlusWorkflow`` at the aggregator; wired in
:mod:`healthfed.federation.secure_client` and `secure_server`). SecAgg+ adds integer vectors modulo
``2^32`` under pairwise masks whose seeds are Shamir-shared, so the hub learns
the sum over the sites that sent a vector (dropouts are recovered) and nothing
about any single vector (semi-honest hub, fewer than ``threshold`` colluding
sites).

**Why our own encoding.** SecAgg+ turns floats into integers by stochastic
quantisation to ``quantization_range`` steps over ``[-clipping_range,
clipping_range]``: with its defaults a patient count comes back as a float
accurate to ~2e-6 of the range, not as the count. healthfed instead encodes
exactly and configures SecAgg+ so that its quantisation is the identity on our
integers:

* a value ``x`` becomes the fixed-point integer ``v = round(x * 2^FRACTION_BITS)``
  (counts stay exact; other sums are exact to ``2^-21`` per site), refused when
  ``|x| >= MAX_ABS`` (``2^33``, the range where float64 holds ``v`` exactly);
* ``v`` modulo ``2^RING_BITS`` (two's complement, 76 bits) is split into
  ``LIMBS`` limbs of ``LIMB_BITS`` bits;
* SecAgg+ runs with ``clipping_range = 2^LIMB_BITS``, ``quantization_range =
  2^(LIMB_BITS+1)``, ``max_weight = 1`` and every site's weight 1: then
  ``quantize(limb) = limb + 2^LIMB_BITS`` exactly (stochastic rounding of an integer
  is that integer), the workflow returns each summed limb divided by the number
  of contributing sites, and :func:`decode_sum` multiplies back, rounds, and
  recombines the limbs modulo ``2^RING_BITS``;
* the modulus ``2^32`` holds up to ``MAX_SITES`` sites' limbs without wrapping.

Sums over the sites can reach ``MAX_SITES * MAX_ABS``, far inside the 76-bit ring,
so the recombined sum is exact in the ring and then divided by ``2^FRACTION_BITS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from healthfed.errors import PolicyDenied, PrivacyError

__all__ = [
    "CLIPPING_RANGE",
    "FRACTION_BITS",
    "LIMBS",
    "LIMB_BITS",
    "MAX_ABS",
    "MAX_SITES",
    "MODULUS_RANGE",
    "QUANTIZATION_RANGE",
    "SECURE_SUMMABLE",
    "decode_sum",
    "encode_vector",
    "secure_weighting",
]

FRACTION_BITS = 20
LIMB_BITS = 19
LIMBS = 4
RING_BITS = LIMB_BITS * LIMBS  # 76
MAX_ABS = float(2**33)
CLIPPING_RANGE = float(2**LIMB_BITS)
QUANTIZATION_RANGE = 2 ** (LIMB_BITS + 1)
MODULUS_RANGE = 2**32
MAX_SITES = MODULUS_RANGE // QUANTIZATION_RANGE - 1  # 4095

_LIMB_MASK = (1 << LIMB_BITS) - 1

# Computations whose released statistics are sums over rows and may therefore be
# pooled by secure aggregation, with how a site weights its arrays first:
# "sum" adds them as they are; "rows" multiplies them by the site's row count so
# the pooled arrays divided by the pooled row count are the row-weighted mean
# (FedAvg's update).
SECURE_SUMMABLE: dict[str, str] = {
    "sum": "sum",
    "feature_moments": "sum",
    "glm_step": "sum",
    "local_train": "rows",
}


def secure_weighting(computation: str) -> str:
    """How ``computation``'s arrays are weighted for a secure sum (``SECURE_SUMMABLE``).

    Raises
    ------
    PolicyDenied
        The computation's release is not a sum over rows, so SecAgg+ cannot pool it.
    """
    weighting = SECURE_SUMMABLE.get(computation)
    if weighting is None:
        raise PolicyDenied(
            f"{computation!r} cannot be pooled by secure aggregation; summable computations: "
            f"{sorted(SECURE_SUMMABLE)}"
        )
    return weighting


def encode_vector(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Fixed-point limbs of ``values``: an ``(LIMBS, n)`` int64 array, each in ``[0, 2^19)``.

    Raises
    ------
    PrivacyError
        A value is not finite or ``|x| >= MAX_ABS``: nothing is encoded (the site
        does not contribute rather than contribute a wrapped number).
    """
    x = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise PrivacyError("secure aggregation: a released statistic is not finite")
    if x.size and float(np.max(np.abs(x))) >= MAX_ABS:
        raise PrivacyError(
            f"secure aggregation: a released statistic has |value| >= 2^33 ({MAX_ABS:.3g}), "
            "outside the exact fixed-point range; nothing contributed"
        )
    v = np.rint(x * float(2**FRACTION_BITS)).astype(np.int64)
    # Arithmetic shifts of the two's-complement int64 give the limbs of v mod 2^76.
    return np.stack([(v >> (LIMB_BITS * k)) & _LIMB_MASK for k in range(LIMBS)])


def decode_sum(mean_limbs: Sequence[np.ndarray] | np.ndarray, n_sites: int) -> np.ndarray:
    """The sites' summed values from SecAgg+'s output (limb sums divided by ``n_sites``)."""
    if n_sites < 1 or n_sites > MAX_SITES:
        raise PrivacyError(f"secure aggregation: {n_sites} sites is outside 1..{MAX_SITES}")
    limbs = np.asarray(mean_limbs, dtype=float).reshape(LIMBS, -1)
    totals = np.rint(limbs * n_sites)
    if np.any(totals < 0) or np.any(totals > n_sites * _LIMB_MASK):
        raise PrivacyError("secure aggregation: the unmasked sum is not a valid limb sum")
    ring = 1 << RING_BITS
    out = np.empty(limbs.shape[1], dtype=float)
    for j in range(limbs.shape[1]):
        u = sum(int(totals[k, j]) << (LIMB_BITS * k) for k in range(LIMBS)) % ring
        if u >= ring >> 1:
            u -= ring
        out[j] = u / float(2**FRACTION_BITS)
    return out
