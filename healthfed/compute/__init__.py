"""Registered computations: importing this package registers them all.

``stats`` (table1, describe, crosstab, count) is always registered. The model
computations (``fedavg``, ``evaluation``) register themselves when their modules
are installed; a module that is absent is skipped, any other import error is raised.
"""

import importlib

from healthfed.compute import stats as stats  # registers the descriptive statistics
from healthfed.compute.registry import (
    Computation,
    get_computation,
    register,
    registered_computations,
)

for _name in ("preprocess", "glm", "fedavg", "evaluation", "survival"):
    try:
        importlib.import_module(f"healthfed.compute.{_name}")
    except ModuleNotFoundError as _exc:  # pragma: no cover - depends on the installation
        if _exc.name != f"healthfed.compute.{_name}":
            raise

__all__ = ["Computation", "get_computation", "register", "registered_computations"]

# Trust-report computations: subgroup metrics, dataset fingerprints, permutation importance.
from healthfed.compute import importance as importance  # noqa: E402
from healthfed.compute import subgroups as subgroups  # noqa: E402

importlib.import_module("healthfed.compute.dp_stats")  # DP statistics + threshold-path sum
