"""The node's executor: answers a SuperNode's tasks with the *installed* ClientApp.

**Pushed code never runs at a hospital.** A stock SuperNode hands every message
to ``flwr-clientapp``, which unpacks the app bundle (FAB) the SuperLink pushed,
puts it first on ``sys.path`` and imports the ``clientapp`` it names: whoever
starts the run decides what code touches the data. Each SuperNode is started with
``--isolation process`` instead and served by this executor (started from the
hospital's installed healthfed, ``python -m healthfed.federation.deploy node-exec``).
The executor

1. refuses, with a Flower ``Error`` reply (``INVALID_FAB``), every task whose
   FAB is not byte-for-byte the bundle the installed healthfed builds
   (:func:`~healthfed.federation.deploy.bundle.app_fab`) — it compares SHA-256
   hashes; and
2. never unpacks or imports anything from the FAB even when it matches: it
   answers with ``healthfed.federation.client_app.app`` imported from the
   installed package.

A shared secret (``--superexec-auth-secret-file``) makes the SuperNode hand
tasks only to this executor. This module is imported in the executor process only
(its flwr runtime clients cost ~0.3 s), not by :mod:`healthfed.federation.deploy`.
"""

from __future__ import annotations

import importlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

from healthfed.errors import FederationError
from healthfed.federation.deploy.bundle import CLIENTAPP_REF, app_fab_hash, fab_refusal
from healthfed.federation.deploy.runtime_pipe import (
    PipeClosed,
    PipeRuntimeClient,
    pipe_heartbeat,
)
from healthfed.federation.flwr_pins import fast_object_pulls


def run_node_executor(
    runtime_api_address: str,
    root_certificates: str | None,
    auth_secret: bytes | None,
    *,
    poll_interval: float = 0.1,
    stop: threading.Event | None = None,
    clientapp_ref: str = CLIENTAPP_REF,
    idle_exit: float | None = None,
    wake_fd: int | None = None,
    done_fd: int | None = None,
    runtime_fd: int | None = None,
    node_file: str | None = None,
) -> None:
    """Serve a ``--isolation process`` SuperNode with the installed healthfed ClientApp.

    Parameters
    ----------
    runtime_api_address
        The SuperNode's Runtime API, ``host:port``.
    root_certificates
        CA file to verify the Runtime API's TLS certificate; ``None`` for plain HTTP.
    auth_secret
        The SuperNode's ``--superexec-auth-secret-file`` content, if it has one.
    poll_interval
        Longest wait between task polls when idle. Without ``wake_fd`` the wait starts
        at 20 ms after a task and doubles up to this; with it, the executor sleeps on
        the file descriptor and polls at once when its SuperNode writes to it.
    stop
        Set it to return (tests); otherwise runs until the process is signalled.
    clientapp_ref
        ``module:attribute`` of the ClientApp, imported from this environment (the
        hospital's installed healthfed; tests substitute an echo app). Whatever
        the pushed bundle names is ignored.
    idle_exit
        Return after this many seconds without a task (the worker a healthfed
        SuperNode spawns frees its memory; the next message spawns a new one).
    wake_fd
        Readable file descriptor (the worker's stdin): a byte means "a task is
        waiting", end-of-file means the SuperNode is gone and the executor returns.
    done_fd
        Writable file descriptor: a byte after each task's reply and output are stored,
        so the SuperNode pushes the reply at once (its own check is every 5-50 ms).
    runtime_fd
        A connected socket (the worker's end of the pair its healthfed SuperNode made):
        the Runtime API is asked over it
        (:mod:`~healthfed.federation.deploy.runtime_pipe`), not over HTTPS at
        ``runtime_api_address``.
    node_file
        The node TOML its SuperNode serves: before saying ready, the executor loads
        that node and checks its datasets (:meth:`~healthfed.node.runtime.Node.prewarm`),
        work every request would otherwise wait for; a dataset that fails is logged and
        refused later, it never stops the executor.
    """
    client_app = _load_clientapp(clientapp_ref)  # from the installed package, never the FAB
    if node_file is not None:
        _prewarm(node_file)
    # A task is visible while its SuperNode still pulls the message's objects: retry
    # those after 20 ms, not flwr's 1 s.
    fast_object_pulls(pull_task_input.__module__, "pull_and_inflate_object_from_tree")

    expected = app_fab_hash()
    client: Any
    task_client: Any
    set_token: Callable[[str | None], None]
    heartbeat_fn: Callable[[Any], Callable[[], bool]]
    if runtime_fd is not None:
        client = task_client = PipeRuntimeClient(socket.socket(fileno=runtime_fd))
        set_token = client.set_token
        heartbeat_fn = pipe_heartbeat
        transport = "the SuperNode's socket pair"
    else:
        client, task_client, set_token = _http_clients(
            runtime_api_address, root_certificates, auth_secret
        )
        heartbeat_fn = make_task_heartbeat_fn_http
        transport = f"HTTPS at {runtime_api_address}"
    print(
        f"healthfed node executor ready (Runtime API over {transport}); "
        f"accepting only FAB {expected}",
        flush=True,
    )
    last_task = time.monotonic()
    wait = POLL_MIN_S
    try:
        while stop is None or not stop.is_set():
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                set_token(res.token)
                try:
                    _run_task(task_client, client_app, expected, heartbeat_fn)
                finally:
                    set_token(None)
                    _signal(done_fd)
                last_task, wait = time.monotonic(), POLL_MIN_S
                continue
            if idle_exit is not None and time.monotonic() - last_task > idle_exit:
                print(f"node executor idle for {idle_exit:g}s; exiting", flush=True)
                return
            if wake_fd is not None:
                if not _wait_for_wake(wake_fd, poll_interval):
                    return  # the SuperNode is gone
            else:
                time.sleep(wait)
                wait = min(wait * 2, poll_interval)
    except PipeClosed:
        print("node executor: the SuperNode is gone; exiting", flush=True)
    finally:
        client.close()
        task_client.close()


