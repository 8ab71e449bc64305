"""The attacked world: two governed hospitals, a local hub, permits, and the truth.

Built once per engine (each engine gets its own node files, so the nodes' ledgers,
cohort memories and opt-out stores never carry from one engine to the other); the
data files are shared read-only. Every node holds three datasets:

* ``covid``: the synthetic COVID-19 cohort (``write_covid_cohort``, 2 x 300 rows);
* ``covid_copy``: the *same Parquet file* registered under a second dataset name
  (the budget attack "same file as two datasets");
* ``tcga``: FLamby's Fed-TCGA-BRCA rows of one region per hospital (survival: ``T``
  days, ``E`` death, ``age_at_index`` and the one-hot covariates).

The hub grants ordinary permits: ``main`` and ``second`` (the same study twice:
every covid variable and computation), ``scope`` (everything but ``age``) and
``tcga`` (the survival data). The truth the attacks are checked against is read
directly from the files (``World.truth``), never through the API.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from healthfed.compute import registered_computations
from healthfed.data.dataset import render_descriptor_toml
from healthfed.data.descriptor import load_descriptor
from healthfed.data.harmonise import conversion
from healthfed.data.synth import write_covid_cohort
from healthfed.hub import Hub
from healthfed.node.runtime import Node, write_node_file
from healthfed.policy import SitePolicy

__all__ = [
    "RESEARCHER",
    "SITES",
    "World",
    "attack_policy",
    "build_data",
    "build_world",
    "harmonised",
]

RESEARCHER = "mallory@uni.example"
SITES = ["hospital_1", "hospital_2"]
TCGA_REGIONS = {"hospital_1": "Northeast", "hospital_2": "South"}
#: ε the bench's sites allow per request, per permit and (where the code has one) per
#: patient population over its lifetime: one ε = 1 release, then nothing more.
EPSILON_CAP = 1.0


def attack_policy() -> SitePolicy:
    """Defaults, except a DP budget of ``EPSILON_CAP`` per permit and per population.

    A lifetime (per-population) cap is set on whichever ``SitePolicy`` field the code
    has for it (any other ``*epsilon*`` field), so the bench keeps measuring as the
    field lands under whatever name.
    """
    values: dict[str, Any] = {
        "dp_epsilon_per_request": EPSILON_CAP,
        "dp_epsilon_per_permit": EPSILON_CAP,
    }
    for f in dataclasses.fields(SitePolicy):
        if "epsilon" in f.name and f.name not in values:
            values[f.name] = EPSILON_CAP
    return SitePolicy(**values)


@dataclass
class World:
    """Node files, the hub, the permits and the truth of one engine's world."""

    root: Path
    node_files: list[Path]
    hub: Hub
    permits: dict[str, dict[str, Any]]
    truth: dict[str, dict[str, pd.DataFrame]]  # dataset -> site -> rows
    descriptors: dict[str, list[Path]] = field(default_factory=dict)  # site -> its descriptors
    spent: dict[str, float] = field(default_factory=dict)  # site -> ε released on covid

    def node(self, site: str) -> Node:
        """A fresh view of a site's node (its policy, its opt-out store)."""
        return Node.from_toml(self.node_files[SITES.index(site)])

    def truth_descriptor(self, site: str, dataset: str = "covid") -> Path:
        """The steward's descriptor file of ``dataset`` at ``site`` (public in the catalogue)."""
        index = {"covid": 0, "covid_copy": 1, "tcga": 2}[dataset]
        return self.descriptors[site][index]

    def close(self) -> None:
        self.hub.close()


def harmonised(descriptor_path: Path) -> pd.DataFrame:
    """A dataset's rows in canonical units, as its node computes on them (the truth)."""
    desc = load_descriptor(descriptor_path)
    df = pd.read_parquet(desc.path)
    for name, spec in desc.columns.items():
        if spec.is_numeric and spec.unit:
            conv = conversion(name, spec.unit)  # canonical = (value + offset) * factor
            df[name] = (df[name].astype(float) + conv.offset) * conv.factor
    return df


