"""An in-memory index of 128-bit patient digests: bulk lookup and append with numpy.

Why: the population registry (:mod:`healthfed.privacy.population`) resolves every row
of every request against every patient the node has seen -- a million rows at a large
site. A Python ``dict`` of hex strings costs seconds to build and to probe; this index
keeps the digests as ``(n, 2)`` ``uint64`` arrays (first and second 64 bits), sorted by
the first word, and answers a whole request with one ``searchsorted``. Equality is
always checked on both words; digests that share their first word (about one pair in
``2^64 / n^2``) are compared one by one, so every answer is exact.

A digest's *index* is its position in insertion order (what the cohort memory's bit
sets are made of); indices never change once given.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DigestIndex", "distinct_sorted", "first_occurrences"]


def first_occurrences(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct digests in order of first appearance, and each row's rank among them.

    ``digests`` is ``(n, 2)``; returns ``(distinct (m, 2), rank (n,))`` with
    ``distinct[rank[i]] == digests[i]``.
    """
    distinct, rank, _ = distinct_sorted(digests)
    return distinct, rank


def distinct_sorted(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`first_occurrences`, plus ``distinct``'s stable order by first word when it
    came for free (every digest distinct, the usual case), else ``None``.

    :meth:`DigestIndex.append` takes that order, so registering a request's new patients
    sorts them once, not twice.
    """
    n = digests.shape[0]
    if n == 0:
        return digests.reshape(0, 2), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    by_first = np.argsort(digests[:, 0], kind="stable")
    first = digests[by_first, 0]
    if not np.any(first[1:] == first[:-1]):  # the usual case: all distinct, keep their order
        return digests, np.arange(n, dtype=np.int64), by_first
    order = np.lexsort((np.arange(n), digests[:, 1], digests[:, 0]))  # ties: first row first
    d = digests[order]
    head = np.ones(n, dtype=bool)
    head[1:] = np.any(d[1:] != d[:-1], axis=1)
    group = np.cumsum(head) - 1  # group of each sorted row
    firsts = order[head]  # first row of each group (the smallest row number of the group)
    by_appearance = np.argsort(firsts, kind="stable")
    rank_of_group = np.empty_like(by_appearance)
    rank_of_group[by_appearance] = np.arange(by_appearance.size)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_of_group[group]
    return digests[firsts[by_appearance]], rank, None


def _is_stable_order(first: np.ndarray, order: np.ndarray) -> bool:
    """True when ``order`` is exactly ``argsort(first, kind="stable")``: in range, first
    words non-decreasing, row numbers increasing among equal ones (so no row twice)."""
    order = np.asarray(order)
    m = first.shape[0]
    if order.shape != (m,) or order.dtype.kind not in "iu":
        return False
    if m == 0:
        return True
    if order.min() < 0 or order.max() >= m:
        return False
    f = first[order]
    return bool(np.all((f[1:] > f[:-1]) | ((f[1:] == f[:-1]) & (order[1:] > order[:-1]))))


class DigestIndex:
    """Digests with their indices ``0 .. size-1``; see the module docstring."""

    def __init__(self) -> None:
        self._digests = np.zeros((0, 2), dtype=np.uint64)  # in index order
        self._order = np.zeros(0, dtype=np.int64)  # index order sorted by the first word
        self._first = np.zeros(0, dtype=np.uint64)  # the first words in that order

    @property
    def size(self) -> int:
        return int(self._digests.shape[0])

    def digests(self) -> np.ndarray:
        """All digests in index order (read-only view)."""
        view = self._digests.view()
        view.flags.writeable = False
        return view

    def append(self, digests: np.ndarray, order: np.ndarray | None = None) -> None:
        """Give the (new, distinct) ``digests`` the next indices, in their order.

        ``order``: the digests' stable order by first word if the caller has it
        (:func:`distinct_sorted`); checked in one pass, and the digests are sorted here
        when it is missing or is not that order.

        Only the new batch is sorted; it is merged into the stored order (a copy of
        the index, not a sort of it), so a request that brings a few new patients to
        a registry of millions costs a merge. The result is the stable sort of all
        digests by first word, as if sorted afresh: among equal first words, lower
        indices first (stored ones before new ones, new ones in their order).
        """
        digests = np.asarray(digests, dtype=np.uint64).reshape(-1, 2)
        m = digests.shape[0]
        if m == 0:
            return
        start = self.size
        if order is None or not _is_stable_order(digests[:, 0], order):
            order = np.argsort(digests[:, 0], kind="stable")
        new_order = np.asarray(order, dtype=np.int64)
        new_first = digests[new_order, 0]
        self._digests = np.concatenate([self._digests, digests])
        if start == 0:
            self._order, self._first = new_order, new_first
            return
        # Where each new digest lands: after the stored ones with the same first word.
        slots = np.searchsorted(self._first, new_first, side="right") + np.arange(m)
        stored = np.ones(start + m, dtype=bool)
        stored[slots] = False
        order = np.empty(start + m, dtype=np.int64)
        first = np.empty(start + m, dtype=np.uint64)
        order[stored], first[stored] = self._order, self._first
        order[slots], first[slots] = start + new_order, new_first
        self._order, self._first = order, first

    def lookup(self, digests: np.ndarray) -> np.ndarray:
        """Index of every row of ``digests`` (``(n, 2)``), ``-1`` where not stored."""
        digests = np.asarray(digests, dtype=np.uint64).reshape(-1, 2)
        out = np.full(digests.shape[0], -1, dtype=np.int64)
        if self.size == 0 or digests.shape[0] == 0:
            return out
        pos = np.searchsorted(self._first, digests[:, 0], side="left")
        inside = pos < self.size
        cand = self._order[np.minimum(pos, self.size - 1)]
        same_first = inside & (self._first[np.minimum(pos, self.size - 1)] == digests[:, 0])
        match = same_first & (self._digests[cand, 1] == digests[:, 1])
        out[match] = cand[match]
        # A stored digest with the same first word but another second one: look further.
        for i in np.flatnonzero(same_first & ~match):
            k = int(pos[i]) + 1
            while k < self.size and self._first[k] == digests[i, 0]:
                j = int(self._order[k])
                if self._digests[j, 1] == digests[i, 1]:
                    out[i] = j
                    break
                k += 1
        return out
