"""Grids that wrap another Grid: forward everything, change one behaviour.

:class:`PollingGrid` is how the deployed ServerApp sees Flower's Grid. Flower
1.42's deployed Grid sleeps a fixed 3 s between pulls, and its first pull comes
right after the push, before any node can have answered: every exchange would
cost at least 3 s on top of the nodes' own polling. ``PollingGrid`` pulls every
20-200 ms instead, so the aggregator code calls ``send_and_receive`` on any grid
alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run


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


class PollingGrid(DelegatingGrid):
    """Flower's deployed ``Grid`` whose ``send_and_receive`` polls every 20-200 ms."""

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``; pull until every reply is in or ``timeout`` seconds passed."""
        ids = set(self.inner.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        wait = 0.02
        while ids:
            got = list(self.inner.pull_messages(ids))
            replies.extend(got)
            ids -= {m.metadata.reply_to_message_id for m in got}
            if not ids or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(wait)
            wait = min(wait * 1.5, 0.2)
        return replies
