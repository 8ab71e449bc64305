"""Differencing protection for exact (non-DP) releases, and the (n, k) dominance rule.

Differencing
------------
Two releases over cohorts that differ by a few patients reveal those patients by
subtraction ("all" vs "all minus one"), whichever permit, dataset name or computation
asked, and whether the difference came from a filter, an opt-out or new rows. The
node therefore remembers, **per patient population**
(:mod:`healthfed.privacy.population`), the exact **set of patients** behind every
exact release (a bit set over the population's keyed id hashes: the request's
effective rows, i.e. its ``where``/``holdout`` filter over the ``data`` view after
opt-outs), in SQLite in the node's state folder, so it survives restarts. A new
cohort ``B`` is refused when

* **pairs**: for an earlier cohort ``A``, ``|A \\ B|`` or ``|B \\ A|`` lies in
  ``1 .. min_subset - 1`` (this is conservative: it refuses even when neither is a
  subset of the other);
* **triples**: for two earlier cohorts ``A``, ``C``, some union of the Venn atoms of
  ``A``, ``B``, ``C`` with ``1 .. min_subset - 1`` patients has an indicator in the
  linear span of the three released indicators, i.e. its count follows from the three
  counts -- e.g. ``age <= 50``, ``age >= 50`` and "all": their pairwise differences
  are large but ``|A| + |C| - |all|`` is the number of patients aged exactly 50;
* **any combination**: with all of the population's cohorts, some set of
  ``1 .. min_subset - 1`` patients has its count follow from theirs by adding and
  subtracting (four ``sum`` requests, {age in [30, 70.5], female} + {same, male} -
  {age in [30, 70], died} - {same, survived}, give the one patient aged in
  ``(70, 70.5]``); decided exactly by :mod:`healthfed.privacy.span_audit`, whose
  work ``max_cohorts_per_population`` bounds.

What it does not cover: cells *inside* one release (a table's cells, subgroups of
``subgroup_metrics``: small-cell suppression, the cell key method and the release
invariant apply), rows a computation drops for missing values (the effective row set
here is the filter over ``data``), and cohorts of another population. Cost: the pair
check is linear in the number of remembered cohorts ``m``, the triple check
``O(m^2 N)`` bit operations (vectorised), for ``N`` patients the node has seen, the
audit an SVD over the cohorts' atoms (0.2 s for 300 interval cohorts of 100,000
patients).

A cohort's *definition* (:func:`cohort_of`: ``where`` conditions of the statistics
computations and the ``holdout`` split of the model computations) gives the SQL of
its filter; definitions are canonical JSON, SQL is regenerated from them with quoted
identifiers and escaped literals, never taken from a request.

Dominance
---------
:func:`check_dominance` is the (n, k) rule of statistical disclosure control for
released sums: a sum is refused when its ``n`` largest contributions (absolute
values) make up more than ``k`` % of the total of absolute contributions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.data.sql import (
    MAX_WHERE,
    holdout_sql,
    validate_where,
    where_sql,
)
from healthfed.errors import ThresholdViolation
from healthfed.policy import SitePolicy
from healthfed.privacy.span_audit import disclosed_small_set

__all__ = [
    "EVERYONE",
    "CohortKey",
    "CohortMemory",
    "MAX_WHERE",
    "Released",
    "check_dominance",
    "cohort_of",
    "validate_where",
    "where_sql",
]


@dataclass(frozen=True)
class CohortKey:
    """A cohort's canonical definition and the SQL predicate that selects it."""

    definition: str  # canonical JSON
    sql: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.definition.encode()).hexdigest()[:16]


