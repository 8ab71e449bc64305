"""Patient populations: which datasets of a node hold the same patients.

A privacy budget and a differencing memory protect *patients*, not dataset names or
permits. The node therefore assigns every dataset to a **patient population** and
keys both its DP ledger (:mod:`healthfed.privacy.ledger`) and its cohort memory
(:mod:`healthfed.privacy.differencing`) by that population.

How a population is found
-------------------------
Every patient id the node ever saw in a request's data is stored once, as a keyed
hash (the first 128 bits of ``sha256(key + ":" + id)``, the same form as the opt-out
store's, with a per-node random 256-bit key kept in this module's SQLite file in the
node's state folder), with a small integer index and the population it belongs to. A dataset
joins the population of any patient it shares (**id overlap**), the population its
descriptor names (``[dataset] population = "..."``, for datasets of the same
patients under different pseudonyms), and the population it was in before (a dataset
name never leaves its population, even when its file is replaced). When a dataset
links populations that were separate, they are merged into the oldest one and the
ledger's and the memory's rows follow (``on_merge``). A new population takes the
descriptor's population name, else the dataset's own name (so a ledger written
before populations existed, keyed by dataset name, carries over).

Why a copy cannot dodge it, and what can
----------------------------------------
Registering the same file (or a copy, a subset, a re-ordered or extended extract)
under a second name gives the same patient ids, hence the same hashes, hence the
same population: the second name shares the first one's budget and memory. Only the
site's data steward registers datasets (a researcher cannot), so the residual risk
is a steward registering the same patients **under different ids** (re-pseudonymised)
without naming the population: that copy gets a population of its own. Unrelated
datasets whose id spaces collide (two tables both numbered 1..n) are merged, which
fails closed (they share one budget). The hashes never leave the node and cannot be
reversed without the key; they are kept after an opt-out (the patient's index stays
in the memory's bit sets, which is what lets the memory see the opt-out).

How it stays cheap
------------------
A site's first request registers every patient (a million rows at a large site), and
every later request looks its rows up. Hashes are therefore stored in **batches**: the
new hashes of one request are one SQLite row (a blob of 16-byte digests in index
order, its first index and its population), written in the request's one
transaction, not one row per patient. In memory the node keeps every digest's first
64 bits sorted (a request's new digests are sorted once and merged in), so a
request's rows are found with one ``searchsorted`` and confirmed on all 128 bits;
the rare digests sharing their first 64 bits are compared one by one, so the answer
is exact. DuckDB computes the digests
as two ``UBIGINT`` columns in the same scan that evaluates the cohort filter. A store
written by the older one-row-per-patient form is converted on open (same hashes,
same indices).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.data.sql import quote_ident, sql_literal
from healthfed.errors import PrivacyError
from healthfed.privacy.digest_index import DigestIndex, distinct_sorted

__all__ = ["POPULATIONS_FILE", "PopulationRegistry", "bits_from_indices"]

POPULATIONS_FILE = "privacy_populations.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    hash TEXT PRIMARY KEY,
    idx INTEGER NOT NULL UNIQUE,
    population TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS patient_batches (
    start INTEGER PRIMARY KEY,
    population TEXT NOT NULL,
    digests BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS populations (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    merged_into TEXT
);
CREATE TABLE IF NOT EXISTS datasets (
    dataset TEXT PRIMARY KEY,
    population TEXT NOT NULL,
    ts REAL NOT NULL
);
"""


def bits_from_indices(indices: Iterable[int] | np.ndarray) -> int:
    """A Python ``int`` bit set with the given bit positions set (fast for many)."""
    if isinstance(indices, np.ndarray):
        idx = indices.astype(np.int64, copy=False).ravel()
    else:
        idx = np.fromiter(indices, dtype=np.int64)
    if idx.size == 0:
        return 0
    flags = np.zeros(int(idx.max()) + 1, dtype=np.uint8)
    flags[idx] = 1
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


