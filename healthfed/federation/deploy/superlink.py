"""The access body's machine: its SuperLink, served for hospitals to connect to.

``serve_superlink`` (what ``healthfed hub serve`` runs) starts one
``flower-superlink`` with TLS. In flwr 1.42 its Fleet (``/v1/fleet/``), Control
(``/v1/control/``) and Runtime (``/v1/runtime/``) HTTP APIs share one port, and
the open-source Control API has no login: whoever reaches it can start runs, and
a run's ServerApp is code from the pushed bundle executed *on this machine*. So
the SuperLink binds to loopback (or, explicitly, an internal address) and only
the path prefix ``/v1/fleet/`` is published to hospitals through a reverse proxy
(:func:`nginx_fleet_location`, ``docs/deployment.md``).

The hospitals' side is :mod:`healthfed.federation.deploy.node`; the researcher
working on this machine uses :mod:`healthfed.federation.deploy.remote`.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path

from healthfed.errors import FederationError
from healthfed.federation.deploy.commands import superlink_argv
from healthfed.federation.deploy.control import SuperLinkControl
from healthfed.federation.deploy.processes import LOOPBACK, free_port, tail, wait_ready
from healthfed.federation.deploy.service import Service
from healthfed.federation.deploy.tls import (
    WILDCARDS,
    TlsFiles,
    certificate_names,
    covers,
    generate_superlink_tls,
)

DEFAULT_SUPERLINK_PORT = 8000  # flower-superlink's own default
FLEET_PATH_PREFIX = "/v1/fleet/"  # the only prefix published to hospitals


class SuperLinkServer(Service):
    """A running SuperLink (from :func:`serve_superlink`): the access body's.

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
        self._control: SuperLinkControl | None = None

    @property
    def ca_cert(self) -> Path:
        """The CA certificate hospitals pass as ``--root-certificates``."""
        return self.tls.ca_cert

    def control(self) -> SuperLinkControl:
        """A Control API client for this SuperLink (kept open until ``stop``)."""
        if self._control is None:
            self._control = SuperLinkControl(
                self.address,
                self.tls.ca_cert,
                diagnostics=lambda: f"--- superlink log tail:\n{tail(self._procs[0].log)}",
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

    def __enter__(self) -> SuperLinkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_superlink(
    work_dir: str | Path,
    host: str = LOOPBACK,
    port: int = DEFAULT_SUPERLINK_PORT,
    fleet_public_host: str | Sequence[str] | None = None,
    tls_dir: str | Path | None = None,
    *,
    expose_control_api: bool = False,
    database: str | Path | None = None,
    startup_timeout: float = 60.0,
) -> SuperLinkServer:
    """Start the access body's SuperLink and return once it answers (``healthfed hub serve``).

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
        :func:`~healthfed.federation.deploy.tls.generate_superlink_tls`.
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
    SuperLinkServer
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
    runtime_host = LOOPBACK if host in WILDCARDS else host
    tls = _superlink_tls(work, tls_dir, [runtime_host, *public])
    if port == 0:
        port = free_port()
    bind = f"[{host}]" if ":" in host else host
    server = SuperLinkServer(work, f"{bind}:{port}", tls, public)
    argv = superlink_argv(Path(sys.executable).parent, host, port, tls)
    if database is not None:
        argv += ["--database", str(Path(database).resolve())]

    def start() -> None:
        proc = server._spawn("superlink", argv, work / "home" / "superlink", ())
        control = server.control()
        wait_ready(
            lambda: control.list_nodes() is not None,
            [proc],
            f"the SuperLink to answer on {server.address}",
            startup_timeout,
        )

    server._start_guarded(start)
    return server


def _superlink_tls(work: Path, tls_dir: str | Path | None, needed: list[str]) -> TlsFiles:
    """The certificates to serve with: ``tls_dir``'s, or generated once into ``work/tls``.

    Raises ``FederationError`` when a file is missing or the server certificate does
    not name every host in ``needed``.
    """
    if tls_dir is not None:
        d = Path(tls_dir).resolve()
        tls = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    else:
        d = work / "tls"
        tls = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
        if not all(p.is_file() for p in (tls.ca_cert, tls.server_cert, tls.server_key)):
            tls = generate_superlink_tls(d, needed)
    for p in (tls.ca_cert, tls.server_cert, tls.server_key):
        if not p.is_file():
            raise FederationError(f"TLS file {p} is missing (need ca.pem, server.pem, server.key)")
    names = certificate_names(tls.server_cert)
    uncovered = [h for h in needed if not covers(names, h)]
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
    return tls


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
