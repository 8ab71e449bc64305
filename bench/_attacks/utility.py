"""What the protections cost: Table 1 cells released, pooled KM steps, GLM exactness.

In-process only (the numbers do not depend on the engine):

* ``table1_cells_released_fraction``: the demo's Table 1 (its 18 variables by 28-day
  death) on the demo cohort (``--demo-sites`` x ``--demo-rows``), and on the same
  federation plus one site of 30 patients. A cell is every count cell of every table
  of every site's reply; released = not withheld (perturbed counts are released).
* ``km_pooled_steps``: pooled Kaplan-Meier steps on FLamby's Fed-TCGA-BRCA, one node per
  region (all six), grid ``time_grid_unit`` days.
* ``glm_max_abs_coef_diff_vs_pooled``: the exact federated logistic regression of the
  demo's trust report (``COVID_FEATURES``; when the sites refuse it, the README's
  ``age, sex, spo2, crp``) against Newton's method on the pooled rows of the sites in
  the fit, on the same design; ``None`` when every fit was refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _attacks.world import harmonised
from healthfed.compute.glm import FederatedLogisticRegression
from healthfed.compute.glm.maths import glm_derivatives
from healthfed.compute.preprocess import transform_frame
from healthfed.compute.survival import kaplan_meier
from healthfed.data.dataset import NodeDataset
from healthfed.data.descriptor import descriptor_from_dict
from healthfed.data.synth import write_covid_cohort
from healthfed.demo import TABLE1_BY, TABLE1_VARIABLES, prepare_nodes
from healthfed.errors import HealthfedError
from healthfed.federation.federation import Federation
from healthfed.node.runtime import Node, write_node_file
from healthfed.policy import SitePolicy
from healthfed.trust.demo import COVID_FEATURES, COVID_TARGET

__all__ = ["glm_exactness", "km_pooled_steps", "table1_fraction"]


def _cells(replies: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(released, all) count cells over every table of every site's reply."""
    released = total = 0
    for reply in replies.values():
        for table in (reply.get("tables") or {}).values():
            for row in table["counts"]:
                total += len(row)
                released += sum(v is not None for v in row)
    return released, total


def table1_fraction(
    work: Path, sites: int, rows: int
) -> tuple[dict[str, float | None], list[Path]]:
    """Released fraction of Table 1 cells: the demo cohort, then with a site of 30 added."""
    node_files = prepare_nodes(work / "demo", sites, rows, seed=0)
    written = write_covid_cohort(work / "small" / "data", sites=1, rows=30, seed=11)
    desc = next(p for p in written if p.suffix == ".toml")
    small = write_node_file(work / "small" / "nodes" / "clinic_30.toml", "clinic_30", [desc])
    params = {"variables": list(TABLE1_VARIABLES), "by": TABLE1_BY}
    out: dict[str, float | None] = {}
    for label, files in (("demo", node_files), ("with_site_of_30", [*node_files, small])):
        with Federation.from_node_files(files) as fed:
            try:
                replies = fed.round("table1", "covid", params).replies
            except HealthfedError:
                out[label] = None
                continue
        released, total = _cells(replies)
        out[label] = released / total if total else None
        if label == "with_site_of_30":
            r30, t30 = _cells({k: v for k, v in replies.items() if k == "clinic_30"})
            out["site_of_30_alone"] = r30 / t30 if t30 else 0.0
    return out, node_files


#: The README's example model: the fallback when the trust report's model is refused.
SMALL_FEATURES = ["age", "sex", "spo2", "crp"]


#: The models tried, in order: the demo's (missing indicators, then complete cases), the README's.
CANDIDATES = (
    (COVID_FEATURES, "indicator"),
    (COVID_FEATURES, "drop"),
    (SMALL_FEATURES, "drop"),
)


def _fit(node_files: list[Path], features: list[str], missing: str) -> tuple[Any, str | None]:
    with Federation.from_node_files(node_files) as fed:
        try:
            est = FederatedLogisticRegression(missing=missing)
            return est.fit(fed, "covid", COVID_TARGET, features), None
        except HealthfedError as exc:
            return None, f"{type(exc).__name__}: {exc}"


def _descriptor_file(node_file: Path) -> Path:
    """The covid descriptor a demo node file names (``data/<site>.toml``)."""
    return node_file.parent.parent / "data" / f"{node_file.stem}.toml"


def glm_exactness(node_files: list[Path]) -> dict[str, Any]:
    """Max |federated - pooled| coefficient of the first of ``CANDIDATES`` the sites fit.

    Returns ``diff`` (None when no fit ran), the model fitted (``features``, with its
    missing-value handling) and, for each refused model, the refusal (``refusals``).
    """
    refusals: dict[str, str] = {}
    model, features, missing = None, COVID_FEATURES, "indicator"
    for features, missing in CANDIDATES:
        model, why = _fit(node_files, features, missing)
        if model is not None:
            break
        refusals[f"{','.join(features)} (missing={missing})"] = str(why)
    if model is None:
        return {"diff": None, "features": None, "refusals": refusals}
    frames = []
    for f in node_files:
        node = Node.from_toml(f)
        if node.name in model.sites_:
            frames.append(harmonised(_descriptor_file(f)))
    df = pd.concat(frames, ignore_index=True)
    keep = [COVID_TARGET, *features] if missing == "drop" else [COVID_TARGET]
    df = df.dropna(subset=keep).reset_index(drop=True)
    X = np.column_stack([np.ones(len(df)), transform_frame(df, model.preprocessor_.spec_)])
    y = df[COVID_TARGET].to_numpy(dtype=float)
    b = np.zeros(X.shape[1])
    for _ in range(100):
        s, H, _, _ = glm_derivatives("binomial", X, y, b)
        step = np.linalg.solve(H, s)
        b = b + step
        if np.max(np.abs(step)) < 1e-13:
            break
    diff = float(np.max(np.abs(np.asarray(model.params_) - b)))
    return {
        "diff": diff,
        "features": f"{','.join(features)} (missing={missing})",
        "refusals": refusals,
    }


def km_pooled_steps(shared: Path) -> int:
    """Steps of the pooled Kaplan-Meier curve on Fed-TCGA-BRCA, one node per region."""
    brca = pd.read_csv(shared / "tcga_brca" / "brca.csv")
    split = pd.read_csv(shared / "tcga_brca" / "train_test_split.csv")
    df = brca.merge(split[["pid", "fold2"]], on="pid")
    df["center"] = df["fold2"].str.split("_").str[1].astype(int)
    cols = {"pid": {"type": "id"}, "T": {"type": "numeric"}, "E": {"type": "binary"}}
    raw = {
        "dataset": {"name": "tcga_brca", "file": "brca.csv", "id_column": "pid"},
        "columns": cols,
    }
    desc = descriptor_from_dict(raw, base_dir=shared / "tcga_brca")
    df["E"] = df["E"].astype(int)
    df["T"] = df["T"].astype(float)
    nodes = [
        Node(
            name=f"region_{c}",
            datasets={"tcga_brca": NodeDataset.from_frame(part[["pid", "T", "E"]], desc)},
            policy=SitePolicy(),
        )
        for c, part in df.groupby("center")
    ]
    unit = float(getattr(SitePolicy(), "time_grid_unit", 30.0) or 30.0)
    with Federation.inprocess(nodes) as fed:
        try:
            frame = kaplan_meier(fed, "tcga_brca", "T", "E", time_grid=unit)
        except HealthfedError:
            return 0
    pooled = frame[frame["group"] == "pooled"]
    return int((pooled["events"].fillna(0) > 0).sum())
