"""The registry of computations a node is willing to run.

A request names a computation; the node looks it up here, in its *own*
installed code, so a request is data and never code. Each computation has a
node-side ``validate`` (checks and normalises parameters against the dataset
descriptor and the site policy), a node-side ``run`` (aggregates over the
DuckDB view ``data`` and returns a :class:`~healthfed.privacy.disclosure.Release`,
never rows) and a aggregator-side ``combine`` (pools the sites' disclosed dicts).
Each also names the parameters a request may give (``params``); the node refuses
any other one before ``validate`` runs (:meth:`Computation.check_params`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import duckdb

from healthfed.compute.parameters import ACCEPTED_PARAMS
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
        ``({site: disclosed dict}, params) -> result``: aggregator side.
    params
        The names of the parameters a request may give. ``None`` (the default):
        the names listed for ``name`` in
        :data:`healthfed.compute.parameters.ACCEPTED_PARAMS`, filled in by
        :func:`register`.
    """

    name: str
    description: str
    validate: Callable[[dict[str, Any], DatasetDescriptor, SitePolicy], dict[str, Any]]
    run: Callable[
        [duckdb.DuckDBPyConnection, DatasetDescriptor, dict[str, Any], SitePolicy],
        Release | ModelStatistics,
    ]
    combine: Callable[[dict[str, dict[str, Any]], dict[str, Any]], Any]
    params: frozenset[str] | None = None

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Refuse parameters this computation does not accept, naming them.

        The node calls this before ``validate``, so an unknown (e.g. misspelt)
        parameter is refused rather than ignored in favour of a default.

        Raises
        ------
        PolicyDenied
            ``params`` holds a name outside :attr:`params`; the message names it
            and lists the accepted ones.
        """
        accepted = self.params if self.params is not None else ACCEPTED_PARAMS.get(self.name)
        if accepted is None:  # pragma: no cover - register() refuses such a computation
            raise PolicyDenied(f"{self.name}: the computation declares no accepted parameters")
        unknown = sorted(set(params) - accepted)
        if not unknown:
            return
        what = f"parameter {unknown[0]!r}" if len(unknown) == 1 else f"parameters {unknown}"
        raise PolicyDenied(
            f"{self.name}: unknown {what}; it accepts "
            f"{sorted(accepted) if accepted else 'no parameters'}"
        )


_lock = threading.Lock()
_registry: dict[str, Computation] = {}


def register(c: Computation) -> Computation:
    """Add ``c`` to the registry (re-registering the same name replaces it) and return it.

    The returned computation carries its accepted parameter names, from ``c.params``
    or else from :data:`~healthfed.compute.parameters.ACCEPTED_PARAMS`.
    """
    if not isinstance(c, Computation) or not c.name:
        raise TypeError("register() takes a Computation with a name")
    if c.params is None:
        accepted = ACCEPTED_PARAMS.get(c.name)
        if accepted is None:
            raise TypeError(
                f"computation {c.name!r} declares no accepted parameters: give "
                "Computation(params=...) or list it in healthfed.compute.parameters"
            )
        c = replace(c, params=accepted)
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
