"""The aggregator side of the federation: a Flower ``ServerApp`` and its one round.

Every analysis is designed to need as few rounds as the maths allows: a
deployed round trip costs seconds, so e.g. a whole Table 1 is one round.
``collect`` sends one request to every node and gathers the replies; it is
used unchanged by the in-process engine (with its own Grid) and by the
deployed ServerApp below (with Flower's Grid, seen through
:class:`~healthfed.federation.grids.delegating.PollingGrid`). The ServerApp runs
where the SuperLink runs: at the access body, on its machine.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from healthfed.errors import FederationError
from healthfed.federation.grids.delegating import PollingGrid
from healthfed.federation.messages import (
    DEFAULT_ROUND_TIMEOUT_S,
    NODE_TIMEOUT_FIELD,
    QUERY,
    REQUEST_KEY,
    RESULT_KEY,
    SECURE_FIELD,
    SESSION_CLOSE,
    SESSION_ERROR,
    SESSION_KEY,
    SESSION_REQUESTS,
    SESSION_RESULTS,
    SESSION_SERVING,
    TIMEOUT_FIELD,
    decode_reply,
    encode_request,
    node_envelope,
)
from healthfed.federation.secure_server import secure_collect

SESSION_IDLE_S = 900.0  # a session ServerApp with no request for this long finishes


def serve_request(grid: Grid, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request over ``grid``: a plain round (:func:`collect`) or, when
    ``request["secure"]``, a SecAgg+ round
    (:func:`~healthfed.federation.secure_server.secure_collect`)."""
    if isinstance(grid, PollingGrid):  # per request: how long stragglers get
        node_timeout = request.get(NODE_TIMEOUT_FIELD)
        grid.node_timeout = None if node_timeout is None else float(node_timeout)
    if request.get(SECURE_FIELD):
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
    envelope = node_envelope(request)
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
    for message in grid.send_and_receive(messages, timeout=timeout):
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


def serve_session(grid: Grid, folder: Path, idle_s: float = SESSION_IDLE_S) -> None:
    """Serve the request files dropped in ``folder/requests`` until ``folder/close`` exists.

    Each ``*.json`` request (written atomically by the researcher's
    :class:`~healthfed.federation.grids.session.ServerAppSession`) is answered with
    :func:`serve_request` and its result written atomically to ``folder/results``
    under the same name; a failure becomes ``{"session_error": ...}`` there, so the
    waiting researcher gets an error instead of a timeout. Returns after ``idle_s``
    seconds without a request. It writes ``folder/serving`` first, so whoever started
    the run can tell a ServerApp still starting from one that waits for requests.
    """
    inbox, outbox = folder / SESSION_REQUESTS, folder / SESSION_RESULTS
    (folder / SESSION_SERVING).write_text("", encoding="utf-8")
    last = time.monotonic()
    while not (folder / SESSION_CLOSE).exists():
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
                timeout = float(request.pop(TIMEOUT_FIELD, DEFAULT_ROUND_TIMEOUT_S))
                result = serve_request(grid, request, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - answered, never swallowed silently
                path.unlink(missing_ok=True)
                result = {SESSION_ERROR: f"{type(exc).__name__}: {exc}"}
            _write_atomically(outbox / path.name, result, outbox / f"{path.name}.tmp")
            last = time.monotonic()


def _write_atomically(path: Path, result: dict[str, Any], tmp: Path) -> None:
    """Write ``result`` as JSON through ``tmp``, so the reader never sees half a file."""
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, path)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Deployed entry point: request in the run config, result to a file on this machine.

    Flower's Grid is used through :class:`PollingGrid`. With ``healthfed-session``
    set, the ServerApp instead serves request files from that folder until told to
    stop (:func:`serve_session`).
    """
    grid = PollingGrid(grid)
    session = context.run_config.get(SESSION_KEY)
    if isinstance(session, str) and session:
        serve_session(grid, Path(session))
        return
    raw = context.run_config.get(REQUEST_KEY)
    out = context.run_config.get(RESULT_KEY)
    if not isinstance(raw, str) or not isinstance(out, str):
        raise FederationError(f"run config needs {REQUEST_KEY!r} and {RESULT_KEY!r}")
    request = json.loads(raw)
    timeout = float(request.pop(TIMEOUT_FIELD, DEFAULT_ROUND_TIMEOUT_S))
    result = serve_request(grid, request, timeout=timeout)
    # Waiting until the SuperLink has seen every expected node is the caller's job;
    # here we only write atomically so the researcher never reads half a file.
    _write_atomically(Path(out), result, Path(out).with_suffix(".tmp"))
