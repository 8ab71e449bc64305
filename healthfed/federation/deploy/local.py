"""A real Flower deployment on loopback: one SuperLink, one SuperNode per hospital.

Measured against flwr 1.42 (see ``docs/flower-deployment.md``):

* The SuperLink serves its Fleet, Control and Runtime ("ServerAppIo") APIs over
  **one** HTTPS port (``--host``/``--port``, default 127.0.0.1:8000). The older
  per-API address options are deprecated no-ops unless Flower's internal
  ``FLWR_INTERNAL_GRPC_*`` variables are set, which we strip from the
  environment. The open-source Control API has no login, so we bind to
  127.0.0.1 only.
* Every SuperNode opens its own Runtime ("ClientAppIo") HTTP API on
  ``--host``/``--port`` (default 127.0.0.1:9094), so each SuperNode on one host
  needs its own port.
* TLS: the SuperLink gets ``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile``
  (one certificate for all three APIs); SuperNodes, SuperExec and our Control
  client trust only our throwaway CA (``--root-certificates``). No
  ``--insecure`` anywhere.

**Pushed code never runs at a hospital.** A stock SuperNode hands every message
to ``flwr-clientapp``, which unpacks the app bundle (FAB) the hub pushed, puts
it first on ``sys.path`` and imports the ``clientapp`` it names: the hub decides
what code touches the data. We start each SuperNode with ``--isolation
process`` instead and serve it with our own executor (``serve_node`` below,
started from the hospital's *installed* healthfed). The executor

1. refuses, with a Flower ``Error`` reply (``INVALID_FAB``), every task whose
   FAB is not byte-for-byte the bundle the installed healthfed builds
   (``app_fab()``: a ``pyproject.toml`` only, no Python code, naming
   ``healthfed.federation.client_app:app``) — it compares SHA-256 hashes; and
2. never unpacks or imports anything from the FAB even when it matches: it
   answers with ``healthfed.federation.client_app.app`` imported from the
   installed package.

A shared secret (``--superexec-auth-secret-file``) makes the SuperNode hand
tasks only to our executor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from healthfed.errors import FederationError, NodeTimeout
from healthfed.federation.tls import TlsFiles, generate_loopback_tls

APP_NAME = "healthfed-query"
APP_PUBLISHER = "healthfed"
APP_VERSION = "1.0.0"
CLIENTAPP_REF = "healthfed.federation.client_app:app"
SERVERAPP_REF = "healthfed.federation.server_app:app"
NODE_CONFIG_KEY = "healthfed-node"
REQUEST_KEY = "healthfed-request"
RESULT_KEY = "healthfed-result"
SESSION_KEY = "healthfed-session"

LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 4.0
# Time the hub allows on top of the request's own timeout: ServerApp process start,
# SuperNode polling (every 3 s in flwr 1.42) and the node's reply.
RUN_OVERHEAD_S = 45.0

_FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # SuperExec polls for ServerApp tasks every 1 s by default.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}
# Would start extra gRPC Control/Fleet servers on 0.0.0.0 (flwr 1.42 internals).
_STRIPPED_ENV = ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API")

_APP_PYPROJECT = f"""\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "{APP_VERSION}"
description = "healthfed query round; the code is the installed healthfed package"
dependencies = []

[tool.flwr.app]
publisher = "{APP_PUBLISHER}"

[tool.flwr.app.components]
serverapp = "{SERVERAPP_REF}"
clientapp = "{CLIENTAPP_REF}"

