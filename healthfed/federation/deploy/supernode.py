"""healthfed's SuperNode: flwr 1.42's own parts, driven by a short adaptive poll.

``flower-supernode`` (flwr 1.42, ``start_client_internal``) sleeps a hard-coded
**3 s** whenever a pull finds no message, and ``_push_messages`` checks for the
ClientApp's reply every 0.5 s: every deployed round costs seconds at each node
even when the work takes milliseconds. Nothing configures either.

``python -m healthfed.federation.deploy supernode <flower-supernode flags>`` runs
the same SuperNode with a different loop. Everything protocol-related is flwr's:
its argument parser and configuration (``_parse_supernode_lifespan_config``), its
Runtime API server (``_start_supernode_http_api``), its Fleet connection
(``_init_connection``, with flwr's heartbeats, retries and node authentication),
and its pull/store and push functions (``_pull_and_store_message``,
``_push_messages``). Only the waiting differs:

* idle, the node polls after 20 ms, each wait 1.5 times the last, up to
  ``--poll-max`` (0.5 s; about 3 polls a second when idle); a message resets it.
  The wait is a period: a pull that took that long already is followed by the next
  at once, so against healthfed's SuperLink, which holds an empty pull until the
  next push or 1 s (:mod:`~healthfed.federation.deploy.superlink_app`), a node has
  one pull open, answered as soon as the hub pushes, and asks once a second idle;
* after storing a message it wakes its data worker
  (:class:`~healthfed.federation.deploy.worker.DataWorker`) and checks for the reply
  every 5–50 ms, then pushes it with flwr's ``_push_messages``.

These are private flwr functions: :data:`healthfed.federation.flwr_pins.FINGERPRINTS`
holds the SHA-256 of the source of each one used or replaced, and
``tests/federation/test_flower_loop.py`` fails when the installed flwr differs,
naming what to re-read. Object pulls retry after 20 ms instead of 1 s
(:func:`~healthfed.federation.flwr_pins.fast_object_pulls`): with a fast poll the
node often pulls a message before the hub has pushed its objects.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import socket
import sys
import time
from collections.abc import Sequence
from logging import INFO, WARN
from typing import Any

from flwr.common.constant import ISOLATION_MODE_PROCESS
from flwr.supercore import log
from flwr.supercore.address import parse_address
from flwr.supercore.constant import HTTP_SERVER_SHUTDOWN_TIMEOUT
from flwr.supercore.exit import add_exit_handler, register_signal_handlers
from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.telemetry import EventType
from flwr.supernode.nodestate import NodeStateFactory

from healthfed.errors import FederationError
from healthfed.federation.deploy.bundle import CLIENTAPP_REF
from healthfed.federation.deploy.worker import WORKER_IDLE_S, DataWorker
from healthfed.federation.flwr_pins import fast_object_pulls
from healthfed.federation.messages import NODE_CONFIG_KEY

# The modules, not the same-named functions their packages re-export.
_cli = importlib.import_module("flwr.supernode.cli.flower_supernode")
_loop = importlib.import_module("flwr.supernode.start_client_internal")

POLL_MIN_S = 0.02  # first poll after a message, and the reply check's floor
POLL_GROWTH = 1.5  # idle polls at 20, 50, 95, 160, 265, 420 ms, ... then every POLL_MAX_S
POLL_MAX_S = 0.5  # idle back-off ceiling (flwr: a fixed 3 s)
REPLY_CHECK_MAX_S = 0.05  # reply check ceiling while the worker computes (flwr: 0.5 s)


def _own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--clientapp", default=CLIENTAPP_REF)
    parser.add_argument("--worker-idle", type=float, default=WORKER_IDLE_S)
    parser.add_argument("--poll-max", type=float, default=POLL_MAX_S)
    parser.add_argument("--no-prewarm", action="store_true")
    return parser


def _secret_file(rest: Sequence[str]) -> str | None:
    """The ``--superexec-auth-secret-file`` path (flwr keeps only its content)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--superexec-auth-secret-file", default=None)
    return parser.parse_known_args(list(rest))[0].superexec_auth_secret_file


