"""Helpers of the privacy tests: small cohorts on real nodes.

Every ``Node`` runs its requests under the privacy guard (``Node._compute``), so the
attacks here go through exactly the code a hospital runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthfed.compute.preprocess import standardisation_spec
from healthfed.compute.rounds import RoundOutcome
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.errors import PermitRefusedBySites, TooFewSites
from healthfed.node.runtime import Node
from healthfed.policy import SitePolicy

COLUMNS: dict[str, dict[str, Any]] = {
    "pid": {"type": "id"},
    "age": {"type": "numeric", "bounds": [0, 110]},
    "income": {"type": "numeric", "bounds": [0, 1_000_000]},
    "los": {"type": "integer", "bounds": [0, 100]},
    "weight": {"type": "numeric"},  # no declared bounds
    "sex": {"type": "categorical", "levels": ["female", "male"]},
    "ward": {"type": "categorical", "levels": ["a", "b", "c", "d"]},
    "zip": {"type": "categorical"},  # no declared levels
    "death": {"type": "binary"},
}


def descriptor(tmp: Path) -> Any:
    return descriptor_from_dict(
        {
            "dataset": {"name": "cohort", "file": "cohort.parquet", "id_column": "pid"},
            "columns": COLUMNS,
        },
        base_dir=tmp,
    )


def frame(n: int, seed: int, prefix: str = "p") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "pid": [f"{prefix}{i}" for i in range(n)],
            "age": np.clip(rng.normal(60, 15, n), 0, 110).round(1),
            "income": np.clip(rng.lognormal(10, 0.5, n), 0, 1e6),
            "los": rng.poisson(6, n).astype(float),
            "weight": rng.normal(80, 12, n),
            "sex": rng.choice(["female", "male"], n).astype(object),
            "ward": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.27, 0.03]).astype(object),
            "zip": rng.choice([f"z{i}" for i in range(8)], n).astype(object),
            "death": (rng.random(n) < 0.3).astype(int),
        }
    )


def make_node(tmp: Path, name: str, df: pd.DataFrame, policy: SitePolicy | None = None) -> Node:
    ds = NodeDataset.from_frame(df, descriptor(tmp))
    return Node(name=name, datasets={"cohort": ds}, policy=policy or SitePolicy())


def request(computation: str, params: dict[str, Any], permit: Any = None) -> dict[str, Any]:
    req: dict[str, Any] = {
        "computation": computation,
        "dataset": "cohort",
        "params": params,
        "request_id": "r",
    }
    if permit is not None:
        req["permit"] = permit
    return req


# A fitted model's subgroup metrics by ward: the tiny-subgroup attack of both engines' suites.
SUBGROUP_BY_WARD: dict[str, Any] = {
    "model": {
        "model": "logistic",
        "preprocess": standardisation_spec(["age"], centers=[60.0], scales=[15.0]),
        "weights": [[0.5], [0.0]],
    },
    "target": "death",
    "attributes": ["ward"],
}


def site_outcome(
    fed: Any,
    computation: str,
    dataset: str,
    params: dict[str, Any],
    *,
    min_sites: int | None = None,
) -> RoundOutcome:
    """Each site's answer to one round, refusals included, as an attack test inspects it.

    ``Federation.round`` raises ``TooFewSites`` when fewer sites contributed than a
    release needs; the attack tests want to see every site's refusal, so that error's
    ``refusals`` become the outcome. ``min_sites=1`` shows one site's reply next to
    another's refusal (a sandbox federation's per-site view).
    """
    saved = fed.min_sites
    if min_sites is not None:
        fed.min_sites = min_sites
    try:
        return fed.round(computation, dataset, params)
    except (TooFewSites, PermitRefusedBySites) as exc:  # a permit refusal names its check
        return RoundOutcome(replies={}, refused=dict(exc.refusals), checks=dict(exc.checks))
    finally:
        fed.min_sites = saved


# --- averaging distinct patient sets: the bench's generalised least squares --------------------
def every_view(
    replies: Any, row: str, col: str, target: tuple[str, str]
) -> tuple[float, float, int]:
    """(estimate, standard deviation, distinct patient sets) of one crosstab cell.

    ``replies(computation, params)`` returns one site's released result. The attacker
    takes the crosstab and ``count`` of every level of both variables and solves the
    least-squares problem of ``bench/_attacks/averaging.py`` (imported, not copied).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from _attacks.averaging import crosstab_views, gls

    table = replies("crosstab", {"row": row, "col": col})["tables"]["crosstab"]
    counts, variance = [], 0.0
    for axis, variable, levels in ((0, row, table["rows"]), (1, col, table["cols"])):
        for level in (str(v) for v in levels):
            if level == "(missing)":
                continue
            released = replies("count", {"variable": variable, "level": level})
            variance = float(released["perturbation"]["variance"])
            counts.append((axis, level, released["tables"]["count"]["counts"]))
    cells, obs = crosstab_views(table, counts)
    est, sd = gls(cells, obs, target, variance)
    return est, sd, len(obs)
