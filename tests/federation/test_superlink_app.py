"""healthfed's SuperLink: held pulls answer at the next push; idle middleware skipped.

The held pulls are tested on a stand-in link (an ASGI app answering like flwr's
pull handlers), the middleware on flwr's own SuperLink app: every request gets the
answer the stock stack gives. Real processes: ``test_flower_loop.py`` and
``test_flower_deploy.py`` run every deployed round through this SuperLink, and the
last tests here pair it with stock SuperNodes and healthfed's SuperNodes with the
stock SuperLink.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from flwr.proto.fleet_pb2 import PullMessagesResponse
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.proto.runtime_pb2 import PullAppMessagesResponse

from healthfed.federation.deploy import superlink_app as sa

PUSH_TO_NODES = "/v1/runtime/push-messages"
PUSH_TO_HUB = "/v1/fleet/push-messages"


class StandInLink:
    """Answers pulls like flwr: whatever messages were pushed, or none."""

    def __init__(self) -> None:
        self.queued: dict[str, int] = {sa.FLEET_PULL: 0, sa.RUNTIME_PULL: 0}
        self.pulls = 0
        self.status = 200
        self.on_pull: Any = None  # called inside the handler (a push racing the pull)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        body = b""
        if path in self.queued:
            self.pulls += 1
            response = (
                PullMessagesResponse() if path == sa.FLEET_PULL else PullAppMessagesResponse()
            )
            for _ in range(self.queued[path]):
                response.messages_list.append(ProtoMessage())
            self.queued[path] = 0
            body = response.SerializeToString()
            if self.on_pull is not None:  # after reading the state, before answering
                self.on_pull()
        elif path == PUSH_TO_NODES:
            self.queued[sa.FLEET_PULL] += 1
        elif path == PUSH_TO_HUB:
            self.queued[sa.RUNTIME_PULL] += 1
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _messages(path: str, response: httpx.Response) -> int:
    parsed = PullMessagesResponse() if path == sa.FLEET_PULL else PullAppMessagesResponse()
    parsed.ParseFromString(response.content)
    return len(parsed.messages_list)


async def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://link")


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.001)


@pytest.mark.parametrize(
    ("pull", "push"), [(sa.FLEET_PULL, PUSH_TO_NODES), (sa.RUNTIME_PULL, PUSH_TO_HUB)]
)
def test_an_empty_pull_is_answered_by_the_next_push(pull: str, push: str) -> None:
    link = StandInLink()
    app = sa.HeldPulls(link, hold={pull: 30.0})

    async def scenario() -> tuple[int, int]:
        async with await _client(app) as client:
            held = asyncio.create_task(client.post(pull, content=b""))
            await _until(lambda: link.pulls == 1)  # asked once, found nothing, waits
            assert not held.done()
            pushed = await client.post(push, content=b"")
            assert pushed.status_code == 200
            return _messages(pull, await held), link.pulls

    got, pulls = asyncio.run(scenario())
    assert (got, pulls) == (1, 2)  # answered with the pushed message, flwr's handler asked again


def test_a_push_for_the_other_side_does_not_answer_a_held_pull() -> None:
    link = StandInLink()
    app = sa.HeldPulls(link, hold={sa.FLEET_PULL: 0.2})

    async def scenario() -> int:
        async with await _client(app) as client:
            held = asyncio.create_task(client.post(sa.FLEET_PULL, content=b""))
            await _until(lambda: link.pulls == 1)
            await client.post(PUSH_TO_HUB, content=b"")  # a node's reply: not for nodes
            return _messages(sa.FLEET_PULL, await held)

    assert asyncio.run(scenario()) == 0
    assert link.pulls == 1  # never asked again: answered empty when the hold ran out


def test_a_pull_with_messages_or_an_error_is_answered_at_once() -> None:
    link = StandInLink()
    app = sa.HeldPulls(link, hold={sa.FLEET_PULL: 30.0})

    async def scenario() -> tuple[int, int]:
        async with await _client(app) as client:
            await client.post(PUSH_TO_NODES, content=b"")
            with_message = _messages(sa.FLEET_PULL, await client.post(sa.FLEET_PULL, content=b""))
            link.status = 401
            refused = (await client.post(sa.FLEET_PULL, content=b"")).status_code
            return with_message, refused

    assert asyncio.run(scenario()) == (1, 401)
    assert link.pulls == 2


def test_a_push_during_the_pull_handler_is_not_lost() -> None:
    link = StandInLink()
    app = sa.HeldPulls(link, hold={sa.FLEET_PULL: 30.0})

    def push_while_reading() -> None:  # the handler read the state, then a push completed
        link.on_pull = None
        link.queued[sa.FLEET_PULL] += 1
        app._changes_of(sa.FLEET_PULL).bump()

    link.on_pull = push_while_reading

    async def scenario() -> int:
        async with await _client(app) as client:
            return _messages(sa.FLEET_PULL, await client.post(sa.FLEET_PULL, content=b""))

    # first run answers empty (it read before the push), the version moved: asked again
    assert asyncio.run(scenario()) == 1
    assert link.pulls == 2


# --- flwr's own SuperLink app: stock middleware against healthfed's ----------------------
def _flwr_app(monkeypatch: pytest.MonkeyPatch, ours: bool) -> Any:
    import flwr.superlink.main as flwr_main

    stock = flwr_main._get_middleware
    if ours:
        monkeypatch.setattr(flwr_main, "_get_middleware", lambda: sa.healthfed_middleware(stock()))
        _inline_handlers(monkeypatch)
    return flwr_main.create_app()


def _inline_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sa.inline_data_handlers()``, undone after the test."""
    import importlib

    for name in sa.THREADPOOL_CALLERS:
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "run_in_threadpool", module.run_in_threadpool)
    sa.inline_data_handlers()
    sa.inline_data_handlers()  # twice is once


