"""Secure aggregation over a real Flower deployment: SecAgg+ between SuperNodes.

One SuperLink and three SuperNodes (loopback, TLS). hospital_1 and hospital_2 require
secure aggregation; hospital_3 requires differential privacy. The clear round is
refused by every site, each naming its rule. In the SecAgg+ round (four message
exchanges, ~20 s deployed) hospital_3 shares keys and then declines at the
masked-vector stage, so SecAgg+ recovers its masks as a dropout: the hub gets the exact
sum over hospital_1 and hospital_2 and nothing per site.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from healthfed.data.synth import write_covid_cohort
from healthfed.errors import ThresholdViolation
from healthfed.federation.federation import Federation
from healthfed.federation.messages import SECURE_LABEL
from healthfed.node.runtime import write_node_file
from healthfed.policy import SitePolicy

pytestmark = pytest.mark.flower

SITES = ["hospital_1", "hospital_2", "hospital_3"]
POLICIES = {
    "hospital_1": SitePolicy(secure_aggregation_required=True),
    "hospital_2": SitePolicy(secure_aggregation_required=True),
    "hospital_3": SitePolicy(dp_required=True),
}


def test_secure_sum_over_flower_with_a_declining_site(tmp_path) -> None:
    written = write_covid_cohort(tmp_path / "data", sites=len(SITES), rows=200, seed=11)
    descriptors = sorted(p for p in written if p.suffix == ".toml")
    node_files = [
        write_node_file(tmp_path / "nodes" / f"{d.stem}.toml", d.stem, [d], policy=POLICIES[d.stem])
        for d in descriptors
    ]
    data = {p.stem: pd.read_parquet(p) for p in written if p.suffix == ".parquet"}
    with Federation.flower(node_files, work_dir=tmp_path / "flower", timeout=90) as fed:
        with pytest.raises(ThresholdViolation) as err:
            fed.run("sum", "covid", {"variable": "age"})
        for site in SITES[:2]:
            reason = err.value.refusals[site]
            assert "this site contributes 'sum' only through secure aggregation" in reason
        assert (
            "this site requires differential privacy (dp_required)"
            in (err.value.refusals["hospital_3"])
        )
        # The message gives each distinct reason once, with the sites that gave it.
        assert "(refused by hospital_1, hospital_2)" in str(err.value)
        assert "(refused by hospital_3)" in str(err.value)
        out: Any = fed.round("sum", "covid", {"variable": "age"}, secure=True)
    assert out.contributed == SITES[:2]
    assert "dp_required" in out.refused["hospital_3"]
    assert list(out.replies) == [SECURE_LABEL]
    pooled = out.replies[SECURE_LABEL]
    ages = pd.concat([data[s]["age"] for s in SITES[:2]])
    assert pooled["n_rows"] == int(ages.notna().sum())
    assert pooled["arrays"]["sum"]["data"][0] == pytest.approx(ages.sum(), abs=1e-5)
