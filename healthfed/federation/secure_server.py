"""Secure aggregation rounds: Flower's SecAgg+ around healthfed's node request path.

A *secure* round pools one summable computation (``sum``, ``feature_moments``,
``glm_step``, ``local_train``; see :data:`healthfed.privacy.secagg.SECURE_SUMMABLE`)
so that the hub learns only the sum over the contributing sites:

* **Hub** (:func:`secure_collect`): Flower's ``SecAggPlusWorkflow`` runs its four
  stages (setup, share keys, collect masked vectors, unmask) over any ``Grid`` —
  ours in-process, Flower's when deployed. Its legacy ``Strategy`` hook is a small
  strategy of ours whose ``configure_fit`` puts the healthfed request (JSON) in
  every site's fit instructions and whose ``aggregate_fit`` receives only the
  unmasked sum.
* **Node** (:func:`make_secure_train`, :func:`policy_mod`): the ClientApp's
  ``train`` handler runs behind Flower's ``secaggplus_mod`` and a healthfed mod in
  front of it. The handler answers the request with the node's usual
  ``Node.handle`` (permit, opt-outs, policy, privacy guard, disclosure filter, audit)
  marked *secure*, flattens the disclosed statistics and encodes them exactly
  (:mod:`healthfed.privacy.secagg`); ``secaggplus_mod`` masks them before anything
  leaves. A site refuses — its reason goes back as the message's error and SecAgg+
  treats it as a dropout — when its own rows are under its thresholds (the
  disclosure filter still runs on the site's own contribution), and the policy mod
  stops the protocol at the site when fewer than the site's ``min_sites`` take part
  at setup, masking or unmasking. The hub then also refuses a sum over fewer than
  its minimum number of sites.

What the hub sees in the clear: which sites took part, each site's refusal
reason, and the layout of the vector (names and shapes, fixed by the request).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import numpy as np
from flwr.app import Context, Message, RecordDict

from healthfed.errors import FederationError, SecureRefusal
from healthfed.privacy import secagg

REQUEST_CONFIG_KEY = "healthfed-request"
SECURE_LABEL = "(secure aggregate)"
RECONSTRUCTION_THRESHOLD = 0.67  # share of a site's neighbours needed to unmask
_SITE_RE = re.compile(r"site '([^']+)'")
_PENDING_RE = re.compile(r"site '([^']+)' pending: ticket (\S+)$")


# =====================================================================================
# Flattening a disclosed result into one vector (node) and back (hub)
# =====================================================================================
def flatten_release(computation: str, disclosed: dict[str, Any]) -> tuple[dict, np.ndarray]:
    """``(layout, vector)`` of a node's disclosed statistics, weighted for summation.

    ``layout`` (names, shapes, public facts) is the same at every site for the same
    request and travels in the clear; ``vector`` is what SecAgg+ masks.
    """
    weighting = secagg.secure_weighting(computation)
    parts: list[np.ndarray] = []
    entries: list[list[Any]] = []
    if disclosed.get("format") == "healthfed.dp/1":
        values = dict(disclosed["values"])
        n = 1.0
        if weighting == "rows" and "n_rows" in values:
            # A noisy count can be < 1; the hub's clear path weights by max(n, 1) too.
            n = values["n_rows"] = max(float(values["n_rows"]), 1.0)
        for name in sorted(values):
            a = np.asarray(values[name], dtype=float)
            scale = 1.0 if name == "n_rows" else n
            entries.append(["values", name, list(a.shape)])
            parts.append((a * scale).ravel())
        layout = {
            "format": "healthfed.dp/1",
            "weighting": weighting,
            "entries": entries,
            "public": disclosed.get("public", {}),
            "computation": disclosed.get("computation", computation),
        }
    else:
        n = int(disclosed["n_rows"])
        w = float(n) if weighting == "rows" else 1.0
        entries.append(["n_rows", "n_rows", []])
        parts.append(np.array([float(n)]))
        for name in sorted(disclosed.get("arrays", {})):
            spec = disclosed["arrays"][name]
            entries.append(["arrays", name, list(spec["shape"])])
            parts.append(np.asarray(spec["data"], dtype=float) * w)
        for section in ("scalars", "counts"):
            for name in sorted(disclosed.get(section, {})):
                a = np.asarray(disclosed[section][name], dtype=float)
                entries.append([section, name, list(a.shape)])
                parts.append(a.ravel())
        layout = {"format": "model_statistics", "weighting": weighting, "entries": entries}
    vector = np.concatenate(parts) if parts else np.zeros(0)
    return layout, vector


def unflatten_total(layout: dict[str, Any], total: np.ndarray) -> dict[str, Any]:
    """The pooled statistics as one reply in the node's disclosed format.

    With ``rows`` weighting the arrays come back divided by the pooled row count
    (the row-weighted mean), so hub code written for per-site replies reads the
    secure aggregate as one site's reply.
    """
    pos, pieces = 0, {}
    for section, name, shape in layout["entries"]:
        size = int(np.prod(shape)) if shape else 1
        pieces[(section, name)] = total[pos : pos + size].reshape(shape)
        pos += size
    if pos != total.size:
        raise FederationError("secure aggregation: the sum does not match its layout")
    rows = layout["weighting"] == "rows"
    if layout["format"] == "healthfed.dp/1":
        n = float(pieces.get(("values", "n_rows"), np.array(1.0)))
        values = {}
        for (_, name), a in pieces.items():
            v = a if name == "n_rows" or not rows else a / max(n, 1.0)
            values[name] = v.tolist()
        return {
            "format": "healthfed.dp/1",
            "computation": layout.get("computation"),
            "values": values,
            "public": layout.get("public", {}),
        }
    n_rows = int(round(float(pieces[("n_rows", "n_rows")])))
    out: dict[str, Any] = {
        "kind": "model_statistics",
        "n_rows": n_rows,
        "arrays": {},
        "scalars": {},
        "counts": {},
    }
    for (section, name), a in pieces.items():
        if section == "arrays":
            data = a / n_rows if rows and n_rows else a
            out["arrays"][name] = {"shape": list(a.shape), "data": data.ravel().tolist()}
        elif section == "scalars":
            out["scalars"][name] = float(a)
        elif section == "counts":
            out["counts"][name] = [int(round(float(v))) for v in a.ravel()]
    return out


# =====================================================================================
# Node side
# =====================================================================================
def make_secure_train(
    resolve_node: Callable[[Context], Any],
) -> Callable[[Message, Context], Message]:
    """The ClientApp ``train`` handler behind ``secaggplus_mod`` (masked-vector stage)."""

    def secure_train(msg: Message, context: Context) -> Message:
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

        node = resolve_node(context)
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        raw = fitins.config.get(REQUEST_CONFIG_KEY)
        if not isinstance(raw, str):
            raise SecureRefusal(
                f"site {node.name!r} refused: the round carries no healthfed request"
            )
        try:
            request = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SecureRefusal(
                f"site {node.name!r} refused: request is not JSON ({exc})"
            ) from None
        reply = node.handle(request, secure=True)
        status = reply.get("status")
        if status == "pending":
            # Not a refusal: the hub reports the ticket and the same request is re-run later.
            raise SecureRefusal(f"site {node.name!r} pending: ticket {reply.get('ticket')}")
        if status != "ok":
            raise SecureRefusal(
                f"site {node.name!r} refused: {reply.get('reason', 'no reason given')}"
            )
        layout, vector = flatten_release(str(request.get("computation")), reply["result"])
        limbs = secagg.encode_vector(vector)
        fitres = FitRes(
            status=Status(code=Code.OK, message=""),
            parameters=ndarrays_to_parameters([limbs.astype(float)]),
            num_examples=1,  # every site's SecAgg+ weight is 1: a plain sum (see secagg)
            metrics={"site": node.name, "layout": json.dumps(layout)},
        )
        return Message(content=compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)

    return secure_train


def policy_mod(resolve_node: Callable[[Context], Any]) -> Callable[..., Message]:
    """A Flower mod in front of ``secaggplus_mod``: the site's rules for the protocol itself.

    * setup: the protocol parameters must be healthfed's exact encoding, and at
      least the site's ``min_sites`` sites must be sampled;
    * collect masked vectors: at least ``min_sites`` sites (this one included) must
      still hold key shares, else the site sends no vector;
    * unmask: at least ``min_sites`` sites must have sent vectors, else the site
      sends no key shares (so the hub cannot unmask a sum over too few sites).
    """
    from flwr.app.message_type import MessageType
    from flwr.common.secure_aggregation.secaggplus_constants import (
        RECORD_KEY_CONFIGS,
        Key,
        Stage,
    )

    expected = {
        Key.CLIPPING_RANGE: secagg.CLIPPING_RANGE,
        Key.TARGET_RANGE: secagg.QUANTIZATION_RANGE,
        Key.MOD_RANGE: secagg.MODULUS_RANGE,
        Key.MAX_WEIGHT: 1.0,
    }

    def mod(
        msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        node = resolve_node(context)
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is None:
            raise SecureRefusal(
                f"site {node.name!r} refused: it contributes training statistics only through "
                "secure aggregation (SecAgg+) rounds"
            )
        need = int(node.policy.min_sites)
        stage = configs.get(Key.STAGE)
        if stage == Stage.SETUP:
            for key, value in expected.items():
                if configs.get(key) != value:
                    raise SecureRefusal(
                        f"site {node.name!r} refused: SecAgg+ {key} = {configs.get(key)!r}, "
                        f"healthfed's exact encoding needs {value!r}"
                    )
            sampled = int(cast(int, configs.get(Key.SAMPLE_NUMBER, 0)))
            if sampled < need:
                raise SecureRefusal(
                    f"site {node.name!r} refused: {sampled} site(s) in the secure round, the "
                    f"site's policy needs at least min_sites = {need}"
                )
        elif stage == Stage.COLLECT_MASKED_VECTORS:
            holders = len(cast(list, configs.get(Key.SOURCE_LIST, []))) + 1
            if holders < need:
                raise SecureRefusal(
                    f"site {node.name!r} refused: only {holders} site(s) left before masking, "
                    f"the site's policy needs at least min_sites = {need}"
                )
        elif stage == Stage.UNMASK:
            active = len(cast(list, configs.get(Key.ACTIVE_NODE_ID_LIST, [])))
            if active < need:
                raise SecureRefusal(
                    f"site {node.name!r} refused to unmask: {active} site(s) sent vectors, the "
                    f"site's policy needs at least min_sites = {need}"
                )
        return call_next(msg, context)

    return mod


# =====================================================================================
# Hub side
# =====================================================================================
def _strategy(envelope: dict[str, Any]) -> Any:
    """The legacy ``Strategy`` SecAgg+ calls: hands out the request, keeps the sum."""
    from flwr.common import FitIns, parameters_to_ndarrays
    from flwr.server.strategy import Strategy

    class SecureSumStrategy(Strategy):
        def __init__(self) -> None:
            self.aggregate: list[np.ndarray] | None = None
            self.sites: list[str] = []
            self.layouts: set[str] = set()

        def initialize_parameters(self, client_manager: Any) -> Any:
            return None

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            ins = FitIns(parameters, {REQUEST_CONFIG_KEY: json.dumps(envelope)})
            return [(proxy, ins) for proxy in client_manager.all().values()]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            self.sites = sorted(str(res.metrics.get("site", "?")) for _, res in results)
            self.layouts = {str(res.metrics.get("layout", "")) for _, res in results}
            if results:
                self.aggregate = parameters_to_ndarrays(results[0][1].parameters)
            return None, {}

        def configure_evaluate(self, *args: Any) -> Any:
            return []

        def aggregate_evaluate(self, *args: Any) -> Any:
            return None, {}

        def evaluate(self, *args: Any) -> Any:
            return None

    return SecureSumStrategy()


def _recording_grid(grid: Any, errors: dict[int, str]) -> Any:
    """``grid`` with every error reply's reason recorded by node id (SecAgg+ drops them)."""
    from flwr.serverapp import Grid

    class RecordingGrid(Grid):
        def set_run(self, run: Any) -> None:
            grid.set_run(run)

        @property
        def run(self) -> Any:
            return grid.run

        def create_message(self, *args: Any, **kwargs: Any) -> Message:
            return grid.create_message(*args, **kwargs)

        def get_node_ids(self) -> Iterable[int]:
            return grid.get_node_ids()

        def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
            return grid.push_messages(messages)

        def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
            return self._record(grid.pull_messages(message_ids))

        def send_and_receive(
            self, messages: Iterable[Message], *, timeout: float | None = None
        ) -> Iterable[Message]:
            from healthfed.federation.server_app import exchange

            return self._record(exchange(grid, messages, timeout))

        @staticmethod
        def _record(replies: Iterable[Message]) -> list[Message]:
            out = list(replies)
            for m in out:
                if m.has_error():
                    errors.setdefault(m.metadata.src_node_id, str(m.error.reason))
            return out

    return RecordingGrid()


