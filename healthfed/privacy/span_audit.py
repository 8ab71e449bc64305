"""Does any combination of released cohort counts give the count of a few patients?

Why: a node releases exact aggregates (counts, sums, gradients) over researcher-chosen
cohorts. Checking pairs and triples of cohorts is not enough: four ``sum`` requests

    {age in [30, 70.5], female} + {age in [30, 70.5], male}
      - {age in [30, 70], died} - {age in [30, 70], survived}

give the count (and the sum) of the patients aged in ``(70, 70.5]`` -- one patient --
although no two or three of them differ by few patients. In general a set ``U`` of
patients is *disclosed* by exact releases over cohorts ``C_1 .. C_m`` when its
indicator vector is a linear combination of theirs: then ``|U|`` and every sum over
``U`` follow from the released numbers.

How (exact, not a heuristic): patients who are in exactly the same cohorts form an
**atom**; a combination of cohort indicators is constant on atoms, so a disclosed set
is a union of atoms. A set of fewer than ``min_subset`` patients can only use atoms
with fewer than ``min_subset`` patients ("small" atoms). Let ``M`` be the 0/1
cohort x atom matrix, split into its large-atom columns ``M_L`` and small-atom
columns ``M_S``. The combinations ``y`` that vanish on every large atom are the left
null space of ``M_L``; on the small atoms they give the subspace
``W = {M_S' y : y M_L = 0}``. Every disclosed small set is a 0/1 vector of ``W`` with
weight (patients) ``1 .. min_subset - 1``, and every such vector is disclosed.
A cohort that is itself a small set is left to its own release's rules (small-cell
suppression, the release invariant), not reported here. ``W`` is usually ``{0}``;
otherwise its 0/1 vectors are enumerated through ``d``
pivot atoms (a vector of ``W`` is fixed by its values there, and a disclosed set has
at most ``min_subset - 1`` atoms), at most :data:`MAX_CANDIDATES` candidates; beyond
that the node cannot verify the cohort and refuses it (fail closed).

Cost: one pass over the bit sets to find the atoms (``O(m N)`` bits for ``m``
cohorts and ``N`` patients), an SVD of the ``m x A_L`` large-atom matrix, and the
enumeration when ``W`` is not trivial. ``W`` and the SVD are computed in floating
point with numpy's rank tolerance; a candidate counts as 0/1 within ``1e-6``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb

import numpy as np

__all__ = ["MAX_CANDIDATES", "Disclosure", "disclosed_small_set"]

#: Most candidate 0/1 vectors the audit enumerates before it refuses (fail closed).
MAX_CANDIDATES = 200_000
_TOL = 1e-6


@dataclass(frozen=True)
class Disclosure:
    """A small set of patients whose count follows from the releases, or why unverifiable."""

    patients: int
    cohorts: int
    unverifiable: bool = False


def disclosed_small_set(sets: list[int], min_subset: int) -> Disclosure | None:
    """A set of ``1 .. min_subset - 1`` patients disclosed by the cohorts ``sets``.

    ``sets`` are the cohorts as bit sets over the population's patient indices.
    Returns ``None`` when no such set exists. ``Disclosure.cohorts`` is the number
    of cohorts the combination uses (``Disclosure.unverifiable``: too many
    candidates to decide; the caller refuses).
    """
    if min_subset <= 1 or not sets:
        return None
    membership, sizes = _atoms(sets)
    if membership.shape[1] == 0:
        return None
    small = sizes < min_subset
    if not small.any():
        return None
    m_large = membership[:, ~small]
    m_small = membership[:, small]
    left_null = _left_null_space(m_large, len(sets))
    if left_null.shape[1] == 0:
        return None
    w = m_small.T @ left_null  # (small atoms x d): W's spanning vectors
    basis = _column_basis(w)
    if basis.shape[1] == 0:
        return None
    # A cohort of fewer than min_subset patients discloses itself: that is its own
    # release's business (small-cell suppression, the release invariant), not a
    # combination's, so such cohorts' own sets are not reported here.
    big = np.asarray(m_large.any(axis=1), dtype=bool)
    own = {
        tuple(int(i) for i in np.flatnonzero(m_small[c]))
        for c in range(len(sets))
        if not big[c] and m_small[c].any()
    }
    return _small_zero_one_vector(basis, sizes[small], min_subset, left_null, m_small, own)


def _atoms(sets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The cohort x atom 0/1 matrix (float64) and each atom's number of patients.

    Patients in no cohort are left out (no release depends on them).
    """
    n_bits = max(s.bit_length() for s in sets)
    if n_bits == 0:
        return np.zeros((len(sets), 0)), np.zeros(0, dtype=np.int64)
    n_bytes = (n_bits + 7) // 8
    raw = b"".join(s.to_bytes(n_bytes, "little") for s in sets)
    bits = np.unpackbits(
        np.frombuffer(raw, dtype=np.uint8).reshape(len(sets), n_bytes), axis=1, bitorder="little"
    )  # cohorts x patients, 0/1
    signatures = np.packbits(bits, axis=0, bitorder="little").T.copy()  # patients x bytes
    keys = signatures.view(np.dtype((np.void, signatures.shape[1]))).ravel()
    unique, counts = np.unique(keys, return_counts=True)
    atoms = np.frombuffer(unique.tobytes(), dtype=np.uint8).reshape(len(unique), -1)
    membership = np.unpackbits(atoms, axis=1, bitorder="little")[:, : len(sets)].T
    inside = membership.any(axis=0)
    return membership[:, inside].astype(np.float64), counts[inside].astype(np.int64)


