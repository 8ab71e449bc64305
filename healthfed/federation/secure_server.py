"""The aggregator side of a secure-aggregation round: Flower's SecAgg+ over any Grid.

A *secure* round pools one summable computation (``sum``, ``feature_moments``,
``glm_step``, ``local_train``; see :data:`healthfed.privacy.secagg.SECURE_SUMMABLE`)
so that the aggregator learns only the sum over the contributing sites.
:func:`secure_collect` runs Flower's ``SecAggPlusWorkflow`` (setup, share keys,
collect masked vectors, unmask) over any ``Grid`` — the in-process one, or Flower's
when deployed. Its legacy ``Strategy`` hook is :class:`SecureSumStrategy`, whose
``configure_fit`` puts the healthfed request (JSON) in every site's fit instructions
and whose ``aggregate_fit`` receives only the unmasked sum. The sites' side is
:mod:`healthfed.federation.secure_client`; besides its own thresholds, a site stops
the protocol when fewer than its ``min_sites`` take part, and the researcher's
:class:`~healthfed.federation.federation.Federation` refuses a sum over fewer than
its minimum number of sites.

What the aggregator sees in the clear: which sites took part, each site's refusal
reason, and the layout of the vector (names and shapes, fixed by the request).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from healthfed.errors import FederationError, SecureRefusal
from healthfed.federation.grids.delegating import DelegatingGrid
from healthfed.federation.messages import (
    LAYOUT_METRIC,
    REQUEST_KEY,
    SECURE_FIELD,
    SITE_METRIC,
    node_envelope,
)
from healthfed.federation.secure_vector import unflatten_total
from healthfed.privacy import secagg

RECONSTRUCTION_THRESHOLD = 0.67  # share of a site's neighbours needed to unmask
# How a site's SecureRefusal reads (healthfed.federation.secure_client).
_SITE_RE = re.compile(r"site '([^']+)'")
_PENDING_RE = re.compile(r"site '([^']+)' pending: ticket (\S+)$")


class SecureSumStrategy(Strategy):
    """The legacy ``Strategy`` SecAgg+ calls: hands out the request, keeps the sum."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope
        self.aggregate: list[np.ndarray] | None = None
        self.sites: list[str] = []
        self.layouts: set[str] = set()

    def initialize_parameters(self, client_manager: Any) -> Any:
        return None

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
        ins = FitIns(parameters, {REQUEST_KEY: json.dumps(self.envelope)})
        return [(proxy, ins) for proxy in client_manager.all().values()]

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        self.sites = sorted(str(res.metrics.get(SITE_METRIC, "?")) for _, res in results)
        self.layouts = {str(res.metrics.get(LAYOUT_METRIC, "")) for _, res in results}
        if results:
            self.aggregate = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    def configure_evaluate(self, *args: Any) -> Any:
        return []

    def aggregate_evaluate(self, *args: Any) -> Any:
        return None, {}

    def evaluate(self, *args: Any) -> Any:
        return None


class ErrorRecordingGrid(DelegatingGrid):
    """``inner`` with every error reply's reason recorded by node id (SecAgg+ drops them)."""

    def __init__(self, inner: Grid, errors: dict[int, str]) -> None:
        super().__init__(inner)
        self.errors = errors

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._record(super().pull_messages(message_ids))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._record(super().send_and_receive(messages, timeout=timeout))

    def _record(self, replies: Iterable[Message]) -> list[Message]:
        out = list(replies)
        for m in out:
            if m.has_error():
                self.errors.setdefault(m.metadata.src_node_id, str(m.error.reason))
        return out


def secure_collect(grid: Grid, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One SecAgg+ round of ``request`` over every node of ``grid``.

    Returns ``collect``'s dict plus ``secure``: ``{"result": the pooled statistics
    in the node's reply format, "sites": contributing sites}`` (``None`` when the
    protocol halted). Refusals come back under ``refused`` (site -> reason), sites
    holding the release for manual approval under ``pending`` (site -> ticket), other
    node failures under ``errors``.
    """
    envelope = node_envelope(request, SECURE_FIELD)
    computation = str(envelope.get("computation"))
    secagg.secure_weighting(computation)  # refuse before any message goes out
    node_ids = list(grid.get_node_ids())
    if len(node_ids) < 2:
        raise FederationError(
            f"secure aggregation needs at least 2 connected nodes, got {len(node_ids)}"
        )
    if len(node_ids) > secagg.MAX_SITES:
        raise FederationError(f"secure aggregation handles at most {secagg.MAX_SITES} nodes")
    started = time.perf_counter()
    errors_by_node: dict[int, str] = {}
    strategy = SecureSumStrategy(envelope)
    _run_secagg(ErrorRecordingGrid(grid, errors_by_node), node_ids, strategy, timeout)
    refused, pending, errors = _sort_failures(errors_by_node)
    answered = set(refused) | set(pending) | set(strategy.sites)
    expected = request.get("expected_sites") or []
    return {
        "replies": {},
        "secure": _pooled(strategy),
        "refused": refused,
        "pending": pending,
        "missing": sorted(set(expected) - answered),
        "errors": errors,
        "unanswered_nodes": len(node_ids) - len(answered),
        "elapsed_s": time.perf_counter() - started,
    }


def _run_secagg(
    grid: Grid, node_ids: list[int], strategy: SecureSumStrategy, timeout: float
) -> None:
    """Flower's four SecAgg+ stages over ``node_ids``, ending in ``strategy.aggregate_fit``."""
    manager = SimpleClientManager()
    for nid in node_ids:
        manager.register(GridClientProxy(node_id=nid, grid=grid, run_id=grid.run.run_id))
    base = Context(
        run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
    )
    context = LegacyContext(
        base, config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=manager
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 1})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=RECONSTRUCTION_THRESHOLD,
        max_weight=1.0,
        clipping_range=secagg.CLIPPING_RANGE,
        quantization_range=secagg.QUANTIZATION_RANGE,
        modulus_range=secagg.MODULUS_RANGE,
        timeout=timeout,
    )
    # Flower logs each stage at INFO; keep its warnings and errors, not the chatter.
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(max(logging.WARNING, flwr_logger.getEffectiveLevel()))
    try:
        workflow(grid, context)
    finally:
        flwr_logger.setLevel(level)


def _sort_failures(
    errors_by_node: dict[int, str],
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(refused, pending, errors)``: the sites' own refusals and tickets, other failures."""
    refused: dict[str, str] = {}
    pending: dict[str, str] = {}
    errors: dict[str, str] = {}
    for nid, reason in sorted(errors_by_node.items()):
        text = reason.removeprefix(f"{SecureRefusal.__name__}: ")
        match = _SITE_RE.match(text)
        held = _PENDING_RE.match(text) if text != reason else None
        if held:
            pending[held.group(1)] = held.group(2)
        elif match and text != reason:
            refused.setdefault(match.group(1), text[match.end() :].removeprefix(" refused: "))
        else:
            errors[f"node-{nid}"] = reason
    return refused, pending, errors


def _pooled(strategy: SecureSumStrategy) -> dict[str, Any] | None:
    """The unmasked sum as one reply in the node's format, with its sites (``None``: halted)."""
    if strategy.aggregate is None or not strategy.sites:
        return None
    if len(strategy.layouts) != 1:
        raise FederationError("secure aggregation: the sites' statistics differ in layout")
    layout = json.loads(next(iter(strategy.layouts)))
    total = secagg.decode_sum(strategy.aggregate[0], len(strategy.sites))
    return {"result": unflatten_total(layout, total), "sites": strategy.sites}
