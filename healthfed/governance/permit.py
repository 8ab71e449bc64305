"""EHDS data permits: signed by a hub, checked by every node before it touches data.

Format
------
A *signed permit* is a JSON object with two members::

    {"permit": {...body...},
     "signature": {"alg": "Ed25519", "key_id": "<16 hex>", "value": "<base64>"}}

``value`` is the hub's Ed25519 signature over the **canonical JSON** of the body
(:func:`~healthfed.governance.canonical.canonical_json`: sorted keys, no
whitespace, UTF-8). The body (``format = "healthfed-permit/1"``) holds::

    permit_id, application_id, issuer {hub, key_id}, holder, authorised_persons,
    purpose (one Art. 53(1) code), purpose_description, datasets ("site/dataset"),
    variables, analyses, computations, data_form ("anonymised" | "pseudonymised"),
    output_rules {min_cell_count, min_subset, min_sites}, issued_at, not_before, expires

Times are ISO 8601 UTC (``2026-12-31T23:59:59Z``); a permit is valid for
``not_before <= now < expires``.

Node-side checks
----------------
:func:`check_permit` runs them in this order and raises :class:`PermitRefused`
naming the first that fails (its ``check`` attribute): ``missing`` (no permit),
``format``, ``trusted_hub`` (key id not among the node's trusted hub keys),
``signature``, ``not_yet_valid``, ``expired``, ``requester`` (not among the
authorised persons), ``purpose`` (not accepted by the site's policy, or differs
from the purpose the request states), ``dataset`` (``site/dataset`` not in the
permit), ``computation`` (the request's computation is not part of an analysis in the
permit's ``analyses`` (:mod:`healthfed.governance.analyses`), nor listed in its
``computations``, which permits granted before analyses existed use), ``variables``.

Variables a request uses are found conservatively (fail closed): every string
value or object key anywhere in its parameters that is a column name of the
dataset counts as used (:func:`referenced_variables`), and so do the source
columns of every variable the node derives (``age_band`` is a use of ``age``);
the node applies this to the parameters as sent and as the computation
normalised them.

The requester's identity is what the request asserts (the federation sets it);
requests are not signed by the researcher (see the README's Governance section).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthfed.errors import InvalidArgument, PermitError, PermitRefused
from healthfed.governance.analyses import allowed_computations, analyses_using
from healthfed.governance.canonical import canonical_json
from healthfed.governance.keys import key_id
from healthfed.governance.purposes import Purpose

__all__ = [
    "PERMIT_FORMAT",
    "PermitRefused",
    "check_permit",
    "format_time",
    "load_permit",
    "parse_time",
    "referenced_variables",
    "sign_permit",
    "verify_signature",
]

PERMIT_FORMAT = "healthfed-permit/1"
REQUIRED_FIELDS = (
    "format",
    "permit_id",
    "issuer",
    "holder",
    "authorised_persons",
    "purpose",
    "datasets",
    "variables",
    "computations",
    "output_rules",
    "not_before",
    "expires",
)
ALL_PURPOSES: tuple[str, ...] = tuple(p.value for p in Purpose)
CHECKS = (
    "missing",
    "format",
    "trusted_hub",
    "signature",
    "not_yet_valid",
    "expired",
    "requester",
    "purpose",
    "dataset",
    "computation",
    "variables",
)


# --- time ----------------------------------------------------------------------------------
def parse_time(text: str, *, end_of_day: bool = False) -> datetime:
    """An aware UTC datetime from ISO 8601 (``Z`` allowed). A bare date is 00:00 UTC of
    that day, or with ``end_of_day`` 00:00 UTC of the next day (so "expires 2026-12-31"
    means valid through 31 December)."""
    raw = str(text).strip()
    try:
        if len(raw) == 10:
            dt = datetime.fromisoformat(raw).replace(tzinfo=UTC)
            if end_of_day:
                dt += timedelta(days=1)
            return dt
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"not an ISO 8601 date or time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_time(dt: datetime) -> str:
    """``dt`` as ISO 8601 UTC with a ``Z`` and whole seconds."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- signing ---------------------------------------------------------------------------------
