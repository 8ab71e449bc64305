"""The hub: the health data access body's side of healthfed.

``Hub.init(DIR)`` creates a hub folder::

    DIR/hub.toml                 name and database URL
    DIR/hub_signing_key.pem      the hub's Ed25519 private key (mode 0600)
    DIR/hub_public_key.txt       its public key (base64), what nodes trust
    DIR/hub.sqlite               state, unless hub.toml names another database URL
    DIR/audit.jsonl (+ .head)    the hub's hash-chained audit log
    DIR/permits/<id>.json        granted permits, signed, to hand to the permit holder

It holds the **catalogue** (node-published HealthDCAT-AP descriptions), **data
access applications** (EHDS Art. 67 fields), **permits** (granted by signing;
EHDS Art. 68), **released results** and the **transparency register** (Art. 58).
Every action is appended to the audit log (and mirrored in the database).

Applications are refused automatically, and recorded as refused, when their
purpose is a prohibited use (Art. 54) or not an Art. 53(1) purpose, or when the
applicant has not declared that no prohibited use applies.

Results are *released* through :meth:`Hub.release`: the hub re-checks the
permit (its own signature, validity, not revoked, requester, computation,
datasets) and the contributing-site minimum before the researcher gets the
pooled result; a failed check withholds it and is audited.
"""

from __future__ import annotations

import html
import json
import os
import secrets
import tomllib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from healthfed.errors import HealthfedError, PermitError, ThresholdViolation
from healthfed.governance.audit import AuditLog
from healthfed.governance.canonical import canonical_json, sha256_hex
from healthfed.governance.keys import (
    generate_private_key,
    key_id,
    load_private_key,
    public_key_b64,
    write_private_key,
)
from healthfed.governance.permit import (
    PERMIT_FORMAT,
    check_permit,
    format_time,
    load_permit,
    parse_time,
    sign_permit,
)
from healthfed.governance.purposes import PROHIBITED_USES, Purpose, parse_purpose
from healthfed.hub import models as m

__all__ = ["DATA_FORMS", "Hub"]

