"""healthfed's SuperNode keeps flwr's object store in memory, so flwr's SQL one stays unloaded.

A SuperNode stores the messages it relays in flwr's ``ObjectStoreFactory()``, which
healthfed's SuperNode always builds with its default, in-memory database
(:func:`~healthfed.federation.deploy.supernode.main`). flwr's factory module still
imports its SQL store at import time, and with it SQLAlchemy and Alembic: measured,
an idle SuperNode process held 122 MB after its imports with them, 92 MB without
(and 1.06 against 0.76 CPU-s to import), against a target of 120 MB for an idle
node. So before the SuperNode imports flwr, :func:`without_sql_object_store` puts a
module in that one's place whose ``SqlObjectStore`` refuses to be made, naming why.

``flwr.supercore.object_store.object_store_factory.ObjectStoreFactory`` (the only
importer in flwr 1.42) is pinned by source hash in
:mod:`healthfed.federation.flwr_pins`; any other name imported from the SQL module
fails the SuperNode's start loudly (``ImportError``), never silently.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from healthfed.errors import FederationError

SQL_STORE_MODULE = "flwr.supercore.object_store.sql_object_store"


class SqlObjectStoreNotLoaded:
    """What a healthfed SuperNode process has in place of flwr's ``SqlObjectStore``."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        raise FederationError(
            "healthfed's SuperNode keeps its object store in memory; flwr's SQL object "
            "store is not loaded in this process (healthfed/federation/deploy/memory_store.py)"
        )


def without_sql_object_store() -> bool:
    """Put the stand-in module in place unless flwr's SQL store is loaded already."""
    if SQL_STORE_MODULE in sys.modules:
        return False
    module = types.ModuleType(SQL_STORE_MODULE, __doc__)
    module.SqlObjectStore = SqlObjectStoreNotLoaded  # type: ignore[attr-defined]
    sys.modules[SQL_STORE_MODULE] = module
    return True
