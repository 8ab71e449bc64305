"""The node's privacy-budget ledger: what every differentially private release cost.

One SQLite file per node (``<state_dir>/privacy_ledger.sqlite``) records every DP
release the node made, keyed by **patient population** and **permit** (``"-"`` for an
ungoverned sandbox request without a permit). The population
(:mod:`healthfed.privacy.population`) is what two dataset names of the same patients
share, so a second name or a copy of the file gets no fresh budget; the ledger's
``dataset`` column holds that key (a population first seen as dataset ``d`` is called
``d``, so ledgers written per dataset name carry over). It survives restarts; a
per-permit budget can only be reset with an audit record written first (fail closed:
no audit, no reset), and a reset never deletes a charge, it starts a new *epoch* for
that key.

Composition rule (documented site policy)
-----------------------------------------
Each release records ``(ε_i, δ_i, ρ_i)``:

* a pure ε-DP release (Laplace mechanism) has ``δ_i = 0`` and ``ρ_i = ε_i² / 2``
  (ε-DP implies (ε²/2)-zCDP, Bun & Steinke 2016, Prop. 1.4);
* a Gaussian release is ``ρ_i``-zCDP (OpenDP's privacy map); it is reported at the
  site's ``δ = policy.dp_delta`` as ``ε_i = ρ_i + 2 sqrt(ρ_i ln(1/δ))``
  (Bun & Steinke 2016, Prop. 1.3) and ``δ_i = δ``.

The spent budget of a key is the tighter of two accountants that are both valid
for adaptive sequences of releases:

* **basic composition**: ``(Σ ε_i, Σ δ_i)``, used only while ``Σ δ_i <= δ``;
* **zCDP composition**: ``ρ = Σ ρ_i``, converted to ``(ρ + 2 sqrt(ρ ln(1/δ)), δ)``.

``spent ε = min`` of the two (both bound the same sequence, so the smaller one is a
valid guarantee), always at ``δ <= policy.dp_delta``. A new release is admitted only
if its own ε is ``<= dp_epsilon_per_request`` and the spent ε *after* it is
``<= dp_epsilon_per_permit`` on its population, and the population's **lifetime** ε
over all permits, dataset names and epochs (a reset does not restore it) stays
``<= dp_epsilon_per_dataset`` (``0``: no lifetime cap). The check and the charge happen in one SQLite
transaction (``reserve``), so concurrent requests cannot overspend; a reservation of
a request that then released nothing is cancelled (``cancel``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthfed.errors import BudgetExceeded, PrivacyError
from healthfed.policy import SitePolicy

__all__ = [
    "NO_PERMIT",
    "Charge",
    "PrivacyLedger",
    "Spent",
    "compose",
    "rho_for_epsilon",
    "zcdp_epsilon",
]

NO_PERMIT = "-"
LEDGER_FILE = "privacy_ledger.sqlite"
_TOL = 1e-9


def zcdp_epsilon(rho: float, delta: float) -> float:
    """ε of ``(ε, δ)``-DP implied by ``ρ``-zCDP (Bun & Steinke 2016, Prop. 1.3)."""
    if rho <= 0:
        return 0.0
    return float(rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta)))


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """Largest ``ρ`` whose :func:`zcdp_epsilon` at ``delta`` is ``<= epsilon``."""
    L = math.log(1.0 / delta)
    return float((math.sqrt(L + epsilon) - math.sqrt(L)) ** 2)


@dataclass(frozen=True)
class Charge:
    """The privacy cost of one release: ``ε``, ``δ`` and the zCDP ``ρ``."""

    epsilon: float
    delta: float
    rho: float
    mechanism: str = "laplace"

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta", "rho"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise PrivacyError(f"privacy cost {name} must be finite and >= 0, got {v!r}")

    @classmethod
    def pure(cls, epsilon: float, mechanism: str = "laplace") -> Charge:
        """A pure ε-DP release (``ρ = ε²/2``)."""
        return cls(float(epsilon), 0.0, float(epsilon) ** 2 / 2.0, mechanism)

    @classmethod
    def zcdp(cls, rho: float, delta: float, mechanism: str = "gaussian") -> Charge:
        """A ``ρ``-zCDP release reported at ``delta``."""
        return cls(zcdp_epsilon(rho, delta), float(delta), float(rho), mechanism)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "mechanism": self.mechanism,
        }


@dataclass(frozen=True)
class Spent:
    """Composed cost of a sequence of releases (see the module docstring)."""

    epsilon: float
    delta: float
    rho: float
    releases: int
    accountant: str


def compose(charges: Iterable[Charge], delta: float) -> Spent:
    """Compose ``charges`` under the documented rule, reported at ``delta``."""
    cs = list(charges)
    if not cs:
        return Spent(0.0, 0.0, 0.0, 0, "none")
    eps_basic = math.fsum(c.epsilon for c in cs)
    delta_basic = math.fsum(c.delta for c in cs)
    rho = math.fsum(c.rho for c in cs)
    eps_z = zcdp_epsilon(rho, delta)
    if delta_basic <= delta * (1 + 1e-12) and eps_basic <= eps_z:
        return Spent(eps_basic, delta_basic, rho, len(cs), "basic")
    return Spent(eps_z, delta, rho, len(cs), "zcdp")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    dataset TEXT NOT NULL,
    permit TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    request_id TEXT,
    computation TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    rho REAL NOT NULL,
    mechanism TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'charged', 'cancelled'))
);
CREATE INDEX IF NOT EXISTS charges_key ON charges (dataset, permit, epoch);
CREATE TABLE IF NOT EXISTS epochs (
    dataset TEXT NOT NULL,
    permit TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (dataset, permit, epoch)
);
"""


