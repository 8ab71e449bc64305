"""Class 3, differencing: pairs and triples of ordinary releases whose difference is one patient.

Each attack subtracts released numbers of cohorts that differ by one patient (or by a
few) and checks the difference against that patient's true value. The sites' replies
are read as released (``counts.n`` and ``arrays.sum`` of ``sum``, the cells of a
table); a withheld value (``None``) ends the attack without a leak.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from _attacks.base import Context, Refused, attack, close_enough
from _attacks.model_params import array

SITE = "hospital_1"
OTHER = "hospital_2"
VALUES = ["crp", "heart_rate", "spo2", "resp_rate"]


def _sum(ctx: Context, variable: str, where: dict[str, Any] | None, permit: str = "main"):
    """The released (sum, n) of ``variable`` over ``where`` at ``hospital_1``."""
    params: dict[str, Any] = {"variable": variable}
    if where:
        params["where"] = where
    reply = ctx.round("sum", "covid", params, permit=permit)[SITE]
    s = array(reply, "sum")
    n = (reply.get("counts") or {}).get("n")
    if s is None or n is None or n[0] is None:
        raise Refused("sum or n withheld")
    return float(s.ravel()[0]), int(n[0])


def _tol(d: pd.DataFrame, column: str) -> float:
    return 0.01 * float(d[column].max() - d[column].min())


def _value_column(p: pd.Series) -> str:
    return next(c for c in VALUES if pd.notna(p[c]))


def _truth(ctx: Context, site: str = SITE) -> pd.DataFrame:
    return ctx.world.truth["covid"][site]


@attack("all vs all-minus-one under two permits", "3 differencing")
def two_permits(ctx: Context) -> tuple[bool, str]:
    d = _truth(ctx)
    oldest = d.loc[d["age"].idxmax()]
    if (d["age"] == oldest.age).sum() != 1:
        raise AssertionError("the oldest patient at hospital_1 is not unique")
    col = _value_column(oldest)
    everyone, _ = _sum(ctx, col, None, permit="main")
    rest, _ = _sum(ctx, col, {"age": [0, float(oldest.age) - 0.5]}, permit="second")
    got, true = everyone - rest, float(oldest[col])
    return close_enough(got, true, _tol(d, col)), f"{col} of the oldest {got:.4g} (true {true:.4g})"


def _overlap_age(ctx: Context, lo: int = 8) -> pd.Series:
    """A patient alone at their age, with >= ``lo`` patients at or above and below it at both sites."""
    d, e = _truth(ctx), _truth(ctx, OTHER)
    counts = d["age"].value_counts()
    for a in sorted((a for a, k in counts.items() if k == 1), reverse=True):
        if all((x["age"] >= a).sum() > lo and (x["age"] < a).sum() > lo for x in (d, e)):
            return d[d["age"] == a].iloc[0]
    raise AssertionError("no lone age with enough patients on both sides")


@attack("three cohorts: two age intervals overlapping at one value", "3 differencing")
def three_intervals(ctx: Context) -> tuple[bool, str]:
    p = _overlap_age(ctx)
    col = _value_column(p)
    a = float(p.age)
    low, _ = _sum(ctx, col, {"age": [0.0, a]})
    high, _ = _sum(ctx, col, {"age": [a, 110.0]})
    both, _ = _sum(ctx, col, {"age": [0.0, 110.0]})
    got, true = low + high - both, float(p[col])
    d = _truth(ctx)
    return close_enough(got, true, _tol(d, col)), f"{col} at age {a:g}: {got:.4g} (true {true:.4g})"


@attack("Table 1 group cell vs sum with one more filter: a maximum", "3 differencing")
def table1_vs_sum(ctx: Context) -> tuple[bool, str]:
    d = _truth(ctx)
    died = d[d["death_28d"] == 1]
    top = float(died["age"].max())
    if (died["age"] == top).sum() != 1:
        raise AssertionError("the oldest death at hospital_1 is not unique")
    reply = ctx.round("table1", "covid", {"variables": ["age"], "by": "death_28d"})[SITE]
    num = reply["numeric"]["age"]
    cols = reply["tables"][num["table"]]["cols"]
    cell = num["cells"][cols.index("1")]
    if not cell or cell.get("n") is None or cell.get("mean") is None:
        raise Refused("Table 1 cell withheld")
    group_sum = float(cell["n"]) * float(cell["mean"])
    rest, _ = _sum(ctx, "age", {"death_28d": "1", "age": [0.0, top - 0.5]})
    got = group_sum - rest
    return close_enough(got, top, _tol(d, "age")), f"oldest death's age {got:.4g} (true {top:g})"


def _small_crosstab_cells(ctx: Context) -> list[tuple[str, str, str]]:
    """(categorical, level, binary) with 1..min_cell-1 patients at hospital_1, 10+ beside it."""
    k = ctx.world.node(SITE).policy.min_cell_count
    d, out = _truth(ctx), []
    for cat in ("vaccination", "sex"):
        for b in ("ckd", "copd", "diabetes", "obesity", "icu"):
            for level in sorted(d[cat].astype(str).unique()):
                ok = True
                for site in (SITE, OTHER):
                    x = _truth(ctx, site)
                    at = x[cat].astype(str) == level
                    ok &= at.sum() >= 2 * k and (at & (x[b] == 0)).sum() >= 2 * k
                small = int(((d[cat].astype(str) == level) & (d[b] == 1)).sum())
                if ok and 1 <= small < k:
                    out.append((cat, level, b))
    if not out:
        raise AssertionError("no small crosstab cell with large neighbours")
    return out


def _by_margin(ctx: Context, cat: str, level: str, b: str) -> tuple[int, Any, bool] | None:
    """The small cell from one crosstab and one ``sum`` count (None: both margins withheld).

    Also says whether every released number it used was exact (checked against the
    truth): a perturbed release that happens to give the true value tells the attacker
    nothing they can rely on, so only an exact recovery from exact releases leaks.
    """
    d = _truth(ctx)
    cat_is, b_is = d[cat].astype(str), d[b].astype(int).astype(str)
    table = ctx.round("crosstab", "covid", {"row": cat, "col": b})[SITE]["tables"]["crosstab"]
    rows, cols = [str(r) for r in table["rows"]], [str(c) for c in table["cols"]]
    i, j = rows.index(level), cols.index("1")
    beside = table["counts"][i][cols.index("0")]
    if beside is not None:  # sum's count of the whole row minus the rest of the row
        _, n_row = _sum(ctx, "age", {cat: level})
        exact = n_row == int((cat_is == level).sum()) and beside == int(
            ((cat_is == level) & (b_is == "0")).sum()
        )
        return n_row - int(beside), table["counts"][i][j], exact
    rest = {rows[r]: table["counts"][r][j] for r in range(len(rows)) if r != i}
    if any(v is None for v in rest.values()):
        return None
    _, n_col = _sum(ctx, "age", {b: "1"})  # the whole column minus the rest of the column
    exact = n_col == int((b_is == "1").sum()) and all(
        v == int(((cat_is == r) & (b_is == "1")).sum()) for r, v in rest.items()
    )
    return n_col - int(sum(rest.values())), table["counts"][i][j], exact


@attack("crosstab cells vs sum's counts", "3 differencing")
def crosstab_vs_sum(ctx: Context) -> tuple[bool, str]:
    d = _truth(ctx)
    for cat, level, b in _small_crosstab_cells(ctx)[:3]:
        found = _by_margin(ctx, cat, level, b)
        if found is None:
            continue
        got, released, exact = found
        true = int(((d[cat].astype(str) == level) & (d[b] == 1)).sum())
        return got == true and exact, (
            f"{cat}={level} & {b}=1: {got} (true {true}; the crosstab released {released}; "
            f"releases used {'exact' if exact else 'perturbed'})"
        )
    raise Refused("every candidate crosstab withheld the cell's row and column margins")


def _step_events(reply: dict[str, Any]) -> list[tuple[float, float | None]]:
    """(time, events) of each released step of a ``km_counts`` reply."""
    times = array(reply, "time")
    events = (reply.get("counts") or {}).get("events")
    if times is None or events is None:
        raise Refused("no steps released")
    return [(float(t), None if e is None else float(e)) for t, e in zip(times, events, strict=True)]


def _death_day(ctx: Context) -> float:
    """A day with exactly one death at hospital_1 and >= 10 deaths and survivors before it."""
    d = ctx.world.truth["tcga"][SITE]
    deaths = d[d["E"] == 1]["T"]
    for t in sorted(deaths.unique()):
        if (deaths == t).sum() == 1 and (deaths < t).sum() >= 10 and (d["T"] > t).sum() >= 10:
            if float(t).is_integer():
                return float(t)
    raise AssertionError("no suitable death day")


@attack("Kaplan-Meier grids shifted by one day: a death on a named day", "3 differencing")
def km_shifted(ctx: Context) -> tuple[bool, str]:
    t = _death_day(ctx)
    end = float(ctx.world.truth["tcga"][SITE]["T"].max()) + 1.0
    first = []
    for g in (t - 1.0, t):
        params = {"duration": "T", "event": "E", "time_grid": {"points": [g, end]}}
        steps = _step_events(ctx.round("km_counts", "tcga", params, permit="tcga")[SITE])
        at = [e for time, e in steps if time == g]
        if not at or at[0] is None:
            raise Refused(f"no step released at day {g:g}")
        first.append(at[0])
    got = first[1] - first[0]
    return got == 1.0, f"deaths on day {t:g}: {got:g} (true 1)"


def _rare_age(ctx: Context, floor: float = 25.0) -> tuple[float, float]:
    """A mid-range age shared by 1 .. min_cell_count - 1 patients at hospital_1, the age below.

    Mid-range, so that the attack's cohorts do not come near the cohorts the earlier
    attacks released (the oldest patients, a lone age at the top of the range).
    """
    d = _truth(ctx)
    k = ctx.world.node(SITE).policy.min_cell_count
    counts = d["age"].value_counts()
    middle = float(d["age"].median())
    for a in sorted((a for a, n in counts.items() if 1 <= n < k), key=lambda a: abs(a - middle)):
        below = d.loc[d["age"] < a, "age"]
        if len(below) and (below >= floor).sum() >= 40:
            return float(a), float(below.max())
    raise AssertionError("no rare mid-range age")


@attack("four cohorts whose sum and differences are a few patients", "3 differencing")
def four_cohorts(ctx: Context) -> tuple[bool, str]:
    """{age in [25, a], female} + {.., male} - {age in [25, a-], hypertensive} - {.., not}.

    ``a-`` is the next age below ``a``: the combination is the 1 .. 4 patients aged
    ``a``, yet no two or three of the cohorts differ by few patients (the pair and
    triple checks pass them); only an audit of every combination stops the fourth.
    Leak: their sum of ``spo2`` recovered.
    """
    a, lo = _rare_age(ctx)
    col = "spo2"
    band, below = [25.0, a], [25.0, lo]
    got = 0.0
    for where, sign in (
        ({"age": band, "sex": "female"}, 1),
        ({"age": band, "sex": "male"}, 1),
        ({"age": below, "hypertension": "1"}, -1),
        ({"age": below, "hypertension": "0"}, -1),
    ):
        s, _ = _sum(ctx, col, where)
        got += sign * s
    d = _truth(ctx)
    victims = d[d["age"] == a]
    true = float(victims[col].sum())
    return close_enough(got, true, _tol(d, col)), (
        f"{col} of the {len(victims)} patient(s) aged {a:g}: {got:.4g} (true {true:.4g})"
    )
