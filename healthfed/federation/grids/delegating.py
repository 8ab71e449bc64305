"""Grids that wrap another Grid: forward everything, change one behaviour.

:class:`PollingGrid` is how the deployed ServerApp sees Flower's Grid. Flower
1.42's deployed Grid sleeps a fixed 3 s between pulls, and its first pull comes
right after the push, before any node can have answered: every exchange would
cost at least 3 s on top of the nodes' own polling. ``PollingGrid`` pulls every
20-100 ms instead, so the aggregator code calls ``send_and_receive`` on any grid
alike. It also drops nodes that stay silent ``node_timeout`` seconds after the
first reply (a node killed mid-round), instead of waiting the whole round timeout.
A node killed after pushing its reply but before the reply's objects is dropped
the same way: a reply object unavailable for ``node_timeout`` seconds ends the
wait for it (Flower's own bound is 500 retries, minutes), and the error message
Flower's Grid makes for it in the hub's name is not passed on as a reply.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from healthfed.federation.flwr_pins import fast_object_pulls


class DelegatingGrid(Grid):
    """A ``Grid`` forwarding every call to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner

    def set_run(self, run: Run) -> None:  # noqa: D102
        self.inner.set_run(run)

    @property
    def run(self) -> Run:  # noqa: D102
        return self.inner.run

    def create_message(  # noqa: D102
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:  # noqa: D102
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self.inner.pull_messages(message_ids)

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)


HTTP_GRID_MODULE = "flwr.superlink.grid.http_grid"


class PollingGrid(DelegatingGrid):
    """Flower's deployed ``Grid``: ``send_and_receive`` polls every 20-100 ms and drops
    nodes still silent ``node_timeout`` seconds after the first reply.

    Parameters
    ----------
    inner
        The Grid Flower gives the ServerApp.
    node_timeout
        Seconds the others get once one node answered; ``None`` waits the full
        ``timeout`` of each exchange. Set per request by the ServerApp.
    """

    def __init__(self, inner: Grid, node_timeout: float | None = None) -> None:
        super().__init__(inner)
        self.node_timeout = node_timeout
        # Nodes dropped before: Flower lists a killed node as online for about a minute
        # (two missed 30 s heartbeats), so later rounds do not wait for it again.
        self.dropped: set[int] = set()

    @property
    def node_timeout(self) -> float | None:
        """Seconds the others get once one node answered; also how long one reply
        object may stay unavailable before that reply counts as not delivered."""
        return self._node_timeout

    @node_timeout.setter
    def node_timeout(self, seconds: float | None) -> None:
        self._node_timeout = seconds
        # replies' objects: retry after 20 ms, not 1 s; give up after node_timeout
        fast_object_pulls(HTTP_GRID_MODULE, stall_s=seconds)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``; pull until every reply is in, ``timeout`` seconds passed,
        or ``node_timeout`` seconds passed since the first reply. Nodes dropped in an
        earlier exchange get no such grace: once every other node has answered, the
        exchange ends."""
        messages = list(messages)
        undelivered: list[Message] = []  # replies whose objects never came
        pushed = list(self.inner.push_messages(messages))
        # flwr returns [] or None entries for messages it could not push
        node_of = {mid: m.metadata.dst_node_id for mid, m in zip(pushed, messages) if mid}  # noqa: B905
        ids = set(node_of)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        wait = 0.02
        while ids:
            asked = time.monotonic()
            got: list[Message] = []
            for m in self.inner.pull_messages(ids):
                (undelivered if _undelivered(m, node_of) else got).append(m)
            ids -= {m.metadata.reply_to_message_id for m in undelivered}
            if got and not replies and self.node_timeout is not None:
                first = time.monotonic() + self.node_timeout
                deadline = first if deadline is None else min(deadline, first)
            replies.extend(got)
            ids -= {m.metadata.reply_to_message_id for m in got}
            if not ids or (deadline is not None and time.monotonic() >= deadline):
                break
            if self.node_timeout is not None and {node_of[i] for i in ids} <= self.dropped:
                break
            # a period, not a gap: a pull the SuperLink held (until a node's push) counts
            time.sleep(max(0.0, wait - (time.monotonic() - asked)))
            wait = min(wait * 1.5, 0.1)
        silent = {node_of[i] for i in ids} | {
            node_of[m.metadata.reply_to_message_id] for m in undelivered
        }
        self.dropped = (self.dropped | silent) - (set(node_of.values()) - silent)
        return replies


def _undelivered(message: Message, node_of: dict[str, int]) -> bool:
    """Whether ``message`` is the error Flower's Grid makes *in the hub's name* for a
    reply whose objects never arrived (``MESSAGE_UNAVAILABLE``, sent from the hub's
    own node id): the node did not deliver, it did not answer with an error."""
    if not message.has_error() or message.error.code != ErrorCode.MESSAGE_UNAVAILABLE:
        return False
    node = node_of.get(message.metadata.reply_to_message_id)
    return node is not None and node != message.metadata.src_node_id
