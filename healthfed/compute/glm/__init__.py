"""Exact federated generalised linear models: logistic, Gaussian and Poisson regression.

:mod:`.maths` holds the per-site derivatives, :mod:`.node` the registered
``glm_step`` computation, :mod:`.hub` the pooling and Newton arithmetic and
:mod:`.estimator` the researcher's :class:`FederatedGLM` /
:class:`FederatedLogisticRegression` (see its docstring for the rounds, the
disclosure rules and the penalty). Importing this package registers ``glm_step``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthfed._lazy import lazy_getattr
from healthfed.compute.glm.combine import combine_glm_step
from healthfed.compute.glm.maths import FAMILIES, glm_derivatives, glm_start, weighted_gram
from healthfed.compute.glm.node import GLM_STEP, run_glm_step, validate_glm_step

if TYPE_CHECKING:
    from healthfed.compute.glm.estimator import FederatedGLM, FederatedLogisticRegression

__all__ = [
    "FAMILIES",
    "GLM_STEP",
    "FederatedGLM",
    "FederatedLogisticRegression",
    "combine_glm_step",
    "glm_derivatives",
    "glm_start",
    "run_glm_step",
    "validate_glm_step",
    "weighted_gram",
]


# The researcher's estimators (scikit-learn, scipy) are imported on first use (PEP 562):
# a node imports this package to register its computations and needs none of them.
_LAZY = {
    "FederatedGLM": "healthfed.compute.glm.estimator",
    "FederatedLogisticRegression": "healthfed.compute.glm.estimator",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
