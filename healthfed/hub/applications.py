"""Data access applications (EHDS Art. 67): filing, automatic refusal, decisions.

An application names the applicant, the persons it authorises, the purpose, the
datasets (catalogue entries), variables and analyses (:mod:`healthfed.governance.analyses`;
registered computation names are accepted too). It is checked against
the catalogue and the computation registry; a malformed one raises without being
recorded. One whose purpose is a prohibited use (Art. 54) or not an Art. 53(1)
purpose, or whose applicant has not declared that no prohibited use applies, is
recorded and refused at once, so the refusal stays on the record.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select

from healthfed.errors import PermitError
from healthfed.governance.analyses import split_scope
from healthfed.governance.permit import format_time, parse_time
from healthfed.governance.purposes import PROHIBITED_USES, parse_purpose
from healthfed.hub import models as m
from healthfed.hub.catalogue import CatalogueDesk
from healthfed.hub.core import as_utc, now_utc

__all__ = ["APPLICATION_FIELDS", "DATA_FORMS", "ApplicationDesk"]

DATA_FORMS = ("anonymised", "pseudonymised")
APPLICATION_FIELDS = {
    "applicant",
    "applicant_contact",
    "authorised_persons",
    "purpose",
    "purpose_description",
    "no_prohibited_use",
    "datasets",
    "variables",
    "analyses",
    "computations",
    "data_form",
    "period_start",
    "period_end",
    "safeguards",
}


def _validated(application: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``application`` with its fields checked and its dates normalised."""
    app = dict(application)
    unknown = sorted(set(app) - APPLICATION_FIELDS)
    if unknown:
        raise PermitError(f"application has unknown field(s) {unknown}")
    for f in ("applicant", "purpose", "purpose_description"):
        if not isinstance(app.get(f), str) or not app[f].strip():
            raise PermitError(f"application field {f!r} is required")
    persons = app.get("authorised_persons")
    if not isinstance(persons, list) or not persons or not all(isinstance(p, str) for p in persons):
        raise PermitError("application field 'authorised_persons' needs at least one person")
    for f in ("datasets", "variables"):
        v = app.get(f)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise PermitError(f"application field {f!r} needs at least one entry")
    for f in ("analyses", "computations"):
        v = app.setdefault(f, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise PermitError(f"application field {f!r} must be a list of names")
    if not app["analyses"] and not app["computations"]:
        raise PermitError(
            "application field 'analyses' needs at least one entry (e.g. table1, glm, cox, "
            "fedavg, evaluation, trust_report)"
        )
    form = app.setdefault("data_form", "anonymised")
    if form not in DATA_FORMS:
        raise PermitError(f"application field 'data_form' must be one of {DATA_FORMS}")
    for f in ("period_start", "period_end"):
        if app.get(f) is not None:
            try:
                app[f] = format_time(parse_time(str(app[f])))
            except ValueError as exc:
                raise PermitError(f"application field {f!r}: {exc}") from None
    return app


def _refusal(app: dict[str, Any]) -> str | None:
    """Why the application must be refused (purpose, prohibited uses), or None.

    Normalises ``app["purpose"]`` to its enum value when it is a known purpose.
    """
    try:
        app["purpose"] = parse_purpose(app["purpose"]).value
    except ValueError as exc:
        return str(exc)
    if app.get("no_prohibited_use") is not True:
        return (
            "the applicant has not declared that none of the EHDS Art. 54 prohibited uses "
            f"apply ({', '.join(PROHIBITED_USES)})"
        )
    return None


def _app_dict(row: m.Application) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "submitted_at": format_time(as_utc(row.submitted_at)),
        "decided_at": format_time(as_utc(row.decided_at)) if row.decided_at else None,
        "decided_by": row.decided_by,
        "reason": row.reason,
        **row.document,
    }


class ApplicationDesk(CatalogueDesk):
    """Filing applications, reading them and refusing them."""

    def apply(self, application: dict[str, Any]) -> dict[str, Any]:
        """File a data access application; returns its record (``id``, ``status``, ...).

        An application with a prohibited or unknown purpose, or without the declaration
        that no Art. 54 prohibited use applies, is recorded as refused and raises
        :class:`PermitError` naming the reason. A malformed application (unknown
        dataset, variable or computation, missing field) raises without being recorded.
        """
        app = _validated(application)
        self._scope(app)
        refusal = _refusal(app)
        app_id = f"A-{now_utc():%Y%m%d}-{secrets.token_hex(3)}"
        row = m.Application(
            id=app_id,
            applicant=app["applicant"],
            purpose=str(app["purpose"]),
            status="submitted",
            submitted_at=now_utc(),
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

    def _scope(self, app: dict[str, Any]) -> None:
        """Resolve ``app["datasets"]`` to catalogue entries; check variables and computations.

        A bare dataset name means that dataset at every site that published it.
        """
        # healthfed.compute imports every computation (NumPy, SciPy, ...): imported here,
        # when an application is filed, so that opening a hub (CLI start-up) stays fast.
        from healthfed.compute import registered_computations

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
        # Analysis names may come in either field (``--computation glm`` works); names of
        # registered computations stay literal computations (permits before analyses).
        try:
            app["analyses"], app["computations"] = split_scope(
                [*app["analyses"], *app["computations"]], registered_computations()
            )
        except ValueError as exc:
            raise PermitError(f"application: {exc}") from None

    def application(self, app_id: str) -> dict[str, Any]:
        with self._session() as s:
            row = s.get(m.Application, app_id)
        if row is None:
            raise PermitError(f"no application {app_id!r} at this hub")
        return _app_dict(row)

    def applications(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._session() as s:
            q = select(m.Application).order_by(m.Application.submitted_at)
            if status:
                q = q.where(m.Application.status == status)
            return [_app_dict(r) for r in s.scalars(q)]

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
                "refused", reason, actor, now_utc(),
            )  # fmt: skip
        self._audit(
            "application_refused", actor, decision="refused", application_id=app_id, reason=reason
        )
        return self.application(app_id)
