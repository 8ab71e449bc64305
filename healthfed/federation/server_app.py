"""The hub side of the federation: a Flower ``ServerApp`` and its one round.

Every analysis is designed to need as few rounds as the maths allows: a
deployed round trip costs seconds, so e.g. a whole Table 1 is one round.
``collect`` sends one request to every node and gathers the replies; it is
used unchanged by the in-process engine (with our own Grid) and by the
deployed ServerApp below (with Flower's Grid).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from healthfed.errors import FederationError
from healthfed.federation.messages import QUERY, decode_reply, encode_request

REQUEST_KEY = "healthfed-request"
RESULT_KEY = "healthfed-result"
SESSION_KEY = "healthfed-session"
SESSION_IDLE_S = 900.0  # a session ServerApp with no request for this long finishes


def exchange(grid: Grid, messages: Iterable[Message], timeout: float | None) -> list[Message]:
    """``grid.send_and_receive``, but polling for replies every 20-200 ms.

    Flower 1.42's deployed Grid sleeps a fixed 3 s between pulls, and its first pull
    comes right after the push, before any node can have answered: every exchange
    would cost at least 3 s on top of the nodes' own polling. The in-process grid
    answers as soon as its node threads finish and is used as it is.
    """
    from healthfed.federation.inprocess import InProcessGrid

    if isinstance(grid, InProcessGrid):
        return list(grid.send_and_receive(messages, timeout=timeout))
    ids = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    wait = 0.02
    while ids:
        got = list(grid.pull_messages(ids))
        replies.extend(got)
        ids -= {m.metadata.reply_to_message_id for m in got}
        if not ids or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(wait)
        wait = min(wait * 1.5, 0.2)
    return replies


def serve_request(grid: Grid, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request over ``grid``: a plain round (:func:`collect`) or, when
    ``request["secure"]``, a SecAgg+ round (:func:`healthfed.federation.secure.secure_collect`)."""
    if request.get("secure"):
        from healthfed.federation.secure import secure_collect

        return secure_collect(grid, request, timeout)
    return collect(grid, request, timeout)


def collect(grid: Grid, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send ``request`` to every node in one round and gather what comes back.

    Returns
    -------
    dict
        ``replies`` (site name -> the node's reply), ``missing`` (names of
        ``request['expected_sites']`` that did not answer in ``timeout``
        seconds), ``errors`` (node -> Flower error reason, e.g. a refused app
        bundle), ``unanswered_nodes`` (count of nodes without a reply) and
        ``elapsed_s``.
    """
    envelope = {k: v for k, v in request.items() if k not in ("expected_sites", "timeout")}
    node_ids = list(grid.get_node_ids())
    if not node_ids:
        raise FederationError("no nodes are connected to the federation")
    started = time.perf_counter()
    messages = [
        Message(content=encode_request(envelope), dst_node_id=node_id, message_type=QUERY)
        for node_id in node_ids
    ]
    replies: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for message in exchange(grid, messages, timeout):
        if message.has_error():
            # e.g. a node refused the pushed app bundle; the site name is not in an error.
            errors[f"node-{message.metadata.src_node_id}"] = str(message.error.reason)
            continue
        reply = decode_reply(message.content)
        site = str(reply.get("site", f"node-{message.metadata.src_node_id}"))
        replies[site] = reply
    expected = request.get("expected_sites") or []
    return {
        "replies": replies,
        "missing": sorted(set(expected) - set(replies)),
        "errors": errors,
        "unanswered_nodes": len(node_ids) - len(replies),
        "elapsed_s": time.perf_counter() - started,
    }


app = ServerApp()


def serve_session(grid: Grid, folder: Path, idle_s: float = SESSION_IDLE_S) -> None:
    """Serve the request files dropped in ``folder/requests`` until ``folder/close`` exists.

    Each ``*.json`` request (written atomically by the hub's
    :class:`~healthfed.federation.deploy.FlowerSession`) is answered with
    :func:`serve_request` and its result written atomically to ``folder/results``
    under the same name; a failure becomes ``{"session_error": ...}`` there, so the
    waiting researcher gets an error instead of a timeout.
    """
    inbox, outbox = folder / "requests", folder / "results"
    last = time.monotonic()
    while not (folder / "close").exists():
        pending = sorted(inbox.glob("*.json"))
        if not pending:
            if time.monotonic() - last > idle_s:
                return
            time.sleep(0.01)
            continue
        for path in pending:
            try:
                request = json.loads(path.read_text(encoding="utf-8"))
                path.unlink()
                timeout = float(request.pop("timeout", 120.0))
                result = serve_request(grid, request, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - answered, never swallowed silently
                path.unlink(missing_ok=True)
                result = {"session_error": f"{type(exc).__name__}: {exc}"}
            tmp = outbox / f"{path.name}.tmp"
            tmp.write_text(json.dumps(result), encoding="utf-8")
            os.replace(tmp, outbox / path.name)
            last = time.monotonic()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Deployed entry point: request in the run config, result to a hub-side file.

    With ``healthfed-session`` set, the ServerApp instead serves request files from
    that folder until told to stop (:func:`serve_session`).
    """
    session = context.run_config.get(SESSION_KEY)
    if isinstance(session, str) and session:
        serve_session(grid, Path(session))
        return
    raw = context.run_config.get(REQUEST_KEY)
    out = context.run_config.get(RESULT_KEY)
    if not isinstance(raw, str) or not isinstance(out, str):
        raise FederationError(f"run config needs {REQUEST_KEY!r} and {RESULT_KEY!r}")
    request = json.loads(raw)
    timeout = float(request.pop("timeout", 120.0))
    result = serve_request(grid, request, timeout=timeout)
    # Wait until the SuperLink has seen every expected node before giving up is the
    # caller's job; here we only write atomically so the hub never reads half a file.
    tmp = Path(out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, out)
