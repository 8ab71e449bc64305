"""The fast paths of an exact federated fit keep its results and its safety properties.

* the node's per-process caches: one DuckDB scan per site per fit (the moments
  round), later rounds without opening DuckDB, bit-identical specs on a repeated
  fit, never a stale matrix after the file or the opt-out set changed;
* the row-blocked GLM derivatives equal the textbook formulas;
* the design assembled from the raw column store equals ``design_matrix``;
* the in-process grid limits BLAS threads while nodes share the cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

import healthfed.compute  # noqa: F401 - registers the built-in computations
from healthfed.compute import glm
from healthfed.compute import preprocess as pp
from healthfed.compute.glm import maths as glm_maths
from healthfed.compute.preprocess import cache as pp_cache
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.data.sql import holdout_sql
from healthfed.federation.federation import Federation
from healthfed.node.connection import RequestConnection
from healthfed.node.runtime import Node


# --- data ----------------------------------------------------------------------------------
def _frame(rng: np.random.Generator, site: str, n: int) -> pd.DataFrame:
    age = rng.normal(60, 12, n)
    age[rng.random(n) < 0.05] = np.nan
    grp = rng.choice(["a", "b", "c"], n).astype(object)
    grp[rng.random(n) < 0.04] = None
    flag = rng.integers(0, 2, n).astype(float)
    flag[rng.random(n) < 0.03] = np.nan
    x = rng.normal(0, 1, n)
    eta = -0.5 + 0.03 * (np.nan_to_num(age, nan=60) - 60) + 0.8 * x - 0.4 * (grp == "b")
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame(
        {
            "pid": [f"{site}-{i}" for i in range(n)],
            "age": age,
            "x": x,
            "grp": grp,
            "flag": np.where(np.isnan(flag), None, np.where(flag == 1, "yes", "no")),
            "count": rng.poisson(np.exp(0.2 + 0.3 * x)).astype(float),
            "y": np.where(y == 1, "died", "alive"),
            "outcome": np.where(y == 1, "died", "alive"),
        }
    )


def _write_site(folder: Path, site: str, frame: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / f"{site}.parquet", index=False)
    return folder / f"{site}.parquet"


def _descriptor(folder: Path, site: str) -> Any:
    return descriptor_from_dict(
        {
            "dataset": {"name": "cohort", "file": f"{site}.parquet", "id_column": "pid"},
            "columns": {
                "pid": {"type": "id"},
                "age": {"type": "numeric"},
                "x": {"type": "numeric"},
                "grp": {"type": "categorical", "levels": ["a", "b", "c"]},
                "flag": {"type": "binary", "levels": ["no", "yes"]},
                "count": {"type": "integer"},
                "y": {"type": "binary", "levels": ["alive", "died"]},
                "outcome": {"type": "categorical", "levels": ["alive", "died"]},
            },
        },
        base_dir=folder,
    )


FEATURES = ["age", "x", "grp", "flag"]


@pytest.fixture()
def sites(tmp_path: Path) -> dict[str, NodeDataset]:
    rng = np.random.default_rng(7)
    out = {}
    for site, n in (("s1", 700), ("s2", 500), ("s3", 600)):
        _write_site(tmp_path, site, _frame(rng, site, n))
        ds = NodeDataset(_descriptor(tmp_path, site), cache_dir=tmp_path / "cache")
        ds.validate()
        out[site] = ds
    return out


@pytest.fixture(autouse=True)
def _empty_cache() -> Any:
    pp.clear_design_cache()
    yield
    pp.clear_design_cache()


class _Counter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.connects = 0
        self.scans = 0
        real_lease = NodeDataset.lease  # every connection a request uses is leased
        real_fetch = pp_cache._fetch_raw

        def lease(ds: NodeDataset) -> Any:
            self.connects += 1
            return real_lease(ds)

        def fetch(*a: Any, **k: Any) -> Any:
            self.scans += 1
            return real_fetch(*a, **k)

        monkeypatch.setattr(NodeDataset, "lease", lease)
        monkeypatch.setattr(pp_cache, "_fetch_raw", fetch)

    def reset(self) -> None:
        self.connects = self.scans = 0


# --- the node's caches ----------------------------------------------------------------------
def test_fit_scans_each_site_once_and_later_rounds_open_no_connection(sites, monkeypatch):
    count = _Counter(monkeypatch)
    nodes = [Node(name, {"cohort": ds}) for name, ds in sites.items()]
    with Federation.inprocess(nodes) as fed:
        m1 = glm.FederatedLogisticRegression().fit(fed, "cohort", "y", FEATURES)
        assert m1.rounds_ >= 4 and m1.converged_
        # The moments round scanned once per site (plus one connection per site for the
        # privacy guard's differencing count of the cohort); no glm_step round did either.
        assert count.scans == len(sites) and count.connects == 2 * len(sites)
        count.reset()
        m2 = glm.FederatedLogisticRegression().fit(fed, "cohort", "y", FEATURES)
        assert count.scans == 0 and count.connects == 0
    # Moments from the same rows are bit-identical, so is everything downstream.
    assert m2.preprocessor_.spec_ == m1.preprocessor_.spec_
    np.testing.assert_array_equal(m2.params_, m1.params_)


def test_cached_design_equals_design_matrix(sites):
    nodes = [Node(name, {"cohort": ds}) for name, ds in sites.items()]
    hold = {"fraction": 0.3, "seed": 4, "part": "train"}
    with Federation.inprocess(nodes) as fed:
        specs = {
            "indicator": pp.FederatedPreprocessor(FEATURES).fit(fed, "cohort", "y").spec_,
            "drop": pp.FederatedPreprocessor(FEATURES, missing="drop")
            .fit(fed, "cohort", "y")
            .spec_,
            "raw-scale": pp.FederatedPreprocessor(FEATURES, standardize=False)
            .fit(fed, "cohort", "outcome")
            .spec_,
        }
    assert any(c["indicator"] for c in specs["indicator"]["columns"] if c["type"] == "categorical")
    cases = [
        ("indicator", "y", None, "TRUE", "binomial"),
        ("indicator", "y", "alive", "TRUE", "binomial"),
        ("indicator", "y", None, holdout_sql(None, None), "gaussian"),
        ("drop", "y", None, "TRUE", "binomial"),
        ("raw-scale", "outcome", "died", "TRUE", "binomial"),
        ("indicator", "count", None, "TRUE", "poisson"),
    ]
    for ds in sites.values():
        desc = ds.descriptor
        cases_here = [*cases]
        cases_here.append(("indicator", "y", None, holdout_sql(desc, hold), "binomial"))
        for name, target, positive, where, family in cases_here:
            spec = specs[name]
            with RequestConnection(ds) as data:
                X, y = pp.cached_design(data.con, desc, spec, target, positive, where, family)
            con = ds.connect()
            try:
                X0, y0 = pp.design_matrix(
                    con, desc, spec, target, positive, where, family, intercept=True
                )
            finally:
                con.close()
            np.testing.assert_array_equal(X, X0)
            np.testing.assert_array_equal(y, y0)
            assert not X.flags.writeable and not y.flags.writeable


def test_moments_from_the_raw_columns_equal_the_pooled_statistics(sites):
    nodes = [Node(name, {"cohort": ds}) for name, ds in sites.items()]
    with Federation.inprocess(nodes) as fed:
        spec = pp.FederatedPreprocessor(FEATURES).fit(fed, "cohort", "y").spec_
    pooled = pd.concat([pd.read_parquet(ds.descriptor.path) for ds in sites.values()])
    cols = {c["name"]: c for c in spec["columns"]}
    for name in ("age", "x"):
        assert cols[name]["mean"] == pytest.approx(pooled[name].mean(), rel=1e-13)
        assert cols[name]["scale"] == pytest.approx(pooled[name].std(ddof=1), rel=1e-12)
    flag = pooled["flag"].dropna() == "yes"
    assert cols["flag"]["mean"] == pytest.approx(flag.mean(), rel=1e-13)
    assert cols["age"]["indicator"] and cols["grp"]["indicator"] and not cols["x"]["indicator"]
    assert spec["n_rows"] == len(pooled)


def test_a_replaced_file_is_never_served_from_the_cache(sites, tmp_path):
    ds = sites["s1"]
    spec = {
        "kind": pp.SPEC_KIND,
        "version": 1,
        "columns": [{"name": "x", "type": "numeric", "mean": 0.0, "center": 0.0, "scale": 1.0}],
    }
    with RequestConnection(ds) as data:
        X1, _ = pp.cached_design(data.con, ds.descriptor, spec, "y", None, "TRUE", "binomial")
        assert data.con.opened  # a miss: one scan
    with RequestConnection(ds) as data:
        again, _ = pp.cached_design(data.con, ds.descriptor, spec, "y", None, "TRUE", "binomial")
        assert again is X1 and not data.con.opened  # identified and served without DuckDB
    frame = _frame(np.random.default_rng(99), "s1", 450)
    path = _write_site(tmp_path, "s1", frame)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with RequestConnection(ds) as data:
        X2, _ = pp.cached_design(data.con, ds.descriptor, spec, "y", None, "TRUE", "binomial")
    assert X2.shape == (450, 2)
    np.testing.assert_array_equal(X2[:, 1], frame["x"].to_numpy())


def test_optouts_open_the_connection_and_change_the_cache_identity(sites, tmp_path):
    from healthfed.node.optout import OptOutStore

    ds = sites["s2"]
    store = OptOutStore(tmp_path / "state" / "optouts.sqlite")
    spec = {
        "kind": pp.SPEC_KIND,
        "version": 1,
        "columns": [{"name": "x", "type": "numeric", "mean": 0.0, "center": 0.0, "scale": 1.0}],
    }

    def design() -> tuple[np.ndarray, int | None, bool]:
        with RequestConnection(ds, store) as data:
            opened = data.con.opened
            X, _ = pp.cached_design(data.con, ds.descriptor, spec, "y", None, "TRUE", "binomial")
            return X, data.excluded, opened

    X, excluded, opened = design()
    assert X.shape[0] == 500 and excluded == 0 and not opened
    store.add("s2-3")
    X, excluded, opened = design()
    assert X.shape[0] == 499 and excluded == 1 and opened
    store.add("s2-4")
    X, excluded, _ = design()
    assert X.shape[0] == 498 and excluded == 2  # a new opt-out set, a new cache entry
    store.remove("s2-3")
    X, excluded, _ = design()
    assert X.shape[0] == 499 and excluded == 1


def test_lazy_connection_has_no_identity_once_opened(sites):
    ds = sites["s3"]
    with RequestConnection(ds) as data:
        assert data.con.data_identity() is not None
        data.con.execute("SELECT 1").fetchone()
        assert data.con.opened and data.con.data_identity() is None
    assert not data.con.opened  # closed on exit ...
    with pytest.raises(duckdb.ConnectionException):
        data.con.execute("SELECT 1")  # ... and never silently reopened without its view


# --- the maths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["binomial", "poisson", "gaussian"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_blocked_derivatives_equal_the_formulas(family, order):
    from scipy.special import gammaln, xlogy

    rng = np.random.default_rng(3)
    n, p = 2 * glm_maths._CHUNK_ROWS + 123, 6
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    X = np.asfortranarray(X) if order == "F" else np.ascontiguousarray(X)
    beta = rng.normal(scale=0.3, size=p)
    eta = X @ beta
    if family == "binomial":
        mu = 1 / (1 + np.exp(-eta))
        y = (rng.random(n) < mu).astype(float)
        w = mu * (1 - mu)
        ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        dev = -2 * ll
    elif family == "poisson":
        mu = np.exp(eta)
        y = rng.poisson(mu).astype(float)
        w = mu
        ll = float(np.sum(y * eta - mu - gammaln(y + 1)))
        dev = float(2 * np.sum(xlogy(y, y) - y * eta - (y - mu)))
    else:
        mu = eta
        y = eta + rng.normal(size=n)
        w = np.ones(n)
        ll = 0.0
        dev = float(np.sum((y - mu) ** 2))
    score, H, d, lk = glm.glm_derivatives(family, X, y, beta)
    np.testing.assert_allclose(score, X.T @ (y - mu), rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(H, X.T @ (X * w[:, None]), rtol=1e-10)
    assert d == pytest.approx(dev, rel=1e-12)
    assert lk == pytest.approx(ll, rel=1e-12)


def test_sum_log1pexp_is_logaddexp():
    e = np.r_[np.linspace(-800, 800, 10_001), 0.0, -0.0, 1e-300, 40.0, -40.0]
    assert glm_maths._sum_log1pexp(e) == pytest.approx(
        float(np.sum(np.logaddexp(0.0, e))), rel=1e-14
    )


# --- threads ------------------------------------------------------------------------------------
def test_inprocess_round_limits_blas_threads_when_nodes_share_cores(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from healthfed.federation.grids.inprocess import InProcessGrid

    def blas_threads() -> list[int]:
        return [
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        ]

    if not blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        grid = InProcessGrid([Node(f"n{i}", {}) for i in range(4)])
        try:
            with grid._blas_limit():
                assert set(blas_threads()) == {1}
            assert set(blas_threads()) == {2}
            one = InProcessGrid([Node("solo", {})])
            with one._blas_limit():
                assert set(blas_threads()) == {2}  # a lone node keeps every core
            one.close()
            # Overlapping rounds (two federations in two threads) share the limit: the
            # first out does not lift it under the second, the last out restores it.
            a, b = grid._blas_limit(), grid._blas_limit()
            a.__enter__()
            b.__enter__()
            a.__exit__(None, None, None)
            assert set(blas_threads()) == {1}
            b.__exit__(None, None, None)
            assert set(blas_threads()) == {2}
        finally:
            grid.close()
