"""Releasing pooled results under a permit, and the transparency register (EHDS Art. 58).

:meth:`ReleaseDesk.release` re-checks the permit (the hub's own signature,
validity, not revoked, requester, computation, datasets) and the
contributing-site minimum before the researcher gets a pooled result, and
records what was released (its SHA-256 and size, never its rows). A failed
check withholds the result and is audited. :meth:`ReleaseDesk.check_active`
makes the same permit checks before a round is sent, so a revoked, expired or
foreign permit stops the round before any site computes.

:meth:`ReleaseDesk.transparency` exports the register: every permit granted
and every result released, as JSON and HTML.
"""

from __future__ import annotations

import html
import json
import math
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from healthfed.errors import PermitError, ThresholdViolation
from healthfed.governance.canonical import canonical_json, sha256_hex
from healthfed.governance.permit import check_permit, format_time, load_permit
from healthfed.governance.purposes import Purpose
from healthfed.hub import models as m
from healthfed.hub.core import as_utc, now_utc
from healthfed.hub.permits import PermitDesk

__all__ = ["ReleaseDesk"]


def _permit_id(signed: dict[str, Any]) -> str:
    return str((signed.get("permit") or {}).get("permit_id"))


def _a_site_with(signed: dict[str, Any], dataset: str) -> str:
    """A site whose ``dataset`` the (not yet verified) permit lists; ``"*"`` if none does.

    :func:`check_permit` then verifies the permit and that it lists ``site/dataset``,
    so a permit that covers ``dataset`` nowhere is refused naming ``*/dataset``.
    """
    listed = (signed.get("permit") or {}).get("datasets")
    suffix = f"/{dataset}"
    for ident in listed if isinstance(listed, list) else []:
        if isinstance(ident, str) and ident.endswith(suffix) and len(ident) > len(suffix):
            return ident[: -len(suffix)]
    return "*"


