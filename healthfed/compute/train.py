"""Hub-side entry point for training: one name per model kind, one ``train`` call.

The estimators live next to their node computations (``glm``, ``fedavg``); this
module only maps the CLI's ``--model`` names onto them so the command line and
the Python API train exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from healthfed.compute.fedavg import FedAvgLogisticRegression, FederatedMLPClassifier
from healthfed.compute.glm import FederatedGLM, FederatedLogisticRegression
from healthfed.compute.preprocess import FederatedPreprocessor
from healthfed.errors import InvalidArgument

__all__ = ["MODEL_KINDS", "make_estimator", "train"]

MODEL_KINDS = ("logistic", "gaussian", "poisson", "fedavg", "fedprox", "fedadam", "mlp")


def make_estimator(
    kind: str,
    *,
    l2: float = 0.0,
    rounds: int = 30,
    seed: int = 0,
    secure_aggregation: bool = False,
) -> Any:
    """The unfitted estimator for ``kind`` (see ``MODEL_KINDS``).

    ``secure_aggregation`` pools every training round with Flower's SecAgg+.
    """
    sa = secure_aggregation
    if kind == "logistic":
        return FederatedLogisticRegression(l2=l2, secure_aggregation=sa)
    if kind in ("gaussian", "poisson"):
        return FederatedGLM(family=kind, l2=l2, secure_aggregation=sa)
    if kind in ("fedavg", "fedprox", "fedadam"):
        return FedAvgLogisticRegression(
            strategy=kind, rounds=rounds, random_state=seed, secure_aggregation=sa
        )
    if kind == "mlp":
        return FederatedMLPClassifier(rounds=rounds, random_state=seed, secure_aggregation=sa)
    raise InvalidArgument(f"--model must be one of {list(MODEL_KINDS)}, got {kind!r}")


def train(
    federation: Any,
    dataset: str,
    target: str,
    features: Sequence[str],
    kind: str = "logistic",
    *,
    l2: float = 0.0,
    rounds: int = 30,
    holdout: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
    secure_aggregation: bool = False,
) -> Any:
    """Fit a ``kind`` model of ``target`` on ``features`` across the federation.

    Exact GLMs take their own preprocessing round; iterative models are given the
    same federated preprocessing (one-hot levels agreed from the descriptors,
    federated standardisation, mean imputation plus indicator) so categorical
    features work for every kind.
    """
    estimator = make_estimator(
        kind, l2=l2, rounds=rounds, seed=seed, secure_aggregation=secure_aggregation
    )
    if kind in ("logistic", "gaussian", "poisson"):
        return estimator.fit(federation, dataset, target, list(features), holdout=holdout)
    spec = (
        FederatedPreprocessor(list(features))
        .fit(federation, dataset, target, holdout=holdout)
        .to_spec()
    )
    return estimator.fit(
        federation, dataset, target, preprocess=spec, holdout=holdout, progress=progress
    )