[tool.flwr.app.config]
{REQUEST_KEY} = "{{}}"
{RESULT_KEY} = ""
{SESSION_KEY} = ""
"""


# --- the app bundle ---------------------------------------------------------------------
def build_fab(files: dict[str, bytes]) -> bytes:
    """Build a Flower App Bundle from in-memory files (deterministic: fixed dates, sorted)."""
    from flwr.cli.build import build_fab_from_files

    try:
        return build_fab_from_files(files)[0]
    except ValueError as exc:
        raise FederationError(f"cannot build the Flower app bundle: {exc}") from None


@lru_cache(maxsize=1)
def app_fab() -> bytes:
    """The one bundle healthfed pushes: a ``pyproject.toml`` naming installed modules, no code."""
    return build_fab({"pyproject.toml": _APP_PYPROJECT.encode("utf-8")})


def app_fab_hash() -> str:
    """SHA-256 (hex) of ``app_fab()``; nodes accept only runs of this bundle."""
    return hashlib.sha256(app_fab()).hexdigest()


def fab_refusal(content: bytes, expected_hash: str | None = None) -> str | None:
    """Why a node refuses a pushed bundle, or ``None`` if it is the known-good one."""
    expected = expected_hash or app_fab_hash()
    got = hashlib.sha256(content).hexdigest()
    if got != expected:
        return (
            f"refused pushed Flower app: FAB sha256 {got[:16]}... is not the installed "
            f"healthfed app ({expected[:16]}...); pushed code is never run at a node"
        )
    return None


# --- the node's executor (runs at the hospital, from the installed package) -------------
def serve_node(
    runtime_api_address: str,
    root_certificates: str | None,
    auth_secret: bytes | None,
    *,
    poll_interval: float = 0.1,
    stop: threading.Event | None = None,
    clientapp_ref: str = CLIENTAPP_REF,
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
        Seconds between task polls when idle.
    stop
        Set it to return (tests); otherwise runs until the process is signalled.
    clientapp_ref
        ``module:attribute`` of the ClientApp, imported from this environment (the
        hospital's installed healthfed; tests substitute an echo app). Whatever
        the pushed bundle names is ignored.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    client_app = _load_clientapp(clientapp_ref)  # from the installed package, never the FAB

    expected = app_fab_hash()
    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if auth_secret:
        interceptors.append(
            SuperExecAuthHttpInterceptor(
                master_secret=auth_secret,
                protected_methods={"/flwr.proto.Runtime/AcquireTask"},
            )
        )
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=root_certificates is None,
        root_certificates=_read(root_certificates),
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )
    print(f"healthfed node executor ready; accepting only FAB {expected}", flush=True)
    try:
        while stop is None or not stop.is_set():
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                _run_task(runtime_api_address, root_certificates, res.token, client_app, expected)
            else:
                time.sleep(poll_interval)
    finally:
        client.close()


def _load_clientapp(ref: str) -> Any:
    import importlib

    from flwr.clientapp import ClientApp

    module_name, _, attr = ref.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "app")
    if not isinstance(app, ClientApp):
        raise FederationError(f"{ref} is not a flwr ClientApp")
    return app


def _run_task(
    address: str, root_certificates: str | None, token: str, client_app: Any, expected: str
) -> None:
    """One message: check the bundle, answer with the installed ClientApp or refuse."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    client = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=root_certificates is None,
        root_certificates=_read(root_certificates),
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
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
            client.close()


# --- the local deployment ---------------------------------------------------------------
def superlink_argv(bin_dir: Path, host: str, port: int, tls: TlsFiles) -> list[str]:
    """The hub's ``flower-superlink`` command: TLS on its one port, no runtime installs.

    ``--disable-runtime-dependency-installation`` keeps the SuperLink from running
    ``uv sync`` for a pushed app (network access and foreign code on the hub).
    """
    return [
        str(bin_dir / "flower-superlink"),
        *_tls_server_args(host, port, tls),
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
    ]


def _tls_server_args(host: str, port: int, tls: TlsFiles) -> list[str]:
    """``--host/--port`` and the three ``--ssl-*`` flags of a Flower server (TLS, never off)."""
    return [
        "--host",
        host,
        "--port",
        str(port),
        "--ssl-certfile",
        str(tls.server_cert),
        "--ssl-keyfile",
        str(tls.server_key),
        "--ssl-ca-certfile",
        str(tls.ca_cert),
    ]


def supernode_argv(
    bin_dir: Path,
    superlink: str,
    root_certificates: Path,
    runtime_port: int,
    runtime_tls: TlsFiles,
    secret_file: Path,
    node_file: Path,
    max_retries: int | None = None,
) -> list[str]:
    """A hospital's ``flower-supernode`` command: outbound TLS to ``superlink``, its
    Runtime API on loopback (``runtime_tls``), ClientApps run by our executor
    (``--isolation process``), the node TOML in its node config."""
    argv = [
        str(bin_dir / "flower-supernode"),
        "--superlink",
        superlink,
        "--root-certificates",
        str(root_certificates),
        *_tls_server_args(LOOPBACK, runtime_port, runtime_tls),
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str(secret_file),
        "--node-config",
        node_config_arg(node_file),
    ]
    if max_retries is not None:
        argv += ["--max-retries", str(max_retries)]
    return argv


