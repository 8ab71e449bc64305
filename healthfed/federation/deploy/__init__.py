"""Deploying the federation: Flower processes, on one machine or on many.

* :mod:`~.bundle` — the one app bundle (FAB) pushed, and the check refusing others;
* :mod:`~.executor` — the node executor: the installed ClientApp, never pushed code
  (``python -m healthfed.federation.deploy node-exec``);
* :mod:`~.supernode`, :mod:`~.pull_loop`, :mod:`~.worker` — healthfed's own SuperNode
  (``python -m healthfed.federation.deploy supernode``): flwr's Fleet connection and
  pull/push functions driven by a short adaptive poll instead of flwr's fixed 3 s
  sleep, and one long-lived data worker per node;
* :mod:`~.processes`, :mod:`~.commands`, :mod:`~.service` — starting, supervising
  and stopping Flower's processes, with one command line each;
* :mod:`~.control` — the SuperLink's Control API client;
* :mod:`~.local` — everything on loopback (``Federation.flower``);
* :mod:`~.superlink`, :mod:`~.node` — the access body's SuperLink machine and a
  hospital's machine (``healthfed hub serve``, ``healthfed node serve``);
* :mod:`~.remote` — the researcher's rounds on the SuperLink's machine
  (``Federation.flower_remote``);
* :mod:`~.tls` — certificates.

Names are imported on first use (PEP 562): the SuperNode process imports this
package and must stay small while it idles (no pandas, DuckDB or SQLAlchemy).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CLIENTAPP_REF": "bundle",
    "SERVERAPP_REF": "bundle",
    "app_fab": "bundle",
    "app_fab_hash": "bundle",
    "build_fab": "bundle",
    "fab_refusal": "bundle",
    "node_config_arg": "commands",
    "SuperLinkControl": "control",
    "LocalFlowerDeployment": "local",
    "NodeServer": "node",
    "serve_node": "node",
    "free_port": "processes",
    "SuperLinkSession": "remote",
    "run_on_superlink": "remote",
    "DEFAULT_SUPERLINK_PORT": "superlink",
    "SuperLinkServer": "superlink",
    "nginx_fleet_location": "superlink",
    "serve_superlink": "superlink",
    "TlsFiles": "tls",
    "certificate_names": "tls",
    "generate_loopback_tls": "tls",
    "generate_superlink_tls": "tls",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
