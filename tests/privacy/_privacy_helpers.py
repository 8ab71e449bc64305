"""Helpers of the privacy tests: a node wired to the privacy guard, and small cohorts.

``GuardedNode._compute`` is, verbatim, the integration code proposed for
``healthfed.node.runtime.Node._compute`` (see ``healthfed.privacy.guard``); once the
node runtime carries it, this subclass changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.node.policy import SitePolicy
from healthfed.node.runtime import Node, _connection, round_count
from healthfed.privacy.guard import PrivacyGuard, disclose_any

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


class GuardedNode(Node):
    """A ``Node`` whose ``_compute`` runs inside the privacy guard (integration code)."""

    @property
    def privacy_guard(self) -> PrivacyGuard:
        guard = self.__dict__.get("_privacy_guard")
        if guard is None:
            state = self.governance.state_dir if self.governance is not None else None
            audit = self.record if self.governance is not None else None
            guard = PrivacyGuard(state, self.policy, audit=audit)
            self.__dict__["_privacy_guard"] = guard
        return guard

    def _compute(self, computation, dataset, params, policy, info):  # type: ignore[override]
        with self.privacy_guard.request(
            info.get("permit_id"), info.get("request_id"), dataset, computation.name, params, policy
        ) as g:
            with _connection(dataset, self.optouts) as con:
                if con.excluded is not None:
                    info["optouts_excluded"] = round_count(con.excluded, policy.min_cell_count)
                g.check_cohort(con.con)
                release = computation.run(con.con, dataset.descriptor, params, policy)
            result = disclose_any(release, policy)
            g.released(result)
        info.update(g.audit_fields)
        return result


def make_node(
    tmp: Path, name: str, df: pd.DataFrame, policy: SitePolicy | None = None
) -> GuardedNode:
    ds = NodeDataset.from_frame(df, descriptor(tmp))
    return GuardedNode(name=name, datasets={"cohort": ds}, policy=policy or SitePolicy())


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
