"""Exact federated generalised linear models: logistic, Gaussian and Poisson regression.

:mod:`.maths` holds the per-site derivatives, :mod:`.node` the registered
``glm_step`` computation, :mod:`.hub` the pooling and Newton arithmetic and
:mod:`.estimator` the researcher's :class:`FederatedGLM` /
:class:`FederatedLogisticRegression` (see its docstring for the rounds, the
disclosure rules and the penalty). Importing this package registers ``glm_step``.
"""

from healthfed.compute.glm.combine import combine_glm_step
from healthfed.compute.glm.estimator import FederatedGLM, FederatedLogisticRegression
from healthfed.compute.glm.maths import FAMILIES, glm_derivatives, glm_start, weighted_gram
from healthfed.compute.glm.node import GLM_STEP, run_glm_step, validate_glm_step

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
