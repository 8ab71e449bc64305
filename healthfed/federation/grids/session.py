"""One long deployed ServerApp run that serves many rounds: the researcher's end.

Starting a Flower run costs ~2.5 s (SuperExec poll, a new ``flwr-serverapp``
process, FAB install, imports) on top of the nodes' polling; an iterative fit asks
one request per round. So a session keeps one ServerApp running and hands it each
request as a file in ``folder/requests`` (written atomically); the ServerApp
(:func:`healthfed.federation.server_app.serve_session`) writes the result to
``folder/results``. The folder is on the SuperLink's machine, like the one-shot
runs' result files. A dead or stuck ServerApp ends the session with an error
naming it; the next request (or the first after the ServerApp's idle timeout)
starts a new session.

The session drives its run through a :class:`RunControl` — the SuperLink's Control
API client (:class:`healthfed.federation.deploy.control.SuperLinkControl`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from healthfed.errors import FederationError, NodeTimeout
from healthfed.federation.messages import (
    SESSION_CLOSE,
    SESSION_ERROR,
    SESSION_KEY,
    SESSION_REQUESTS,
    SESSION_RESULTS,
    SESSION_SERVING,
    TIMEOUT_FIELD,
)

# Time allowed on top of a request's own timeout: ServerApp process start,
# SuperNode polling (every 3 s in flwr 1.42) and the node's reply.
RUN_OVERHEAD_S = 45.0
# How often a waiting request asks the SuperLink whether the session run still runs
# (a Control API request each; every 0.5 s it was ~3 of a small round's ~94 requests).
STATUS_CHECK_S = 2.0


class RunControl(Protocol):
    """What a session needs of the SuperLink's Control API."""

    def start_run(self, run_config: dict[str, Any], fab: bytes | None = None) -> int: ...

    def run_status(self, run_id: int) -> tuple[str, str, str]: ...

    def wait_run(
        self, run_id: int, timeout: float, sites: Sequence[str] = ()
    ) -> tuple[str, str, str]: ...

    def stop_run(self, run_id: int) -> None: ...

    def check_alive(self) -> None: ...

    def diagnostics(self) -> str: ...


class ServerAppSession:
    """One long Flower run whose ServerApp serves many requests (one per round).

    Parameters
    ----------
    control
        Starts, follows and stops the run.
    folder
        The session's request and result folders are made in it; the run's
        ServerApp reads and writes them, so it must be on the SuperLink's machine.
    sites
        Site names, for a timeout's error.
    """

    def __init__(self, control: RunControl, folder: Path, sites: Sequence[str] = ()) -> None:
        self.control = control
        self.folder = folder
        self.sites = list(sites)
        for sub in (SESSION_REQUESTS, SESSION_RESULTS):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.run_id = control.start_run({SESSION_KEY: str(folder)})
        self.alive = True
        self.last_round_s: float | None = None

    def serving(self) -> bool:
        """True once the run's ServerApp reads requests (its process has started).

        A request handed over earlier is not lost, it waits for the ServerApp's start
        (~1-3 s); a deployment that must be ready before it returns waits for this.
        """
        return (self.folder / SESSION_SERVING).exists()

    def usable(self) -> bool:
        """Still serving: not closed, and its run has not finished (e.g. idle timeout)."""
        if self.alive and self.control.run_status(self.run_id)[0] == "finished":
            self.alive = False
        return self.alive

    def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Hand ``request`` to the running ServerApp; its result dict once written."""
        if not self.alive:
            raise FederationError(f"session run {self.run_id} has ended")
        envelope = dict(request)
        envelope.setdefault(TIMEOUT_FIELD, timeout)
        name = f"{uuid.uuid4().hex}.json"
        tmp = self.folder / SESSION_REQUESTS / f"{name}.tmp"
        tmp.write_text(json.dumps(envelope, allow_nan=False), encoding="utf-8")
        os.replace(tmp, self.folder / SESSION_REQUESTS / name)
        out = self.folder / SESSION_RESULTS / name
        started = time.perf_counter()
        self._wait_for(out, timeout)
        self.last_round_s = time.perf_counter() - started
        try:
            result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        finally:
            out.unlink(missing_ok=True)
        if SESSION_ERROR in result:
            raise FederationError(f"the SuperLink's ServerApp failed: {result[SESSION_ERROR]}")
        return result

    def _wait_for(self, out: Path, timeout: float) -> None:
        """Wait until ``out`` exists; raise if the run ends first or time runs out."""
        deadline = time.monotonic() + float(timeout) + RUN_OVERHEAD_S
        next_check = time.monotonic() + STATUS_CHECK_S
        while not out.exists():
            now = time.monotonic()
            if now >= next_check:
                next_check = now + STATUS_CHECK_S
                status = self.control.run_status(self.run_id)
                if status[0] == "finished" and not out.exists():
                    self.alive = False
                    raise FederationError(
                        f"session run {self.run_id} ended {status[1]} {status[2]} before "
                        f"answering\n{self.control.diagnostics()}"
                    )
                self.control.check_alive()
            if now > deadline:
                self.stop()
                raise NodeTimeout(
                    f"session run {self.run_id}: no result within {timeout:g}s\n"
                    f"{self.control.diagnostics()}",
                    sites=self.sites,
                )
            time.sleep(0.01)

    def close(self, timeout: float = 10.0) -> None:
        """Ask the ServerApp to finish; stop the run if it does not within ``timeout``."""
        if not self.alive:
            return
        self.alive = False
        (self.folder / SESSION_CLOSE).write_text("", encoding="utf-8")
        try:
            self.control.wait_run(self.run_id, timeout)
        except Exception:  # noqa: BLE001 - wait_run stops the run on timeout
            pass

    def stop(self) -> None:
        """Stop the run now (a stuck ServerApp); the session is over."""
        self.alive = False
        self.control.stop_run(self.run_id)
