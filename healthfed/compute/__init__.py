"""Registered computations: importing this package registers them all.

A node answers only computations registered here, so every module that registers
one is imported explicitly: a missing module is an installation error, never a
silently smaller set of computations.
"""

from healthfed.compute import dp_stats as dp_stats  # dp_* statistics, threshold-path sum
from healthfed.compute import evaluation as evaluation  # evaluate_binary
from healthfed.compute import fedavg as fedavg  # local_train, feature_moments
from healthfed.compute import glm as glm  # glm_step
from healthfed.compute import importance as importance  # permutation_importance, model_information
from healthfed.compute import preprocess as preprocess  # preprocess_moments
from healthfed.compute import stats as stats  # table1, describe, crosstab, count
from healthfed.compute import subgroups as subgroups  # subgroup_metrics, dataset_fingerprint
from healthfed.compute import survival as survival  # cox_*, km_counts, survival_cindex
from healthfed.compute.registry import (
    Computation,
    get_computation,
    register,
    registered_computations,
)

__all__ = ["Computation", "get_computation", "register", "registered_computations"]