class ReleaseDesk(PermitDesk):
    """Releasing results under a permit, the record of releases, the transparency register."""

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
        pid = _permit_id(signed)
        fields = {"permit_id": pid, "computation": computation, "dataset": dataset}
        with self._withheld_on_failure(requester, fields):
            body = self._active_permit(
                signed,
                site=sorted(sites)[0] if sites else "",
                dataset=dataset,
                computation=computation,
                requester=requester,
                now=now,
            )
            outside = sorted(f"{s}/{dataset}" for s in sites)
            outside = [d for d in outside if d not in body["datasets"]]
            if outside:
                raise PermitError(f"dataset(s) {outside} are not in permit {pid}")
            min_sites = int(body["output_rules"].get("min_sites", 2))
            if len(sites) < min_sites:
                raise ThresholdViolation(
                    f"only {len(sites)} site(s) contributed; permit {pid} requires {min_sites}"
                )
        return self._record_release(
            pid, requester, computation, dataset, sites, result, suppressed_cells, fields
        )

    def check_active(
        self,
        permit: Any,
        *,
        requester: str,
        computation: str,
        dataset: str,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Check, before a round, that ``permit`` would let the hub release its result.

        The permit checks of :meth:`release` without a result: the permit is this hub's
        (signature), active (not revoked), valid now, and names ``requester``,
        ``computation`` and ``dataset`` (at some site). Cheap: one signature and one
        database lookup. Returns the permit's body.

        Raises
        ------
        PermitError
            The permit is revoked, expired, not yet valid, another hub's, or does not
            cover the round; audited as a ``withheld`` release, as :meth:`release` does.
        """
        signed = load_permit(permit)
        fields = {"permit_id": _permit_id(signed), "computation": computation, "dataset": dataset}
        with self._withheld_on_failure(requester, fields):
            body = self._active_permit(
                signed,
                site=_a_site_with(signed, dataset),
                dataset=dataset,
                computation=computation,
                requester=requester,
                now=now,
            )
        return body

    def _active_permit(
        self,
        signed: dict[str, Any],
        *,
        site: str,
        dataset: str,
        computation: str,
        requester: str,
        now: datetime | None,
    ) -> dict[str, Any]:
        """The body of ``signed`` if this hub signed it, it is active here and covers the round."""
        body = check_permit(
            signed,
            trusted={self.key_id: self._key.public_key()},
            site=site,
            dataset=dataset,
            computation=computation,
            requester=requester,
            now=now,
        ).body
        pid = _permit_id(signed)
        with self._session() as s:
            row = s.get(m.Permit, pid)
        if row is None:
            raise PermitError(f"permit {pid} was not granted by this hub")
        if row.status != "active":
            raise PermitError(f"permit {pid} is {row.status}: {row.revoked_reason or ''}")
        return body

    @contextmanager
    def _withheld_on_failure(self, requester: str, fields: dict[str, Any]) -> Iterator[None]:
        """Audit a failed check as a ``withheld`` release, and let its error through."""
        try:
            yield
        except (PermitError, ThresholdViolation) as exc:
            self._audit("release", requester, decision="withheld", reason=str(exc), **fields)
            raise

    def _record_release(
        self,
        pid: str,
        requester: str,
        computation: str,
        dataset: str,
        sites: Sequence[str],
        result: dict[str, Any],
        suppressed_cells: int | None,
        fields: dict[str, Any],
    ) -> str:
        """Store the released result and audit its release; returns the release id."""
        result = _jsonable(result)
        data = canonical_json(result)
        rel_id = f"R-{now_utc():%Y%m%d}-{secrets.token_hex(4)}"
        with self._session() as s, s.begin():
            s.add(
                m.Release(
                    id=rel_id,
                    permit_id=pid,
                    requester=requester,
                    computation=computation,
                    dataset=dataset,
                    sites=sorted(sites),
                    released_at=now_utc(),
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
                    "released_at": format_time(as_utc(r.released_at)),
                    "released_bytes": r.released_bytes,
                    "suppressed_cells": r.suppressed_cells,
                    **_perturbation(r.result),
                    "result_sha256": r.result_sha256,
                }
                for r in rows
            ]

    # --- transparency (EHDS Art. 58) -------------------------------------------------------------
    def transparency(self, out_dir: str | Path | None = None) -> tuple[Path, Path]:
        """Export the transparency register as ``transparency.json`` and ``transparency.html``.

        It lists every permit granted (holder, purpose, datasets, dates, status) and every
        released result (permit, computation, dataset, sites, date, size, suppressed cells,
        cells perturbed by the cell key method with each site's published perturbation
        parameters, SHA-256 of the released result) — never person-level data.
        """
        out = Path(out_dir) if out_dir is not None else self.directory / "transparency"
        out.mkdir(parents=True, exist_ok=True)
        purposes = {p.value: f"{p.article}: {p.description}" for p in Purpose}
        register: dict[str, Any] = {
            "hub": self.name,
            "generated_at": format_time(now_utc()),
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


def _perturbation(result: Any) -> dict[str, Any]:
    """How many cells the sites perturbed, and each site's published cell key parameters."""
    res = result if isinstance(result, dict) else {}
    return {
        "perturbed_cells": int(res.get("perturbed_cells") or 0),
        "perturbation": res.get("perturbation") or {},
    }


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON: NaN/inf become None, unknown types their ``str``."""

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


def _ptable_text(per_site: dict[str, Any]) -> str:
    """``site: D=.., V=.., js=.., m=..`` for the register's table."""
    return "; ".join(
        f"{site}: D={p.get('max_deviation')}, V={p.get('variance')}, js={p.get('js')}, "
        f"m={p.get('magnitude_share')}"
        for site, p in sorted(per_site.items())
        if isinstance(p, dict)
    )


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
         "Suppressed cells", "Perturbed cells", "Cell key parameters", "SHA-256"],
        (
            [r["release_id"], r["permit_id"], r["computation"], r["dataset"], ", ".join(r["sites"]),
             r["released_at"], r["released_bytes"], r["suppressed_cells"], r["perturbed_cells"],
             _ptable_text(r["perturbation"]), r["result_sha256"]]
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
