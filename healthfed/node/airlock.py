"""The node's airlock: requests the site reviews by hand before anything is released.

The site policy sets, per computation, ``auto`` (released as soon as the
disclosure filter passes) or ``manual``. A manual request is run at once and
passed through the disclosure filter, but its disclosed result is **kept** in
this queue (a SQLite file in the node's state folder, so the node executor and
``healthfed node approve`` — separate processes — share it) and the requester
gets ``{"status": "pending", "ticket": ...}``. The data steward sees the
requester, permit, computation, parameters and the disclosure outcome
(``healthfed node pending``), then approves or rejects. Re-sending the same
request (same permit, requester, computation, dataset and parameters — the
request's *fingerprint*) then releases the kept result, or is refused with the
steward's reason. A kept result computed before a patient opted out is never
released: the ticket is *superseded* and the request is computed and reviewed anew.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthfed.errors import InvalidArgument, PolicyDenied
from healthfed.governance.canonical import sha256_hex

__all__ = ["ApprovalQueue", "Ticket", "request_fingerprint"]

STATUSES = ("pending", "approved", "rejected", "superseded")


def request_fingerprint(
    permit_id: str | None, requester: Any, computation: str, dataset: str, params: Any
) -> str:
    """sha256 over what identifies a request for the airlock (not its random request id)."""
    return sha256_hex(
        {
            "permit_id": permit_id,
            "requester": requester,
            "computation": computation,
            "dataset": dataset,
            "params": params,
        }
    )


@dataclass(frozen=True)
class Ticket:
    """One queued request."""

    ticket: str
    fingerprint: str
    status: str
    created_at: str
    requester: str | None
    permit_id: str | None
    computation: str
    dataset: str
    params: dict[str, Any]
    checks: dict[str, Any]
    result: dict[str, Any] | None
    decided_at: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    releases: int = 0


_COLUMNS = (
    "ticket, fingerprint, status, created_at, requester, permit_id, computation, dataset, "
    "params, checks, result, decided_at, decided_by, reason, releases"
)


class ApprovalQueue:
    """The node's queue of manual-approval requests, in a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        con.execute(
            "CREATE TABLE IF NOT EXISTS tickets (ticket TEXT PRIMARY KEY, fingerprint TEXT UNIQUE, "
            "status TEXT, created_at TEXT, requester TEXT, permit_id TEXT, computation TEXT, "
            "dataset TEXT, params TEXT, checks TEXT, result TEXT, decided_at TEXT, "
            "decided_by TEXT, reason TEXT, releases INTEGER DEFAULT 0)"
        )
        return con

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Ticket:
        (tk, fp, st, ca, rq, pid, comp, ds, params, checks, result, da, db, reason, rel) = row
        return Ticket(
            tk, fp, st, ca, rq, pid, comp, ds, json.loads(params), json.loads(checks),
            json.loads(result) if result else None, da, db, reason, int(rel or 0),
        )  # fmt: skip

    def by_fingerprint(self, fingerprint: str) -> Ticket | None:
        con = self._connect()
        try:
            row = con.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
        finally:
            con.close()
        return self._row(row) if row else None

    def get(self, ticket: str) -> Ticket:
        """The ticket called ``ticket`` (a unique prefix of at least 4 characters is enough)."""
        con = self._connect()
        try:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE ticket LIKE ?", (ticket + "%",)
            ).fetchall()
        finally:
            con.close()
        if len(ticket) < 4 or len(rows) != 1:
            what = "matches several tickets" if len(rows) > 1 else "is not in the approval queue"
            raise PolicyDenied(f"ticket {ticket!r} {what} ({self.path})")
        return self._row(rows[0])

    def list(self, status: str | None = "pending") -> list[Ticket]:
        con = self._connect()
        try:
            if status is None:
                rows = con.execute(f"SELECT {_COLUMNS} FROM tickets ORDER BY created_at")
            else:
                rows = con.execute(
                    f"SELECT {_COLUMNS} FROM tickets WHERE status = ? ORDER BY created_at",
                    (status,),
                )
            return [self._row(r) for r in rows.fetchall()]
        finally:
            con.close()

    def add(
        self,
        fingerprint: str,
        *,
        requester: Any,
        permit_id: str | None,
        computation: str,
        dataset: str,
        params: dict[str, Any],
        checks: dict[str, Any],
        result: dict[str, Any],
    ) -> Ticket:
        """Queue a disclosed result for review; returns the (existing or new) ticket."""
        ticket = secrets.token_hex(6)
        con = self._connect()
        try:
            with con:
                con.execute(
                    "INSERT OR IGNORE INTO tickets (ticket, fingerprint, status, created_at, "
                    "requester, permit_id, computation, dataset, params, checks, result) "
                    "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ticket, fingerprint, datetime.now(UTC).isoformat(),
                        None if requester is None else str(requester), permit_id, computation,
                        dataset, json.dumps(params), json.dumps(checks), json.dumps(result),
                    ),
                )  # fmt: skip
        finally:
            con.close()
        found = self.by_fingerprint(fingerprint)
        assert found is not None
        return found

    def decide(self, ticket: str, status: str, by: str, reason: str | None = None) -> Ticket:
        """Approve or reject a pending ticket."""
        if status not in ("approved", "rejected"):
            raise InvalidArgument(
                f"argument 'status' must be 'approved' or 'rejected', got {status!r}"
            )
        current = self.get(ticket)
        if current.status != "pending":
            raise PolicyDenied(f"ticket {current.ticket} is already {current.status}")
        con = self._connect()
        try:
            with con:
                con.execute(
                    "UPDATE tickets SET status = ?, decided_at = ?, decided_by = ?, reason = ? "
                    "WHERE ticket = ? AND status = 'pending'",
                    (status, datetime.now(UTC).isoformat(), by, reason, current.ticket),
                )
        finally:
            con.close()
        return self.get(current.ticket)

    def mark_released(self, ticket: str) -> None:
        con = self._connect()
        try:
            with con:
                con.execute(
                    "UPDATE tickets SET releases = releases + 1 WHERE ticket = ?", (ticket,)
                )
        finally:
            con.close()

    def supersede(self, ticket: str) -> None:
        """Retire a kept result that no longer holds (its fingerprint is free for a new ticket)."""
        con = self._connect()
        try:
            with con:
                con.execute(
                    "UPDATE tickets SET status = 'superseded', "
                    "fingerprint = fingerprint || ':superseded:' || ticket WHERE ticket = ?",
                    (ticket,),
                )
        finally:
            con.close()
