"""Denial of service (leak class 7): limits per request at the node, in-process.

The attack: one request whose parameters cost the node far more than any analysis
needs. ``feature_moments`` over 5,000 copies of one column made DuckDB plan a query of
10,000 aggregates over the dataset's typed view: at one site of 300 patients (a Parquet
file, as a hospital holds it) it took 116 s and 19 GB of memory; under a 4 GB
address-space limit DuckDB gave up with an out-of-memory error, and over Flower the node
processes died. The node now measures every request against the site's limits
(:mod:`healthfed.node.limits`) before the computation sees it, refuses one over a limit
naming the limit and its policy field, stops a request at its wall-time limit, and keeps
serving. The crash requests themselves run in a subprocess with a memory cap, so a
regression fails this test instead of taking the test process (or the machine) down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import SUBGROUP_BY_WARD, frame, make_node, request  # noqa: E402

from healthfed.compute import registry  # noqa: E402
from healthfed.compute.deadline import Deadline, check_deadline, deadline_scope  # noqa: E402
from healthfed.compute.fedavg import local_sgd  # noqa: E402
from healthfed.compute.preprocess import standardisation_spec  # noqa: E402
from healthfed.compute.registry import Computation  # noqa: E402
from healthfed.errors import PolicyDenied, PolicyError  # noqa: E402
from healthfed.node.limits import (  # noqa: E402
    LIMIT_FIELDS,
    check_request_shape,
    check_workload,
    request_deadline,
)
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy.model_release import ModelStatistics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = SitePolicy()
N_COLUMNS = 5_000  # the crash request's column list


def refused(reply: dict[str, Any], field: str) -> str:
    """The reason of a refusal that names the policy field ``field``."""
    assert reply["status"] == "refused", reply
    assert reply["kind"] == "PolicyDenied", reply
    assert f"site policy field {field!r}" in reply["reason"] or f"{field!r}" in reply["reason"]
    return str(reply["reason"])


def ordinary_request_works(node: Any) -> None:
    """The node still answers an ordinary request after a refused one."""
    reply = node.handle(request("feature_moments", {"columns": ["age", "los"]}))
    assert reply["status"] == "ok", reply


@pytest.fixture()
def node(tmp_path: Path) -> Any:
    return make_node(tmp_path, "h1", frame(400, 1))


def _spec(n: int) -> dict[str, Any]:
    """A preprocessing spec of ``n`` entries, all ``age`` (built by hand: the researcher's
    helper refuses repeats, a crafted request need not)."""
    spec = standardisation_spec(["age"], centers=[60.0], scales=[15.0])
    return {**spec, "columns": spec["columns"] * n}


# --- the attack, on a file-backed node in a subprocess (memory-capped) -------------------------
_CRASH_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a regression fails, no more
    from pathlib import Path
    from healthfed.compute.preprocess import standardisation_spec
    from healthfed.data.synth import write_covid_cohort
    from healthfed.node.runtime import Node, write_node_file

    root = Path(sys.argv[1]); n = int(sys.argv[2])
    written = write_covid_cohort(root / "data", sites=1, rows=300, seed=5)
    desc = [p for p in written if p.suffix == ".toml"][0]
    node = Node.from_toml(write_node_file(root / "node.toml", desc.stem, [desc]))
    ds = next(iter(node.datasets))
    spec = standardisation_spec(["age"], centers=[60.0], scales=[15.0])
    spec = {**spec, "columns": spec["columns"] * n}
    crash = [
        ("feature_moments", {"columns": ["age"] * n}),
        ("feature_moments", {"columns": ["age"] * n, "target": "death_28d"}),
        ("describe", {"variables": ["age"] * n}),
        ("table1", {"variables": ["age"] * n}),
        ("glm_step", {"family": "binomial", "target": "death_28d", "preprocess": spec,
                      "beta": [0.0] * (n + 1)}),
        ("local_train", {"model": "logistic", "target": "death_28d", "preprocess": spec,
                         "weights": [[0.0] * n, [0.0]]}),
        ("feature_moments", {"columns": ["age"]}),  # an ordinary request: still answered
    ]
    out = [node.handle({"computation": c, "dataset": ds, "params": p}) for c, p in crash]
    print(json.dumps(out))
    """
)


