"""Dataset descriptions for the hub's catalogue (HealthDCAT-AP's main fields).

A node describes each of its datasets from its descriptor, its data and the
steward's metadata; nothing row-level is in a description and no count below
the site's minimum cell count is shown. Metadata comes, later sources winning,
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

from datetime import UTC, datetime
from typing import Any

from healthfed.data.harmonise import canonical_unit

__all__ = ["METADATA_FIELDS", "catalogue_count", "describe_dataset"]

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


def describe_dataset(node: Any, dataset_name: str) -> dict[str, Any]:
    """The catalogue entry of ``node``'s dataset ``dataset_name`` (a JSON-ready dict)."""
    from healthfed.node.runtime import _connection

    ds = node.dataset(dataset_name)
    d = ds.descriptor
    meta: dict[str, Any] = dict(DEFAULTS)
    meta.update({k: v for k, v in d.extra.items() if k in METADATA_FIELDS})
    site_meta = dict(node.catalogue or {})
    per_dataset = site_meta.pop(dataset_name, None)
    meta.update({k: v for k, v in site_meta.items() if k in METADATA_FIELDS})
    if isinstance(per_dataset, dict):
        meta.update({k: v for k, v in per_dataset.items() if k in METADATA_FIELDS})
    id_col = '"' + d.id_column.replace('"', '""') + '"'
    with _connection(ds, node.optouts) as opened:
        row = opened.con.execute(f"SELECT count(*), count(DISTINCT {id_col}) FROM data").fetchone()
    n_rows, n_ids = (int(row[0]), int(row[1])) if row else (0, 0)
    minimum = node.policy.min_cell_count
    variables = []
    for spec in d.columns.values():
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
    from healthfed.compute import registered_computations

    return {
        "identifier": f"{node.name}/{d.name}",
        "site": node.name,
        "dataset": d.name,
        "title": meta.get("title") or d.title or d.name,
        "description": meta.get("description") or d.description,
        "publisher": meta.get("publisher") or node.name,
        "custodian": meta.get("custodian") or meta.get("publisher") or node.name,
        "contact": meta["contact"],
        "access_rights": meta["access_rights"],
        "legal_basis": meta["legal_basis"],
        "temporal_coverage": meta["temporal_coverage"],
        "spatial_coverage": meta["spatial_coverage"],
        "number_of_records": catalogue_count(n_rows, minimum),
        "number_of_unique_individuals": catalogue_count(n_ids, minimum),
        "health_category": list(meta["health_category"] or []),
        "coding_systems": list(meta["coding_systems"] or []),
        "keywords": list(meta["keywords"] or []),
        "variables": variables,
        "identifier_column": "pseudonymised patient id (never released)",
        "provenance": meta["provenance"],
        "quality_notes": meta["quality_notes"],
        "computations": registered_computations(),
        "disclosure_control": {
            "min_cell_count": minimum,
            "min_subset": node.policy.min_subset,
            "counts_rounded_to": 10,
        },
        "conforms_to": "HealthDCAT-AP (main dataset fields)",
        "issued": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
