"""A hospital's machine: its SuperNode and healthfed's node executor, supervised together.

``serve_node`` (what ``healthfed node serve`` runs) starts one ``flower-supernode``
that only connects *out* to the access body's SuperLink (``--isolation process``,
its Runtime API on 127.0.0.1 with its own throwaway TLS and a 0600 shared secret)
plus healthfed's node executor (:mod:`~healthfed.federation.deploy.executor`),
which answers with the *installed* healthfed ClientApp and refuses any pushed app
bundle that is not byte-for-byte healthfed's own. If one process dies, the other
is stopped and ``wait`` raises.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from healthfed.errors import FederationError
from healthfed.federation.deploy.bundle import CLIENTAPP_REF
from healthfed.federation.deploy.commands import (
    node_config_arg,
    node_exec_argv,
    split_address,
    supernode_argv,
)
from healthfed.federation.deploy.processes import (
    LOOPBACK,
    free_port,
    tail,
    wait_ready,
    write_secret_file,
)
from healthfed.federation.deploy.service import Service
from healthfed.federation.deploy.tls import generate_loopback_tls
from healthfed.node.runtime import Node


class NodeServer(Service):
    """A running SuperNode and its healthfed executor (from ``serve_node``).

    Attributes
    ----------
    site
        The node's ``[node].name``.
    superlink
        The SuperLink's Fleet address this node connects out to.
    runtime_address
        The SuperNode's local Runtime API (127.0.0.1 only).
    """

    def __init__(
        self, work_dir: Path, own_dir: bool, site: str, superlink: str, runtime_address: str
    ) -> None:
        super().__init__(work_dir, own_dir)
        self.site = site
        self.superlink = superlink
        self.runtime_address = runtime_address

    def executor_log(self) -> str:
        """The executor's log (answers, and refusals logged as ``REFUSED``)."""
        for proc in reversed(self._procs):  # node-exec, or the healthfed SuperNode
            if proc.role in ("node-exec", "supernode"):
                return proc.log.read_text(encoding="utf-8", errors="replace")
        return ""

    def __enter__(self) -> NodeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_node(
    node_file: str | Path,
    superlink: str,
    root_certificates: str | Path,
    port: int | None = None,
    work_dir: str | Path | None = None,
    *,
    startup_timeout: float = 60.0,
    wait_connected: bool = True,
    max_retries: int | None = None,
    clientapp_ref: str = CLIENTAPP_REF,
    node_pythonpath: Sequence[str | Path] = (),
    node_kind: str = "healthfed",
    worker_idle: float | None = None,
) -> NodeServer:
    """Start a hospital's SuperNode and healthfed node executor; return once ready.

    Parameters
    ----------
    node_file
        The node TOML (validated here with ``Node.from_toml``); the SuperNode
        gets ``--node-config 'healthfed-node="<absolute path>"'``.
    superlink
        The access body's Fleet address, ``HOST:PORT`` (its reverse proxy). The
        node only ever connects out to it; it opens no port to the network.
    root_certificates
        The access body's ``ca.pem`` (the CA that signed the certificate its
        SuperLink or proxy presents).
    port
        Local port of the SuperNode's Runtime API (bound to 127.0.0.1); a free
        one by default.
    work_dir
        Logs, Flower home, the local Runtime API's throwaway TLS and the 0600
        shared secret. Default: a temporary directory removed by ``stop``.
    startup_timeout
        Seconds to wait for the executor, and the registration with the SuperLink if
        ``wait_connected``.
    wait_connected
        Also wait until the SuperNode has registered with the SuperLink.
    max_retries
        Reconnection attempts after the SuperLink goes away; default unlimited.
    clientapp_ref, node_pythonpath
        For tests: the ClientApp the executor imports from this environment.
    node_kind
        ``"healthfed"`` (default): healthfed's SuperNode (flwr's parts, a 20 ms-0.5 s
        poll instead of flwr's fixed 3 s, one long-lived data worker it spawns);
        ``"stock"``: ``flower-supernode`` plus a separately started executor.
    worker_idle
        Seconds the healthfed SuperNode's idle data worker lives (default 120).

    Returns
    -------
    NodeServer
        ``.wait()`` supervises both processes (if one dies the other is stopped
        and ``FederationError`` raised); ``.stop()`` ends both.
    """
    path = Path(node_file).resolve()
    site = Node.from_toml(path).name  # fail now, with the steward's error, not per request
    split_address(superlink, "--superlink")
    ca = Path(root_certificates).resolve()
    if not ca.is_file():
        raise FederationError(f"root certificates {ca} do not exist")
    node_config_arg(path)  # a path the node config cannot carry fails now, not in the thread
    own = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="healthfed-node-")).resolve()
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    runtime_port = free_port() if port is None else int(port)
    runtime_address = f"{LOOPBACK}:{runtime_port}"
    node = NodeServer(work, own, site, superlink, runtime_address)
    bin_dir = Path(sys.executable).parent
    pythonpath = [str(Path(p).resolve()) for p in node_pythonpath]

    def start() -> None:
        # The Runtime API is loopback only; its throwaway TLS never leaves this machine.
        local_tls = generate_loopback_tls(work / "runtime-tls")
        home = work / "home" / "supernode"
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = write_secret_file(home / "superexec.secret", secrets.token_bytes(32))
        argv = supernode_argv(
            bin_dir,
            superlink,
            ca,
            runtime_port,
            local_tls,
            secret,
            path,
            max_retries,
            node_kind=node_kind,
            clientapp_ref=clientapp_ref,
            worker_idle=worker_idle,
        )
        if node_kind == "healthfed":  # it spawns its data worker itself; one log
            supernode = executor = node._spawn("supernode", argv, home, pythonpath)
        else:
            supernode = node._spawn("supernode", argv, home, ())
            executor = node._spawn(
                "node-exec",
                node_exec_argv(runtime_address, local_tls.ca_cert, secret, clientapp_ref),
                work / "home" / "node-exec",
                pythonpath,
            )

        def ready() -> bool:
            if "node executor ready" not in tail(executor.log, 200):
                return False
            return not wait_connected or "SuperNode ID:" in tail(supernode.log, 400)

        what = "the node executor"
        if wait_connected:
            what += f" and registration with {superlink}"
        wait_ready(ready, [supernode, executor], what, startup_timeout)

    node._start_guarded(start)
    return node
