"""The SuperNode's Runtime API over a private socket pair to its own data worker.

flwr's SuperNode serves its Runtime API (tasks, messages, objects) over HTTPS, so
that a separate executor process can claim its tasks. healthfed's SuperNode spawns
that executor itself (:class:`~healthfed.federation.deploy.worker.DataWorker`), and
each message then cost ~14 HTTPS requests between the two processes (acquire,
task input, message, 3 objects, confirm, reply, 3 objects, output, heartbeat): a
TLS record, uvicorn, Starlette's middleware chain, FastAPI's routing and a thread
hand-off each, ~0.05 CPU-s per node and round, the largest share of a small round.

Here the same requests travel over a ``socketpair`` the SuperNode creates for the
worker it spawns, and are answered by **flwr's own Runtime handlers**
(``flwr.supernode.servicer.runtime.runtime_handlers``, and the shared
``acquire_task`` / ``send_task_heartbeat``) on the SuperNode's own state: the same
protobuf requests and responses, the same task tokens (a task's requests carry the
token ``AcquireTask`` returned, resolved by ``state.get_task_by_token`` as flwr's
``authenticate_task`` does), only no HTTP. The worker uses flwr's own
``pull_task_input`` / ``push_message`` / ``push_task_output`` with
:class:`PipeRuntimeClient` in place of flwr's ``RuntimeHttpClient``.

Why no SuperExec secret on ``AcquireTask``: the HTTPS port is reachable by any local
process, so flwr asks for the shared secret there; the socket pair exists only in
the SuperNode and the one child it started, and is never bound to a name or port.

Frames: a 4-byte big-endian length, then (request) a 1-byte method number, a
2-byte token length, the token and the request's protobuf bytes, or (response) a
status byte (0: the protobuf response follows; 1: an error message follows).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from logging import WARN
from typing import Any

from flwr.proto.message_pb2 import (
    ConfirmMessageReceivedRequest,
    ConfirmMessageReceivedResponse,
    PullObjectRequest,
    PullObjectResponse,
    PushObjectRequest,
    PushObjectResponse,
)
from flwr.proto.runtime_pb2 import (
    AcquireTaskRequest,
    AcquireTaskResponse,
    PullAppMessagesRequest,
    PullAppMessagesResponse,
    PullTaskInputRequest,
    PullTaskInputResponse,
    PushAppMessagesRequest,
    PushAppMessagesResponse,
    PushTaskOutputRequest,
    PushTaskOutputResponse,
    SendTaskHeartbeatRequest,
    SendTaskHeartbeatResponse,
)
from flwr.supercore import log

from healthfed.errors import FederationError

_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">BH")
_OK, _ERROR = 0, 1
MAX_FRAME_BYTES = 1 << 30  # a reply larger than 1 GiB is refused, not read

# (flwr's RuntimeHttpClient method name, request type, response type, handler name,
#  handler module: "node" = flwr.supernode's runtime_handlers, "core" = the shared ones)
_METHODS: tuple[tuple[str, type, type, str, str], ...] = (
    ("AcquireTask", AcquireTaskRequest, AcquireTaskResponse, "acquire_task", "node"),
    ("SendTaskHeartbeat", SendTaskHeartbeatRequest, SendTaskHeartbeatResponse,
     "send_task_heartbeat", "core"),
    ("PullTaskInput", PullTaskInputRequest, PullTaskInputResponse, "pull_task_input", "node"),
    ("PushTaskOutput", PushTaskOutputRequest, PushTaskOutputResponse, "push_task_output", "node"),
    ("PushObject", PushObjectRequest, PushObjectResponse, "push_object", "node"),
    ("PullObject", PullObjectRequest, PullObjectResponse, "pull_object", "node"),
    ("ConfirmMessageReceived", ConfirmMessageReceivedRequest, ConfirmMessageReceivedResponse,
     "confirm_message_received", "node"),
    ("PushMessages", PushAppMessagesRequest, PushAppMessagesResponse, "push_messages", "node"),
    ("PullMessages", PullAppMessagesRequest, PullAppMessagesResponse, "pull_messages", "node"),
)  # fmt: skip
_NUMBER = {name: i for i, (name, *_rest) in enumerate(_METHODS)}
_UNAUTHENTICATED = {"AcquireTask"}  # every other method needs a claimed task's token


class PipeClosed(FederationError):
    """The other end of the Runtime pipe is gone (the SuperNode or the worker exited)."""


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """``n`` bytes from ``sock``, or ``None`` when the peer closed it first."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv_frame(sock: socket.socket) -> bytes | None:
    head = _recv_exact(sock, _LEN.size)
    if head is None:
        return None
    (size,) = _LEN.unpack(head)
    if size > MAX_FRAME_BYTES:
        raise FederationError(f"Runtime pipe: a frame of {size} bytes exceeds the 1 GiB limit")
    return _recv_exact(sock, size)


