"""Patient populations: which datasets of a node hold the same patients.

A privacy budget and a differencing memory protect *patients*, not dataset names or
permits. The node therefore assigns every dataset to a **patient population** and
keys both its DP ledger (:mod:`healthfed.privacy.ledger`) and its cohort memory
(:mod:`healthfed.privacy.differencing`) by that population.

How a population is found
-------------------------
Every patient id the node ever saw in a request's data is stored once, as a keyed
hash (``sha256(key + ":" + id)``, the same form as the opt-out store's, with a
per-node random 256-bit key kept in this module's SQLite file in the node's state
folder), with a small integer index and the population it belongs to. A dataset
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
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.data.sql import quote_ident, sql_literal

__all__ = ["POPULATIONS_FILE", "PopulationRegistry", "bits_from_indices"]

POPULATIONS_FILE = "privacy_populations.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    hash TEXT PRIMARY KEY,
    idx INTEGER NOT NULL UNIQUE,
    population TEXT NOT NULL
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


def bits_from_indices(indices: Iterable[int]) -> int:
    """A Python ``int`` bit set with the given bit positions set (fast for many)."""
    idx = np.fromiter(indices, dtype=np.int64)
    if idx.size == 0:
        return 0
    flags = np.zeros(int(idx.max()) + 1, dtype=np.uint8)
    flags[idx] = 1
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


class PopulationRegistry:
    """The node's patient populations (keyed id hashes) in SQLite; see the module docstring.

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
        self._members: dict[str, tuple[int, str]] | None = None

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # --- reading ----------------------------------------------------------------------------
    def hash_sql(self, column_sql: str) -> str:
        """DuckDB expression of a column's keyed hash (the key never leaves the node)."""
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

    def _load(self) -> dict[str, tuple[int, str]]:
        if self._members is None:
            self._members = {
                str(h): (int(i), str(p))
                for h, i, p in self._con.execute("SELECT hash, idx, population FROM patients")
            }
        return self._members

    # --- resolving a request's data --------------------------------------------------------------
    def scan(self, con: Any, id_column: str, cohort_sql: str) -> tuple[list[str], np.ndarray]:
        """Keyed hashes of every row of ``data`` and whether each is in the cohort."""
        h = self.hash_sql(quote_ident(id_column))
        rows = con.execute(
            f"SELECT {h}, coalesce(({cohort_sql}), FALSE) FROM data"  # noqa: S608 - built SQL
        ).fetchall()
        return [str(r[0]) for r in rows], np.array([bool(r[1]) for r in rows], dtype=bool)

    def resolve(
        self,
        dataset: str,
        hashes: list[str],
        declared: str | None = None,
        on_merge: Callable[[str, str], None] | None = None,
    ) -> tuple[str, list[int]]:
        """The population of ``dataset`` holding ``hashes``, and each hash's bit index.

        Registers unseen hashes (new rows), joins and merges populations as the module
        docstring says. ``on_merge(old, new)`` re-keys the ledger and the memory.
        """
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                pop, idx = self._resolve(dataset, hashes, declared, on_merge)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                self._members = None
                raise
        return pop, idx

    def _resolve(
        self,
        dataset: str,
        hashes: list[str],
        declared: str | None,
        on_merge: Callable[[str, str], None] | None,
    ) -> tuple[str, list[int]]:
        members = self._load()
        found = {members[h][1] for h in set(hashes) if h in members}
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
            members = self._load()
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
        nxt = 1 + max((i for i, _ in members.values()), default=-1)
        new = []
        for h in dict.fromkeys(hashes):
            if h not in members:
                members[h] = (nxt, pop)
                new.append((h, nxt, pop))
                nxt += 1
        self._con.executemany("INSERT INTO patients VALUES (?, ?, ?)", new)
        return pop, [members[h][0] for h in hashes]

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
            self._con.execute("UPDATE patients SET population = ? WHERE population = ?", (pop, old))
            self._con.execute("UPDATE datasets SET population = ? WHERE population = ?", (pop, old))
            if on_merge is not None:
                on_merge(old, pop)
        if len(order) > 1:
            self._members = None
            self._load()
        return pop
