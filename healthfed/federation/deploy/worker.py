"""The node's one data worker, as seen from healthfed's SuperNode: spawn, wake, respawn.

Flower's ``process`` isolation expects something outside the SuperNode to claim
each ClientApp task; stock Flower starts a process per run. Here the SuperNode
itself spawns one long-lived worker (the node executor,
:mod:`~healthfed.federation.deploy.executor`, with the hospital's installed
healthfed) and keeps it: the imports (pandas, DuckDB, ...) are paid once, not per
message. The worker leaves after ``idle_s`` seconds without a task, so an idle
node holds only the small SuperNode process; the next message spawns it again.

The SuperNode writes one byte to the worker's stdin whenever it stored a message,
so the worker claims the task at once instead of polling; when the SuperNode dies,
the worker reads end-of-file and exits (no orphan holds the data). The worker writes
one byte back on a pipe of its own (``--done-fd``) when it has stored a task's reply
and output, so the SuperNode pushes the reply at once instead of at its next check.

Given the node's state, the worker asks the Runtime API over a socket pair made for it
(``--runtime-fd``, :mod:`~healthfed.federation.deploy.runtime_pipe`) rather than over
the SuperNode's HTTPS port: the same flwr handlers answer, without ~14 HTTPS requests
per message.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
from typing import Any

from healthfed.federation.deploy.commands import node_exec_argv

WORKER_IDLE_S = 120.0  # a worker with no task for this long exits (memory back to the OS)
# The SuperNode wakes its worker through stdin for every stored message, so the worker's
# own poll of the Runtime API is only a fallback (every 0.2 s it cost ~4 requests a round).
WAKE_FALLBACK_POLL_S = 2.0


class DataWorker:
    """The node executor process a healthfed SuperNode owns (at most one at a time).

    Parameters
    ----------
    runtime_address
        The SuperNode's Runtime API (``127.0.0.1:port``) the worker connects to.
    root_certificates
        CA file of the Runtime API's TLS certificate (``None``: plain HTTP).
    secret_file
        The ``--superexec-auth-secret-file`` both processes share.
    clientapp_ref
        ``module:attribute`` of the installed ClientApp the worker imports.
    idle_s
        Seconds without a task after which the worker exits.
    state
        The SuperNode's ``NodeState``: each worker gets a socket pair and its requests
        are answered from this state in the SuperNode
        (:class:`~healthfed.federation.deploy.runtime_pipe.RuntimePipeServer`).
        ``None``: the worker uses the HTTPS Runtime API at ``runtime_address``.
    node_file
        The node TOML (the SuperNode's ``healthfed-node`` config): each worker checks
        its datasets when it starts, before it claims a task.
    """

    def __init__(
        self,
        runtime_address: str,
        root_certificates: str | None,
        secret_file: str | None,
        clientapp_ref: str,
        idle_s: float = WORKER_IDLE_S,
        state: Any | None = None,
        node_file: str | None = None,
    ) -> None:
        self.argv = [
            *node_exec_argv(runtime_address, root_certificates, secret_file, clientapp_ref),
            "--idle-exit",
            f"{idle_s:g}",
            "--wake-stdin",
            "--poll-interval",
            f"{WAKE_FALLBACK_POLL_S:g}",
        ]
        if node_file:
            self.argv += ["--node-file", node_file]
        self._state = state
        self._proc: subprocess.Popen[bytes] | None = None
        self._done: int | None = None  # read end of the worker's "task done" pipe
        self.spawned = 0

    def alive(self) -> bool:
        """True while the worker process runs."""
        return self._proc is not None and self._proc.poll() is None

    def ensure(self) -> None:
        """Start the worker unless it runs (first message, or it left when idle)."""
        if self.alive():
            return
        # Same stdout/stderr as the SuperNode (one node log); same process group, so
        # stopping the node's group stops the worker.
        self._close_done()
        done_r, done_w = os.pipe()
        argv, keep = [*self.argv, "--done-fd", str(done_w)], [done_w]
        ours = theirs = None
        if self._state is not None:
            ours, theirs = socket.socketpair()
            argv += ["--runtime-fd", str(theirs.fileno())]
            keep.append(theirs.fileno())
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=keep)
        except BaseException:
            os.close(done_r)
            if ours is not None:
                ours.close()
            raise
        finally:
            os.close(done_w)  # the worker holds the write end now
            if theirs is not None:
                theirs.close()
        self._done = done_r
        if ours is not None:
            from healthfed.federation.deploy.runtime_pipe import RuntimePipeServer

            RuntimePipeServer(self._state, ours).start()  # ends when the worker exits
        self.spawned += 1

    def wait_done(self, timeout: float) -> None:
        """Sleep until the worker says it finished a task, or ``timeout`` seconds pass."""
        if self._done is None:
            select.select([], [], [], timeout)
            return
        ready, _, _ = select.select([self._done], [], [], timeout)
        if ready and os.read(self._done, 4096) == b"":  # the worker is gone
            self._close_done()

    def _close_done(self) -> None:
        if self._done is not None:
            os.close(self._done)
            self._done = None

    def wake(self) -> None:
        """Tell the worker a task is waiting (it claims it now rather than on its next poll)."""
        self.ensure()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # it just left when idle: start a new one
            self._proc = None
            self.ensure()

    def stop(self) -> None:
        """End the worker (closing its stdin is enough; it exits on end-of-file)."""
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._proc = None
        self._close_done()
