"""Iterative federated training for models without a closed form: FedAvg, FedProx, FedAdam.

A logistic model and a one-hidden-layer MLP, both written in numpy
(:mod:`.models`), are trained by the classic loop of federated optimisation
(McMahan et al. 2017): the hub sends the global weights, every site runs a few
epochs of mini-batch SGD on its own rows and releases only the *weight delta*
and its row count (:mod:`.node`, optionally differentially private:
:mod:`.dp_training`), and the hub turns the deltas into new global weights with
Flower's aggregation and FedAdam rules (:mod:`.hub`). The researcher's
estimators are in :mod:`.estimator`.

Every request carries the global weights as JSON lists of floats and a
:mod:`healthfed.compute.preprocess` spec, never code or pickles, so every site
builds the same design matrix. Importing this package registers ``local_train``
and ``feature_moments``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthfed._lazy import lazy_getattr
from healthfed.compute.fedavg.combine import (
    STRATEGIES,
    ServerOptimizer,
    combine_feature_moments,
    combine_local_train,
)
from healthfed.compute.fedavg.dp_training import (
    DP_LEVELS,
    dp_local_update,
    round_dp,
    validate_dp_training,
)
from healthfed.compute.fedavg.models import (
    MODEL_KINDS,
    init_weights,
    local_sgd,
    log_loss_sum,
    logits,
    loss_and_grad,
    n_weights,
    node_logits,
    per_example_grads,
    sigmoid,
)
from healthfed.compute.fedavg.node import (
    build_design,
    design_from_params,
    run_feature_moments,
    run_local_train,
    validate_feature_moments,
    validate_local_train,
)
from healthfed.compute.fedavg.params import (
    FEATURE_MOMENTS,
    LOCAL_TRAIN,
    _float_param,  # shared with healthfed.compute.evaluation's request checks
    _int_param,  # shared with healthfed.compute.evaluation's request checks
    validate_model_params,
)

if TYPE_CHECKING:
    from healthfed.compute.fedavg.estimator import FedAvgLogisticRegression, FederatedMLPClassifier

__all__ = [
    "DP_LEVELS",
    "FEATURE_MOMENTS",
    "LOCAL_TRAIN",
    "MODEL_KINDS",
    "STRATEGIES",
    "FedAvgLogisticRegression",
    "FederatedMLPClassifier",
    "ServerOptimizer",
    "_float_param",
    "_int_param",
    "build_design",
    "combine_feature_moments",
    "combine_local_train",
    "design_from_params",
    "dp_local_update",
    "init_weights",
    "local_sgd",
    "log_loss_sum",
    "logits",
    "loss_and_grad",
    "n_weights",
    "node_logits",
    "per_example_grads",
    "round_dp",
    "run_feature_moments",
    "run_local_train",
    "sigmoid",
    "validate_dp_training",
    "validate_feature_moments",
    "validate_local_train",
    "validate_model_params",
]


# The researcher's estimators (scikit-learn, scipy) are imported on first use (PEP 562):
# a node imports this package to register its computations and needs none of them.
_LAZY = {
    "FedAvgLogisticRegression": "healthfed.compute.fedavg.estimator",
    "FederatedMLPClassifier": "healthfed.compute.fedavg.estimator",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
