"""The exact audit of cell suppression: can an attacker pin down a suppressed count?

For every suppressed cell two linear programs (``x >= 0``, all additivity
constraints, released values fixed) give the smallest and largest value the
released numbers allow. If they coincide the cell is recoverable. The constraint
matrix of a table with margins is totally unimodular, so LP bounds are integers
and a width > 0 means at least two integer solutions. Suppressed cells are
audited per connected component (cells linked through shared lines), which keeps
each program small.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.privacy.cell_constraints import CellSystem

__all__ = ["first_determined"]


def first_determined(sys: CellSystem, supp: np.ndarray) -> int | None:
    """The first suppressed cell an LP over the released numbers pins down, or None."""
    vals = np.asarray(sys.values, dtype=float)
    sup = np.flatnonzero(supp)
    if sup.size == 0:
        return None
    # connected components of suppressed cells through lines
    parent = {int(sv): int(sv) for sv in sup}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    rows: list[tuple[list[int], list[float], float]] = []
    for parts, total in sys.lines:
        members = [p for p in parts if supp[p]] + ([total] if supp[total] else [])
        if not members:
            continue
        coef = [1.0] * sum(1 for p in parts if supp[p]) + ([-1.0] if supp[total] else [])
        rhs = -float(sum(vals[p] for p in parts if not supp[p]))
        rhs += 0.0 if supp[total] else float(vals[total])
        rows.append((members, coef, rhs))
        for m in members[1:]:
            parent[find(m)] = find(members[0])
    comps: dict[int, list[int]] = {}
    for sv in sup:
        comps.setdefault(find(int(sv)), []).append(int(sv))
    for comp in comps.values():
        index = {v: i for i, v in enumerate(comp)}
        crow = [r for r in rows if r[0][0] in index]
        A = np.zeros((len(crow), len(comp)))
        b = np.zeros(len(crow))
        for r, (members, coef, rhs) in enumerate(crow):
            for m, c in zip(members, coef, strict=True):
                A[r, index[m]] += c
            b[r] = rhs
        from scipy.optimize import linprog  # scipy only when a table needs the audit

        for v in comp:
            obj = np.zeros(len(comp))
            obj[index[v]] = 1.0
            kw: dict[str, Any] = {"bounds": (0, None), "method": "highs"}
            if len(crow):
                kw.update(A_eq=A, b_eq=b)
            lo = linprog(obj, **kw)
            if lo.status != 0:
                return v  # fail closed: treat an unsolvable audit as disclosure
            if lo.fun < vals[v] - 0.5:
                continue
            hi = linprog(-obj, **kw)
            if hi.status == 3:  # unbounded above
                continue
            if hi.status != 0 or -hi.fun - lo.fun < 0.5:
                return v
    return None