class PopulationRegistry:
    """The node's patient populations (keyed id digests) in SQLite; see the module docstring.

    Parameters
    ----------
    path
        The SQLite file in the node's state folder, or ``None`` (in memory: ungoverned
        sandbox nodes only, it does not survive a restart).
    """

    def __init__(self, path: str | Path | None) -> None:
        self._lock = threading.RLock()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        target = ":memory:" if path is None else str(path)
        self._con = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA busy_timeout = 10000")
        self._con.executescript(_SCHEMA)
        row = self._con.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()
        if row is None:
            self._con.execute(
                "INSERT OR IGNORE INTO meta VALUES ('key', ?)", (secrets.token_hex(32),)
            )
            row = self._con.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()
        self._key = str(row[0])
        self._index: DigestIndex | None = None
        self._starts: list[int] = []  # first index of every batch, ascending
        self._batch_pops: list[str] = []  # the population of every batch
        self._convert_legacy()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # --- reading ----------------------------------------------------------------------------
    def hash_sql(self, column_sql: str) -> str:
        """DuckDB expression of a column's keyed hash (hex; the key never leaves the node)."""
        return f"sha256({sql_literal(self._key + ':')} || CAST({column_sql} AS VARCHAR))"

    def canonical(self, population: str) -> str:
        """The population ``population`` was merged into (itself if never merged)."""
        with self._lock:
            seen = set()
            while population not in seen:
                seen.add(population)
                row = self._con.execute(
                    "SELECT merged_into FROM populations WHERE id = ?", (population,)
                ).fetchone()
                if row is None or row[0] is None:
                    return population
                population = str(row[0])
            return population

    def population_of(self, dataset: str) -> str | None:
        with self._lock:
            row = self._con.execute(
                "SELECT population FROM datasets WHERE dataset = ?", (dataset,)
            ).fetchone()
        return None if row is None else self.canonical(str(row[0]))

    def _load(self) -> DigestIndex:
        if self._index is None:
            index = DigestIndex()
            starts, pops, blobs, expected = [], [], [], 0
            rows = self._con.execute(
                "SELECT start, population, digests FROM patient_batches ORDER BY start"
            )
            for start, pop, blob in rows:
                if int(start) != expected:
                    raise PrivacyError("the population store's patient batches are not contiguous")
                expected += len(blob) // 16
                starts.append(int(start))
                pops.append(str(pop))
                blobs.append(bytes(blob))
            index.append(np.frombuffer(b"".join(blobs), dtype="<u8").reshape(-1, 2))
            self._index, self._starts, self._batch_pops = index, starts, pops
        return self._index

    def _fresh(self) -> DigestIndex:
        """The index, re-read if another process sharing the file added or merged batches."""
        rows = self._con.execute(
            "SELECT start, population, length(digests) / 16 FROM patient_batches ORDER BY start"
        ).fetchall()
        index = self._load()
        end = int(rows[-1][0]) + int(rows[-1][2]) if rows else 0
        if end != index.size or len(rows) != len(self._starts):
            self._index = None
            index = self._load()
        self._batch_pops = [str(r[1]) for r in rows]
        return index

    def _populations_of(self, idx: np.ndarray) -> set[str]:
        """The populations holding the patients of indices ``idx`` (all stored)."""
        if idx.size == 0:
            return set()
        batch = np.searchsorted(np.asarray(self._starts), idx, side="right") - 1
        return {self._batch_pops[int(b)] for b in np.unique(batch)}

    # --- resolving a request's data --------------------------------------------------------------
    def scan(self, con: Any, id_column: str, cohort_sql: str) -> tuple[np.ndarray, np.ndarray]:
        """Keyed digests (``(n, 2)`` ``uint64``) of every row of ``data``, and who is in the cohort."""
        h = self.hash_sql(quote_ident(id_column))
        res = con.execute(
            "SELECT CAST(('0x' || substr(h, 1, 16)) AS UBIGINT) AS a, "  # noqa: S608 - built SQL
            "CAST(('0x' || substr(h, 17, 16)) AS UBIGINT) AS b, inside FROM "
            f"(SELECT {h} AS h, coalesce(({cohort_sql}), FALSE) AS inside FROM data)"
        ).fetchnumpy()
        cols = [res["a"], res["b"], res["inside"]]
        if any(np.ma.is_masked(c) for c in cols):
            raise PrivacyError(f"id column {id_column!r} holds missing ids; nothing released")
        digests = np.column_stack([np.asarray(cols[0]), np.asarray(cols[1])]).astype(np.uint64)
        return digests, np.asarray(cols[2], dtype=bool)

    def digest_ids(self, ids: Iterable[Any]) -> np.ndarray:
        """The keyed digests of patient ids computed in Python, as :meth:`scan` gives them."""
        words = []
        for i in ids:
            h = hashlib.sha256(f"{self._key}:{i}".encode()).hexdigest()
            words.append((int(h[:16], 16), int(h[16:32], 16)))
        return np.asarray(words, dtype=np.uint64).reshape(-1, 2)

    def resolve(
        self,
        dataset: str,
        digests: np.ndarray | Iterable[Any],
        declared: str | None = None,
        on_merge: Callable[[str, str], None] | None = None,
    ) -> tuple[str, np.ndarray]:
        """The population of ``dataset`` holding ``digests``, and each row's bit index.

        ``digests``: from :meth:`scan`, or a sequence of patient ids (hashed here).

        Registers unseen digests (new rows) as one batch, joins and merges populations
        as the module docstring says. ``on_merge(old, new)`` re-keys the ledger and the
        memory.
        """
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                pop, idx = self._resolve(dataset, digests, declared, on_merge)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                self._index = None
                raise
        return pop, idx

    def _resolve(
        self,
        dataset: str,
        digests: np.ndarray | Iterable[Any],
        declared: str | None,
        on_merge: Callable[[str, str], None] | None,
    ) -> tuple[str, np.ndarray]:
        if not isinstance(digests, np.ndarray):
            digests = self.digest_ids(digests)
        digests = np.asarray(digests, dtype=np.uint64).reshape(-1, 2)
        index = self._fresh()
        idx = index.lookup(digests)
        known = idx >= 0
        found = self._populations_of(idx[known])
        previous = self.population_of(dataset)
        if previous is not None:
            found.add(previous)
        if declared:
            if self._exists(declared):
                found.add(declared)
        found = {self.canonical(p) for p in found}
        if not found:
            pop = self._new_population(declared or dataset)
        else:
            pop = self._merge(found, on_merge)
        if declared and not self._exists(declared):
            self._con.execute(
                "INSERT INTO populations VALUES (?, ?, ?)", (declared, time.time(), pop)
            )
        self._con.execute(
            "INSERT INTO datasets VALUES (?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET "
            "population = excluded.population, ts = excluded.ts",
            (dataset, pop, time.time()),
        )
        if on_merge is not None and dataset != pop:
            on_merge(dataset, pop)  # rows keyed by the dataset's name (older ledgers) follow
        if not known.all():
            new, rank, order = distinct_sorted(digests[~known])
            start = index.size
            self._con.execute(
                "INSERT INTO patient_batches VALUES (?, ?, ?)",
                (start, pop, np.ascontiguousarray(new, dtype="<u8").tobytes()),
            )
            index.append(new, order)
            self._starts.append(start)
            self._batch_pops.append(pop)
            idx[~known] = start + rank
        return pop, idx

    def _exists(self, population: str) -> bool:
        return (
            self._con.execute("SELECT 1 FROM populations WHERE id = ?", (population,)).fetchone()
            is not None
        )

    def _new_population(self, name: str) -> str:
        pop, n = name, 1
        while self._exists(pop):
            n += 1
            pop = f"{name}#{n}"
        self._con.execute("INSERT INTO populations VALUES (?, ?, NULL)", (pop, time.time()))
        return pop

    def _merge(self, found: set[str], on_merge: Callable[[str, str], None] | None) -> str:
        rows = self._con.execute(
            f"SELECT id FROM populations WHERE id IN ({','.join('?' * len(found))}) "
            "ORDER BY created, id",
            sorted(found),
        ).fetchall()
        order = [str(r[0]) for r in rows] or sorted(found)
        pop = order[0]
        for old in order[1:]:
            self._con.execute("UPDATE populations SET merged_into = ? WHERE id = ?", (pop, old))
            self._con.execute(
                "UPDATE patient_batches SET population = ? WHERE population = ?", (pop, old)
            )
            self._con.execute("UPDATE datasets SET population = ? WHERE population = ?", (pop, old))
            self._batch_pops = [pop if p == old else p for p in self._batch_pops]
            if on_merge is not None:
                on_merge(old, pop)
        return pop

    def _convert_legacy(self) -> None:
        """Move an older store's one-row-per-patient hashes into batches (same indices)."""
        with self._lock:
            if self._con.execute("SELECT 1 FROM patients LIMIT 1").fetchone() is None:
                return
            self._con.execute("BEGIN IMMEDIATE")
            try:
                rows = self._con.execute(
                    "SELECT hash, idx, population FROM patients ORDER BY idx"
                ).fetchall()
                base = self._con.execute(
                    "SELECT coalesce(max(start), -1) FROM patient_batches"
                ).fetchone()
                if int(base[0]) >= 0 or [int(r[1]) for r in rows] != list(range(len(rows))):
                    raise PrivacyError("cannot convert the population store: indices not 0..n-1")
                lo = 0
                for hi in range(1, len(rows) + 1):
                    if hi == len(rows) or rows[hi][2] != rows[lo][2]:
                        words = [(int(h[:16], 16), int(h[16:32], 16)) for h, _, _ in rows[lo:hi]]
                        blob = np.asarray(words, dtype="<u8").tobytes()
                        self._con.execute(
                            "INSERT INTO patient_batches VALUES (?, ?, ?)", (lo, rows[lo][2], blob)
                        )
                        lo = hi
                self._con.execute("DELETE FROM patients")
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