class PrivacyLedger:
    """Per-node record of DP releases per patient population and permit, in SQLite.

    Parameters
    ----------
    path
        The SQLite file (created with its folder), or ``None`` for an in-memory
        ledger (ungoverned sandbox nodes only: it does not survive a restart).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.RLock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        else:
            target = ":memory:"
        self._con = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA busy_timeout = 10000")
        if self.path is not None:
            self._con.execute("PRAGMA journal_mode = WAL")
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # --- reading -------------------------------------------------------------------
    def _epoch(self, dataset: str, permit: str) -> int:
        row = self._con.execute(
            "SELECT max(epoch) FROM epochs WHERE dataset = ? AND permit = ?", (dataset, permit)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _lifetime(self, population: str) -> list[Charge]:
        """Every live (reserved or charged) charge on ``population``, of every epoch."""
        rows = self._con.execute(
            "SELECT epsilon, delta, rho, mechanism FROM charges "
            "WHERE dataset = ? AND status != 'cancelled'",
            (population,),
        ).fetchall()
        return [Charge(e, d, r, m) for e, d, r, m in rows]

    def _charges(self, dataset: str, permit: str | None) -> list[Charge]:
        """Live (reserved or charged) charges of the current epoch(s)."""
        rows = self._con.execute(
            "SELECT c.epsilon, c.delta, c.rho, c.mechanism, c.permit, c.epoch FROM charges c "
            "WHERE c.dataset = ? AND c.status != 'cancelled'"
            + (" AND c.permit = ?" if permit is not None else ""),
            (dataset, permit) if permit is not None else (dataset,),
        ).fetchall()
        epochs: dict[str, int] = {}
        out = []
        for eps, delta, rho, mech, p, epoch in rows:
            if p not in epochs:
                epochs[p] = self._epoch(dataset, p)
            if int(epoch) == epochs[p]:
                out.append(Charge(eps, delta, rho, mech))
        return out

    def spent(self, dataset: str, permit: str | None = NO_PERMIT, delta: float = 1e-6) -> Spent:
        """Composed cost on population ``dataset`` under ``permit`` (``None``: all permits)."""
        with self._lock:
            return compose(self._charges(dataset, permit), delta)

    def lifetime(self, population: str, delta: float = 1e-6) -> Spent:
        """Composed cost on ``population`` over all permits and epochs (the lifetime cap's)."""
        with self._lock:
            return compose(self._lifetime(population), delta)

    def rekey(self, old: str, new: str) -> None:
        """Move ``old``'s charges and epochs to population ``new`` (populations merged).

        Charges keep their epoch numbers; where ``new`` already started a later epoch
        for the same permit, ``old``'s charges of earlier epochs leave that permit's
        budget but stay in the lifetime total (which the merged population shares).
        """
        with self._lock:
            self._con.execute("UPDATE charges SET dataset = ? WHERE dataset = ?", (new, old))
            self._con.execute(
                "UPDATE OR IGNORE epochs SET dataset = ? WHERE dataset = ?", (new, old)
            )

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT DISTINCT dataset, permit FROM charges UNION "
                "SELECT DISTINCT dataset, permit FROM epochs ORDER BY 1, 2"
            ).fetchall()
        return [(str(d), str(p)) for d, p in rows]

    def history(self) -> list[dict[str, Any]]:
        """Every charge row (including cancelled and earlier epochs), oldest first."""
        with self._lock:
            cur = self._con.execute("SELECT * FROM charges ORDER BY ts, id")
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def summary(self, policy: SitePolicy | None = None) -> Any:
        """pandas DataFrame: population, permit, releases, spent ε, δ, ρ, budget, remaining ε.

        ``lifetime_epsilon`` is the population's ε over all permits and epochs, against
        the site's ``dp_epsilon_per_dataset`` (``lifetime_budget``; 0: none).
        """
        import pandas as pd

        policy = policy or SitePolicy()
        rows = []
        for dataset, permit in self.keys():
            s = self.spent(dataset, permit, policy.dp_delta)
            rows.append(
                {
                    "population": dataset,
                    "permit": permit,
                    "releases": s.releases,
                    "epsilon_spent": s.epsilon,
                    "delta": s.delta,
                    "rho": s.rho,
                    "accountant": s.accountant,
                    "epsilon_budget": float(policy.dp_epsilon_per_permit),
                    "epsilon_remaining": max(0.0, float(policy.dp_epsilon_per_permit) - s.epsilon),
                    "lifetime_epsilon": self.lifetime(dataset, policy.dp_delta).epsilon,
                    "lifetime_budget": float(policy.dp_epsilon_per_dataset),
                }
            )
        cols = [
            "population",
            "permit",
            "releases",
            "epsilon_spent",
            "delta",
            "rho",
            "accountant",
            "epsilon_budget",
            "epsilon_remaining",
            "lifetime_epsilon",
            "lifetime_budget",
        ]
        return pd.DataFrame(rows, columns=cols)

    # --- admitting and charging -------------------------------------------------------
    def check(self, dataset: str, permit: str, charge: Charge, policy: SitePolicy) -> Spent:
        """Raise :class:`BudgetExceeded` if ``charge`` would break a cap; else the new total."""
        with self._lock:
            return self._check(dataset, permit, charge, policy)

    def _check(self, dataset: str, permit: str, charge: Charge, policy: SitePolicy) -> Spent:
        delta = float(policy.dp_delta)
        if charge.delta > delta * (1 + 1e-12):
            raise BudgetExceeded(
                f"the release's δ = {charge.delta:.3g} exceeds the site's dp_delta = {delta:.3g}"
            )
        if charge.epsilon > float(policy.dp_epsilon_per_request) + _TOL:
            raise BudgetExceeded(
                f"the request asks for ε = {charge.epsilon:.4g}; this site allows at most "
                f"ε = {policy.dp_epsilon_per_request:g} per request (dp_epsilon_per_request)"
            )
        before = compose(self._charges(dataset, permit), delta)
        after = compose([*self._charges(dataset, permit), charge], delta)
        cap = float(policy.dp_epsilon_per_permit)
        if after.epsilon > cap + _TOL:
            raise BudgetExceeded(
                f"privacy budget exceeded on patient population {dataset!r} under permit "
                f"{permit!r}: "
                f"spent ε = {before.epsilon:.4g} of {cap:g} (dp_epsilon_per_permit); this "
                f"release (ε = {charge.epsilon:.4g}) would bring it to {after.epsilon:.4g}"
            )
        ds_cap = float(policy.dp_epsilon_per_dataset)
        if ds_cap > 0:
            total = compose([*self._lifetime(dataset), charge], delta)
            if total.epsilon > ds_cap + _TOL:
                raise BudgetExceeded(
                    f"lifetime privacy budget of patient population {dataset!r} exceeded "
                    f"(over every permit and every dataset name of these patients): this "
                    f"release would bring it to ε = {total.epsilon:.4g} of {ds_cap:g} "
                    f"(dp_epsilon_per_dataset); refused"
                )
        return after

    def reserve(
        self,
        dataset: str,
        permit: str | None,
        charge: Charge,
        policy: SitePolicy,
        computation: str,
        request_id: str | None = None,
    ) -> str:
        """Check the caps and record ``charge`` as reserved, atomically; returns its id."""
        permit = permit or NO_PERMIT
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._check(dataset, permit, charge, policy)
                cid = uuid.uuid4().hex
                self._con.execute(
                    "INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'reserved')",
                    (
                        cid,
                        time.time(),
                        dataset,
                        permit,
                        self._epoch(dataset, permit),
                        request_id,
                        computation,
                        charge.epsilon,
                        charge.delta,
                        charge.rho,
                        charge.mechanism,
                    ),
                )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return cid

    def commit(self, charge_id: str, actual: Charge | None = None) -> None:
        """Mark a reservation as charged (with the release's actual cost, if given)."""
        with self._lock:
            if actual is None:
                self._con.execute(
                    "UPDATE charges SET status = 'charged' WHERE id = ?", (charge_id,)
                )
                return
            # The actual cost is recorded even if it were larger: never under-record.
            self._con.execute(
                "UPDATE charges SET status = 'charged', epsilon = ?, delta = ?, rho = ?, "
                "mechanism = ? WHERE id = ?",
                (actual.epsilon, actual.delta, actual.rho, actual.mechanism, charge_id),
            )

    def cancel(self, charge_id: str) -> None:
        """Cancel a reservation whose request released nothing."""
        with self._lock:
            self._con.execute(
                "UPDATE charges SET status = 'cancelled' WHERE id = ? AND status = 'reserved'",
                (charge_id,),
            )

    def charge(
        self,
        dataset: str,
        permit: str | None,
        charge: Charge,
        policy: SitePolicy,
        computation: str,
        request_id: str | None = None,
    ) -> str:
        """Check and charge in one step (``reserve`` + ``commit``)."""
        cid = self.reserve(dataset, permit, charge, policy, computation, request_id)
        self.commit(cid)
        return cid

    # --- the site's reset -----------------------------------------------------------------
    def reset(
        self,
        dataset: str,
        permit: str | None,
        actor: str,
        reason: str,
        audit: Callable[[dict[str, Any]], Any] | None,
    ) -> int:
        """Start a new budget epoch for (population ``dataset``, ``permit``); returns it.

        The lifetime total (``dp_epsilon_per_dataset``) is not reset: it counts every
        epoch. The audit record is written *first*; without an ``audit`` callback, or if it
        fails, nothing is reset. Earlier charges stay in the ledger (``history``).
        """
        permit = permit or NO_PERMIT
        if audit is None:
            raise PrivacyError(
                "a privacy budget can only be reset with an audit record; this node has no "
                "audit log (an ungoverned node's budget cannot be reset)"
            )
        if not isinstance(actor, str) or not actor or not isinstance(reason, str) or not reason:
            raise PrivacyError("a budget reset needs the acting person and a reason")
        with self._lock:
            before = self.spent(dataset, permit)
            epoch = self._epoch(dataset, permit) + 1
            audit(
                {
                    "action": "privacy_budget_reset",
                    "actor": actor,
                    "dataset": dataset,
                    "permit_id": permit,
                    "reason": reason,
                    "epoch": epoch,
                    "epsilon_spent_before": round(before.epsilon, 6),
                    "releases_before": before.releases,
                }
            )
            self._con.execute(
                "INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?)",
                (dataset, permit, epoch, time.time(), actor, reason),
            )
        return epoch

    def to_json(self) -> str:
        return json.dumps(self.history())
