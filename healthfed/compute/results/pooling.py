"""Pooling the sites' disclosed count tables and moments (the rule every result follows).

A pooled cell is the sum (counts) or the exact combination (moments, histograms)
of the sites' released cells, and is ``None`` as soon as one contributing site
withheld that cell. A pooled value is thus never a partial sum that could be
mistaken for the total, and no suppressed site cell can be derived from a pooled
cell minus the released site cells. A site whose count for a cell is a released 0
contributes nothing to that cell.
"""

from __future__ import annotations

import math
from typing import Any

from healthfed.errors import InvalidArgument

__all__ = [
    "ALL",
    "MISSING",
    "OVERALL",
    "POOLED",
    "SUPP",
    "TOTAL",
    "disclosed_cells",
    "html_table",
    "perturbation_of",
    "perturbed_cells",
    "pool_counts",
    "pool_moments",
    "reply_sites",
]

MISSING = "(missing)"
ALL = "all"
OVERALL = "overall"
POOLED = "pooled"
TOTAL = "Total"
SUPP = "supp."

Cells = dict[tuple[str, str], int | None]


def reply_sites(replies: dict[str, dict[str, Any]]) -> list[str]:
    """The replying sites, sorted; refuses an empty set of replies (nothing to pool)."""
    if not replies:
        raise InvalidArgument("no site replies to combine")
    return sorted(replies)


def disclosed_cells(t: dict[str, Any]) -> Cells:
    """A disclosed table as {(row, col): value}; totals under row/col ``Total``/``overall``."""
    cols = [OVERALL if c == ALL else c for c in t["cols"]]
    d: Cells = {}
    for i, r in enumerate(t["rows"]):
        for j, c in enumerate(cols):
            d[(r, c)] = t["counts"][i][j]
        d[(r, OVERALL)] = t["row_totals"][i]
    for j, c in enumerate(cols):
        d[(TOTAL, c)] = t["col_totals"][j]
    d[(TOTAL, OVERALL)] = t["total"]
    return d


def perturbed_cells(replies: dict[str, dict[str, Any]], sites: list[str]) -> int:
    """How many released cells the sites perturbed (cell key method), summed."""
    return int(sum(int(replies[s].get("perturbed_cells", 0)) for s in sites))


def perturbation_of(replies: dict[str, dict[str, Any]], sites: list[str]) -> dict[str, Any]:
    """Each perturbing site's published cell key parameters (for the transparency register)."""
    return {s: replies[s]["perturbation"] for s in sites if replies[s].get("perturbation")}


def pool_counts(views: list[Cells]) -> Cells:
    """Cell-wise sums of the sites' tables; ``None`` where any site withheld the cell."""
    keys: dict[tuple[str, str], None] = {}
    for v in views:
        keys.update(dict.fromkeys(v))
    out: Cells = {}
    for k in keys:
        vals = [v.get(k, 0) for v in views]
        out[k] = None if any(x is None for x in vals) else int(sum(vals))  # type: ignore[arg-type]
    return out


def pool_moments(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool released cells exactly: Chan et al.'s formula for (n, mean, M2)."""
    n = sum(int(p["n"]) for p in parts)
    mean = math.fsum(p["n"] * p["mean"] for p in parts) / n
    m2 = math.fsum(p["m2"] for p in parts) + math.fsum(
        p["n"] * (p["mean"] - mean) ** 2 for p in parts
    )
    out: dict[str, Any] = {"n": n, "mean": mean, "sd": math.sqrt(m2 / (n - 1)) if n > 1 else None}
    if all("min" in p for p in parts):
        out["min"] = min(p["min"] for p in parts)
        out["max"] = max(p["max"] for p in parts)
    ok = all("hist" in p or "hists" in p for p in parts)
    out["hists"] = [h for p in parts for h in p.get("hists", [p.get("hist")])] if ok else None
    return out


def html_table(frame: Any, notes: str = "") -> str:
    """A result as notebooks show it (``_repr_html_``): its table, withheld as ``supp.``, notes."""
    import html

    out = frame.to_html(na_rep=SUPP, border=0)
    if notes:
        out += "<pre style='white-space:pre-wrap'>" + html.escape(notes) + "</pre>"
    return out
