"""The fast paths of the privacy protections give exactly what the straightforward ones give.

Issue 11's protections were made cheap (issue 13 costs): the population store keeps
patient digests in batches with a numpy index instead of one SQLite row and one dict
entry per patient; Table 1 computes every record key once per request instead of once
per query part; the GLM's contribution profiles skip work. Each test here runs the
fast code against a straightforward reference written out in the test (per-patient
dicts, per-row Python sums, row-by-row profiles) on random data, and asserts equality
of indices, populations, cell keys, profiles and verdicts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import frame  # noqa: E402

from healthfed.privacy.digest_index import (  # noqa: E402
    DigestIndex,
    distinct_sorted,
    first_occurrences,
)
from healthfed.privacy.population import PopulationRegistry  # noqa: E402


# --- the population store -------------------------------------------------------------------
class ReferenceRegistry:
    """The straightforward store: a dict from patient id to (index, population)."""

    def __init__(self) -> None:
        self.members: dict[str, tuple[int, str]] = {}
        self.datasets: dict[str, str] = {}
        self.merged: dict[str, str] = {}
        self.created: list[str] = []

    def canonical(self, pop: str) -> str:
        while pop in self.merged:
            pop = self.merged[pop]
        return pop

    def resolve(self, dataset: str, ids: list[str]) -> tuple[str, list[int]]:
        found = {self.members[i][1] for i in set(ids) if i in self.members}
        if dataset in self.datasets:
            found.add(self.datasets[dataset])
        found = {self.canonical(p) for p in found}
        if not found:
            pop, n = dataset, 1
            while pop in self.created:
                n += 1
                pop = f"{dataset}#{n}"
            self.created.append(pop)
        else:
            order = sorted(found, key=self.created.index)
            pop = order[0]
            for old in order[1:]:
                self.merged[old] = pop
                self.members = {
                    k: (i, pop if p == old else p) for k, (i, p) in self.members.items()
                }
                self.datasets = {k: pop if p == old else p for k, p in self.datasets.items()}
        self.datasets[dataset] = pop
        nxt = len(self.members)
        for i in dict.fromkeys(ids):
            if i not in self.members:
                self.members[i] = (nxt, pop)
                nxt += 1
        return pop, [self.members[i][0] for i in ids]


requests = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),  # dataset names
        st.lists(st.integers(0, 60).map(lambda i: f"id{i}"), max_size=40),  # rows (repeats ok)
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_batched_store_assigns_the_same_indices_and_populations(seq: Any) -> None:
    fast, ref = PopulationRegistry(None), ReferenceRegistry()
    for dataset, ids in seq:
        pop_f, idx_f = fast.resolve(dataset, fast.digest_ids(ids))
        pop_r, idx_r = ref.resolve(dataset, ids)
        assert (pop_f, list(idx_f)) == (pop_r, idx_r)
    for dataset in {d for d, _ in seq}:
        assert fast.population_of(dataset) == ref.canonical(ref.datasets[dataset])
    fast.close()


def test_store_survives_a_restart_and_reads_the_older_one_row_per_patient_form(
    tmp_path: Path,
) -> None:
    path = tmp_path / "populations.sqlite"
    first = PopulationRegistry(path)
    _, idx = first.resolve("a", first.digest_ids(["x", "y", "z"]))
    first.close()
    again = PopulationRegistry(path)
    pop, idx2 = again.resolve("b", again.digest_ids(["z", "w", "x"]))
    assert pop == "a" and list(idx2) == [2, 3, 0] and list(idx) == [0, 1, 2]
    again.close()

    # An older store: one row per patient, the full sha256 hex, indices 0..n-1.
    import hashlib
    import sqlite3

    old = tmp_path / "old.sqlite"
    key = PopulationRegistry(old)._key
    con = sqlite3.connect(old)
    con.execute("INSERT INTO populations VALUES ('legacy', 0, NULL)")
    rows = [
        (hashlib.sha256(f"{key}:{i}".encode()).hexdigest(), n, "legacy")
        for n, i in enumerate(["p", "q", "r"])
    ]
    con.executemany("INSERT INTO patients VALUES (?, ?, ?)", rows)
    con.commit()
    con.close()
    converted = PopulationRegistry(old)
    pop, idx3 = converted.resolve("new name", converted.digest_ids(["r", "s", "p"]))
    assert pop == "legacy" and list(idx3) == [2, 3, 0]
    converted.close()


def test_scan_digests_equal_the_python_ones() -> None:
    reg = PopulationRegistry(None)
    con = duckdb.connect()
    ids = [f"site-{i:05d}" for i in range(500)] + ["ü-1", "a'b"]
    con.register("ids", pd.DataFrame({"pid": ids, "age": np.arange(len(ids))}))
    con.execute("CREATE VIEW data AS SELECT * FROM ids")
    digests, inside = reg.scan(con, "pid", "age < 100")
    assert np.array_equal(digests, reg.digest_ids(ids))
    assert inside.tolist() == [i < 100 for i in range(len(ids))]
    con.close()
    reg.close()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=30),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=30),
)
def test_digest_index_is_exact_when_first_words_collide(stored: Any, asked: Any) -> None:
    # First words from a tiny range: most digests share one, the slow path decides.
    new, _ = first_occurrences(np.asarray(stored, dtype=np.uint64).reshape(-1, 2))
    index = DigestIndex()
    index.append(new)
    position = {tuple(int(x) for x in d): i for i, d in enumerate(new)}
    assert len(position) == len(new)  # distinct, in order of first appearance
    assert list(position) == list(dict.fromkeys(tuple(s) for s in stored))
    got = index.lookup(np.asarray(asked, dtype=np.uint64).reshape(-1, 2))
    assert got.tolist() == [position.get(tuple(a), -1) for a in asked]


# --- Table 1's cell keys: one record-key pass ---------------------------------------------------
def _reference_keys(df: pd.DataFrame, keys: Any, by: str, var: str) -> dict[tuple[str, str], int]:
    rk = df["pid"].map(keys.key)
    return {
        (str(g), str(v)): int(s) % 2**32
        for (g, v), s in rk.groupby([df[by].astype(str), df[var].astype(str)]).sum().items()
    }


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(20, 300), st.integers(0, 10_000))
def test_summary_cell_keys_equal_per_row_python_sums(n: int, seed: int) -> None:
    from _privacy_helpers import COLUMNS

    from healthfed.compute.stats_sql import run_summary
    from healthfed.data.descriptor import descriptor_from_dict
    from healthfed.policy import SitePolicy
    from healthfed.privacy.cellkey import RecordKeys, using_record_keys

    df = frame(n, seed)
    desc = descriptor_from_dict(
        {"dataset": {"name": "c", "file": "c.parquet", "id_column": "pid"}, "columns": COLUMNS},
        base_dir=Path("."),
    )
    con = duckdb.connect()
    con.register("f", df)
    con.execute("CREATE VIEW data AS SELECT * FROM f")
    keys = RecordKeys("ab" * 32)
    params = {"variables": ["age", "ward", "sex"], "by": "death", "quantiles": [0.5]}
    with using_record_keys(keys):
        release = run_summary(con, desc, params, SitePolicy(), "table1")
    con.close()
    compared = 0
    for var in ("ward", "sex"):
        table = release.tables[f"var:{var}"]
        want = _reference_keys(df, keys, "death", var)
        for i, level in enumerate(table.rows):
            for j, group in enumerate(table.cols):
                expect = want.get((str(group), str(level)))
                if expect is not None:
                    assert int(table.keys[i, j]) == expect
                    compared += 1
    assert compared == len(_reference_keys(df, keys, "death", "ward")) + len(
        _reference_keys(df, keys, "death", "sex")
    )
    rk = df["pid"].map(keys.key)
    n_table = release.tables["N"]
    for j, group in enumerate(n_table.cols):
        if group in ("0", "1"):
            assert (
                int(n_table.keys[0, j]) == int(rk[df["death"].astype(str) == group].sum()) % 2**32
            )


# --- the GLM's contribution profiles: weight-free parts kept per design ---------------------------
def _reference_profile(C: np.ndarray, n_top: int) -> Any:
    """Every entry's profile from its materialised per-row contributions (double precision)."""
    from healthfed.privacy.contributions import profile_rows

    return profile_rows(C, n_top)


