"""Differencing protection for the threshold (non-DP) path, and the (n, k) dominance rule.

Differencing
------------
Two releases over cohorts that differ by a few patients reveal those patients by
subtraction ("all" vs "all minus one"). The node therefore remembers, per permit
and dataset, every cohort it released statistics for (its definition and its size
at release time, in the privacy ledger's SQLite file) and refuses a new cohort B if,
for any earlier cohort A,

* ``|A \\ B|`` or ``|B \\ A|`` (evaluated now, in DuckDB, from both definitions), or
* the change of A's own size since it was released (patients added, or removed by an
  opt-out, between two releases of "the same" cohort)

lies in ``1 .. min_subset - 1``. All earlier cohorts are checked in one DuckDB scan.

A cohort is defined by a computation's row filter: the ``where`` conditions of the
computations that take one (``healthfed.compute.dp_stats``: equality on a categorical
or binary variable, a closed range on a numeric one) and the ``holdout`` split of the
model computations (a training part with fraction 0.5 and one with 0.5001 differ by
a handful of patients). Definitions are canonical JSON; SQL is regenerated from them
with quoted identifiers and escaped literals, never taken from a request.

Dominance
---------
:func:`check_dominance` is the (n, k) rule of statistical disclosure control for
released sums: a sum is refused when its ``n`` largest contributions (absolute
values) make up more than ``k`` % of the total of absolute contributions.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthfed.data.sql import (
    MAX_WHERE,
    holdout_sql,
    validate_where,
    where_sql,
)
from healthfed.errors import ThresholdViolation
from healthfed.policy import SitePolicy

__all__ = [
    "CohortKey",
    "CohortMemory",
    "MAX_WHERE",
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

    Understands ``where`` (see :func:`validate_where`) and ``holdout``
    (``{"fraction", "seed", "part"}`` of the model computations).
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
    if not where and not holdout:
        return None
    definition: dict[str, Any] = {}
    sql = []
    if where:
        definition["where"] = where
        sql.append(f"({where_sql(where, descriptor)})")
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
CREATE TABLE IF NOT EXISTS cohorts (
    dataset TEXT NOT NULL,
    permit TEXT NOT NULL,
    digest TEXT NOT NULL,
    definition TEXT NOT NULL,
    sql TEXT NOT NULL,
    size INTEGER NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (dataset, permit, digest)
);
"""

EVERYONE = CohortKey("{}", "TRUE")


class CohortMemory:
    """Per permit and dataset: the cohorts statistics were released for, and their sizes."""

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

    def earlier(self, dataset: str, permit: str) -> list[tuple[CohortKey, int]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT definition, sql, size FROM cohorts WHERE dataset = ? AND permit = ? "
                "ORDER BY ts",
                (dataset, permit),
            ).fetchall()
        return [(CohortKey(d, s), int(n)) for d, s, n in rows]

    def check(
        self, con: Any, dataset: str, permit: str, cohort: CohortKey | None, min_subset: int
    ) -> int:
        """Refuse (``ThresholdViolation``) a cohort too close to an earlier one; returns its size."""
        b = cohort or EVERYONE
        earlier = self.earlier(dataset, permit)
        exprs = [f"count(*) FILTER (WHERE {b.sql})"]
        for a, _ in earlier:
            exprs.append(f"count(*) FILTER (WHERE {a.sql})")
            exprs.append(f"count(*) FILTER (WHERE ({a.sql}) AND ({b.sql}))")
        row = con.execute(f"SELECT {', '.join(exprs)} FROM data").fetchone()
        size_b = int(row[0])
        for i, (a, size_then) in enumerate(earlier):
            size_a, both = int(row[1 + 2 * i]), int(row[2 + 2 * i])
            checks = {
                "patients in the earlier cohort but not in this one": size_a - both,
                "patients in this cohort but not in the earlier one": size_b - both,
                "patients who joined or left the earlier cohort since it was released": abs(
                    size_a - size_then
                ),
            }
            for what, d in checks.items():
                if 0 < d < min_subset:
                    raise ThresholdViolation(
                        "differencing protection: this cohort "
                        f"({_describe(b)}) differs from one released earlier under the same "
                        f"permit ({_describe(a)}) by fewer than min_subset = {min_subset} "
                        f"patients ({what}); refused"
                    )
        return size_b

    def remember(self, dataset: str, permit: str, cohort: CohortKey | None, size: int) -> None:
        c = cohort or EVERYONE
        with self._lock:
            self._con.execute(
                "INSERT INTO cohorts VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dataset, permit, digest) DO UPDATE SET size = excluded.size, "
                "ts = excluded.ts",
                (dataset, permit, c.digest, c.definition, c.sql, int(size), time.time()),
            )


def _describe(c: CohortKey) -> str:
    return "all patients" if c.definition == "{}" else c.definition


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
