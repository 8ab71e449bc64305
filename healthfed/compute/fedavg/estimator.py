"""Researcher side: the FedAvg/FedProx/FedAdam estimators and their hub loop.

The hub sends the global weights, every site runs a few epochs of mini-batch
SGD on its own rows and releases only the *weight delta* and its row count, and
the hub turns the deltas into new global weights (:class:`ServerOptimizer`).
A site too small for the model refuses (the policy working); the round path
continues with the other sites if at least ``federation.min_sites`` remain
(raising ``TooFewSites`` otherwise) and ``history_`` records every refusal.
Flower's ``start()`` loop, node sampling and message construction are not used:
this loop owns the rounds because it must handle refusals by name and the
parameter/row policy.

Preprocessing: ``fit(preprocess=spec)`` takes any
:mod:`healthfed.compute.preprocess` spec (e.g. ``FederatedPreprocessor(...).to_spec()``);
``fit(features=...)`` builds a complete-case standardisation spec
(:func:`~healthfed.compute.preprocess.standardisation_spec`) from one
``feature_moments`` round of pooled sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.compute.fedavg.combine import (
    STRATEGIES,
    ServerOptimizer,
    combine_feature_moments,
    replies_to_deltas,
    round_loss,
)
from healthfed.compute.fedavg.dp_training import round_dp
from healthfed.compute.fedavg.models import init_weights, logits, n_weights, sigmoid
from healthfed.compute.fedavg.params import FEATURE_MOMENTS, LOCAL_TRAIN
from healthfed.compute.preprocess import n_features, transform_frame
from healthfed.data.sql import validate_holdout
from healthfed.errors import InvalidArgument

try:  # scikit-learn conventions (get_params/set_params/clone) when it is installed
    from sklearn.base import BaseEstimator, ClassifierMixin
except ImportError:  # pragma: no cover
    BaseEstimator = object  # type: ignore[assignment,misc]
    ClassifierMixin = object  # type: ignore[assignment,misc]

__all__ = ["FedAvgLogisticRegression", "FederatedMLPClassifier"]


class _FederatedBinaryClassifier(ClassifierMixin, BaseEstimator):
    """Shared hub loop of the federated binary classifiers (see subclasses)."""

    _kind = "logistic"

    def _hidden(self) -> int | None:
        return None

    def _secure(self) -> dict[str, Any]:
        """``round`` keywords: SecAgg+ rounds only when asked (plain federations need none)."""
        return {"secure": True} if getattr(self, "secure_aggregation", False) else {}

    def fit(
        self,
        federation: Any,
        dataset: str,
        target: str,
        features: Sequence[str] | None = None,
        *,
        positive: str | None = None,
        preprocess: dict[str, Any] | None = None,
        holdout: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> _FederatedBinaryClassifier:
        """Train across the federation's sites.

        Parameters
        ----------
        federation
            A ``healthfed`` ``Federation``; one ``round`` per training round.
        dataset, target
            Dataset name at the nodes and the binary/categorical outcome column.
        features
            Numeric (or binary) columns of a complete-case standardisation spec whose
            pooled means and SDs come from one extra ``feature_moments`` round.
            Ignored when ``preprocess`` is given.
        positive
            Level of ``target`` counted as 1 (default ``"1"`` for binary columns).
        preprocess
            A ready preprocessing spec (JSON object) from
            :mod:`healthfed.compute.preprocess`.
        holdout
            ``{"fraction", "seed"}``: train on the complementary ``"train"`` part of
            each site's deterministic per-patient split (evaluate on ``"test"``).
        progress
            Show a Rich progress bar over rounds.

        Returns
        -------
        self

        Raises
        ------
        InvalidArgument
            A bad ``strategy`` or ``dp``, or neither ``features`` nor ``preprocess``.
        TooFewSites
            A round had fewer contributing sites than the federation requires.
        """
        if self.strategy not in STRATEGIES:
            raise InvalidArgument(
                f"argument 'strategy' must be one of {list(STRATEGIES)}, got {self.strategy!r}"
            )
        self.history_: list[dict[str, Any]] = []
        hold = validate_holdout({**holdout, "part": "train"}) if holdout else None
        #: the split fitted on (``None``: every row); saved with the model artefact
        self.holdout_ = {k: v for k, v in hold.items() if k != "part"} if hold else None
        if preprocess is None:
            if not features:
                raise InvalidArgument("argument 'features': give feature columns or 'preprocess'")
            preprocess = self._moments_spec(federation, dataset, target, list(features), hold)
        self.preprocess_ = preprocess
        n_in = n_features(preprocess)
        weights = init_weights(self._kind, n_in, self._hidden() or 0, self.random_state)
        self.n_params_ = n_weights(weights)
        opt = ServerOptimizer(self.strategy, self.server_lr, self.beta_1, self.beta_2, self.tau)
        base = self._base_params(target, preprocess, positive, hold)
        bar = _progress(progress, self.rounds, f"{self.strategy} rounds")
        try:
            for r in range(1, self.rounds + 1):
                weights = self._train_round(federation, dataset, base, weights, opt, r)
                if bar is not None:
                    loss = self.history_[-1]["loss"]
                    bar[0].update(bar[1], advance=1, description=f"{self.strategy} loss {loss:.4f}")
        finally:
            if bar is not None:
                bar[0].stop()
        self.weights_ = weights
        self.classes_ = np.array([0, 1])
        self.sites_ = sorted({s for h in self.history_ if h["round"] > 0 for s in h["sites"]})
        self.n_features_in_ = n_in
        self.target_ = target
        self.positive_ = positive
        return self

    def _base_params(
        self,
        target: str,
        preprocess: dict[str, Any],
        positive: str | None,
        hold: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The ``local_train`` parameters every round shares (all but weights and seed)."""
        base: dict[str, Any] = {
            "model": self._kind,
            "target": target,
            "preprocess": preprocess,
            "epochs": self.local_epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "mu": self.mu if self.strategy == "fedprox" else 0.0,
        }
        if self._kind == "mlp":
            base["hidden"] = self._hidden()
        dp_cfg = getattr(self, "dp", None)
        if dp_cfg:
            base["dp"] = round_dp(dp_cfg, self.rounds)
        if positive is not None:
            base["positive"] = str(positive)
        if hold:
            base["holdout"] = hold
        return base

    def _train_round(
        self,
        federation: Any,
        dataset: str,
        base: dict[str, Any],
        weights: list[np.ndarray],
        opt: ServerOptimizer,
        r: int,
    ) -> list[np.ndarray]:
        """Round ``r``: the sites' deltas from ``weights``, recorded, and the server step."""
        params = {
            **base,
            "weights": [w.tolist() for w in weights],
            "seed": (self.random_state * 1_000_003 + r) % 2**31,
        }
        out = federation.round(LOCAL_TRAIN, dataset, params, **self._secure())
        deltas, ns = replies_to_deltas(out.replies)
        self.history_.append(
            {
                "round": r,
                "loss": round_loss(out.replies, ns),
                "sites": out.contributed,
                "n_rows": int(sum(ns)),
                "refused": dict(out.refused),
                "missing": list(out.missing),
            }
        )
        return opt.step(weights, deltas, ns)

    def _moments_spec(
        self,
        federation: Any,
        dataset: str,
        target: str,
        features: list[str],
        hold: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """One ``feature_moments`` round: the pooled standardisation spec (history round 0)."""
        params: dict[str, Any] = {"columns": features, "target": target}
        if hold:
            params["holdout"] = hold
        out = federation.round(FEATURE_MOMENTS, dataset, params, **self._secure())
        spec = combine_feature_moments(out.replies, params)
        self.history_.append(
            {
                "round": 0,
                "loss": float("nan"),
                "sites": out.contributed,
                "n_rows": sum(int(r["n_rows"]) for r in out.replies.values()),
                "refused": dict(out.refused),
                "missing": list(out.missing),
                "step": "feature_moments",
            }
        )
        return spec

    # --- prediction ---------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        """Logits for the rows of a pandas frame of raw columns."""
        from sklearn.utils.validation import check_is_fitted  # scikit-learn: when needed

        check_is_fitted(self, "weights_")
        return logits(self._kind, self.weights_, transform_frame(X, self.preprocess_))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[P(y=0), P(y=1)]`` for the rows of a pandas frame."""
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Class 0/1 at probability 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def to_model_spec(self) -> dict[str, Any]:
        """JSON description a node can rebuild (used by federated evaluation)."""
        from sklearn.utils.validation import check_is_fitted  # scikit-learn: when needed

        check_is_fitted(self, "weights_")
        spec: dict[str, Any] = {
            "model": self._kind,
            "weights": [np.asarray(w).tolist() for w in self.weights_],
            "preprocess": self.preprocess_,
        }
        if self._kind == "mlp":
            spec["hidden"] = self._hidden()
        return spec


class FedAvgLogisticRegression(_FederatedBinaryClassifier):
    """Logistic regression trained by FedAvg, FedProx or FedAdam.

    Use it when an iterative, gradient-based fit is wanted (e.g. to compare
    with the exact federated Newton GLM, or as the simplest FedAvg model).

    Parameters
    ----------
    strategy
        ``"fedavg"``, ``"fedprox"`` or ``"fedadam"``.
    rounds
        Federated rounds (each is one ``Federation.round``).
    local_epochs, lr, batch_size
        Local SGD at every site per round.
    mu
        FedProx proximal weight (used only with ``strategy="fedprox"``).
    server_lr, beta_1, beta_2, tau
        FedAdam server step size, moment decays and adaptivity.
    random_state
        Seeds initial weights and the sites' batch order.
    dp
        Differentially private training: ``{"epsilon": total ε of the fit, "clip"?: L2
        norm (1.0), "level"?: "sample" (per-patient clipping, default) or "client",
        "delta"?: 1e-6}``. The budget is split over ``rounds`` (zCDP) and every
        site adds its own Gaussian noise and charges its ledger; see
        ``dp_local_update``. ``history_`` losses are NaN (sites release no loss).
    secure_aggregation
        Pool every round (and the standardisation moments) with Flower's SecAgg+:
        the hub sees only the sum of the sites' row-weighted updates, never one
        site's update (``Federation.round(..., secure=True)``). Needed when a site's
        policy sets ``secure_aggregation_required``; combines with ``dp``.

    Attributes
    ----------
    weights_ : list of ndarray
        ``[coef (p,), intercept (1,)]`` on the standardised design matrix.
    coef_, intercept_ : ndarray
        The same, in scikit-learn's shapes ``(1, p)`` and ``(1,)``.
    history_ : list of dict
        Per round: pooled training loss of the round's starting model,
        contributing ``sites``, ``n_rows``, ``refused`` (site -> reason), ``missing``.
    preprocess_ : dict
        The preprocessing spec every site used.
    """

    _kind = "logistic"

    def __init__(
        self,
        strategy: str = "fedavg",
        rounds: int = 20,
        local_epochs: int = 1,
        lr: float = 0.1,
        batch_size: int = 32,
        mu: float = 0.01,
        server_lr: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        random_state: int = 0,
        dp: dict[str, Any] | None = None,
        secure_aggregation: bool = False,
    ) -> None:
        self.strategy = strategy
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.mu = mu
        self.server_lr = server_lr
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.tau = tau
        self.random_state = random_state
        self.dp = dp
        self.secure_aggregation = secure_aggregation

    @property
    def coef_(self) -> np.ndarray:
        return np.asarray(self.weights_[0]).reshape(1, -1)

    @property
    def intercept_(self) -> np.ndarray:
        return np.asarray(self.weights_[1]).reshape(1)


class FederatedMLPClassifier(_FederatedBinaryClassifier):
    """A one-hidden-layer (tanh) MLP for a binary outcome, trained by FedAvg/FedProx/FedAdam.

    Parameters
    ----------
    hidden
        Hidden units. The model has ``p*hidden + 2*hidden + 1`` weights; a site
        releases a delta only when that is at most ``max_param_ratio`` times its
        rows, so smaller sites are refused (reported in ``history_``).
    Other parameters as in ``FedAvgLogisticRegression``.

    Attributes
    ----------
    weights_ : list of ndarray
        ``[W1 (p, hidden), b1 (hidden,), w2 (hidden,), b2 (1,)]``.
    coefs_ : list of ndarray
        ``[W1, w2]`` as in scikit-learn's ``MLPClassifier``; ``intercepts_`` ``[b1, b2]``.
    history_, preprocess_
        As in ``FedAvgLogisticRegression``.
    """

    _kind = "mlp"

    def __init__(
        self,
        hidden: int = 16,
        strategy: str = "fedavg",
        rounds: int = 20,
        local_epochs: int = 1,
        lr: float = 0.1,
        batch_size: int = 32,
        mu: float = 0.01,
        server_lr: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        random_state: int = 0,
        dp: dict[str, Any] | None = None,
        secure_aggregation: bool = False,
    ) -> None:
        self.hidden = hidden
        self.strategy = strategy
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.mu = mu
        self.server_lr = server_lr
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.tau = tau
        self.random_state = random_state
        self.dp = dp
        self.secure_aggregation = secure_aggregation

    def _hidden(self) -> int | None:
        return int(self.hidden)

    @property
    def coefs_(self) -> list[np.ndarray]:
        return [self.weights_[0], self.weights_[2].reshape(-1, 1)]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        return [self.weights_[1], self.weights_[3]]


def _progress(enabled: bool, total: int, label: str) -> tuple[Any, Any] | None:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # when shown

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task
