"""Exact federated GLM: equals pooled fitting on the concatenated rows."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import healthfed.compute  # noqa: F401 - registers the built-in computations
from healthfed.compute import glm as glm_mod  # noqa: F401 - registers glm_step
from healthfed.compute.glm import FederatedGLM, FederatedLogisticRegression, glm_derivatives
from healthfed.compute.preprocess import transform_frame
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.errors import ThresholdViolation
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy

FEATURES = ["age", "x", "grp", "flag"]

DESCRIPTOR = descriptor_from_dict(
    {
        "dataset": {"name": "cohort", "file": "unused.parquet", "id_column": "pid"},
        "columns": {
            "age": {"type": "numeric", "bounds": [0, 120]},
            "x": {"type": "numeric"},
            "grp": {"type": "categorical", "levels": ["a", "b", "c"]},
            "flag": {"type": "binary"},
            "y": {"type": "binary"},
            "yc": {"type": "integer"},
            "yn": {"type": "numeric"},
        },
    },
    base_dir=Path("."),
)


def make_site(rng: np.random.Generator, name: str, n: int, shift: float) -> pd.DataFrame:
    """Rows with a site effect, 10 % missing age and 10 % missing groups (disjoint rows).

    Sizes and missingness give every 0/1 design column enough patients per site for the
    node's release invariant: with 6 missing groups the Poisson start round's weights
    ``y + 0.1`` over those rows were dominated by two patients' counts (dominance rule),
    which the node now refuses.
    """
    age = rng.normal(60 + 5 * shift, 12, n)
    x = rng.normal(shift, 1.0, n)
    grp = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]).astype(object)
    flag = rng.integers(0, 2, n)
    eta = -0.3 + 0.04 * (age - 60) + 0.7 * x + 0.5 * (grp == "b") - 0.4 * (grp == "c") + 0.3 * flag
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    yc = rng.poisson(np.exp(0.3 + 0.2 * x + 0.2 * flag))
    yn = 2.0 + 0.5 * x - 0.3 * flag + 0.02 * age + rng.normal(0, 1, n)
    k = n // 10
    miss = rng.choice(n, size=2 * k, replace=False)
    age[miss[:k]] = np.nan
    grp[miss[k:]] = None
    return pd.DataFrame(
        {
            "pid": [f"{name}-{i}" for i in range(n)],
            "age": age,
            "x": x,
            "grp": grp,
            "flag": flag,
            "y": y,
            "yc": yc,
            "yn": yn,
        }
    )


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    return {
        "site_a": make_site(rng, "site_a", 800, 0.0),
        "site_b": make_site(rng, "site_b", 500, 0.5),
        "site_c": make_site(rng, "site_c", 300, -0.5),
    }


def federation_of(frames: dict[str, pd.DataFrame], policies: dict[str, SitePolicy] | None = None):
    nodes = [
        Node(
            s,
            {"cohort": NodeDataset.from_frame(f, DESCRIPTOR)},
            (policies or {}).get(s, SitePolicy()),
        )
        for s, f in frames.items()
    ]
    return Federation.inprocess(nodes)


@pytest.fixture(scope="module")
def fed(frames):
    f = federation_of(frames)
    yield f
    f.close()


def pooled_design(frames: dict[str, pd.DataFrame], spec: dict) -> pd.DataFrame:
    return pd.concat(list(frames.values()), ignore_index=True)


def pooled_newton(family: str, X: np.ndarray, y: np.ndarray, lam: float = 0.0) -> np.ndarray:
    """Reference fit on concatenated numpy data (no statsmodels)."""
    P = np.eye(X.shape[1])
    P[0, 0] = 0.0
    b = np.zeros(X.shape[1])
    if family == "poisson":
        b[0] = np.log(y.mean())
    for _ in range(100):
        s, H, _, _ = glm_derivatives(family, X, y, b)
        step = np.linalg.solve(H + lam * P, s - lam * P @ b)
        b = b + step
        if np.max(np.abs(step)) < 1e-13:
            break
    return b


def xy(model: FederatedGLM, frames, target: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.concat(list(frames.values()), ignore_index=True)
    X = transform_frame(df, model.preprocessor_.spec_)
    return np.column_stack([np.ones(len(df)), X]), df[target].to_numpy(dtype=float)


@pytest.mark.parametrize("l2", [0.0, 2.5])
def test_logistic_equals_pooled_newton_and_sklearn(fed, frames, l2):
    from sklearn.linear_model import LogisticRegression

    m = FederatedLogisticRegression(l2=l2).fit(fed, "cohort", "y", FEATURES)
    X, y = xy(m, frames, "y")
    assert m.feature_names_ == ["age", "age_missing", "x", "grp_b", "grp_c", "grp_missing", "flag"]
    ref = pooled_newton("binomial", X, y, l2)
    assert np.max(np.abs(m.params_ - ref)) <= 1e-6
    sk = LogisticRegression(
        C=np.inf if l2 == 0 else 1.0 / l2, tol=1e-12, max_iter=10_000, solver="newton-cholesky"
    ).fit(X[:, 1:], y)
    assert np.max(np.abs(m.coef_.ravel() - sk.coef_.ravel())) <= 1e-6
    assert abs(m.intercept_[0] - sk.intercept_[0]) <= 1e-6
    assert m.converged_ and m.sites_ == ["site_a", "site_b", "site_c"]
    assert m.rounds_ <= 9
    # predictions from raw frames apply the same preprocessing
    df = pd.concat(list(frames.values()), ignore_index=True)
    np.testing.assert_allclose(
        m.predict_proba(df)[:, 1], sk.predict_proba(X[:, 1:])[:, 1], atol=1e-7
    )


def test_logistic_se_ci_pvalues_match_pooled_formulas(fed, frames):
    m = FederatedGLM(family="binomial").fit(fed, "cohort", "y", FEATURES)
    X, y = xy(m, frames, "y")
    b = pooled_newton("binomial", X, y)
    _, H, dev, ll = glm_derivatives("binomial", X, y, b)
    se = np.sqrt(np.diag(np.linalg.inv(H)))
    # The information comes from the last evaluated coefficients, one quadratically
    # small Newton step (here < 1e-6) before the reported ones.
    np.testing.assert_allclose(m.bse_, se, rtol=1e-7)
    np.testing.assert_allclose(m.conf_int_[:, 0], b - 1.959964 * se, atol=1e-6)
    np.testing.assert_allclose(m.conf_int_[:, 1], b + 1.959964 * se, atol=1e-6)
    np.testing.assert_allclose(m.pvalues_, 2 * norm.sf(np.abs(b / se)), rtol=1e-6, atol=1e-12)
    assert m.deviance_ == pytest.approx(dev, rel=1e-10)
    assert m.loglik_ == pytest.approx(ll, rel=1e-10)
    assert m.nobs_ == len(y)
    frame = m.summary_frame()
    assert list(frame.index) == ["intercept", *m.feature_names_]
    np.testing.assert_allclose(frame["odds_ratio"], np.exp(b), rtol=1e-6)
    np.testing.assert_allclose(frame["se"], se, rtol=1e-7)


@pytest.mark.parametrize("l2", [0.0, 3.0])
def test_gaussian_equals_lstsq_and_ridge(fed, frames, l2):
    m = FederatedGLM(family="gaussian", l2=l2).fit(fed, "cohort", "yn", FEATURES)
    X, y = xy(m, frames, "yn")
    if l2 == 0:
        ref = np.linalg.lstsq(X, y, rcond=None)[0]
    else:
        P = np.eye(X.shape[1])
        P[0, 0] = 0
        ref = np.linalg.solve(X.T @ X + l2 * P, X.T @ y)
    assert np.max(np.abs(m.params_ - ref)) <= 1e-6
    assert m.rounds_ == 3  # moments, IRLS start (= least squares), confirmation
    if l2 == 0:
        n, p = X.shape
        rss = float(np.sum((y - X @ ref) ** 2))
        se = np.sqrt(np.diag(rss / (n - p) * np.linalg.inv(X.T @ X)))
        np.testing.assert_allclose(m.bse_, se, rtol=1e-8)
        assert m.dispersion_ == pytest.approx(rss / (n - p), rel=1e-10)


@pytest.mark.parametrize("l2", [0.0, 1.5])
def test_poisson_equals_pooled(fed, frames, l2):
    m = FederatedGLM(family="poisson", l2=l2).fit(fed, "cohort", "yc", FEATURES)
    X, y = xy(m, frames, "yc")
    ref = pooled_newton("poisson", X, y, l2)
    assert np.max(np.abs(m.params_ - ref)) <= 1e-6
    if l2 > 0:
        from sklearn.linear_model import PoissonRegressor

        sk = PoissonRegressor(
            alpha=l2 / len(y), tol=1e-12, max_iter=10_000, solver="newton-cholesky"
        )
        sk.fit(X[:, 1:], y)
        assert np.max(np.abs(m.coef_ - sk.coef_)) <= 1e-6
    assert "rate_ratio" in m.summary_frame().columns


def test_missing_drop_uses_complete_cases(fed, frames):
    m = FederatedGLM(missing="drop").fit(fed, "cohort", "y", FEATURES)
    df = pd.concat(list(frames.values()), ignore_index=True).dropna(subset=FEATURES)
    assert m.nobs_ == len(df)
    assert not any(n.endswith("_missing") for n in m.feature_names_)
    X = np.column_stack([np.ones(len(df)), transform_frame(df, m.preprocessor_.spec_)])
    ref = pooled_newton("binomial", X, df["y"].to_numpy(float))
    assert np.max(np.abs(m.params_ - ref)) <= 1e-6


def test_small_site_declines_and_fit_uses_the_others(frames):
    rng = np.random.default_rng(3)
    tiny = make_site(rng, "tiny", 18, 0.0)  # 8 parameters > 0.33 * 18 rows
    tiny["age"] = tiny["age"].fillna(60.0)
    tiny["grp"] = tiny["grp"].fillna("a")
    fed = federation_of({**frames, "tiny": tiny})
    try:
        m = FederatedGLM().fit(fed, "cohort", "y", FEATURES)
    finally:
        fed.close()
    assert m.sites_ == ["site_a", "site_b", "site_c"]
    assert "tiny" in m.refused_ and "parameters" in m.refused_["tiny"]
    X, y = xy(m, frames, "y")
    assert np.max(np.abs(m.params_ - pooled_newton("binomial", X, y))) <= 1e-6


def test_too_few_sites_is_an_error(frames):
    strict = SitePolicy(max_param_ratio=0.01)
    fed = federation_of(frames, {"site_b": strict, "site_c": strict})
    try:
        with pytest.raises(ThresholdViolation, match="at least 2"):
            FederatedGLM().fit(fed, "cohort", "y", FEATURES)
    finally:
        fed.close()


def test_estimator_is_picklable_clonable_and_checks_fitted(fed, frames):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    df = pd.concat(list(frames.values()), ignore_index=True)
    with pytest.raises(NotFittedError):
        FederatedLogisticRegression().predict_proba(df)
    m = FederatedLogisticRegression(l2=0.5).fit(fed, "cohort", "y", FEATURES)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.predict_proba(df), m.predict_proba(df))
    np.testing.assert_array_equal(back.predict(df), m.predict(df))
    assert back.coef_.shape == (1, 7) and back.intercept_.shape == (1,)
    assert clone(m).get_params() == m.get_params()
    spec = m.to_model_spec()
    assert spec["model"] == "logistic" and len(spec["coef"]) == 7


def test_reuses_a_fitted_preprocessor(fed, frames):
    m1 = FederatedGLM().fit(fed, "cohort", "y", FEATURES)
    m2 = FederatedGLM().fit(fed, "cohort", "y", preprocess=m1.preprocessor_.spec_)
    assert m2.rounds_ == m1.rounds_ - 1
    np.testing.assert_allclose(m2.params_, m1.params_, atol=1e-12)


def test_heart_disease_bench_default_refused_and_public_policy_equals_pooled():
    """The bench's exact fit on the four UCI centres, under the release invariant.

    Its design (sex, fbs, exang, cp and restecg dummies) has two-way cells of 1..4
    patients at every centre (e.g. 2 women at VA); the first round's X'X would release
    them exactly, so the default policy refuses it (support rule). The public benchmark's
    sites set min_cell_count 1, and there the fit equals pooled scikit-learn.
    """
    import sys

    bench_dir = str(Path(__file__).resolve().parents[2] / "bench")
    sys.path.insert(0, bench_dir)
    try:
        import heart_disease
    finally:
        sys.path.remove(bench_dir)
    r = heart_disease.run(fedavg_rounds=1)
    refusals = r["default_policy"]["refused"]
    assert sum("support rule" in why for why in refusals.values()) >= 3, (
        refusals
    )  # + Switzerland: params/row
    assert r["max_abs_coef_diff_vs_pooled"] < 1e-6
    assert r["site_policy_0.5"]["sites"] == sorted(r["train_sizes"])


@pytest.mark.parametrize("family", ["binomial", "poisson", "gaussian"])
@pytest.mark.parametrize("n", [0, 1, 9_000, 20_001])
def test_a_rounds_sums_from_the_row_terms_equal_the_one_pass_derivatives(family, n):
    """The node sums the row terms its release filter profiles (glm_sums) instead of a
    second pass over the design (glm_derivatives): the same four numbers, to rounding."""
    from healthfed.compute.glm.maths import glm_row_terms, glm_sums

    rng = np.random.default_rng(n)
    X = np.asfortranarray(np.column_stack([np.ones(n), rng.normal(size=(n, 4))]))
    beta = rng.normal(scale=0.4, size=5)
    eta = X @ beta
    y = {
        "binomial": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float),
        "poisson": rng.poisson(np.exp(np.clip(eta, -5, 3))).astype(float),
        "gaussian": eta + rng.normal(size=n),
    }[family]
    want = glm_derivatives(family, X, y, beta)
    got = glm_sums(family, X, *glm_row_terms(family, eta, y))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-9)
