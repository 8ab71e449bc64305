"""The model-invariant attacks over a real Flower deployment (one SuperLink, two SuperNodes).

The same attacks as tests/privacy/test_model_invariant.py (where each is first shown to
work on the unprotected sums), five rounds in all: crafted GLM coefficients, the first
round's X'X over dummies, an MLP with an indicator hidden unit, a crafted model
evaluated, and subgroup metrics of a one-patient subgroup. Site ``A`` holds the target
patient and the small two-way cell; site ``B`` the one-patient ward.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _privacy_helpers import COLUMNS, SUBGROUP_BY_WARD, site_outcome  # noqa: E402
from test_model_invariant import (  # noqa: E402
    TARGET_AGE,
    _frames,
    bounded_step_request,
    bounded_update_request,
    onehot_spec,
    raw_spec,
)

from healthfed.data.dataset import render_descriptor_toml  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import write_node_file  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

pytestmark = pytest.mark.flower


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("invariant_flower")
    node_files = []
    for site, df in _frames().items():
        df.to_parquet(root / f"cohort_{site}.parquet", index=False)
        dataset = {
            "name": "cohort",
            "file": f"cohort_{site}.parquet",
            "format": "parquet",
            "id_column": "pid",
        }
        desc = root / f"cohort_{site}.toml"
        desc.write_text(render_descriptor_toml(dataset, COLUMNS), encoding="utf-8")
        node_files.append(write_node_file(root / f"{site}.toml", site, [desc], policy=SitePolicy()))
    with Federation.flower(node_files, work_dir=root / "flower", timeout=60) as federation:
        yield federation


def refused_at(fed: Federation, site: str, computation: str, params: dict[str, Any]) -> str:
    out = site_outcome(fed, computation, "cohort", params, min_sites=1)
    assert site in out.refused, (out.replies.get(site), out.errors)
    return out.refused[site]


def test_crafted_glm_coefficients(fed) -> None:
    beta = [-50.0 * TARGET_AGE, 50.0, 0.0]
    params = {
        "family": "binomial",
        "target": "death",
        "preprocess": raw_spec(["age", "weight"]),
        "beta": beta,
    }
    assert "bounded-region rule" in refused_at(fed, "A", "glm_step", params)


def test_first_round_cross_products(fed) -> None:
    spec = onehot_spec(("sex", ["female", "male"]), ("ward", ["a", "b", "c", "d"]))
    why = refused_at(
        fed, "A", "glm_step", {"family": "binomial", "target": "death", "preprocess": spec}
    )
    assert "support rule" in why


def test_indicator_hidden_unit(fed) -> None:
    w0 = [[[5.0]], [-5.0 * TARGET_AGE], [1.0], [1.0]]
    params = {
        "model": "mlp",
        "hidden": 1,
        "target": "death",
        "preprocess": raw_spec(["age"]),
        "weights": w0,
        "epochs": 1,
        "lr": 1.0,
        "batch_size": 400,
    }
    assert "only with differential privacy" in refused_at(fed, "A", "local_train", params)


def test_crafted_model_evaluated(fed) -> None:
    model = {
        "model": "mlp",
        "hidden": 1,
        "preprocess": raw_spec(["age"]),
        "weights": [[[5.0]], [-5.0 * TARGET_AGE], [5.0], [5.0]],
    }
    params = {"model": model, "target": "death", "stage": "newton", "candidates": [[0, 1, 0]]}
    assert "does not evaluate an MLP" in refused_at(fed, "A", "evaluate_binary", params)


def test_one_patient_subgroup_zero_cells(fed) -> None:
    out = site_outcome(fed, "subgroup_metrics", "cohort", SUBGROUP_BY_WARD, min_sites=1)
    t = out.replies["B"]["tables"]
    j = t["n.ward"]["cols"].index("d")
    assert t["n.ward"]["counts"][0][j] is None
    assert [row[j] for row in t["conf.ward"]["counts"]] == [None] * 4


def test_bounded_mlp_update_and_evaluation_by_difference(fed) -> None:
    # the same requests as tests/privacy/test_model_invariant.py, where both attacks are
    # shown to recover the target's outcome from the unprotected sums
    a = _frames()["A"]
    why = refused_at(fed, "A", "local_train", bounded_update_request(a))
    assert "only with differential privacy" in why
    why = refused_at(fed, "A", "evaluate_binary", bounded_step_request(a))
    assert "does not evaluate an MLP" in why
