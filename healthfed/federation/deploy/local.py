"""A real Flower deployment on loopback: one SuperLink, one SuperNode per hospital.

Measured against flwr 1.42 (see ``docs/flower-deployment.md``):

* The SuperLink serves its Fleet, Control and Runtime ("ServerAppIo") APIs over
  **one** HTTPS port (``--host``/``--port``, default 127.0.0.1:8000). The older
  per-API address options are deprecated no-ops unless Flower's internal
  ``FLWR_INTERNAL_GRPC_*`` variables are set, which are stripped from the
  environment (:mod:`~healthfed.federation.deploy.processes`). The open-source
  Control API has no login, so everything binds to 127.0.0.1 only.
* Every SuperNode opens its own Runtime ("ClientAppIo") HTTP API on
  ``--host``/``--port`` (default 127.0.0.1:9094), so each SuperNode on one host
  needs its own port.
* TLS: the SuperLink gets ``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile``
  (one certificate for all three APIs); SuperNodes, SuperExec and the Control
  client trust only a throwaway CA (``--root-certificates``). No ``--insecure``
  anywhere.
* Each SuperNode runs ``--isolation process`` and is served by healthfed's node
  executor (:mod:`~healthfed.federation.deploy.executor`): pushed code never runs
  at a node. By default the SuperNode is healthfed's own
  (:mod:`~healthfed.federation.deploy.supernode`: 20 ms-0.5 s poll instead of
  flwr's 3 s, and one long-lived data worker it spawns itself); ``node_kind="stock"``
  runs ``flower-supernode`` plus a separately started executor, for comparison.
* The SuperLink is flwr's with held pulls
  (:mod:`~healthfed.federation.deploy.superlink_app`); ``superlink_kind="stock"``
  runs ``flower-superlink`` itself.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import tomllib
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthfed.errors import FederationError
from healthfed.federation.deploy.bundle import CLIENTAPP_REF
from healthfed.federation.deploy.commands import (
    NODE_KINDS,
    SUPERLINK_KINDS,
    node_exec_argv,
    superlink_argv,
    supernode_argv,
)
from healthfed.federation.deploy.control import SuperLinkControl
from healthfed.federation.deploy.processes import (
    LOOPBACK,
    Proc,
    blas_thread_env,
    free_port,
    safe_name,
    spawn,
    stop_procs,
    tail,
    wait_ready,
    write_secret_file,
)
from healthfed.federation.deploy.tls import TlsFiles, generate_loopback_tls
from healthfed.federation.grids.session import ServerAppSession


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
    node_kind
        ``"healthfed"`` (default: healthfed's SuperNode loop and data worker) or
        ``"stock"`` (``flower-supernode`` and a separate executor process).
    superlink_kind
        ``"healthfed"`` (default: flwr's SuperLink answering an empty pull at the next
        push) or ``"stock"`` (``flower-superlink``).
    worker_idle
        Seconds an idle data worker of a healthfed SuperNode lives (default 120).
    open_session
        Start the session ServerApp (:meth:`session_run`) as soon as the SuperLink
        answers, while the SuperNodes start (about 3 s of a cold start), and return
        from :meth:`start` only once it serves: the first round does not wait for it.
    node_blas_threads
        BLAS threads of each node's processes (``OPENBLAS_NUM_THREADS`` and the like;
        an environment that sets one already wins). Default: this machine's cores
        shared among the nodes (at least 1), as the in-process engine does: every
        node on one machine running a BLAS thread per core oversubscribes the cores
        (OpenBLAS threads spin while they wait). ``0``: no limit.

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
        node_kind: str = "healthfed",
        superlink_kind: str = "healthfed",
        worker_idle: float | None = None,
        open_session: bool = False,
        node_blas_threads: int | None = None,
    ) -> None:
        if node_kind not in NODE_KINDS:
            raise FederationError(f"node_kind must be one of {NODE_KINDS}, got {node_kind!r}")
        if superlink_kind not in SUPERLINK_KINDS:
            raise FederationError(
                f"superlink_kind must be one of {SUPERLINK_KINDS}, got {superlink_kind!r}"
            )
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
        self.node_kind = node_kind
        self.superlink_kind = superlink_kind
        self.worker_idle = worker_idle
        self.open_session = open_session
        cores = os.cpu_count() or 1
        self.node_blas_threads = (
            max(1, cores // len(self.node_files))
            if node_blas_threads is None
            else node_blas_threads
        )
        self.superlink_address = ""
        self.tls: TlsFiles | None = None
        self.last_round_s: float | None = None
        self._procs: list[Proc] = []
        self._control: SuperLinkControl | None = None
        self._session: ServerAppSession | None = None
        self._started = False

    @staticmethod
    def _site_name(path: Path) -> str:
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
        self,
        role: str,
        argv: list[str],
        home: Path,
        pythonpath: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
    ) -> Proc:
        proc = spawn(role, argv, home, self.work_dir / "logs", pythonpath, extra_env)
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
            superlink_argv(bin_dir, LOOPBACK, port, tls, kind=self.superlink_kind),
            self.work_dir / "home" / "superlink",
        )
        self._control = SuperLinkControl(
            self.superlink_address,
            tls.ca_cert,
            diagnostics=lambda: self._log_tail("superlink"),
            check_alive=self._check_superlink,
        )
        # healthfed's SuperNodes wait for the SuperLink's port themselves (20 ms probes),
        # so they start with it: their imports overlap its start. Stock ones would back
        # off 1 s and more in flwr's connection retries, so they start once it answers.
        if self.node_kind == "healthfed":
            self._spawn_nodes(bin_dir, tls)
        self._wait(lambda: self._list_nodes() is not None, [superlink], "the SuperLink to listen")
        if self.open_session:
            self._session = self._new_session()
        if self.node_kind != "healthfed":
            self._spawn_nodes(bin_dir, tls)

        def nodes_ready() -> bool:
            nodes = self._list_nodes() or []
            online = [n for n in nodes if n.status == "online"]
            ready = all("node executor ready" in tail(p.log, 400) for p in self._executor_procs())
            return len(online) >= len(self.node_files) and ready

        self._wait(nodes_ready, self._procs, f"{len(self.node_files)} SuperNodes to register")
        if self._session is not None:
            # ready means the first request is answered at once, not after the
            # session ServerApp's start (it starts with the nodes, ~1 s behind them)
            session = self._session

            def serving() -> bool:
                if session.serving():
                    return True
                if not session.usable():
                    raise FederationError(
                        f"session run {session.run_id} ended before serving\n"
                        f"{self._log_tail('superlink')}"
                    )
                return False

            self._wait(serving, self._procs, "the session ServerApp to serve")

    def _spawn_nodes(self, bin_dir: Path, tls: TlsFiles) -> None:
        """Start one SuperNode per node file (and, for stock nodes, its executor)."""
        secret = secrets.token_bytes(32)
        for i, (path, name) in enumerate(zip(self.node_files, self.site_names, strict=True)):
            role = f"supernode-{i}-{safe_name(name)}"
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
                node_kind=self.node_kind,
                clientapp_ref=self.clientapp_ref,
                worker_idle=self.worker_idle,
            )
            blas = blas_thread_env(self.node_blas_threads or None)
            if self.node_kind == "healthfed":  # the SuperNode spawns its own worker
                self._spawn(role, argv, home, self.node_pythonpath, blas)
                continue
            self._spawn(role, argv, home, extra_env=blas)
            self._spawn(
                f"node-exec-{i}-{safe_name(name)}",
                node_exec_argv(
                    f"{LOOPBACK}:{node_port}", tls.ca_cert, secret_file, self.clientapp_ref
                ),
                home,
                self.node_pythonpath,
                blas,
            )

    def _wait(self, ready: Any, procs: Sequence[Proc], what: str) -> None:
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
        if self._control is not None:
            self._control.close()
            self._control = None
        procs, self._procs = self._procs, []
        stop_procs(procs)
        if self._own_dir and self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # --- control API (the same SuperLinkControl as on a SuperLink machine) ----------
    def _list_nodes(self) -> list[Any] | None:
        return None if self._control is None else self._control.list_nodes()

    def _require_control(self) -> SuperLinkControl:
        if self._control is None:
            raise FederationError("the deployment is not started")
        return self._control

    def start_run(self, run_config: dict[str, Any], fab: bytes | None = None) -> int:
        """Push ``fab`` (default: ``app_fab()``) with run-config overrides; return the run id."""
        return self._require_control().start_run(run_config, fab)

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        """``(status, sub_status, details)`` of a run, e.g. ``("finished", "completed", "")``."""
        return self._require_control().run_status(run_id)

    def wait_run(self, run_id: int, timeout: float) -> tuple[str, str, str]:
        """Poll until the run is finished or ``timeout`` passes (then the run is stopped)."""
        return self._require_control().wait_run(run_id, timeout, self.site_names)

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run the healthfed ServerApp once with ``request``; return its result JSON.

        The request travels in the run config (``healthfed-request``, JSON); the
        ServerApp writes ``collect``'s dict to ``healthfed-result`` (a file in the
        work dir) which is read back here.
        """
        control = self._require_control()
        try:
            return control.run(request, timeout, self.work_dir / "results", self.site_names)
        finally:
            self.last_round_s = control.last_round_s

    def session_run(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """As :meth:`run`, through one long-running ServerApp (:class:`ServerAppSession`).

        Saves the ServerApp start (~2.5 s) on every round after the first; what
        ``Federation.flower`` uses.
        """
        if self._session is None or not self._session.usable():
            self._session = self._new_session()
        try:
            return self._session.request(request, timeout)
        finally:
            self.last_round_s = self._session.last_round_s

    def _new_session(self) -> ServerAppSession:
        folder = self.work_dir / "session" / uuid.uuid4().hex[:12]
        return ServerAppSession(self._require_control(), folder, self.site_names)

    def _log_tail(self, role_prefix: str) -> str:
        for proc in self._procs:
            if proc.role.startswith(role_prefix):
                return f"--- {proc.role} log tail ({proc.log}):\n{tail(proc.log)}"
        return ""

    def _executor_procs(self) -> list[Proc]:
        """The processes whose log holds the executor's output, one per node, in order."""
        prefix = "supernode-" if self.node_kind == "healthfed" else "node-exec-"
        return [p for p in self._procs if p.role.startswith(prefix)]

    def node_processes(self) -> dict[str, Proc]:
        """Each node's SuperNode process by site name (e.g. to kill one in a test)."""
        return {
            self.site_names[_node_index(p.role)]: p
            for p in self._procs
            if p.role.startswith("supernode-")
        }

    def node_logs(self) -> dict[str, str]:
        """Each node executor's log text by site name (refusals are logged as ``REFUSED``)."""
        out = {}
        for proc in self._executor_procs():
            out[self.site_names[_node_index(proc.role)]] = proc.log.read_text(
                encoding="utf-8", errors="replace"
            )
        return out


def _node_index(role: str) -> int:
    """The node number in a role name (``supernode-3-site``, ``node-exec-3-site``)."""
    return int(role.removeprefix("supernode-").removeprefix("node-exec-").split("-")[0])
