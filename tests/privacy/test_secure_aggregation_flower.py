"""Secure aggregation over a real Flower deployment: SecAgg+ between SuperNodes.

One SuperLink and three SuperNodes (loopback, TLS), every site requiring secure
aggregation. The clear round is refused by every site; the SecAgg+ round (four
message exchanges, ~20 s deployed) returns the exact pooled sum and nothing per site.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from healthfed.data.synth import write_covid_cohort
from healthfed.errors import ThresholdViolation
from healthfed.federation.federation import Federation
from healthfed.federation.secure import SECURE_LABEL
from healthfed.node.policy import SitePolicy
from healthfed.node.runtime import write_node_file

pytestmark = pytest.mark.flower

SITES = ["hospital_1", "hospital_2", "hospital_3"]


def test_secure_sum_over_flower(tmp_path) -> None:
    written = write_covid_cohort(tmp_path / "data", sites=len(SITES), rows=200, seed=11)
    descriptors = sorted(p for p in written if p.suffix == ".toml")
    policy = SitePolicy(secure_aggregation_required=True)
    node_files = [
        write_node_file(tmp_path / "nodes" / f"{d.stem}.toml", d.stem, [d], policy=policy)
        for d in descriptors
    ]
    data = pd.concat([pd.read_parquet(p) for p in written if p.suffix == ".parquet"])
    with Federation.flower(node_files, work_dir=tmp_path / "flower", timeout=90) as fed:
        with pytest.raises(ThresholdViolation) as err:
            fed.run("sum", "covid", {"variable": "age"})
        for site in SITES:
            assert f"{site}: this site contributes 'sum' only through secure aggregation" in str(
                err.value
            )
        out: Any = fed.query("sum", "covid", {"variable": "age"}, secure=True)
    assert out.contributed == SITES
    assert list(out.replies) == [SECURE_LABEL]
    pooled = out.replies[SECURE_LABEL]
    assert pooled["n_rows"] == int(data["age"].notna().sum())
    assert pooled["arrays"]["sum"]["data"][0] == pytest.approx(data["age"].sum(), abs=1e-5)
