"""Node side of ``subgroup_metrics``: a classifier's confusion counts, moments and histograms per group.

The site scores its evaluation rows with a JSON model description (as
``evaluate_binary`` does) and returns, for every requested sensitive attribute
and each of its groups, one :class:`~healthfed.privacy.disclosure.Release` for
its ordinary disclosure filter (what the release holds is listed in
:mod:`healthfed.compute.subgroups`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.compute.evaluation.node import validate_evaluate
from healthfed.compute.fedavg import design_from_params, node_logits, sigmoid
from healthfed.data.sql import quote_ident, sql_literal
from healthfed.errors import DataError, PolicyDenied
from healthfed.privacy.disclosure import CellMoments, CountTable, NumericSummary, Release

__all__ = [
    "AGE_BANDS",
    "AGE_BAND_LABELS",
    "CELLS",
    "DERIVED_VARIABLES",
    "SUBGROUP_METRICS",
    "attribute_groups",
    "run_subgroups",
    "validate_subgroups",
]

SUBGROUP_METRICS = "subgroup_metrics"
#: Fixed, public cut points of ``age_band`` (years): [0,18), [18,40), [40,60), [60,75), [75, inf).
AGE_BANDS: tuple[float, ...] = (18.0, 40.0, 60.0, 75.0)
AGE_BAND_LABELS: tuple[str, ...] = ("0-17", "18-39", "40-59", "60-74", "75+")
#: Every variable a node derives from its columns, with the columns it reads. A permit's
#: variable check counts a derived name as a use of its sources (``age_band`` reads ``age``),
#: so a derived grouping never reaches a column the permit does not grant.
DERIVED_VARIABLES: dict[str, tuple[str, ...]] = {"age_band": ("age",)}
#: The confusion cells at the threshold, in the order of the ``conf.<attribute>`` table.
CELLS = ("tp", "fn", "fp", "tn")
MISSING_GROUP = "(missing)"
DEFAULT_BINS = 1000
MAX_ATTRIBUTES = 10


def attribute_groups(descriptor: Any, attribute: str) -> list[tuple[str, str]]:
    """``[(label, SQL predicate)]`` of an attribute's groups, in a fixed public order."""
    if attribute == "all":
        return [("all", "TRUE")]
    if attribute == "age_band":
        (source,) = DERIVED_VARIABLES["age_band"]
        col = descriptor.column(source)
        if not col.is_numeric:
            raise DataError("attribute 'age_band' needs a numeric column 'age'")
        a = f"CAST({quote_ident(source)} AS DOUBLE)"
        cuts = (float("-inf"), *AGE_BANDS, float("inf"))
        out = []
        for label, lo, hi in zip(AGE_BAND_LABELS, cuts[:-1], cuts[1:], strict=True):
            conds = [f"{a} IS NOT NULL"]
            if lo != float("-inf"):
                conds.append(f"{a} >= {lo!r}")
            if hi != float("inf"):
                conds.append(f"{a} < {hi!r}")
            out.append((label, " AND ".join(conds)))
        return [*out, (MISSING_GROUP, f"{a} IS NULL")]
    col = descriptor.column(attribute)
    q = quote_ident(attribute)
    if col.type == "binary":
        levels = list(col.levels or ("0", "1"))
        groups = [(levels[i], f"CAST({q} AS INTEGER) = {i}") for i in (0, 1)]
    elif col.type == "categorical":
        if col.levels is None:
            raise DataError(f"attribute {attribute!r}: a sensitive attribute needs declared levels")
        groups = [(lev, f"CAST({q} AS VARCHAR) = {sql_literal(lev)}") for lev in col.levels]
    else:
        raise PolicyDenied(
            f"parameter 'attributes': {attribute!r} is {col.type}; a sensitive attribute must be "
            "categorical, binary, 'age_band' or 'all'"
        )
    return [*groups, (MISSING_GROUP, f"{q} IS NULL")]