def cohort_of(params: dict[str, Any], descriptor: Any) -> CohortKey | None:
    """The cohort a request's (validated) parameters select, or ``None`` for "everyone".

    Understands ``where`` (see :func:`validate_where`), ``holdout``
    (``{"fraction", "seed", "part"}`` of the model computations) and ``subset``
    (``{variable: level}`` of the survival computations). A table's own cells
    (``count``'s level, a crosstab's rows) are cells of the cohort, not cohorts.
    """
    if not isinstance(params, dict):
        return None
    where = params.get("where") or {}
    if not isinstance(where, dict):
        # Model computations keep the SQL they derived from ``holdout`` under
        # ``where`` (built by their own validate, never taken from the request);
        # the ``holdout`` entry describes that cohort.
        where = {}
    holdout = params.get("holdout") or None
    subset = params.get("subset") or {}
    if not isinstance(subset, dict):
        subset = {}
    if not where and not holdout and not subset:
        return None
    definition: dict[str, Any] = {}
    sql = []
    if where:
        definition["where"] = where
        sql.append(f"({where_sql(where, descriptor)})")
    if subset:
        # The survival computations' ``{variable: level}`` subset (validated by them).
        definition["subset"] = {str(k): str(v) for k, v in sorted(subset.items())}
        sql.append(f"({where_sql(definition['subset'], descriptor)})")
    if holdout:
        h = {
            "fraction": float(holdout["fraction"]),
            "seed": int(holdout.get("seed", 0)),
            "part": str(holdout.get("part", "train")),
        }
        definition["holdout"] = h
        sql.append(f"({holdout_sql(descriptor, h)})")
    return CohortKey(json.dumps(definition, sort_keys=True), " AND ".join(sql))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS released_sets (
    population TEXT NOT NULL,
    digest TEXT NOT NULL,
    bits BLOB NOT NULL,
    size INTEGER NOT NULL,
    definition TEXT NOT NULL,
    dataset TEXT NOT NULL,
    permit TEXT NOT NULL,
    computation TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (population, digest)
);
"""

EVERYONE = CohortKey("{}", "TRUE")
_CHUNK = 1 << 15  # patients per block of the vectorised triple check


@dataclass(frozen=True)
class Released:
    """A cohort the node released exact aggregates for: its patients as a bit set."""

    bits: int
    size: int
    definition: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(_to_bytes(self.bits)).hexdigest()


def _to_bytes(bits: int) -> bytes:
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


class CohortMemory:
    """Per patient population: the patient sets exact aggregates were released for.

    Parameters
    ----------
    path
        SQLite file in the node's state folder, or ``None`` (in memory; sandbox nodes).
    """

    def __init__(self, path: str | Path | None) -> None:
        self._lock = threading.RLock()
        target = ":memory:" if path is None else str(path)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA busy_timeout = 10000")
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def earlier(self, population: str) -> list[Released]:
        """The population's remembered cohorts, oldest first."""
        with self._lock:
            rows = self._con.execute(
                "SELECT bits, size, definition FROM released_sets WHERE population = ? "
                "ORDER BY ts, digest",
                (population,),
            ).fetchall()
        return [Released(int.from_bytes(b, "little"), int(n), str(d)) for b, n, d in rows]

    def check(
        self,
        population: str,
        cohort: Released,
        min_subset: int,
        max_cohorts: int | None = None,
    ) -> None:
        """Refuse (``ThresholdViolation``) a cohort that would isolate a few patients.

        Pairs and triples first (their refusals name the cohorts), then the exact
        audit over all of the population's cohorts
        (:func:`~healthfed.privacy.span_audit.disclosed_small_set`); ``max_cohorts``
        distinct cohorts at most (the policy's ``max_cohorts_per_population``).
        """
        earlier = self.earlier(population)
        b = cohort.bits
        if any(a.bits == b for a in earlier):
            # The very same patients were released before (and every later cohort was
            # checked against them): a repeat adds nothing, e.g. an iterative fit's rounds.
            return
        for a in earlier:
            if 0 < (a.bits & ~b).bit_count() < min_subset or 0 < (b & ~a.bits).bit_count() < (
                min_subset
            ):
                raise ThresholdViolation(
                    f"differencing protection: this cohort ({_describe(cohort.definition)}) "
                    f"differs from one released earlier for the same patients "
                    f"({_describe(a.definition)}; any permit or dataset name of population "
                    f"{population!r}) by fewer than min_subset = {min_subset} patients who "
                    "joined or left it (a filter, opt-outs or new rows); refused"
                )
        pair = _isolating_pair(earlier, cohort, min_subset)
        if pair is not None:
            raise ThresholdViolation(
                f"differencing protection: this cohort ({_describe(cohort.definition)}) "
                f"combined with two released earlier ({_describe(pair[0].definition)}; "
                f"{_describe(pair[1].definition)}) gives the count of fewer than "
                f"min_subset = {min_subset} patients (overlapping cohorts); refused"
            )
        if max_cohorts is not None and len(earlier) >= max_cohorts:
            raise ThresholdViolation(
                f"differencing protection: population {population!r} already has "
                f"{len(earlier)} distinct cohorts with exact releases, the site's "
                f"max_cohorts_per_population = {max_cohorts}; a new cohort is refused "
                "(repeats of released cohorts are still answered)"
            )
        found = disclosed_small_set([a.bits for a in earlier] + [b], min_subset)
        if found is not None and found.unverifiable:
            raise ThresholdViolation(
                f"differencing protection: this cohort ({_describe(cohort.definition)}) "
                f"and the {len(earlier)} released earlier for population {population!r} "
                "leave too many small groups of patients to verify that no combination "
                "isolates a few of them; refused"
            )
        if found is not None:
            raise ThresholdViolation(
                f"differencing protection: this cohort ({_describe(cohort.definition)}) "
                f"combined with {found.cohorts - 1} released earlier for population "
                f"{population!r} gives, by adding and subtracting their counts, the count "
                f"of {found.patients} patient(s), fewer than min_subset = {min_subset} "
                "(a combination of several cohorts); refused"
            )

    def admit(
        self,
        population: str,
        cohort: Released,
        min_subset: int,
        dataset: str,
        permit: str,
        computation: str,
        max_cohorts: int | None = None,
    ) -> None:
        """:meth:`check` and :meth:`remember` in one transaction.

        The cohort is remembered when it is admitted, before the computation runs, so
        two concurrent requests (threads or node processes sharing the state folder)
        cannot both pass against a memory that holds neither; a cohort whose release
        then fails stays remembered, which only makes later checks stricter (fail
        closed).
        """
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self.check(population, cohort, min_subset, max_cohorts)
                self.remember(population, cohort, dataset, permit, computation)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def remember(
        self, population: str, cohort: Released, dataset: str, permit: str, computation: str
    ) -> None:
        with self._lock:
            self._con.execute(
                "INSERT OR IGNORE INTO released_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    population,
                    cohort.digest,
                    _to_bytes(cohort.bits),
                    int(cohort.size),
                    cohort.definition,
                    dataset,
                    permit,
                    computation,
                    time.time(),
                ),
            )

    def rekey(self, old: str, new: str) -> None:
        """Move ``old``'s cohorts to population ``new`` (populations merged)."""
        with self._lock:
            self._con.execute(
                "UPDATE OR IGNORE released_sets SET population = ? WHERE population = ?",
                (new, old),
            )
            self._con.execute("DELETE FROM released_sets WHERE population = ?", (old,))


