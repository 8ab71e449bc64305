"""Federated statistics equal the pooled computation (thresholds at 1), and refusals name the argument."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from _stats_helpers import cohort, connect, descriptor, federate, site_reply

from healthfed.compute import get_computation, registered_computations
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.errors import DataError, PolicyDenied, PrivacyError
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy
from healthfed.privacy.disclosure import disclose

# Exact counts (no cell key perturbation) so federated results can equal pooled pandas;
# the perturbed path is tested in tests/privacy/test_cell_key.py.
EXACT = SitePolicy(count_perturbation="none")
OPEN = SitePolicy(min_cell_count=1, min_subset=1, histogram_bins=50, count_perturbation="none")
PROBS = [0.1, 0.25, 0.5, 0.75, 0.9]


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    return [cohort(n, seed) for n, seed in ((400, 1), (250, 2), (600, 3), (90, 4))]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def test_all_computations_are_registered() -> None:
    assert {"table1", "describe", "crosstab", "count"} <= set(registered_computations())


@pytest.mark.parametrize("by", [None, "death", "ward"])
def test_table1_federated_equals_pooled(frames: list[pd.DataFrame], by: str | None) -> None:
    variables = ["age", "crp", "los", "sex", "icu"] + ([] if by == "ward" else ["ward"])
    params = {"variables": variables, "quantiles": PROBS, **({"by": by} if by else {})}
    res = federate(frames, "table1", params, OPEN)
    pooled = pd.concat(frames, ignore_index=True)
    assert res.sites == ["site1", "site2", "site3", "site4"]
    assert res.suppressed_cells == 0
    assert res.n_total == len(pooled)
    groups = [("overall", pooled)]
    if by:
        known = pooled.dropna(subset=[by])  # missing group values are the "(missing)" column
        groups += [(str(g), d) for g, d in known.groupby(known[by].astype(str))]
    for label, d in groups:
        assert res.value("N", "patients", label) == len(d)
        for v in ("age", "crp", "los"):
            x = d[v].dropna().to_numpy(dtype=float)
            assert res.value(v, "n", label) == len(x)
            assert res.value(v, "missing", label) == d[v].isna().sum()
            assert _rel(res.value(v, "mean", label), x.mean()) < 1e-9
            assert _rel(res.value(v, "sd", label), x.std(ddof=1)) < 1e-9
            for p in PROBS:
                lo, hi = (
                    res.value(v, f"p{100 * p:g}_lo", label),
                    res.value(v, f"p{100 * p:g}_hi", label),
                )
                est = res.value(v, f"p{100 * p:g}", label)
                true = float(np.quantile(np.clip(x, *descriptor().columns[v].bounds), p))
                assert lo <= true <= hi, (v, label, p)
                assert lo <= est <= hi
        for v in [c for c in ("sex", "icu", "ward") if c in variables]:
            counts = d[v].astype(object).where(d[v].notna(), None).value_counts(dropna=False)
            levels = ["1"] if v == "icu" else descriptor().columns[v].levels
            for lv in levels:
                key = 1 if v == "icu" else lv
                assert res.value(v, lv, label) == int(counts.get(key, 0))
                assert res.value(v, f"{lv} %", label) == pytest.approx(
                    100 * counts.get(key, 0) / len(d)
                )
            assert res.value(v, "(missing)", label) == int(d[v].isna().sum())
    json.dumps(res.to_dict(), allow_nan=False)
    frame = res.to_frame()
    assert list(frame.columns)[0] == "overall"
    assert ("N", "patients") in frame.index
    long = res.to_frame(per_site=True)
    assert set(long["site"]) == {"pooled", "site1", "site2", "site3", "site4"}
    text = res.to_text()
    assert "mean (SD)" in text and "median [IQR]" in text


def test_per_site_values_are_each_sites_own(frames: list[pd.DataFrame]) -> None:
    res = federate(frames, "table1", {"variables": ["age"], "by": "sex"}, OPEN)
    for k, df in enumerate(frames):
        x = df.loc[df["sex"] == "male", "age"].dropna()
        assert _rel(res.value("age", "mean", "male", site=f"site{k + 1}"), x.mean()) < 1e-9
    assert "median [IQR]" in res.to_text()


def test_describe_federated_equals_pooled(frames: list[pd.DataFrame]) -> None:
    res = federate(frames, "describe", {"variables": ["age", "crp"], "by": "sex"}, OPEN)
    pooled = pd.concat(frames, ignore_index=True)
    f = res.to_frame()
    for sex in ("female", "male"):
        x = pooled.loc[pooled["sex"] == sex, "crp"].dropna()
        row = f.loc[("crp", sex)]
        assert row["n"] == len(x)
        assert _rel(row["mean"], x.mean()) < 1e-9 and _rel(row["sd"], x.std()) < 1e-9
        assert row["p50_lo"] <= min(x.median(), 600) <= row["p50_hi"]
    assert "min" not in f.columns  # min/max are off by default
    json.dumps(res.to_dict(), allow_nan=False)
    assert "crp" in res.to_text()


def test_min_max_only_when_the_policy_allows(frames: list[pd.DataFrame]) -> None:
    policy = SitePolicy(min_cell_count=1, min_subset=1, allow_min_max=True)
    res = federate(frames, "describe", {"variables": ["age"]}, policy)
    pooled = pd.concat(frames)["age"]
    assert res.value("age", "min") == pooled.min() and res.value("age", "max") == pooled.max()


def test_crosstab_federated_equals_pooled(frames: list[pd.DataFrame]) -> None:
    res = federate(frames, "crosstab", {"row": "ward", "col": "icu"}, OPEN)
    pooled = pd.concat(frames, ignore_index=True)
    expect = pd.crosstab(
        pooled["ward"].fillna("(missing)"),
        pooled["icu"].astype(object).fillna("(missing)").astype(str),
        margins=True,
        margins_name="Total",
    )
    got = res.to_frame()
    for r in expect.index:
        for c in expect.columns:
            assert got.loc[r, c] == expect.loc[r, c], (r, c)
    json.dumps(res.to_dict(), allow_nan=False)
    assert "Total" in res.to_text()
    assert set(res.to_frame(per_site=True)["site"]) >= {"pooled", "site1"}


def test_count_with_and_without_condition(frames: list[pd.DataFrame]) -> None:
    pooled = pd.concat(frames, ignore_index=True)
    assert federate(frames, "count", {}, OPEN).count == len(pooled)
    res = federate(frames, "count", {"variable": "sex", "level": "male"}, OPEN)
    assert res.count == int((pooled["sex"] == "male").sum())
    assert res.to_frame().loc["pooled", "count"] == res.count
    json.dumps(res.to_dict(), allow_nan=False)


def test_small_site_cells_make_the_pooled_cell_none_never_a_partial_sum() -> None:
    big, small = cohort(500, 1, missing=0), cohort(500, 2, missing=0)
    small.loc[:2, "ward"] = None  # 3 missing values at one site: a suppressed count
    res = federate([big, small], "table1", {"variables": ["ward", "age"]}, EXACT)
    assert res.value("ward", "(missing)", site="site2") is None
    assert res.value("ward", "(missing)") is None  # pooled: withheld, not 0 and not site1's 0
    assert res.value("ward", "(missing)", site="site1") == 0
    assert res.value("age", "mean") is not None
    assert res.suppressed_cells >= 2


def test_node_runtime_round_trip(frames: list[pd.DataFrame]) -> None:
    """The runtime's validate -> run -> disclose seam, through Node.handle."""
    df = frames[0]
    ds = SimpleNamespace(descriptor=descriptor(), connect=lambda: connect(df))
    node = Node("h1", {"cohort": ds})
    reply = node.handle(
        {"computation": "table1", "dataset": "cohort", "params": {"variables": ["age", "sex"]}}
    )
    assert reply["status"] == "ok", reply
    json.dumps(reply, allow_nan=False)
    bad = node.handle({"computation": "nope", "dataset": "cohort", "params": {}})
    assert bad["status"] == "refused" and "nope" in bad["reason"] and "table1" in bad["reason"]


