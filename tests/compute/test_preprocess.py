"""Federated preprocessing: one JSON spec, identical design matrices at every site."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import healthfed.compute  # noqa: F401 - registers the built-in computations
from healthfed.compute import preprocess as pp
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.errors import DataError, PolicyDenied
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy


def descriptor(levels: list[str] | None = None):
    return descriptor_from_dict(
        {
            "dataset": {"name": "cohort", "file": "unused.parquet", "id_column": "pid"},
            "columns": {
                "age": {"type": "numeric"},
                "crp": {"type": "numeric"},
                "sex": {"type": "categorical", "levels": levels or ["f", "m", "x"]},
                "smoker": {"type": "binary"},
                "y": {"type": "binary"},
            },
        },
        base_dir=Path("."),
    )


def site_frame(rng: np.random.Generator, name: str, n: int, n_missing_age: int) -> pd.DataFrame:
    age = rng.normal(50, 10, n)
    age[:n_missing_age] = np.nan
    sex = rng.choice(["f", "m"], n).astype(object)  # level "x" declared, never observed
    return pd.DataFrame(
        {
            "pid": [f"{name}-{i}" for i in range(n)],
            "age": age,
            "crp": rng.lognormal(3, 1, n),
            "sex": sex,
            "smoker": rng.integers(0, 2, n),
            "y": np.where(rng.random(n) < 0.05, np.nan, rng.integers(0, 2, n)),
        }
    )


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(11)
    return {"h1": site_frame(rng, "h1", 300, 12), "h2": site_frame(rng, "h2", 200, 0)}


@pytest.fixture(scope="module")
def fed(frames):
    desc = descriptor()  # the SAME descriptor object at both sites: the cache must not mix them
    nodes = [Node(s, {"cohort": NodeDataset.from_frame(f, desc)}) for s, f in frames.items()]
    f = Federation.inprocess(nodes)
    yield f
    f.close()


COLUMNS = ["age", "crp", "sex", "smoker"]


def test_spec_equals_pooled_statistics_and_is_json(fed, frames):
    pre = pp.FederatedPreprocessor(COLUMNS, categorical=["sex"]).fit(fed, "cohort", target="y")
    spec = pre.spec_
    assert json.loads(json.dumps(spec)) == spec
    df = pd.concat(list(frames.values()), ignore_index=True)
    df = df[df["y"].notna()]  # rows without an outcome are not used
    cols = {c["name"]: c for c in spec["columns"]}
    assert spec["n_rows"] == len(df)
    for name in ("age", "crp"):
        assert cols[name]["mean"] == pytest.approx(df[name].mean(), rel=1e-12)
        assert cols[name]["scale"] == pytest.approx(df[name].std(ddof=1), rel=1e-10)
    assert cols["age"]["indicator"] is True and cols["crp"]["indicator"] is False
    assert cols["sex"]["levels"] == ["f", "m", "x"]  # declared, including the unseen level
    assert cols["smoker"]["center"] == 0.0 and cols["smoker"]["scale"] == 1.0
    assert pre.feature_names_ == ["age", "age_missing", "crp", "sex_m", "sex_x", "smoker"]
    assert pp.n_features(spec) == 6


def test_node_design_matrix_equals_hub_transform(fed, frames):
    pre = pp.FederatedPreprocessor(COLUMNS).fit(fed, "cohort", target="y")
    for frame in frames.values():
        ds = NodeDataset.from_frame(frame, descriptor())
        con = ds.connect()
        try:
            X, y = pp.design_matrix(con, ds.descriptor, pre.spec_, target="y")
        finally:
            con.close()
        used = frame[frame["y"].notna()]
        np.testing.assert_allclose(X, pre.transform(used), atol=1e-12)
        np.testing.assert_array_equal(y, used["y"].to_numpy(float))
        imputed = X[np.isnan(used["age"].to_numpy()), 0]
        assert np.all(imputed == 0.0)  # pooled mean imputation = 0 after standardising


def test_cache_returns_the_same_matrix_and_never_mixes_sites(frames):
    pp.clear_design_cache()
    desc = descriptor()
    spec = {
        "kind": pp.SPEC_KIND,
        "version": 1,
        "columns": [
            {"name": "age", "type": "numeric", "mean": 50.0, "center": 50.0, "scale": 10.0}
        ],
    }
    out = []
    for frame in frames.values():
        ds = NodeDataset.from_frame(frame, desc)
        con = ds.connect()
        a = pp.cached_design(con, desc, spec, "y", None, "TRUE", "binomial")
        b = pp.cached_design(con, desc, spec, "y", None, "TRUE", "binomial")
        con.close()
        assert a[0] is b[0] and not a[0].flags.writeable
        out.append(a[0])
    assert out[0].shape != out[1].shape


def test_declared_levels_must_agree(frames):
    nodes = [
        Node("h1", {"cohort": NodeDataset.from_frame(frames["h1"], descriptor())}),
        Node(
            "h2", {"cohort": NodeDataset.from_frame(frames["h2"], descriptor(["f", "m", "other"]))}
        ),
    ]
    with Federation.inprocess(nodes) as fed:
        with pytest.raises(DataError, match="different levels"):
            pp.FederatedPreprocessor(["sex"]).fit(fed, "cohort", target="y")


def test_small_missing_count_declines_naming_the_column(frames):
    rng = np.random.default_rng(5)
    odd = site_frame(rng, "h3", 100, 2)  # 2 missing ages: a count below 5
    desc = descriptor()
    nodes = [
        Node(s, {"cohort": NodeDataset.from_frame(f, desc)})
        for s, f in {**frames, "h3": odd}.items()
    ]
    with Federation.inprocess(nodes) as fed:
        pre = pp.FederatedPreprocessor(COLUMNS).fit(fed, "cohort", target="y")
    assert pre.sites_ == ["h1", "h2"]
    assert "'age'" in pre.refused_["h3"] and "missing" in pre.refused_["h3"]


def test_param_ratio_applies_at_the_moments_round(frames):
    rng = np.random.default_rng(6)
    small = site_frame(rng, "h3", 12, 0)  # 6 parameters > 0.33 * 12 rows
    desc = descriptor()
    nodes = [
        Node(s, {"cohort": NodeDataset.from_frame(f, desc)})
        for s, f in {**frames, "h3": small}.items()
    ]
    with Federation.inprocess(nodes) as fed:
        pre = pp.FederatedPreprocessor(COLUMNS).fit(fed, "cohort", target="y", n_params="design")
    assert "h3" in pre.refused_ and "parameters" in pre.refused_["h3"]


def test_missing_drop_and_validation_errors(fed, frames):
    pre = pp.FederatedPreprocessor(COLUMNS, missing="drop").fit(fed, "cohort", target="y")
    df = pd.concat(list(frames.values()), ignore_index=True).dropna(subset=["y", *COLUMNS])
    assert pre.spec_["n_rows"] == len(df)
    assert not any(c["indicator"] for c in pre.spec_["columns"])
    desc = descriptor()
    with pytest.raises(PolicyDenied, match="kind"):
        pp.validate_spec({"columns": []}, desc)
    bad = json.loads(json.dumps(pre.spec_))
    bad["columns"][2]["levels"] = ["m", "f", "x"]  # reordered: another reference level
    with pytest.raises(DataError, match="declares levels"):
        pp.validate_spec(bad, desc)
    with pytest.raises(DataError, match="undeclared level"):
        pp.transform_frame(pd.DataFrame({**df.iloc[:1].to_dict("list"), "sex": ["q"]}), pre.spec_)
    with pytest.raises(PolicyDenied):
        pp.validate_moments({"columns": ["pid"]}, desc, SitePolicy())


def test_fedavg_accepts_the_spec(fed):
    from healthfed.compute.fedavg import FedAvgLogisticRegression

    pre = pp.FederatedPreprocessor(COLUMNS).fit(fed, "cohort", target="y")
    m = FedAvgLogisticRegression(rounds=2).fit(fed, "cohort", "y", preprocess=pre.spec_)
    assert m.coef_.shape == (1, pp.n_features(pre.spec_))
