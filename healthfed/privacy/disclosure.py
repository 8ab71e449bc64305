"""The node's disclosure filter: the only door through which aggregates leave a node.

A computation's ``run`` returns a :class:`Release` -- a typed structure made of
parts this filter understands -- and :func:`disclose` turns it into the plain
JSON-able dict that is sent to the hub. Anything else is refused (fail closed):
the filter never serialises an object it cannot reason about.

Parts of a release
------------------
:class:`CountTable`
    Counts of an R x C table. They are released *with margins* (row totals,
    column totals, grand total). A table may declare ``margin_of``: another
    1 x C table of the same release whose cells are its column totals (e.g. the
    "N per group" row of a Table 1 is every variable's column margin). Linked
    margins are the *same* released number, so their suppression state is
    shared and audited jointly.
:class:`NumericSummary`
    Per-cell moments (n, mean, M2), optional min/max and an optional histogram
    over a fixed grid, each tied to one count cell (the non-missing count of a
    variable in a group) plus an optional overall cell tied to the row total.

Rules applied (DataSHIELD's ``nfilter.tab`` / ``nfilter.subset`` idea, stricter)
-----------------------------------------------------------------------------
1. Primary suppression: a count ``0 < n < min_cell_count`` is suppressed (``None``
   in the output, listed, never reported as 0). Zeros are released.
2. Secondary suppression, heuristic: for every additivity line (a row or a
   column of a table with its total), if the total is released the suppressed
   parts must be >= 2 and sum to >= ``min_cell_count``; if the total is
   suppressed at least one part must be too. Otherwise the smallest released
   non-zero cell on the line is suppressed (interior cells before margins,
   because a margin is shared by many lines).
3. Exact audit: for every suppressed cell two linear programs (``x >= 0``, all
   additivity constraints, released values fixed) give the smallest and largest
   value an attacker could infer. If they coincide the cell is recoverable and
   more is suppressed (first a neighbour on one of its lines, then its whole
   table, finally everything) until the audit passes. The constraint matrix of
   a table with margins is totally unimodular, so LP bounds are integers and a
   width > 0 means at least two integer solutions.
4. Statistics (mean, SD via M2, histogram bins) of a cell are released only when
   its count is released and >= ``min_subset``. Complement rule: when the
   overall statistic of a partition is released, the cells whose statistics are
   withheld must be >= 2 and hold >= ``min_subset`` patients together (otherwise
   the smallest released cells are withheld too, or the overall), so nothing is
   derivable by subtraction.
5. Histograms: all released cells of one variable share one set of merged bins
   (grid bins merged left to right until every released series -- and the
   overall-minus-released complement -- has 0-or->=``min_subset`` patients per
   merged bin), so bins cannot be differenced either.
6. Min/max only if ``policy.allow_min_max``.
0. Before all of these, with ``policy.count_perturbation = "cell_key"`` (the
   default), every count of a table that carries cell keys is replaced by its
   cell-key-perturbed value and its numeric cells' mean and M2 get their
   cell-key noise (:mod:`healthfed.privacy.cellkey`). Perturbed counts are 0 or
   ``>= min_cell_count``, so rules 1-3 then find nothing to suppress in them; the
   reply says how many cells were perturbed (``perturbed_cells``).

The typed parts are in :mod:`healthfed.privacy.release`; rules 1-3 in
:mod:`healthfed.privacy.suppression` (on the constraint system of
:mod:`healthfed.privacy.cell_constraints`, audited by
:mod:`healthfed.privacy.lp_audit`); rules 4-6 in
:mod:`healthfed.privacy.numeric_disclosure`.

Everything released is converted to Python ``int``/``float``/``str``/``None``;
non-finite numbers are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.errors import PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.cell_constraints import CellSystem, build_system
from healthfed.privacy.cellkey import cell_keys, ptable_for, ptable_parameters
from healthfed.privacy.model_release import ModelStatistics, disclose_model_statistics
from healthfed.privacy.numeric_disclosure import disclose_numeric, merge_histogram_bins
from healthfed.privacy.release import CellMoments, CountTable, NumericSummary, Release
from healthfed.privacy.suppression import suppress_counts, withheld_reasons

RELEASE_FORMAT = "healthfed.release/1"

__all__ = [
    "CellMoments",
    "CountTable",
    "NumericSummary",
    "Release",
    "disclose",
    "merge_histogram_bins",
]


def _meta_ok(x: Any) -> bool:
    if x is None or isinstance(x, str | bool):
        return True
    if isinstance(x, list | tuple):
        return all(_meta_ok(v) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _meta_ok(v) for k, v in x.items())
    return False


def _check_release(release: Any) -> None:
    """Fail closed on anything but a well-formed :class:`Release`."""
    if not isinstance(release, Release):
        raise PrivacyError(
            f"disclosure filter refused a {type(release).__name__}: only Release objects leave a node"
        )
    if not isinstance(release.tables, dict) or not all(
        isinstance(t, CountTable) for t in release.tables.values()
    ):
        raise PrivacyError("release.tables must map names to CountTable")
    if not isinstance(release.numeric, dict) or not all(
        isinstance(s, NumericSummary) for s in release.numeric.values()
    ):
        raise PrivacyError("release.numeric must map names to NumericSummary")
    if not isinstance(release.meta, dict) or not _meta_ok(release.meta):
        raise PrivacyError("release.meta may hold only strings, booleans and None")


def disclose(release: Release | ModelStatistics, policy: SitePolicy) -> dict[str, Any]:
    """Apply the site's disclosure rules and return the only thing that leaves the node.

    Parameters
    ----------
    release
        What a computation's ``run`` produced: a :class:`Release`, or the model
        computations' :class:`~healthfed.privacy.model_release.ModelStatistics`
        (checked by its own filter, ``disclose_model_statistics``).
    policy
        The site's policy (``min_cell_count``, ``min_subset``, ``allow_min_max``).

    Returns
    -------
    dict
        JSON-able: ``{"format", "computation", "meta", "tables", "numeric",
        "suppressed", "suppressed_cells", "withheld", "perturbed_cells"}``
        (``withheld``: how many values were withheld, by rule). Suppressed values
        are ``None``; perturbed counts are released as perturbed.

    Raises
    ------
    PrivacyError
        ``release`` is neither a :class:`Release` nor ``ModelStatistics`` (or is
        internally inconsistent, or a rule cannot be met): nothing is released.
    """
    if isinstance(release, ModelStatistics):
        return disclose_model_statistics(release, policy)
    _check_release(release)
    sys = build_system(release.tables)
    perturbation = cell_keys(sys, release.tables, ptable_for(policy))
    sys.values = perturbation.values  # rule 0: perturb before suppression
    supp = suppress_counts(sys, policy) if sys.values else np.zeros(0, dtype=bool)
    suppressed: list[str] = [sys.labels[v] for v in np.flatnonzero(supp)]
    withheld = withheld_reasons(sys, supp, policy) if sys.values else {}
    tables_out = {key: _table_out(t, key, sys, supp) for key, t in release.tables.items()}
    numeric_out: dict[str, Any] = {}
    for key, ns in release.numeric.items():
        numeric_out[key] = disclose_numeric(
            key, ns, release.tables, sys, supp, policy, suppressed, perturbation
        )
    result = {
        "format": RELEASE_FORMAT,
        "computation": str(release.computation),
        "meta": release.meta,
        "tables": tables_out,
        "numeric": numeric_out,
        "suppressed": suppressed,
        "suppressed_cells": len(suppressed),
        # why: counts by rule, plus statistics withheld with their cells (rules 4-5)
        "withheld": {**withheld, "statistics": len(suppressed) - sum(withheld.values())},
        "perturbed_cells": perturbation.perturbed,
    }
    if perturbation.perturbed:  # the published parameters of the noise
        result["perturbation"] = ptable_parameters(policy)
    _final_check(tables_out, policy)
    return result


def _table_out(t: CountTable, key: str, sys: CellSystem, supp: np.ndarray) -> dict[str, Any]:
    """One table as released: cells and margins, suppressed values ``None``."""
    vals = sys.values

    def out(v: int) -> int | None:
        return None if supp[v] else int(vals[v])

    return {
        "rows": list(t.rows),
        "cols": list(t.cols),
        "counts": [[out(int(v)) for v in row] for row in sys.cell[key]],
        "row_totals": [out(v) for v in sys.row_total[key]],
        "col_totals": [out(v) for v in sys.col_total[key]],
        "total": out(sys.grand[key]),
    }


def _final_check(tables_out: dict[str, Any], policy: SitePolicy) -> None:
    """Defence in depth: no released count may lie in 1..min_cell_count-1."""
    k = policy.min_cell_count
    for key, t in tables_out.items():
        flat = [v for row in t["counts"] for v in row]
        flat += [*t["row_totals"], *t["col_totals"], t["total"]]
        if any(v is not None and 0 < v < k for v in flat):
            raise PrivacyError(f"table {key!r}: a small count escaped suppression")