def test_crash_requests_are_refused_and_the_node_survives(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, str(tmp_path), str(N_COLUMNS)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # the node process survived
    replies = json.loads(proc.stdout.strip().splitlines()[-1])
    *crash, ordinary = replies
    for reply in crash:
        reason = refused(reply, "max_request_list")
        assert f"lists {N_COLUMNS} items" in reason, reason
        assert "max_request_list = 500" in reason, reason
    assert ordinary["status"] == "ok", ordinary
    assert ordinary["result"]["n_rows"] > 0


# --- generic limits: the same for every computation --------------------------------------------
LONG = ["age"] * (DEFAULT.max_request_list + 1)
LONG_LISTS = [
    ("feature_moments", {"columns": LONG}, "columns"),
    ("preprocess_moments", {"columns": LONG}, "columns"),
    ("describe", {"variables": LONG}, "variables"),
    ("table1", {"variables": LONG}, "variables"),
    ("glm_step", {"target": "death", "preprocess": _spec(len(LONG)), "beta": [0.0]}, "columns"),
    ("subgroup_metrics", {**SUBGROUP_BY_WARD, "attributes": LONG}, "attributes"),
    ("crosstab", {"row": "sex", "col": "ward", "where": {"zip": LONG}}, "where.zip"),
    ("km_counts", {"duration": "los", "event": "death", "subset": LONG}, "subset"),
]


@pytest.mark.parametrize(("computation", "params", "where"), LONG_LISTS)
def test_a_long_list_is_refused_by_every_computation(
    node: Any, computation: str, params: dict[str, Any], where: str
) -> None:
    reason = refused(node.handle(request(computation, params)), "max_request_list")
    assert where in reason and f"lists {len(LONG)} items" in reason, reason
    ordinary_request_works(node)


def test_the_list_limit_is_the_sites(tmp_path: Path) -> None:
    strict = make_node(tmp_path, "h1", frame(400, 1), SitePolicy(max_request_list=1))
    reason = refused(
        strict.handle(request("describe", {"variables": ["age", "los"]})), "max_request_list"
    )
    assert "max_request_list = 1" in reason
    assert strict.handle(request("describe", {"variables": ["age"]}))["status"] == "ok"


def test_too_many_numbers_are_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path, "h1", frame(400, 1), SitePolicy(max_request_numbers=1_000))
    weights = [[0.0] * 2_000, [0.0]]  # a model's weights: counted as numbers, not as a list
    params = {"model": "logistic", "target": "death", "preprocess": _spec(1), "weights": weights}
    reason = refused(node.handle(request("local_train", params)), "max_request_numbers")
    assert "weights" in reason and "max_request_numbers = 1000" in reason
    # Long arrays of numbers are not "lists" (the default list limit is 500).
    big = make_node(tmp_path, "h2", frame(400, 1))
    reply = big.handle(request("local_train", params))
    assert "max_request" not in str(reply.get("reason")), reply  # validate's shape error
    ordinary_request_works(node)


def test_deep_nesting_is_refused_without_recursion(node: Any) -> None:
    deep: Any = "age"
    for _ in range(100_000):  # far deeper than Python's recursion limit
        deep = {"x": deep}
    reason = refused(node.handle(request("describe", {"variables": deep})), "max_request_depth")
    assert "nested 17 levels deep" in reason and "max_request_depth = 16" in reason
    lists: Any = 1.0
    for _ in range(100_000):
        lists = [lists]
    refused(node.handle(request("glm_step", {"beta": lists})), "max_request_depth")
    ordinary_request_works(node)


def test_a_huge_request_is_refused_by_its_size(node: Any) -> None:
    name = "a" * (DEFAULT.max_request_bytes + 10)
    reason = refused(node.handle(request("describe", {"variables": [name]})), "max_request_bytes")
    assert "more than 32000000 bytes" in reason
    ordinary_request_works(node)


# --- computation-specific limits --------------------------------------------------------------
def test_hidden_units_are_limited(tmp_path: Path) -> None:
    node = make_node(tmp_path, "h1", frame(400, 1), SitePolicy(max_hidden_units=8))
    mlp = {"model": "mlp", "hidden": 16, "target": "death", "preprocess": _spec(1)}
    reason = refused(node.handle(request("local_train", mlp)), "max_hidden_units")
    assert "'hidden' asks for 16 hidden units" in reason
    evaluate = {"model": {**mlp, "weights": []}, "target": "death"}
    reason = refused(node.handle(request("evaluate_binary", evaluate)), "max_hidden_units")
    assert "'model.hidden'" in reason
    ordinary_request_works(node)


def test_evaluation_candidates_are_limited(tmp_path: Path) -> None:
    node = make_node(tmp_path, "h1", frame(400, 1), SitePolicy(max_candidates=3))
    params = {**SUBGROUP_BY_WARD, "candidates": [[0.0, 1.0, 0.0]] * 4}
    params.pop("attributes")
    reason = refused(node.handle(request("evaluate_binary", params)), "max_candidates")
    assert "lists 4 candidates" in reason
    params["candidates"] = params["candidates"][:3]  # at the limit: admitted
    check_workload("evaluate_binary", params, node.datasets["cohort"], node.policy)


def test_rows_times_epochs_of_local_training_are_limited(tmp_path: Path) -> None:
    node = make_node(tmp_path, "h1", frame(400, 1), SitePolicy(max_train_row_epochs=1_000))
    params = {
        "model": "logistic",
        "target": "death",
        "preprocess": _spec(1),
        "weights": [[0.0], [0.0]],
        "epochs": 3,
    }
    reason = refused(node.handle(request("local_train", params)), "max_train_row_epochs")
    assert "3 epochs over 400 rows are 1200 row-epochs" in reason
    params["epochs"] = 2
    assert node.handle(request("local_train", params))["status"] == "ok"


