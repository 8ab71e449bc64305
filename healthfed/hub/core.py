"""What every part of the hub shares: its folder, signing key, database and audit log.

The hub's parts (:mod:`~healthfed.hub.catalogue`, :mod:`~healthfed.hub.applications`,
:mod:`~healthfed.hub.permits`, :mod:`~healthfed.hub.releases`) build on
:class:`HubState`, each adding its own methods; :class:`healthfed.hub.Hub` is all
of them together. Every action is appended to the hub's hash-chained audit log
and mirrored, record for record, in the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from healthfed.governance.audit import AuditLog
from healthfed.governance.keys import key_id, load_private_key
from healthfed.hub import models as m

__all__ = ["HubState"]


def now_utc() -> datetime:
    """The current time, timezone-aware UTC (what the hub stores and signs)."""
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive time (as SQLite returns it) is taken to be UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class HubState:
    """A hub's folder, Ed25519 signing key, SQL database and audit log."""

    KEY = "hub_signing_key.pem"

    def __init__(self, directory: Path, name: str, db_url: str) -> None:
        self.directory = directory
        self.name = name
        self.db_url = db_url
        self._key = load_private_key(directory / self.KEY)
        self.key_id = key_id(self._key)
        self.engine = create_engine(db_url)
        m.Base.metadata.create_all(self.engine)
        self.audit_log = AuditLog(directory / "audit.jsonl")

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _audit(self, action: str, actor: str, **fields: Any) -> dict[str, Any]:
        record = self.audit_log.append(
            {"hub": self.name, "action": action, "actor": actor, **fields}
        )
        with self._session() as s, s.begin():
            s.add(m.AuditRecord(seq=record["seq"], hash=record["hash"], record=record))
        return record

    def verify_audit_mirror(self) -> bool:
        """True if the database's audit mirror equals the audit log file, record for record."""
        with self._session() as s:
            db = [
                (r.seq, r.hash)
                for r in s.scalars(select(m.AuditRecord).order_by(m.AuditRecord.seq))
            ]
        return db == [(r["seq"], r["hash"]) for r in self.audit_log.records()]
