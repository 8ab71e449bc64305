"""Secure aggregation with Flower's SecAgg+ on the in-process engine.

The same ServerApp/ClientApp code runs over a real deployment in
tests/privacy/test_secure_aggregation_flower.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import frame, make_node, request  # noqa: E402

from healthfed.compute.fedavg import FedAvgLogisticRegression  # noqa: E402
from healthfed.compute.preprocess import standardisation_spec  # noqa: E402
from healthfed.errors import PolicyDenied, PrivacyError, ThresholdViolation, TooFewSites  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.federation.grids.inprocess import InProcessGrid  # noqa: E402
from healthfed.federation.messages import SECURE_LABEL  # noqa: E402
from healthfed.federation.secure_server import secure_collect  # noqa: E402
from healthfed.federation.secure_vector import flatten_release  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy import secagg  # noqa: E402

SPEC = standardisation_spec(["age", "los"], centers=[55.0, 50.0], scales=[27.5, 25.0])


# --- the exact encoding ------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False), min_size=3, max_size=3
        ),
        min_size=1,
        max_size=12,
    )
)
def test_encoding_sums_exactly_as_secaggplus_adds(sites: list[list[float]]) -> None:
    """What SecAgg+ computes from the limbs (sum / n) decodes to the fixed-point sum."""
    limbs = [secagg.encode_vector(v) for v in sites]
    for li in limbs:
        assert li.min() >= 0 and li.max() < 2**secagg.LIMB_BITS
    n = len(sites)
    # SecAgg+ with healthfed's settings: quantize(l) = l + C, sum, dequantize, / n.
    C = secagg.CLIPPING_RANGE
    quantised = sum(li + C for li in limbs)
    mean = (quantised - n * C) / n
    got = secagg.decode_sum(mean, n)
    scale = 2.0**secagg.FRACTION_BITS
    want = np.sum([np.rint(np.asarray(v) * scale) for v in sites], axis=0) / scale
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, np.sum(sites, axis=0), atol=n * 2.0**-20, rtol=0)


def test_counts_are_exact_and_out_of_range_values_are_refused() -> None:
    got = secagg.decode_sum(
        np.mean([secagg.encode_vector([7, 0, 123456789]) for _ in range(3)], axis=0), 3
    )
    assert got.tolist() == [21.0, 0.0, 370370367.0]
    with pytest.raises(PrivacyError, match="2\\^33"):
        secagg.encode_vector([2.0**34])
    with pytest.raises(PrivacyError, match="not finite"):
        secagg.encode_vector([float("nan")])


# --- secure rounds on real nodes -----------------------------------------------------------
@pytest.fixture
def frames() -> dict[str, Any]:
    out = {f"h{i}": frame(120 + 10 * i, 10 + i, f"s{i}_") for i in range(3)}
    for i, d in enumerate(out.values()):
        rng = np.random.default_rng(40 + i)
        d["death"] = (rng.random(len(d)) < 1 / (1 + np.exp(-(d["age"] - 60) / 10))).astype(int)
    return out


def _nodes(tmp_path: Path, frames: dict[str, Any], policy: SitePolicy | None = None) -> list:
    return [make_node(tmp_path, s, d, policy) for s, d in frames.items()]


def test_secure_sum_equals_the_clear_sum_and_shows_no_site(tmp_path, frames) -> None:
    with Federation.inprocess(_nodes(tmp_path, frames)) as fed:
        clear = fed.run("sum", "cohort", {"variable": "income"})
        out = fed.round("sum", "cohort", {"variable": "income"}, secure=True)
        secure = fed.secure_sum("cohort", "income")
    assert list(out.replies) == [SECURE_LABEL]  # one pooled reply, no site's own numbers
    assert out.contributed == ["h0", "h1", "h2"]
    assert secure.n == clear.n == sum(len(d) for d in frames.values())
    assert secure.sum == pytest.approx(clear.sum, abs=3 * 2.0**-20)
    assert secure.sites == ["h0", "h1", "h2"]
    assert list(secure.per_site) == [SECURE_LABEL]


def test_what_leaves_a_node_is_masked(tmp_path, frames) -> None:
    """The collect-stage reply carries masked integers only; the plain vector is cleared."""
    nodes = _nodes(tmp_path, frames)
    grid = InProcessGrid(nodes)
    seen: list[Any] = []
    real = grid.send_and_receive

    def spy(messages, *, timeout=None):
        replies = list(real(messages, timeout=timeout))
        seen.append(replies)
        return replies

    grid.send_and_receive = spy  # type: ignore[method-assign]
    req = {"computation": "sum", "dataset": "cohort", "params": {"variable": "income"}}
    try:
        result = secure_collect(grid, {**req, "request_id": "x"}, timeout=60)
    finally:
        grid.close()
    assert result["secure"]["sites"] == ["h0", "h1", "h2"]
    stage2 = seen[2]  # setup, share keys, collect masked vectors, unmask
    own = {}
    for node in nodes:
        reply = node.handle({**req, "request_id": "y"})
        own[node.name] = secagg.encode_vector(flatten_release("sum", reply["result"])[1])
    for msg in stage2:
        assert all(len(rec) == 0 for rec in msg.content.array_records.values())
        masked = msg.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        assert masked
        for plain in own.values():
            assert masked[0] != plain.astype(float).tobytes()


def test_site_requiring_secure_aggregation(tmp_path, frames) -> None:
    policy = SitePolicy(secure_aggregation_required=True)
    with Federation.inprocess(_nodes(tmp_path, frames, policy)) as fed:
        with pytest.raises(ThresholdViolation, match="secure_aggregation_required"):
            fed.run("sum", "cohort", {"variable": "age"})
        assert fed.secure_sum("cohort", "age").n == sum(len(d) for d in frames.values())
    # A request cannot claim secure aggregation for itself.
    node = make_node(tmp_path, "solo", frames["h0"], policy)
    reply = node.handle(request("sum", {"variable": "age", "secagg": True}))
    assert reply["status"] == "refused" and "unknown parameter" in reply["reason"]


def test_small_site_does_not_contribute_and_hub_needs_min_sites(tmp_path, frames) -> None:
    small = {**frames, "h9": frame(4, 99, "t_")}  # under min_subset = 5
    with Federation.inprocess(_nodes(tmp_path, small)) as fed:
        res = fed.secure_sum("cohort", "age")
        assert res.sites == ["h0", "h1", "h2"]
        assert "h9" in res.refusals and "min_subset" in res.refusals["h9"]
    two = {"h0": frames["h0"], "h9": frame(4, 99, "t_")}
    with Federation.inprocess(_nodes(tmp_path, two)) as fed:
        with pytest.raises(ThresholdViolation) as err:
            fed.secure_sum("cohort", "age")
    assert "h9" in str(err.value)


def test_site_min_sites_stops_the_protocol(tmp_path, frames) -> None:
    """A site whose policy needs 4 sites takes no part in a 3-site secure round."""
    nodes = _nodes(tmp_path, frames)
    nodes[0].policy = SitePolicy(min_sites=4)
    with Federation.inprocess(nodes) as fed, pytest.raises(TooFewSites) as err:
        fed.round("sum", "cohort", {"variable": "age"}, secure=True)
    assert "min_sites = 4" in err.value.refusals["h0"]
    assert "h0" not in str(err.value).rsplit("— so", 1)[-1]  # not among the contributors


def test_non_summable_computation_is_refused(tmp_path, frames) -> None:
    with Federation.inprocess(_nodes(tmp_path, frames)) as fed:
        with pytest.raises(PolicyDenied, match="cannot be pooled by secure aggregation"):
            fed.round("table1", "cohort", {"variables": ["age"]}, secure=True)


def test_fedavg_with_secure_aggregation_matches_the_clear_run(tmp_path, frames) -> None:
    kw = {"rounds": 5, "lr": 0.5, "local_epochs": 1, "random_state": 3}
    with Federation.inprocess(_nodes(tmp_path, frames)) as fed:
        clear = FedAvgLogisticRegression(**kw).fit(fed, "cohort", "death", preprocess=SPEC)
        secure = FedAvgLogisticRegression(secure_aggregation=True, **kw).fit(
            fed, "cohort", "death", preprocess=SPEC
        )
    for a, b in zip(clear.weights_, secure.weights_, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert secure.history_[-1]["sites"] == ["h0", "h1", "h2"]
    # Sites that require it train only this way.
    policy = SitePolicy(secure_aggregation_required=True)
    with Federation.inprocess(_nodes(tmp_path, frames, policy)) as fed:
        with pytest.raises(ThresholdViolation, match="secure_aggregation_required"):
            FedAvgLogisticRegression(**kw).fit(fed, "cohort", "death", preprocess=SPEC)
        model = FedAvgLogisticRegression(secure_aggregation=True, **kw).fit(
            fed, "cohort", "death", features=["age", "los"]
        )
    assert model.history_[0]["step"] == "feature_moments"
    assert np.all(np.isfinite(model.coef_))


def test_dp_training_through_secure_aggregation(tmp_path, frames) -> None:
    policy = SitePolicy(max_param_ratio=1.0, secure_aggregation_required=True, dp_required=True)
    nodes = _nodes(tmp_path, frames, policy)
    with Federation.inprocess(nodes) as fed:
        model = FedAvgLogisticRegression(
            rounds=3, lr=0.5, dp={"epsilon": 1.5}, secure_aggregation=True
        ).fit(fed, "cohort", "death", preprocess=SPEC)
    assert np.all(np.isfinite(model.coef_))
    for node in nodes:
        spent = node.privacy_guard.budget()
        assert float(spent["epsilon_spent"].sum()) == pytest.approx(1.5, rel=1e-3)


def test_exact_glm_with_secure_aggregation_equals_the_clear_fit(tmp_path, frames) -> None:
    from healthfed.compute.glm import FederatedGLM

    with Federation.inprocess(_nodes(tmp_path, frames)) as fed:
        clear = FederatedGLM().fit(fed, "cohort", "death", ["age", "los", "sex"])
        secure = FederatedGLM(secure_aggregation=True).fit(
            fed, "cohort", "death", preprocess=clear.preprocessor_
        )
    np.testing.assert_allclose(secure.params_, clear.params_, atol=1e-6)
    np.testing.assert_allclose(secure.bse_, clear.bse_, atol=1e-6)
    assert secure.sites_ == ["h0", "h1", "h2"]
