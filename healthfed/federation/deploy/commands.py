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


def superlink_argv(
    bin_dir: Path, host: str, port: int, tls: TlsFiles, *, kind: str = "healthfed"
) -> list[str]:
    """The SuperLink command: TLS on its one port, no runtime installs.

    ``kind="healthfed"`` (default) is flwr's SuperLink with held pulls
    (:mod:`~healthfed.federation.deploy.superlink_app`); ``"stock"`` is
    ``flower-superlink`` itself. Both take ``flower-superlink``'s flags.
    ``--disable-runtime-dependency-installation`` keeps the SuperLink from running
    ``uv sync`` for a pushed app (network access and foreign code on its machine).
    """
    if kind not in SUPERLINK_KINDS:
        raise FederationError(f"superlink kind must be one of {SUPERLINK_KINDS}, not {kind!r}")
    if kind == "healthfed":
        head = [sys.executable, "-m", "healthfed.federation.deploy", "superlink"]
    else:
        head = [str(bin_dir / "flower-superlink")]
    return [
        *head,
        *_tls_server_args(host, port, tls),
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
    ]


SUPERLINK_KINDS = ("healthfed", "stock")


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


NODE_KINDS = ("healthfed", "stock")


def supernode_argv(
    bin_dir: Path,
    superlink: str,
    root_certificates: Path,
    runtime_port: int,
    runtime_tls: TlsFiles,
    secret_file: Path,
    node_file: Path,
    max_retries: int | None = None,
    *,
    node_kind: str = "healthfed",
    clientapp_ref: str | None = None,
    worker_idle: float | None = None,
) -> list[str]:
    """A hospital's SuperNode command: outbound TLS to ``superlink``, its Runtime API
    on loopback (``runtime_tls``), ClientApps run by our executor (``--isolation
    process``), the node TOML in its node config.

    ``node_kind="healthfed"`` (default) is healthfed's SuperNode
    (:mod:`~healthfed.federation.deploy.supernode`: flwr's parts, a short adaptive
    poll, its own data worker, so no separate executor is started);
    ``"stock"`` is ``flower-supernode`` (3 s idle poll), served by a separately
    started :func:`node_exec_argv`.
    """
    if node_kind == "healthfed":
        head = [sys.executable, "-m", "healthfed.federation.deploy", "supernode"]
        if clientapp_ref is not None:
            head += ["--clientapp", clientapp_ref]
        if worker_idle is not None:
            head += ["--worker-idle", f"{worker_idle:g}"]
    elif node_kind == "stock":
        head = [str(bin_dir / "flower-supernode")]
    else:
        raise FederationError(f"node_kind must be one of {NODE_KINDS}, got {node_kind!r}")
    argv = [
        *head,
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
    runtime_address: str,
    runtime_ca: str | Path | None,
    secret_file: str | Path | None,
    clientapp_ref: str,
) -> list[str]:
    """The healthfed node executor's command (serves the installed ClientApp).

    ``runtime_ca=None``: the Runtime API is plain HTTP; ``secret_file=None``: it has no
    SuperExec secret (both only as flwr's own SuperNode options allow).
    """
    argv = [
        sys.executable,
        "-m",
        "healthfed.federation.deploy",
        "node-exec",
        "--runtime-api-address",
        runtime_address,
        "--clientapp",
        clientapp_ref,
    ]
    if runtime_ca is not None:
        argv += ["--root-certificates", str(runtime_ca)]
    if secret_file is not None:
        argv += ["--superexec-auth-secret-file", str(secret_file)]
    return argv


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
