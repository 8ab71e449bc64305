"""The registry of computations a node is willing to run.

A request names a computation; the node looks it up here, in its *own*
installed code, so a request is data and never code. Each computation has a
node-side ``validate`` (checks and normalises parameters against the dataset
descriptor and the site policy), a node-side ``run`` (aggregates over the
DuckDB view ``data`` and returns a :class:`~healthfed.privacy.disclosure.Release`,
never rows) and a hub-side ``combine`` (pools the sites' disclosed dicts).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from healthfed.data.descriptor import DatasetDescriptor
from healthfed.errors import PolicyDenied
from healthfed.policy import SitePolicy
from healthfed.privacy.disclosure import Release
from healthfed.privacy.model_release import ModelStatistics

__all__ = ["Computation", "get_computation", "register", "registered_computations"]


@dataclass(frozen=True)
class Computation:
    """A named, vetted computation.

    Parameters
    ----------
    name
        What requests call it.
    description
        One line for the data steward and the researcher.
    validate
        ``(params, descriptor, policy) -> params``: node side; raises
        ``PolicyDenied``/``DataError`` naming the offending argument.
    run
        ``(connection, descriptor, params, policy) -> Release`` (or ``ModelStatistics``
        for model computations): node side; never returns rows.
    combine
        ``({site: disclosed dict}, params) -> result``: hub side.
    """

    name: str
    description: str
    validate: Callable[[dict[str, Any], DatasetDescriptor, SitePolicy], dict[str, Any]]
    run: Callable[
        [duckdb.DuckDBPyConnection, DatasetDescriptor, dict[str, Any], SitePolicy],
        Release | ModelStatistics,
    ]
    combine: Callable[[dict[str, dict[str, Any]], dict[str, Any]], Any]


_lock = threading.Lock()
_registry: dict[str, Computation] = {}


def register(c: Computation) -> Computation:
    """Add ``c`` to the registry (re-registering the same name replaces it) and return it."""
    if not isinstance(c, Computation) or not c.name:
        raise TypeError("register() takes a Computation with a name")
    with _lock:
        _registry[c.name] = c
    return c


def get_computation(name: str) -> Computation:
    """The computation called ``name``.

    Raises
    ------
    PolicyDenied
        No such computation is registered; the message lists the known ones.
    """
    with _lock:
        try:
            return _registry[name]
        except KeyError:
            known = sorted(_registry)
    raise PolicyDenied(f"unknown computation {name!r}; registered computations: {known}")


def registered_computations() -> list[str]:
    """Names of all registered computations, sorted."""
    with _lock:
        return sorted(_registry)