def sign_permit(body: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed permit: ``body`` and the hub's Ed25519 signature over its canonical JSON."""
    body = dict(body)
    sig = key.sign(canonical_json(body))
    return {
        "permit": body,
        "signature": {
            "alg": "Ed25519",
            "key_id": key_id(key),
            "value": base64.b64encode(sig).decode("ascii"),
        },
    }


def load_permit(source: Any) -> dict[str, Any]:
    """A signed permit from a dict, a JSON string or a path to a JSON file."""
    import json

    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, Path) or (
        isinstance(source, str) and not source.lstrip().startswith("{")
    ):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PermitError(f"permit file not found: {path}") from None
        where = str(path)
    elif isinstance(source, str):
        text, where = source, "permit"
    else:
        raise PermitError(
            f"a permit is a dict, JSON text or file path, got {type(source).__name__}"
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PermitError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PermitError(f"{where}: a signed permit is a JSON object")
    return value


def _body(signed: Any) -> dict[str, Any]:
    if signed is None:
        raise PermitRefused("missing", "the request carries no data permit; nothing was run")
    if not isinstance(signed, Mapping) or not isinstance(signed.get("permit"), Mapping):
        raise PermitRefused("format", "a signed permit is {'permit': {...}, 'signature': {...}}")
    body = dict(signed["permit"])
    pid = body.get("permit_id") if isinstance(body.get("permit_id"), str) else None
    if body.get("format") != PERMIT_FORMAT:
        raise PermitRefused(
            "format",
            f"unknown permit format {body.get('format')!r}, expected {PERMIT_FORMAT!r}",
            pid,
        )
    missing = [f for f in REQUIRED_FIELDS if f not in body]
    if missing:
        raise PermitRefused("format", f"permit lacks field(s) {missing}", pid)
    for name in ("authorised_persons", "datasets", "variables", "computations", "analyses"):
        value = body.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PermitRefused("format", f"permit field {name!r} must be a list of strings", pid)
    if not isinstance(body["output_rules"], Mapping):
        raise PermitRefused("format", "permit field 'output_rules' must be an object", pid)
    return body


def verify_signature(signed: Any, trusted: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The permit body if ``signed`` is well formed and signed by one of ``trusted``.

    ``trusted`` maps key id -> public key. Raises :class:`PermitRefused` with check
    ``missing``, ``format``, ``trusted_hub`` or ``signature``.
    """
    body = _body(signed)
    pid = str(body["permit_id"])
    sig = signed.get("signature")
    if not isinstance(sig, Mapping) or sig.get("alg") != "Ed25519":
        raise PermitRefused("format", "permit signature must be {'alg': 'Ed25519', ...}", pid)
    kid = sig.get("key_id")
    key = trusted.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise PermitRefused(
            "trusted_hub",
            f"permit {pid} is signed with key {kid!r}, which is not a hub key this site trusts "
            f"(trusted: {sorted(trusted) or 'none'})",
            pid,
        )
    try:
        raw = base64.b64decode(str(sig.get("value", "")), validate=True)
        key.verify(raw, canonical_json(body))
    except (InvalidSignature, binascii.Error, ValueError):
        raise PermitRefused(
            "signature",
            f"permit {pid}: the signature does not verify with the trusted hub key {kid} "
            "(the permit was altered or not signed by that hub)",
            pid,
        ) from None
    return body


# --- scope -----------------------------------------------------------------------------------
def referenced_variables(
    params: Any,
    columns: Iterable[str],
    derived: Mapping[str, Iterable[str]] | None = None,
) -> set[str]:
    """Column names used by ``params``: every string value or key that is a column name.

    ``derived`` maps a variable the node derives (e.g. ``age_band``) to the columns it
    reads (``age``): a derived name counts as a use of its sources, whether or not the
    dataset has them, so a derived grouping never reads a column the permit leaves out.
    """
    cols = set(columns)
    sources = {name: tuple(src) for name, src in (derived or {}).items()}
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value in cols:
                found.add(value)
            found.update(sources.get(value, ()))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list | tuple | set | frozenset):
            for v in value:
                walk(v)

    walk(params)
    return found


@dataclass(frozen=True)
class PermitScope:
    """What a verified permit allows, as the node uses it."""

    body: dict[str, Any]

    @property
    def permit_id(self) -> str:
        return str(self.body["permit_id"])

    @property
    def output_rules(self) -> dict[str, Any]:
        return dict(self.body.get("output_rules") or {})


def check_permit(
    signed: Any,
    *,
    trusted: Mapping[str, Ed25519PublicKey],
    site: str,
    dataset: str,
    computation: str,
    requester: Any,
    purpose: Any = None,
    accepted_purposes: Iterable[str] = ALL_PURPOSES,
    variables: Iterable[str] = (),
    now: datetime | None = None,
) -> PermitScope:
    """Verify ``signed`` and check that it covers this request at this site.

    Raises :class:`PermitRefused` naming the first failed check (see the module doc).
    """
    body = verify_signature(signed, trusted)
    pid = str(body["permit_id"])
    now = now or datetime.now(UTC)
    try:
        not_before = parse_time(body["not_before"])
        expires = parse_time(body["expires"])
    except ValueError as exc:
        raise PermitRefused("format", f"permit {pid}: {exc}", pid) from None
    if now < not_before:
        raise PermitRefused(
            "not_yet_valid", f"permit {pid} is valid from {format_time(not_before)} only", pid
        )
    if now >= expires:
        raise PermitRefused("expired", f"permit {pid} expired at {format_time(expires)}", pid)
    persons = body["authorised_persons"]
    if not isinstance(requester, str) or requester not in persons:
        raise PermitRefused(
            "requester",
            f"requester {requester!r} is not among the persons permit {pid} authorises",
            pid,
        )
    accepted = set(accepted_purposes)
    if body["purpose"] not in {p.value for p in Purpose}:
        raise PermitRefused(
            "purpose",
            f"permit {pid} names purpose {body['purpose']!r}, not an EHDS Art. 53(1) purpose",
            pid,
        )
    if body["purpose"] not in accepted:
        raise PermitRefused(
            "purpose",
            f"site {site!r} does not accept purpose {body['purpose']!r} "
            f"(it accepts {sorted(accepted)})",
            pid,
        )
    if purpose is not None and purpose != body["purpose"]:
        raise PermitRefused(
            "purpose",
            f"the request states purpose {purpose!r} but permit {pid} is for {body['purpose']!r}",
            pid,
        )
    ident = f"{site}/{dataset}"
    if ident not in body["datasets"]:
        raise PermitRefused(
            "dataset", f"dataset {ident!r} is not in permit {pid} ({body['datasets']})", pid
        )
    granted = list(body.get("analyses", []))
    if computation not in allowed_computations(granted, body["computations"]):
        needs = analyses_using(computation)
        scope = [f"analyses {granted}"] if granted else []
        if body["computations"]:
            scope.append(f"computations {body['computations']}")
        raise PermitRefused(
            "computation",
            f"permit {pid} does not cover computation {computation!r}"
            + (f" (part of the analysis {' or '.join(needs)})" if needs else "")
            + f"; it grants {' and '.join(scope) or 'nothing'}",
            pid,
        )
    outside = sorted(set(variables) - set(body["variables"]))
    if outside:
        raise PermitRefused(
            "variables", f"variable(s) {outside} are outside the scope of permit {pid}", pid
        )
    return PermitScope(body)