def main(argv: Sequence[str]) -> None:
    """Run healthfed's SuperNode: flwr's parts, healthfed's loop and data worker.

    ``argv`` is ``flower-supernode``'s flags (``--isolation process`` required: the
    worker is the executor) plus ``--clientapp``, ``--worker-idle`` (seconds an idle
    worker lives, default 120), ``--poll-max`` (idle poll ceiling, default 0.5) and
    ``--no-prewarm`` (start the worker at the first message, not at start).
    """
    ours, rest = _own_parser().parse_known_args(list(argv))
    if ours.poll_max <= 0 or ours.worker_idle <= 0:
        raise FederationError("--poll-max and --worker-idle must be positive seconds")
    secret_file = _secret_file(rest)
    sys.argv = ["flower-supernode", *rest]  # flwr's parser reads sys.argv
    config = _cli._parse_supernode_lifespan_config()
    if config.isolation != ISOLATION_MODE_PROCESS:
        raise FederationError(
            "healthfed's SuperNode needs --isolation process: its own data worker is the executor"
        )
    fast_object_pulls(_loop.__name__)
    _wait_for_listener(config.server_address, SUPERLINK_WAIT_S)
    state_factory = NodeStateFactory(objectstore_factory=ObjectStoreFactory())
    http_server, http_thread = _cli._start_supernode_http_api(config, state_factory)

    def stop_http_server() -> None:
        http_server.should_exit = True
        http_thread.join(timeout=HTTP_SERVER_SHUTDOWN_TIMEOUT)
        if http_thread.is_alive():
            http_server.force_exit = True

    add_exit_handler(stop_http_server)
    host = f"[{config.host}]" if ":" in config.host else config.host
    worker = DataWorker(
        f"{host}:{config.port}",
        config.runtime_root_certificates_path,
        secret_file,
        ours.clientapp,
        ours.worker_idle,
        state=state_factory.state(),
        node_file=_node_file(config.node_config),
    )
    add_exit_handler(worker.stop)
    if not ours.no_prewarm:
        worker.ensure()  # the first round does not pay the worker's imports
    log(INFO, "healthfed SuperNode loop: poll %gs growing to %gs", POLL_MIN_S, ours.poll_max)
    _return_memory()
    run_loop(config, state_factory, worker, ours.poll_max)


def _node_file(node_config: Any) -> str | None:
    """The node TOML of ``--node-config`` (for the worker's dataset checks), if set."""
    path = (node_config or {}).get(NODE_CONFIG_KEY)
    return path if isinstance(path, str) and path else None


SUPERLINK_WAIT_S = 60.0  # at most this long for the SuperLink's port before flwr's retries


def _wait_for_listener(address: str, limit: float) -> None:
    """Return once ``host:port`` accepts a TCP connection (or after ``limit`` seconds).

    A local deployment starts its SuperNodes while the SuperLink still imports, so
    both start at once on a multi-core machine. flwr's connection retries back off
    from 1 s; polling the port every 20 ms first lets the node connect as soon as the
    SuperLink listens. Only the TCP port is probed; flwr then connects as always.
    """
    parsed = parse_address(address)
    if not parsed:
        return  # flwr's own parser reports it
    host, port, _ = parsed
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(POLL_MIN_S)