# --- refusals ------------------------------------------------------------------------
def test_unknown_computation_names_it_and_lists_known() -> None:
    with pytest.raises(PolicyDenied, match=r"'regression9'.*table1"):
        get_computation("regression9")


@pytest.mark.parametrize(
    ("computation", "params", "error", "needle"),
    [
        ("table1", {"variables": ["age", "bmi"]}, DataError, "'bmi'"),
        ("table1", {"variables": ["age"], "by": "bmi"}, DataError, "'bmi'"),
        ("table1", {"variables": ["age"], "colour": 1}, PolicyDenied, "'colour'"),
        ("table1", {"variables": ["weight"]}, PolicyDenied, "'weight'.*bounds"),
        ("table1", {"variables": ["age"], "by": "age"}, PolicyDenied, "'by'"),
        ("table1", {"variables": ["pid"]}, PolicyDenied, "'pid'"),
        ("table1", {"variables": ["age"], "quantiles": [1.5]}, PolicyDenied, "quantiles"),
        ("describe", {"variables": ["sex"]}, PolicyDenied, "'sex'"),
        ("crosstab", {"row": "sex", "col": "age"}, PolicyDenied, "'col'.*'age'"),
        ("crosstab", {"row": "sex"}, PolicyDenied, "'col'"),
        ("count", {"variable": "sex", "level": "other"}, DataError, "'other'"),
        ("count", {"variable": "sex"}, PolicyDenied, "level"),
    ],
)
def test_refusals_name_the_argument(
    computation: str, params: dict, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        get_computation(computation).validate(params, descriptor(), SitePolicy())


def test_unbounded_column_is_fine_without_quantiles(frames: list[pd.DataFrame]) -> None:
    res = federate(frames, "table1", {"variables": ["weight"], "quantiles": []}, OPEN)
    assert _rel(res.value("weight", "mean"), pd.concat(frames)["weight"].mean()) < 1e-9


def test_too_many_levels_declared_or_observed() -> None:
    policy = SitePolicy(max_levels=3)
    with pytest.raises(PolicyDenied, match=r"'ward'.*4 levels.*max_levels = 3"):
        get_computation("table1").validate({"variables": ["ward"]}, descriptor(), policy)
    undeclared = descriptor(
        {"code": {"type": "categorical"}, "x": {"type": "numeric", "bounds": [0, 1]}}
    )
    df = pd.DataFrame({"pid": range(20), "code": [f"k{i % 5}" for i in range(20)], "x": 0.5})
    comp = get_computation("table1")
    params = comp.validate({"variables": ["code"]}, undeclared, policy)
    with pytest.raises(PolicyDenied, match=r"'code'.*5 levels"):
        comp.run(connect(df), undeclared, params, policy)


def test_value_outside_declared_levels_fails_closed() -> None:
    df = cohort(50, 5)
    df.loc[0, "sex"] = "unknown"
    with pytest.raises(DataError, match="'sex'.*outside its declared levels"):
        site_reply(df, "table1", {"variables": ["sex"]}, SitePolicy())


def test_disclose_refuses_anything_but_a_release() -> None:
    for thing in ({"counts": [1, 2]}, pd.DataFrame({"a": [1]}), None, [1]):
        with pytest.raises(PrivacyError, match="only Release"):
            disclose(thing, SitePolicy())  # type: ignore[arg-type]


def test_binary_column_descriptor_levels() -> None:
    d = descriptor_from_dict(
        {
            "dataset": {"name": "x", "file": "x.csv", "id_column": "id"},
            "columns": {"b": {"type": "binary"}},
        },
        base_dir=__import__("pathlib").Path("."),
    )
    df = pd.DataFrame({"id": range(30), "b": pd.array([0, 1] * 15, dtype="Int32")})
    reply = site_reply(df, "table1", {"variables": ["b"]}, EXACT, d)
    assert reply["tables"]["var:b"]["rows"] == ["0", "1", "(missing)"]
    assert reply["tables"]["var:b"]["counts"] == [[15], [15], [0]]
