"""Differentially private statistics, and the threshold-path ``sum`` with the dominance rule.

Registered computations (node side ``validate``/``run``, aggregator side ``combine``):

``dp_count``
    Patients (optionally in a ``where`` cohort); noisy count.
``dp_sum``
    Sum of a numeric variable clamped to its *declared* bounds; noisy sum.
``dp_mean``
    Noisy sum (ε/2) and noisy count of non-missing values (ε/2); the hub divides
    the pooled sums.
``dp_histogram``
    Counts per declared level of a categorical/binary variable (plus
    ``(missing)``), or per equal-width bin over a numeric variable's declared
    bounds (plus ``(missing)``); noisy count vector.
``dp_quantiles``
    A noisy histogram on a fine grid over the declared bounds; quantiles are read
    off the (pooled) noisy histogram, so they are post-processing and cost nothing
    more. Each is reported with its grid bin.
``sum`` (not DP: the threshold path)
    Sum and count of a numeric variable in a cohort, refused when fewer than
    ``min_subset`` patients contribute or when the (n, k) dominance rule fails.

Common DP parameters: ``epsilon`` (default: the site's ``dp_epsilon_per_request``),
``mechanism`` (``"laplace"`` default, or ``"gaussian"`` at the site's ``dp_delta``)
and ``where`` (cohort filter, :func:`healthfed.privacy.differencing.validate_where`).
Bounds and levels come only from the dataset descriptor: a request on a variable
without declared bounds (numeric) or levels (categorical) is refused.

The DP computations do not apply the dominance rule or cohort differencing: whether
to refuse would itself depend on the data (not DP), and DP already bounds what any
pair of releases reveals (the ledger composes them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np

from healthfed.compute.registry import Computation, register
from healthfed.data.sql import quote_ident, validate_where, where_sql
from healthfed.errors import BudgetExceeded, DataError, PolicyDenied, ThresholdViolation
from healthfed.policy import SitePolicy
from healthfed.privacy.contributions import profile_rows
from healthfed.privacy.differencing import check_dominance
from healthfed.privacy.dp import (
    DP_FORMAT,
    DPBudget,
    DPRelease,
    noisy_count,
    noisy_counts,
    noisy_sum,
)
from healthfed.privacy.model_release import ModelStatistics

__all__ = ["quantiles_from_histogram"]

MISSING = "(missing)"
DEFAULT_BINS = 10
QUANTILE_GRID = 100
MAX_QUANTILES = 19


def _keys(params: Any, allowed: frozenset[str], name: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise PolicyDenied(f"{name}: params must be an object")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PolicyDenied(f"{name}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    return params


# The parameters each computation accepts (the node refuses others before validate).
_DP_KEYS = frozenset({"epsilon", "mechanism", "where"})
DP_COUNT_PARAMS = _DP_KEYS
DP_NUMERIC_PARAMS = _DP_KEYS | {"variable"}  # dp_sum, dp_mean
DP_HISTOGRAM_PARAMS = _DP_KEYS | {"variable", "bins"}
DP_QUANTILES_PARAMS = _DP_KEYS | {"variable", "quantiles"}
SUM_PARAMS = frozenset({"variable", "where"})


def _dp_block(params: dict[str, Any], policy: SitePolicy, name: str) -> dict[str, Any]:
    eps = params.get("epsilon", float(policy.dp_epsilon_per_request))
    budget = DPBudget(eps, params.get("mechanism", "laplace"), float(policy.dp_delta))
    if budget.epsilon > float(policy.dp_epsilon_per_request) + 1e-12:
        raise BudgetExceeded(
            f"{name}: ε = {budget.epsilon:g} requested; this site allows at most "
            f"ε = {policy.dp_epsilon_per_request:g} per request (dp_epsilon_per_request)"
        )
    return {
        "epsilon": float(budget.epsilon),
        "mechanism": budget.mechanism,
        "delta": float(policy.dp_delta),
        "planned": budget.charge.to_dict(),
    }


def _budget(params: dict[str, Any]) -> DPBudget:
    d = params["dp"]
    return DPBudget(d["epsilon"], d["mechanism"], d["delta"])


def _numeric(desc: Any, var: Any, name: str) -> Any:
    if not isinstance(var, str):
        raise PolicyDenied(f"{name}: parameter 'variable' must name a variable")
    spec = desc.column(var)
    if spec.type == "id":
        raise PolicyDenied(f"{name}: {var!r} is the patient id column and is never summarised")
    if not spec.is_numeric:
        raise PolicyDenied(f"{name}: {var!r} is {spec.type}; a numeric variable is needed")
    if spec.bounds is None:
        raise PolicyDenied(
            f"{name}: variable {var!r} has no declared bounds; DP needs bounds = [low, high] "
            "in the dataset descriptor (they are never read off the data)"
        )
    return spec


# --------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------
def validate_dp_count(params: dict, desc: Any, policy: SitePolicy) -> dict[str, Any]:
    """``{"where"?, "epsilon"?, "mechanism"?}``."""
    _keys(params, DP_COUNT_PARAMS, "dp_count")
    return {
        "where": validate_where(params.get("where"), desc, policy),
        "dp": _dp_block(params, policy, "dp_count"),
    }


def _validate_numeric(params: dict, desc: Any, policy: SitePolicy, name: str) -> dict:
    _keys(params, DP_NUMERIC_PARAMS, name)
    spec = _numeric(desc, params.get("variable"), name)
    return {
        "variable": spec.name,
        "bounds": [float(spec.bounds[0]), float(spec.bounds[1])],
        "where": validate_where(params.get("where"), desc, policy),
        "dp": _dp_block(params, policy, name),
    }


def validate_dp_sum(params: dict, desc: Any, policy: SitePolicy) -> dict[str, Any]:
    """``{"variable", "where"?, "epsilon"?, "mechanism"?}`` (numeric, declared bounds)."""
    return _validate_numeric(params, desc, policy, "dp_sum")


def validate_dp_mean(params: dict, desc: Any, policy: SitePolicy) -> dict[str, Any]:
    """``{"variable", "where"?, "epsilon"?, "mechanism"?}`` (numeric, declared bounds)."""
    return _validate_numeric(params, desc, policy, "dp_mean")


def validate_dp_histogram(params: dict, desc: Any, policy: SitePolicy) -> dict[str, Any]:
    """``{"variable", "bins"? (numeric), "where"?, "epsilon"?, "mechanism"?}``."""
    _keys(params, DP_HISTOGRAM_PARAMS, "dp_histogram")
    var = params.get("variable")
    if not isinstance(var, str):
        raise PolicyDenied("dp_histogram: parameter 'variable' must name a variable")
    spec = desc.column(var)
    out: dict[str, Any] = {"variable": var}
    if spec.is_categorical:
        if "bins" in params:
            raise PolicyDenied("dp_histogram: 'bins' applies to numeric variables only")
        levels = ("0", "1") if spec.type == "binary" else spec.levels
        if levels is None:
            raise PolicyDenied(
                f"dp_histogram: categorical variable {var!r} has no declared levels; DP needs "
                "them declared in the descriptor (never read off the data)"
            )
        if len(levels) > policy.max_levels:
            raise PolicyDenied(
                f"dp_histogram: variable {var!r} has {len(levels)} levels, more than this "
                f"site's max_levels = {policy.max_levels}"
            )
        out.update(kind=spec.type, levels=list(levels))
    else:
        spec = _numeric(desc, var, "dp_histogram")
        bins = params.get("bins", DEFAULT_BINS)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise PolicyDenied("dp_histogram: 'bins' must be a positive integer")
        if bins > policy.max_levels:
            raise PolicyDenied(
                f"dp_histogram: {bins} bins requested, more than this site's max_levels = "
                f"{policy.max_levels}"
            )
        out.update(kind="numeric", bins=bins, bounds=[float(b) for b in spec.bounds])
    out["where"] = validate_where(params.get("where"), desc, policy)
    out["dp"] = _dp_block(params, policy, "dp_histogram")
    return out


def validate_dp_quantiles(params: dict, desc: Any, policy: SitePolicy) -> dict[str, Any]:
    """``{"variable", "quantiles"?, "where"?, "epsilon"?, "mechanism"?}``."""
    _keys(params, DP_QUANTILES_PARAMS, "dp_quantiles")
    spec = _numeric(desc, params.get("variable"), "dp_quantiles")
    qs = params.get("quantiles", [0.25, 0.5, 0.75])
    if not isinstance(qs, list | tuple) or not qs or len(qs) > MAX_QUANTILES:
        raise PolicyDenied(f"dp_quantiles: 'quantiles' must list 1..{MAX_QUANTILES} levels")
    for p in qs:
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < float(p) < 1:
            raise PolicyDenied(f"dp_quantiles: quantile levels must be in (0, 1), got {p!r}")
    grid = min(QUANTILE_GRID, int(policy.histogram_bins))
    return {
        "variable": spec.name,
        "quantiles": [float(p) for p in qs],
        "bounds": [float(b) for b in spec.bounds],
        "bins": grid,
        "where": validate_where(params.get("where"), desc, policy),
        "dp": _dp_block(params, policy, "dp_quantiles"),
    }


def validate_sum(params: dict, desc: Any, policy: SitePolicy) -> dict[str, Any]:
    """``{"variable", "where"?}`` — the threshold (non-DP) path."""
    _keys(params, SUM_PARAMS, "sum")
    var = params.get("variable")
    if not isinstance(var, str):
        raise PolicyDenied("sum: parameter 'variable' must name a variable")
    spec = desc.column(var)
    if spec.type == "id" or not spec.is_numeric:
        raise PolicyDenied(f"sum: {var!r} is {spec.type}; a numeric variable is needed")
    return {"variable": var, "where": validate_where(params.get("where"), desc, policy)}


# --------------------------------------------------------------------------------------
# run (node side)
# --------------------------------------------------------------------------------------
def _where(params: dict, desc: Any) -> str:
    return where_sql(params.get("where") or {}, desc)


def _values(con: Any, desc: Any, params: dict) -> np.ndarray:
    v = quote_ident(params["variable"])
    res = con.execute(
        f"SELECT CAST({v} AS DOUBLE) AS x FROM data WHERE ({_where(params, desc)}) "
        f"AND {v} IS NOT NULL"
    ).fetchnumpy()
    return np.asarray(res["x"], dtype=float)


def _public(params: dict, **extra: Any) -> dict[str, Any]:
    out = {k: params[k] for k in ("variable", "where", "bounds") if k in params}
    return {**out, **extra}


def run_dp_count(con: Any, desc: Any, params: dict, policy: SitePolicy) -> DPRelease:
    (n,) = con.execute(f"SELECT count(*) FROM data WHERE {_where(params, desc)}").fetchone()
    return DPRelease("dp_count", {"count": noisy_count(int(n), _budget(params))}, _public(params))


def run_dp_sum(con: Any, desc: Any, params: dict, policy: SitePolicy) -> DPRelease:
    x = _values(con, desc, params)
    s = noisy_sum(x.tolist(), tuple(params["bounds"]), _budget(params))
    return DPRelease("dp_sum", {"sum": s}, _public(params))


def run_dp_mean(con: Any, desc: Any, params: dict, policy: SitePolicy) -> DPRelease:
    x = _values(con, desc, params)
    b = _budget(params)
    s = noisy_sum(x.tolist(), tuple(params["bounds"]), b, parts=2)
    n = noisy_count(len(x), b, parts=2)
    return DPRelease("dp_mean", {"sum": s, "count": n}, _public(params))


def _grid_counts(con: Any, desc: Any, params: dict) -> tuple[list[str], list[int]]:
    v = quote_ident(params["variable"])
    w = _where(params, desc)
    if params.get("kind") in ("categorical", "binary"):
        key = (
            f"CAST(CAST({v} AS INTEGER) AS VARCHAR)"
            if params["kind"] == "binary"
            else f"CAST({v} AS VARCHAR)"
        )
        rows = con.execute(f"SELECT {key} AS k, count(*) FROM data WHERE {w} GROUP BY k").fetchall()
        levels = list(params["levels"])
        counts = dict.fromkeys([*levels, MISSING], 0)
        for k, n in rows:
            if k is None:
                counts[MISSING] += int(n)
            elif k in counts and k != MISSING:
                counts[k] += int(n)
            else:
                raise DataError(
                    f"dp_histogram: column {params['variable']!r} holds values outside its "
                    "declared levels"
                )
        return list(counts), [int(v) for v in counts.values()]
    lo, hi = params["bounds"]
    B = int(params["bins"])
    width = (hi - lo) / B
    b = (
        f"LEAST(CAST(FLOOR((LEAST(GREATEST(CAST({v} AS DOUBLE), {lo!r}), {hi!r}) - {lo!r}) / "
        f"{width!r}) AS BIGINT), {B - 1})"
    )
    rows = con.execute(
        f"SELECT CASE WHEN {v} IS NULL THEN -1 ELSE {b} END AS b, count(*) FROM data "
        f"WHERE {w} GROUP BY b"
    ).fetchall()
    grid = [0] * (B + 1)
    for k, n in rows:
        grid[B if int(k) < 0 else int(k)] += int(n)
    labels = [f"[{lo + i * width:g}, {lo + (i + 1) * width:g})" for i in range(B)] + [MISSING]
    return labels, grid


def run_dp_histogram(con: Any, desc: Any, params: dict, policy: SitePolicy) -> DPRelease:
    labels, counts = _grid_counts(con, desc, params)
    h = noisy_counts(counts, _budget(params))
    extra: dict[str, Any] = {"labels": labels}
    if params.get("kind") == "numeric":
        lo, hi = params["bounds"]
        extra["edges"] = list(np.linspace(lo, hi, int(params["bins"]) + 1))
    return DPRelease("dp_histogram", {"counts": h}, _public(params, **extra))


def run_dp_quantiles(con: Any, desc: Any, params: dict, policy: SitePolicy) -> DPRelease:
    p = {**params, "kind": "numeric"}
    _, counts = _grid_counts(con, desc, p)
    h = noisy_counts(counts[:-1], _budget(params))  # missing values are not part of quantiles
    lo, hi = params["bounds"]
    edges = list(np.linspace(lo, hi, int(params["bins"]) + 1))
    return DPRelease(
        "dp_quantiles",
        {"histogram": h},
        _public(params, edges=edges, quantiles=list(params["quantiles"])),
    )


def run_sum(con: Any, desc: Any, params: dict, policy: SitePolicy) -> ModelStatistics:
    """Threshold path: refused under ``min_subset`` patients or when a few dominate."""
    x = _values(con, desc, params)
    n = len(x)
    if n < policy.min_subset:
        raise ThresholdViolation(
            f"sum: fewer than min_subset = {policy.min_subset} patients contribute; refused"
        )
    check_dominance(x, policy, what=f"sum of {params['variable']!r}")
    return ModelStatistics(
        arrays={"sum": np.array([float(x.sum())])},
        n_rows=n,
        counts={"n": [n]},
        profiles={"sum": profile_rows(x, int(policy.dominance_n), (1,))},
    )


# --------------------------------------------------------------------------------------
# combine (aggregator side)
# --------------------------------------------------------------------------------------
def _dp_replies(replies: dict[str, dict]) -> dict[str, dict]:
    for site, r in replies.items():
        if not isinstance(r, dict) or r.get("format") != DP_FORMAT:
            raise DataError(f"site {site!r} did not answer with a DP release")
    return replies


if TYPE_CHECKING:  # result tables are the hub's: pandas is not imported at a node
    from healthfed.compute.results import DPResult, SumResult


def _result(name: str, replies: dict[str, dict], value: Any, per_site: dict) -> DPResult:
    from healthfed.compute.results import DPResult

    first = next(iter(replies.values()))
    return DPResult(
        name,
        value,
        per_site,
        {s: float(r["privacy"]["epsilon"]) for s, r in replies.items()},
        {s: float(r["privacy"]["delta"]) for s, r in replies.items()},
        dict(first.get("public", {})),
        sorted(replies),
    )


def combine_dp_count(replies: dict[str, dict], params: dict) -> DPResult:
    r = _dp_replies(replies)
    per = {s: v["values"]["count"] for s, v in r.items()}
    return _result("dp_count", r, sum(per.values()), per)


def combine_dp_sum(replies: dict[str, dict], params: dict) -> DPResult:
    r = _dp_replies(replies)
    per = {s: v["values"]["sum"] for s, v in r.items()}
    return _result("dp_sum", r, float(sum(per.values())), per)


def _clip_mean(s: float, n: float, bounds: Any) -> float | None:
    if n <= 0:
        return None
    m = s / n
    if bounds:
        m = min(max(m, float(bounds[0])), float(bounds[1]))
    return float(m)


def combine_dp_mean(replies: dict[str, dict], params: dict) -> DPResult:
    r = _dp_replies(replies)
    bounds = next(iter(r.values()))["public"].get("bounds")
    per = {s: _clip_mean(v["values"]["sum"], v["values"]["count"], bounds) for s, v in r.items()}
    S = sum(v["values"]["sum"] for v in r.values())
    N = sum(v["values"]["count"] for v in r.values())
    return _result("dp_mean", r, _clip_mean(S, N, bounds), per)


def combine_dp_histogram(replies: dict[str, dict], params: dict) -> DPResult:
    r = _dp_replies(replies)
    per = {s: list(v["values"]["counts"]) for s, v in r.items()}
    pooled = np.sum([np.asarray(c, dtype=float) for c in per.values()], axis=0)
    return _result("dp_histogram", r, [int(v) for v in pooled], per)


def quantiles_from_histogram(
    counts: Any, edges: Any, quantiles: Any
) -> list[dict[str, float | None]]:
    """Quantiles of a (noisy) histogram: negatives set to 0, linear within the bin."""
    c = np.clip(np.asarray(counts, dtype=float), 0, None)
    e = np.asarray(edges, dtype=float)
    total = float(c.sum())
    out: list[dict[str, float | None]] = []
    cum = np.cumsum(c)
    for p in quantiles:
        if total <= 0:
            out.append({"p": float(p), "value": None, "lo": None, "hi": None})
            continue
        target = float(p) * total
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(i, len(c) - 1)
        before = float(cum[i - 1]) if i > 0 else 0.0
        frac = 0.0 if c[i] <= 0 else (target - before) / float(c[i])
        value = float(e[i] + frac * (e[i + 1] - e[i]))
        out.append({"p": float(p), "value": value, "lo": float(e[i]), "hi": float(e[i + 1])})
    return out


def combine_dp_quantiles(replies: dict[str, dict], params: dict) -> DPResult:
    r = _dp_replies(replies)
    pub = next(iter(r.values()))["public"]
    edges, qs = pub["edges"], pub["quantiles"]
    per = {s: quantiles_from_histogram(v["values"]["histogram"], edges, qs) for s, v in r.items()}
    pooled = np.sum([np.asarray(v["values"]["histogram"], dtype=float) for v in r.values()], 0)
    return _result("dp_quantiles", r, quantiles_from_histogram(pooled, edges, qs), per)


def combine_sum(replies: dict[str, dict], params: dict) -> SumResult:
    from healthfed.compute.results import SumResult

    per = {
        s: {"sum": float(r["arrays"]["sum"]["data"][0]), "n": int(r["n_rows"])}
        for s, r in replies.items()
    }
    S = sum(v["sum"] for v in per.values())
    N = sum(int(v["n"]) for v in per.values())
    return SumResult(S, N, S / N if N else float("nan"), per, sorted(per))


for _c in (
    Computation(
        "dp_count",
        "DP patient count (OpenDP Laplace/Gaussian), optionally in a 'where' cohort",
        validate_dp_count,
        cast(Any, run_dp_count),  # returns a DPRelease (see guard.disclose_any)
        combine_dp_count,
        DP_COUNT_PARAMS,
    ),
    Computation(
        "dp_sum",
        "DP sum of a numeric variable clamped to its declared bounds",
        validate_dp_sum,
        cast(Any, run_dp_sum),  # returns a DPRelease (see guard.disclose_any)
        combine_dp_sum,
        DP_NUMERIC_PARAMS,
    ),
    Computation(
        "dp_mean",
        "DP mean of a numeric variable (noisy sum / noisy count, declared bounds)",
        validate_dp_mean,
        cast(Any, run_dp_mean),  # returns a DPRelease (see guard.disclose_any)
        combine_dp_mean,
        DP_NUMERIC_PARAMS,
    ),
    Computation(
        "dp_histogram",
        "DP counts per declared level, or per bin over declared bounds",
        validate_dp_histogram,
        cast(Any, run_dp_histogram),  # returns a DPRelease (see guard.disclose_any)
        combine_dp_histogram,
        DP_HISTOGRAM_PARAMS,
    ),
    Computation(
        "dp_quantiles",
        "DP quantiles read off a noisy histogram over the declared bounds",
        validate_dp_quantiles,
        cast(Any, run_dp_quantiles),  # returns a DPRelease (see guard.disclose_any)
        combine_dp_quantiles,
        DP_QUANTILES_PARAMS,
    ),
    Computation(
        "sum",
        "Sum and count of a numeric variable (threshold path: min_subset, (n,k) dominance)",
        validate_sum,
        run_sum,
        combine_sum,
        SUM_PARAMS,
    ),
):
    register(_c)