def _design(rng: np.random.Generator, n: int) -> np.ndarray:
    cont = rng.normal(size=(n, 2))
    cont[rng.random(n) < 0.1, 1] = 0.0  # exact zeros in a continuous column
    rare = (rng.random(n) < 0.02).astype(float)  # a dummy of a few patients
    common = (rng.random(n) < 0.4).astype(float)
    X = np.column_stack([np.ones(n), cont, rare, common])
    X.flags.writeable = False
    return X


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(30, 400),
    st.integers(0, 10_000),
    st.sampled_from(["logistic", "zeros", "gaussian"]),
    st.floats(-6, 6),
)
def test_design_profiles_equal_row_by_row_profiles_and_give_the_same_verdicts(
    n: int, seed: int, weights: str, shift: float
) -> None:
    from healthfed.compute.glm.node import glm_profiles
    from healthfed.errors import ThresholdViolation
    from healthfed.policy import SitePolicy
    from healthfed.privacy.contributions import with_complements
    from healthfed.privacy.model_release import ModelStatistics, check_invariant

    rng = np.random.default_rng(seed)
    X = _design(rng, n)
    eta = X @ rng.normal(size=X.shape[1]) + shift
    p = 1 / (1 + np.exp(-eta))
    w = {"logistic": p * (1 - p), "gaussian": np.ones(n)}.get(weights, p * (1 - p))
    if weights == "zeros":
        w = np.where(rng.random(n) < 0.3, 0.0, w)
    r = (rng.random(n) < p) - p
    r[rng.random(n) < 0.05] = 0.0
    n_top = 2
    fast = glm_profiles(X, w, {"score": r}, n_top)
    again = glm_profiles(X, w, {"score": r}, n_top)  # the kept parts, second round
    Z = with_complements(X)
    q, P = Z.shape[1], X.shape[1]
    iu = np.triu_indices(q)
    gram = _reference_profile(w[:, None] * Z[:, iu[0]] * Z[:, iu[1]], n_top)
    own = (iu[0] < P) & (iu[1] < P)
    cross = _reference_profile(Z * r[:, None], n_top)
    want = {
        "hessian": (gram, own),
        "hessian~complements": (gram, ~own),
        "score": (cross, np.arange(q) < P),
        "score~complements": (cross, np.arange(q) >= P),
    }
    for name, (ref, mask) in want.items():
        for got in (fast[name], again[name]):
            assert np.array_equal(got.support, ref.support[mask]), name
            np.testing.assert_allclose(got.abs_sum, ref.abs_sum[mask], rtol=2e-6, atol=1e-12)
            # top: exact where the bound was inconclusive, else the bound (>= exact)
            assert np.all(got.top >= ref.top[mask] * (1 - 2e-6) - 1e-12), name
    # Verdicts, for strict and lenient policies: the fast profiles against the reference.
    # The policy's k lets decided entries skip the exact top-n: the verdict must not move.
    reference = {k: ContributionProfileOf(ref, m) for k, (ref, m) in want.items()}
    lenient = SitePolicy(min_cell_count=3, dominance_k=60.0)
    for policy in (SitePolicy(), lenient, SitePolicy(min_cell_count=1, dominance_k=100.0)):
        skipping = glm_profiles(X, w, {"score": r}, n_top, None, policy.dominance_k)
        verdicts = []
        for profs in (fast, skipping, reference):
            release = ModelStatistics(
                arrays={"hessian": np.zeros(int(own.sum())), "score": np.zeros(P)},
                n_rows=n,
                n_params=P,
                profiles=profs,
            )
            try:
                check_invariant(release, policy)
                verdicts.append("ok")
            except ThresholdViolation as exc:
                verdicts.append(str(exc))
        assert verdicts[0] == verdicts[1] == verdicts[2], verdicts


