"""The typed release a computation hands the node's disclosure filter.

A computation's ``run`` returns a :class:`Release` made of parts the filter
(:func:`healthfed.privacy.disclosure.disclose`) understands -- count tables and
numeric summaries tied to their count cells -- never rows or free-form numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healthfed.errors import PrivacyError

__all__ = ["CellMoments", "CountTable", "NumericSummary", "Release"]


@dataclass(frozen=True)
class CountTable:
    """Counts of an R x C table, released with row/column/grand totals.

    Parameters
    ----------
    rows, cols
        Labels of the rows and columns (e.g. levels, groups).
    counts
        Non-negative integer counts, shape ``(len(rows), len(cols))``.
    margin_of
        Key of a 1 x C table in the same release whose cells are this table's
        column totals (shared, hence jointly suppressed and audited).
    keys
        Cell keys, same shape as ``counts``: the sum of each cell's record keys
        modulo ``2^32`` (:mod:`healthfed.privacy.cellkey`). A table with keys is
        perturbed by the cell key method when the site's policy says so; one
        without is released exact (with suppression).
    """

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    counts: np.ndarray
    margin_of: str | None = None
    keys: np.ndarray | None = None

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if self.keys is not None:
            keys = np.asarray(self.keys, dtype=np.int64)
            if keys.shape != counts.shape or (
                keys.size and (keys.min() < 0 or keys.max() >= 2**32)
            ):
                raise PrivacyError("count table keys must match its counts and lie in [0, 2^32)")
            object.__setattr__(self, "keys", keys)
        if counts.ndim != 2 or counts.shape != (len(self.rows), len(self.cols)):
            raise PrivacyError(
                f"count table shape {counts.shape} does not match {len(self.rows)} rows x "
                f"{len(self.cols)} columns"
            )
        if counts.size and (not np.all(np.isfinite(counts)) or np.any(counts < 0)):
            raise PrivacyError("count table holds negative or non-finite counts")
        if counts.size and np.any(counts != np.round(counts)):
            raise PrivacyError("count table holds non-integer counts")
        object.__setattr__(self, "counts", counts.astype(np.int64))
        object.__setattr__(self, "rows", tuple(str(r) for r in self.rows))
        object.__setattr__(self, "cols", tuple(str(c) for c in self.cols))


@dataclass(frozen=True)
class CellMoments:
    """Moments of one variable in one cell: n, mean, M2 = sum((x - mean)^2).

    ``hist`` holds counts on the summary's fixed grid (clipped to declared bounds).
    """

    n: int
    mean: float
    m2: float
    minimum: float | None = None
    maximum: float | None = None
    hist: np.ndarray | None = None


@dataclass(frozen=True)
class NumericSummary:
    """Statistics of a numeric variable per column of a count table.

    Parameters
    ----------
    table, row
        The count table and its row whose cells are these cells' ``n``
        (the non-missing count); the statistic is released only if that count is.
    cells
        One :class:`CellMoments` per column of the table.
    overall
        Moments over all columns (tied to the row total); ``None`` when the
        table has one column (then ``cells[0]`` is the overall).
    grid
        ``(low, high, bins)`` of the histograms, from the declared bounds; ``None``
        when no histogram is released.
    """

    table: str
    row: str
    cells: tuple[CellMoments, ...]
    overall: CellMoments | None = None
    grid: tuple[float, float, int] | None = None


@dataclass(frozen=True)
class Release:
    """Everything a computation wants to release, before the filter.

    ``meta`` carries request-level public facts (variable kinds, the grouping
    variable) and may hold only strings, booleans, ``None`` and lists/dicts of
    those -- never numbers, so no statistic can bypass the rules through it.
    """

    computation: str
    tables: dict[str, CountTable]
    numeric: dict[str, NumericSummary] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
