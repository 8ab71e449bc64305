"""The ``subgroup_metrics`` and ``dataset_fingerprint`` computations a node answers, as registered.

Importing this module registers them (:mod:`healthfed.compute.registry`).
"""

from __future__ import annotations

from healthfed._lazy import imported_on_call
from healthfed.compute.registry import Computation, register
from healthfed.compute.subgroups.fingerprint import (
    DATASET_FINGERPRINT,
    combine_fingerprint,
    run_fingerprint,
    validate_fingerprint,
)
from healthfed.compute.subgroups.node import SUBGROUP_METRICS, run_subgroups, validate_subgroups

__all__: list[str] = []

register(
    Computation(
        name=SUBGROUP_METRICS,
        description="Confusion counts, Brier/score moments and score histograms of a binary "
        "classifier per group of sensitive attributes (sex, age band, ...), disclosure-filtered.",
        validate=validate_subgroups,
        run=run_subgroups,
        combine=imported_on_call("healthfed.compute.subgroups.result", "combine_subgroups"),
    )
)
register(
    Computation(
        name=DATASET_FINGERPRINT,
        description="Content hash (sha256) of the dataset and its row count, for provenance.",
        validate=validate_fingerprint,
        run=run_fingerprint,
        combine=combine_fingerprint,
    )
)
