"""Starting, watching and stopping the Flower processes of a deployment.

Every process gets its own session (so a whole group can be signalled), its own
``FLWR_HOME`` (never the real ``~/.flwr``), this virtual environment first on
``PATH``, no telemetry, and one log file. Flower detaches SuperExec into a
session of its own, so stopping also walks ``/proc`` for descendants.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from healthfed.errors import FederationError

LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 4.0

_FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # SuperExec polls for ServerApp tasks every 1 s by default.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}
# Would start extra gRPC Control/Fleet servers on 0.0.0.0 (flwr 1.42 internals).
_STRIPPED_ENV = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def descendants(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Proc:
    """One started process: its Popen, role and log file."""

    def __init__(self, role: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.role, self.popen, self.log = role, popen, log

    def check_alive(self) -> None:
        """Raise ``FederationError`` with the log tail if the process has exited."""
        code = self.popen.poll()
        if code is not None:
            raise FederationError(
                f"{self.role} exited with code {code} (log {self.log}):\n{tail(self.log)}"
            )


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_thread_env(threads: int | None) -> dict[str, str]:
    """BLAS/OpenMP thread limits for a process (``{}``: ``None``, or the caller's
    environment already sets one of them, which then wins)."""
    if threads is None or any(v in os.environ for v in BLAS_THREAD_VARS):
        return {}
    return dict.fromkeys(BLAS_THREAD_VARS, str(max(1, int(threads))))


def flower_env(
    home: Path, pythonpath: Sequence[str] = (), extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for one Flower process: no telemetry, own ``FLWR_HOME``, this venv first."""
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
    env.update(extra or {})
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")])
    env.update(_FLOWER_ENV)
    env["FLWR_HOME"] = str(home)  # never the real ~/.flwr
    # Flower starts `flower-superexec`, `flwr-serverapp` by name: use this venv's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(
    role: str,
    argv: list[str],
    home: Path,
    log_dir: Path,
    pythonpath: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> Proc:
    """Start ``argv`` in its own session, output to ``log_dir/<role>.log``, cwd ``home``."""
    log = log_dir / f"{role}.log"
    home.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=flower_env(home, pythonpath, extra_env),
            cwd=str(home),
            start_new_session=True,  # own process group: stop_procs() signals the group
        )
    return Proc(role, popen, log)


def write_secret_file(path: Path, secret: bytes) -> Path:
    """Write a SuperExec shared secret readable by the owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    os.chmod(path, 0o600)
    return path


def wait_ready(ready: Callable[[], bool], procs: Sequence[Proc], what: str, timeout: float) -> None:
    """Poll ``ready()`` until true; raise with log tails if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            proc.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.role} ({p.log}):\n{tail(p.log, 15)}" for p in procs)
            raise FederationError(f"timed out after {timeout:g}s waiting for {what}\n{logs}")
        time.sleep(0.2)


def stop_procs(procs: Sequence[Proc], grace: float = STOP_GRACE_S) -> None:
    """Stop processes and everything they started.

    Descendants are gathered first (Flower detaches SuperExec into its own
    session), then SIGTERM goes to them and to each process group in reverse
    start order; after ``grace`` seconds whatever is left gets SIGKILL.
    """
    groups: set[int] = set()
    extra: set[int] = set()
    for proc in procs:
        if proc.popen.poll() is None:
            groups.add(proc.popen.pid)
            extra.update(descendants(proc.popen.pid))
    for pid in extra:
        _signal_pid(pid, signal.SIGTERM)
    for proc in reversed(procs):  # nodes first, SuperLink last
        _signal_group(proc.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for pid in extra:
        _signal_pid(pid, signal.SIGKILL)
    for proc in procs:
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed
            pass


def safe_name(name: str) -> str:
    """``name`` as a file-name part: letters, digits, ``-`` and ``_`` only, at most 40."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
