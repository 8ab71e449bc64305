"""The command lines of a deployment's processes, built once for every caller.

The local deployment (:mod:`~healthfed.federation.deploy.local`), the SuperLink
machine (:mod:`~healthfed.federation.deploy.superlink`) and a hospital
(:mod:`~healthfed.federation.deploy.node`) start the same ``flower-superlink``,
``flower-supernode`` and node-executor commands: TLS on every server, never
``--insecure``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from healthfed.errors import FederationError
from healthfed.federation.deploy.processes import LOOPBACK
from healthfed.federation.deploy.tls import TlsFiles
from healthfed.federation.messages import NODE_CONFIG_KEY


def superlink_argv(bin_dir: Path, host: str, port: int, tls: TlsFiles) -> list[str]:
    """The ``flower-superlink`` command: TLS on its one port, no runtime installs.

    ``--disable-runtime-dependency-installation`` keeps the SuperLink from running
    ``uv sync`` for a pushed app (network access and foreign code on its machine).
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


def split_address(address: str, what: str) -> tuple[str, int]:
    """``(host, port)`` of a ``HOST:PORT`` option named ``what``; ``FederationError`` if not."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FederationError(f"{what} must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)
