"""The ``evaluate_binary`` computation a node answers, as registered: name, node side, aggregator side.

Importing this module registers it (:mod:`healthfed.compute.registry`).
"""

from __future__ import annotations

from healthfed._lazy import imported_on_call
from healthfed.compute.evaluation.node import run_evaluate, validate_evaluate
from healthfed.compute.registry import Computation, register

__all__ = ["EVALUATE"]

EVALUATE = "evaluate_binary"

register(
    Computation(
        name=EVALUATE,
        description="Score histograms per label (merged to the cell rule), Brier sums and "
        "recalibration gradients/Hessians for evaluating a binary classifier.",
        validate=validate_evaluate,
        run=run_evaluate,
        combine=imported_on_call("healthfed.compute.evaluation.combine", "combine_evaluate"),
    )
)