def _tcga(shared: Path, out: Path) -> tuple[dict[str, Path], dict[str, pd.DataFrame]]:
    """One TCGA-BRCA region per hospital: Parquet + descriptor, and the rows."""
    brca = pd.read_csv(shared / "tcga_brca" / "brca.csv")
    split = pd.read_csv(shared / "tcga_brca" / "train_test_split.csv")
    df = brca.merge(split[["pid", "fold2"]], on="pid")
    df["center"] = df["fold2"].str.split("_").str[1].astype(int)
    regions = ["Northeast", "South", "West", "Midwest", "Europe", "Canada"]
    df["region"] = df["center"].map(dict(enumerate(regions)))
    covariates = list(brca.columns[1:40])
    cols: dict[str, Any] = {
        "pid": {"type": "id"},
        "T": {"type": "numeric", "bounds": [0, 9000]},
        "E": {"type": "binary"},
    }
    for c in covariates:
        cols[c] = {"type": "numeric"} if c == "age_at_index" else {"type": "binary"}
    descs, rows = {}, {}
    for site, region in TCGA_REGIONS.items():
        part = df.loc[df.region == region, ["pid", "T", "E", *covariates]].reset_index(drop=True)
        part["E"] = part["E"].astype(int)
        part["T"] = part["T"].astype(float)
        for c in covariates[1:]:
            part[c] = part[c].astype(int)
        part.to_parquet(out / f"tcga_{site}.parquet", index=False)
        ds = {
            "name": "tcga",
            "file": f"tcga_{site}.parquet",
            "format": "parquet",
            "id_column": "pid",
        }
        path = out / f"tcga_{site}.toml"
        path.write_text(render_descriptor_toml(ds, cols), encoding="utf-8")
        descs[site], rows[site] = path, part
    return descs, rows


def build_data(root: Path, shared: Path) -> tuple[dict[str, list[Path]], dict[str, Any]]:
    """Write the three datasets of both sites; returns descriptors per site and the truth."""
    data = root / "data"
    written = write_covid_cohort(data, sites=len(SITES), rows=300, seed=5)
    descs: dict[str, list[Path]] = {s: [] for s in SITES}
    truth: dict[str, dict[str, pd.DataFrame]] = {"covid": {}, "tcga": {}}
    for p in written:
        if p.suffix == ".toml":
            truth["covid"][p.stem] = harmonised(p)
            copy = p.with_name(f"{p.stem}_copy.toml")
            text = p.read_text(encoding="utf-8")
            copy.write_text(
                re.sub(r'^name = "covid"$', 'name = "covid_copy"', text, count=1, flags=re.M),
                encoding="utf-8",
            )
            descs[p.stem] += [p, copy]
    tcga_descs, tcga_rows = _tcga(shared, data)
    for s in SITES:
        descs[s].append(tcga_descs[s])
    truth["tcga"] = tcga_rows
    return descs, truth


def _grant(hub: Hub, datasets: list[str], variables: list[str], label: str) -> dict[str, Any]:
    app = hub.apply(
        {
            "applicant": "Uni Example",
            "authorised_persons": [RESEARCHER],
            "purpose": "scientific_research",
            "purpose_description": f"privacy bench study ({label})",
            "no_prohibited_use": True,
            "datasets": datasets,
            "variables": variables,
            "computations": sorted(registered_computations()),
        }
    )
    expires = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    return hub.grant(app["id"], expires=expires)


def build_world(
    root: Path, descs: dict[str, list[Path]], truth: dict[str, Any], policy: SitePolicy
) -> World:
    """Governed node files trusting a fresh local hub, the catalogue, and the permits."""
    hub = Hub.init(root / "hub", name="bench access body")
    node_files = [
        write_node_file(
            root / "nodes" / f"{s}.toml", s, descs[s], policy=policy, hub_keys=[hub.public_key_path]
        )
        for s in SITES
    ]
    for p in node_files:
        hub.publish_node(Node.from_toml(p))
    covid_vars = [c for c in truth["covid"][SITES[0]].columns if c != "patient_id"]
    tcga_vars = [c for c in truth["tcga"][SITES[0]].columns if c != "pid"]
    permits = {
        "main": _grant(hub, ["covid", "covid_copy"], covid_vars, "main"),
        "second": _grant(hub, ["covid", "covid_copy"], covid_vars, "second"),
        "third": _grant(hub, ["covid", "covid_copy"], covid_vars, "third"),
        "scope": _grant(hub, ["covid"], [v for v in covid_vars if v != "age"], "no age"),
        "tcga": _grant(hub, ["tcga"], tcga_vars, "survival"),
    }
    return World(
        root=root,
        node_files=node_files,
        hub=hub,
        permits=permits,
        truth=truth,
        descriptors=descs,
    )
