"""The parameter names each model, survival and trust computation accepts.

A node refuses a request that gives a parameter its computation does not know
*before* the computation's ``validate`` runs (:meth:`Computation.check_params
<healthfed.compute.registry.Computation.check_params>`), naming the parameter,
so a misspelt option is an error rather than a silently ignored default.

A computation declares its names in its own ``Computation(params=...)`` (the
statistics in :mod:`healthfed.compute.stats` and :mod:`healthfed.compute.dp_stats`
do); for the others the names are listed here, read off each ``validate``
function: every top-level key it reads or explicitly allows. The registry fills
them in when the computation is registered.
"""

from __future__ import annotations

__all__ = ["ACCEPTED_PARAMS"]

# A model as evaluate_binary's validate reads it (also the base of the trust computations).
_EVALUATE = frozenset(
    {"model", "target", "positive", "holdout", "stage", "candidates", "threshold", "bins"}
)
# The survival computations' common part (_validate_common in healthfed.compute.survival).
_SURVIVAL = frozenset({"duration", "event", "features", "subset"})

ACCEPTED_PARAMS: dict[str, frozenset[str]] = {
    # healthfed.compute.fedavg
    "local_train": frozenset(
        {
            "model",
            "target",
            "positive",
            "preprocess",
            "hidden",
            "weights",
            "holdout",
            "epochs",
            "batch_size",
            "seed",
            "lr",
            "mu",
            "dp",
        }
    ),
    "feature_moments": frozenset({"columns", "target", "holdout"}),
    # healthfed.compute.glm
    "glm_step": frozenset({"family", "preprocess", "target", "positive", "beta", "holdout"}),
    # healthfed.compute.preprocess
    "preprocess_moments": frozenset(
        {"columns", "categorical", "target", "missing", "n_params", "holdout", "positive"}
    ),
    # healthfed.compute.evaluation
    "evaluate_binary": _EVALUATE,
    # healthfed.compute.subgroups
    "subgroup_metrics": _EVALUATE | {"attributes"},
    "dataset_fingerprint": frozenset(),
    # healthfed.compute.importance
    "permutation_importance": _EVALUATE | {"n_repeats", "seed", "part"},
    "model_information": _EVALUATE,
    # healthfed.compute.survival
    "cox_site_newton": _SURVIVAL | {"coef", "center"},
    "cox_risk_sets": _SURVIVAL | {"coef", "center", "time_grid"},
    "km_counts": frozenset({"duration", "event", "subset", "time_grid", "alpha"}),
    "survival_cindex": _SURVIVAL | {"coef"},
}
