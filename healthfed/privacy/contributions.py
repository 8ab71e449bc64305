"""Per-entry contribution profiles: who made up each number a model computation releases.

Every number a model computation releases (a gradient or Hessian entry, an update
weight, a metric sum, a histogram bin, a risk-set sum) is a sum over rows,
``s = sum_i c_i``. The node's model-release filter
(:func:`healthfed.privacy.model_release.disclose_model_statistics`) releases it only
when its :class:`ContributionProfile` shows

* **support**: the number of rows with ``c_i != 0`` is 0 or at least ``min_cell_count``;
* **no dominance** ((n, k) rule of the site policy): the ``n`` largest ``|c_i|`` make up
  at most ``k`` % of ``sum_i |c_i|``.

Crafted coefficients, weights or models can make every row's contribution
(numerically) zero but one, or tiny but one; either fails one of the two rules, so the
number is withheld. The profile is computed at the node from the per-row contributions,
in row chunks so memory stays bounded: per entry the non-zero count, the sum of
``|c_i|`` and the sum of ``c_i^2``. The sum of the ``n`` largest ``|c_i|`` is at most
``sqrt(n * sum c_i^2)`` (Cauchy-Schwarz), so the cheap bound settles almost every
entry; only entries where it would refuse get the exact top-``n`` in a second pass.

Most releases are *cross sums* ``S_jk = sum_i A_ij B_ik`` (``X' W X``, ``X' r``, an
MLP's ``X' D``), so support, ``|.|`` sums and squares are three small matrix products
(:func:`cross_profile`). :func:`with_complements` appends ``1 - x`` for every 0/1
column of a design: with an intercept (or the released row count) ``sum_i (1-x_ij) c_i``
is derivable by subtraction, so those derived numbers are profiled too (the cross
product of two dummies gives every cell of their 2 x 2 table, not only ``a & b``).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ContributionProfile",
    "DesignProfiles",
    "RowProfiler",
    "concat_profiles",
    "cross_profile",
    "cross_profile_blocks",
    "gram_profile_blocks",
    "indicator_columns",
    "profile_rows",
    "refine_threshold",
    "with_complements",
]

_CHUNK_CELLS = 1 << 20  # contributions materialised at once in an exact pass
_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class ContributionProfile:
    """Support and dominance summary of the entries of one released array.

    Parameters
    ----------
    support
        Rows with a non-zero contribution, per entry.
    abs_sum
        ``sum_i |c_i|`` per entry.
    top
        The sum of the ``n_top`` largest ``|c_i|`` per entry, or an upper bound on it.
    n_top
        The ``n`` of ``top``; the filter refuses a profile with ``n_top`` below the
        policy's ``dominance_n``.
    population
        Rows that could have contributed to each entry (e.g. a group's size); a zero
        over a population of ``1 .. min_cell_count-1`` rows is withheld too.
    exempt
        Entries a computation exempts by a documented rule (the GLM's cross-products of
        two missing-value indicators or of one with another column: see
        :mod:`healthfed.compute.glm.node`); the filter does not check them.
    """

    support: np.ndarray
    abs_sum: np.ndarray
    top: np.ndarray
    n_top: int
    population: np.ndarray | None = None
    exempt: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.asarray(self.support).size)

    def ravel(self) -> ContributionProfile:
        pop = None if self.population is None else np.ravel(self.population)
        ex = None if self.exempt is None else np.ravel(self.exempt)
        return ContributionProfile(
            np.ravel(self.support), np.ravel(self.abs_sum), np.ravel(self.top), self.n_top, pop, ex
        )


def concat_profiles(*profiles: ContributionProfile) -> ContributionProfile:
    """One flat profile over the entries of several (for one released vector)."""
    flat = [p.ravel() for p in profiles]
    n_top = min(p.n_top for p in flat)
    pops = [p.population for p in flat]
    pop = (
        None
        if all(p is None for p in pops)
        else np.concatenate(
            [np.full(f.size, -1) if q is None else q for f, q in zip(flat, pops, strict=True)]
        )
    )
    return ContributionProfile(
        np.concatenate([p.support for p in flat]),
        np.concatenate([p.abs_sum for p in flat]),
        np.concatenate([p.top for p in flat]),
        n_top,
        pop,
    )


class RowProfiler:
    """Exact profile of ``m`` sums fed with per-row contributions, chunk by chunk."""

    def __init__(self, m: int, n_top: int) -> None:
        self.n_top = int(n_top)
        self.support = np.zeros(m, dtype=np.int64)
        self.abs_sum = np.zeros(m)
        self._top = np.zeros((0, m))

    def add(self, C: np.ndarray) -> None:
        """Add a chunk of per-row contributions (rows x m)."""
        a = np.abs(np.asarray(C, dtype=float))
        if a.shape[0] == 0:
            return
        self.support += np.count_nonzero(a, axis=0)
        self.abs_sum += a.sum(axis=0)
        k = self.n_top
        if a.shape[0] > k:  # the chunk's own k largest first: no copy of the whole chunk
            a = np.partition(a, a.shape[0] - k, axis=0)[-k:]
        both = np.concatenate([self._top, a], axis=0)
        if both.shape[0] > k:
            both = np.partition(both, both.shape[0] - k, axis=0)[-k:]
        self._top = both

    def profile(self, shape: tuple[int, ...] | None = None) -> ContributionProfile:
        # Sorted before summing, so the sum does not depend on the partition's order.
        top = (
            np.sort(self._top, axis=0).sum(axis=0)
            if self._top.size
            else np.zeros_like(self.abs_sum)
        )
        shape = shape or self.abs_sum.shape
        return ContributionProfile(
            self.support.reshape(shape), self.abs_sum.reshape(shape), top.reshape(shape), self.n_top
        )


def profile_rows(
    C: np.ndarray, n_top: int, shape: tuple[int, ...] | None = None
) -> ContributionProfile:
    """Exact profile of ``C.sum(axis=0)`` from the per-row contributions ``C`` (rows x m)."""
    C = np.asarray(C, dtype=float)
    if C.ndim == 1:
        C = C[:, None]
    prof = RowProfiler(C.shape[1], n_top)
    step = max(1, _CHUNK_CELLS // max(C.shape[1], 1))
    for lo in range(0, C.shape[0], step):
        prof.add(C[lo : lo + step])
    return prof.profile(shape)


def indicator_columns(X: np.ndarray) -> np.ndarray:
    """Indices of the columns of ``X`` whose values are all 0 or 1 and not all 1."""
    if X.shape[0] == 0:
        return np.zeros(0, dtype=int)
    out = []
    for j in range(X.shape[1]):  # column by column: no n x p temporaries
        c = X[:, j]
        if np.all((c == 0) | (c == 1)) and not np.all(c == 1):
            out.append(j)
    return np.asarray(out, dtype=int)


def with_complements(X: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """``X`` with ``1 - X[:, j]`` appended for its 0/1 columns (see the module docstring)."""
    cols = indicator_columns(X) if cols is None else cols
    if len(cols) == 0:
        return X
    return np.column_stack([X, 1.0 - X[:, cols]])


Blocks = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def cross_profile(
    A: np.ndarray, B: np.ndarray, n_top: int, upper: bool = False
) -> ContributionProfile:
    """Profile of every entry of ``A' B`` (contributions ``A_ij * B_ik``).

    ``upper`` (``A'B`` symmetric, e.g. ``(W X)' X``): entries of the row-major upper
    triangle, as :func:`healthfed.compute.glm.maths.pack_upper` packs them.
    """
    A = np.asarray(A, dtype=float)
    B = np.asarray(B, dtype=float)
    return cross_profile_blocks(lambda lo, hi: (A[lo:hi], B[lo:hi]), A.shape[0], n_top, upper=upper)


def cross_profile_blocks(
    block: Blocks, n: int, n_top: int, upper: bool = False
) -> ContributionProfile:
    """:func:`cross_profile` of row blocks ``block(lo, hi) -> (A[lo:hi], B[lo:hi])``.

    The blocks are built on demand, so no ``n x p`` temporary beyond one block exists.
    """
    a0, b0 = block(0, min(n, 1))
    pa, pb = a0.shape[1], b0.shape[1]
    support: np.ndarray = np.zeros((pa, pb))
    abs_sum: np.ndarray = np.zeros((pa, pb))
    sq_sum: np.ndarray = np.zeros((pa, pb))
    for lo in range(0, n, _BLOCK_ROWS):
        a, b = block(lo, min(n, lo + _BLOCK_ROWS))
        support += (a != 0).astype(float).T @ (b != 0).astype(float)
        abs_a, abs_b = np.abs(a), np.abs(b)
        abs_sum += abs_a.T @ abs_b
        sq_sum += (abs_a * abs_a).T @ (abs_b * abs_b)
    if upper:
        iu = np.triu_indices(pa)
        support, abs_sum, sq_sum = support[iu], abs_sum[iu], sq_sum[iu]
        pairs = np.column_stack(iu)
    else:
        support, abs_sum, sq_sum = support.ravel(), abs_sum.ravel(), sq_sum.ravel()
        jj, kk = np.meshgrid(np.arange(pa), np.arange(pb), indexing="ij")
        pairs = np.column_stack([jj.ravel(), kk.ravel()])
    top = np.minimum(abs_sum, np.sqrt(n_top * np.maximum(sq_sum, 0.0)))
    _exact_top(block, n, pairs, top, abs_sum, n_top)
    shape = (len(support),) if upper else (pa, pb)
    return ContributionProfile(
        np.rint(support).astype(np.int64).reshape(shape),
        abs_sum.reshape(shape),
        top.reshape(shape),
        n_top,
    )


def gram_profile_blocks(
    zblock: Callable[[int, int], np.ndarray], w: np.ndarray, n: int, n_top: int
) -> ContributionProfile:
    """Packed upper-triangle profile of ``Z' diag(w) Z`` (contributions ``w_i z_ij z_ik``).

    As :func:`cross_profile_blocks` with ``(w Z, Z)``, but every product is a symmetric
    one (``a' a``, BLAS ``syrk``), in single precision (counts are exact per block and
    accumulated in double; a relative error of ``1e-7`` in the ``|.|`` sums does not
    move a dominance decision): several times cheaper than the general form.
    """
    w = np.asarray(w, dtype=float)
    if np.any(w < 0):
        z0 = zblock(0, n)
        return cross_profile(z0 * w[:, None], z0, n_top, upper=True)
    q = zblock(0, min(n, 1)).shape[1]
    support: np.ndarray = np.zeros((q, q))
    abs_sum: np.ndarray = np.zeros((q, q))
    sq_sum: np.ndarray = np.zeros((q, q))
    for lo in range(0, n, _BLOCK_ROWS):
        hi = min(n, lo + _BLOCK_ROWS)
        z = np.abs(zblock(lo, hi)).astype(np.float32)
        wb = w[lo:hi].astype(np.float32)[:, None]
        nz = ((z != 0) & (wb != 0)).astype(np.float32)
        support += nz.T @ nz
        a = z * np.sqrt(wb)
        abs_sum += a.T @ a
        v = z * z * wb
        sq_sum += v.T @ v
    iu = np.triu_indices(q)
    support, abs_sum, sq_sum = support[iu], abs_sum[iu], sq_sum[iu]
    top = np.minimum(abs_sum, np.sqrt(n_top * np.maximum(sq_sum, 0.0)))

    def block(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        z = zblock(lo, hi)
        return z * w[lo:hi, None], z

    _exact_top(block, n, np.column_stack(iu), top, abs_sum, n_top)
    return ContributionProfile(np.rint(support).astype(np.int64), abs_sum, top, n_top)


# Entries whose cheap bound puts the top-n above this share of the total get the exact
# top-n (a policy with dominance_k below 50 % then refuses on the bound: conservative).
_REFINE_ABOVE = 0.5


def refine_threshold(dominance_k: float | None) -> float:
    """The bound ratio above which an entry needs its exact top-n, for a policy's ``k`` (%).

    An entry whose bound is at most ``k`` of its total passes the dominance rule
    whatever its exact top-n is, so refining it cannot change the verdict; below 50 %
    the rule refuses on the bound, as without a policy. Same verdicts, less work.
    """
    if dominance_k is None:
        return _REFINE_ABOVE
    return max(_REFINE_ABOVE, float(dominance_k) / 100.0)


def _undecided(top: np.ndarray, abs_sum: np.ndarray, refine_above: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(abs_sum > 0, top / abs_sum, 0.0)
    return np.flatnonzero(ratio > refine_above)


def _exact_top(
    block: Blocks,
    n: int,
    pairs: np.ndarray,
    top: np.ndarray,
    abs_sum: np.ndarray,
    n_top: int,
    refine_above: float = _REFINE_ABOVE,
) -> None:
    """Replace ``top`` by the exact top-``n`` sum where the bound is not conclusive."""
    todo = _undecided(top, abs_sum, refine_above)
    if todo.size == 0:
        return
    ja, kb = pairs[todo, 0], pairs[todo, 1]
    prof = RowProfiler(todo.size, n_top)
    step = max(1, _CHUNK_CELLS // todo.size)
    for lo in range(0, n, step):
        a, b = block(lo, min(n, lo + step))
        prof.add(a[:, ja] * b[:, kb])
    top[todo] = prof.profile().top


# --------------------------------------------------------------------------------------
# a design's profiles, round after round: what does not depend on the weights, once
# --------------------------------------------------------------------------------------
# Rows per float32 product: counts stay exact (< 2^24 per block), and every temporary is a
# ~1.6 MB block that the allocator hands back round after round (fresh pages cost: see
# docs/flower-deployment.md, "Fresh memory").
_BIG_BLOCK = 1 << 13


class DesignProfiles:
    """Profiles of ``Z' diag(w) Z`` and ``Z' v`` for one design, for many ``w`` and ``v``.

    ``Z = [X, 1 - X[:, ind]]`` (:func:`with_complements`). An iterative fit asks the
    same design every round with new weights, so what does not depend on them is kept:
    the per-pair non-zero counts ``nz(Z)' nz(Z)`` and the per-column counts and maxima
    of ``|Z|``. Each round is then one symmetric product (``a = |Z| sqrt(w)``, single
    precision: ``a'a`` is the ``|.|`` sums, as :func:`gram_profile_blocks` computes
    them) in blocks of ``2^13`` rows built from ``X`` as they are used, and the top-``n``
    bound is ``n`` times the largest term (at most ``max(w) max|z_j| max|z_k|``, from the
    kept column maxima); the sums of squares for Cauchy-Schwarz are formed only for the
    columns of entries that bound leaves open (few, for a large site); the support
    is the kept count minus the rows whose weight is zero (none, for a logistic or
    Poisson fit inside the bounded region). The exact top-``n`` pass is the same as
    :func:`gram_profile_blocks`'. Supports equal that function's, the ``|.|`` sums up to
    single precision rounding (relative ``1e-6``); ``top`` is its bound or a tighter one,
    never below the exact top-``n``, so the verdicts are the same (pinned by
    ``tests/privacy/test_costs_fast_paths.py``).
    """

    def __init__(self, X: np.ndarray, ind: np.ndarray | None = None) -> None:
        self._X = weakref.ref(X)  # a cache of these must not keep the design alive
        self.ind = indicator_columns(X) if ind is None else np.asarray(ind, dtype=int)
        self.n, self.p = X.shape
        self.q = self.p + len(self.ind)
        nz: np.ndarray = np.zeros((self.q, self.q))
        col_max = np.zeros(self.q, dtype=np.float32)
        rows = min(self.n, _BIG_BLOCK)
        buf = np.empty((rows, self.q), dtype=np.float32, order="F")
        for lo in range(0, self.n, _BIG_BLOCK):  # in row blocks: no n x q temporary
            hi = min(self.n, lo + _BIG_BLOCK)
            blk = self._abs_block(X, lo, hi, buf)
            np.maximum(col_max, blk.max(axis=0), out=col_max)
            np.not_equal(blk, 0, out=blk)  # the block's non-zero flags, as 0/1
            nz += blk.T @ blk
        self.pair_support = nz
        self.col_support = np.diag(nz).copy()  # a column's non-zeros: its pair with itself
        self.col_max = col_max.astype(float)  # max_i |z_ij|, for the largest-term bound
        # columns of X with a negative value (|x| differs from x)
        self.signed = X.min(axis=0) < 0 if self.n else np.zeros(self.p, dtype=bool)

    def _design(self) -> np.ndarray:
        X = self._X()
        if X is None:
            raise RuntimeError("DesignProfiles: its design matrix no longer exists")
        return X

    def _abs_block(self, X: np.ndarray, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """``|Z|`` rows ``lo:hi`` in single precision, written into ``out`` (a block buffer).

        Built from ``X`` every time rather than kept: an ``n x q`` copy is tens of MB of
        fresh memory per fit for a few milliseconds a round.
        """
        blk = out[: hi - lo]
        np.abs(X[lo:hi], out=blk[:, : self.p], casting="same_kind")
        if len(self.ind):  # 0/1 columns: no sign to drop
            np.subtract(1.0, X[lo:hi, self.ind], out=blk[:, self.p :], casting="same_kind")
        return blk

    def _abs_blocks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(lo, hi, |Z|[lo:hi])`` over the design, through one reused block buffer."""
        X = self._design()
        buf = np.empty((min(self.n, _BIG_BLOCK), self.q), dtype=np.float32, order="F")
        for lo in range(0, self.n, _BIG_BLOCK):
            hi = min(self.n, lo + _BIG_BLOCK)
            yield lo, hi, self._abs_block(X, lo, hi, buf)

    def block(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of ``Z`` in double precision."""
        return with_complements(self._design()[lo:hi], self.ind)

    def _nonzero_rows(self, rows: np.ndarray) -> np.ndarray:
        return (with_complements(self._design()[rows], self.ind) != 0).astype(float)

    def column(self, j: int, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of column ``j`` of ``Z`` in double precision."""
        X = self._design()
        return X[lo:hi, j] if j < self.p else 1.0 - X[lo:hi, self.ind[j - self.p]]

    def _exact(
        self,
        todo: np.ndarray,
        ja: np.ndarray,
        kb: np.ndarray,
        w: np.ndarray | None,
        v: np.ndarray | None,
        top: np.ndarray,
        n_top: int,
    ) -> None:
        """Exact top-``n`` of the entries ``todo`` (pairs ``ja, kb``), from their columns only.

        The same products as :func:`_exact_top` (``(z_j w) z_k``, ``z_j v``), so the same
        numbers, without building the other columns of ``Z``.
        """
        if todo.size == 0:
            return
        ja, kb = ja[todo], kb[todo]
        cols = np.unique(np.concatenate([ja, kb]))
        ia, ib = np.searchsorted(cols, ja), np.searchsorted(cols, kb)
        prof = RowProfiler(todo.size, n_top)
        step = max(1, _CHUNK_CELLS // todo.size)
        for lo in range(0, self.n, step):
            hi = min(self.n, lo + step)
            zc = np.column_stack([self.column(int(j), lo, hi) for j in cols])
            if v is not None:
                prof.add(zc[:, ia] * v[lo:hi, None])
            else:
                assert w is not None
                prof.add((zc[:, ia] * w[lo:hi, None]) * zc[:, ib])
        top[todo] = prof.profile().top

    def _abs_cross(self, av: np.ndarray) -> np.ndarray:
        """``|Z|' av`` for ``av >= 0``, in double precision, column by column of ``X``.

        A complement ``1 - x`` of a 0/1 column is non-negative, so its sum is
        ``sum(av) - x' av``; only the signed columns need an ``|x|`` (one column at a time).
        """
        X = self._design()
        out = np.empty(self.q)
        for j in range(self.p):
            col = X[:, j]
            out[j] = (np.abs(col) if self.signed[j] else col) @ av
        if len(self.ind):
            out[self.p :] = np.maximum(float(av.sum()) - out[self.ind], 0.0)
        return out

    def gram(
        self, w: np.ndarray, n_top: int, refine_above: float = _REFINE_ABOVE
    ) -> ContributionProfile:
        """Packed upper-triangle profile of ``Z' diag(w) Z`` (as :func:`gram_profile_blocks`).

        ``refine_above``: see :func:`refine_threshold` (the policy's ``k`` decides the rest).
        The top-``n`` bound is tightened in three steps, each only where the one before
        left the verdict open (:func:`_largest_term_bound`): ``n`` times the largest
        term, then Cauchy-Schwarz on the columns still open, then the exact top-``n``.
        """
        w = np.asarray(w, dtype=float)
        if np.any(w < 0):
            return gram_profile_blocks(self.block, w, self.n, n_top)
        abs_sum: np.ndarray = np.zeros((self.q, self.q))
        sw = np.sqrt(w.astype(np.float32))
        for lo, hi, a in self._abs_blocks():
            a *= sw[lo:hi, None]
            abs_sum += a.T @ a
        support = self.pair_support
        zero = np.flatnonzero(w == 0)
        if zero.size:
            b = self._nonzero_rows(zero)
            support = support - b.T @ b
        iu = np.triu_indices(self.q)
        support, abs_sum = support[iu], abs_sum[iu]
        # |w_i z_ij z_ik| <= max(w) max|z_j| max|z_k|: no pass over the rows for it
        m = self.col_max * math.sqrt(float(w.max())) if self.n else self.col_max
        top = np.minimum(abs_sum, _largest_term_bound(n_top, m[iu[0]] * m[iu[1]]))
        todo = _undecided(top, abs_sum, refine_above)
        if todo.size:  # Cauchy-Schwarz on the open entries' columns only
            cols = np.unique(np.concatenate([iu[0][todo], iu[1][todo]]))
            sq_sum: np.ndarray = np.zeros((cols.size, cols.size))
            for lo, hi, blk in self._abs_blocks():
                a = blk[:, cols] * sw[lo:hi, None]
                a *= a
                sq_sum += a.T @ a
            ia = np.searchsorted(cols, iu[0][todo])
            ib = np.searchsorted(cols, iu[1][todo])
            cs = np.sqrt(n_top * np.maximum(sq_sum[ia, ib], 0.0))
            top[todo] = np.minimum(top[todo], cs)
            todo = _undecided(top, abs_sum, refine_above)
        self._exact(todo, iu[0], iu[1], w, None, top, n_top)
        return ContributionProfile(np.rint(support).astype(np.int64), abs_sum, top, n_top)

    def cross(
        self, v: np.ndarray, n_top: int, refine_above: float = _REFINE_ABOVE
    ) -> ContributionProfile:
        """Profile of ``Z' v`` (``q`` entries; as :func:`cross_profile_blocks` of ``(Z, v)``).

        The top-``n`` bound is tightened as in :meth:`gram`: ``n`` times the largest
        term ``max|z_j| max|v|``, then Cauchy-Schwarz, then exact, each only where open.
        """
        v = np.asarray(v, dtype=float)
        av_all = np.abs(v)
        abs_sum = self._abs_cross(av_all)
        support = self.col_support
        zero = np.flatnonzero(v == 0)
        if zero.size:
            support = support - self._nonzero_rows(zero).sum(axis=0)
        v_max = float(av_all.max()) if self.n else 0.0
        top = np.minimum(abs_sum, _largest_term_bound(n_top, self.col_max * v_max))
        todo = _undecided(top, abs_sum, refine_above)
        if todo.size:  # Cauchy-Schwarz on the open columns only
            sq_sum = np.zeros(todo.size)
            for lo, hi, blk in self._abs_blocks():
                a = blk[:, todo]
                av = av_all[lo:hi].astype(np.float32)
                sq_sum += (a * a).T @ (av * av)
            top[todo] = np.minimum(top[todo], np.sqrt(n_top * np.maximum(sq_sum, 0.0)))
            todo = _undecided(top, abs_sum, refine_above)
        cols = np.arange(self.q)
        self._exact(todo, cols, cols, None, v, top, n_top)
        return ContributionProfile(np.rint(support).astype(np.int64), abs_sum, top, n_top)


# The largest-term bound is computed from single-precision |z| (and sqrt(w)); widen it by
# more than their relative rounding so it stays an upper bound on the double-precision terms.
_BOUND_SLACK = 1e-5


def _largest_term_bound(n_top: int, largest: np.ndarray) -> np.ndarray:
    """``n`` times the largest term: the ``n`` largest ``|c_i|`` never sum to more."""
    return n_top * np.asarray(largest, dtype=float) * (1.0 + _BOUND_SLACK)
