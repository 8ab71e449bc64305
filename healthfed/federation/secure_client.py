"""The node side of a secure-aggregation round: what runs around Flower's ``secaggplus_mod``.

The ClientApp's ``train`` handler (:func:`make_secure_train`) runs behind Flower's
``secaggplus_mod`` and a healthfed mod in front of it (:func:`policy_mod`). The
handler answers the request with the node's usual ``Node.handle`` (permit, opt-outs,
policy, privacy guard, disclosure filter, audit) marked *secure*, flattens the
disclosed statistics and encodes them exactly (:mod:`healthfed.privacy.secagg`);
``secaggplus_mod`` masks them before anything leaves. A site refuses — its reason
goes back as the message's error and SecAgg+ treats it as a dropout — when its own
rows are under its thresholds (the disclosure filter still runs on the site's own
contribution), and the policy mod stops the protocol at the site when fewer than the
site's ``min_sites`` take part at setup, masking or unmasking.

Refusals are raised as ``SecureRefusal("site '<name>' refused: <reason>")`` (or
``"site '<name>' pending: ticket <t>"``); the aggregator
(:mod:`healthfed.federation.secure_server`) reads the site and reason back from that
text, since SecAgg+ passes nothing else of a dropout along.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import flwr.compat.common.recorddict_compat as compat
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)

from healthfed.errors import SecureRefusal
from healthfed.federation.messages import LAYOUT_METRIC, REQUEST_KEY, SITE_METRIC
from healthfed.federation.secure_vector import flatten_release
from healthfed.privacy import secagg

# The SecAgg+ parameters a site accepts: healthfed's exact encoding, nothing else.
EXPECTED_PROTOCOL = {
    Key.CLIPPING_RANGE: secagg.CLIPPING_RANGE,
    Key.TARGET_RANGE: secagg.QUANTIZATION_RANGE,
    Key.MOD_RANGE: secagg.MODULUS_RANGE,
    Key.MAX_WEIGHT: 1.0,
}


def make_secure_train(
    resolve_node: Callable[[Context], Any],
) -> Callable[[Message, Context], Message]:
    """The ClientApp ``train`` handler behind ``secaggplus_mod`` (masked-vector stage)."""

    def secure_train(msg: Message, context: Context) -> Message:
        node = resolve_node(context)
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        raw = fitins.config.get(REQUEST_KEY)
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
            # Not a refusal: the researcher is told the ticket and re-runs the same request.
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
            metrics={SITE_METRIC: node.name, LAYOUT_METRIC: json.dumps(layout)},
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
      sends no key shares (so the aggregator cannot unmask a sum over too few sites).
    """

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
        _check_stage(node.name, int(node.policy.min_sites), configs)
        return call_next(msg, context)

    return mod


def _check_stage(site: str, need: int, configs: Any) -> None:
    """Refuse (``SecureRefusal``) a SecAgg+ stage that breaks the site's protocol rules."""
    stage = configs.get(Key.STAGE)
    if stage == Stage.SETUP:
        for key, value in EXPECTED_PROTOCOL.items():
            if configs.get(key) != value:
                raise SecureRefusal(
                    f"site {site!r} refused: SecAgg+ {key} = {configs.get(key)!r}, "
                    f"healthfed's exact encoding needs {value!r}"
                )
        sampled = int(cast(int, configs.get(Key.SAMPLE_NUMBER, 0)))
        if sampled < need:
            raise SecureRefusal(
                f"site {site!r} refused: {sampled} site(s) in the secure round, the "
                f"site's policy needs at least min_sites = {need}"
            )
    elif stage == Stage.COLLECT_MASKED_VECTORS:
        holders = len(cast(list, configs.get(Key.SOURCE_LIST, []))) + 1
        if holders < need:
            raise SecureRefusal(
                f"site {site!r} refused: only {holders} site(s) left before masking, "
                f"the site's policy needs at least min_sites = {need}"
            )
    elif stage == Stage.UNMASK:
        active = len(cast(list, configs.get(Key.ACTIVE_NODE_ID_LIST, [])))
        if active < need:
            raise SecureRefusal(
                f"site {site!r} refused to unmask: {active} site(s) sent vectors, the "
                f"site's policy needs at least min_sites = {need}"
            )
