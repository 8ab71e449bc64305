"""The additivity constraints of a release's count tables, for suppression and its audit.

Each table is released with its margins, so every row and column is a line
``cells + ... == total``; a table declaring ``margin_of`` shares its column totals
with another table's cells. :func:`build_system` numbers every released count
once and lists those lines; the suppression rules and the LP audit work on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from healthfed.errors import PrivacyError
from healthfed.privacy.release import CountTable

__all__ = ["CellSystem", "build_system"]


@dataclass
class CellSystem:
    """Every released number of a release's count tables as one variable, and their lines.

    ``values[v]`` is variable ``v``'s count and ``labels[v]`` its name in the
    ``suppressed`` list; ``lines`` are the additivity constraints
    ``sum(parts) == total`` (rows and columns with their totals); ``cell``,
    ``row_total``, ``col_total`` and ``grand`` give each table's variables. A
    linked margin (``margin_of``) reuses the variables of the table it is the margin
    of, so the shared number is suppressed once, for both.
    """

    values: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    table_of: list[str] = field(default_factory=list)
    lines: list[tuple[list[int], int]] = field(default_factory=list)
    cell: dict[str, np.ndarray] = field(default_factory=dict)
    row_total: dict[str, list[int]] = field(default_factory=dict)
    col_total: dict[str, list[int]] = field(default_factory=dict)
    grand: dict[str, int] = field(default_factory=dict)

    def new(self, value: int, label: str, table: str) -> int:
        self.values.append(int(value))
        self.labels.append(label)
        self.table_of.append(table)
        return len(self.values) - 1

    def same(self, var: int, value: int, what: str) -> int:
        if self.values[var] != int(value):
            raise PrivacyError(f"{what} does not equal the table it is the margin of")
        return var

    def table_vars(self, key: str) -> list[int]:
        """Every variable of table ``key``: its cells and all its margins."""
        return [
            *(int(v) for v in self.cell[key].ravel()),
            *self.row_total[key],
            *self.col_total[key],
            self.grand[key],
        ]


def build_system(tables: Mapping[str, CountTable]) -> CellSystem:
    """The constraint system of ``tables``; refuses empty or inconsistent tables."""
    sys = CellSystem()
    order = [k for k, t in tables.items() if t.margin_of is None]
    order += [k for k, t in tables.items() if t.margin_of is not None]
    for key in order:
        t = tables[key]
        R, C = t.counts.shape
        if R == 0 or C == 0:
            raise PrivacyError(f"count table {key!r} is empty")
        cnt = t.counts
        colsum = cnt.sum(axis=0)
        rowsum = cnt.sum(axis=1)
        total = int(cnt.sum())
        if t.margin_of is not None:
            base = tables.get(t.margin_of)
            if base is None or base.margin_of is not None or base.counts.shape != (1, C):
                raise PrivacyError(
                    f"table {key!r}: margin_of {t.margin_of!r} is not a 1 x {C} table"
                )
            if base.cols != t.cols:
                raise PrivacyError(f"table {key!r}: columns differ from its margin {t.margin_of!r}")
            grand = sys.same(sys.grand[t.margin_of], total, f"table {key!r} grand total")
            ct = [
                sys.same(int(sys.cell[t.margin_of][0, j]), colsum[j], f"table {key!r} column total")
                for j in range(C)
            ]
        else:
            grand = sys.new(total, f"{key}[total]", key)
            ct = (
                [grand]
                if C == 1
                else [sys.new(colsum[j], f"{key}[total, {t.cols[j]}]", key) for j in range(C)]
            )
        cell = np.empty((R, C), dtype=np.int64)
        if R == 1:
            cell[0, :] = ct
            rt = [grand]
        else:
            for i in range(R):
                for j in range(C):
                    cell[i, j] = sys.new(cnt[i, j], f"{key}[{t.rows[i]}, {t.cols[j]}]", key)
            rt = (
                [int(cell[i, 0]) for i in range(R)]
                if C == 1
                else [sys.new(rowsum[i], f"{key}[{t.rows[i]}, total]", key) for i in range(R)]
            )
        if C > 1:
            sys.lines += [([int(v) for v in cell[i, :]], rt[i]) for i in range(R)]
        if R > 1:
            sys.lines += [([int(v) for v in cell[:, j]], ct[j]) for j in range(C)]
        if R > 1 and C > 1:
            sys.lines += [(list(rt), grand), (list(ct), grand)]
        sys.cell[key], sys.row_total[key], sys.col_total[key], sys.grand[key] = cell, rt, ct, grand
    return sys
