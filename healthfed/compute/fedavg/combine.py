"""Hub side of FedAvg: pooling the sites' replies and the server update rules.

* ``fedavg`` and ``fedprox``: the weighted average of the sites' weights is
  Flower's own ``flwr.serverapp.strategy.strategy_utils.aggregate_arrayrecords``
  (the routine ``flwr.serverapp.strategy.FedAvg.aggregate_train`` uses),
  applied to ``ArrayRecord``\\s holding ``global + delta``. FedProx differs from
  FedAvg only on the client (Li et al. 2020; Flower's ``FedProx`` just sends
  ``proximal-mu`` in the config), so its proximal term is in our ``local_sgd``.
* ``fedadam``: the adaptive server step (Reddi et al. 2021) is Flower's
  ``flwr.serverapp.strategy.FedAdam.aggregate_train`` unchanged (including its
  bias-corrected step size). Flower's strategies expect reply ``Message``\\s
  from a ``Grid``; our rounds are ``Federation.round`` calls returning
  disclosure-filtered dicts, so a small subclass (``_RecordFedAdam``) feeds the
  strategy ``RecordDict``\\s instead of messages.

Flower is imported only when a server step runs (its import is slow and a node
never needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.compute.fedavg.models import unflatten
from healthfed.compute.preprocess import standardisation_spec
from healthfed.errors import InvalidArgument
from healthfed.privacy.model_release import array_from_reply

__all__ = [
    "STRATEGIES",
    "ServerOptimizer",
    "combine_feature_moments",
    "combine_local_train",
    "replies_to_deltas",
    "round_loss",
]

STRATEGIES = ("fedavg", "fedprox", "fedadam")


def combine_local_train(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict:
    """Hub side of a single ``fed.run('local_train')``: the row-weighted mean delta.

    Iterative training is driven by the estimators' own loop of
    ``Federation.round`` calls; this combine exists so one round can also be
    run through ``Federation.run``.
    """
    deltas, ns = replies_to_deltas(site_replies)
    total = sum(ns)
    mean = [
        np.sum([n * d[i] for d, n in zip(deltas, ns, strict=True)], axis=0) / total
        for i in range(len(deltas[0]))
    ]
    return {"delta": [m.tolist() for m in mean], "n_rows": total, "sites": sorted(site_replies)}


def round_loss(replies: dict[str, dict[str, Any]], ns: list[int]) -> float:
    """Pooled loss of the round's starting model (NaN with DP: sites do not release it)."""
    try:
        return sum(float(replies[s]["scalars"]["loss_sum"]) for s in replies) / sum(ns)
    except (KeyError, TypeError):
        return float("nan")


def replies_to_deltas(
    replies: dict[str, dict[str, Any]],
) -> tuple[list[list[np.ndarray]], list[int]]:
    deltas, ns = [], []
    for site in sorted(replies):
        reply = replies[site]
        if reply.get("format") == "healthfed.dp/1":
            shapes = reply["public"]["shapes"]
            vec = np.asarray(reply["values"]["delta"], dtype=float)
            like = [np.zeros(tuple(sh)) for sh in shapes]
            deltas.append(unflatten(vec, like))
            ns.append(max(int(reply["values"]["n_rows"]), 1))
            continue
        k = len(reply["arrays"])
        deltas.append([array_from_reply(reply, f"delta_{i}") for i in range(k)])
        ns.append(int(reply["n_rows"]))
    return deltas, ns


def combine_feature_moments(site_replies: dict[str, dict[str, Any]], params: dict) -> dict:
    """Pooled means and SDs, as a complete-case standardisation spec.

    The spec is :func:`~healthfed.compute.preprocess.standardisation_spec`'s:
    ``(x - mean) / sd`` per column (``sd`` 1 for a constant column), rows with a
    missing feature or outcome left out, as the moments were computed.
    """
    n = sum(int(r["n_rows"]) for r in site_replies.values())
    s = np.sum([array_from_reply(r, "sum") for r in site_replies.values()], axis=0)
    ss = np.sum([array_from_reply(r, "sumsq") for r in site_replies.values()], axis=0)
    mean = s / n
    var = np.maximum(ss / n - mean**2, 0.0) * n / max(n - 1, 1)
    sd = np.sqrt(var)
    return standardisation_spec(
        params["columns"],
        [float(m) for m in mean],
        [float(v) if v > 0 else 1.0 for v in sd],
        n_rows=n,
    )


def _records(
    global_w: Sequence[np.ndarray], deltas: list[list[np.ndarray]], ns: list[int]
) -> list[Any]:
    """Sites' updated weights as Flower ``RecordDict``\\s weighted by ``num-examples``."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict  # Flower: slow import

    out = []
    for d, n in zip(deltas, ns, strict=True):
        arrays = ArrayRecord(
            {
                f"w{i}": Array(np.asarray(g + di, dtype=float))
                for i, (g, di) in enumerate(zip(global_w, d, strict=True))
            }
        )
        out.append(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": n})}))
    return out


def _make_fedadam(eta: float, beta_1: float, beta_2: float, tau: float) -> Any:
    """Flower's FedAdam fed with ``RecordDict``\\s instead of reply messages."""
    from flwr.serverapp.strategy import FedAdam, FedAvg  # Flower: slow import
    from flwr.serverapp.strategy.strategy_utils import (
        aggregate_arrayrecords,
        aggregate_metricrecords,
    )

    class _RecordAverage(FedAvg):
        # Sits between FedOpt and FedAvg in the MRO: FedAdam.aggregate_train's
        # super() call lands here and gets the plain weighted average.
        def aggregate_train(self, server_round: int, replies: Any) -> Any:  # type: ignore[override]
            records = list(replies)
            return (
                aggregate_arrayrecords(records, self.weighted_by_key),
                aggregate_metricrecords(records, self.weighted_by_key),
            )

    class _RecordFedAdam(FedAdam, _RecordAverage):
        pass

    return _RecordFedAdam(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)


class ServerOptimizer:
    """Turns the sites' deltas into new global weights with one of the strategies.

    Parameters
    ----------
    strategy
        ``"fedavg"``, ``"fedprox"`` (same server rule as FedAvg) or ``"fedadam"``.
    server_lr, beta_1, beta_2, tau
        FedAdam's ``eta``, moment decays and adaptivity (Reddi et al. 2021).
    """

    def __init__(
        self,
        strategy: str = "fedavg",
        server_lr: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        if strategy not in STRATEGIES:
            raise InvalidArgument(f"argument 'strategy' must be one of {list(STRATEGIES)}")
        self.strategy = strategy
        self._flower = (
            _make_fedadam(server_lr, beta_1, beta_2, tau) if strategy == "fedadam" else None
        )
        self._round = 0

    def step(
        self, global_w: Sequence[np.ndarray], deltas: list[list[np.ndarray]], ns: list[int]
    ) -> list[np.ndarray]:
        from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords  # slow import

        self._round += 1
        records = _records(global_w, deltas, ns)
        if self._flower is None:
            agg = aggregate_arrayrecords(records, "num-examples")
        else:
            self._flower.current_arrays = {
                f"w{i}": np.asarray(g, dtype=float) for i, g in enumerate(global_w)
            }
            agg, _ = self._flower.aggregate_train(self._round, records)
        return [agg[f"w{i}"].numpy().astype(float) for i in range(len(global_w))]
