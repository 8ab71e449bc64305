"""Cell key perturbation over a real Flower deployment: the in-process attacks, end to end.

One SuperLink and two SuperNodes (loopback) serve the module; each node executor keeps
its record-key secret for the life of its process, so repeats in later rounds see the
same keys, as a node driven in-process does. Six rounds in all:

* the same ``count`` twice: the same answer (averaging repeats gains nothing);
* ``table1`` of ward: the same released number as that ``count`` (same patients);
* ``table1`` of age by ward against a ``sum`` with one more filter: the oldest patient's
  age is not recovered (the in-process suite shows that exact means give it away);
* ``crosstab`` of ward x death: the 3-death cell is never released as its true 1..4 and
  several counts stay consistent with the row total and the survivors' exact count;
* the same cell from every distinct patient set the crosstab and ``count`` releases
  give (least squares over 6 more rounds): still +-2 at 95 %.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import COLUMNS, every_view, frame, site_outcome  # noqa: E402

from healthfed.data.dataset import render_descriptor_toml  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import write_node_file  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402
from healthfed.privacy.cellkey import ptable_for  # noqa: E402

pytestmark = pytest.mark.flower

SITES = ["hospital_1", "hospital_2"]
POLICY = SitePolicy()  # the default: cell key perturbation
PT = ptable_for(POLICY)
assert PT is not None


def _frame(k: int) -> pd.DataFrame:
    """Site ``k``: one patient aged 109 on ward c; ward d with 3 deaths and 9 survivors."""
    d = frame(400, 10 + k, prefix=f"h{k}_")
    d.loc[d.index[1:], "age"] = d.loc[d.index[1:], "age"].clip(upper=100.0)
    d.loc[0, ["age", "ward"]] = [109.0, "c"]
    d["ward"] = d["ward"].replace("d", "b")
    d.loc[1:12, "ward"] = "d"
    d.loc[1:12, "death"] = [1, 1, 1] + [0] * 9
    return d


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cell_key_flower")
    frames, node_files = {}, []
    for k, site in enumerate(SITES, start=1):
        frames[site] = _frame(k)
        folder = root / "data"
        folder.mkdir(exist_ok=True)
        frames[site].to_parquet(folder / f"cohort_{k}.parquet", index=False)
        dataset = {"name": "cohort", "file": f"cohort_{k}.parquet", "format": "parquet"}
        desc = folder / f"cohort_{k}.toml"
        desc.write_text(
            render_descriptor_toml({**dataset, "id_column": "pid"}, COLUMNS), encoding="utf-8"
        )
        node_files.append(
            write_node_file(root / "nodes" / f"{site}.toml", site, [desc], policy=POLICY)
        )
    with Federation.flower(node_files, work_dir=root / "flower", timeout=60) as fed:
        yield {"fed": fed, "frames": frames}


def _replies(fed: Federation, computation: str, params: dict[str, Any]) -> dict[str, Any]:
    out = site_outcome(fed, computation, "cohort", params)
    assert sorted(out.replies) == SITES, (out.refused, out.errors)
    return out.replies


def test_repeats_and_other_computations_give_the_same_number(deployment) -> None:
    fed = deployment["fed"]
    first = _replies(fed, "count", {"variable": "ward", "level": "a"})
    again = _replies(fed, "count", {"variable": "ward", "level": "a"})
    t1 = _replies(fed, "table1", {"variables": ["ward"]})
    for site in SITES:
        n = first[site]["tables"]["count"]["counts"][0][0]
        assert again[site]["tables"]["count"]["counts"][0][0] == n  # averaging gains nothing
        truth = int((deployment["frames"][site]["ward"] == "a").sum())
        assert n - truth in PT.offsets[PT.row(truth)]
        t = t1[site]["tables"]["var:ward"]
        assert t["counts"][t["rows"].index("a")][0] == n  # the same patients, the same noise
        assert t1[site]["perturbed_cells"] > 0
        assert t1[site]["perturbation"]["max_deviation"] == POLICY.cell_key_max_deviation


def test_table1_group_cell_minus_a_filtered_sum(deployment) -> None:
    fed = deployment["fed"]
    params = {"variables": ["age"], "by": "ward", "quantiles": []}
    t1 = _replies(fed, "table1", params)
    where = {"variable": "age", "where": {"ward": "c", "age": [0, 100]}}
    sums = site_outcome(fed, "sum", "cohort", where, min_sites=1).replies
    for site in SITES:
        d = deployment["frames"][site]
        rest = d.loc[(d["ward"] == "c") & (d["age"] <= 100), "age"]
        if site in sums:
            n_rest = int(sums[site]["n_rows"])
            total = float(sums[site]["arrays"]["sum"]["data"][0])
        else:  # refused: the attacker's best case is the exact sum from elsewhere
            n_rest, total = len(rest), float(rest.sum())
        block = t1[site]["numeric"]["age"]
        cell = block["cells"][t1[site]["tables"]["var:age"]["cols"].index("c")]
        assert cell is not None
        recovered = float(cell["mean"]) * (n_rest + 1) - total
        assert abs(recovered - 109.0) >= POLICY.cell_key_magnitude_share / 2 * 109.0 - 1e-6


def test_crosstab_small_cell_is_not_recovered(deployment) -> None:
    fed = deployment["fed"]
    x = _replies(fed, "crosstab", {"row": "ward", "col": "death"})
    for site in SITES:
        t = x[site]["tables"]["crosstab"]
        i = t["rows"].index("d")
        deaths, total = t["counts"][i][t["cols"].index("1")], t["row_totals"][i]
        assert deaths is None or deaths == 0 or deaths >= POLICY.min_cell_count

        def possible(true: int, released: int | None) -> bool:
            if released is None:
                return True
            return released == 0 if true == 0 else released - true in PT.offsets[PT.row(true)]

        # With the survivors' exact count (9), which death counts fit the released numbers?
        candidates = [c for c in range(40) if possible(c, deaths) and possible(c + 9, total)]
        assert 3 in candidates and len(candidates) >= 2, candidates


def test_averaging_every_view_of_a_small_cell(deployment) -> None:
    fed = deployment["fed"]
    cache: dict[str, dict[str, Any]] = {}

    def replies(computation: str, params: dict[str, Any]) -> dict[str, Any]:
        key = f"{computation}{sorted(params.items())}"
        if key not in cache:
            cache[key] = _replies(fed, computation, params)
        return cache[key]

    for site in SITES:
        est, sd, sets = every_view(
            lambda c, p, s=site: replies(c, p)[s], "ward", "death", ("d", "1")
        )
        assert sets >= 20
        assert POLICY.cell_key_variance / sd**2 < 2 and 1.96 * sd > 2, (site, sd)
        assert abs(est - 3) < 4 * sd
