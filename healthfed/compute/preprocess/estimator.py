"""Researcher side: :class:`FederatedPreprocessor`, the shared preprocessing fitted in one round."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.compute.preprocess.combine import build_spec
from healthfed.compute.preprocess.frame import transform_frame
from healthfed.compute.preprocess.node import PREPROCESS_MOMENTS
from healthfed.compute.preprocess.spec import MISSING_MODES, check_spec, feature_names
from healthfed.errors import InvalidArgument

__all__ = ["FederatedPreprocessor"]


class FederatedPreprocessor:
    """The shared preprocessing of a federated model, fitted in one round.

    Parameters
    ----------
    columns
        Feature columns, in design order.
    categorical
        Columns to one-hot (categorical-typed columns are one-hot whether listed
        or not; listing a non-categorical column is refused by the sites).
    missing
        ``"indicator"`` (pooled-mean imputation plus ``<col>_missing``) or
        ``"drop"`` (complete cases).
    standardize
        Z-score numeric/integer columns with the pooled mean and SD.

    Attributes
    ----------
    spec_ : dict
        The JSON spec every site applies.
    feature_names_ : list of str
        Design-matrix column names.
    sites_ : list of str
        Sites whose moments shaped the spec; ``refused_`` maps the others to their reason.
    """

    def __init__(
        self,
        columns: Sequence[str],
        categorical: Sequence[str] | None = None,
        missing: str = "indicator",
        standardize: bool = True,
    ) -> None:
        self.columns = columns
        self.categorical = categorical
        self.missing = missing
        self.standardize = standardize

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FederatedPreprocessor:
        """A preprocessor holding a ready spec (checked; no round, no contributing sites)."""
        spec = check_spec(spec)
        pre = cls([c["name"] for c in spec["columns"]])
        pre.spec_ = spec
        pre.feature_names_ = feature_names(spec)
        pre.sites_, pre.refused_, pre.missing_sites_ = [], {}, []
        return pre

    def fit(
        self,
        federation: Any,
        dataset: str,
        target: str | None = None,
        *,
        n_params: int | str = 0,
        holdout: dict[str, Any] | None = None,
    ) -> FederatedPreprocessor:
        """One ``preprocess_moments`` round; builds ``spec_``.

        Parameters
        ----------
        federation
            A ``Federation``.
        dataset, target
            Dataset name; rows with a missing ``target`` are left out, as in training.
        n_params
            Parameters of the model the spec is for (or ``"design"``: the
            intercept plus each site's design columns), so sites too small for
            the model decline now rather than after shaping the spec.
        holdout
            FedAvg-style ``{"fraction", "seed", "part"}`` row split.
        """
        if self.missing not in MISSING_MODES:
            raise InvalidArgument(f"argument 'missing' must be one of {list(MISSING_MODES)}")
        params: dict[str, Any] = {
            "columns": list(self.columns),
            "categorical": list(self.categorical or []),
            "missing": self.missing,
            "n_params": n_params,
        }
        if target is not None:
            params["target"] = target
        if holdout is not None:
            params["holdout"] = holdout
        out = federation.round(PREPROCESS_MOMENTS, dataset, params)
        self.spec_ = build_spec(out.replies, list(self.columns), self.missing, self.standardize)
        self.feature_names_ = feature_names(self.spec_)
        self.sites_ = sorted(out.replies)
        self.refused_ = dict(out.refused)
        self.missing_sites_ = list(out.missing)
        return self

    def transform(self, frame: Any) -> np.ndarray:
        """The design matrix (no intercept) of a pandas frame, as the sites build it."""
        if not hasattr(self, "spec_"):
            from sklearn.exceptions import NotFittedError  # scikit-learn: imported when needed

            raise NotFittedError("FederatedPreprocessor is not fitted; call fit() first")
        return transform_frame(frame, self.spec_)

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec (a copy)."""
        return json.loads(json.dumps(self.spec_))