def ContributionProfileOf(ref: Any, mask: np.ndarray) -> Any:  # noqa: N802 - reads as a type
    """The reference profile's entries under ``mask``."""
    from healthfed.privacy.contributions import ContributionProfile

    return ContributionProfile(ref.support[mask], ref.abs_sum[mask], ref.top[mask], ref.n_top)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(20, 3000),
    st.integers(0, 10_000),
    st.floats(1.0, 1e4),
    st.sampled_from([2, 3, 5]),
    st.sampled_from([0.5, 0.6, 0.85, 1.0]),
)
def test_the_largest_term_bound_never_undercuts_the_exact_top_n(
    n: int, seed: int, outlier: float, n_top: int, refine: float
) -> None:
    """A crafted outlier row (a huge value, a huge weight) is still caught.

    The round's bound is ``n`` times the largest term, then Cauchy-Schwarz, then exact,
    each only where the step before left the verdict open: every ``top`` is at least the
    exact top-``n``, and an entry the bounds cannot settle gets the exact value.
    """
    from healthfed.privacy.contributions import DesignProfiles, with_complements

    rng = np.random.default_rng(seed)
    X = np.array(_design(rng, n))
    X[rng.integers(n), 1] = outlier  # one patient far from everyone else
    X.flags.writeable = False
    w = rng.uniform(0.0, 0.25, size=n)
    w[rng.integers(n)] = outlier  # a model that weighs one row heavily
    v = rng.normal(size=n)
    v[rng.integers(n)] = -outlier
    prof = DesignProfiles(X)
    Z = with_complements(X, prof.ind)
    iu = np.triu_indices(Z.shape[1])
    for got, C in (
        (prof.gram(w, n_top, refine), w[:, None] * Z[:, iu[0]] * Z[:, iu[1]]),
        (prof.cross(v, n_top, refine), Z * v[:, None]),
    ):
        ref = _reference_profile(C, n_top)
        assert np.array_equal(got.support, ref.support)
        # |.| sums in single precision: a few 1e-6 relative with a 1e4 outlier squared
        np.testing.assert_allclose(got.abs_sum, ref.abs_sum, rtol=1e-5, atol=1e-9)
        assert np.all(got.top >= ref.top * (1 - 1e-5) - 1e-9)
        with np.errstate(invalid="ignore", divide="ignore"):
            open_ = np.where(got.abs_sum > 0, got.top / got.abs_sum, 0.0) > refine
        np.testing.assert_allclose(got.top[open_], ref.top[open_], rtol=1e-9, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=12, unique=True),
        max_size=5,
    )
)
def test_digest_index_appends_merge_into_the_order_a_fresh_sort_gives(batches: Any) -> None:
    # Batches appended one by one (merged) keep the order and answers of sorting them all.
    index, seen = DigestIndex(), set()
    for k, batch in enumerate(batches):
        new = [b for b in batch if b not in seen]
        seen.update(new)
        digests = np.asarray(new, dtype=np.uint64).reshape(-1, 2)
        if k % 2:  # as the registry does: with the order distinct_sorted found
            distinct, _, order = distinct_sorted(digests)
            index.append(distinct, order)
        else:
            index.append(digests)
    stored = index.digests()
    assert index._order.tolist() == np.argsort(stored[:, 0], kind="stable").tolist()
    assert index._first.tolist() == stored[index._order, 0].tolist()
    asked = np.asarray([(a, b) for a in range(6) for b in range(4)], dtype=np.uint64)
    position = {tuple(int(x) for x in d): i for i, d in enumerate(stored)}
    assert index.lookup(asked).tolist() == [position.get(tuple(a), -1) for a in asked.tolist()]


def test_digest_index_sorts_a_batch_itself_when_the_order_given_is_not_sorted() -> None:
    digests = np.asarray([(5, 0), (1, 1), (3, 2), (1, 3)], dtype=np.uint64)
    wrong, right = DigestIndex(), DigestIndex()
    wrong.append(digests, order=np.arange(4))  # not the order by first word
    right.append(digests)
    assert wrong._order.tolist() == right._order.tolist() == [1, 3, 2, 0]
    assert wrong.lookup(digests).tolist() == [0, 1, 2, 3]
    # Sorted by first word but not a permutation (row 1 twice), or not stable: sorted here too.
    for bad in ([1, 1, 2, 0], [3, 1, 2, 0], [1, 3, 2]):
        index = DigestIndex()
        index.append(digests, order=np.asarray(bad))
        assert index._order.tolist() == [1, 3, 2, 0]
        assert index.lookup(digests).tolist() == [0, 1, 2, 3]
