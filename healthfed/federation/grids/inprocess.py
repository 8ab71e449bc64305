"""The embedded engine: Flower's ServerApp/ClientApp seam driven in one process.

``InProcessGrid`` implements Flower's ``Grid`` so ``collect`` and every other
aggregator routine run unchanged; each node's ``ClientApp`` is called directly
(no Ray, no network), in a thread per node so a slow node can time out and be
reported by name while the others are used.

The node threads share this process's cores. While a round runs, the BLAS
thread pools (OpenBLAS/MKL via ``threadpoolctl``) are limited to
``cores // nodes`` threads (at least 1), so four nodes' matrix products on two
cores do not start eight spinning BLAS threads; the previous limits are restored
when the round's replies are in.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from healthfed.errors import InvalidArgument
from healthfed.federation.client_app import make_client_app
from healthfed.federation.messages import SITE_CONFIG_KEY
from healthfed.node.runtime import Node

SUPERLINK_NODE_ID = 1  # Flower's node id of the SuperLink (the sender of every message)
_FIRST_NODE_ID = 1001


def _set_task_identity(run_id: int) -> None:
    """Outside Flower's runtimes a ``Message`` needs the task identity set."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    TaskIdentity.task_id = 0


_blas_lock = threading.Lock()
_blas_state: dict[str, Any] = {"depth": 0, "limit": None}


@contextlib.contextmanager
def _shared_blas_limit(threads: int) -> Any:
    """Process-wide BLAS thread limit held while any in-process round runs.

    The limit is global state, so overlapping rounds (two federations in two
    threads) share one: the first round in sets it, the last one out restores
    the previous limits.
    """
    with _blas_lock:
        if _blas_state["depth"] == 0:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - a scikit-learn dependency
                _blas_state["limit"] = None
            else:
                _blas_state["limit"] = threadpool_limits(limits=threads, user_api="blas")
        _blas_state["depth"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_state["depth"] -= 1
            if _blas_state["depth"] == 0 and _blas_state["limit"] is not None:
                _blas_state["limit"].restore_original_limits()
                _blas_state["limit"] = None


def _fixed_node(node: Node) -> Callable[[Context], Node]:
    """The ClientApp's node resolver for an in-process node: always ``node``."""

    def resolve(_context: Context) -> Node:
        return node

    return resolve


class InProcessGrid(Grid):
    """A Flower ``Grid`` whose nodes are ``Node`` objects in this process.

    Parameters
    ----------
    nodes
        The hospital nodes, each served by its own ClientApp and Context.
    max_workers
        Threads used to run the nodes concurrently.
    """

    def __init__(self, nodes: Sequence[Node], max_workers: int | None = None) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"node names must be unique, got {names}")
        self._run = Run.create_empty(run_id=int(uuid.uuid4().int % 2**62))
        _set_task_identity(self._run.run_id)
        self._nodes = {_FIRST_NODE_ID + i: node for i, node in enumerate(nodes)}
        self._apps: dict[int, ClientApp] = {
            nid: make_client_app(_fixed_node(node)) for nid, node in self._nodes.items()
        }
        self._contexts = {
            nid: Context(
                run_id=self._run.run_id,
                node_id=nid,
                node_config={SITE_CONFIG_KEY: node.name},
                state=RecordDict(),
                run_config={},
            )
            for nid, node in self._nodes.items()
        }
        self._pool = ThreadPoolExecutor(max_workers=max_workers or max(1, len(nodes)))
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def site_names(self) -> list[str]:
        return [node.name for node in self._nodes.values()]

    # --- flwr.serverapp.Grid -------------------------------------------------
    def set_run(self, run: Run) -> None:  # noqa: D102
        self._run = run

    @property
    def run(self) -> Run:  # noqa: D102
        return self._run

    def create_message(  # noqa: D102
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        _set_task_identity(self._run.run_id)
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        ids = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            if nid not in self._nodes:
                raise ValueError(f"no node with id {nid}")
            msg_id = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            with self._lock:
                self._pending[msg_id] = self._pool.submit(self._deliver, nid, msg)
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        out = []
        with self._lock:
            for msg_id in list(message_ids):
                future = self._pending.get(msg_id)
                if future is not None and future.done():
                    del self._pending[msg_id]
                    out.append(future.result())
        return out

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        with self._blas_limit():
            ids = list(self.push_messages(messages))
            with self._lock:
                futures = [self._pending[i] for i in ids]
            wait(futures, timeout=timeout)
        return self.pull_messages(ids)

    # --- internals --------------------------------------------------------------
    def _blas_limit(self) -> contextlib.AbstractContextManager[Any]:
        """Limit BLAS threads to this process's cores shared among the nodes (one round)."""
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        per_node = max(1, cores // max(1, len(self._nodes)))
        if per_node >= cores:
            return contextlib.nullcontext()
        return _shared_blas_limit(per_node)

    def _deliver(self, node_id: int, msg: Message) -> Message:
        # Through Flower's wire format both ways, as on a deployment: a node gets its
        # own copy (SecAgg+'s mod edits its message; the aggregator may send one content
        # to many nodes) and the aggregator gets only what serialises.
        msg = message_from_proto(message_to_proto(msg))
        try:
            reply = self._apps[node_id](msg, self._contexts[node_id])
        except Exception as exc:  # noqa: BLE001 - reported like Flower reports a ClientApp failure
            reply = Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
        reply = message_from_proto(message_to_proto(reply))
        reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return reply

    def close(self) -> None:
        """Stop the worker threads (a timed-out node's thread finishes in the background)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