REQUESTS = [
    ("GET", "/health", None),
    ("POST", "/v1/control/get-login-details", "application/protobuf"),
    ("POST", "/v1/fleet/pull-messages", "text/plain"),
    ("POST", "/v1/fleet/pull-messages", "application/protobuf"),
    ("POST", "/v1/runtime/pull-messages", "application/protobuf"),
    ("POST", "/v1/nothing-here", None),
]


def test_every_request_gets_the_stock_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {}
    for ours in (False, True):
        with monkeypatch.context() as m:
            app = _flwr_app(m, ours)

            async def ask(app: Any = app) -> list[tuple[int, str | None, bytes]]:
                out = []
                async with await _client(app) as client:
                    for method, path, ctype in REQUESTS:
                        headers = {"content-type": ctype} if ctype else {}
                        r = await client.request(method, path, content=b"", headers=headers)
                        out.append((r.status_code, r.headers.get("cache-control"), r.content))
                return out

            answers[ours] = asyncio.run(ask())
    assert answers[True] == answers[False]
    login = answers[True][1]
    assert login[1] == "no-store"  # the Control-only middleware still acts on Control paths


def test_only_control_middleware_is_skipped_and_only_off_control_paths() -> None:
    from flwr.superlink.main import _get_middleware

    stock = _get_middleware()
    ours = sa.healthfed_middleware(stock)
    assert ours[0].cls is sa.InlineDataHandlers and ours[1].cls is sa.HeldPulls
    assert len(ours) == len(stock) + 2
    wrapped = {
        m.kwargs["middleware"].cls.__name__: m.kwargs["acts"] for m in ours if m.cls is sa.OnlyWhere
    }
    assert set(wrapped) == set(sa.ACTS_ON)
    kept = {m.cls.__name__ for m in ours[2:] if m.cls is not sa.OnlyWhere}
    assert "ProtobufTranslationMiddleware" in kept  # protobuf and error translation: always
    for name, acts in wrapped.items():
        assert not acts({"path": "/v1/runtime/pull-messages"}), name
        assert acts({"path": "/v1/control/list-runs"}) == name.startswith("Control"), name
    assert wrapped["NodeAuthMiddleware"]({"path": "/v1/fleet/pull-messages"})


def test_sync_handlers_run_inline_only_on_fleet_and_runtime_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from fastapi import Depends, FastAPI
    from starlette.middleware import Middleware

    _inline_handlers(monkeypatch)

    def dependency() -> int:  # a sync dependency: FastAPI's other thread hand-off
        return threading.get_ident()

    app = FastAPI(middleware=[Middleware(sa.InlineDataHandlers)])
    for path in ("/v1/fleet/where", "/v1/runtime/where", "/v1/control/where", "/where"):

        @app.post(path)
        def where(dep: int = Depends(dependency)) -> list[int]:
            return [dep, threading.get_ident()]

    async def ask() -> dict[str, tuple[list[int], int]]:
        loop_thread = threading.get_ident()
        out = {}
        async with await _client(app) as client:
            for prefix in ("/v1/fleet", "/v1/runtime", "/v1/control", ""):
                r = await client.post(f"{prefix}/where")
                out[prefix] = (r.json(), loop_thread)
        return out

    for prefix, (threads, loop_thread) in asyncio.run(ask()).items():
        inline = prefix in ("/v1/fleet", "/v1/runtime")
        assert (threads == [loop_thread, loop_thread]) == inline, prefix
        if not inline:
            assert loop_thread not in threads, prefix


def test_unknown_superlink_kind_is_refused(tmp_path: Path) -> None:
    from healthfed.errors import FederationError
    from healthfed.federation.deploy import LocalFlowerDeployment

    node = tmp_path / "n.toml"
    node.write_text('[node]\nname = "n"\n', encoding="utf-8")
    with pytest.raises(FederationError, match="superlink_kind"):
        LocalFlowerDeployment([node], superlink_kind="fast")


# --- real processes: each SuperLink with each SuperNode -----------------------------------
TESTS = Path(__file__).resolve().parent


@pytest.mark.flower
@pytest.mark.parametrize(
    ("superlink_kind", "node_kind"), [("stock", "healthfed"), ("healthfed", "stock")]
)
def test_each_superlink_serves_each_supernode(
    tmp_path: Path, superlink_kind: str, node_kind: str
) -> None:
    """A hospital's healthfed SuperNode with a stock hub, a stock SuperNode with ours."""
    from healthfed.federation.deploy import LocalFlowerDeployment
    from healthfed.federation.federation import Federation

    nodes = []
    for name in ("site_a", "site_b"):
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[node]\nname = "{name}"\n', encoding="utf-8")
        nodes.append(path)
    with LocalFlowerDeployment(
        nodes,
        work_dir=tmp_path / "work",
        clientapp_ref="_flower_echo_app:app",
        node_pythonpath=[TESTS],
        node_kind=node_kind,
        superlink_kind=superlink_kind,
    ) as dep:
        fed = Federation(dep.session_run, dep.site_names, "flower", timeout=60, node_timeout=30)
        for k in (1, 2):  # the second after the nodes' held or idle polls
            result = fed.round("echo", "none", {"k": k})
            assert sorted(result.contributed) == ["site_a", "site_b"]
        link = next(p for p in dep._procs if p.role == "superlink")
        argv = [str(a) for a in link.popen.args]  # type: ignore[union-attr]
    assert ("superlink" in argv) == (superlink_kind == "healthfed"), argv