def _matrix(sets: list[int], n_bits: int) -> np.ndarray:
    """0/1 float32 rows of the bit sets (``n_bits`` columns)."""
    n_bytes = (n_bits + 7) // 8
    raw = b"".join(s.to_bytes(n_bytes, "little") for s in sets)
    flat = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    return flat.reshape(len(sets), n_bytes * 8).astype(np.float32)


def _isolating_pair(
    earlier: list[Released], cohort: Released, min_subset: int
) -> tuple[Released, Released] | None:
    """Two earlier cohorts that with ``cohort`` give a small set's count, or None.

    Venn atom sizes of every pair (A, C) with B are computed at once from the
    intersection counts (block matrix products); only pairs with an atom of
    ``1 .. min_subset-1`` patients get the exact span test (:func:`_derivable`).
    """
    m = len(earlier)
    if m < 2 or min_subset <= 1:
        return None
    n_bits = max([cohort.bits.bit_length(), *(a.bits.bit_length() for a in earlier)], default=0)
    if n_bits == 0:
        return None
    G = np.zeros((m, m))
    H = np.zeros((m, m))
    gb = np.zeros(m)
    for lo in range(0, n_bits, _CHUNK):
        width = min(_CHUNK, n_bits - lo)
        mask = (1 << width) - 1
        M = _matrix([(a.bits >> lo) & mask for a in earlier], width)
        bvec = _matrix([(cohort.bits >> lo) & mask], width)[0]
        G += M @ M.T
        MB = M * bvec
        H += MB @ M.T
        gb += MB.sum(axis=1)
    s = np.diag(G).copy()
    sb = float(cohort.size)
    abc = H
    atoms = [
        abc,
        gb[:, None] - abc,  # A and B, not C
        gb[None, :] - abc,  # C and B, not A
        G - abc,  # A and C, not B
        s[:, None] - G - gb[:, None] + abc,  # A only
        s[None, :] - G - gb[None, :] + abc,  # C only
        sb - gb[:, None] - gb[None, :] + abc,  # B only
    ]
    small = np.zeros((m, m), dtype=bool)
    for at in atoms:
        small |= (at > 0.5) & (at < min_subset - 0.5)
    small = np.triu(small, k=1)
    for i, j in zip(*np.nonzero(small), strict=True):
        sizes = [int(round(float(at[i, j]))) for at in atoms]
        if _derivable(sizes, min_subset):
            return earlier[int(i)], earlier[int(j)]
    return None


