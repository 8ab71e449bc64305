"""Federated preprocessing: one shared, JSON design-matrix spec every model uses.

Every site must turn its rows into *the same* design matrix, otherwise a
federated model is fitted on different features at different sites. The spec
(:mod:`.spec`) fixes everything that would otherwise be decided from local data.
It is computed from pooled aggregates in **one round** (``preprocess_moments``:
:mod:`.node` is what a site releases, :mod:`.hub` builds the spec,
:class:`FederatedPreprocessor` runs the round), or written directly for a plain
standardisation (:func:`standardisation_spec`, e.g. FedAvg's ``feature_moments``
round). The node builds the design matrix from it (:func:`design_matrix`; cached
per process by :func:`cached_design`), the hub the same matrix from a pandas
frame (:func:`transform_frame`).

Importing this package registers ``preprocess_moments``.
"""

from healthfed.compute.preprocess.cache import (
    cached_design,
    clear_design_cache,
    data_fingerprint,
)
from healthfed.compute.preprocess.combine import build_spec, combine_moments
from healthfed.compute.preprocess.design import design_matrix, target_sql
from healthfed.compute.preprocess.estimator import FederatedPreprocessor
from healthfed.compute.preprocess.frame import transform_frame
from healthfed.compute.preprocess.node import PREPROCESS_MOMENTS, run_moments, validate_moments
from healthfed.compute.preprocess.spec import (
    MISSING_MODES,
    SPEC_KIND,
    SPEC_VERSION,
    check_spec,
    feature_names,
    n_features,
    standardisation_spec,
    term_units,
    validate_spec,
)

__all__ = [
    "MISSING_MODES",
    "PREPROCESS_MOMENTS",
    "SPEC_KIND",
    "SPEC_VERSION",
    "FederatedPreprocessor",
    "build_spec",
    "cached_design",
    "check_spec",
    "clear_design_cache",
    "combine_moments",
    "data_fingerprint",
    "design_matrix",
    "feature_names",
    "term_units",
    "n_features",
    "run_moments",
    "standardisation_spec",
    "target_sql",
    "transform_frame",
    "validate_moments",
    "validate_spec",
]