def node_exec_argv(
    runtime_address: str, runtime_ca: Path, secret_file: Path, clientapp_ref: str
) -> list[str]:
    """The healthfed node executor's command (serves the installed ClientApp)."""
    return [
        sys.executable,
        "-m",
        "healthfed.federation.deploy",
        "node-exec",
        "--runtime-api-address",
        runtime_address,
        "--root-certificates",
        str(runtime_ca),
        "--superexec-auth-secret-file",
        str(secret_file),
        "--clientapp",
        clientapp_ref,
    ]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def node_config_arg(path: str | Path) -> str:
    """``--node-config`` value for a node TOML path.

    flwr 1.42 reads ``key="value"`` pairs with a regex and TOML; the value must
    be quoted (an unquoted value ending in ``.toml`` is taken as a config *file*)
    and cannot contain a quote. Spaces are fine inside the quotes.
    """
    text = str(Path(path).resolve())
    if any(c in text for c in "\"'\n\r"):
        raise FederationError(f"node file path {text!r} contains a quote or newline")
    return f'{NODE_CONFIG_KEY}="' + text.replace("\\", "\\\\") + '"'


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _descendants(pid: int) -> list[int]:
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


class _Proc:
    """One started process: its Popen, role and log file."""

    def __init__(self, role: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.role, self.popen, self.log = role, popen, log

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise FederationError(
                f"{self.role} exited with code {code} (log {self.log}):\n{_tail(self.log)}"
            )


def flower_env(home: Path, pythonpath: Sequence[str] = ()) -> dict[str, str]:
    """Environment for one Flower process: no telemetry, own ``FLWR_HOME``, this venv first."""
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")])
    env.update(_FLOWER_ENV)
    env["FLWR_HOME"] = str(home)  # never the real ~/.flwr
    # Flower starts `flower-superexec`, `flwr-serverapp` by name: use this venv's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(
    role: str, argv: list[str], home: Path, log_dir: Path, pythonpath: Sequence[str] = ()
) -> _Proc:
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
            env=flower_env(home, pythonpath),
            cwd=str(home),
            start_new_session=True,  # own process group: stop_procs() signals the group
        )
    return _Proc(role, popen, log)


def write_secret_file(path: Path, secret: bytes) -> Path:
    """Write a SuperExec shared secret readable by the owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    os.chmod(path, 0o600)
    return path


def wait_ready(
    ready: Callable[[], bool], procs: Sequence[_Proc], what: str, timeout: float
) -> None:
    """Poll ``ready()`` until true; raise with log tails if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            proc.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.role} ({p.log}):\n{_tail(p.log, 15)}" for p in procs)
            raise FederationError(f"timed out after {timeout:g}s waiting for {what}\n{logs}")
        time.sleep(0.2)


def stop_procs(procs: Sequence[_Proc], grace: float = STOP_GRACE_S) -> None:
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
            extra.update(_descendants(proc.popen.pid))
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