# Membership of the atoms (order as in ``_isolating_pair``) in A, C and B.
_IN_A = np.array([1, 1, 0, 1, 1, 0, 0], dtype=float)
_IN_C = np.array([1, 0, 1, 1, 0, 1, 0], dtype=float)
_IN_B = np.array([1, 1, 1, 0, 0, 0, 1], dtype=float)


def _derivable(sizes: list[int], min_subset: int) -> bool:
    """Whether some union of atoms with 1..min_subset-1 patients follows from |A|, |C|, |B|."""
    nonempty = [k for k, n in enumerate(sizes) if n > 0]
    R = np.stack([_IN_A[nonempty], _IN_C[nonempty], _IN_B[nonempty]])
    rank = np.linalg.matrix_rank(R)
    small = [pos for pos, k in enumerate(nonempty) if sizes[k] < min_subset]
    for r in range(1, len(small) + 1):
        for combo in itertools.combinations(small, r):
            total = sum(sizes[nonempty[p]] for p in combo)
            if not 0 < total < min_subset:
                continue
            v = np.zeros(len(nonempty))
            v[list(combo)] = 1.0
            if np.linalg.matrix_rank(np.vstack([R, v])) == rank:
                return True
    return False


def _describe(definition: str) -> str:
    return "all patients" if definition == "{}" else definition


def check_dominance(values: Any, policy: SitePolicy, what: str = "sum") -> None:
    """The (n, k) dominance rule; raises ``ThresholdViolation`` naming it.

    ``values`` are the individual contributions (one per patient) to a sum.
    """
    import numpy as np

    x = np.abs(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    total = float(x.sum())
    if total <= 0:
        return
    n, k = int(policy.dominance_n), float(policy.dominance_k)
    top = float(np.sort(x)[::-1][:n].sum())
    if top > k / 100.0 * total:
        raise ThresholdViolation(
            f"dominance rule ({n}, {k:g}): the {n} largest contribution(s) make up more than "
            f"{k:g} % of the {what}; refused"
        )
