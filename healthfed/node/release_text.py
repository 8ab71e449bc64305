"""A held result as the data steward reviews it (``healthfed node pending``): the values.

:func:`release_lines` turns a disclosed reply, as the airlock keeps it, into
readable lines: every count table as a grid (withheld cells shown as ``-``), every
numeric summary's released moments and histogram bins, every model statistic's
array, scalar and count. These are exactly the numbers that leave the node on
approval (nothing else is added or computed), so the steward approves values, not
a byte count.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["count_values", "release_lines"]

#: Values shown per table, histogram or array unless the steward asks for all.
SHOWN = 24
_SKIP = {"format", "computation", "meta", "tables", "numeric", "arrays", "scalars", "counts"}
_QUIET = {"suppressed", "suppressed_cells", "withheld", "perturbed_cells", "kind"}


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.6g}"
    return str(x)


def count_values(result: Any) -> int:
    """How many numbers ``result`` releases (meta data and labels not counted)."""
    if isinstance(result, dict):
        return sum(
            count_values(v) for k, v in result.items() if k not in ("meta", "format", "shape")
        )
    if isinstance(result, list):
        return sum(count_values(v) for v in result)
    return int(isinstance(result, int | float) and not isinstance(result, bool))


def _limited(values: list[str], full: bool) -> str:
    if full or len(values) <= SHOWN:
        return ", ".join(values)
    return ", ".join(values[:SHOWN]) + f", ... ({len(values) - SHOWN} more; --full shows all)"


def _table(name: str, t: dict[str, Any], full: bool) -> list[str]:
    rows, cols, counts = t.get("rows", []), t.get("cols", []), t.get("counts", [])
    lines = [f"table {name!r} ({len(rows)} x {len(cols)}):"]
    cells = [[str(r)] + [_num(c) for c in row] for r, row in zip(rows, counts, strict=False)]
    header = [""] + [str(c) for c in cols]
    if "row_totals" in t:  # the margins are released too
        header.append("total")
        for cell, v in zip(cells, t["row_totals"], strict=False):
            cell.append(_num(v))
        cells.append(
            ["total"] + [_num(v) for v in t.get("col_totals", [])] + [_num(t.get("total"))]
        )
    shown = cells if full or len(cells) <= SHOWN else cells[:SHOWN]
    widths = [max(len(r[i]) for r in [header, *shown]) for i in range(len(header))]
    for r in [header, *shown]:
        lines.append("  " + "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in
                                      enumerate(zip(r, widths, strict=True))))  # fmt: skip
    if len(shown) < len(cells):
        lines.append(f"  ... ({len(cells) - len(shown)} more rows; --full shows all)")
    return lines


def _numeric(var: str, block: dict[str, Any], tables: dict[str, Any], full: bool) -> list[str]:
    cols = tables.get(block.get("table", ""), {}).get("cols", [])
    cells = block.get("cells") or []
    labelled = list(zip([str(c) for c in cols], cells, strict=False))
    if block.get("overall") is not None and len(cells) != 1:
        labelled.append(("overall", block["overall"]))
    lines = []
    for label, cell in labelled:
        where = f"{var} [{label}]"
        if cell is None:
            lines.append(f"{where}: withheld")
            continue
        stats = ", ".join(f"{k} {_num(v)}" for k, v in cell.items() if k != "hist")
        lines.append(f"{where}: {stats}")
        hist = cell.get("hist")
        if hist:
            edges, counts = hist.get("edges", []), hist.get("counts", [])
            bins = [
                f"[{_num(a)}, {_num(b)}) {_num(n)}"
                for a, b, n in zip(edges[:-1], edges[1:], counts, strict=False)
            ]
            lines.append(f"  histogram, {len(bins)} bins: {_limited(bins, full)}")
    return lines


def release_lines(result: Any, full: bool = False) -> list[str]:
    """The values of a held result, one block per table, summary or statistic."""
    if not isinstance(result, dict):
        return [f"value: {_num(result)}"]
    lines = [f"{count_values(result)} number(s) to release:"]
    tables = result.get("tables") or {}
    for name, t in tables.items():
        lines += _table(name, t, full)
    for var, block in (result.get("numeric") or {}).items():
        lines += _numeric(var, block, tables, full)
    for name, arr in (result.get("arrays") or {}).items():
        data = arr.get("data", []) if isinstance(arr, dict) else arr
        shape = (
            "x".join(str(s) for s in arr.get("shape", [len(data)]))
            if isinstance(arr, dict)
            else len(data)
        )
        lines.append(f"{name} [{shape}]: {_limited([_num(v) for v in data], full)}")
    for group in ("scalars", "counts"):
        for name, v in (result.get(group) or {}).items():
            vals = v if isinstance(v, list) else [v]
            lines.append(f"{name}: {_limited([_num(x) for x in vals], full)}")
    for k, v in result.items():
        if k in _SKIP or k in _QUIET:
            continue
        if isinstance(v, list):
            lines.append(f"{k}: {_limited([_num(x) for x in v], full)}")
        elif isinstance(v, dict):
            lines.append(f"{k}: " + _limited([f"{a} {_num(b)}" for a, b in v.items()], full))
        else:
            lines.append(f"{k}: {_num(v)}")
    return lines
