"""The exact audit of combinations of cohorts (``healthfed.privacy.span_audit``).

Property: a set of ``1 .. min_subset - 1`` patients is reported exactly when its
indicator is a linear combination of the released cohorts' indicators (brute force
over every small set of a small universe), apart from a small cohort's own set.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import frame, make_node, request  # noqa: E402

from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy import span_audit  # noqa: E402
from healthfed.privacy.span_audit import disclosed_small_set  # noqa: E402

UNIVERSE = 10


def _bits(members: frozenset[int]) -> int:
    return sum(1 << i for i in members)


def _brute(cohorts: list[frozenset[int]], min_subset: int) -> bool:
    rows = np.array([[float(i in c) for i in range(UNIVERSE)] for c in cohorts])
    rank = np.linalg.matrix_rank(rows)
    for size in range(1, min_subset):
        for members in itertools.combinations(range(UNIVERSE), size):
            if frozenset(members) in cohorts:
                continue
            v = np.zeros(UNIVERSE)
            v[list(members)] = 1.0
            if np.linalg.matrix_rank(np.vstack([rows, v])) == rank:
                return True
    return False


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.frozensets(st.integers(0, UNIVERSE - 1)), min_size=1, max_size=9),
    st.integers(2, 4),
)
def test_reports_exactly_the_disclosed_small_sets(
    cohorts: list[frozenset[int]], min_subset: int
) -> None:
    found = disclosed_small_set([_bits(c) for c in cohorts], min_subset)
    assert (found is not None) == _brute(cohorts, min_subset)
    if found is not None:
        assert 1 <= found.patients < min_subset and found.cohorts >= 1


def test_four_interval_cohorts_and_many_harmless_ones() -> None:
    rng = np.random.default_rng(0)
    n = 5_000
    age = rng.uniform(20, 90, n)
    sex = rng.integers(0, 2, n)
    died = rng.integers(0, 2, n)
    age[(age > 70) & (age <= 70.5)] = 70.6
    age[3] = 70.3

    def cohort(keep: np.ndarray) -> int:
        return sum(1 << int(i) for i in np.flatnonzero(keep))

    band, below = (age >= 30) & (age <= 70.5), (age >= 30) & (age <= 70)
    four = [cohort(band & (sex == 0)), cohort(band & (sex == 1))]
    four += [cohort(below & (died == 1)), cohort(below & (died == 0))]
    assert disclosed_small_set(four[:3], 5) is None
    found = disclosed_small_set(four, 5)
    assert found is not None and found.patients == 1 and found.cohorts == 4
    # Ordinary analyses -- bands of 10 years, by sex -- isolate nobody.
    harmless = [
        cohort((age >= lo) & (age < lo + 10) & (sex == s))
        for lo in range(20, 90, 10)
        for s in (0, 1)
    ]
    assert disclosed_small_set(harmless + [cohort(age >= 0)], 5) is None


def test_too_many_candidates_is_unverifiable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small cohorts of tiny groups leave W large; past MAX_CANDIDATES the audit gives up.
    monkeypatch.setattr(span_audit, "MAX_CANDIDATES", 1)
    cohorts = [_bits(frozenset({0, 1, 2, 3, 4, 5, 6})), _bits(frozenset({0, 1, 2, 3, 4, 5}))]
    cohorts += [
        _bits(frozenset({7, 8, 9, 10, 11, 12, 13})),
        _bits(frozenset({7, 8, 9, 10, 11, 12})),
    ]
    found = disclosed_small_set(cohorts, 5)
    assert found is not None and found.unverifiable


def test_a_site_caps_its_distinct_cohorts(tmp_path: Path) -> None:
    node = make_node(tmp_path, "h1", frame(400, 3), SitePolicy(max_cohorts_per_population=3))
    wheres = [{"age": [lo, 110]} for lo in (20, 40, 60, 80)]
    replies = [node.handle(request("sum", {"variable": "los", "where": w})) for w in wheres]
    assert [r["status"] for r in replies] == ["ok", "ok", "ok", "refused"], replies
    assert "max_cohorts_per_population = 3" in replies[3]["reason"]
    again = node.handle(request("sum", {"variable": "income", "where": wheres[0]}))
    assert again["status"] == "ok", again  # a released cohort again: answered
