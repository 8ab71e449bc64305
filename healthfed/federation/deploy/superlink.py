"""What runs at a real access body (the hub) and at a real hospital (a node).

``LocalFlowerDeployment`` (``deploy.py``) puts everything on one machine. Here
each side is started on its own machine and the two meet over the network:

* ``serve_hub`` (access body): one ``flower-superlink`` with TLS. In flwr 1.42
  its Fleet (``/v1/fleet/``), Control (``/v1/control/``) and Runtime
  (``/v1/runtime/``) HTTP APIs share one port, and the open-source Control API
  has no login: whoever reaches it can start runs, and a run's ServerApp is
  code from the pushed bundle executed *on the hub*. So the SuperLink binds to
  loopback (or, explicitly, an internal address) and only the path prefix
  ``/v1/fleet/`` is published to hospitals through a reverse proxy
  (``docs/deployment.md``).
* ``serve_node`` (hospital): one ``flower-supernode`` that only connects *out*
  to the hub (``--isolation process``, its Runtime API on 127.0.0.1 with its
  own throwaway TLS and a 0600 shared secret) plus healthfed's node executor,
  which answers with the *installed* healthfed ClientApp and refuses any
  pushed app bundle that is not byte-for-byte healthfed's own. Both processes
  are supervised: if one dies, the other is stopped and ``wait`` raises.
* ``run_on_hub`` (researcher, on the hub machine): one request through an
  already running SuperLink (the same ``HubControl`` code
  ``LocalFlowerDeployment.run`` uses).
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthfed.errors import FederationError
from healthfed.federation.deploy import (
    CLIENTAPP_REF,
    LOOPBACK,
    FlowerSession,
    HubControl,
    _Proc,
    _tail,
    free_port,
    node_config_arg,
    node_exec_argv,
    spawn,
    stop_procs,
    superlink_argv,
    supernode_argv,
    wait_ready,
    write_secret_file,
)
from healthfed.federation.tls import (
    LOOPBACK_IPS,
    LOOPBACK_NAMES,
    TlsFiles,
    generate_loopback_tls,
    generate_tls,
)

__all__ = [
    "DEFAULT_HUB_PORT",
    "HubServer",
    "HubSession",
    "NodeServer",
    "generate_hub_tls",
    "nginx_fleet_location",
    "run_on_hub",
    "serve_hub",
    "serve_node",
]

DEFAULT_HUB_PORT = 8000  # flower-superlink's own default
FLEET_PATH_PREFIX = "/v1/fleet/"  # the only prefix a hub publishes to hospitals
HUB_TLS_DAYS = 365
_WILDCARDS = ("0.0.0.0", "::", "")


# --- TLS for a hub reachable under real names ----------------------------------------------
def generate_hub_tls(
    directory: str | Path, hosts: Sequence[str] = (), days: int = HUB_TLS_DAYS
) -> TlsFiles:
    """Make a CA and a SuperLink server certificate for ``hosts`` (plus loopback).

    Parameters
    ----------
    directory
        Where ``ca.pem``, ``server.pem`` and ``server.key`` are written (created
        0700; files 0600). ``ca.pem`` is what hospitals get; the CA's private key
        is never written, so a renewal means a new ``ca.pem`` for every hospital
        (or bring certificates from your own PKI instead).
    hosts
        DNS names and/or IP addresses hospitals (or the reverse proxy) use to
        reach the hub. ``localhost``, ``127.0.0.1`` and ``::1`` are always added:
        the SuperLink's own ServerApp connects over loopback.
    days
        Validity of both certificates, from one minute ago.

    Returns
    -------
    TlsFiles
        Paths of the CA certificate, server certificate and server private key.
    """
    names: list[str] = []
    for h in [*hosts, *LOOPBACK_NAMES, *LOOPBACK_IPS]:
        h = h.strip().strip("[]")
        if h and h not in _WILDCARDS and h not in names:
            names.append(h)
    return generate_tls(directory, names, days, ca_common_name="healthfed hub CA")


def certificate_names(cert_file: str | Path) -> set[str]:
    """DNS names and IP addresses (as text) in a PEM certificate's subjectAltName."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise FederationError(f"cannot read certificate {cert_file}: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return names


