"""Population budget and cohort memory over a real Flower deployment (leak classes 3 and 4).

One SuperLink and two SuperNodes (loopback) serve the module; the privacy guard, its
population registry, DP ledger and cohort memory live in each node executor process
(sandbox nodes: in memory for the life of that process), so state carries from one
round to the next. The tests run in file order and share that state.

Each node holds one file twice: ``cohort`` and ``cohort_copy`` (a byte copy registered
under a second name). Six rounds:

1-2. DP: ``dp_count`` at ε = 1 on ``cohort`` is released; the same on the copy is
     refused (per-permit cap 1.5 on the *population*; before, the copy had a fresh one).
3-4. "all" (``count`` on the copy) then "all minus the one patient aged 109" (``sum``
     on ``cohort``): refused, across dataset names.
5-6. ``age in [0, 50]`` on ``cohort``, then ``age in [50, 110]`` on the copy: with "all"
     released, the two overlapping intervals give the patient aged exactly 50;
     refused.
7-10. Four cohorts on ``cohort``, no two or three of which isolate anyone:
     {age in [30, 70.5], female} + {.., male} - {age in [30, 70], death} - {.., alive}
     would be the one patient aged 70.3 and their length of stay; the fourth is
     refused at both sites. Opt-outs and permits need governed nodes: in-process only
     (tests/privacy/test_population_memory.py, test_population_budget.py).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import COLUMNS, frame, site_outcome  # noqa: E402

from healthfed.data.dataset import render_descriptor_toml  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import write_node_file  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

pytestmark = pytest.mark.flower

SITE_NAMES = ["hospital_1", "hospital_2"]
POLICY = SitePolicy(dp_epsilon_per_request=1.0, dp_epsilon_per_permit=1.5)


def _write(folder: Path, k: int) -> list[Path]:
    """Site ``k``'s file under two names; one patient aged 109, one aged exactly 50,
    one aged in (70, 70.5]."""
    folder.mkdir(parents=True, exist_ok=True)
    d = frame(400, 20 + k, prefix=f"h{k}_")
    d["age"] = d["age"].clip(upper=100.0)
    d.loc[d["age"] == 50.0, "age"] = 50.1
    d.loc[0, "age"] = 109.0
    d.loc[1, "age"] = 50.0
    d.loc[(d["age"] > 70) & (d["age"] <= 70.5), "age"] = 70.6
    d.loc[2, "age"] = 70.3
    d.to_parquet(folder / "cohort.parquet", index=False)
    shutil.copy(folder / "cohort.parquet", folder / "copy.parquet")
    out = []
    for name, file in (("cohort", "cohort.parquet"), ("cohort_copy", "copy.parquet")):
        ds = {"name": name, "file": file, "format": "parquet", "id_column": "pid"}
        path = folder / f"{name}.toml"
        path.write_text(render_descriptor_toml(ds, COLUMNS), encoding="utf-8")
        out.append(path)
    return out


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("population_flower")
    node_files = [
        write_node_file(
            root / "nodes" / f"{site}.toml", site, _write(root / site, k), policy=POLICY
        )
        for k, site in enumerate(SITE_NAMES, start=1)
    ]
    with Federation.flower(node_files, work_dir=root / "flower", timeout=60) as federation:
        yield federation


def _refused_everywhere(out: Any, *needles: str) -> None:
    assert not out.replies, out.replies
    assert sorted(out.refused) == SITE_NAMES, (out.refused, out.errors, out.missing)
    for site, reason in out.refused.items():
        for n in needles:
            assert n in reason, (site, reason)


def test_copy_of_the_file_shares_the_dp_budget(fed: Federation) -> None:
    first = site_outcome(fed, "dp_count", "cohort", {"epsilon": 1.0})
    assert sorted(first.replies) == SITE_NAMES, (first.refused, first.errors)
    again = site_outcome(fed, "dp_count", "cohort_copy", {"epsilon": 1.0})
    _refused_everywhere(again, "privacy budget exceeded", "dp_epsilon_per_permit")


def test_all_vs_all_minus_one_across_dataset_names(fed: Federation) -> None:
    everyone = site_outcome(fed, "count", "cohort_copy", {})
    assert sorted(everyone.replies) == SITE_NAMES, (everyone.refused, everyone.errors)
    minus = site_outcome(fed, "sum", "cohort", {"variable": "los", "where": {"age": [0, 100]}})
    _refused_everywhere(minus, "differencing protection", "min_subset = 5")


def test_two_intervals_overlapping_at_one_value(fed: Federation) -> None:
    params = {"variable": "los", "where": {"age": [0, 50]}}
    low = site_outcome(fed, "sum", "cohort", params)
    assert sorted(low.replies) == SITE_NAMES, (low.refused, low.errors)
    params = {"variable": "los", "where": {"age": [50, 110]}}
    high = site_outcome(fed, "sum", "cohort_copy", params)
    _refused_everywhere(high, "differencing protection", "overlapping cohorts")


def test_four_cohorts_whose_combination_isolates_one_patient(fed: Federation) -> None:
    cohorts = [
        {"age": [30, 70.5], "sex": "female"},
        {"age": [30, 70.5], "sex": "male"},
        {"age": [30, 70], "death": 1},
    ]
    for where in cohorts:
        out = site_outcome(fed, "sum", "cohort", {"variable": "los", "where": where})
        assert sorted(out.replies) == SITE_NAMES, (where, out.refused, out.errors)
    last = {"variable": "los", "where": {"age": [30, 70], "death": 0}}
    _refused_everywhere(
        site_outcome(fed, "sum", "cohort", last),
        "differencing protection",
        "count of 1 patient(s)",
        "a combination of several cohorts",
    )
