"""Model computations under the release invariant: crafted parameters isolate no one.

Every attack goes through the public round path (``Federation.round``) with ordinary
requests, and is first shown to work on the unprotected sums (computed here from the
rows, as the old release did) against the truth; then the node's release must refuse,
naming the rule. The last test throws random crafted parameters at every model
computation and recomputes support and dominance of every released entry from the
rows (hypothesis).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import SUBGROUP_BY_WARD, frame, make_node, site_outcome  # noqa: E402

import healthfed.compute  # noqa: E402, F401 - registers the computations
from healthfed.compute.fedavg.models import local_sgd, sigmoid  # noqa: E402
from healthfed.compute.glm.maths import glm_derivatives, unpack_upper  # noqa: E402
from healthfed.compute.preprocess import standardisation_spec  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy.contributions import (  # noqa: E402
    ContributionProfile,
    cross_profile,
    profile_rows,
)
from healthfed.privacy.model_release import ModelStatistics, check_invariant  # noqa: E402

TARGET_AGE = 109.0


def _frames() -> dict[str, pd.DataFrame]:
    a, b = frame(400, 11, "a"), frame(400, 12, "b")
    a["age"] = a["age"].clip(upper=100.0)
    a.loc[0, ["age", "weight", "sex", "death"]] = [TARGET_AGE, 131.5, "female", 1]
    # a two-way cell of 2 at site A: ward d & female (Table 1 / crosstab withhold it)
    a["ward"] = a["ward"].replace("d", "c")
    a.loc[[1, 2], ["ward", "sex"]] = ["d", "female"]
    a.loc[3:12, ["ward", "sex"]] = ["d", "male"]
    b["ward"] = b["ward"].replace("d", "c")
    b.loc[0, "ward"] = "d"  # a one-patient subgroup at site B
    return {"A": a, "B": b}


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return _frames()


@pytest.fixture(scope="module")
def fed(tmp_path_factory, frames):
    tmp = tmp_path_factory.mktemp("invariant")
    f = Federation.inprocess([make_node(tmp, s, df) for s, df in frames.items()])
    yield f
    f.close()


@pytest.fixture(scope="module")
def wide_fed(tmp_path_factory, frames):
    """Sites that widened the bounded region to its maximum and accept exact MLPs: the
    support and dominance rules are then the line of defence."""
    tmp = tmp_path_factory.mktemp("invariant_wide")
    policy = SitePolicy(eta_bound=690.0, exact_nonlinear_models=True)
    f = Federation.inprocess([make_node(tmp, s, df, policy) for s, df in frames.items()])
    yield f
    f.close()


def raw_spec(columns: list[str]) -> dict[str, Any]:
    return standardisation_spec(columns, centers=[0.0] * len(columns), scales=[1.0] * len(columns))


def onehot_spec(*cats: tuple[str, list[str]]) -> dict[str, Any]:
    spec = raw_spec(["age"])
    spec["columns"] += [
        {"name": c, "type": "categorical", "levels": levels, "indicator": False}
        for c, levels in cats
    ]
    return spec


def site_a(fed: Federation, computation: str, params: dict[str, Any]) -> tuple[str, Any]:
    out = site_outcome(fed, computation, "cohort", params, min_sites=1)
    if "A" in out.refused:
        return "refused", out.refused["A"]
    return "ok", out.replies["A"]


# --- class 1: crafted GLM coefficients --------------------------------------------------
def test_glm_step_weights_zero_but_one_patient(fed, frames) -> None:
    a = frames["A"]
    X = np.column_stack([np.ones(len(a)), a["age"], a["weight"]])
    beta = np.array([-50.0 * TARGET_AGE, 50.0, 0.0])  # eta = 50 (age - 109): 0 only at 109
    _, H, _, _ = glm_derivatives("binomial", X, a["death"].to_numpy(float), beta)
    # The attack on the unprotected sums: the Hessian is 1/4 of the target's x x'.
    assert H[0, 0] == pytest.approx(0.25)
    assert H[0, 2] / H[0, 0] == pytest.approx(131.5)  # the patient's weight, exactly
    params = {"family": "binomial", "target": "death", "preprocess": raw_spec(["age", "weight"])}
    status, why = site_a(fed, "glm_step", {**params, "beta": beta.tolist()})
    assert status == "refused" and "bounded-region rule" in why
    # Inside the region the same idea leaves everyone else a weight >= 6e-6: one heavy row
    # over many light ones is dominated, so refused by the dominance rule or the region.
    s = 12.0 / (TARGET_AGE - a["age"].iloc[1:].min())
    inside = [-s * TARGET_AGE, s, 0.0]
    status, why = site_a(fed, "glm_step", {**params, "beta": inside})
    assert status == "ok"  # a smooth weighting over everyone: allowed ...
    H = unpack_upper(np.asarray(why["arrays"]["hessian"]["data"]))
    assert abs(H[0, 2] / H[0, 0] - 131.5) > 1.0  # ... and the patient's weight is not in it


# --- class 2: cross-products of dummies --------------------------------------------------
def test_first_round_xtx_two_way_cell_is_refused(fed, frames) -> None:
    a = frames["A"]
    truth = int(((a["ward"] == "d") & (a["sex"] == "female")).sum())
    assert truth == 2
    # The attack: the first round's X'X at R's start weights (3/16 for every row).
    ward_d = (a["ward"] == "d").to_numpy(float)
    male = (a["sex"] == "male").to_numpy(float)
    female_d = (ward_d * (1 - male)).sum()  # = H[0, d] - H[d, male]: derivable
    assert female_d == truth
    spec = onehot_spec(("sex", ["female", "male"]), ("ward", ["a", "b", "c", "d"]))
    status, why = site_a(
        fed, "glm_step", {"family": "binomial", "target": "death", "preprocess": spec}
    )
    assert status == "refused" and "support rule" in why and "complements" in why
    # Table 1's own rule agrees: the crosstab withholds the cell.
    ct = site_outcome(fed, "crosstab", "cohort", {"rows": "ward", "cols": "sex"}, min_sites=1)
    if "A" in ct.replies:
        t = ct.replies["A"]["tables"]
        cells = next(iter(t.values()))
        r, c = cells["rows"].index("d"), cells["cols"].index("female")
        assert cells["counts"][r][c] != truth
    # B has no small cell: the fit's first round runs there.
    out = site_outcome(
        fed,
        "glm_step",
        "cohort",
        {
            "family": "binomial",
            "target": "death",
            "preprocess": onehot_spec(("sex", ["female", "male"])),
        },
        min_sites=1,
    )
    assert set(out.replies) == {"A", "B"}


# --- class 1: an MLP whose hidden unit is an indicator of one value ---------------------
def test_local_train_indicator_unit_gives_one_outcome(fed, wide_fed, frames) -> None:
    a = frames["A"]
    X = a[["age"]].to_numpy(float)
    y = a["death"].to_numpy(float)
    # h = tanh(5 (age - 109)): 0 for the target, exactly -1 for everyone else (aged <= 100),
    # so (1 - h^2) = 0 and only the target moves W1; its delta gives its residual.
    w0 = [np.array([[5.0]]), np.array([-5.0 * TARGET_AGE]), np.array([1.0]), np.array([1.0])]
    w1 = local_sgd("mlp", w0, X, y, epochs=1, lr=1.0, batch_size=len(y))
    r = -(w1[1] - w0[1])[0] * len(y)  # = (sigmoid(b2) - y_t) * w2
    assert round(sigmoid(np.array([1.0]))[0] - r) == 1  # the target's outcome
    params = {
        "model": "mlp",
        "hidden": 1,
        "target": "death",
        "preprocess": raw_spec(["age"]),
        "weights": [w.tolist() for w in w0],
        "epochs": 1,
        "lr": 1.0,
        "batch_size": 400,
    }
    status, why = site_a(fed, "local_train", params)
    assert status == "refused" and "only with differential privacy" in why
    status, why = site_a(wide_fed, "local_train", params)
    assert status == "refused" and "support rule" in why and "delta_0" in why


# --- class 1: a crafted model evaluated ---------------------------------------------------
def test_evaluate_crafted_model_gives_one_outcome(fed, wide_fed, frames) -> None:
    a = frames["A"]
    # MLP: z = w2 tanh(5 (age - 109)) + b2 with w2 = b2 = 5: z = 0 for everyone else, 5 for
    # the target; the recalibration gradient d/db = sum r z is then the target's alone.
    w = [[[5.0]], [-5.0 * TARGET_AGE], [5.0], [5.0]]
    z = 5.0 * np.tanh(5 * (a["age"].to_numpy() - TARGET_AGE)) + 5.0
    g1 = float(np.sum((a["death"].to_numpy() - sigmoid(z)) * z))
    assert round(g1 / 5.0 + sigmoid(np.array([5.0]))[0]) == 1  # the target's outcome
    model = {"model": "mlp", "hidden": 1, "preprocess": raw_spec(["age"]), "weights": w}
    params = {"model": model, "target": "death", "stage": "newton", "candidates": [[0, 1, 0]]}
    status, why = site_a(fed, "evaluate_binary", params)
    assert status == "refused" and "does not evaluate an MLP" in why
    status, why = site_a(wide_fed, "evaluate_binary", params)
    assert status == "refused" and "support rule" in why and "grad" in why


# --- class 1: bounded MLPs at two neighbouring centres, by difference -------------------
def _bounded_mlp(a: pd.DataFrame, centre: float, out: tuple[float, float]) -> list[np.ndarray]:
    """One tanh unit at ``centre``, as steep as the bounded region allows on site A."""
    ages = a["age"].to_numpy(float)
    k = 0.99 * SitePolicy().eta_bound / max(ages.max() - centre, centre - ages.min())
    return [np.array([[k]]), np.array([-k * centre]), np.array([out[0]]), np.array([out[1]])]


#: Output weight and bias ``h, h + 1`` of the bounded step model, its logit within bound.
STEP_HEIGHT = (0.99 * SitePolicy().eta_bound - 1.0) / 2.0


def bounded_update_request(a: pd.DataFrame) -> dict[str, Any]:
    """The ``local_train`` request of the bounded MLP update attack (first centre)."""
    return {
        "model": "mlp",
        "hidden": 1,
        "target": "death",
        "preprocess": raw_spec(["age"]),
        "weights": [w.tolist() for w in _bounded_mlp(a, TARGET_AGE - 1.0, (0.0, 0.0))],
        "epochs": 1,
        "lr": 1.0,
        "batch_size": 400,
    }


def bounded_step_request(a: pd.DataFrame) -> dict[str, Any]:
    """The ``evaluate_binary`` request of the bounded MLP step attack (first centre)."""
    w = _bounded_mlp(a, TARGET_AGE - 1.0, (STEP_HEIGHT, STEP_HEIGHT + 1.0))
    model = {
        "model": "mlp",
        "hidden": 1,
        "preprocess": raw_spec(["age"]),
        "weights": [x.tolist() for x in w],
    }
    return {"model": model, "target": "death", "candidates": [[29.0, 0.0, 29.0]]}


def test_bounded_mlp_update_difference_gives_one_outcome(fed, frames) -> None:
    a = frames["A"]
    X, y = a[["age"]].to_numpy(float), a["death"].to_numpy(float)
    # Unprotected: delta_2 n = sum_i (y_i - 1/2) h_i; two centres a year either side of
    # the target differ (almost) only at the target, every pre-activation within bound.
    diffs, hs = [], []
    for c in (TARGET_AGE - 1.0, TARGET_AGE + 1.0):
        w0 = _bounded_mlp(a, c, (0.0, 0.0))
        w1 = local_sgd("mlp", w0, X, y, epochs=1, lr=1.0, batch_size=len(y))
        diffs.append(float((w1[2] - w0[2])[0]) * len(y))
        hs.append(float(np.tanh(w0[0][0, 0] * TARGET_AGE + w0[1][0])))
    y_hat = 0.5 + (diffs[0] - diffs[1]) / (hs[0] - hs[1])
    assert abs(y_hat - 1.0) < 0.25  # the target died: recovered
    status, why = site_a(fed, "local_train", bounded_update_request(a))
    assert status == "refused" and "only with differential privacy" in why


def test_bounded_mlp_step_evaluation_difference_gives_one_outcome(fed, frames) -> None:
    a = frames["A"]
    y = a["death"].to_numpy(float)
    h = STEP_HEIGHT
    # Unprotected: p = sigmoid(h tanh(k (age - c)) + h + 1) is sigmoid(1) below c and 1
    # above it; the Brier sums at two centres differ only by the target's term.
    brier = []
    for c in (TARGET_AGE - 1.0, TARGET_AGE + 1.0):
        w = _bounded_mlp(a, c, (h, h + 1.0))
        z = np.tanh(a[["age"]].to_numpy(float) @ w[0] + w[1]) @ w[2] + w[3][0]
        assert np.abs(z).max() <= SitePolicy().eta_bound
        brier.append(float(np.sum((sigmoid(z) - y) ** 2)))
    s = float(sigmoid(np.array([1.0]))[0])
    y_hat = ((1 - s * s) - (brier[0] - brier[1])) / (2 * (1 - s))
    assert abs(y_hat - 1.0) < 0.25
    status, why = site_a(fed, "evaluate_binary", bounded_step_request(a))
    assert status == "refused" and "does not evaluate an MLP" in why


# --- class 6: zero cells of a one-patient subgroup ----------------------------------------
def test_subgroup_zero_cells_of_one_patient_are_withheld(tmp_path) -> None:
    d = frame(400, 1)
    d["ward"] = "a"
    d.loc[0, "ward"] = "d"
    fed = Federation.inprocess(
        [make_node(tmp_path, "A", d), make_node(tmp_path, "B", frame(300, 2))]
    )
    try:
        out = site_outcome(fed, "subgroup_metrics", "cohort", SUBGROUP_BY_WARD, min_sites=1)
        t = out.replies["A"]["tables"]
        j = t["n.ward"]["cols"].index("d")
        assert t["n.ward"]["counts"][0][j] is None
        # before: tp/fn/fp/tn = None, 0, 0, 0 -> the patient was a true positive
        assert [row[j] for row in t["conf.ward"]["counts"]] == [None] * 4
    finally:
        fed.close()


# --- the invariant, recomputed from the rows, under random crafted parameters -----------
def _entries_ok(contribs: np.ndarray, policy: SitePolicy) -> bool:
    """Support and (n, k) dominance of one entry from its per-row contributions."""
    a = np.abs(contribs)
    nz = int(np.count_nonzero(a))
    if nz == 0:
        return True
    top = np.sort(a)[::-1][: policy.dominance_n].sum()
    return nz >= policy.min_cell_count and top <= policy.dominance_k / 100 * a.sum() * (1 + 1e-9)


def test_profiles_match_rows_and_filter_is_fail_closed() -> None:
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    A[5:, 0] = 0.0  # 5 rows
    B[:, 1] = np.where(np.arange(50) < 2, 1.0, 1e-9)  # two rows dominate
    prof = cross_profile(A, B, 2)
    policy = SitePolicy()
    for j in range(3):
        for k in range(2):
            c = A[:, j] * B[:, k]
            assert prof.support[j, k] == np.count_nonzero(c)
            assert prof.abs_sum[j, k] == pytest.approx(np.abs(c).sum())
            assert prof.top[j, k] >= np.sort(np.abs(c))[::-1][:2].sum() - 1e-12
    release = ModelStatistics(arrays={"s": A.T @ B}, n_rows=50)
    with pytest.raises(Exception, match="no contribution profile"):
        check_invariant(release, policy)
    release.profiles["s"] = prof
    with pytest.raises(Exception, match="dominance rule"):
        check_invariant(release, policy)
    ok = profile_rows(np.ones((7, 1)), 2, (1,))
    check_invariant(
        ModelStatistics(arrays={"s": np.ones(1) * 7}, n_rows=7, profiles={"s": ok}), policy
    )
    tiny = ContributionProfile(np.array([0]), np.zeros(1), np.zeros(1), 2, np.array([3]))
    with pytest.raises(Exception, match="zero-cell rule"):
        check_invariant(
            ModelStatistics(arrays={"s": np.zeros(1)}, n_rows=7, profiles={"s": tiny}), policy
        )


def _glm_rows(df: pd.DataFrame, beta: np.ndarray) -> dict[str, np.ndarray]:
    X = np.column_stack([np.ones(len(df)), df["age"], df["weight"], df["sex"] == "male"])
    eta = X @ beta
    mu = sigmoid(eta)
    w, r = mu * (1 - mu), df["death"].to_numpy(float) - mu
    iu = np.triu_indices(4)
    return {
        "hessian": w[:, None] * X[:, iu[0]] * X[:, iu[1]],
        "score": X * r[:, None],
    }


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    coef=st.lists(st.floats(-3, 3), min_size=4, max_size=4),
    shift=st.floats(50, 110),
    sharp=st.floats(0.05, 80),
    which=st.sampled_from(["glm_step", "local_train", "evaluate_binary", "model_information"]),
)
def test_random_crafted_parameters_never_violate_the_invariant(
    fed, frames, coef, shift, sharp, which
) -> None:
    policy = SitePolicy()
    a = frames["A"]
    a = a.dropna(subset=["age", "weight"])
    if which == "glm_step":
        beta = np.array([-sharp * shift + coef[0], sharp, coef[1] * 0.01, coef[2]])
        sp = raw_spec(["age", "weight"])
        sp["columns"].append(
            {"name": "sex", "type": "categorical", "levels": ["female", "male"], "indicator": False}
        )
        status, rep = site_a(
            fed,
            "glm_step",
            {"family": "binomial", "target": "death", "preprocess": sp, "beta": beta.tolist()},
        )
        if status == "ok":
            rows = _glm_rows(a, beta)
            for name, C in rows.items():
                for j in range(C.shape[1]):
                    assert _entries_ok(C[:, j], policy), (name, j)
        return
    w0 = [[[sharp]], [-sharp * shift + coef[0]], [coef[1] * 3], [coef[2]]]
    model = {"model": "mlp", "hidden": 1, "preprocess": raw_spec(["age"]), "weights": w0}
    if which == "local_train":
        params = {**model, "target": "death", "epochs": 1, "lr": 0.5, "batch_size": 400}
    elif which == "evaluate_binary":
        params = {
            "model": model,
            "target": "death",
            "stage": "newton",
            "candidates": [[coef[3], 1.0, 0.0]],
        }
    else:
        logistic = {
            "model": "logistic",
            "preprocess": raw_spec(["age"]),
            "weights": [[sharp], [-sharp * shift]],
        }
        params = {"model": logistic, "target": "death"}
    status, rep = site_a(fed, which, params)
    if status != "ok":
        return
    x = a["age"].to_numpy(float)
    y = a["death"].to_numpy(float)
    if which == "local_train":
        h = np.tanh(sharp * x + w0[1][0])
        r = sigmoid(h * w0[2][0] + w0[3][0]) - y
        step = -0.5 / len(y)  # one batch: each row's share is step x its gradient
        d = step * (r * w0[2][0]) * (1.0 - h * h)
        for c in (x * d, d, step * h * r, step * r):
            assert _entries_ok(c, policy)
    elif which == "evaluate_binary":
        z = np.tanh(sharp * x + w0[1][0]) * w0[2][0] + w0[3][0]
        p = sigmoid(coef[3] + z)
        for c in (y - p, (y - p) * z, p * (1 - p), p * (1 - p) * z * z):
            assert _entries_ok(c, policy)
    else:
        mu = sigmoid(sharp * x - sharp * shift)
        w = mu * (1 - mu)
        for c in (w, w * x, w * x * x):
            assert _entries_ok(c, policy)