def _left_null_space(matrix: np.ndarray, rows: int) -> np.ndarray:
    """Orthonormal basis (rows x d) of ``{y : y' matrix = 0}``."""
    if matrix.shape[1] == 0:
        return np.eye(rows)
    u, s, _ = np.linalg.svd(matrix, full_matrices=True)
    tol = s.max(initial=0.0) * max(matrix.shape) * np.finfo(float).eps
    rank = int((s > tol).sum())
    return u[:, rank:]


def _column_basis(matrix: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space of ``matrix``."""
    if matrix.size == 0:
        return np.zeros((matrix.shape[0], 0))
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    tol = s.max(initial=0.0) * max(matrix.shape) * np.finfo(float).eps
    return u[:, : int((s > max(tol, 1e-9)).sum())]


def _small_zero_one_vector(
    basis: np.ndarray,
    sizes: np.ndarray,
    min_subset: int,
    left_null: np.ndarray,
    m_small: np.ndarray,
    own: set[tuple[int, ...]],
) -> Disclosure | None:
    """A 0/1 vector of span(basis) with weight ``1 .. min_subset - 1``, if any.

    Vectors equal to one cohort's own small set (``own``, atom indices) are skipped.
    """
    import scipy.linalg  # scipy only when an audit gets this far (not on import)

    d = basis.shape[1]
    _, _, pivots = scipy.linalg.qr(basis.T, pivoting=True, mode="economic")
    pivots = pivots[:d]
    # Every vector of W is T @ (its values on the pivot atoms).
    transfer = basis @ np.linalg.inv(basis[pivots])
    budget = min_subset - 1
    usable = [p for p in range(d) if sizes[pivots[p]] <= budget]
    total = sum(comb(len(usable), r) for r in range(1, min(budget, len(usable)) + 1))
    if total > MAX_CANDIDATES:
        return Disclosure(0, 0, unverifiable=True)
    for r in range(1, min(budget, len(usable)) + 1):
        combos = [
            c for c in itertools.combinations(usable, r) if sizes[pivots[list(c)]].sum() <= budget
        ]
        for start in range(0, len(combos), 4096):
            block = combos[start : start + 4096]
            chosen = np.zeros((d, len(block)))
            for j, c in enumerate(block):
                chosen[list(c), j] = 1.0
            vectors = transfer @ chosen
            zero_one = (np.abs(vectors) < _TOL) | (np.abs(vectors - 1.0) < _TOL)
            ok = zero_one.all(axis=0)
            if not ok.any():
                continue
            ones = np.abs(vectors - 1.0) < _TOL
            weight = (ones * sizes[:, None]).sum(axis=0)
            for hit in np.flatnonzero(ok & (weight >= 1) & (weight <= budget)):
                j = int(hit)
                if tuple(int(i) for i in np.flatnonzero(ones[:, j])) in own:
                    continue
                v = ones[:, j].astype(np.float64)
                return Disclosure(int(weight[j]), _cohorts_used(v, left_null, m_small))
    return None


def _cohorts_used(v: np.ndarray, left_null: np.ndarray, m_small: np.ndarray) -> int:
    """How many cohorts a combination giving ``v`` on the small atoms needs (least squares)."""
    y, *_ = np.linalg.lstsq(m_small.T @ left_null, v, rcond=None)
    coef = left_null @ y
    return int((np.abs(coef) > 1e-8).sum())
