"""The federation: the researcher's :class:`Federation`, and what carries its rounds.

* :mod:`~healthfed.federation.federation` — ``Federation``, the one round path;
* :mod:`~healthfed.federation.messages` — every key both ends of a Flower run agree on;
* node app — :mod:`~healthfed.federation.client_app` (the Flower ClientApp) and
  :mod:`~healthfed.federation.secure_client` (its side of SecAgg+);
* aggregator app — :mod:`~healthfed.federation.server_app` (the Flower ServerApp,
  one round, a session) and :mod:`~healthfed.federation.secure_server` (SecAgg+);
  :mod:`~healthfed.federation.secure_vector` is shared by both sides;
* :mod:`~healthfed.federation.grids` — what a round travels over;
* :mod:`~healthfed.federation.deploy` — Flower processes, bundle, TLS, machines.

``Federation`` is imported on first use (PEP 562): the node executor and the
ServerApp import this package's apps and need none of the researcher's side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from healthfed.federation.federation import Federation

__all__ = ["Federation"]


def __getattr__(name: str) -> Any:
    if name == "Federation":
        return importlib.import_module("healthfed.federation.federation").Federation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
