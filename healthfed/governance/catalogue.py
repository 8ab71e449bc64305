"""Dataset descriptions for the hub's catalogue (HealthDCAT-AP's main fields): the formatting.

A node describes each of its datasets from its descriptor, its data and the
steward's metadata; nothing row-level is in a description and no count below
the site's minimum cell count is shown. The node counts its rows
(:func:`healthfed.node.catalogue.describe_dataset`); this module only formats
what it is given and never touches data. Metadata comes, later sources winning,
from the descriptor's extra ``[dataset]`` fields, the node file's
``[catalogue]`` table and its ``[catalogue.<dataset>]`` sub-table::

    [catalogue]
    publisher = "Hospital 1 data office"
    spatial_coverage = "NUTS FR101"
    [catalogue.covid]
    temporal_coverage = {start = "2020-03-01", end = "2022-12-31"}
    health_category = ["infectious diseases"]
    coding_systems = ["ICD-10", "LOINC"]

Counts (records and unique individuals, after excluding opted-out patients) are
rounded to the nearest 10 and never shown below the site's minimum cell count:
a smaller count is published as ``"<5"`` (for a minimum of 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from healthfed.data.descriptor import DatasetDescriptor
from healthfed.data.harmonise import canonical_unit
from healthfed.policy import SitePolicy

__all__ = [
    "DEFAULTS",
    "METADATA_FIELDS",
    "catalogue_count",
    "catalogue_entry",
    "dataset_metadata",
    "describe_variables",
]

METADATA_FIELDS = (
    "title",
    "description",
    "publisher",
    "custodian",
    "contact",
    "access_rights",
    "legal_basis",
    "temporal_coverage",
    "spatial_coverage",
    "health_category",
    "coding_systems",
    "keywords",
    "provenance",
    "quality_notes",
)

DEFAULTS: dict[str, Any] = {
    "access_rights": (
        "restricted: available for secondary use only under a data permit of a health data "
        "access body; analysed in place at the data holder (federated), aggregates only"
    ),
    "legal_basis": "Regulation (EU) 2025/327 (European Health Data Space), Chapter IV",
    "temporal_coverage": None,
    "spatial_coverage": None,
    "health_category": [],
    "coding_systems": [],
    "keywords": [],
    "provenance": "not declared by the data holder",
    "quality_notes": "not declared by the data holder",
    "contact": None,
}


def catalogue_count(n: int, minimum: int) -> int | str:
    """``n`` rounded to the nearest 10, or ``"<minimum"`` when ``n`` is below the minimum."""
    if n < minimum:
        return f"<{minimum}"
    return max(minimum, int(10 * round(n / 10)))


def dataset_metadata(
    descriptor_extra: Mapping[str, Any], site_catalogue: Mapping[str, Any], dataset_name: str
) -> dict[str, Any]:
    """The steward's metadata of one dataset, later sources winning (see the module doc).

    ``descriptor_extra`` is the descriptor's extra ``[dataset]`` fields,
    ``site_catalogue`` the node file's ``[catalogue]`` table (whose sub-table
    ``dataset_name`` holds the dataset's own fields); keys other than
    :data:`METADATA_FIELDS` are ignored.
    """
    meta: dict[str, Any] = dict(DEFAULTS)
    meta.update({k: v for k, v in descriptor_extra.items() if k in METADATA_FIELDS})
    site_meta = dict(site_catalogue or {})
    per_dataset = site_meta.pop(dataset_name, None)
    meta.update({k: v for k, v in site_meta.items() if k in METADATA_FIELDS})
    if isinstance(per_dataset, dict):
        meta.update({k: v for k, v in per_dataset.items() if k in METADATA_FIELDS})
    return meta


def describe_variables(descriptor: DatasetDescriptor) -> list[dict[str, Any]]:
    """The dataset's variables (name, type, unit, declared bounds and levels); never the id."""
    variables = []
    for spec in descriptor.columns.values():
        if spec.type == "id":
            continue
        var: dict[str, Any] = {"name": spec.name, "type": spec.type}
        if spec.is_numeric:
            var["unit"] = canonical_unit(spec.name) or spec.unit
            if spec.bounds is not None:
                var["declared_bounds"] = list(spec.bounds)
        if spec.levels is not None:
            var["levels"] = list(spec.levels)
        if spec.description:
            var["description"] = spec.description
        variables.append(var)
    return variables


def catalogue_entry(
    site: str,
    descriptor: DatasetDescriptor,
    metadata: Mapping[str, Any],
    *,
    n_rows: int,
    n_individuals: int,
    policy: SitePolicy,
    computations: list[str],
) -> dict[str, Any]:
    """The HealthDCAT-AP entry of ``site``'s dataset ``descriptor`` (a JSON-ready dict).

    ``metadata`` is :func:`dataset_metadata`'s result; ``n_rows``/``n_individuals``
    are the exact counts after opt-outs, published only through
    :func:`catalogue_count` with the site's minimum cell count; ``computations`` are
    the computations the site runs. The caller (the node) supplies the counts, so
    this formatting never touches data.
    """
    d, meta, minimum = descriptor, metadata, policy.min_cell_count
    return {
        "identifier": f"{site}/{d.name}",
        "site": site,
        "dataset": d.name,
        "title": meta.get("title") or d.title or d.name,
        "description": meta.get("description") or d.description,
        "publisher": meta.get("publisher") or site,
        "custodian": meta.get("custodian") or meta.get("publisher") or site,
        "contact": meta["contact"],
        "access_rights": meta["access_rights"],
        "legal_basis": meta["legal_basis"],
        "temporal_coverage": meta["temporal_coverage"],
        "spatial_coverage": meta["spatial_coverage"],
        "number_of_records": catalogue_count(n_rows, minimum),
        "number_of_unique_individuals": catalogue_count(n_individuals, minimum),
        "health_category": list(meta["health_category"] or []),
        "coding_systems": list(meta["coding_systems"] or []),
        "keywords": list(meta["keywords"] or []),
        "variables": describe_variables(d),
        "identifier_column": "pseudonymised patient id (never released)",
        "provenance": meta["provenance"],
        "quality_notes": meta["quality_notes"],
        "computations": computations,
        "disclosure_control": {
            "min_cell_count": minimum,
            "min_subset": policy.min_subset,
            "counts_rounded_to": 10,
        },
        "conforms_to": "HealthDCAT-AP (main dataset fields)",
        "issued": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
