"""Deploying the federation: Flower processes, on one machine or on many.

* :mod:`~.bundle` — the one app bundle (FAB) pushed, and the check refusing others;
* :mod:`~.executor` — the node executor: the installed ClientApp, never pushed code
  (``python -m healthfed.federation.deploy node-exec``);
* :mod:`~.processes`, :mod:`~.commands`, :mod:`~.service` — starting, supervising
  and stopping Flower's processes, with one command line each;
* :mod:`~.control` — the SuperLink's Control API client;
* :mod:`~.local` — everything on loopback (``Federation.flower``);
* :mod:`~.superlink`, :mod:`~.node` — the access body's SuperLink machine and a
  hospital's machine (``healthfed hub serve``, ``healthfed node serve``);
* :mod:`~.remote` — the researcher's rounds on the SuperLink's machine
  (``Federation.flower_remote``);
* :mod:`~.tls` — certificates.
"""

from healthfed.federation.deploy.bundle import (
    CLIENTAPP_REF,
    SERVERAPP_REF,
    app_fab,
    app_fab_hash,
    build_fab,
    fab_refusal,
)
from healthfed.federation.deploy.commands import node_config_arg
from healthfed.federation.deploy.control import SuperLinkControl
from healthfed.federation.deploy.local import LocalFlowerDeployment
from healthfed.federation.deploy.node import NodeServer, serve_node
from healthfed.federation.deploy.processes import free_port
from healthfed.federation.deploy.remote import SuperLinkSession, run_on_superlink
from healthfed.federation.deploy.superlink import (
    DEFAULT_SUPERLINK_PORT,
    SuperLinkServer,
    nginx_fleet_location,
    serve_superlink,
)
from healthfed.federation.deploy.tls import (
    TlsFiles,
    certificate_names,
    generate_loopback_tls,
    generate_superlink_tls,
)

__all__ = [
    "CLIENTAPP_REF",
    "DEFAULT_SUPERLINK_PORT",
    "SERVERAPP_REF",
    "LocalFlowerDeployment",
    "NodeServer",
    "SuperLinkControl",
    "SuperLinkServer",
    "SuperLinkSession",
    "TlsFiles",
    "app_fab",
    "app_fab_hash",
    "build_fab",
    "certificate_names",
    "fab_refusal",
    "free_port",
    "generate_loopback_tls",
    "generate_superlink_tls",
    "nginx_fleet_location",
    "node_config_arg",
    "run_on_superlink",
    "serve_node",
    "serve_superlink",
]
