"""Differentially private FedAvg: the site's noisy update and the fit's budget split.

A site adds its own Gaussian noise (OpenDP measurements, zCDP accounting) and
charges its own ledger; the hub only splits the researcher's total ε over the
rounds (:func:`round_dp`). Everything a site releases is post-processing of
those measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.compute.deadline import check_deadline
from healthfed.compute.fedavg.models import clip_rows, local_sgd, per_example_grads, unflatten
from healthfed.compute.fedavg.params import LOCAL_TRAIN, _float_param
from healthfed.errors import BudgetExceeded, InvalidArgument, PolicyDenied
from healthfed.privacy.dp import DPBudget, DPRelease, noisy_count, noisy_vector, postprocess
from healthfed.privacy.ledger import Charge, rho_for_epsilon, zcdp_epsilon

__all__ = ["DP_LEVELS", "dp_local_update", "round_dp", "validate_dp_training"]

DP_LEVELS = ("sample", "client")
_DP_COUNT_SHARE = 0.05


def validate_dp_training(dp: Any, policy: Any) -> dict[str, Any] | None:
    """Check the ``dp`` block of ``local_train``: ``{"epsilon", "clip"?, "level"?}``.

    ``epsilon`` is this round's ε at the site's ``dp_delta`` (Gaussian mechanism,
    zCDP); ``clip`` the L2 clipping norm; ``level`` ``"sample"`` (default: each
    patient's gradient clipped, full-batch noisy gradient steps) or ``"client"``
    (the site's whole update clipped, noise on the update). The planned cost goes to
    ``dp["planned"]`` for the node's privacy guard.
    """
    if dp is None:
        return None
    if not isinstance(dp, dict):
        raise PolicyDenied("parameter 'dp' must be an object {epsilon, clip, level}")
    unknown = sorted(set(dp) - {"epsilon", "clip", "level", "planned", "delta"})
    if unknown:
        raise PolicyDenied(f"parameter 'dp': unknown field(s) {unknown}")
    eps = _float_param(dp, "epsilon", 0.0, 1e-6, 1e3)
    clip = _float_param(dp, "clip", 1.0, 1e-6, 1e6)
    level = dp.get("level", "sample")
    if level not in DP_LEVELS:
        raise PolicyDenied(f"parameter 'dp.level' must be one of {list(DP_LEVELS)}")
    delta = float(getattr(policy, "dp_delta", 1e-6))
    cap = float(getattr(policy, "dp_epsilon_per_request", 1.0))
    if eps > cap + 1e-12:
        raise BudgetExceeded(
            f"local_train: ε = {eps:g} per round requested; this site allows at most "
            f"ε = {cap:g} per request (dp_epsilon_per_request)"
        )
    rho = rho_for_epsilon(eps, delta)
    return {
        "epsilon": eps,
        "clip": clip,
        "level": level,
        "delta": delta,
        "planned": Charge.zcdp(rho, delta).to_dict(),
    }


def dp_local_update(
    kind: str,
    weights: Sequence[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    dp: dict[str, Any],
    epochs: int = 1,
    lr: float = 0.1,
    mu: float = 0.0,
    batch_size: int = 32,
    seed: int = 0,
) -> Any:
    """One site's differentially private update (a :class:`~healthfed.privacy.dp.DPRelease`).

    The round's ρ (from ``dp["epsilon"]`` at ``dp["delta"]``) is split: 5 % for a
    noisy row count (released as ``n_rows``, used for weighting and for the mean
    gradient), the rest for the update:

    * ``level="sample"``: ``epochs`` full-batch gradient steps; each step releases
      (inside the node) the sum of the per-patient gradients clipped to L2 norm
      ``clip`` plus Gaussian noise (OpenDP ``make_gaussian``, L2 sensitivity
      ``clip``), so one patient changes each noisy sum by at most ``clip``;
      steps compose in zCDP (ρ adds up).
    * ``level="client"``: the usual local SGD, then the site's whole update
      (``global + delta`` difference) clipped to norm ``clip`` and noised once. A
      patient can move a clipped update anywhere in the ball, so the sensitivity is
      ``2 * clip`` — costly, but honest.

    Everything released is post-processing of these OpenDP measurements.
    """
    delta = float(dp["delta"])
    rho = rho_for_epsilon(float(dp["epsilon"]), delta)
    clip = float(dp["clip"])
    n_noisy = _noisy_count_rho(len(y), _DP_COUNT_SHARE * rho, delta)
    n_hat = max(float(n_noisy.value), 1.0)
    rho_update = (1.0 - _DP_COUNT_SHARE) * rho
    start = [np.array(w, dtype=float) for w in weights]
    flat0 = np.concatenate([w.ravel() for w in start])
    parts = [n_noisy]
    if dp["level"] == "sample":
        cur = [w.copy() for w in start]
        rho_step = rho_update / max(int(epochs), 1)
        for _ in range(max(int(epochs), 1)):
            check_deadline()  # the node's wall-time limit
            G = clip_rows(per_example_grads(kind, cur, X, y), clip)
            g = noisy_vector(G.sum(axis=0), clip, rho_step, delta)
            parts.append(g)
            step = np.asarray(g.value) / n_hat
            flat = np.concatenate([w.ravel() for w in cur])
            if mu:
                step = step + mu * (flat - flat0)
            cur = unflatten(flat - lr * step, start)
        delta_vec = np.concatenate([w.ravel() for w in cur]) - flat0
        upd = postprocess(delta_vec, parts[1:])
    else:
        w1 = local_sgd(
            kind, start, X, y, epochs=epochs, lr=lr, batch_size=batch_size, mu=mu, seed=seed
        )
        d = np.concatenate([w.ravel() for w in w1]) - flat0
        d = d * min(1.0, clip / max(float(np.linalg.norm(d)), 1e-12))
        upd = noisy_vector(d, 2.0 * clip, rho_update, delta)
        parts.append(upd)
    return DPRelease(
        LOCAL_TRAIN,
        {"delta": upd, "n_rows": n_noisy},
        {"shapes": [list(np.shape(w)) for w in start], "level": dp["level"]},
    )


def _noisy_count_rho(n: int, rho: float, delta: float) -> Any:
    """A noisy row count released at zCDP cost ``rho``."""
    return noisy_count(int(n), DPBudget(zcdp_epsilon(rho, delta), "gaussian", delta))


def round_dp(dp: dict[str, Any], rounds: int) -> dict[str, Any]:
    """Split a training run's DP budget over its rounds (zCDP: ρ adds up per round).

    ``dp = {"epsilon": total ε for the whole fit, "delta"?: δ (default 1e-6),
    "clip"?: 1.0, "level"?: "sample"}`` -> the per-round ``dp`` block of
    ``local_train``: ``ε_round`` with ``rounds * ρ(ε_round) = ρ(ε_total)`` at δ.
    The sites' ledgers charge each round; the total stays within ``epsilon``
    (plus the sites' other releases under the permit).
    """
    if not isinstance(dp, dict) or "epsilon" not in dp:
        raise InvalidArgument("argument 'dp' must be {'epsilon': total ε, 'clip'?, 'level'?}")
    delta = float(dp.get("delta", 1e-6))
    rho = rho_for_epsilon(float(dp["epsilon"]), delta) / max(int(rounds), 1)
    out = {"epsilon": zcdp_epsilon(rho, delta) * (1 - 1e-9), "clip": float(dp.get("clip", 1.0))}
    if "level" in dp:
        out["level"] = dp["level"]
    return out
