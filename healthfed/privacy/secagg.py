"""Secure summation of site vectors by pairwise masking (fallback for Flower's SecAgg+).

**What this is.** Each site holds an X25519 key pair. For every pair of sites
``(i, j)`` both derive the same secret (X25519 + HKDF-SHA256, bound to the round
id) and expand it into a mask vector over the ring ``Z_{2^64}``; the site with
the smaller id adds the mask, the other subtracts it. A site sends only its
fixed-point-encoded vector plus all its masks; every single masked vector is
uniformly distributed to the hub, and the masks cancel exactly in the sum. The
hub learns the sum and nothing else about the individual vectors (semi-honest
hub, no collusion with a site).

**What it is not.** Flower's SecAgg+ (``flwr.client.mod.secaggplus_mod`` with
``flwr.server.workflow.SecAggPlusWorkflow``) adds Shamir secret sharing of the
mask seeds so that the sum survives dropped sites, and runs as a four-stage
protocol over ``TRAIN`` messages carrying ``ArrayRecord``s inside a legacy
``LegacyContext``/``Strategy`` fit round. healthfed's engines carry JSON
``query`` messages answered by the node's own executor, so wiring SecAgg+ needs
changes to the ClientApp, the ServerApp round and the node executor; it was not
done here. This module does **not** tolerate dropouts: if a site that shared
keys does not send its masked vector, the sum cannot be unmasked and the hub
refuses (fail closed).

Small-cell rules still hold: a site refuses to contribute a vector whose row count
is below ``min_subset`` (:func:`mask_contribution`), and the hub refuses to unmask a
sum over fewer than ``min_sites`` sites (:func:`unmask_sum`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthfed.errors import PrivacyError, ThresholdViolation
from healthfed.node.policy import SitePolicy

__all__ = [
    "FRACTION_BITS",
    "SecAggKeys",
    "mask_contribution",
    "mask_vector",
    "unmask_sum",
]

FRACTION_BITS = 24  # fixed-point precision: 2^-24 ~ 6e-8
_RING = 2**64


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@dataclass
class SecAggKeys:
    """One site's key pair for one round of secure summation."""

    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> SecAggKeys:
        return cls(X25519PrivateKey.generate())

    @property
    def public(self) -> str:
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return _b64(raw)

    def shared_seed(self, peer_public: str, round_id: str) -> bytes:
        peer = X25519PublicKey.from_public_bytes(base64.b64decode(peer_public))
        secret = self.private.exchange(peer)
        return HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=hashlib.sha256(round_id.encode()).digest(),
            info=b"healthfed-secagg-mask",
        ).derive(secret)


def _mask(seed: bytes, size: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    return rng.integers(0, np.iinfo(np.uint64).max, size=size, dtype=np.uint64, endpoint=True)


def _encode(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, dtype=float)
    if not np.all(np.isfinite(v)):
        raise PrivacyError("secure sum: a non-finite value cannot be encoded")
    q = np.round(v * 2.0**FRACTION_BITS)
    if np.any(np.abs(q) >= 2.0**62):
        raise PrivacyError("secure sum: a value is too large for the fixed-point ring")
    return q.astype(np.int64).view(np.uint64)


def _decode(u: np.ndarray) -> np.ndarray:
    return u.view(np.int64).astype(float) / 2.0**FRACTION_BITS


def mask_vector(
    vector: Sequence[float],
    site: str,
    keys: SecAggKeys,
    peers: Mapping[str, str],
    round_id: str,
) -> list[int]:
    """The site's masked, fixed-point vector (what it sends to the hub).

    Parameters
    ----------
    peers
        Site name -> public key of *every* site in the round (including this one).
    """
    if site not in peers:
        raise PrivacyError(f"secure sum: site {site!r} is not among the round's sites")
    x = _encode(np.asarray(vector, dtype=float).ravel())
    with np.errstate(over="ignore"):
        for other, pub in sorted(peers.items()):
            if other == site:
                continue
            m = _mask(keys.shared_seed(pub, round_id), x.size)
            x = x + m if site < other else x - m  # uint64 arithmetic wraps mod 2^64
    return [int(v) for v in x]


def mask_contribution(
    vector: Sequence[float],
    n_rows: int,
    site: str,
    keys: SecAggKeys,
    peers: Mapping[str, str],
    round_id: str,
    policy: SitePolicy,
) -> dict[str, object]:
    """Node side: refuse under ``min_subset`` rows, else mask ``[n_rows, *vector]``."""
    if int(n_rows) < policy.min_subset:
        raise ThresholdViolation(
            f"secure sum: fewer than min_subset = {policy.min_subset} patients at site "
            f"{site!r}; the site does not contribute"
        )
    masked = mask_vector([float(n_rows), *list(vector)], site, keys, peers, round_id)
    return {"site": site, "masked": masked, "round_id": round_id}


def unmask_sum(
    contributions: Mapping[str, Sequence[int]],
    expected_sites: Sequence[str],
    min_sites: int = 2,
) -> np.ndarray:
    """Hub side: the sum of the sites' vectors (masks cancel).

    Raises
    ------
    ThresholdViolation
        Fewer than ``min_sites`` sites contributed.
    PrivacyError
        A site that shared keys sent no vector (dropouts are not handled: the masks
        would not cancel, so nothing is released).
    """
    if len(expected_sites) < min_sites or len(contributions) < min_sites:
        raise ThresholdViolation(
            f"secure sum: {len(contributions)} site(s) contributed, the hub needs at least "
            f"{min_sites}"
        )
    missing = sorted(set(expected_sites) - set(contributions))
    if missing:
        raise PrivacyError(
            f"secure sum: site(s) {missing} shared keys but sent no vector; their masks do not "
            "cancel and this protocol does not recover dropouts — nothing released"
        )
    sizes = {len(v) for v in contributions.values()}
    if len(sizes) != 1:
        raise PrivacyError("secure sum: the sites' vectors differ in length")
    total = np.zeros(sizes.pop(), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for site in sorted(contributions):
            total = total + np.asarray([int(v) for v in contributions[site]], dtype=np.uint64)
    return _decode(total)
