"""Supervision shared by the SuperLink machine and a hospital: start together, stop together.

``healthfed hub serve`` and ``healthfed node serve`` each run a few Flower
processes that are useless alone (a SuperNode without its executor answers
nothing). A :class:`Service` watches them: if one dies the rest are stopped and
``wait`` raises with that process's log tail; SIGINT/SIGTERM stop them all.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthfed.errors import FederationError
from healthfed.federation.deploy.processes import Proc, spawn, stop_procs, tail


class Service:
    """Processes that live and die together; ``wait`` blocks, ``stop`` ends them all.

    The base of :class:`~healthfed.federation.deploy.superlink.SuperLinkServer` and
    :class:`~healthfed.federation.deploy.node.NodeServer`.
    """

    def __init__(self, work_dir: Path, own_dir: bool) -> None:
        self.work_dir = work_dir
        self._own_dir = own_dir
        self._procs: list[Proc] = []
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._stopped = False

    @property
    def pids(self) -> list[int]:
        """PIDs of the processes this service started directly."""
        return [p.popen.pid for p in self._procs]

    def logs(self) -> dict[str, Path]:
        """Log file of each process, by role."""
        return {p.role: p.log for p in self._procs}

    def _spawn(self, role: str, argv: list[str], home: Path, pythonpath: Sequence[str]) -> Proc:
        proc = spawn(role, argv, home, self.work_dir / "logs", pythonpath)
        self._procs.append(proc)
        return proc

    def running(self) -> bool:
        """True while every process is alive and ``stop`` was not called."""
        return not self._stopping.is_set() and all(p.popen.poll() is None for p in self._procs)

    def wait(self, timeout: float | None = None) -> None:
        """Block while the service runs.

        Returns when ``stop`` is called (e.g. from a signal handler) or, if given,
        after ``timeout`` seconds. If any process exits on its own, the others are
        stopped and ``FederationError`` is raised with that process's log tail.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopping.is_set():
            for proc in self._procs:
                code = proc.popen.poll()
                if code is not None and not self._stopping.is_set():
                    self.stop()
                    raise FederationError(
                        f"{proc.role} exited with code {code}; stopped the rest "
                        f"(log {proc.log}):\n{tail(proc.log)}"
                    )
            if deadline is not None and time.monotonic() >= deadline:
                return
            self._stopping.wait(0.5)

    def serve_forever(self, on_ready: Any = None) -> None:
        """``wait`` until SIGINT/SIGTERM, then ``stop``: what the CLI calls (main thread).

        The signal handlers only flag the stop; processes are stopped after ``wait``
        returns, outside the handler. If a process dies on its own, everything is
        stopped and ``FederationError`` propagates. ``on_ready`` is called once the
        handlers are installed, so a supervisor told "ready" can always stop us cleanly.
        """

        def _flag(_signum: int, _frame: object) -> None:
            self._stopping.set()

        previous = {sig: signal.signal(sig, _flag) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if on_ready is not None:
                on_ready()
            self.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def stop(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after a grace period). Idempotent."""
        self._stopping.set()
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._close_clients()
            stop_procs(self._procs)
            if self._own_dir and self.work_dir.exists():
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def _close_clients(self) -> None:
        """Close what a subclass holds open (e.g. its Control API client); before stopping."""

    def _start_guarded(self, start: Any) -> None:
        try:
            start()
        except BaseException:
            self.stop()
            raise
