"""The privacy-budget ledger: composition rule, caps, persistence, audited resets."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthfed.errors import BudgetExceeded, PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.dp import DPBudget
from healthfed.privacy.guard import PrivacyGuard
from healthfed.privacy.ledger import (
    Charge,
    PrivacyLedger,
    compose,
    rho_for_epsilon,
    zcdp_epsilon,
)

POLICY = SitePolicy()


def test_composition_rule_basic_for_pure_and_zcdp_for_gaussian() -> None:
    # Five pure ε=1 releases: basic composition (5.0) beats zCDP's conversion.
    s = compose([Charge.pure(1.0)] * 5, 1e-6)
    assert s.accountant == "basic" and s.epsilon == pytest.approx(5.0) and s.delta == 0
    # Many Gaussian releases: ρ adds up, one conversion at δ.
    rho = rho_for_epsilon(0.25, 1e-6)
    s = compose([Charge.zcdp(rho, 1e-6)] * 20, 1e-6)
    assert s.accountant == "zcdp"
    assert s.rho == pytest.approx(20 * rho)
    assert s.epsilon == pytest.approx(zcdp_epsilon(20 * rho, 1e-6))
    assert s.epsilon < 20 * 0.25  # far tighter than basic composition
    assert zcdp_epsilon(rho_for_epsilon(0.7, 1e-6), 1e-6) == pytest.approx(0.7)


def test_per_request_and_per_permit_caps(tmp_path: Path) -> None:
    led = PrivacyLedger(tmp_path / "l.sqlite")
    with pytest.raises(BudgetExceeded, match="dp_epsilon_per_request"):
        led.charge("d", "P1", Charge.pure(1.5), POLICY, "dp_count")
    for _ in range(5):
        led.charge("d", "P1", Charge.pure(1.0), POLICY, "dp_count")
    with pytest.raises(BudgetExceeded, match=r"spent ε = 5 of 5 \(dp_epsilon_per_permit\)"):
        led.charge("d", "P1", Charge.pure(0.1), POLICY, "dp_count")
    # Another permit, and another population, have their own per-permit budgets (the
    # population's lifetime cap, default 10, still counts every permit).
    led.charge("d", "P2", Charge.pure(1.0), POLICY, "dp_count")
    led.charge("e", "P1", Charge.pure(1.0), POLICY, "dp_count")
    # A population-wide lifetime cap over all permits, as the site sets it.
    strict = SitePolicy(dp_epsilon_per_dataset=6.5)
    with pytest.raises(BudgetExceeded, match="dp_epsilon_per_dataset"):
        led.charge("d", "P3", Charge.pure(1.0), strict, "dp_count")


def test_ledger_survives_restart_and_summary(tmp_path: Path) -> None:
    led = PrivacyLedger(tmp_path / "l.sqlite")
    led.charge("covid", "P1", Charge.pure(0.5), POLICY, "dp_sum")
    cid = led.reserve("covid", "P1", Charge.pure(0.5), POLICY, "dp_sum")
    led.cancel(cid)  # a request that released nothing costs nothing
    led.close()
    again = PrivacyLedger(tmp_path / "l.sqlite")
    assert again.spent("covid", "P1").epsilon == pytest.approx(0.5)
    frame = again.summary(POLICY)
    # Keyed by patient population (a dataset name is a population's name until merged).
    assert list(frame.columns[:4]) == ["population", "permit", "releases", "epsilon_spent"]
    row = frame.iloc[0]
    assert row["epsilon_remaining"] == pytest.approx(4.5) and row["releases"] == 1


def test_reset_needs_an_audit_record_first(tmp_path: Path) -> None:
    led = PrivacyLedger(tmp_path / "l.sqlite")
    led.charge("d", "P1", Charge.pure(1.0), POLICY, "dp_count")
    with pytest.raises(PrivacyError, match="audit record"):
        led.reset("d", "P1", "steward", "new budget year", audit=None)

    def broken(_: dict) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        led.reset("d", "P1", "steward", "new budget year", audit=broken)
    assert led.spent("d", "P1").epsilon == pytest.approx(1.0)  # nothing reset
    records: list[dict] = []
    assert led.reset("d", "P1", "steward", "new budget year", audit=records.append) == 1
    assert led.spent("d", "P1").epsilon == 0.0
    assert records[0]["action"] == "privacy_budget_reset"
    assert records[0]["epsilon_spent_before"] == 1.0
    assert len(led.history()) == 1  # the old charge is kept, only a new epoch started
    # The guard's reset goes through the node's audit callback.
    guard = PrivacyGuard(tmp_path / "state", POLICY, audit=None)
    with pytest.raises(PrivacyError):
        guard.reset_budget("d", "P1", "steward", "x")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["laplace", "gaussian"]), st.floats(0.01, 1.5)),
        min_size=1,
        max_size=30,
    )
)
def test_ledger_never_exceeds_the_budget(requests: list[tuple[str, float]]) -> None:
    led = PrivacyLedger(None)
    for mech, eps in requests:
        before = led.spent("d", "P", POLICY.dp_delta)
        charge = DPBudget(eps, mech, POLICY.dp_delta).charge
        try:
            led.charge("d", "P", charge, POLICY, "dp_count")
        except BudgetExceeded:
            assert led.spent("d", "P", POLICY.dp_delta) == before  # refused: nothing recorded
        spent = led.spent("d", "P", POLICY.dp_delta)
        assert spent.epsilon <= POLICY.dp_epsilon_per_permit + 1e-9
        assert spent.delta <= POLICY.dp_delta * (1 + 1e-9)
        assert math.isfinite(spent.epsilon)


def test_concurrent_reservations_cannot_overspend(tmp_path: Path) -> None:
    led = PrivacyLedger(tmp_path / "l.sqlite")
    ok: list[str] = []

    def worker() -> None:
        try:
            ok.append(led.reserve("d", "P", Charge.pure(1.0), POLICY, "dp_count"))
        except BudgetExceeded:
            pass

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 5
    assert led.spent("d", "P").epsilon == pytest.approx(5.0)