def validate_subgroups(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``subgroup_metrics`` request; every error names the parameter."""
    if not isinstance(params, dict):
        raise PolicyDenied("subgroup_metrics: params must be an object")
    attrs = params.get("attributes", ["all"])
    if (
        not isinstance(attrs, list)
        or not 1 <= len(attrs) <= MAX_ATTRIBUTES
        or not all(isinstance(a, str) and a for a in attrs)
        or len(set(attrs)) != len(attrs)
    ):
        raise PolicyDenied(
            f"parameter 'attributes' must list 1..{MAX_ATTRIBUTES} distinct attribute names"
        )
    groups = {a: attribute_groups(descriptor, a) for a in attrs}
    for a, g in groups.items():
        if len(g) - 1 > policy.max_levels:
            raise PolicyDenied(
                f"parameter 'attributes': {a!r} has {len(g) - 1} levels, more than this site's "
                f"max_levels = {policy.max_levels}"
            )
    bins = params.get("bins", DEFAULT_BINS)
    if not isinstance(bins, int) or isinstance(bins, bool) or not 2 <= bins <= 1000:
        raise PolicyDenied("parameter 'bins' must be an integer in [2, 1000]")
    base = {k: v for k, v in params.items() if k not in ("attributes", "bins")}
    out = validate_evaluate(base, descriptor, policy)
    out["attributes"] = list(attrs)
    out["groups"] = groups
    out["bins"] = bins
    return out


class _filtered_view:
    """Temporarily restrict the view ``data`` of this request's connection to a predicate."""

    def __init__(self, con: Any, predicate: str) -> None:
        self.con, self.predicate = con, predicate

    def __enter__(self) -> None:
        self.con.execute("ALTER VIEW data RENAME TO __hf_all")
        self.con.execute(f"CREATE VIEW data AS SELECT * FROM __hf_all WHERE {self.predicate}")

    def __exit__(self, *exc: object) -> None:
        self.con.execute("DROP VIEW data")
        self.con.execute("ALTER VIEW __hf_all RENAME TO data")


def _scores(
    con: Any, descriptor: Any, params: dict[str, Any], bound: float
) -> tuple[np.ndarray, np.ndarray]:
    X, y = design_from_params(con, descriptor, params)
    if len(y) == 0:
        return np.empty(0), np.empty(0)
    return sigmoid(node_logits(params["model"], params["weights"], X, bound)), y


def _moments(v: np.ndarray, hist: np.ndarray | None = None) -> CellMoments:
    n = len(v)
    mean = float(v.mean()) if n else 0.0
    m2 = float(((v - mean) ** 2).sum()) if n else 0.0
    return CellMoments(n=n, mean=mean, m2=m2, hist=hist)


def _hist(v: np.ndarray, bins: int) -> np.ndarray:
    return np.histogram(v, bins=bins, range=(0.0, 1.0))[0].astype(np.int64)


def run_subgroups(con: Any, descriptor: Any, params: dict[str, Any], policy: Any) -> Release:
    """Score each group's rows; counts, moments and histograms as one Release."""
    t = params["threshold"]
    bins = params["bins"]
    bound = float(policy.eta_bound)
    tables: dict[str, CountTable] = {}
    numeric: dict[str, NumericSummary] = {}
    meta: dict[str, Any] = {"attributes": {}, "threshold": repr(t), "bins": str(bins)}
    for attr in params["attributes"]:
        labels = [g for g, _ in params["groups"][attr]]
        meta["attributes"][attr] = labels
        per_group: list[tuple[np.ndarray, np.ndarray]] = []
        for _, pred in params["groups"][attr]:
            if pred == "TRUE":
                per_group.append(_scores(con, descriptor, params, bound))
            else:
                with _filtered_view(con, pred):
                    per_group.append(_scores(con, descriptor, params, bound))
        conf = np.zeros((4, len(labels)), dtype=np.int64)
        sq_cells, p_cells = [], []
        cell_scores: dict[str, list[np.ndarray]] = {c: [] for c in CELLS}
        for j, (p, y) in enumerate(per_group):
            pos_pred = p >= t
            masks = {
                "tp": pos_pred & (y == 1),
                "fn": ~pos_pred & (y == 1),
                "fp": pos_pred & (y == 0),
                "tn": ~pos_pred & (y == 0),
            }
            for i, c in enumerate(CELLS):
                conf[i, j] = int(masks[c].sum())
                cell_scores[c].append(p[masks[c]])
            sq_cells.append(_moments((p - y) ** 2))
            p_cells.append(_moments(p))
        n_key = f"n.{attr}"
        tables[n_key] = CountTable(("n",), tuple(labels), conf.sum(axis=0)[None, :])
        tables[f"conf.{attr}"] = CountTable(CELLS, tuple(labels), conf, margin_of=n_key)
        many = len(labels) > 1
        all_p = np.concatenate([p for p, _ in per_group])
        all_y = np.concatenate([y for _, y in per_group])
        numeric[f"sqerr.{attr}"] = NumericSummary(
            n_key, "n", tuple(sq_cells), overall=_moments((all_p - all_y) ** 2) if many else None
        )
        numeric[f"score.{attr}"] = NumericSummary(
            n_key, "n", tuple(p_cells), overall=_moments(all_p) if many else None
        )
        for c in CELLS:
            cells = tuple(_moments(v, _hist(v, bins)) for v in cell_scores[c])
            every = np.concatenate(cell_scores[c])
            numeric[f"hist.{c}.{attr}"] = NumericSummary(
                f"conf.{attr}",
                c,
                cells,
                overall=_moments(every, _hist(every, bins)) if many else None,
                grid=(0.0, 1.0, bins),
            )
    return Release(SUBGROUP_METRICS, tables=tables, numeric=numeric, meta=meta)