DATA_FORMS = ("anonymised", "pseudonymised")
DEFAULT_OUTPUT_RULES = {"min_cell_count": 5, "min_subset": 5, "min_sites": 2}
APPLICATION_FIELDS = {
    "applicant",
    "applicant_contact",
    "authorised_persons",
    "purpose",
    "purpose_description",
    "no_prohibited_use",
    "datasets",
    "variables",
    "computations",
    "data_form",
    "period_start",
    "period_end",
    "safeguards",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _toml_str(value: str) -> str:
    return json.dumps(value)


class Hub:
    """A health data access body's hub, in a folder, with state in a SQL database.

    Use :meth:`init` to create one and :meth:`open` to open it.
    """

    CONFIG = "hub.toml"
    KEY = "hub_signing_key.pem"
    PUBLIC_KEY = "hub_public_key.txt"

    def __init__(self, directory: Path, name: str, db_url: str) -> None:
        self.directory = directory
        self.name = name
        self.db_url = db_url
        self._key = load_private_key(directory / self.KEY)
        self.key_id = key_id(self._key)
        self.engine = create_engine(db_url)
        m.Base.metadata.create_all(self.engine)
        self.audit_log = AuditLog(directory / "audit.jsonl")

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def init(cls, directory: str | Path, name: str = "hub", db_url: str | None = None) -> Hub:
        """Create a hub in ``directory`` (its key, database and audit log)."""
        directory = Path(directory).resolve()
        if (directory / cls.CONFIG).exists():
            raise HealthfedError(f"{directory} already holds a hub ({cls.CONFIG}); open it")
        directory.mkdir(parents=True, exist_ok=True)
        key = generate_private_key()
        write_private_key(key, directory / cls.KEY)
        (directory / cls.PUBLIC_KEY).write_text(public_key_b64(key) + "\n", encoding="ascii")
        url = db_url or f"sqlite:///{directory / 'hub.sqlite'}"
        (directory / cls.CONFIG).write_text(
            f"[hub]\nname = {_toml_str(name)}\ndb = {_toml_str(url)}\n", encoding="utf-8"
        )
        hub = cls(directory, name, url)
        hub._audit("hub_init", "access body", decision="created", key_id=hub.key_id)
        return hub

    @classmethod
    def open(cls, directory: str | Path, db_url: str | None = None) -> Hub:
        """Open the hub in ``directory`` (``db_url`` overrides the one in hub.toml)."""
        directory = Path(directory).resolve()
        config = directory / cls.CONFIG
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8")).get("hub", {})
        except FileNotFoundError:
            raise HealthfedError(
                f"no hub in {directory} (missing {cls.CONFIG}); create one with "
                f"`healthfed hub init {directory}`"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise HealthfedError(f"{config}: not valid TOML: {exc}") from None
        return cls(directory, str(raw.get("name", "hub")), db_url or str(raw["db"]))

    @classmethod
    def open_or_init(cls, directory: str | Path, name: str = "hub") -> Hub:
        directory = Path(directory)
        if (directory / cls.CONFIG).exists():
            return cls.open(directory)
        return cls.init(directory, name=name)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def public_key(self) -> str:
        """The hub's public key, base64 (what a node's ``trusted_hub_keys`` lists)."""
        return public_key_b64(self._key)

    @property
    def public_key_path(self) -> Path:
        return self.directory / self.PUBLIC_KEY

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _audit(self, action: str, actor: str, **fields: Any) -> dict[str, Any]:
        record = self.audit_log.append(
            {"hub": self.name, "action": action, "actor": actor, **fields}
        )
        with self._session() as s, s.begin():
            s.add(m.AuditRecord(seq=record["seq"], hash=record["hash"], record=record))
        return record

    # --- catalogue -----------------------------------------------------------------------------
    def publish(self, entry: dict[str, Any], actor: str | None = None) -> str:
        """Add or replace a catalogue entry (a :func:`describe_dataset` dict)."""
        for f in ("identifier", "site", "dataset", "variables"):
            if f not in entry:
                raise HealthfedError(f"catalogue entry lacks field {f!r}")
        ident = str(entry["identifier"])
        with self._session() as s, s.begin():
            s.merge(
                m.CatalogueEntry(
                    identifier=ident,
                    site=str(entry["site"]),
                    dataset=str(entry["dataset"]),
                    published_at=_now(),
                    entry=entry,
                )
            )
        self._audit(
            "catalogue_publish", actor or str(entry["site"]), decision="published", dataset=ident
        )
        return ident

    def publish_node(self, node: Any) -> list[str]:
        """Describe every dataset of ``node`` and publish it."""
        from healthfed.governance.catalogue import describe_dataset

        return [self.publish(describe_dataset(node, name)) for name in sorted(node.datasets)]

    def catalogue(self) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(m.CatalogueEntry).order_by(m.CatalogueEntry.identifier))
            return [dict(r.entry) for r in rows]

    def catalogue_entry(self, identifier: str) -> dict[str, Any]:
        with self._session() as s:
            row = s.get(m.CatalogueEntry, identifier)
        if row is None:
            known = [e["identifier"] for e in self.catalogue()]
            raise HealthfedError(f"no catalogue entry {identifier!r}; the catalogue has {known}")
        return dict(row.entry)

    # --- applications --------------------------------------------------------------------------
    def apply(self, application: dict[str, Any]) -> dict[str, Any]:
        """File a data access application; returns its record (``id``, ``status``, ...).

        An application with a prohibited or unknown purpose, or without the declaration
        that no Art. 54 prohibited use applies, is recorded as refused and raises
        :class:`PermitError` naming the reason. A malformed application (unknown
        dataset, variable or computation, missing field) raises without being recorded.
        """
        from healthfed.compute import registered_computations

        app = dict(application)
        unknown = sorted(set(app) - APPLICATION_FIELDS)
        if unknown:
            raise PermitError(f"application has unknown field(s) {unknown}")
        for f in ("applicant", "purpose", "purpose_description"):
            if not isinstance(app.get(f), str) or not app[f].strip():
                raise PermitError(f"application field {f!r} is required")
        persons = app.get("authorised_persons")
        if (
            not isinstance(persons, list)
            or not persons
            or not all(isinstance(p, str) for p in persons)
        ):
            raise PermitError("application field 'authorised_persons' needs at least one person")
        for f in ("datasets", "variables", "computations"):
            v = app.get(f)
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise PermitError(f"application field {f!r} needs at least one entry")
        form = app.setdefault("data_form", "anonymised")
        if form not in DATA_FORMS:
            raise PermitError(f"application field 'data_form' must be one of {DATA_FORMS}")
        for f in ("period_start", "period_end"):
            if app.get(f) is not None:
                try:
                    app[f] = format_time(parse_time(str(app[f])))
                except ValueError as exc:
                    raise PermitError(f"application field {f!r}: {exc}") from None
        # Scope against the catalogue and the registry.
        catalogue = {e["identifier"]: e for e in self.catalogue()}
        datasets: list[str] = []
        for d in app["datasets"]:
            if "/" in d:
                if d not in catalogue:
                    raise PermitError(f"dataset {d!r} is not in the hub's catalogue")
                datasets.append(d)
            else:
                matches = sorted(i for i, e in catalogue.items() if e["dataset"] == d)
                if not matches:
                    raise PermitError(
                        f"no catalogue entry for dataset {d!r}; the catalogue has "
                        f"{sorted(catalogue)}"
                    )
                datasets.extend(matches)
        app["datasets"] = sorted(set(datasets))
        for ident in app["datasets"]:
            names = {v["name"] for v in catalogue[ident]["variables"]}
            missing = sorted(set(app["variables"]) - names)
            if missing:
                raise PermitError(f"variable(s) {missing} are not in dataset {ident!r}")
        known = set(registered_computations())
        bad = sorted(set(app["computations"]) - known)
        if bad:
            raise PermitError(f"unknown computation(s) {bad}; registered: {sorted(known)}")
        # Purpose and prohibited uses: refuse, and keep the refusal on record.
        refusal = None
        try:
            app["purpose"] = parse_purpose(app["purpose"]).value
        except ValueError as exc:
            refusal = str(exc)
        if refusal is None and app.get("no_prohibited_use") is not True:
            refusal = (
                "the applicant has not declared that none of the EHDS Art. 54 prohibited uses "
                f"apply ({', '.join(PROHIBITED_USES)})"
            )
        app_id = f"A-{_now():%Y%m%d}-{secrets.token_hex(3)}"
        row = m.Application(
            id=app_id,
            applicant=app["applicant"],
            purpose=str(app["purpose"]),
            status="submitted",
            submitted_at=_now(),
            document=app,
        )
        with self._session() as s, s.begin():
            s.add(row)
        self._audit(
            "application_submitted",
            app["applicant"],
            decision="submitted",
            application_id=app_id,
            purpose=str(app["purpose"]),
            datasets=app["datasets"],
        )
        if refusal is not None:
            self.refuse(app_id, refusal, actor="hub (automatic check)")
            raise PermitError(f"application {app_id} refused: {refusal}")
        return self.application(app_id)

    def application(self, app_id: str) -> dict[str, Any]:
        with self._session() as s:
            row = s.get(m.Application, app_id)
        if row is None:
            raise PermitError(f"no application {app_id!r} at this hub")
        return self._app_dict(row)

    @staticmethod
    def _app_dict(row: m.Application) -> dict[str, Any]:
        return {
            "id": row.id,
            "status": row.status,
            "submitted_at": format_time(_utc(row.submitted_at)),
            "decided_at": format_time(_utc(row.decided_at)) if row.decided_at else None,
            "decided_by": row.decided_by,
            "reason": row.reason,
            **row.document,
        }

    def applications(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._session() as s:
            q = select(m.Application).order_by(m.Application.submitted_at)
            if status:
                q = q.where(m.Application.status == status)
            return [self._app_dict(r) for r in s.scalars(q)]

    def refuse(self, app_id: str, reason: str, actor: str = "access body") -> dict[str, Any]:
        """Refuse a submitted application, with a reason (audited)."""
        if not reason or not reason.strip():
            raise PermitError("a refusal needs a reason")
        with self._session() as s, s.begin():
            row = s.get(m.Application, app_id)
            if row is None:
                raise PermitError(f"no application {app_id!r} at this hub")
            if row.status != "submitted":
                raise PermitError(f"application {app_id} is already {row.status}")
            row.status, row.reason, row.decided_by, row.decided_at = (
                "refused", reason, actor, _now(),
            )  # fmt: skip
        self._audit(
            "application_refused", actor, decision="refused", application_id=app_id, reason=reason
        )
        return self.application(app_id)

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
        now = _now()
        try:
            exp = expires if isinstance(expires, datetime) else parse_time(expires, end_of_day=True)
            nbf = (
                now
                if not_before is None
                else not_before
                if isinstance(not_before, datetime)
                else parse_time(not_before)
            )
        except ValueError as exc:
            raise PermitError(f"grant: {exc}") from None
        exp, nbf = _utc(exp), _utc(nbf)
        if exp <= now:
            raise PermitError(f"grant: --expires {format_time(exp)} is not in the future")
        if exp <= nbf:
            raise PermitError("grant: --expires must be after --not-before")
        rules = {**DEFAULT_OUTPUT_RULES, **(output_rules or {})}
        for k, v in rules.items():
            if k not in DEFAULT_OUTPUT_RULES or not isinstance(v, int) or v < 1:
                raise PermitError(f"grant: output rule {k}={v!r} is not allowed")
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
            "computations": sorted(app["computations"]),
            "data_form": app["data_form"],
            "output_rules": rules,
            "issued_at": format_time(now),
            "not_before": format_time(nbf),
            "expires": format_time(exp),
        }
        signed = sign_permit(body, self._key)
        with self._session() as s, s.begin():
            row = s.get(m.Application, app_id)
            assert row is not None
            row.status, row.decided_by, row.decided_at = "granted", actor, now
            s.add(
                m.Permit(
                    id=permit_id,
                    application_id=app_id,
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
                    "granted_at": format_time(_utc(r.granted_at)),
                    "not_before": format_time(_utc(r.not_before)),
                    "expires": format_time(_utc(r.expires)),
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

    # --- release ---------------------------------------------------------------------------------
    def release(
        self,
        permit: Any,
        *,
        requester: str,
        computation: str,
        dataset: str,
        sites: Sequence[str],
        result: dict[str, Any],
        suppressed_cells: int | None = None,
        now: datetime | None = None,
    ) -> str:
        """Check a pooled result against its permit and record its release; returns its id.

        Checks: the permit is this hub's (signature), active (not revoked), valid now,
        names ``requester``, ``computation`` and every contributing site's dataset, and at
        least ``output_rules.min_sites`` sites contributed. A failed check is audited as
        ``withheld`` and raises (:class:`PermitError` or :class:`ThresholdViolation`).
        """
        signed = load_permit(permit)
        pid = str((signed.get("permit") or {}).get("permit_id"))
        fields = {"permit_id": pid, "computation": computation, "dataset": dataset}
        try:
            body = check_permit(
                signed,
                trusted={self.key_id: self._key.public_key()},
                site=sorted(sites)[0] if sites else "",
                dataset=dataset,
                computation=computation,
                requester=requester,
                now=now,
            ).body
            with self._session() as s:
                row = s.get(m.Permit, pid)
            if row is None:
                raise PermitError(f"permit {pid} was not granted by this hub")
            if row.status != "active":
                raise PermitError(f"permit {pid} is {row.status}: {row.revoked_reason or ''}")
            outside = sorted(f"{s}/{dataset}" for s in sites)
            outside = [d for d in outside if d not in body["datasets"]]
            if outside:
                raise PermitError(f"dataset(s) {outside} are not in permit {pid}")
            min_sites = int(body["output_rules"].get("min_sites", 2))
            if len(sites) < min_sites:
                raise ThresholdViolation(
                    f"only {len(sites)} site(s) contributed; permit {pid} requires {min_sites}"
                )
        except (PermitError, ThresholdViolation) as exc:
            self._audit("release", requester, decision="withheld", reason=str(exc), **fields)
            raise
        result = _jsonable(result)
        data = canonical_json(result)
        rel_id = f"R-{_now():%Y%m%d}-{secrets.token_hex(4)}"
        with self._session() as s, s.begin():
            s.add(
                m.Release(
                    id=rel_id,
                    permit_id=pid,
                    requester=requester,
                    computation=computation,
                    dataset=dataset,
                    sites=sorted(sites),
                    released_at=_now(),
                    result_sha256=sha256_hex(data),
                    released_bytes=len(data),
                    suppressed_cells=suppressed_cells,
                    result=result,
                )
            )
        self._audit(
            "release",
            requester,
            decision="released",
            release_id=rel_id,
            sites=sorted(sites),
            released_bytes=len(data),
            suppressed_cells=suppressed_cells,
            result_sha256=sha256_hex(data),
            **fields,
        )
        return rel_id

    def releases(self) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(m.Release).order_by(m.Release.released_at))
            return [
                {
                    "release_id": r.id,
                    "permit_id": r.permit_id,
                    "computation": r.computation,
                    "dataset": r.dataset,
                    "sites": list(r.sites),
                    "released_at": format_time(_utc(r.released_at)),
                    "released_bytes": r.released_bytes,
                    "suppressed_cells": r.suppressed_cells,
                    "result_sha256": r.result_sha256,
                }
                for r in rows
            ]

    def verify_audit_mirror(self) -> bool:
        """True if the database's audit mirror equals the audit log file, record for record."""
        with self._session() as s:
            db = [
                (r.seq, r.hash)
                for r in s.scalars(select(m.AuditRecord).order_by(m.AuditRecord.seq))
            ]
        return db == [(r["seq"], r["hash"]) for r in self.audit_log.records()]

    # --- transparency (EHDS Art. 58) -------------------------------------------------------------
    def transparency(self, out_dir: str | Path | None = None) -> tuple[Path, Path]:
        """Export the transparency register as ``transparency.json`` and ``transparency.html``.

        It lists every permit granted (holder, purpose, datasets, dates, status) and every
        released result (permit, computation, dataset, sites, date, size, suppressed cells,
        SHA-256 of the released result) — never person-level data.
        """
        out = Path(out_dir) if out_dir is not None else self.directory / "transparency"
        out.mkdir(parents=True, exist_ok=True)
        purposes = {p.value: f"{p.article}: {p.description}" for p in Purpose}
        register: dict[str, Any] = {
            "hub": self.name,
            "generated_at": format_time(_now()),
            "legal_basis": "Regulation (EU) 2025/327 (EHDS) Art. 58",
            "permits": [
                {**p, "purpose_text": purposes.get(p["purpose"], p["purpose"])}
                for p in self.permits()
            ],
            "refused_applications": len(self.applications("refused")),
            "released_results": self.releases(),
        }
        json_path = out / "transparency.json"
        json_path.write_text(json.dumps(register, indent=2, ensure_ascii=False), encoding="utf-8")
        html_path = out / "transparency.html"
        html_path.write_text(_register_html(register), encoding="utf-8")
        self._audit("transparency_export", "access body", decision="exported",
                    permits=len(register["permits"]), releases=len(register["released_results"]))  # fmt: skip
        return json_path, html_path


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON: NaN/inf become None, unknown types their ``str``."""
    import math

    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [fix(x) for x in v]
        return v

    return fix(json.loads(json.dumps(value, default=str)))


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _register_html(reg: dict[str, Any]) -> str:
    permits = _table(
        ["Permit", "Holder", "Purpose", "Datasets", "Granted", "Valid from", "Expires", "Status"],
        (
            [p["permit_id"], p["holder"], p["purpose_text"], ", ".join(p["datasets"]),
             p["granted_at"], p["not_before"], p["expires"], p["status"]]
            for p in reg["permits"]
        ),
    )  # fmt: skip
    releases = _table(
        ["Release", "Permit", "Computation", "Dataset", "Sites", "Released", "Bytes",
         "Suppressed cells", "SHA-256"],
        (
            [r["release_id"], r["permit_id"], r["computation"], r["dataset"], ", ".join(r["sites"]),
             r["released_at"], r["released_bytes"], r["suppressed_cells"], r["result_sha256"]]
            for r in reg["released_results"]
        ),
    )  # fmt: skip
    name = html.escape(reg["hub"])
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Transparency register - {name}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>Transparency register of {name}</h1>"
        f"<p>{html.escape(reg['legal_basis'])}. Generated {html.escape(reg['generated_at'])}. "
        f"Refused applications: {reg['refused_applications']}.</p>"
        f"<h2>Data permits granted</h2>{permits}"
        f"<h2>Results released</h2>{releases}</body></html>\n"
    )