def run_loop(
    config: Any, state_factory: NodeStateFactory, worker: DataWorker, poll_max: float
) -> None:
    """flwr's connect/pull/push sequence (``start_client_internal``) with adaptive waits."""
    register_signal_handlers(
        event_type=EventType.RUN_SUPERNODE_LEAVE,
        exit_message="SuperNode terminated gracefully.",
        grpc_servers=[],
    )
    state = state_factory.state()
    store = state_factory.objectstore_factory.store()
    with _loop._init_connection(
        server_address=config.server_address,
        insecure=config.insecure,
        root_certificates=config.root_certificates,
        authentication_keys=config.authentication_keys,
        max_retries=config.max_retries,
        max_wait_time=config.max_wait_time,
    ) as conn:
        node_id, receive, send, get_run, get_fab, pull_object, push_object, confirm = conn
        state.set_node_id(node_id)
        log(INFO, "SuperNode ID: %s", node_id)
        wait = POLL_MIN_S
        while True:
            asked = time.monotonic()
            run_id = _loop._pull_and_store_message(
                state=state,
                object_store=store,
                node_config=config.node_config,
                receive=receive,
                get_run=get_run,
                get_fab=get_fab,
                pull_object=pull_object,
                confirm_message_received=confirm,
                trusted_entities=config.trusted_entities,
            )
            if run_id is None:
                worker.alive()  # reaps a worker that left when idle (no zombie)
                # a period, not a gap: a SuperLink that held the pull (healthfed's
                # answers an empty pull at the next push) is asked again at once
                time.sleep(max(0.0, wait - (time.monotonic() - asked)))
                if wait < poll_max <= wait * POLL_GROWTH:
                    _return_memory()  # just became idle: give the rounds' heap back
                wait = min(wait * POLL_GROWTH, poll_max)
                continue
            wait = POLL_MIN_S
            worker.wake()
            replies = _wait_for_replies(state, store, worker)
            _loop._push_messages(
                state=_Prefetched(state, replies),
                object_store=store,
                send=send,
                push_object=push_object,
            )


def _return_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    An idle node should hold only what it needs (target: 120 MB RSS); without this the
    memory freed after imports and rounds stays mapped. Elsewhere than glibc: a no-op.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _wait_for_replies(state: Any, store: Any, worker: DataWorker) -> Sequence[Any]:
    """The stored replies with all their objects: checked when the worker says it is
    done, and every 5-50 ms besides (flwr: every 0.5 s).

    The worker stores a reply's message before its objects; pushing it then would
    make flwr's ``_push_messages`` wait 0.5 s per missing object, and the hub, which
    already sees the message, back off 1 s before pulling its objects again. So the
    reply is handed over once every object is in the store. A worker that is gone
    while a task waits (it left when idle just then, or crashed) is started again.
    """
    wait = 0.005
    while not (replies := state.get_messages_legacy(is_reply=True)):
        if not worker.alive():
            log(WARN, "data worker not running while a task waits; starting it")
            worker.wake()
        worker.wait_done(wait)  # returns as soon as the worker says it is done
        wait = min(wait * 2, REPLY_CHECK_MAX_S)
    wait = 0.005
    while not all(_complete(store, reply) for reply in replies):
        worker.wait_done(wait)
        wait = min(wait * 2, REPLY_CHECK_MAX_S)
    return replies


def _complete(store: Any, message: Any) -> bool:
    """True when every object of ``message`` has its content in the node's store."""
    tree = store.get_object_tree(message.metadata.message_id)
    return all(store.get(t.object_id) not in (b"", None) for t in iterate_object_tree(tree))


class _Prefetched:
    """The node state, whose first reply query returns the replies already taken.

    ``get_messages_legacy`` marks what it returns as retrieved, so the replies
    :func:`_wait_for_replies` found are handed to flwr's ``_push_messages`` this way
    (it would otherwise sleep 0.5 s waiting for replies that are already taken).
    """

    def __init__(self, state: Any, replies: Sequence[Any]) -> None:
        self._state = state
        self._replies: Sequence[Any] | None = replies

    def get_messages_legacy(self, **kwargs: Any) -> Sequence[Any]:
        if self._replies is not None and kwargs.get("is_reply") is True:
            replies, self._replies = self._replies, None
            return replies
        return self._state.get_messages_legacy(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)
