"""The hub's tables (SQLAlchemy 2 ORM): catalogue, applications, permits, releases, audit.

SQLite in the hub folder by default; any SQLAlchemy URL (e.g.
``postgresql+psycopg://user@host/hub``) works with ``--db``. JSON documents are
kept whole in JSON columns next to the fields the hub queries by.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class CatalogueEntry(Base):
    __tablename__ = "catalogue_entries"

    identifier: Mapped[str] = mapped_column(String(300), primary_key=True)
    site: Mapped[str] = mapped_column(String(200), index=True)
    dataset: Mapped[str] = mapped_column(String(200), index=True)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    entry: Mapped[dict[str, Any]] = mapped_column(JSON)


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    applicant: Mapped[str] = mapped_column(String(300))
    purpose: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), index=True)  # submitted|granted|refused
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(300), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)


class Permit(Base):
    __tablename__ = "permits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.id"))
    holder: Mapped[str] = mapped_column(String(300))
    purpose: Mapped[str] = mapped_column(String(100))
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))  # active|revoked
    revoked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    signed: Mapped[dict[str, Any]] = mapped_column(JSON)


class Release(Base):
    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    permit_id: Mapped[str] = mapped_column(ForeignKey("permits.id"), index=True)
    requester: Mapped[str] = mapped_column(String(300))
    computation: Mapped[str] = mapped_column(String(100))
    dataset: Mapped[str] = mapped_column(String(200))
    sites: Mapped[list[str]] = mapped_column(JSON)
    released_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    result_sha256: Mapped[str] = mapped_column(String(64))
    released_bytes: Mapped[int] = mapped_column(Integer)
    suppressed_cells: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditRecord(Base):
    """A mirror of the hub's audit log file (the file is what ``audit verify`` checks)."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
