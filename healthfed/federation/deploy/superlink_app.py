"""healthfed's SuperLink: ``flower-superlink`` with held pulls and fewer idle layers.

``python -m healthfed.federation.deploy superlink <flower-superlink flags>`` runs
flwr 1.42's own SuperLink (its parser, lifespan, link state, routers, handlers and
uvicorn server: ``flower_superlink``) and changes only the ASGI middleware list that
``flwr.superlink.main.create_app`` builds its app with (``_get_middleware``):

* **Held pulls.** A SuperNode asks the Fleet API for messages, and the hub's ServerApp
  asks the Runtime API for replies, by polling: a message pushed just after a poll
  waits for the next one, and every empty poll is a full HTTPS request. Here an empty
  pull is *held* (:class:`HeldPulls`): it is answered as soon as a push could have
  changed it — the hub's ``/v1/runtime/push-messages`` for nodes' pulls, a node's
  ``/v1/fleet/push-messages`` for the hub's — by running flwr's handler again, or,
  at the latest, after ``hold`` seconds with the empty answer flwr gave. The answer is
  always one flwr's handler computed; only its timing changes. A held request is an
  ``asyncio`` wait, no thread. Pollers that pace themselves by *period* (healthfed's
  SuperNode and ``PollingGrid``: the wait after an empty pull counts the pull's own
  time) then ask again at once; flwr's stock SuperNode sleeps its 3 s as before.
* **Middleware only where it acts.** flwr stacks eight ``BaseHTTPMiddleware`` layers
  on every request (~0.13 ms CPU each, measured); four act only on Control API
  paths and the Fleet event log only with a logging plugin. For Fleet and Runtime
  requests those are skipped (:class:`OnlyWhere`): each one's ``dispatch`` passes
  such a request straight to ``call_next`` (checked below at start-up and pinned by
  source hash in :mod:`healthfed.federation.flwr_pins`). Control and every other
  path go through the whole stock stack; error translation, protobuf translation
  and node authentication run for every request as in flwr.
* **Fleet and Runtime handlers run on the event loop.** FastAPI runs every sync
  endpoint, and every sync dependency of one, in anyio's thread pool: a Runtime request
  made ~5 thread hand-offs (lock, notify, wake, GIL), a large share of the SuperLink's
  CPU per request. flwr's Fleet and Runtime handlers only read and write its in-memory
  state (no sleeps, no waits; their long waits are ``async``), so for those paths
  (:class:`InlineDataHandlers` marks them) FastAPI's ``run_in_threadpool`` calls the
  function directly (:func:`inline_data_handlers`). Control and other paths keep the
  thread pool. The answers are the same; only the thread differs.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any

from healthfed.errors import FederationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FLEET_PULL = "/v1/fleet/pull-messages"
RUNTIME_PULL = "/v1/runtime/pull-messages"
# which push may answer which held pull
WAKES = {"/v1/runtime/push-messages": FLEET_PULL, "/v1/fleet/push-messages": RUNTIME_PULL}
# longest hold: a node's idle pull every ~1 s; the hub's within its own poll ceiling
HOLD_S = {FLEET_PULL: 1.0, RUNTIME_PULL: 0.5}


class _Changes:
    """A counter of pushes that held pulls wait on (one per pull path)."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait_past(self, version: int, timeout: float) -> None:
        """Return once a push after ``version`` happened, or after ``timeout`` seconds."""
        if self.version != version or timeout <= 0:
            return
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass


