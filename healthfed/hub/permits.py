"""Data permits (EHDS Art. 68): granting an application by signing its permit, and revoking.

A permit is the application's scope (persons, purpose, datasets, variables,
analyses and any computations named directly, data form), its validity and its output rules, signed with the
hub's Ed25519 key; nodes verify it against the hub's public key. It is stored in
the database and written to ``DIR/permits/<id>.json`` for the permit holder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from healthfed.errors import PermitError
from healthfed.governance.permit import PERMIT_FORMAT, format_time, parse_time, sign_permit
from healthfed.hub import models as m
from healthfed.hub.applications import ApplicationDesk
from healthfed.hub.core import as_utc, now_utc

__all__ = ["DEFAULT_OUTPUT_RULES", "PermitDesk"]

DEFAULT_OUTPUT_RULES = {"min_cell_count": 5, "min_subset": 5, "min_sites": 2}


_DURATION = re.compile(r"[1-9][0-9]{0,4}d")


def _validity(
    expires: str | datetime, not_before: str | datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """(``not_before``, ``expires``) in UTC; a bare ``expires`` date is valid through that day.

    ``expires`` may also be a duration, ``"90d"`` (days after ``not_before``), so that a
    script or the README's walkthrough grants a permit that is valid whenever it runs.
    """
    try:
        nbf = (
            now
            if not_before is None
            else not_before
            if isinstance(not_before, datetime)
            else parse_time(not_before)
        )
        nbf = as_utc(nbf)
        if isinstance(expires, datetime):
            exp = expires
        elif _DURATION.fullmatch(expires.strip()):
            exp = nbf + timedelta(days=int(expires.strip()[:-1]))
        else:
            exp = parse_time(expires, end_of_day=True)
    except ValueError as exc:
        raise PermitError(f"grant: {exc}") from None
    exp = as_utc(exp)
    if exp <= now:
        raise PermitError(f"grant: --expires {format_time(exp)} is not in the future")
    if exp <= nbf:
        raise PermitError("grant: --expires must be after --not-before")
    return nbf, exp


def _output_rules(output_rules: dict[str, Any] | None) -> dict[str, Any]:
    """The default output rules with ``output_rules`` (only known rules, positive ints)."""
    rules = {**DEFAULT_OUTPUT_RULES, **(output_rules or {})}
    for k, v in rules.items():
        if k not in DEFAULT_OUTPUT_RULES or not isinstance(v, int) or v < 1:
            raise PermitError(f"grant: output rule {k}={v!r} is not allowed")
    return rules


class PermitDesk(ApplicationDesk):
    """Granting, reading and revoking permits."""

    def grant(
        self,
        app_id: str,
        expires: str | datetime,
        not_before: str | datetime | None = None,
        output_rules: dict[str, Any] | None = None,
        actor: str = "access body",
    ) -> dict[str, Any]:
        """Grant a submitted application: sign and store its permit; returns the signed permit.

        ``expires``/``not_before`` are ISO dates or times (a bare ``expires`` date means
        valid through that day, UTC). The signed permit is also written to
        ``DIR/permits/<permit id>.json``.
        """
        app = self.application(app_id)
        if app["status"] != "submitted":
            raise PermitError(f"application {app_id} is already {app['status']}")
        now = now_utc()
        nbf, exp = _validity(expires, not_before, now)
        rules = _output_rules(output_rules)
        permit_id = f"P-{now:%Y%m%d}-{secrets.token_hex(4)}"
        body = {
            "format": PERMIT_FORMAT,
            "permit_id": permit_id,
            "application_id": app_id,
            "issuer": {"hub": self.name, "key_id": self.key_id},
            "holder": app["applicant"],
            "authorised_persons": list(app["authorised_persons"]),
            "purpose": app["purpose"],
            "purpose_description": app["purpose_description"],
            "datasets": list(app["datasets"]),
            "variables": sorted(app["variables"]),
            "analyses": sorted(app.get("analyses", [])),
            "computations": sorted(app.get("computations", [])),
            "data_form": app["data_form"],
            "output_rules": rules,
            "issued_at": format_time(now),
            "not_before": format_time(nbf),
            "expires": format_time(exp),
        }
        signed = sign_permit(body, self._key)
        self._store_permit(app, signed, nbf, exp, now, actor)
        self._audit(
            "permit_granted",
            actor,
            decision="granted",
            application_id=app_id,
            permit_id=permit_id,
            holder=app["applicant"],
            purpose=app["purpose"],
            datasets=body["datasets"],
            not_before=body["not_before"],
            expires=body["expires"],
        )
        return signed

    def _store_permit(
        self,
        app: dict[str, Any],
        signed: dict[str, Any],
        nbf: datetime,
        exp: datetime,
        now: datetime,
        actor: str,
    ) -> None:
        """Mark the application granted, store the permit and write its file."""
        permit_id = signed["permit"]["permit_id"]
        with self._session() as s, s.begin():
            row = s.get(m.Application, app["id"])
            assert row is not None
            row.status, row.decided_by, row.decided_at = "granted", actor, now
            s.add(
                m.Permit(
                    id=permit_id,
                    application_id=app["id"],
                    holder=app["applicant"],
                    purpose=app["purpose"],
                    not_before=nbf,
                    expires=exp,
                    granted_at=now,
                    status="active",
                    signed=signed,
                )
            )
        out = self.directory / "permits"
        out.mkdir(exist_ok=True)
        tmp = out / f".{permit_id}.json.tmp"
        tmp.write_text(json.dumps(signed, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, out / f"{permit_id}.json")

    def permit_path(self, permit_id: str) -> Path:
        return self.directory / "permits" / f"{permit_id}.json"

    def permit(self, permit_id: str) -> dict[str, Any]:
        """The signed permit ``permit_id``."""
        with self._session() as s:
            row = s.get(m.Permit, permit_id)
        if row is None:
            raise PermitError(f"no permit {permit_id!r} at this hub")
        return dict(row.signed)

    def permits(self) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(m.Permit).order_by(m.Permit.granted_at))
            return [
                {
                    "permit_id": r.id,
                    "application_id": r.application_id,
                    "holder": r.holder,
                    "purpose": r.purpose,
                    "datasets": r.signed["permit"]["datasets"],
                    "granted_at": format_time(as_utc(r.granted_at)),
                    "not_before": format_time(as_utc(r.not_before)),
                    "expires": format_time(as_utc(r.expires)),
                    "status": r.status,
                }
                for r in rows
            ]

    def revoke(self, permit_id: str, reason: str, actor: str = "access body") -> None:
        """Revoke a permit at the hub: no further results are released under it."""
        with self._session() as s, s.begin():
            row = s.get(m.Permit, permit_id)
            if row is None:
                raise PermitError(f"no permit {permit_id!r} at this hub")
            row.status, row.revoked_reason = "revoked", reason
        self._audit("permit_revoked", actor, decision="revoked", permit_id=permit_id, reason=reason)