POLL_MIN_S = 0.02


def _http_clients(
    runtime_api_address: str, root_certificates: str | None, auth_secret: bytes | None
) -> tuple[Any, Any, Callable[[str | None], None]]:
    """flwr's Runtime HTTPS clients: one to claim tasks, one (its token set per task)
    for each task's requests, and the function that sets that token."""
    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if auth_secret:
        interceptors.append(
            SuperExecAuthHttpInterceptor(
                master_secret=auth_secret,
                protected_methods={"/flwr.proto.Runtime/AcquireTask"},
            )
        )
    ca = _read(root_certificates)
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=root_certificates is None,
        root_certificates=ca,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )
    # One client for every task, its token set per task: one TLS connection (and one
    # SSL context) for the worker's life, not a handshake per message.
    token = TaskToken()
    task_client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=root_certificates is None,
        root_certificates=ca,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), token],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    return client, task_client, token.set


class TaskToken(RuntimeTokenHttpInterceptor):
    """flwr's task-token interceptor whose token changes with each task.

    flwr's ``flwr-clientapp`` builds a new Runtime client (a new TLS connection) per
    task because the token is fixed at construction; the long-lived worker sets it
    per task instead. ``intercept`` is flwr's own (pinned in ``flwr_pins``: it sends
    ``self._token``). Without a task the token is empty and the request is refused.
    """

    def __init__(self) -> None:
        super().__init__("unset")
        self._token = ""

    def set(self, token: str | None) -> None:
        """Use ``token`` for the requests that follow (``None``: no task)."""
        self._token = token or ""


def _signal(fd: int | None) -> None:
    """One byte on ``fd`` (a pipe to the SuperNode); a SuperNode gone is not an error."""
    if fd is None:
        return
    try:
        os.write(fd, b"\n")
    except OSError:
        pass


def _wait_for_wake(fd: int, timeout: float) -> bool:
    """Sleep until ``fd`` has data or ``timeout`` passes; ``False`` on end-of-file."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if ready:
        return os.read(fd, 4096) != b""
    return True


def _prewarm(node_file: str) -> None:
    """Load the node the ClientApp will serve and check its datasets (logged, never raised).

    The ClientApp resolves the same node through ``load_node``'s per-path cache, so the
    first request finds the datasets checked. A node file that cannot be read is
    reported here and again, as a refusal, on every request.
    """
    from healthfed.node.runtime import load_node

    started = time.perf_counter()
    try:
        unusable = load_node(node_file).prewarm()
    except Exception as exc:  # noqa: BLE001 - the worker still answers (with refusals)
        print(f"node prewarm failed: {type(exc).__name__}: {exc}", flush=True)
        return
    note = f"; not usable: {', '.join(unusable)}" if unusable else ""
    print(f"node datasets checked in {time.perf_counter() - started:.2f}s{note}", flush=True)


def _load_clientapp(ref: str) -> Any:
    """The ClientApp ``module:attribute`` names, imported from this environment."""
    module_name, _, attr = ref.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "app")
    if not isinstance(app, ClientApp):
        raise FederationError(f"{ref} is not a flwr ClientApp")
    return app


def _run_task(
    client: Any, client_app: Any, expected: str, heartbeat_fn: Callable[[Any], Any]
) -> None:
    """One message: check the bundle, answer with the installed ClientApp or refuse.

    ``client`` is the worker's Runtime client, holding this task's token.
    """
    heartbeat = HeartbeatSender(heartbeat_fn(client))
    heartbeat.start()
    message = context = reply = None
    sub_status, details = SubStatus.FAILED, "healthfed node executor failed"
    try:
        message, context, run, fab = pull_task_input(client)
        reason = fab_refusal(fab.content, expected)
        if reason is not None:
            print(
                f"REFUSED run {run.run_id} ({run.fab_id} {run.fab_version}): {reason}", flush=True
            )
            reply = Message(Error(code=ErrorCode.INVALID_FAB, reason=reason), reply_to=message)
            details = reason
        else:
            reply = client_app(message=message, context=context)
            sub_status, details = SubStatus.COMPLETED, ""
            print(f"answered run {run.run_id} message {message.metadata.message_id}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a node answers with an error, never crashes
        print(f"task failed: {type(exc).__name__}: {exc}", flush=True)
        details = f"{type(exc).__name__}: {exc}"
        if message is not None:
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                reply_to=message,
            )
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
            push_task_output(client, context, sub_status, details)
        finally:
            heartbeat.stop()


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
