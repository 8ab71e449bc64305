"""Federated survival analysis: exact Cox (Breslow), Kaplan-Meier with small-count protection, C-index."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthfed.compute import survival as S
from healthfed.compute.survival import FederatedCoxPH, concordance_index, kaplan_meier
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.errors import DataError, InvalidArgument, TooFewSites
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy

lifelines = pytest.importorskip("lifelines")

FEATURES = ["age", "marker", "treated"]
BETA = np.array([0.03, -0.6, 0.5])
# Thresholds 1: exact comparisons. Only such a site may set no public time grid
# (time_grid_unit = 0), which the exact-grid tests need (a grid of every observed time).
# exact releases: no minimum count, no dominance rule, no public grid
OPEN = SitePolicy(min_cell_count=1, min_subset=1, time_grid_unit=0.0, dominance_k=100.0)


def make_site(n: int, seed: int, base_rate: float, ties: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    marker = rng.normal(0, 1, n) + 0.3 * (seed % 3)
    treated = (rng.random(n) < 0.5).astype(int)
    eta = np.column_stack([age - 60, marker, treated]) @ BETA
    t_event = rng.exponential(1.0 / (base_rate * np.exp(eta)))
    t_cens = rng.uniform(0, 3.0 / base_rate, n)
    t = np.minimum(t_event, t_cens) * 100.0
    if ties:
        t = np.ceil(t / 10.0)  # integer times, many ties
    return pd.DataFrame(
        {
            "pid": [f"s{seed}_{i}" for i in range(n)],
            "time": t,
            "dead": (t_event <= t_cens).astype(int),
            "age": age,
            "marker": marker,
            "treated": treated,
            "fold": np.where(rng.random(n) < 0.75, "train", "test"),
        }
    )


def descriptor():
    cols = {
        "pid": {"type": "id"},
        "time": {"type": "numeric"},
        "dead": {"type": "binary"},
        "age": {"type": "numeric"},
        "marker": {"type": "numeric"},
        "treated": {"type": "binary"},
        "fold": {"type": "categorical", "levels": ["train", "test"]},
    }
    raw = {"dataset": {"name": "surv", "file": "x.parquet", "id_column": "pid"}, "columns": cols}
    return descriptor_from_dict(raw, base_dir=Path("."))


def federation(frames: dict[str, pd.DataFrame], policy: SitePolicy | dict | None = None):
    desc = descriptor()
    nodes = []
    for s, df in frames.items():
        pol = policy.get(s, SitePolicy()) if isinstance(policy, dict) else policy or SitePolicy()
        nodes.append(Node(name=s, datasets={"surv": NodeDataset.from_frame(df, desc)}, policy=pol))
    return Federation.inprocess(nodes)


def pooled(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([df.assign(site=s) for s, df in frames.items()], ignore_index=True)


# --- an independent, naive Breslow reference ----------------------------------------
def naive_breslow(df: pd.DataFrame, strata: str | None = None, l2: float = 0.0) -> np.ndarray:
    """Newton on the Breslow partial likelihood with explicit risk sets (no shared code)."""
    groups = [df] if strata is None else [g for _, g in df.groupby(strata)]
    beta = np.zeros(len(FEATURES))
    for _ in range(60):
        g_tot = -l2 * beta
        h_tot = -l2 * np.eye(len(beta))
        for g in groups:
            X = g[FEATURES].to_numpy(float)
            t = g["time"].to_numpy(float)
            e = g["dead"].to_numpy(int)
            w = np.exp(X @ beta)
            for tt in np.unique(t[e == 1]):
                at = t >= tt
                dead = (t == tt) & (e == 1)
                s0 = w[at].sum()
                s1 = (X[at] * w[at, None]).sum(0)
                s2 = (X[at].T * w[at]) @ X[at]
                d = dead.sum()
                g_tot = g_tot + X[dead].sum(0) - d * s1 / s0
                h_tot = h_tot - d * (s2 / s0 - np.outer(s1, s1) / s0**2)
        step = np.linalg.solve(-h_tot, g_tot)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-12:
            break
    return beta


@pytest.fixture(scope="module")
def frames():
    return {
        "a": make_site(220, 1, 0.5),
        "b": make_site(180, 2, 1.0),
        "c": make_site(260, 3, 0.3),
    }


@pytest.fixture(scope="module")
def fed(frames):
    f = federation(frames)
    yield f
    f.close()


def lifelines_cox(df: pd.DataFrame, strata: list[str] | None = None):
    cph = lifelines.CoxPHFitter()
    cols = FEATURES + ["time", "dead"] + (strata or [])
    cph.fit(
        df[cols],
        "time",
        "dead",
        strata=strata,
        fit_options={"precision": 1e-12, "r_precision": 1e-14, "max_steps": 200},
    )
    return cph


# --- Cox ------------------------------------------------------------------------------
def test_stratified_cox_equals_lifelines_strata_site(fed, frames):
    model = FederatedCoxPH().fit(fed, "surv", "time", "dead", FEATURES)
    ref = lifelines_cox(pooled(frames), strata=["site"])
    np.testing.assert_allclose(model.coef_, ref.params_[FEATURES].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(
        model.bse_, ref.standard_errors_[FEATURES].to_numpy(), rtol=1e-6, atol=1e-8
    )
    assert model.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-6)
    assert model.sites_ == ["a", "b", "c"] and model.refused_ == {}
    assert model.n_rows_ == 660 and model.n_iter_ <= 10
    assert model.n_events_ == int(pooled(frames)["dead"].sum())


def test_stratified_with_ties_equals_naive_breslow():
    frames = {
        s: make_site(n, seed, r, ties=True)
        for s, n, seed, r in (("a", 200, 4, 0.5), ("b", 150, 5, 1.0))
    }
    assert pooled(frames)["time"].duplicated().sum() > 50  # really tied
    with federation(frames) as f:
        model = FederatedCoxPH().fit(f, "surv", "time", "dead", FEATURES)
        pen = FederatedCoxPH(l2=5.0).fit(f, "surv", "time", "dead", FEATURES)
    np.testing.assert_allclose(model.coef_, naive_breslow(pooled(frames), "site"), atol=1e-6)
    np.testing.assert_allclose(pen.coef_, naive_breslow(pooled(frames), "site", l2=5.0), atol=1e-6)
    assert np.linalg.norm(pen.coef_) < np.linalg.norm(model.coef_)


def test_unstratified_exact_grid_equals_lifelines(frames):
    df = pooled(frames)
    grid = np.unique(df["time"]).tolist()  # every observed time: no coarsening
    with federation(frames, OPEN) as f:
        model = FederatedCoxPH(stratify_by_site=False, time_grid=grid).fit(
            f, "surv", "time", "dead", FEATURES
        )
    ref = lifelines_cox(df)
    np.testing.assert_allclose(model.coef_, ref.params_[FEATURES].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(
        model.bse_, ref.standard_errors_[FEATURES].to_numpy(), rtol=1e-6, atol=1e-8
    )
    assert model.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-6)
    x = df[FEATURES].iloc[:20]
    np.testing.assert_allclose(
        model.predict_partial_hazard(x), ref.predict_partial_hazard(x).to_numpy(), rtol=1e-5
    )


def test_unstratified_default_policy_coarsens_and_equals_pooled_on_coarse_times(fed, frames):
    # 30 = the default public grid unit; the fit coarsens along the nested public widths
    # 60, 120, ... (a width such as 10 is no longer accepted: see tests/privacy/
    # test_scope_and_grids.py, non-nested grids can be differenced into small risk sets).
    model = FederatedCoxPH(stratify_by_site=False, time_grid=30.0).fit(
        fed, "surv", "time", "dead", FEATURES
    )
    width = model.time_grid_["width"]
    assert width > 30.0  # the default policy forced a coarser grid
    assert any(h["round"] == "grid" for h in model.history_)
    df = pooled(frames)
    coarse = df.assign(time=S.coarsen_times(df["time"].to_numpy(), width))
    np.testing.assert_allclose(model.coef_, naive_breslow(coarse), atol=1e-6)
    # Every released count passes the rule at that width.
    out = fed.round(
        S.COX_RISK_SETS,
        "surv",
        {"duration": "time", "event": "dead", "features": FEATURES, "time_grid": {"width": width}},
    )
    assert sorted(out.replies) == ["a", "b", "c"]
    for r in out.replies.values():
        assert not any(0 < v < 5 for v in r["counts"]["events"])


def test_too_fine_grid_is_refused_by_name(fed):
    with pytest.raises(TooFewSites) as err:
        fed.round(
            S.COX_RISK_SETS,
            "surv",
            {"duration": "time", "event": "dead", "features": FEATURES, "time_grid": 30.0},
        )  # the finest public grid (the default unit); 1.0 is not a public grid any more
    assert set(err.value.refusals) == {"a", "b", "c"}
    assert all(S.GRID_TOO_FINE in r for r in err.value.refusals.values())


def test_small_site_declines_and_others_fit(frames):
    small = {**frames, "tiny": make_site(8, 9, 0.5)}  # 3 params > 0.33 * 8 rows
    with federation(small) as f:
        model = FederatedCoxPH().fit(f, "surv", "time", "dead", FEATURES)
    assert model.sites_ == ["a", "b", "c"]
    assert "tiny" in model.refused_ and "parameters" in model.refused_["tiny"]
    np.testing.assert_allclose(model.coef_, naive_breslow(pooled(frames), "site"), atol=1e-6)


def test_estimator_api_and_pickle(fed, frames):
    model = FederatedCoxPH(l2=0.1).fit(
        fed, "surv", "time", "dead", FEATURES, subset={"fold": "train"}
    )
    train = pooled(frames).query("fold == 'train'")
    np.testing.assert_allclose(model.coef_, naive_breslow(train, "site", l2=0.1), atol=1e-6)
    frame = model.summary_frame()
    assert list(frame.index) == FEATURES
    assert {"coef", "exp(coef)", "se(coef)", "p", "coef lower 95%"} <= set(frame.columns)
    assert set(frame["per"]) == {"per unit"}  # hazard ratios per unit of the raw covariate
    assert model.conf_int_.shape == (3, 2)
    np.testing.assert_allclose(model.hazard_ratios_.to_numpy(), np.exp(model.coef_))
    clone = pickle.loads(pickle.dumps(model))
    X = pooled(frames)[FEATURES]
    np.testing.assert_array_equal(clone.predict_risk(X), model.predict_risk(X))
    from sklearn.base import clone as sk_clone
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        sk_clone(model).predict_risk(X)


def test_bad_requests_name_the_argument(fed):
    with pytest.raises(InvalidArgument, match="ties"):
        FederatedCoxPH(ties="efron").fit(fed, "surv", "time", "dead", FEATURES)
    for bad, word in (("nope", "nope"), ("fold", "features")):
        with pytest.raises(TooFewSites) as err:
            fed.round(
                S.COX_STRATIFIED, "surv", {"duration": "time", "event": "dead", "features": [bad]}
            )
        assert len(err.value.refusals) == 3
        assert all(word in r for r in err.value.refusals.values())
    with pytest.raises(DataError, match="collinear|information"):
        # 'treated' twice under another name is impossible here; a zero column is collinear
        S.newton_step(np.zeros((2, 2)), np.ones(2), ["u", "v"])


# --- Kaplan-Meier ---------------------------------------------------------------------
def test_km_thresholds_one_exact_grid_equals_lifelines(frames):
    df = pooled(frames)
    grid = np.unique(df["time"]).tolist()
    with federation(frames, OPEN) as f:
        km = kaplan_meier(f, "surv", "time", "dead", time_grid=grid)
    assert km.attrs["sites"] == ["a", "b", "c"]
    for group, sub in [("pooled", df), *[(s, frames[s]) for s in frames]]:
        ref = lifelines.KaplanMeierFitter().fit(sub["time"], sub["dead"])
        mine = km[km["group"] == group].set_index("time")
        assert len(mine) == sub["time"].nunique()
        np.testing.assert_allclose(
            mine["survival"], ref.survival_function_.loc[mine.index].iloc[:, 0], atol=1e-12
        )
        ci = ref.confidence_interval_.loc[mine.index]
        np.testing.assert_allclose(mine["ci_lower"], ci.iloc[:, 0], atol=1e-10)
        np.testing.assert_allclose(mine["ci_upper"], ci.iloc[:, 1], atol=1e-10)
        et = ref.event_table.loc[mine.index]
        np.testing.assert_array_equal(mine["at_risk"], et["at_risk"])
        np.testing.assert_array_equal(mine["events"], et["observed"])


def test_km_default_policy_releases_no_small_counts(fed, frames):
    # The default public grid unit is 30 (a width of 5 is no longer accepted: grids that
    # a researcher shifts or refines could be differenced down to single deaths).
    out = fed.round(S.KM_COUNTS, "surv", {"duration": "time", "event": "dead", "time_grid": 30.0})
    assert sorted(out.replies) == ["a", "b", "c"]
    for r in out.replies.values():
        for name, values in r["counts"].items():
            assert not any(0 < v < 5 for v in values), name
        assert min(r["counts"]["at_risk"]) >= 5
    km = kaplan_meier(fed, "surv", "time", "dead", time_grid=30.0)
    for col in ("at_risk", "events", "censored"):
        assert not km[col].between(1, 4).any()
    # The pooled rows are pooled counts on the common grid: each site's times move up to
    # its next kept edge, its unreleased tail is censored at its last edge (was: only the
    # edges every site kept, which on real data left the pooled curve empty).
    coarse, dead = [], []
    for site, df in frames.items():
        site_rows = km[km["group"] == site]
        edges = np.sort(out.replies[site]["arrays"]["time"]["data"])
        t = S.coarsen_times(df["time"].to_numpy(), 30.0)
        pos = np.searchsorted(edges, t, side="left")
        beyond = pos >= edges.size
        coarse.append(edges[np.minimum(pos, edges.size - 1)])
        dead.append(np.where(beyond, 0, df["dead"].to_numpy()))
        assert site_rows["time"].isin(edges).all()
    coarse_all, dead_all = np.concatenate(coarse), np.concatenate(dead)
    pool = km[km["group"] == "pooled"]
    assert len(pool) >= max(int((km["group"] == s).sum()) for s in frames)
    for row in pool.itertuples():
        assert row.at_risk == int((coarse_all >= row.time).sum())
        assert row.events == int(dead_all[coarse_all == row.time].sum())
    s = pool["survival"].to_numpy()
    assert np.all(np.diff(s) <= 0) and np.all((pool["ci_lower"] <= s) & (s <= pool["ci_upper"]))
    assert km.attrs["truncated"] == {
        site: {"after": float(max(e)), "censored": r["counts"]["remaining"][0]}
        for site, r in out.replies.items()
        if r["counts"]["remaining"][0] > 0
        for e in [r["arrays"]["time"]["data"]]
    }


def test_km_merge_rules():
    idx = np.array([0, 1, 1, 2, 3, 3, 3, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7])
    ev = np.array([1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    m = S.km_merge_steps(idx, ev, 8, 5, 5)
    for k in ("at_risk", "events", "censored"):
        assert not any(0 < v < 5 for v in m[k])
    assert m["remaining"] == 0 or m["remaining"] >= 5
    assert sum(m["events"]) + sum(m["censored"]) + m["remaining"] == idx.size


# --- C-index --------------------------------------------------------------------------
def test_cindex_per_site_equals_lifelines(fed, frames):
    from lifelines.utils import concordance_index as ll_ci

    model = FederatedCoxPH().fit(fed, "surv", "time", "dead", FEATURES, subset={"fold": "train"})
    res = model.concordance(fed, "surv", subset={"fold": "test"})
    assert res.sites == ["a", "b", "c"]
    tot_c = tot_p = 0.0
    per = []
    for s, df in frames.items():
        test = df[df["fold"] == "test"]
        score = model.predict_risk(test)
        ref = ll_ci(test["time"], -score, test["dead"])
        assert res.by_site.loc[s, "cindex"] == pytest.approx(ref, abs=1e-12)
        per.append(ref)
        conc, disc, tied = S.harrell_pairs(test["time"], test["dead"], score)
        tot_c += conc + 0.5 * tied
        tot_p += conc + disc + tied
    assert res.mean_over_sites == pytest.approx(np.mean(per), abs=1e-12)
    assert res.pooled == pytest.approx(tot_c / tot_p, abs=1e-12)
    direct = concordance_index(
        fed, "surv", "time", "dead", FEATURES, model.coef_.tolist(), subset={"fold": "test"}
    )
    assert direct.mean_over_sites == res.mean_over_sites


def test_harrell_pairs_handles_ties_like_lifelines():
    from lifelines.utils import concordance_index as ll_ci

    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 200).astype(float)
    e = (rng.random(200) < 0.6).astype(int)
    r = rng.integers(0, 4, 200).astype(float)  # many tied scores
    conc, disc, tied = S.harrell_pairs(t, e, r)
    assert (conc + 0.5 * tied) / (conc + disc + tied) == pytest.approx(ll_ci(t, -r, e), abs=1e-12)
