"""What a node reads from a request and writes about it: shape checks, output rules, audit sizes.

A request is data, never code: a JSON object naming a registered computation, a
dataset and parameters (plus the permit, requester, purpose and an id). These
helpers check its shape before anything else and compute the audit record's
numbers; the decisions themselves are :class:`healthfed.node.runtime.Node`'s.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from healthfed.errors import PolicyDenied
from healthfed.policy import SitePolicy

__all__ = [
    "REQUEST_FIELDS",
    "apply_output_rules",
    "parse_request",
    "permit_id",
    "released_bytes",
    "round_count",
    "suppressed_cells",
]

REQUEST_FIELDS = {
    "computation",
    "dataset",
    "params",
    "request_id",
    "requester",
    "permit",
    "purpose",
}


def parse_request(request: Any) -> tuple[str, str, dict[str, Any]]:
    """``(computation, dataset, raw params)`` of a well-formed request.

    Raises
    ------
    PolicyDenied
        The request is not an object, has an unknown field, names no computation
        or its ``params`` is not an object.
    """
    if not isinstance(request, dict):
        raise PolicyDenied("a request must be a JSON object")
    unknown = sorted(set(request) - REQUEST_FIELDS)
    if unknown:
        raise PolicyDenied(f"request has unknown field(s) {unknown}")
    name = request.get("computation")
    if not isinstance(name, str):
        raise PolicyDenied("request field 'computation' must name a registered computation")
    raw_params = request.get("params") or {}
    if not isinstance(raw_params, dict):
        raise PolicyDenied("request field 'params' must be an object")
    return name, str(request.get("dataset")), raw_params


def round_count(n: int, base: int) -> int:
    """``n`` rounded to the nearest multiple of ``base`` (what audit records show)."""
    base = max(1, int(base))
    return int(base * math.floor(n / base + 0.5))


def permit_id(permit: Any) -> str | None:
    """The id of a signed permit as sent (``None`` when there is none to read)."""
    if isinstance(permit, dict) and isinstance(permit.get("permit"), dict):
        pid = permit["permit"].get("permit_id")
        return pid if isinstance(pid, str) else None
    return None


def suppressed_cells(result: Any) -> int | None:
    """How many cells the disclosure filter withheld from ``result`` (if it says)."""
    if isinstance(result, dict) and isinstance(result.get("suppressed_cells"), int):
        return int(result["suppressed_cells"])
    return None


def released_bytes(result: Any) -> int:
    """The size of ``result`` as JSON, for the audit record."""
    return len(json.dumps(result, allow_nan=False, default=str))


def apply_output_rules(policy: SitePolicy, rules: dict[str, Any]) -> SitePolicy:
    """The stricter of the site's policy and the permit's output rules (never looser)."""
    changes: dict[str, Any] = {}
    for name in ("min_cell_count", "min_subset"):
        value = rules.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > getattr(policy, name):
            changes[name] = value
    return replace(policy, **changes) if changes else policy