class HubControl:
    """Control API client of a running SuperLink: start healthfed runs, follow them.

    Shared by ``LocalFlowerDeployment`` and ``healthfed.federation.serve.run_on_hub``.
    The open-source Control API has no login: whoever reaches it may start runs,
    which is why the SuperLink is bound to loopback/an internal address.

    Parameters
    ----------
    address
        The SuperLink's ``host:port`` (Fleet, Control and Runtime share it).
    root_certificates
        CA certificate (path or PEM bytes) the SuperLink's certificate chains to.
    diagnostics
        Returns text appended to errors (e.g. the SuperLink's log tail).
    check_alive
        Raises if the SuperLink process is known to be dead (local deployments).
    """

    def __init__(
        self,
        address: str,
        root_certificates: str | Path | bytes,
        *,
        diagnostics: Callable[[], str] | None = None,
        check_alive: Callable[[], None] | None = None,
    ) -> None:
        from flwr.supercore.control.control_http_client import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        ca = (
            root_certificates
            if isinstance(root_certificates, bytes)
            else Path(root_certificates).read_bytes()
        )
        self.address = address
        self._diagnostics = diagnostics or (lambda: "")
        self._check_alive = check_alive or (lambda: None)
        self.last_round_s: float | None = None
        self._client: Any = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=False,
            root_certificates=ca,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass

    def list_nodes(self) -> list[Any] | None:
        """The SuperLink's nodes (``ListNodes``), or ``None`` if it cannot be reached."""
        from flwr.proto.control_pb2 import ListNodesRequest

        try:
            return list(self._client.ListNodes(ListNodesRequest()).nodes_info)
        except Exception:  # noqa: BLE001 - not up yet
            return None

    def online_nodes(self) -> int:
        """How many nodes are ``online`` now (0 if the SuperLink cannot be reached)."""
        return sum(1 for n in self.list_nodes() or [] if n.status == "online")

    def start_run(self, run_config: dict[str, Any], fab: bytes | None = None) -> int:
        """Push ``fab`` (default: ``app_fab()``) with run-config overrides; return the run id."""
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        content = app_fab() if fab is None else fab
        proto = fab_to_proto(Fab(hashlib.sha256(content).hexdigest(), content, {}))
        try:
            res = self._client.StartRun(
                StartRunRequest(fab=proto, override_config=user_config_to_proto(run_config))
            )
        except Exception as exc:  # noqa: BLE001
            raise FederationError(
                f"SuperLink {self.address} refused to start the run: {exc}\n{self._diagnostics()}"
            ) from None
        if not res.HasField("run_id"):
            raise FederationError(
                f"SuperLink {self.address} did not start the run\n{self._diagnostics()}"
            )
        return int(res.run_id)

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        """``(status, sub_status, details)`` of a run, e.g. ``("finished", "completed", "")``."""
        from flwr.proto.control_pb2 import ListRunsRequest

        res = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        run = res.run_dict[run_id]
        return run.status.status, run.status.sub_status, run.status.details

    def wait_run(
        self, run_id: int, timeout: float, sites: Sequence[str] = ()
    ) -> tuple[str, str, str]:
        """Poll until the run is finished or ``timeout`` passes (then the run is stopped)."""
        from flwr.proto.control_pb2 import StopRunRequest

        deadline = time.monotonic() + timeout
        while True:
            status = self.run_status(run_id)
            if status[0] == "finished":
                return status
            self._check_alive()
            if time.monotonic() > deadline:
                try:
                    self._client.StopRun(StopRunRequest(run_id=run_id))
                except Exception:  # noqa: BLE001
                    pass
                raise NodeTimeout(
                    f"run {run_id} did not finish within {timeout:g}s (status {status})\n"
                    f"{self._diagnostics()}",
                    sites=list(sites),
                )
            time.sleep(0.1)

    def run(
        self,
        request: dict[str, Any],
        timeout: float,
        result_dir: str | Path,
        sites: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run the healthfed ServerApp once with ``request``; return its result JSON.

        The request travels in the run config (``healthfed-request``, JSON); the
        ServerApp, which the SuperLink starts on the hub machine, writes
        ``collect``'s dict to ``healthfed-result``, a file in ``result_dir``: so
        ``result_dir`` must be writable by the SuperLink's user on the hub machine.
        """
        envelope = dict(request)
        envelope.setdefault("timeout", timeout)
        out = Path(result_dir).resolve() / f"{uuid.uuid4().hex}.json"
        started = time.perf_counter()
        run_id = self.start_run(
            {REQUEST_KEY: json.dumps(envelope, allow_nan=False), RESULT_KEY: str(out)}
        )
        status, sub_status, details = self.wait_run(run_id, float(timeout) + RUN_OVERHEAD_S, sites)
        self.last_round_s = time.perf_counter() - started
        if sub_status != "completed" or not out.exists():
            raise FederationError(
                f"run {run_id} ended {status}:{sub_status} {details}\n{self._diagnostics()}"
            )
        try:
            result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        finally:
            out.unlink(missing_ok=True)
        return result


class FlowerSession:
    """One long Flower run whose ServerApp serves many requests (one per round).

    Starting a Flower run costs ~2.5 s (SuperExec poll, a new ``flwr-serverapp``
    process, FAB install, imports) on top of the nodes' polling; an iterative fit asks
    one request per round, so a session keeps one ServerApp running and hands it each
    request as a file in ``folder/requests`` (written atomically); the ServerApp
    writes the result to ``folder/results`` (:func:`healthfed.federation.server_app.
    serve_session`). The folder is on the hub machine, like the per-run result files.
    A dead or stuck ServerApp ends the session with an error naming it; the next
    request (or the first after the ServerApp's idle timeout) starts a new session.
    """

    def __init__(self, hub: HubControl, folder: Path, sites: Sequence[str] = ()) -> None:
        self.hub = hub
        self.folder = folder
        self.sites = list(sites)
        for sub in ("requests", "results"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.run_id = hub.start_run({SESSION_KEY: str(folder)})
        self.alive = True
        self.last_round_s: float | None = None

    def usable(self) -> bool:
        """Still serving: not closed, and its run has not finished (e.g. idle timeout)."""
        if self.alive and self.hub.run_status(self.run_id)[0] == "finished":
            self.alive = False
        return self.alive

    def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Hand ``request`` to the running ServerApp; its result dict once written."""
        if not self.alive:
            raise FederationError(f"session run {self.run_id} has ended")
        envelope = dict(request)
        envelope.setdefault("timeout", timeout)
        name = f"{uuid.uuid4().hex}.json"
        tmp = self.folder / "requests" / f"{name}.tmp"
        tmp.write_text(json.dumps(envelope, allow_nan=False), encoding="utf-8")
        os.replace(tmp, self.folder / "requests" / name)
        out = self.folder / "results" / name
        started = time.perf_counter()
        deadline = time.monotonic() + float(timeout) + RUN_OVERHEAD_S
        next_check = time.monotonic() + 0.5
        while not out.exists():
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.5
                status = self.hub.run_status(self.run_id)
                if status[0] == "finished" and not out.exists():
                    self.alive = False
                    raise FederationError(
                        f"session run {self.run_id} ended {status[1]} {status[2]} before "
                        f"answering\n{self.hub._diagnostics()}"
                    )
                self.hub._check_alive()
            if now > deadline:
                self.stop()
                raise NodeTimeout(
                    f"session run {self.run_id}: no result within {timeout:g}s\n"
                    f"{self.hub._diagnostics()}",
                    sites=self.sites,
                )
            time.sleep(0.01)
        self.last_round_s = time.perf_counter() - started
        try:
            result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        finally:
            out.unlink(missing_ok=True)
        if "session_error" in result:
            raise FederationError(f"the hub's ServerApp failed: {result['session_error']}")
        return result

    def close(self, timeout: float = 10.0) -> None:
        """Ask the ServerApp to finish; stop the run if it does not within ``timeout``."""
        if not self.alive:
            return
        self.alive = False
        (self.folder / "close").write_text("", encoding="utf-8")
        try:
            self.hub.wait_run(self.run_id, timeout)
        except Exception:  # noqa: BLE001 - wait_run stops the run on timeout
            pass

    def stop(self) -> None:
        from flwr.proto.control_pb2 import StopRunRequest

        self.alive = False
        try:
            self.hub._client.StopRun(StopRunRequest(run_id=self.run_id))
        except Exception:  # noqa: BLE001
            pass


class LocalFlowerDeployment:
    """A SuperLink and one SuperNode per hospital on free loopback ports, with TLS.

    Parameters
    ----------
    node_files
        One node TOML per hospital; each SuperNode gets
        ``--node-config 'healthfed-node="<path>"'``.
    work_dir
        Where TLS material, logs and results go. A temporary directory (removed
        by ``close``) when ``None``; a given directory is kept.
    startup_timeout
        Seconds to wait for the SuperLink and every SuperNode to be ready.
    clientapp_ref
        The ClientApp each node's executor imports from its own environment
        (default: the installed ``healthfed.federation.client_app:app``).
    node_pythonpath
        Extra import paths for the node executors only (tests' stand-in apps).

    Examples
    --------
    >>> with LocalFlowerDeployment(["h1.toml", "h2.toml"]) as dep:  # doctest: +SKIP
    ...     dep.run({"computation": "count", "dataset": "covid", "params": {}}, 30)
    """

    def __init__(
        self,
        node_files: Sequence[str | Path],
        work_dir: str | Path | None = None,
        *,
        startup_timeout: float = 60.0,
        clientapp_ref: str = CLIENTAPP_REF,
        node_pythonpath: Sequence[str | Path] = (),
    ) -> None:
        if not node_files:
            raise FederationError("a deployment needs at least one node file")
        self.node_files = [Path(p).resolve() for p in node_files]
        for p in self.node_files:
            if not p.is_file():
                raise FederationError(f"node file {p} does not exist")
        self.site_names = [self._site_name(p) for p in self.node_files]
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="healthfed-flower-")).resolve()
        self.startup_timeout = startup_timeout
        self.clientapp_ref = clientapp_ref
        self.node_pythonpath = [str(Path(p).resolve()) for p in node_pythonpath]
        self.superlink_address = ""
        self.tls: TlsFiles | None = None
        self.last_round_s: float | None = None
        self._procs: list[_Proc] = []
        self._hub: HubControl | None = None
        self._session: FlowerSession | None = None
        self._started = False

    @staticmethod
    def _site_name(path: Path) -> str:
        import tomllib

        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
            name = raw["node"]["name"]
        except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise FederationError(f"{path}: cannot read [node].name ({exc})") from None
        return str(name)

    # --- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> LocalFlowerDeployment:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(
        self, role: str, argv: list[str], home: Path, pythonpath: Sequence[str] = ()
    ) -> _Proc:
        proc = spawn(role, argv, home, self.work_dir / "logs", pythonpath)
        self._procs.append(proc)
        return proc

    def start(self) -> LocalFlowerDeployment:
        """Start the SuperLink, the SuperNodes and their executors; wait until all are ready."""
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        bin_dir = Path(sys.executable).parent
        (self.work_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "results").mkdir(parents=True, exist_ok=True)
        tls = self.tls = generate_loopback_tls(self.work_dir / "tls")
        port = free_port()
        self.superlink_address = f"{LOOPBACK}:{port}"
        superlink = self._spawn(
            "superlink",
            superlink_argv(bin_dir, LOOPBACK, port, tls),
            self.work_dir / "home" / "superlink",
        )
        self._hub = HubControl(
            self.superlink_address,
            tls.ca_cert,
            diagnostics=lambda: self._log_tail("superlink"),
            check_alive=self._check_superlink,
        )
        self._wait(lambda: self._list_nodes() is not None, [superlink], "the SuperLink to listen")

        secret = secrets.token_bytes(32)
        for i, (path, name) in enumerate(zip(self.node_files, self.site_names, strict=True)):
            role = f"supernode-{i}-{_safe(name)}"
            home = self.work_dir / "home" / role
            home.mkdir(parents=True, exist_ok=True)
            secret_file = write_secret_file(home / "superexec.secret", secret)
            node_port = free_port()
            argv = supernode_argv(
                bin_dir,
                self.superlink_address,
                tls.ca_cert,
                node_port,
                tls,
                secret_file,
                path,
                max_retries=20,
            )
            self._spawn(role, argv, home)
            self._spawn(
                f"node-exec-{i}-{_safe(name)}",
                node_exec_argv(
                    f"{LOOPBACK}:{node_port}", tls.ca_cert, secret_file, self.clientapp_ref
                ),
                home,
                self.node_pythonpath,
            )

        def nodes_ready() -> bool:
            nodes = self._list_nodes() or []
            online = [n for n in nodes if n.status == "online"]
            execs = [p for p in self._procs if p.role.startswith("node-exec-")]
            ready = all("node executor ready" in _tail(p.log, 200) for p in execs)
            return len(online) >= len(self.node_files) and ready

        self._wait(nodes_ready, self._procs, f"{len(self.node_files)} SuperNodes to register")

    def _wait(self, ready: Any, procs: Sequence[_Proc], what: str) -> None:
        wait_ready(ready, procs, what, self.startup_timeout)

    def _check_superlink(self) -> None:
        for proc in self._procs:
            if proc.role == "superlink":
                proc.check_alive()

    def close(self) -> None:
        """Stop every process (SIGTERM to its group, SIGKILL after a grace period); clean up."""
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._hub is not None:
            self._hub.close()
            self._hub = None
        procs, self._procs = self._procs, []
        stop_procs(procs)
        if self._own_dir and self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # --- control API (shared with serve.run_on_hub through HubControl) -------------
    def _list_nodes(self) -> list[Any] | None:
        return None if self._hub is None else self._hub.list_nodes()

    def _require_hub(self) -> HubControl:
        if self._hub is None:
            raise FederationError("the deployment is not started")
        return self._hub

    def start_run(self, run_config: dict[str, Any], fab: bytes | None = None) -> int:
        """Push ``fab`` (default: ``app_fab()``) with run-config overrides; return the run id."""
        return self._require_hub().start_run(run_config, fab)

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        """``(status, sub_status, details)`` of a run, e.g. ``("finished", "completed", "")``."""
        return self._require_hub().run_status(run_id)

    def wait_run(self, run_id: int, timeout: float) -> tuple[str, str, str]:
        """Poll until the run is finished or ``timeout`` passes (then the run is stopped)."""
        return self._require_hub().wait_run(run_id, timeout, self.site_names)

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run the healthfed ServerApp once with ``request``; return its result JSON.

        The request travels in the run config (``healthfed-request``, JSON); the
        ServerApp writes ``collect``'s dict to ``healthfed-result`` (a file in the
        work dir) which is read back here.
        """
        hub = self._require_hub()
        try:
            return hub.run(request, timeout, self.work_dir / "results", self.site_names)
        finally:
            self.last_round_s = hub.last_round_s

    def session_run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """As :meth:`run`, through one long-running ServerApp (:class:`FlowerSession`).

        Saves the ServerApp start (~2.5 s) on every round after the first; what
        ``Federation.flower`` uses.
        """
        hub = self._require_hub()
        if self._session is None or not self._session.usable():
            folder = self.work_dir / "session" / uuid.uuid4().hex[:12]
            self._session = FlowerSession(hub, folder, self.site_names)
        try:
            return self._session.request(request, timeout)
        finally:
            self.last_round_s = self._session.last_round_s

    def _log_tail(self, role_prefix: str) -> str:
        for proc in self._procs:
            if proc.role.startswith(role_prefix):
                return f"--- {proc.role} log tail ({proc.log}):\n{_tail(proc.log)}"
        return ""

    def node_logs(self) -> dict[str, str]:
        """Each node executor's log text by site name (refusals are logged as ``REFUSED``)."""
        out = {}
        for proc in self._procs:
            if proc.role.startswith("node-exec-"):
                site = self.site_names[int(proc.role.split("-")[2])]
                out[site] = proc.log.read_text(encoding="utf-8", errors="replace")
        return out


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def _safe(name: str) -> str:
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


# --- `python -m healthfed.federation.deploy node-exec ...` ----------------------------------
def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m healthfed.federation.deploy")
    sub = parser.add_subparsers(dest="cmd", required=True)
    node = sub.add_parser("node-exec", help="serve a --isolation process SuperNode")
    node.add_argument("--runtime-api-address", required=True)
    node.add_argument("--root-certificates", default=None)
    node.add_argument("--superexec-auth-secret-file", default=None)
    node.add_argument("--poll-interval", type=float, default=0.1)
    node.add_argument(
        "--clientapp", default=CLIENTAPP_REF, help="module:attribute, imported locally"
    )
    sub.add_parser("fab-hash", help="print the SHA-256 of the healthfed app bundle")
    args = parser.parse_args(argv)
    if args.cmd == "fab-hash":
        print(app_fab_hash())
        return
    secret = None
    if args.superexec_auth_secret_file:
        secret = Path(args.superexec_auth_secret_file).read_bytes()
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    serve_node(
        args.runtime_api_address,
        args.root_certificates,
        secret,
        poll_interval=args.poll_interval,
        stop=stop,
        clientapp_ref=args.clientapp,
    )


if __name__ == "__main__":
    _main()