def _send_frame(sock: socket.socket, *parts: bytes) -> None:
    body = b"".join(parts)
    sock.sendall(_LEN.pack(len(body)) + body)


class RuntimePipeServer:
    """Answers one worker's Runtime requests on ``sock`` with flwr's handlers and ``state``.

    ``serve`` runs until the worker closes its end (it exited); requests are answered
    one at a time in the order they come (the worker's heartbeat thread and main
    thread share one client that sends a request and reads its answer under a lock).
    """

    def __init__(self, state: Any, sock: socket.socket) -> None:
        from flwr.supercore.servicer.runtime import runtime_handlers as core
        from flwr.supernode.servicer.runtime import runtime_handlers as node

        modules = {"node": node, "core": core}
        self._state = state
        self._sock = sock
        self._handlers: list[tuple[str, type, Callable[..., Any]]] = [
            (name, req, getattr(modules[where], handler))
            for name, req, _res, handler, where in _METHODS
        ]

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (the SuperNode's loop goes on)."""
        thread = threading.Thread(target=self.serve, name="healthfed-runtime-pipe", daemon=True)
        thread.start()
        return thread

    def serve(self) -> None:
        try:
            while (frame := _recv_frame(self._sock)) is not None:
                _send_frame(self._sock, *self._answer(frame))
        except (OSError, FederationError) as exc:
            log(WARN, "Runtime pipe to the data worker closed: %s", exc)
        finally:
            self._sock.close()

    def _answer(self, frame: bytes) -> tuple[bytes, bytes]:
        try:
            number, token_len = _HEAD.unpack_from(frame)
            if number >= len(self._handlers):
                raise FederationError(f"unknown Runtime method number {number}")
            name, request_type, handler = self._handlers[number]
            start = _HEAD.size
            token = frame[start : start + token_len].decode("ascii")
            request = request_type.FromString(frame[start + token_len :])
            if name in _UNAUTHENTICATED:
                response = handler(request, self._state)
            else:
                task = self._state.get_task_by_token(token) if token else None
                if task is None:  # flwr's authenticate_task: no valid token, no answer
                    raise FederationError("Runtime task-token authentication failed")
                response = handler(request, self._state, task)
            return bytes([_OK]), response.SerializeToString()
        except FederationError as exc:
            return bytes([_ERROR]), str(exc).encode()
        except Exception as exc:  # noqa: BLE001 - the worker gets the reason, the node goes on
            return bytes([_ERROR]), f"{type(exc).__name__}: {exc}".encode()


class PipeRuntimeClient:
    """flwr's ``RuntimeHttpClient`` methods a ClientApp executor calls, over the pipe.

    One client serves the worker's whole life; :meth:`set_token` gives it the task
    token of the task at hand (``None``: no task), as the HTTPS client's token
    interceptor does. Thread-safe: the task heartbeat shares it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._token = b""

    def set_token(self, token: str | None) -> None:
        """Send ``token`` with the requests that follow (``None``: no task)."""
        self._token = (token or "").encode("ascii")

    def close(self) -> None:
        self._sock.close()

    def _call(self, name: str, request: Any, response_type: Any) -> Any:
        body = request.SerializeToString()
        with self._lock:
            try:
                _send_frame(
                    self._sock, _HEAD.pack(_NUMBER[name], len(self._token)), self._token, body
                )
                frame = _recv_frame(self._sock)
            except OSError as exc:  # EPIPE, ECONNRESET: the SuperNode exited
                raise PipeClosed(f"Runtime {name}: the SuperNode closed the pipe") from exc
        if frame is None:
            raise PipeClosed(f"Runtime {name}: the SuperNode closed the pipe")
        if frame[0] != _OK:
            raise FederationError(f"Runtime {name}: {frame[1:].decode(errors='replace')}")
        return response_type.FromString(frame[1:])


def _make_method(name: str, response_type: Any) -> Callable[[PipeRuntimeClient, Any], Any]:
    def method(self: PipeRuntimeClient, request: Any) -> Any:
        return self._call(name, request, response_type)

    method.__name__ = name
    method.__doc__ = f"flwr's Runtime ``{name}`` over the pipe."
    return method


for _name, _req, _res, *_ in _METHODS:
    setattr(PipeRuntimeClient, _name, _make_method(_name, _res))


def pipe_heartbeat(client: PipeRuntimeClient) -> Callable[[], bool]:
    """flwr's task heartbeat function for the pipe: ``False`` (retry) when it fails."""
    request = SendTaskHeartbeatRequest()

    def send() -> bool:
        try:
            return bool(client.SendTaskHeartbeat(request).success)  # type: ignore[attr-defined]
        except (OSError, FederationError):
            return False

    return send