def secure_collect(grid: Any, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One SecAgg+ round of ``request`` over every node of ``grid``.

    Returns ``collect``'s dict plus ``secure``: ``{"result": the pooled statistics
    in the node's reply format, "sites": contributing sites}`` (``None`` when the
    protocol halted). Refusals come back under ``refused`` (site -> reason), sites
    holding the release for manual approval under ``pending`` (site -> ticket), other
    node failures under ``errors``.
    """
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.server import ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    envelope = {
        k: v for k, v in request.items() if k not in ("expected_sites", "timeout", "secure")
    }
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
    rgrid = _recording_grid(grid, errors_by_node)
    manager = SimpleClientManager()
    for nid in node_ids:
        manager.register(GridClientProxy(node_id=nid, grid=rgrid, run_id=grid.run.run_id))
    strategy = _strategy(envelope)
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
        workflow(rgrid, context)
    finally:
        flwr_logger.setLevel(level)

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
    secure = None
    if strategy.aggregate is not None and strategy.sites:
        if len(strategy.layouts) != 1:
            raise FederationError("secure aggregation: the sites' statistics differ in layout")
        layout = json.loads(next(iter(strategy.layouts)))
        total = secagg.decode_sum(strategy.aggregate[0], len(strategy.sites))
        secure = {"result": unflatten_total(layout, total), "sites": strategy.sites}
    answered = set(refused) | set(pending) | set(strategy.sites)
    expected = request.get("expected_sites") or []
    return {
        "replies": {},
        "secure": secure,
        "refused": refused,
        "pending": pending,
        "missing": sorted(set(expected) - answered),
        "errors": errors,
        "unanswered_nodes": len(node_ids) - len(answered),
        "elapsed_s": time.perf_counter() - started,
    }