class HeldPulls:
    """Pure ASGI middleware: an empty pull is answered at the next push, or after ``hold``.

    Parameters
    ----------
    app
        The rest of the stack (flwr's middleware, routers and handlers).
    hold
        Longest hold per pull path, seconds (:data:`HOLD_S`).
    """

    def __init__(self, app: ASGIApp, hold: dict[str, float] | None = None) -> None:
        self.app = app
        self.hold = dict(HOLD_S if hold is None else hold)
        self._changes: dict[str, _Changes] = {}
        self._responses = _response_types()

    def _changes_of(self, path: str) -> _Changes:
        # made on first use, inside uvicorn's event loop
        if path not in self._changes:
            self._changes[path] = _Changes()
        return self._changes[path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in self.hold and scope.get("method") == "POST":
            await self._held(path, scope, receive, send)
        elif path in WAKES and scope.get("method") == "POST":
            status: list[int] = []

            async def spy(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status.append(int(message["status"]))
                await send(message)

            try:
                await self.app(scope, receive, spy)
            finally:
                if status and status[0] < 400:
                    self._changes_of(WAKES[path]).bump()
        else:
            await self.app(scope, receive, send)

    async def _held(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending its request
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold[path]
        changes = self._changes_of(path)
        while True:
            version = changes.version  # before the handler reads the state: no lost push
            start, chunks = await _buffered(self.app, scope, body, receive)
            left = deadline - loop.time()
            if left <= 0 or not self._empty(path, start, chunks):
                break
            await changes.wait_past(version, left)
            if changes.version == version:
                break  # the hold ran out and nothing was pushed: flwr's empty answer
        await send(start)
        for chunk in chunks:
            await send(chunk)

    def _empty(self, path: str, start: Message, chunks: list[Message]) -> bool:
        """True for a successful answer without messages (anything else is sent at once)."""
        if int(start.get("status", 500)) != 200:
            return False
        response = self._responses[path]()
        try:
            response.ParseFromString(b"".join(c.get("body", b"") for c in chunks))
        except Exception:  # noqa: BLE001 - not what flwr sends: answer as it is
            return False
        return len(response.messages_list) == 0


def _response_types() -> dict[str, Any]:
    from flwr.proto.fleet_pb2 import PullMessagesResponse
    from flwr.proto.runtime_pb2 import PullAppMessagesResponse

    return {FLEET_PULL: PullMessagesResponse, RUNTIME_PULL: PullAppMessagesResponse}


async def _read_body(receive: Receive) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _buffered(
    app: ASGIApp, scope: Scope, body: bytes, receive: Receive
) -> tuple[Message, list[Message]]:
    """Run ``app`` on the request ``body``; its response start and body messages, unsent."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: only a disconnect comes

    out: list[Message] = []

    async def keep(message: Message) -> None:
        out.append(message)

    run_scope = dict(scope)  # each run its own request state (flwr's middleware writes it)
    if isinstance(run_scope.get("state"), dict):
        run_scope["state"] = dict(run_scope["state"])
    await app(run_scope, replay, keep)
    starts = [m for m in out if m["type"] == "http.response.start"]
    if not starts:
        raise FederationError(f"the SuperLink sent no response to {scope.get('path')}")
    return starts[0], [m for m in out if m["type"] == "http.response.body"]


# --------------------------------------------------------------------------------------
# middleware only where it acts
# --------------------------------------------------------------------------------------
CONTROL_PREFIX = "/v1/control/"
DATA_PREFIXES = ("/v1/fleet/", "/v1/runtime/")


class OnlyWhere:
    """Pure ASGI: run ``middleware`` for requests ``acts(scope)`` selects, skip it for others.

    Used only for a stock middleware whose ``dispatch`` hands the skipped requests to
    ``call_next`` unchanged, so the skip saves its ``BaseHTTPMiddleware`` cost and
    nothing else.
    """

    def __init__(self, app: ASGIApp, *, middleware: Any, acts: Callable[[Scope], bool]) -> None:
        cls, args, kwargs = middleware
        self.app = app
        self.full: ASGIApp = cls(app, *args, **kwargs)
        self.acts = acts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.acts(scope):
            await self.app(scope, receive, send)
        else:
            await self.full(scope, receive, send)


def _not_data_path(scope: Scope) -> bool:
    """Control (and any other) paths: everything but the Fleet and Runtime APIs."""
    return not str(scope.get("path", "")).startswith(DATA_PREFIXES)


def _fleet_with_log_plugin(scope: Scope) -> bool:
    """Fleet paths when the app has a Fleet event-log plugin (the middleware's own test)."""
    if not str(scope.get("path", "")).startswith("/v1/fleet/"):
        return False
    app = scope.get("app")
    return getattr(getattr(app, "state", None), "fleet_event_log_plugin", None) is not None


def _fleet_path(scope: Scope) -> bool:
    return str(scope.get("path", "")).startswith("/v1/fleet/")


# stock middleware class name -> the requests its dispatch acts on
ACTS_ON: dict[str, Callable[[Scope], bool]] = {
    "ControlSensitiveResponseMiddleware": _not_data_path,
    "ControlAuthenticationMiddleware": _not_data_path,
    "ControlLicenseMiddleware": _not_data_path,
    "ControlEventLogMiddleware": _not_data_path,
    "FleetEventLogMiddleware": _fleet_with_log_plugin,
    "NodeAuthMiddleware": _fleet_path,
}


# --------------------------------------------------------------------------------------
# Fleet and Runtime handlers without a thread hand-off
# --------------------------------------------------------------------------------------
_INLINE: ContextVar[bool] = ContextVar("healthfed_inline_handlers", default=False)
# the modules whose ``run_in_threadpool`` FastAPI calls for sync endpoints and dependencies
THREADPOOL_CALLERS = ("fastapi.routing", "fastapi.dependencies.utils")


class InlineDataHandlers:
    """Pure ASGI: mark Fleet and Runtime requests, whose sync handlers then run inline."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(DATA_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = _INLINE.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            _INLINE.reset(token)


def _inline_when_marked(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def run_in_threadpool(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if _INLINE.get():
            return func(*args, **kwargs)
        return await original(func, *args, **kwargs)

    run_in_threadpool.healthfed_inline = True  # type: ignore[attr-defined]
    return run_in_threadpool


def inline_data_handlers() -> None:
    """Make FastAPI call sync functions directly for requests :class:`InlineDataHandlers`
    marked (this process only; before the app's routes are built, since FastAPI binds
    ``run_in_threadpool`` into each route then)."""
    for name in THREADPOOL_CALLERS:
        module = importlib.import_module(name)
        original = getattr(module, "run_in_threadpool", None)
        if original is None:
            raise FederationError(
                f"{name} has no run_in_threadpool any more; re-read "
                "healthfed/federation/deploy/superlink_app.py"
            )
        if not getattr(original, "healthfed_inline", False):
            module.run_in_threadpool = _inline_when_marked(original)  # type: ignore[attr-defined]


def healthfed_middleware(stock: Sequence[Any]) -> list[Any]:
    """flwr's middleware list with :class:`InlineDataHandlers` and :class:`HeldPulls`
    outermost and :data:`ACTS_ON`'s layers wrapped in :class:`OnlyWhere`; every other
    layer as flwr has it."""
    from starlette.middleware import Middleware

    _check_control_routes()
    out = [Middleware(InlineDataHandlers), Middleware(HeldPulls)]
    for entry in stock:
        acts = ACTS_ON.get(getattr(entry.cls, "__name__", ""))
        out.append(entry if acts is None else Middleware(OnlyWhere, middleware=entry, acts=acts))
    return out


def _check_control_routes() -> None:
    """The Control middleware's special routes are all Control paths (else: refuse)."""
    control = importlib.import_module("flwr.superlink.routers.control.middlewares")
    for keys in ("CONTROL_SENSITIVE_ROUTE_KEYS", "CONTROL_AUTH_ROUTE_KEYS"):
        for _method, path in getattr(control, keys):
            if not path.startswith(CONTROL_PREFIX):
                raise FederationError(
                    f"flwr's {keys} has {path}, outside {CONTROL_PREFIX}: healthfed's "
                    "SuperLink would skip that middleware for it; re-read "
                    "healthfed/federation/deploy/superlink_app.py"
                )


def main(argv: Sequence[str]) -> None:
    """Run flwr's ``flower-superlink`` with ``argv`` and healthfed's middleware list."""
    flwr_main = importlib.import_module("flwr.superlink.main")
    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")
    stock = flwr_main._get_middleware  # type: ignore[attr-defined]
    flwr_main._get_middleware = lambda: healthfed_middleware(stock())  # type: ignore[attr-defined]
    inline_data_handlers()
    sys.argv = ["flower-superlink", *argv]  # flwr's parser reads sys.argv
    cli.flower_superlink()