# --- wall time ----------------------------------------------------------------------------------
def test_a_request_over_its_wall_time_is_refused(tmp_path: Path) -> None:
    # A deadline that has passed before the computation returns: refused whatever ran.
    node = make_node(tmp_path, "h1", frame(400, 1), SitePolicy(max_request_seconds=1e-9))
    params = {"model": "logistic", "target": "death", "preprocess": _spec(1)}
    params.update(weights=[[0.0], [0.0]], epochs=50, batch_size=1)
    for computation, p in [("local_train", params), ("describe", {"variables": ["age"]})]:
        reason = refused(node.handle(request(computation, p)), "max_request_seconds")
        assert "stopped it after max_request_seconds = 1e-09 s" in reason
    node.policy = SitePolicy()
    ordinary_request_works(node)


def test_local_training_checks_the_deadline_between_batches() -> None:
    X, y = np.zeros((50, 1)), np.zeros(50)
    w = [np.zeros(1), np.zeros(1)]
    assert len(local_sgd("logistic", w, X, y)) == 2  # no deadline outside a request
    t = [0.0]
    deadline = Deadline(10.0, clock=lambda: t[0])
    with deadline_scope(deadline):
        check_deadline()  # 10 s left
        t[0] = 11.0
        with pytest.raises(PolicyDenied, match="max_request_seconds = 10 s"):
            local_sgd("logistic", w, X, y, epochs=5)


def test_duckdb_is_interrupted_at_the_deadline() -> None:
    con = duckdb.connect()
    try:
        with pytest.raises(PolicyDenied, match="max_request_seconds"):
            with request_deadline(SitePolicy(max_request_seconds=0.2), con):
                con.execute("SELECT count(*) FROM range(100000000000)").fetchone()
        assert con.execute("SELECT 42").fetchone() == (42,)  # no stray interrupt afterwards
    finally:
        con.close()


def test_the_node_interrupts_a_long_query_and_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A computation whose query would run for minutes is stopped by the node's watchdog."""
    seen: list[str] = []

    def run(con: Any, descriptor: Any, params: dict[str, Any], policy: Any) -> Any:
        try:
            con.execute("SELECT count(*) FROM range(100000000000)").fetchone()
        except duckdb.InterruptException:
            seen.append("interrupted")
            raise
        return ModelStatistics(arrays={}, n_rows=0)  # pragma: no cover - never reached

    slow = Computation(
        name="test_slow_query",
        description="test only: a query that runs for minutes",
        validate=lambda params, descriptor, policy: dict(params),
        run=run,
        combine=lambda replies, params: replies,
        params=frozenset(),
    )
    monkeypatch.setitem(registry._registry, slow.name, slow)  # removed after the test
    node = make_node(tmp_path, "h1", frame(400, 1), SitePolicy(max_request_seconds=0.5))
    reason = refused(node.handle(request(slow.name, {})), "max_request_seconds")
    assert seen == ["interrupted"] and "max_request_seconds = 0.5 s" in reason
    ordinary_request_works(node)


# --- the policy fields -------------------------------------------------------------------------
def test_limit_fields_are_validated_and_documented() -> None:
    doc = SitePolicy.__doc__ or ""
    for name in LIMIT_FIELDS:
        assert name in doc, name
        with pytest.raises(PolicyError, match=name):
            SitePolicy.from_dict({name: 0})
    with pytest.raises(PolicyError, match="max_request_seconds"):
        SitePolicy(max_request_seconds=float("inf"))
    with pytest.raises(PolicyError, match="max_request_depth"):
        SitePolicy(max_request_depth=1_000)
    assert SitePolicy.from_dict({"max_request_list": 50}).max_request_list == 50


# --- property: the walk measures what it should -----------------------------------------------
def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _numeric(v: list[Any]) -> bool:
    """An array of numbers only (nested lists of numbers included)."""
    return all(_is_num(x) or (isinstance(x, list) and _numeric(x)) for x in v)


def _measure(value: Any, depth: int = 1) -> tuple[int, int, int]:
    """(longest list that is not an array of numbers, numbers, deepest container).

    The reference the node's iterative walk is compared with: plainly recursive, with
    the top-level object at depth 1.
    """
    if not isinstance(value, dict | list):
        return 0, int(_is_num(value)), 0
    children = list(value.values()) if isinstance(value, dict) else value
    parts = [_measure(v, depth + 1) for v in children]
    own = len(value) if isinstance(value, list) and not _numeric(value) else 0
    return (
        max([own, *(p[0] for p in parts)]),
        sum(p[1] for p in parts),
        max([depth, *(p[2] for p in parts)]),
    )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.dictionaries(st.text(max_size=3), _json, max_size=4))
def test_shape_check_refuses_exactly_what_is_over_a_limit(params: dict[str, Any]) -> None:
    policy = SitePolicy(max_request_list=3, max_request_numbers=8, max_request_depth=4)
    longest, numbers, depth = _measure(params)
    over = {
        "max_request_list": longest > 3,
        "max_request_numbers": numbers > 8,
        "max_request_depth": depth > 4,
    }
    try:
        check_request_shape("c", params, policy)
    except PolicyDenied as exc:
        named = [f for f in over if f"field {f!r}" in str(exc)]
        assert len(named) == 1 and over[named[0]], (str(exc), over)
    else:
        assert not any(over.values()), over