def _covers(names: set[str], host: str) -> bool:
    if host in names:
        return True
    # one-label wildcard, e.g. *.example.org covers hub.example.org
    _, _, rest = host.partition(".")
    return bool(rest) and f"*.{rest}" in names


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_address(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FederationError(f"{what} must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def nginx_fleet_location(
    superlink_address: str,
    ca_cert: str | Path,
    *,
    upstream_name: str = "localhost",
    max_body: str = "64m",
) -> str:
    """nginx ``location`` blocks publishing only the Fleet API of a SuperLink.

    Put them inside the ``server { listen 443 ssl; ... }`` that hospitals reach.
    Everything that is not ``/v1/fleet/`` (the Control API ``/v1/control/``, the
    Runtime API ``/v1/runtime/``, ``/health``, ``/docs``, ``/openapi.json``) gets
    404. The proxy verifies the SuperLink's certificate against ``ca_cert``
    under ``upstream_name`` (a DNS name in that certificate; nginx checks names,
    not IP addresses).
    """
    return (
        f"location {FLEET_PATH_PREFIX} {{\n"
        f"    proxy_pass https://{superlink_address};\n"
        "    proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n'
        f"    proxy_ssl_trusted_certificate {Path(ca_cert).resolve()};\n"
        "    proxy_ssl_verify on;\n"
        f"    proxy_ssl_name {upstream_name};\n"
        f"    client_max_body_size {max_body};\n"
        "    proxy_read_timeout 300s;\n"
        "}\n"
        "location / {\n"
        "    return 404;\n"
        "}\n"
    )


# --- supervision shared by hub and node -------------------------------------------------
class _Service:
    """Processes that live and die together; ``wait`` blocks, ``stop`` ends them all."""

    def __init__(self, work_dir: Path, own_dir: bool) -> None:
        self.work_dir = work_dir
        self._own_dir = own_dir
        self._procs: list[_Proc] = []
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

    def _spawn(self, role: str, argv: list[str], home: Path, pythonpath: Sequence[str]) -> _Proc:
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
                        f"(log {proc.log}):\n{_tail(proc.log)}"
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
        import signal

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
        pass

    def _start_guarded(self, start: Any) -> None:
        try:
            start()
        except BaseException:
            self.stop()
            raise


# --- the access body ----------------------------------------------------------------------
class HubServer(_Service):
    """A running SuperLink (from ``serve_hub``).

    Attributes
    ----------
    address
        ``host:port`` the SuperLink listens on (Fleet, Control and Runtime).
    tls
        The certificate files in use; give ``tls.ca_cert`` to hospitals.
    fleet_public_hosts
        Names/IPs hospitals use to reach the Fleet API (through the proxy).
    """

    def __init__(
        self, work_dir: Path, address: str, tls: TlsFiles, fleet_public_hosts: list[str]
    ) -> None:
        super().__init__(work_dir, own_dir=False)
        self.address = address
        self.tls = tls
        self.fleet_public_hosts = fleet_public_hosts
        self._control: HubControl | None = None

    @property
    def ca_cert(self) -> Path:
        """The CA certificate hospitals pass as ``--root-certificates``."""
        return self.tls.ca_cert

    def control(self) -> HubControl:
        """A Control API client for this hub (kept open until ``stop``)."""
        if self._control is None:
            self._control = HubControl(
                self.address,
                self.tls.ca_cert,
                diagnostics=lambda: f"--- superlink log tail:\n{_tail(self._procs[0].log)}",
                check_alive=self._procs[0].check_alive,
            )
        return self._control

    def online_nodes(self) -> int:
        """How many SuperNodes are connected now."""
        return self.control().online_nodes()

    def _close_clients(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_hub(
    work_dir: str | Path,
    host: str = LOOPBACK,
    port: int = DEFAULT_HUB_PORT,
    fleet_public_host: str | Sequence[str] | None = None,
    tls_dir: str | Path | None = None,
    *,
    expose_control_api: bool = False,
    database: str | Path | None = None,
    startup_timeout: float = 60.0,
) -> HubServer:
    """Start the access body's SuperLink and return once it answers.

    Parameters
    ----------
    work_dir
        Kept across restarts: ``tls/`` (generated certificates, reused on the
        next start so hospitals keep their ``ca.pem``), ``logs/``, ``home/``.
    host, port
        Where the SuperLink listens (all three APIs). ``port=0`` picks a free
        port. Keep ``host`` on loopback and publish only ``/v1/fleet/`` through a
        reverse proxy: the Control API has no authentication in open-source
        Flower, and starting a run executes the pushed ServerApp on this machine.
    fleet_public_host
        DNS name(s)/IP(s) hospitals connect to (the proxy's name); put into the
        generated server certificate (so the proxy can present it) and checked
        against a given one.
    tls_dir
        A directory with ``ca.pem``, ``server.pem`` and ``server.key`` from your
        own PKI. Default: generated once into ``work_dir/tls`` with
        ``generate_hub_tls``.
    expose_control_api
        Required to bind ``host`` to anything but loopback (an internal address
        behind a firewall): acknowledges that everyone who reaches that address
        can start runs.
    database
        SQLite file for the SuperLink's state; default in memory (runs and node
        registrations are lost on restart; nodes re-register by themselves).
    startup_timeout
        Seconds to wait for the SuperLink to answer.

    Returns
    -------
    HubServer
        ``.wait()`` blocks, ``.stop()`` ends it; ``.ca_cert`` goes to hospitals.

    Raises
    ------
    FederationError
        Bad bind address, certificates that do not cover the names, or the
        SuperLink did not start (with its log tail).
    """
    host = host.strip("[]")
    if not _is_loopback(host) and not expose_control_api:
        raise FederationError(
            f"refusing to bind the SuperLink to {host!r}: its Control API (start runs, "
            "which run code on the hub) has no login in open-source Flower. Bind to "
            "127.0.0.1 and publish only the Fleet API prefix /v1/fleet/ through a reverse "
            "proxy (docs/deployment.md), or pass expose_control_api=True for an internal "
            "address that only trusted machines can reach"
        )
    if isinstance(fleet_public_host, str):
        public = [h.strip() for h in fleet_public_host.split(",") if h.strip()]
    else:
        public = [h.strip() for h in fleet_public_host or () if h.strip()]
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The SuperLink's own SuperExec/ServerApp connect to the bind address (loopback
    # for a wildcard), so the certificate must name it too.
    runtime_host = LOOPBACK if host in _WILDCARDS else host
    needed = [runtime_host, *public]
    if tls_dir is not None:
        d = Path(tls_dir).resolve()
        tls = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    else:
        d = work / "tls"
        tls = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
        if not all(p.is_file() for p in (tls.ca_cert, tls.server_cert, tls.server_key)):
            tls = generate_hub_tls(d, needed)
    for p in (tls.ca_cert, tls.server_cert, tls.server_key):
        if not p.is_file():
            raise FederationError(f"TLS file {p} is missing (need ca.pem, server.pem, server.key)")
    names = certificate_names(tls.server_cert)
    uncovered = [h for h in needed if not _covers(names, h)]
    if uncovered:
        hint = (
            "use a certificate that names them"
            if tls_dir is not None
            else f"delete {d} to generate new ones (hospitals then need the new ca.pem)"
        )
        raise FederationError(
            f"server certificate {tls.server_cert} does not name {', '.join(uncovered)} "
            f"(it names {', '.join(sorted(names)) or 'nothing'}); {hint}"
        )
    if port == 0:
        port = free_port()
    bind = f"[{host}]" if ":" in host else host
    hub = HubServer(work, f"{bind}:{port}", tls, public)
    argv = superlink_argv(Path(sys.executable).parent, host, port, tls)
    if database is not None:
        argv += ["--database", str(Path(database).resolve())]

    def start() -> None:
        proc = hub._spawn("superlink", argv, work / "home" / "superlink", ())
        control = hub.control()
        wait_ready(
            lambda: control.list_nodes() is not None,
            [proc],
            f"the SuperLink to answer on {hub.address}",
            startup_timeout,
        )

    hub._start_guarded(start)
    return hub


# --- the hospital -------------------------------------------------------------------------
class NodeServer(_Service):
    """A running SuperNode and its healthfed executor (from ``serve_node``).

    Attributes
    ----------
    site
        The node's ``[node].name``.
    superlink
        The hub's Fleet address this node connects out to.
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
        for proc in self._procs:
            if proc.role == "node-exec":
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
) -> NodeServer:
    """Start a hospital's SuperNode and healthfed node executor; return once ready.

    Parameters
    ----------
    node_file
        The node TOML (validated here with ``Node.from_toml``); the SuperNode
        gets ``--node-config 'healthfed-node="<absolute path>"'``.
    superlink
        The hub's Fleet address, ``HOST:PORT`` (its reverse proxy). The node
        only ever connects out to it; it opens no port to the network.
    root_certificates
        The hub's ``ca.pem`` (the CA that signed the certificate the hub or its
        proxy presents).
    port
        Local port of the SuperNode's Runtime API (bound to 127.0.0.1); a free
        one by default.
    work_dir
        Logs, Flower home, the local Runtime API's throwaway TLS and the 0600
        shared secret. Default: a temporary directory removed by ``stop``.
    startup_timeout
        Seconds to wait for the executor, and the hub registration if
        ``wait_connected``.
    wait_connected
        Also wait until the SuperNode has registered with the hub.
    max_retries
        Reconnection attempts after the hub goes away; default unlimited.
    clientapp_ref, node_pythonpath
        For tests: the ClientApp the executor imports from this environment.

    Returns
    -------
    NodeServer
        ``.wait()`` supervises both processes (if one dies the other is stopped
        and ``FederationError`` raised); ``.stop()`` ends both.
    """
    from healthfed.node.runtime import Node

    path = Path(node_file).resolve()
    site = Node.from_toml(path).name  # fail now, with the steward's error, not per request
    _split_address(superlink, "--superlink")
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
            bin_dir, superlink, ca, runtime_port, local_tls, secret, path, max_retries
        )
        supernode = node._spawn("supernode", argv, home, ())
        executor = node._spawn(
            "node-exec",
            node_exec_argv(runtime_address, local_tls.ca_cert, secret, clientapp_ref),
            work / "home" / "node-exec",
            pythonpath,
        )

        def ready() -> bool:
            if "node executor ready" not in _tail(executor.log, 200):
                return False
            return not wait_connected or "SuperNode ID:" in _tail(supernode.log, 400)

        what = "the node executor"
        if wait_connected:
            what += f" and registration with {superlink}"
        wait_ready(ready, [supernode, executor], what, startup_timeout)

    node._start_guarded(start)
    return node


# --- the researcher, on the hub machine -----------------------------------------------------
def run_on_hub(
    hub_address: str,
    root_certificates: str | Path,
    request: dict[str, Any],
    timeout: float,
    expected_sites: Sequence[str],
    *,
    result_dir: str | Path | None = None,
    node_wait: float = 30.0,
) -> dict[str, Any]:
    """Run one healthfed request through an already running SuperLink.

    Parameters
    ----------
    hub_address
        The SuperLink's ``host:port`` (its Control API: loopback on the hub).
    root_certificates
        The hub's ``ca.pem``.
    request
        The request envelope (``computation``, ``dataset``, ``params``, ...), as
        ``Federation.query`` builds it.
    timeout
        Seconds the ServerApp waits for node replies.
    expected_sites
        Site names that should answer; silent ones come back in ``missing``.
    result_dir
        Where the ServerApp (started by the SuperLink *on the hub machine*)
        writes the result file; must be writable by the SuperLink's user.
        Default: a fresh 0700 temporary directory, removed afterwards. So this
        function runs on the hub machine, as the hub's user.
    node_wait
        Seconds to wait, before starting the run, until at least
        ``len(expected_sites)`` nodes are online (the run starts anyway after).

    Returns
    -------
    dict
        ``collect``'s result: ``replies``, ``missing``, ``errors``,
        ``unanswered_nodes``, ``elapsed_s``.
    """
    envelope = dict(request)
    envelope.setdefault("expected_sites", list(expected_sites))
    hub = HubControl(hub_address, _hub_ca(hub_address, root_certificates))
    own = result_dir is None
    out = Path(result_dir or tempfile.mkdtemp(prefix="healthfed-run-")).resolve()
    try:
        _wait_for_nodes(hub, len(expected_sites), node_wait)
        return hub.run(envelope, timeout, out, list(expected_sites))
    finally:
        hub.close()
        if own:
            shutil.rmtree(out, ignore_errors=True)


def _hub_ca(hub_address: str, root_certificates: str | Path) -> Path:
    _split_address(hub_address, "hub address")
    ca = Path(root_certificates).resolve()
    if not ca.is_file():
        raise FederationError(f"root certificates {ca} do not exist")
    return ca


def _wait_for_nodes(hub: HubControl, expected: int, node_wait: float) -> None:
    """Wait up to ``node_wait`` s until ``expected`` nodes are online (then go on anyway)."""
    deadline = time.monotonic() + node_wait
    reached = False
    while True:
        nodes = hub.list_nodes()
        if nodes is not None:
            reached = True
            if sum(n.status == "online" for n in nodes) >= expected:
                return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not reached:
        raise FederationError(f"cannot reach the SuperLink Control API at {hub.address}")


class HubSession:
    """The researcher's rounds through a running hub SuperLink, in one long Flower run.

    Like :func:`run_on_hub`, but every request of the session goes to one ServerApp
    run (:class:`~healthfed.federation.deploy.FlowerSession`), which saves the
    ServerApp start (~2.5 s) on every round after the first. Runs on the hub
    machine as the hub's user: the ServerApp reads requests from, and writes results
    to, a fresh 0700 folder here (removed by :meth:`close`).
    """

    def __init__(
        self,
        hub_address: str,
        root_certificates: str | Path,
        expected_sites: Sequence[str],
        node_wait: float = 30.0,
    ) -> None:
        self.sites = list(expected_sites)
        self.node_wait = node_wait
        self._hub = HubControl(hub_address, _hub_ca(hub_address, root_certificates))
        self._dir = Path(tempfile.mkdtemp(prefix="healthfed-session-")).resolve()
        self._session: FlowerSession | None = None

    def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One round: ``collect``'s result for ``request`` (as :func:`run_on_hub`)."""
        envelope = dict(request)
        envelope.setdefault("expected_sites", self.sites)
        if self._session is None or not self._session.usable():
            _wait_for_nodes(self._hub, len(self.sites), self.node_wait)
            folder = self._dir / uuid.uuid4().hex[:12]
            self._session = FlowerSession(self._hub, folder, self.sites)
        result: dict[str, Any] = self._session.request(envelope, timeout)
        return result

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._hub.close()
        shutil.rmtree(self._dir, ignore_errors=True)
